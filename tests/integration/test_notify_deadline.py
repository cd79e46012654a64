"""A deadline alert fired by a REAL Airflow scheduler: the nightly master data sync, with its
deadline set to 15 s (``ERPSYNC_DEADLINE_SYNC``, read when the DAG file is parsed), is triggered
while its API pools have no free slot, so the run is held; the scheduler finds the missed
deadline (``Deadline.handle_miss``) and the LocalExecutor runs erpsync's callback, which mails
the data engineers through the loopback SMTP server (aiosmtpd) with the link to the run, and
records it in ``ops.notifications_sent``.

Processes, as an operator runs them: ``airflow dags reserialize`` (the DAG files, parsed into
the metadata database), ``airflow api-server`` (the executor's callbacks talk to its execution
API) and ``airflow scheduler``; the pools and the run through the ``airflow`` CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.notify_harness import MailServer, airflow_env, free_port

DAG = "erpsync_master_data_sync"
RUN_ID = "manual__notify_deadline_test"
POOLS = ("crm_api", "psa_api", "erp_api")


def _airflow(env, *args: str, timeout: float = 180) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result.stdout


def _spawn(env, args: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    grace = time.monotonic() + 5
    while time.monotonic() < grace and any(p.poll() is None for p in procs):
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.timeout(480)
def test_a_sync_held_past_its_deadline_alerts_the_data_engineers(
    airflow_runtime, pg_server_url, tmp_path
):
    from erpsync.runtime import database
    from tests.conftest import make_database

    smtp = MailServer().start()
    port = free_port()
    env = airflow_env(
        airflow_runtime,
        port,
        smtp,
        ERPSYNC_DEADLINE_SYNC="15s",
        AIRFLOW_VAR_ERPSYNC_NOTIFICATIONS=json.dumps(
            {"data_engineers": ["data-eng@firm.example", "oncall@firm.example"]}
        ),
    )
    # An Airflow metadata database of its own: what earlier tests of the worker serialized (the
    # `dags test` driver parses the DAGs with deadlines off) must not be the version the
    # scheduler starts from (a deadline added to an already serialized DAG version is not
    # materialized for its runs: apache/airflow#68732).
    airflow_url = make_database(pg_server_url, "erpsync_test_deadline_af")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database.to_sqlalchemy(airflow_url)
    env["ERPSYNC_AIRFLOW_DATABASE_URL"] = airflow_url
    procs: list[subprocess.Popen] = []
    try:
        _airflow(env, "db", "migrate", timeout=300)
        procs.append(_spawn(env, ["api-server", "--port", str(port)], tmp_path / "api.log"))
        procs.append(_spawn(env, ["scheduler"], tmp_path / "scheduler.log"))
        _airflow(env, "dags", "reserialize")
        for pool in POOLS:  # the vendor APIs' capacity is taken: the sync's tasks must wait
            _airflow(env, "pools", "set", pool, "0", "held by the deadline test")
        _airflow(env, "dags", "unpause", DAG)
        _airflow(env, "dags", "trigger", DAG, "--run-id", RUN_ID)

        deadline = time.monotonic() + 180
        mine = []
        while time.monotonic() < deadline and not mine:
            mine = [m for m in smtp.mails if RUN_ID in m.html]
            for proc, name in zip(procs, ("api", "scheduler"), strict=True):
                assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-4000:]
            time.sleep(1)
        assert mine, (
            "no deadline alert received; scheduler log:\n"
            + (tmp_path / "scheduler.log").read_text()[-6000:]
        )
        alert = mine[0]
        assert alert.to == ["data-eng@firm.example", "oncall@firm.example"]
        assert alert.subject == (
            f"Late: nightly master data sync {DAG} has not finished by its deadline"
        )
        assert alert.headers["X-Erpsync-Notification"] == "deadline_missed"
        run_link = f"http://localhost:{port}/dags/{DAG}/runs/{RUN_ID}"
        assert f'href="{run_link}"' in alert.html
        assert "0:00:15 after it was queued" in alert.html
        # the run was really held, not finished: it is still running with nothing done
        state = httpx.get(f"http://localhost:{port}/api/v2/monitor/health", timeout=10).status_code
        assert state == 200
        with psycopg.connect(airflow_url) as c:
            run_state = c.execute(
                "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG, RUN_ID)
            ).fetchone()[0]
            assert run_state in ("queued", "running")
            missed = c.execute(
                """SELECT d.missed FROM deadline d JOIN dag_run r ON r.id = d.dagrun_id
                    WHERE r.dag_id = %s AND r.run_id = %s""",
                (DAG, RUN_ID),
            ).fetchall()
            assert missed == [(True,)]
        with psycopg.connect(airflow_runtime.warehouse_url) as c:
            rows = c.execute(
                """SELECT kind, status, recipients FROM ops.notifications_sent
                    WHERE source_run_id = %s""",
                (RUN_ID,),
            ).fetchall()
        assert rows == [
            ("deadline_missed", "sent", ["data-eng@firm.example", "oncall@firm.example"])
        ]
        time.sleep(3)  # the scheduler keeps running: the alert is not sent twice
        assert len([m for m in smtp.mails if RUN_ID in m.html]) == 1
    finally:
        _stop(procs)
        smtp.stop()
        database.drop_database(airflow_url)
