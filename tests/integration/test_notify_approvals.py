"""Approval notifications received by a real SMTP server on loopback, for a batch built by the
real invoicing code: the approvers are told at once (totals per currency and per client and
currency, anomalies, the Required Actions link), reminded after the configured time, the
escalation group is told before the response timeout rejects the batch; each once. A mail server
that is down (or a warehouse that cannot be reached) never raises into the approval task."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import psycopg
import pytest

from erpsync import audit
from erpsync.invoicing import build_batch
from erpsync.notify import approvals
from erpsync.notify.config import NotifySettings
from erpsync.sync.spec import RunInfo
from tests.integration.notify_harness import MailServer, free_port, smtp_connection_json
from tests.support import invoicing_data as dd

BASE = "https://airflow.firm.example"
DAG, RUN_ID, TASK = (
    "erpsync_invoice_batches",
    "scheduled__2026-11-02T11:00:00+00:00",
    "approve_batch",
)
TIMEOUT = timedelta(hours=72)
SETTINGS = NotifySettings.from_mapping(
    {
        "approvers": ["controller@firm.example", "finance-lead@firm.example"],
        "escalation": "cfo@firm.example",
        "approval_reminder_after": "24h",
        "approval_escalate_before": "12h",
        "base_url": BASE,
    }
)


@pytest.fixture
def batch(warehouse_db):
    """A real batch awaiting approval (NL client in EUR with a rate off its contract, a JPY
    client), and the approval task's ``approval_requested`` audit row."""
    run = RunInfo(dag_id=DAG, run_id=RUN_ID, task_id="build_batch", actor="scheduler")
    with psycopg.connect(warehouse_db) as c:
        dd.add_tax_setup(c)
        dd.add_client(c, "acc-nl", name="Dutch Client BV", country="NL", vat_id="NL001")
        dd.add_client(c, "acc-jp", name="Tokyo KK", country="JP", currency="JPY")
        dd.add_contract(c, "opp-A", "acc-nl")
        dd.add_contract(c, "opp-C", "acc-jp", currency="JPY")
        dd.add_person(c, "u1", "u1@firm.example", "Senior Consultant")
        dd.add_rate_override(c, "opp-A", "u1@firm.example", D("170"), "EUR")
        for key, acc, opp, cur, hours, rate in (
            ("time:1", "acc-nl", "opp-A", "EUR", "10", "175"),
            ("time:2", "acc-jp", "opp-C", "JPY", "8", "25000"),
        ):
            dd.add_item(
                c,
                key,
                account_id=acc,
                opportunity_id=opp,
                currency=cur,
                item_date="2026-10-05",
                hours=hours,
                rate=rate,
                role="Senior Consultant",
                user_psa_id="u1",
            )
        result = build_batch(
            c, run, period_start="2026-10-01", period_end="2026-10-31", prepared_by="scheduler"
        )
        assert result.status == "awaiting_approval" and result.anomalies
        audit.record(
            c,
            actor="scheduler",
            action="invoice_batch.approval_requested",
            entity_type="invoice_batch",
            entity_id=str(result.batch_id),
            source=audit.Source(dag_id=DAG, run_id=RUN_ID, task_id=TASK),
            detail={"content_hash": result.content_hash, "ask": 1},
        )
        c.commit()
    return result.batch_id


def _connect(url):
    return lambda: psycopg.connect(url)


def _notify(batch: int, connect) -> str:
    """The approval task's call for ``batch`` of this module's DAG run."""
    return approvals.notify_approval_requested(
        batch_id=batch,
        dag_id=DAG,
        run_id=RUN_ID,
        task_id=TASK,
        timeout=TIMEOUT,
        settings=SETTINGS,
        connect=connect,
    )


