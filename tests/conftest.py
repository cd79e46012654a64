"""Shared test fixtures: a real PostgreSQL server and throwaway databases on it.

Tests use the embedded server (started from the pgserver package in the project's .erpsync/
folder) unless ERPSYNC_DATABASE_URL names another server; either way each test that needs a
database gets its own, dropped afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from erpsync.runtime import database


def pytest_configure(config):
    # The suite's real Airflow runs are fresh Python processes (`airflow dags test`, api-server,
    # scheduler, Celery workers, the erpsync CLI). With PYTHONDONTWRITEBYTECODE set, as on this
    # machine, no compiled module is ever cached, so every one of them compiles Airflow's
    # modules again (~4-6 s of CPU per process on 2 cores). Let them cache bytecode as a default
    # Python does (in the git-ignored __pycache__ folders): the same code runs, compiled once.
    # Runs in the xdist controller before the workers start, so they and every child inherit it.
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        sys.dont_write_bytecode = False


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """Admin URL (database ``postgres``) of the server the tests use."""
    external = os.environ.get("ERPSYNC_DATABASE_URL")
    if external:
        return database.with_database(external, "postgres")
    admin = database._embedded_server_url(start=True)
    assert admin is not None
    return database.with_database(admin, "postgres")


def make_database(server_url: str, prefix: str = "erpsync_test") -> str:
    url = database.with_database(server_url, f"{prefix}_{uuid.uuid4().hex[:10]}")
    database.ensure_database(url)
    return url


@pytest.fixture
def fresh_db(pg_server_url: str):
    """An empty database for one test."""
    url = make_database(pg_server_url)
    yield url
    database.drop_database(url)


@pytest.fixture
def warehouse_db(fresh_db: str) -> str:
    """A fresh database with every warehouse migration applied."""
    from erpsync.warehouse import migrate

    migrate.migrate(fresh_db)
    return fresh_db


class AirflowRuntime:
    """A migrated Airflow metadata database, a migrated warehouse and a private AIRFLOW_HOME,
    used through subprocesses exactly as an operator uses them (``erpsync ...``)."""

    def __init__(self, tmp_dir, warehouse_url: str, airflow_url: str) -> None:
        self.tmp_dir = tmp_dir
        self.warehouse_url = warehouse_url
        self.airflow_url = airflow_url
        self.env = {
            "ERPSYNC_DATABASE_URL": warehouse_url,
            "ERPSYNC_AIRFLOW_DATABASE_URL": airflow_url,
            "AIRFLOW_HOME": str(tmp_dir / "airflow_home"),
            "ERPSYNC_STATE_DIR": str(tmp_dir / "state"),
        }

    def run(
        self, *args: str, check: bool = True, extra_env: dict | None = None, timeout: float = 600
    ):
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(self.env)
        env.update(extra_env or {})
        result = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "erpsync.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"erpsync {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
            )
        return result


@pytest.fixture(scope="session")
def airflow_runtime(pg_server_url, tmp_path_factory):
    from erpsync.warehouse import migrate

    tmp = tmp_path_factory.mktemp("airflow")
    warehouse = make_database(pg_server_url, "erpsync_test_wh")
    airflow_db = make_database(pg_server_url, "erpsync_test_af")
    migrate.migrate(warehouse)
    runtime = AirflowRuntime(tmp, warehouse, airflow_db)
    runtime.run("airflow", "db", "migrate")
    yield runtime
    database.drop_database(warehouse)
    database.drop_database(airflow_db)


#: Files that take minutes (real Airflow chains, the Celery stack), collected first so the two
#: xdist workers (``--dist loadfile`` hands out files in collection order) start them at once
#: and the hundreds of short tests fill in around them instead of waiting behind them.
LONG_FILES_FIRST = (
    "tests/integration/test_demo.py",
    "tests/deploy/test_celery_run.py",
    "tests/integration/test_billing_e2e.py",
    "tests/integration/test_onboarding.py",
    "tests/integration/test_billing_flow.py",
    "tests/integration/test_demo_ui.py",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONG_FILES_FIRST.index(path) if path in LONG_FILES_FIRST else len(LONG_FILES_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
