"""The notification DAGs in real ``airflow dags test`` runs: the daily digest mails the owners of
the open exceptions of a real warehouse through the loopback SMTP server, and its second run
sends nothing; the approval-reminder DAG, with nothing waiting, succeeds and sends nothing."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest

from erpsync import exceptions_queue
from erpsync.sync.spec import RunInfo
from tests.integration.notify_harness import MailServer, airflow_env, free_port

SETTINGS = {
    "finance_ops": "finance-ops@firm.example",
    "owners": {"billing_ops": "billing@firm.example"},
    "base_url": "https://airflow.firm.example",
}


def _dags_test(runtime, env, dag_id: str) -> str:
    """``airflow dags test`` in the session's long-lived Airflow interpreter (no ~20 s start per
    run), with this test's connections, Variable and warehouse for the run."""
    extra = {
        k: v
        for k, v in env.items()
        if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_")) or k == "ERPSYNC_DATABASE_URL"
    }
    result = runtime.run("airflow", "dags", "test", dag_id, extra_env=extra, timeout=300)
    return result.stdout + result.stderr


@pytest.mark.timeout(600)
def test_digest_dag_mails_the_owners_once(airflow_runtime, warehouse_db):
    from erpsync.runtime import airflow_env as project_env
    from erpsync.runtime import database

    run = RunInfo(dag_id="test", run_id="recon-1", task_id="reconcile", actor="scheduler")
    with psycopg.connect(warehouse_db) as c:
        exceptions_queue.raise_exception(
            c,
            "missing_rate",
            "time_entry",
            "te-1",
            "billing_ops",
            {"message": "no rate for Senior Consultant on 2026-10-05"},
            run,
            amount_at_stake=Decimal("12500.00"),
            currency="EUR",
        )
        exceptions_queue.raise_exception(
            c, "duplicate_entry", "time_entry", "te-2", "timesheet_owner", {}, run
        )
        c.commit()
    smtp = MailServer().start()
    try:
        env = airflow_env(
            airflow_runtime,
            free_port(),
            smtp,
            AIRFLOW_VAR_ERPSYNC_NOTIFICATIONS=json.dumps(SETTINGS),
        )
        # this test's own warehouse, not the session's
        urls = database.DatabaseUrls(warehouse_db, airflow_runtime.airflow_url, embedded=False)
        env["AIRFLOW_CONN_ERPSYNC_WAREHOUSE"] = project_env.warehouse_connection_json(urls)
        env["ERPSYNC_DATABASE_URL"] = warehouse_db

        output = _dags_test(airflow_runtime, env, "erpsync_notifications")
        assert "exception digests: {'sent': 2" in output, output[-3000:]
        mails = {m.to[0]: m for m in smtp.wait_for(2)}
        assert set(mails) == {"billing@firm.example", "finance-ops@firm.example"}
        billing = mails["billing@firm.example"]
        assert billing.subject.startswith("erpsync exceptions: 1 to look at (1 new")
        assert "12,500.00 EUR" in billing.html and "no rate for Senior Consultant" in billing.html
        assert "https://airflow.firm.example/erpsync/exceptions/" in billing.html

        output = _dags_test(airflow_runtime, env, "erpsync_notifications")
        assert "exception digests: {'sent': 0" in output, output[-3000:]
        assert len(smtp.mails) == 2

        output = _dags_test(airflow_runtime, env, "erpsync_approval_reminders")
        assert "approval reminders and escalations: none due" in output, output[-3000:]
        assert len(smtp.mails) == 2
        with psycopg.connect(warehouse_db) as c:
            rows = c.execute(
                "SELECT source_dag_id, status FROM ops.notifications_sent ORDER BY 1"
            ).fetchall()
        assert rows == [("erpsync_notifications", "sent")] * 2
    finally:
        smtp.stop()