def test_approvers_told_at_once_reminded_then_escalation(warehouse_db, batch, mail):
    outcome = _notify(batch, _connect(warehouse_db))
    assert outcome == "sent"
    (request,) = mail.wait_for(1)
    assert request.to == ["controller@firm.example", "finance-lead@firm.example"]
    assert request.subject == f"Approve invoice batch {batch}"
    assert request.headers["X-Erpsync-Notification"] == "approval_request"
    link = (
        f"{BASE}/dags/erpsync_invoice_batches/runs/"
        "scheduled__2026-11-02T11%3A00%3A00%2B00%3A00/tasks/approve_batch/required_actions"
    )
    assert f'href="{link}"' in request.html
    assert f'href="{BASE}/required_actions"' in request.html
    # the summary: totals per currency, per client and currency, anomalies
    assert (
        "Totals per currency" in request.html and "Totals per client and currency" in request.html
    )
    assert "Dutch Client BV" in request.html and "Tokyo KK" in request.html
    assert "200,000 JPY" in request.html  # 8 h x 25,000, JPY has no minor unit
    assert "1,750.00 EUR" in request.html  # net of 10 h x 175
    assert "rate_off_contract" in request.html
    assert "prepared by scheduler" in request.html

    # the task is retried or asks again in the same run: not sent twice
    assert _notify(batch, _connect(warehouse_db)) == "skipped"

    with psycopg.connect(warehouse_db) as c:
        asked = approvals.pending_approvals(c)[0].asked_at
        assert approvals.send_reminders(
            c, SETTINGS, timeout=TIMEOUT, now=asked + timedelta(hours=1)
        ) == {"approval_request:skipped": 1}
        due = approvals.send_reminders(
            c, SETTINGS, timeout=TIMEOUT, now=asked + timedelta(hours=25)
        )
        assert due == {"approval_request:skipped": 1, "approval_reminder:sent": 1}
        reminder = mail.wait_for(2)[1]
        assert reminder.to == request.to
        assert reminder.subject == f"Reminder: invoice batch {batch} waits for approval"
        assert f'href="{link}"' in reminder.html and "Tokyo KK" in reminder.html
        # the next watcher run: nothing new
        again = approvals.send_reminders(
            c, SETTINGS, timeout=TIMEOUT, now=asked + timedelta(hours=26)
        )
        assert again == {"approval_request:skipped": 1, "approval_reminder:skipped": 1}
        # 12 h before the 72 h timeout: the escalation group (and the approvers)
        late = asked + timedelta(hours=61)
        due = approvals.send_reminders(c, SETTINGS, timeout=TIMEOUT, now=late)
        assert due == {
            **{"approval_request:skipped": 1, "approval_reminder:skipped": 1},
            "approval_escalation:sent": 1,
        }
        escalation = mail.wait_for(3)[2]
        assert escalation.to == [
            "cfo@firm.example",
            "controller@firm.example",
            "finance-lead@firm.example",
        ]
        deadline = f"{asked + TIMEOUT:%Y-%m-%d %H:%M} UTC"
        assert escalation.subject == (
            f"Escalation: invoice batch {batch} is rejected at {deadline} unless answered"
        )
        assert f'href="{link}"' in escalation.html
        # after the timeout the scheduler rejected it: nobody is told any more
        after = approvals.send_reminders(c, SETTINGS, timeout=TIMEOUT, now=asked + TIMEOUT)
        assert after == {}
        # a decided batch is not waiting: nothing either
        c.execute(
            "UPDATE billing.invoice_batches SET status = 'rejected', decided_by = 'x', "
            "decided_at = now() WHERE batch_id = %s",
            (batch,),
        )
        assert approvals.pending_approvals(c) == []
        c.rollback()
    assert len(mail.mails) == 3
    with psycopg.connect(warehouse_db) as c:
        kinds = c.execute(
            "SELECT kind, status, recipients FROM ops.notifications_sent ORDER BY notification_id"
        ).fetchall()
    assert [(k, s) for k, s, _r in kinds] == [
        ("approval_request", "sent"),
        ("approval_reminder", "sent"),
        ("approval_escalation", "sent"),
    ]


def test_mail_server_or_warehouse_down_never_raises(warehouse_db, batch, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_SMTP", smtp_connection_json(free_port()))
    outcome = _notify(batch, _connect(warehouse_db))
    assert outcome == "failed"
    with psycopg.connect(warehouse_db) as c:
        status, attempts, error = c.execute(
            "SELECT status, attempts, last_error FROM ops.notifications_sent"
        ).fetchone()
        assert (status, attempts) == ("failed", 1) and "Connection refused" in error
    # the reminder watcher sends the request once the server is back, then the reminder
    server = MailServer().start()
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_SMTP", server.connection_json())
    try:
        with psycopg.connect(warehouse_db) as c:
            asked = approvals.pending_approvals(c)[0].asked_at
            due = approvals.send_reminders(
                c, SETTINGS, timeout=TIMEOUT, now=asked + timedelta(hours=2)
            )
            assert due == {"approval_request:sent": 1}
            assert server.wait_for(1)[0].subject == f"Approve invoice batch {batch}"
            assert c.execute("SELECT status, attempts FROM ops.notifications_sent").fetchone() == (
                "sent",
                2,
            )
            due = approvals.send_reminders(
                c, SETTINGS, timeout=TIMEOUT, now=asked + timedelta(hours=25)
            )
        assert due == {"approval_request:skipped": 1, "approval_reminder:sent": 1}
        assert server.wait_for(2)[1].subject.startswith("Reminder:")
    finally:
        server.stop()

    def broken():
        raise psycopg.OperationalError("warehouse unreachable")

    assert _notify(batch, broken) == "failed"
