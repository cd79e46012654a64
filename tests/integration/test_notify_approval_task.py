"""The billing DAGs' approval task (``BatchApprovalOperator``) tells the approvers at once, in a
real ``airflow dags test`` run: a probe DAG hands a batch built by the real invoicing code to the
operator; while the task waits in Airflow's ``awaiting_input`` state (Required Actions) the
approvers' mail is on the loopback SMTP server with the summary and the task's Required Actions
link. With the mail server down the task still asks (it reaches ``awaiting_input``) and the
failed notification is recorded. The runs are stopped while they wait: answering is
test_billing_e2e.py's subject."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal as D
from pathlib import Path

import psycopg
import pytest

from erpsync.invoicing import build_batch
from erpsync.sync.spec import RunInfo
from tests.integration.notify_harness import MailServer, airflow_env, free_port
from tests.support import invoicing_data as dd

DAG = "erpsync_notify_approval_probe"
APPROVERS = ["controller@firm.example", "finance-lead@firm.example"]

DAG_FILE = textwrap.dedent(
    '''
    """The billing DAGs' approval task on a batch built beforehand (notification test probe)."""
    import os
    from datetime import timedelta

    import pendulum
    from airflow.sdk import dag, task

    from erpsync.airflow.approval_task import BatchApprovalOperator
    from erpsync.airflow.dag_defaults import default_args, tags

    @dag(
        dag_id="erpsync_notify_approval_probe",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        default_args=default_args(),
        tags=tags("billing"),
        doc_md=__doc__,
    )
    def probe():
        @task(task_id="build_batch")
        def build():
            return {"batch_id": int(os.environ["PROBE_BATCH_ID"])}

        build() >> BatchApprovalOperator(
            task_id="approve_batch",
            subject="Approve",
            body="-",
            options=["Approve", "Reject"],
            defaults=["Reject"],
            response_timeout=timedelta(hours=72),
        )

    probe()
    '''
)


def _batch(url: str) -> int:
    run = RunInfo(dag_id="test", run_id="build-1", task_id="build_batch", actor="alice")
    with psycopg.connect(url) as c:
        dd.add_tax_setup(c)
        dd.add_client(c, "acc-nl", name="Dutch Client BV", country="NL", vat_id="NL001")
        dd.add_contract(c, "opp-A", "acc-nl")
        dd.add_item(
            c,
            "time:1",
            account_id="acc-nl",
            opportunity_id="opp-A",
            currency="EUR",
            item_date="2026-10-05",
            hours=D("10"),
            rate=D("150"),
            role="Consultant",
        )
        result = build_batch(
            c, run, period_start="2026-10-01", period_end="2026-10-31", prepared_by="alice"
        )
        c.commit()
    return result.batch_id


def _start(env, dag_file: Path, log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", DAG, "-f", str(dag_file)],
            env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _awaiting_input(airflow_url: str) -> list[str]:
    with psycopg.connect(airflow_url) as c:
        return [
            r[0]
            for r in c.execute(
                """SELECT run_id FROM task_instance WHERE dag_id = %s
                    AND task_id = 'approve_batch' AND state = 'awaiting_input'""",
                (DAG,),
            ).fetchall()
        ]


def _env(runtime, smtp, warehouse_db, batch_id, port) -> dict[str, str]:
    from erpsync.runtime import airflow_env as project_env
    from erpsync.runtime import database

    env = airflow_env(
        runtime,
        port,
        smtp,
        AIRFLOW_VAR_ERPSYNC_NOTIFICATIONS=json.dumps({"approvers": APPROVERS}),
        PROBE_BATCH_ID=str(batch_id),
    )
    urls = database.DatabaseUrls(warehouse_db, runtime.airflow_url, embedded=False)
    env["AIRFLOW_CONN_ERPSYNC_WAREHOUSE"] = project_env.warehouse_connection_json(urls)
    env["ERPSYNC_DATABASE_URL"] = warehouse_db
    return env


@pytest.mark.timeout(600)
def test_the_approval_task_tells_the_approvers_and_a_mail_failure_does_not_stop_it(
    airflow_runtime, warehouse_db, tmp_path
):
    batch_id = _batch(warehouse_db)
    dag_file = tmp_path / "approval_probe.py"
    dag_file.write_text(DAG_FILE)
    smtp = MailServer().start()
    port = free_port()
    proc = None
    try:
        env = _env(airflow_runtime, smtp, warehouse_db, batch_id, port)
        proc = _start(env, dag_file, tmp_path / "run1.log")
        mails = smtp.wait_for(1, timeout=240)
        assert mails, (tmp_path / "run1.log").read_text()[-4000:]
        mail = mails[0]
        assert mail.to == APPROVERS
        assert mail.subject == f"Approve invoice batch {batch_id}"
        assert "Dutch Client BV" in mail.html and "1,500.00 EUR" in mail.html
        assert f"http://localhost:{port}/dags/{DAG}/runs/" in mail.html
        assert "/tasks/approve_batch/required_actions" in mail.html
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _awaiting_input(airflow_runtime.airflow_url):
            time.sleep(1)
        (run_id,) = _awaiting_input(airflow_runtime.airflow_url)
        assert run_id.replace(":", "%3A").replace("+", "%2B") in mail.html
        _stop(proc)
    finally:
        if proc is not None:
            _stop(proc)
        smtp.stop()

    # the mail server is down: the approval is asked all the same, the failure recorded
    smtp_down = MailServer()  # never started: nothing listens on its port
    env = _env(airflow_runtime, smtp_down, warehouse_db, batch_id, port)
    with psycopg.connect(airflow_runtime.airflow_url) as c:
        c.execute(
            "UPDATE task_instance SET state = 'failed' WHERE dag_id = %s AND state = "
            "'awaiting_input'",
            (DAG,),
        )
    proc = _start(env, dag_file, tmp_path / "run2.log")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not _awaiting_input(airflow_runtime.airflow_url):
            assert proc.poll() is None, (tmp_path / "run2.log").read_text()[-4000:]
            time.sleep(1)
        assert _awaiting_input(airflow_runtime.airflow_url), (tmp_path / "run2.log").read_text()[
            -4000:
        ]
        with psycopg.connect(warehouse_db) as c:
            rows = c.execute(
                """SELECT status, last_error FROM ops.notifications_sent
                    WHERE kind = 'approval_request' ORDER BY notification_id"""
            ).fetchall()
        assert [r[0] for r in rows] == ["sent", "failed"]
        assert "Connection refused" in rows[1][1]
        assert "approvers notified: failed" in (tmp_path / "run2.log").read_text()
    finally:
        _stop(proc)
        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "delete", "-y", DAG],
            env=env,
            capture_output=True,
            timeout=120,
        )
