"""The compose deployment cannot run here (no container engine), so what can be checked is: every
service, command, mounted path and variable of docker-compose.yaml agrees with the project and
with the Airflow 3.3 and erpsync CLIs, and the Dockerfile installs exactly what uv.lock pins.
A deliberately broken copy (tests/deploy/fixtures/broken/) must fail the same checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from erpsync import paths
from erpsync.deploy import compose_check

PROJECT = paths.project_dir()
COMPOSE = PROJECT / "docker-compose.yaml"
DOCKERFILE = PROJECT / "Dockerfile"
FIXTURES = Path(__file__).parent / "fixtures"


def test_compose_file_is_consistent_with_the_project():
    assert compose_check.check_compose(COMPOSE, PROJECT) == []


def test_compose_commands_are_valid_airflow_and_erpsync_commands():
    airflow_lines = compose_check.airflow_command_lines(COMPOSE)
    # the five components, the healthchecks (`jobs check`), the init's `version`/`users create`
    assert ["api-server"] in airflow_lines and ["celery", "worker"] in airflow_lines
    assert any(line[:2] == ["jobs", "check"] for line in airflow_lines)
    assert any(line[:2] == ["users", "create"] for line in airflow_lines)
    assert compose_check.check_airflow_commands(airflow_lines, {}) == []

    erpsync_lines = compose_check.erpsync_command_lines(COMPOSE)
    assert ["db", "migrate"] in erpsync_lines
    assert ["deploy", "create-roles"] in erpsync_lines
    assert compose_check.check_erpsync_commands(erpsync_lines) == []


def test_the_airflow_check_rejects_commands_airflow_does_not_have():
    problems = compose_check.check_airflow_commands(
        [["webserver"], ["celery", "workers"], ["scheduler", "--no-such-flag"], ["triggerer"]], {}
    )
    assert problems == [
        "airflow webserver: not a valid Airflow 3.3 command",
        "airflow celery workers: not a valid Airflow 3.3 command",
        "airflow scheduler --no-such-flag: not a valid Airflow 3.3 command",
    ]
    assert compose_check.check_erpsync_commands([["db", "migrat"], ["deploy", "nope"]]) == [
        "erpsync db migrat: no command 'migrat'",
        "erpsync deploy nope: no command 'nope'",
    ]


def test_env_example_is_committed_and_env_is_ignored():
    assert (PROJECT / ".env.example").is_file()
    ignored = (PROJECT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    assert ".env" in (PROJECT / ".dockerignore").read_text().splitlines()


def test_fernet_key_and_jwt_secret_are_required_not_defaulted():
    common = yaml.safe_load(COMPOSE.read_text())["x-airflow-common"]["environment"]
    assert common["AIRFLOW__CORE__FERNET_KEY"] == "${AIRFLOW__CORE__FERNET_KEY:?set it in .env}"
    assert common["AIRFLOW__API_AUTH__JWT_SECRET"] == (
        "${AIRFLOW__API_AUTH__JWT_SECRET:?set it in .env}"
    )


def test_dockerfile_installs_the_project_from_the_lock():
    assert compose_check.check_dockerfile(DOCKERFILE, PROJECT) == []


def _uv() -> str:
    found = shutil.which("uv") or str(PROJECT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is needed (make install brings it)"
    return found


def test_the_dockerfiles_lock_export_matches_uv_lock():
    """Run the Dockerfile's own `uv export` command line and compare every pin with uv.lock."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    line = re.search(r"uv export([^\n]*)", text).group(1)
    args = [
        a for a in line.split() if not a.startswith("--output-file") and a != "/requirements.txt"
    ]
    result = subprocess.run(
        [_uv(), "export", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    pins = compose_check.exported_pins(result.stdout)
    locked = compose_check.lock_versions((PROJECT / "uv.lock").read_text())
    assert pins, "the export pinned nothing"
    assert {name: (version, locked.get(name)) for name, version in pins.items()} == {
        name: (version, version) for name, version in pins.items()
    }
    pyproject = (PROJECT / "pyproject.toml").read_text()
    for req in (
        "apache-airflow",
        "apache-airflow-providers-celery",
        "apache-airflow-providers-fab",
    ):
        pinned = re.search(rf'"{req}==([^"]+)"', pyproject).group(1)
        assert pins[req] == pinned, req
    assert "erpsync" not in pins, "the project itself is installed from its sources"
    assert "pytest" not in pins, "dev dependencies stay out of the image"


# --------------------------------------------------------------------- the broken copy fails
def test_the_broken_fixture_fails_the_compose_checks():
    problems = compose_check.check_compose(FIXTURES / "broken" / "docker-compose.yaml", PROJECT)
    text = "\n".join(problems)
    expected = [
        "service airflow-triggerer is missing",
        "service airflow-scheduler: command ['scheduler', '--daemon'] should be ['scheduler']",
        "service airflow-worker: command ['celery', 'workers'] should be ['celery', 'worker']",
        "mounted path ./dag does not exist",
        "AIRFLOW__CORE__FERNET_KEY must be required from the env file",
        "variable ${MYSTERY_TOKEN} has no default and is not in .env.example",
        "AIRFLOW__CORE__EXECUTOR is 'LocalExecutor', expected 'CeleryExecutor'",
        "service airflow-dag-processor: no healthcheck",
        "service airflow-init: does not create the FAB roles",
        "service airflow-init: does not migrate the warehouse",
        "service sandbox: not in profile 'sandbox'",
    ]
    missing = [e for e in expected if e not in text]
    assert missing == [], text


def test_the_broken_dockerfile_fails_the_dockerfile_checks():
    problems = compose_check.check_dockerfile(FIXTURES / "broken" / "Dockerfile", PROJECT)
    assert "Dockerfile: does not export uv.lock (`uv export`)" in problems
    assert (
        "Dockerfile: the Airflow image is not apache/airflow:3.3.2-python3.11 (pyproject's pin)"
        in problems
    )
    assert "Dockerfile: does not copy great_expectations/" in problems
    assert "Dockerfile: COPY source requirements.txt does not exist" in problems


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda d: d["services"].pop("redis"),
            "service redis is missing",
        ),
        (
            lambda d: d["x-airflow-common"]["environment"].update(
                AIRFLOW__API_AUTH__JWT_SECRET="${AIRFLOW__API_AUTH__JWT_SECRET:-airflow_jwt_secret}"
            ),
            "AIRFLOW__API_AUTH__JWT_SECRET must be required from the env file",
        ),
        (
            lambda d: d["x-airflow-common"]["environment"].update(
                AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple."
                "simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__AUTH_MANAGER is",
        ),
        (
            lambda d: d["services"]["airflow-worker"].update(container_name="worker"),
            "container_name prevents --scale",
        ),
        (
            lambda d: d["services"]["airflow-apiserver"].pop("healthcheck"),
            "service airflow-apiserver: no healthcheck",
        ),
        (
            lambda d: d["services"]["airflow-init"].update(
                command=[
                    c.replace("erpsync deploy apply-settings", "true")
                    for c in d["services"]["airflow-init"]["command"]
                ]
            ),
            "service airflow-init: does not apply airflow_settings.yaml",
        ),
        (
            lambda d: d["services"]["sandbox"].update(volumes=["./sandbox_state:/home/airflow/s"]),
            "mounted path ./sandbox_state does not exist",
        ),
    ],
    ids=[
        "no-redis",
        "jwt-default",
        "simple-auth",
        "worker-name",
        "no-health",
        "no-settings",
        "mount",
    ],
)
def test_each_breakage_of_the_real_file_is_caught(tmp_path, mutate, problem):
    """Mutations of the real file (YAML anchors resolved), one breakage at a time."""
    data = yaml.safe_load(COMPOSE.read_text())
    # anchors were resolved on load: edit the common block's copies in every service too
    mutate(data)
    if "x-airflow-common" in data:
        common_env = data["x-airflow-common"]["environment"]
        for name, service in data["services"].items():
            if name.startswith("airflow-") or name == "flower":
                service.setdefault("environment", {}).update(
                    {k: v for k, v in common_env.items() if k.startswith("AIRFLOW__")}
                )
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False))
    problems = compose_check.check_compose(broken, PROJECT)
    assert any(problem in p for p in problems), problems


def test_the_locked_celery_works_with_the_locked_celery_provider():
    """The image installs the lock, so the lock's celery must load the CeleryExecutor (celery
    5.7.0 removed `celery.backends.database.retry`, which the 3.26.0 provider imports)."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW__CORE__EXECUTOR"] = "CeleryExecutor"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import airflow.providers.celery.executors.celery_executor_utils as u; "
            "import celery; print(celery.__version__)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
