"""Checks that ``docker-compose.yaml`` and the ``Dockerfile`` agree with the project, for what
cannot be run where no container engine is: every service, command, mounted path and variable.

:func:`check_compose` and :func:`check_dockerfile` return a list of problems (empty = fine), each
a sentence naming the service or line at fault, so a broken copy fails with reasons. The Airflow
and erpsync command lines are validated against the real CLIs by :func:`check_commands` (the
Airflow 3.3 argument parser, with the Celery and FAB providers loaded; erpsync's click groups).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from erpsync.connectors.ids import SYSTEM_CONN_IDS

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
    "sandbox",
}
#: the Airflow command each long-running service must run
AIRFLOW_COMMANDS = {
    "airflow-apiserver": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
    "airflow-worker": ["celery", "worker"],
}
EXPECTED_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__AUTH_MANAGER": (
        "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    ),
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-apiserver:8080/execution/",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
}
REQUIRED_SECRETS = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET")
#: bind-mount sources that are runtime output, created by compose/airflow-init (git-ignored)
RUNTIME_MOUNTS = {"logs"}
SYSTEM_CONNECTIONS = tuple(SYSTEM_CONN_IDS.values())

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR; `$$` escapes.
_VAR = re.compile(
    r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?+])[^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def variables(text: str) -> list[tuple[str, str]]:
    """Every interpolated variable with its modifier (``""``, ``":-x"``, ``":?msg"``...)."""
    text = text.replace("$$", "")
    out = []
    for m in _VAR.finditer(text):
        name = m.group(1) or m.group(3)
        out.append((name, m.group(2) or ""))
    return out


def env_example_keys(path: Path) -> dict[str, str]:
    keys = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    return keys


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose-style interpolation with defaults (required variables become their name)."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        mod = m.group(2) or ""
        if name in env and env[name] != "":
            return env[name]
        if mod[:2] in (":-",) or mod[:1] == "-":
            return mod.split("-", 1)[1]
        return f"<{name}>"

    return _VAR.sub(sub, value).replace("$$", "$")


def _command(service: dict) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _healthcheck_cmd(service: dict) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        return []
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(t) for t in test]


def check_compose(compose: Path, project: Path) -> list[str]:
    """Structural checks of a compose file against the project folder ``project``."""
    problems: list[str] = []
    text = compose.read_text()
    data = yaml.safe_load(text)
    services: dict = data.get("services") or {}
    env_example_path = project / ".env.example"
    example = env_example_keys(env_example_path) if env_example_path.exists() else {}
    if not env_example_path.exists():
        problems.append(".env.example is missing")

    # services
    for name in sorted(REQUIRED_SERVICES - services.keys()):
        problems.append(f"service {name} is missing")

    # commands
    for name, expected in AIRFLOW_COMMANDS.items():
        if name in services and _command(services[name]) != expected:
            problems.append(
                f"service {name}: command {_command(services[name])} should be {expected}"
            )

    # variables
    declared = set(example)
    for var, mod in variables(text):
        has_default = mod.startswith(":-") or mod.startswith("-")
        if not has_default and var not in declared:
            problems.append(f"variable ${{{var}}} has no default and is not in .env.example")
        if mod.startswith(":?") or mod.startswith("?"):
            if var not in declared:
                problems.append(f"required variable {var} is not in .env.example")

    # environment of every Airflow service
    for name, service in services.items():
        if not name.startswith("airflow-") and name != "flower":
            continue
        env = _env(service)
        for key, want in EXPECTED_ENV.items():
            if env.get(key) != want:
                problems.append(f"service {name}: {key} is {env.get(key)!r}, expected {want!r}")
        for key in REQUIRED_SECRETS:
            value = env.get(key, "")
            if not re.fullmatch(r"\$\{" + key + r":\?[^}]+\}", value):
                problems.append(
                    f"service {name}: {key} must be required from the env file "
                    f"(${{{key}:?...}}), got {value!r}"
                )
        broker = env.get("AIRFLOW__CELERY__BROKER_URL", "")
        if not broker.startswith("redis://") or "@redis:6379" not in broker:
            problems.append(f"service {name}: broker URL {broker!r} does not name service redis")
        for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "ERPSYNC_DATABASE_URL"):
            if "@postgres" not in env.get(key, ""):
                problems.append(f"service {name}: {key} does not point at service postgres")
        if not env.get("ERPSYNC_DATABASE_URL", "").rstrip("/").endswith("/erpsync"):
            problems.append(f"service {name}: ERPSYNC_DATABASE_URL is not the erpsync database")
        env_files = service.get("env_file") or []
        env_files = env_files if isinstance(env_files, list) else [env_files]
        paths_ = [e["path"] if isinstance(e, dict) else e for e in env_files]
        if not any(".env" in _interpolate(p, {}) for p in paths_):
            problems.append(f"service {name}: does not read the .env file")

    for key in REQUIRED_SECRETS:
        if example.get(key, "") not in ("", "''", '""'):
            problems.append(f".env.example must leave {key} empty, not commit a value")

    # mounts
    named = set((data.get("volumes") or {}).keys())
    for name, service in services.items():
        for vol in service.get("volumes") or []:
            spec = _interpolate(vol, {}) if isinstance(vol, str) else vol.get("source", "")
            source = spec.split(":", 1)[0]
            if source.startswith((".", "/")):
                rel = Path(source)
                path = rel if rel.is_absolute() else (project / rel)
                if path.name in RUNTIME_MOUNTS and not path.exists():
                    continue
                if not path.exists():
                    problems.append(f"service {name}: mounted path {source} does not exist")
            elif source not in named:
                problems.append(f"service {name}: volume {source} is not declared")

    # healthchecks on every long-running service
    for name, service in services.items():
        if name in ("airflow-init", "airflow-cli"):
            continue
        if not _healthcheck_cmd(service):
            problems.append(f"service {name}: no healthcheck")

    # the init service
    init = services.get("airflow-init")
    if init:
        script = " ".join(_command(init))
        init_env = _env(init)
        for needed, why in (
            ("erpsync db migrate", "migrate the warehouse"),
            ("create-roles", "create the FAB roles"),
        ):
            if needed not in script:
                problems.append(f"service airflow-init: does not {why} ({needed!r})")
        if "apply-settings" not in script and "settings apply" not in script:
            problems.append("service airflow-init: does not apply airflow_settings.yaml")
        if str(init_env.get("_AIRFLOW_DB_MIGRATE", "")).lower() != "true":
            problems.append("service airflow-init: _AIRFLOW_DB_MIGRATE is not 'true'")

    # the worker: scalable
    worker = services.get("airflow-worker")
    if worker:
        if "container_name" in worker:
            problems.append("service airflow-worker: container_name prevents --scale")
        if worker.get("ports"):
            problems.append("service airflow-worker: host ports prevent --scale")
        if _env(worker).get("DUMB_INIT_SETSID") != "0":
            problems.append("service airflow-worker: DUMB_INIT_SETSID must be '0' (warm shutdown)")

    # the sandbox profile and the connections pointing at it
    sandbox = services.get("sandbox")
    if sandbox:
        if "sandbox" not in (sandbox.get("profiles") or []):
            problems.append("service sandbox: not in profile 'sandbox'")
        cmd = _command(sandbox)
        all_interfaces = "0.0.0.0"  # noqa: S104 - looked for in the command, not bound here
        if "sandbox" not in cmd or "serve" not in cmd or all_interfaces not in cmd:
            problems.append(
                f"service sandbox: command {cmd} is not `erpsync sandbox serve --host 0.0.0.0`"
            )
        problems += _check_sandbox_connections(sandbox, example, project)
    return problems


def _check_sandbox_connections(sandbox: dict, example: dict[str, str], project: Path) -> list[str]:
    problems = []
    ports = {str(p).split(":")[-1] for p in sandbox.get("ports") or []}
    settings = yaml.safe_load((project / "airflow_settings.yaml").read_text())
    by_id = {c["conn_id"]: c for c in settings["airflow"]["connections"]}
    for conn_id in SYSTEM_CONNECTIONS:
        key = f"AIRFLOW_CONN_{conn_id.upper()}"
        raw = example.get(key)
        if raw is None:
            problems.append(f".env.example: {key} (the sandbox connection) is missing")
            continue
        try:
            conn = json.loads(raw.strip("'"))
        except json.JSONDecodeError as exc:
            problems.append(f".env.example: {key} is not JSON: {exc}")
            continue
        if conn.get("host") != "sandbox":
            problems.append(f".env.example: {key} host is {conn.get('host')!r}, not 'sandbox'")
        if str(conn.get("port")) not in ports:
            problems.append(f".env.example: {key} port {conn.get('port')} is not a sandbox port")
        spec = by_id.get(conn_id, {})
        for field, yaml_key in (
            ("conn_type", "conn_type"),
            ("schema", "conn_schema"),
            ("login", "conn_login"),
            ("password", "conn_password"),
            ("extra", "conn_extra"),
        ):
            if conn.get(field) != spec.get(yaml_key):
                problems.append(
                    f".env.example: {key} {field} differs from airflow_settings.yaml {conn_id}"
                )
    return problems


def airflow_command_lines(compose: Path) -> list[list[str]]:
    """Every Airflow CLI invocation in the compose file (service commands, healthchecks, init)."""
    data = load(compose)
    lines: list[list[str]] = []
    for name, service in (data.get("services") or {}).items():
        if name.startswith("airflow-") or name == "flower":
            cmd = _command(service)
            if cmd and cmd[0] not in ("-c", "bash"):
                lines.append(cmd)
        for source in [" ".join(_healthcheck_cmd(service)), " ".join(_command(service))]:
            for m in re.finditer(r"(?:^|[\s;|&(])airflow\s+([^\n;|&]+)", _joined(source)):
                words = shlex.split(m.group(1))
                if words:
                    lines.append(words)
    return lines


def _joined(script: str) -> str:
    """A shell script with `$$` unescaped and backslash-continued lines joined."""
    return re.sub(r"\\\n\s*", " ", script.replace("$$", "$"))


def erpsync_command_lines(compose: Path) -> list[list[str]]:
    """Every ``erpsync ...`` invocation in the compose file."""
    lines = []
    for service in (load(compose).get("services") or {}).values():
        cmd = _command(service)
        if cmd[:1] == ["erpsync"]:
            lines.append(cmd[1:])
        for m in re.finditer(r"(?:^|\n)\s*erpsync\s+([^\n;|&]+)", " ".join(cmd)):
            lines.append(shlex.split(m.group(1)))
    return lines


def check_erpsync_commands(lines: list[list[str]]) -> list[str]:
    """Resolve each ``erpsync`` command line with the real click groups (no execution)."""
    import click

    from erpsync.cli import main

    problems = []
    for words in lines:
        ctx = click.Context(main)
        group: click.Command = main
        rest = list(words)
        while isinstance(group, click.Group) and rest and not rest[0].startswith("-"):
            sub = group.get_command(ctx, rest[0])
            if sub is None:
                problems.append(f"erpsync {' '.join(words)}: no command {rest[0]!r}")
                break
            group, rest = sub, rest[1:]
        else:
            try:
                group.make_context("erpsync", rest, resilient_parsing=False)
            except click.UsageError as exc:
                problems.append(f"erpsync {' '.join(words)}: {exc}")
            except click.exceptions.Exit:
                pass
    return problems


AIRFLOW_PARSE_SCRIPT = """
import json, sys
from airflow.cli.cli_parser import get_parser
parser = get_parser()
problems = []
for words in json.loads(sys.argv[1]):
    try:
        parser.parse_args(words)
    except SystemExit as exc:
        if exc.code not in (0, None):
            problems.append(" ".join(words))
