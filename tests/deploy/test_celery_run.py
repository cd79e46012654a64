"""The pack on Airflow's CeleryExecutor, for real, on this machine: ``erpsync deploy celery-run``
starts Redis, the scheduler, dag-processor, api-server, triggerer and two Celery workers, and runs
the main chain as scheduled DAG runs. Every run must succeed, tasks must have run on both workers,
and the outcome (run states, task states, audit rows per DAG) must equal a LocalExecutor
``airflow dags test`` run of the same chain against an identical sandbox and fresh databases.

Both runs go at the same time (separate databases, separate sandboxes generated from the same
seed): the Celery stack spends most of its time waiting on its own loops, so overlapping them keeps
the test within its budget.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter

import psycopg
import pytest
import yaml

from erpsync import paths
from erpsync.deploy import celery_stack
from erpsync.runtime import database
from erpsync.runtime.demo import DagsTestDriver
from tests.conftest import make_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _system_connections(urls: dict[str, str]) -> dict[str, str]:
    """AIRFLOW_CONN_* for the three systems: airflow_settings.yaml's, at the sandbox's ports."""
    settings = yaml.safe_load(paths.settings_file().read_text())
    env = {}
    for conn in settings["airflow"]["connections"]:
        system = conn["conn_id"].removeprefix("erpsync_")
        if system not in urls:
            continue
        host, port = urls[system].removeprefix("http://").split(":")
        env[f"AIRFLOW_CONN_{conn['conn_id'].upper()}"] = json.dumps(
            {
                "conn_type": conn["conn_type"],
                "host": host,
                "port": int(port),
                "schema": conn["conn_schema"],
                "login": conn["conn_login"],
                "password": conn["conn_password"],
                "extra": conn["conn_extra"],
            }
        )
    return env


def _exports(text: str) -> dict[str, str]:
    """``export KEY=VALUE`` lines (``erpsync env``) as a mapping."""
    env = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def _clone(url: str, template: str) -> None:
    from psycopg import sql

    with psycopg.connect(database.with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(database.database_name(url)),
                sql.Identifier(database.database_name(template)),
            )
        )


class _Side:
    """One run of the chain: its databases, Airflow home, state folder and sandbox."""

    def __init__(self, name, tmp, pg_server_url, sandbox_urls, template=None):
        self.name = name
        if template is None:
            self.warehouse = make_database(pg_server_url, f"erpsync_test_{name}_wh")
            self.airflow = make_database(pg_server_url, f"erpsync_test_{name}_af")
        else:
            self.warehouse = database.with_database(
                pg_server_url, f"erpsync_test_{name}_wh_{os.getpid()}"
            )
            self.airflow = database.with_database(
                pg_server_url, f"erpsync_test_{name}_af_{os.getpid()}"
            )
            _clone(self.warehouse, template.warehouse)
            _clone(self.airflow, template.airflow)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update(
            {
                "ERPSYNC_DATABASE_URL": self.warehouse,
                "ERPSYNC_AIRFLOW_DATABASE_URL": self.airflow,
                "AIRFLOW_HOME": str(tmp / f"{name}_airflow_home"),
                "ERPSYNC_STATE_DIR": str(tmp / f"{name}_state"),
                **_system_connections(sandbox_urls),
            }
        )
        if template is not None:
            # a clone holds values encrypted with the template's Fernet key: share its secrets
            state = tmp / f"{name}_state"
            state.mkdir(parents=True, exist_ok=True)
            secrets = tmp / f"{template.name}_state" / "secrets.json"
            shutil.copy2(secrets, state / "secrets.json")

    def erpsync(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "erpsync.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def audit_counts(self, run_ids: dict[str, str]) -> dict[str, Counter]:
        out = {}
        with psycopg.connect(self.warehouse) as conn:
            for dag_id, run_id in run_ids.items():
                rows = conn.execute(
                    "SELECT action FROM audit.audit_log WHERE source_dag_id = %s "
                    "AND source_run_id = %s",
                    (dag_id, run_id),
                ).fetchall()
                out[dag_id] = Counter(r[0] for r in rows)
        return out

    def runs(self) -> dict[str, tuple[str, str, dict[str, str]]]:
        """dag_id -> (run_id, state, {task_id[map_index]: state}) of each DAG's last run."""
        out = {}
        with psycopg.connect(self.airflow) as conn:
            for dag_id, run_id, state in conn.execute(
                "SELECT DISTINCT ON (dag_id) dag_id, run_id, state FROM dag_run "
                "ORDER BY dag_id, id DESC"
            ).fetchall():
                tasks = conn.execute(
                    "SELECT task_id, map_index, state FROM task_instance "
                    "WHERE dag_id = %s AND run_id = %s",
                    (dag_id, run_id),
                ).fetchall()
                out[dag_id] = (
                    run_id,
                    state,
                    {(t if m < 0 else f"{t}[{m}]"): s for t, m, s in tasks},
                )
        return out

    def drop(self) -> None:
        for url in (self.warehouse, self.airflow):
            database.drop_database(url)


