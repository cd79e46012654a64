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
from tests import contract_log


def pytest_configure(config):
    # The suite's real Airflow runs are fresh Python processes (`airflow dags test`, api-server,
    # scheduler, Celery workers, the erpsync CLI). With PYTHONDONTWRITEBYTECODE set, as on this
    # machine, no compiled module is ever cached, so every one of them compiles Airflow's
    # modules again (~4-6 s of CPU per process on 2 cores). Let them cache bytecode as a default
    # Python does (in the git-ignored __pycache__ folders): the same code runs, compiled once.
    # Runs in the xdist controller before the workers start, so they and every child inherit it.
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        sys.dont_write_bytecode = False
    # pytest-xdist reorders --dist loadfile's files by test count (most first) unless told not
    # to, which put the one-test, minutes-long files of LONG_FILES_FIRST last: one worker ran
    # test_celery_run.py alone at the end while the other sat idle. Keep the collection order.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    # Every request the sandbox serves during the session is recorded (in the controller, so
    # workers and every subprocess inherit the variable); the session fails at the end when a
    # request of the pack's own connectors used anything the vendor does not document.
    contract_log.start(config)


def pytest_sessionfinish(session, exitstatus):
    contract_log.finish(session)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    contract_log.summary(terminalreporter, config)


@pytest.fixture
def private_contract_log(tmp_path, monkeypatch):
    """Redirect the contract log of this process to a file of the test's own, for a test that
    sends an undocumented request on purpose through an in-process sandbox: the suite-wide
    check never sees it, and the test reads ``contract_log.check(path)`` itself."""
    from erpsync_sandbox import contract

    path = tmp_path / "contract.jsonl"
    monkeypatch.setenv(contract.CONTRACT_LOG_ENV, str(path))
    return path


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
    used through subprocesses exactly as an operator uses them (``erpsync ...``).

    ``run("airflow", "dags", "test", ...)`` runs the DAG in the environment ``erpsync airflow``
    gives Airflow (``erpsync env``), in one long-lived Airflow CLI interpreter per session (the
    driver ``demo --once`` uses): the same ``airflow dags test`` command, without paying ~10 s
    of Airflow start-up and in-process execution API per run."""

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
        self._driver = None
        self._runs = 0

    def _process_env(self, extra_env: dict | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(self.env)
        env.update(extra_env or {})
        return env

    def run(
        self, *args: str, check: bool = True, extra_env: dict | None = None, timeout: float = 600
    ):
        import subprocess

        if args[:3] == ("airflow", "dags", "test"):
            result = self._dags_test(list(args[3:]), extra_env, timeout)
        else:
            result = subprocess.run(
                [sys.executable, "-m", "erpsync.cli", *args],
                env=self._process_env(extra_env),
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

    def _dags_test(self, args: list[str], extra_env: dict | None, timeout: float):
        import shlex
        import subprocess

        from erpsync.runtime.demo import DagsTestDriver

        base = self._process_env(extra_env)
        exported = subprocess.run(
            [sys.executable, "-m", "erpsync.cli", "env"],
            env=base,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        env = dict(base)
        for line in exported.splitlines():
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").partition("=")
                env[key] = shlex.split(value)[0] if value else ""
        if self._driver is None or self._driver.proc.poll() is not None:
            self._runs = 0
            self._driver = DagsTestDriver(
                env, self.tmp_dir / f"dags-test-{uuid.uuid4().hex[:6]}.log", inherit=False
            )
        self._runs += 1
        label = self._driver.start(args[0], args[1:], label=f"{args[0]}#{self._runs}", env=env)
        finished = self._driver.wait(label, timeout=timeout)
        output, rc = self._driver.output(label)
        if not finished:
            self.stop()
            raise subprocess.TimeoutExpired(["airflow", "dags", "test", *args], timeout, output)
        return subprocess.CompletedProcess(
            ["airflow", "dags", "test", *args], 1 if rc is None else rc, output, ""
        )

    def stop(self) -> None:
        if self._driver is not None:
            self._driver.stop()
            self._driver = None


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
    runtime.stop()
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
    "tests/browser/test_console_browser.py",
    "tests/browser/test_console_fab.py",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONG_FILES_FIRST.index(path) if path in LONG_FILES_FIRST else len(LONG_FILES_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