print(json.dumps(problems))
"""


def check_airflow_commands(lines: list[list[str]], env: dict[str, str]) -> list[str]:
    """Parse each Airflow command line with Airflow's own CLI parser, configured like the
    compose stack (CeleryExecutor and FAB auth manager add their commands), in a subprocess."""
    import os
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    full_env.update(env)
    full_env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": EXPECTED_ENV["AIRFLOW__CORE__EXECUTOR"],
            "AIRFLOW__CORE__AUTH_MANAGER": EXPECTED_ENV["AIRFLOW__CORE__AUTH_MANAGER"],
        }
    )
    # placeholders for shell variables of the healthchecks/init script
    args = [[w.replace("${HOSTNAME}", "host").replace("$", "") for w in words] for words in lines]
    result = subprocess.run(
        [sys.executable, "-c", AIRFLOW_PARSE_SCRIPT, json.dumps(args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        return [f"could not run Airflow's CLI parser: {result.stderr[-2000:]}"]
    last = result.stdout.strip().splitlines()[-1]
    return [f"airflow {line}: not a valid Airflow 3.3 command" for line in json.loads(last)]


# ----------------------------------------------------------------------------- Dockerfile
EXPORT_FLAGS = ("--frozen", "--no-dev", "--extra deploy", "--no-emit-project")


def check_dockerfile(dockerfile: Path, project: Path) -> list[str]:
    problems = []
    text = dockerfile.read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    pyproject = (project / "pyproject.toml").read_text()
    airflow_pin = re.search(r'"apache-airflow==([0-9.]+)"', pyproject)
    want_from = f"apache/airflow:{airflow_pin.group(1) if airflow_pin else '?'}-python3.11"
    if want_from not in joined:
        problems.append(f"Dockerfile: the Airflow image is not {want_from} (pyproject's pin)")
    export = re.search(r"uv export([^\n]*)", joined)
    if not export:
        problems.append("Dockerfile: does not export uv.lock (`uv export`)")
    else:
        for flag in EXPORT_FLAGS:
            if flag not in export.group(1):
                problems.append(f"Dockerfile: `uv export` lacks {flag}")
    if not re.search(r"COPY [^\n]*uv\.lock", joined):
        problems.append("Dockerfile: does not copy uv.lock")
    if not re.search(r"pip install [^\n]*-r [^\n]*requirements", joined):
        problems.append("Dockerfile: does not pip install the exported requirements")
    makefile = (project / "Makefile").read_text()
    uv_make = re.search(r"UV_VERSION := (\S+)", makefile)
    uv_docker = re.search(r"UV_VERSION=(\S+)", joined)
    if uv_make and (not uv_docker or uv_docker.group(1) != uv_make.group(1)):
        problems.append("Dockerfile: UV_VERSION differs from the Makefile's")
    for needed in ("dags/", "plugins/", "include/", "great_expectations/", "airflow_settings.yaml"):
        if not re.search(r"COPY [^\n]*\b" + re.escape(needed), joined):
            problems.append(f"Dockerfile: does not copy {needed}")
    for m in re.finditer(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", joined, re.M):
        for src in m.group(1).split():
            if not (project / src).exists():
                problems.append(f"Dockerfile: COPY source {src} does not exist")
    return problems


def exported_pins(requirements: str) -> dict[str, str]:
    pins = {}
    for line in requirements.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line.strip())
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def lock_versions(lock_text: str) -> dict[str, str]:
    import tomllib

    lock = tomllib.loads(lock_text)
    return {_norm(p["name"]): p.get("version", "") for p in lock.get("package", [])}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