def _relay_lines(tmp) -> list[str]:
    logs = tmp / "celery_airflow_home" / "logs" / "dag_id=erpsync_master_data_sync"
    found = []
    for path in logs.glob("*/task_id=write_back_*/attempt=*.log"):
        found += [line[:400] for line in path.read_text().splitlines() if "outbox relay" in line]
    return found


@pytest.fixture(scope="module")
def two_sandboxes(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handles = []
    try:
        for name in ("local", "celery"):
            handles.append(
                start_sandbox(tmp_path_factory.mktemp(f"sandbox_{name}"), size="small", seed=11)
            )
        yield handles
    finally:
        for handle in handles:
            handle.stop()


def test_main_chain_on_two_celery_workers_equals_the_local_executor_run(
    pg_server_url, two_sandboxes, tmp_path
):
    chain = celery_stack.present_chain()
    assert chain, "no DAG of the main chain exists"
    started = time.monotonic()
    local = _Side("local", tmp_path, pg_server_url, two_sandboxes[0].urls)
    celery = None
    proc = None
    try:
        # one migrated, configured pair of databases, cloned for the Celery run
        setup = local.erpsync("setup")
        assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
        celery = _Side("celery", tmp_path, pg_server_url, two_sandboxes[1].urls, template=local)
        report_file = tmp_path / "celery_report.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "erpsync.deploy.cli",
                "celery-run",
                "--json-out",
                str(report_file),
                "--no-setup",  # the clone is migrated and configured already
                *[arg for dag_id in chain for arg in ("--dag-id", dag_id)],
            ],
            env=celery.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # meanwhile, the same chain on the LocalExecutor: `airflow dags test` one DAG after the
        # other in one Airflow CLI process, exactly as demo --once runs it, in the environment
        # `erpsync airflow ...` gives Airflow (`erpsync env`)
        exported = local.erpsync("env")
        assert exported.returncode == 0, exported.stderr[-3000:]
        airflow_env = {**local.env, **_exports(exported.stdout)}
        driver = DagsTestDriver(airflow_env, tmp_path / "local-dags-test.log")
        try:
            for dag_id in chain:
                driver.start(dag_id, [])
                assert driver.wait(dag_id, timeout=400), f"{dag_id}: not finished in 400 s"
                output, returncode = driver.output(dag_id)
                assert returncode == 0, f"{dag_id}: {output[-3000:]}"
        finally:
            driver.stop()
        output, _ = proc.communicate(timeout=480)
        print(output)  # the task-to-worker distribution, in the test log
        assert proc.returncode == 0, output[-6000:]
        report = json.loads(report_file.read_text())
        print(f"celery and local runs took {time.monotonic() - started:.0f} s together")

        # every DAG run succeeded, on the Celery side
        assert [r["dag_id"] for r in report["runs"]] == chain
        assert {r["dag_id"]: r["state"] for r in report["runs"]} == dict.fromkeys(chain, "success")
        # ... with tasks on both workers, and no task anywhere else
        hosts = report["distribution"]
        assert set(hosts) == set(report["workers"]), hosts
        assert all(count > 0 for count in hosts.values()), hosts

        # the same results as the LocalExecutor run
        local_runs, celery_runs = local.runs(), celery.runs()
        for dag_id in chain:
            assert celery_runs[dag_id][0].startswith("celery__")
            assert celery_runs[dag_id][1:] == local_runs[dag_id][1:], dag_id
        celery_audit = celery.audit_counts({d: celery_runs[d][0] for d in chain})
        local_audit = local.audit_counts({d: local_runs[d][0] for d in chain})
        assert celery_audit == local_audit
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()  # celery-run stops every process group it started on SIGTERM
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        local.drop()
        if celery is not None:
            celery.drop()
