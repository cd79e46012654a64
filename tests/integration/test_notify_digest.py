"""Exception digests received by a real SMTP server on loopback: recipients resolved per owner
(settings, people, CRM owner ids, the finance-ops fallback), subjects, grouping by reason with
amounts, deep links; a second run sends nothing; an exception that ages or grows is told again
(only that); a mail server that is down is recorded and the next run sends what was missed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import psycopg
import pytest

from erpsync import exceptions_queue
from erpsync.notify import digest
from erpsync.notify.config import NotifySettings
from erpsync.sync.spec import RunInfo
from tests.integration.notify_harness import FROM, MailServer, free_port, smtp_connection_json
from tests.support import invoicing_data as dd

BASE = "https://airflow.firm.example"
RUN = RunInfo(dag_id="test", run_id="recon-1", task_id="reconcile", actor="scheduler")

SETTINGS = NotifySettings.from_mapping(
    {
        "finance_ops": "finance-ops@firm.example",
        "owners": {
            "billing_ops": ["billing@firm.example", "billing-lead@firm.example"],
            "005AM0000000001": "account.manager@firm.example",
        },
        "digest_age_days": 7,
        "digest_amount_threshold": "5000",
        "digest_amount_thresholds": {"JPY": "700000"},
        "base_url": BASE,
    }
)


@pytest.fixture
def conn(warehouse_db):
    with psycopg.connect(warehouse_db, autocommit=False) as c:
        dd.add_person(c, "jane", "jane.doe@firm.example", "Project Manager")
        ids = {}

        def add(name, reason, entity, key, owner, amount=None, currency=None, detail=None):
            ids[name] = exceptions_queue.raise_exception(
                c,
                reason,
                entity,
                key,
                owner,
                detail or {},
                RUN,
                amount_at_stake=amount,
                currency=currency,
            ).exception_id

        add("rate", "missing_rate", "time_entry", "te-1", "billing_ops", D("1200.00"), "EUR")
        add("rate_big", "missing_rate", "time_entry", "te-2", "billing_ops", D("8000.50"), "EUR")
        add("rate_jpy", "missing_rate", "time_entry", "te-3", "billing_ops", D("650000"), "JPY")
        add(
            "vat",
            "invalid_tax_id",
            "client",
            "acc-9",
            "finance ops / CRM owner 005AM0000000001",
            detail={
                "message": "invalid VAT id: check digit",
                "payload": {"Id": "acc-9", "secret_field": "RAW-PAYLOAD-MUST-NOT-LEAK"},
            },
        )
        add("dup", "duplicate_entry", "time_entry", "te-4", "Test jane", D("300"), "USD")
        add("orphan", "closed_project", "time_entry", "te-5", "timesheet_owner", D("75"), "EUR")
        # an old one: open for 10 days
        c.execute(
            "UPDATE ops.exceptions SET first_seen_at = now() - interval '10 days' "
            "WHERE exception_id = %s",
            (ids["orphan"],),
        )
        # resolved ones are never in a digest
        add("gone", "missing_rate", "time_entry", "te-6", "billing_ops", D("1"), "EUR")
        c.execute(
            "UPDATE ops.exceptions SET status = 'resolved', resolved_at = now() "
            "WHERE exception_id = %s",
            (ids["gone"],),
        )
        c.commit()
        c.ids = ids
        yield c


def _by_recipient(mails):
    out = {}
    for m in mails:
        assert len(m.to) == 1, m.to  # a digest is personal
        assert m.to[0] not in out, f"two digests for {m.to[0]}"
        out[m.to[0]] = m
    return out


def test_each_owner_gets_one_digest_then_nothing_new_means_no_mail(conn, mail):
    ids = conn.ids
    counts = digest.send_digests(conn, SETTINGS)
    assert counts["sent"] == 5 and counts["failed"] == 0
    got = _by_recipient(mail.wait_for(5))
    assert set(got) == {
        "billing@firm.example",
        "billing-lead@firm.example",
        "account.manager@firm.example",  # CRM owner id named in the owner text
        "jane.doe@firm.example",  # a person: core.people by name
        "finance-ops@firm.example",  # timesheet_owner has no address: the fallback
    }
    for m in got.values():
        assert m.sender == FROM
        assert m.headers["X-Erpsync-Notification"] == "exception_digest"
        assert "RAW-PAYLOAD-MUST-NOT-LEAK" not in m.html and "secret_field" not in m.html

    billing = got["billing@firm.example"]
    assert billing.subject == (
        "erpsync exceptions: 3 to look at (3 new, 0 open 7+ days, 1 above the amount threshold)"
    )
    # grouped by reason with the label, the count and the amounts per currency
    assert "Missing rate (missing_rate): 3, at stake 9,200.50 EUR, 650,000 JPY" in billing.html
    for name in ("rate", "rate_big", "rate_jpy"):
        assert f'href="{BASE}/erpsync/exceptions/{ids[name]}"' in billing.html
    assert f"/erpsync/exceptions/{ids['gone']}" not in billing.html
    assert f'href="{BASE}/erpsync/exceptions?owner=billing_ops"' in billing.html
    assert "new, above the amount" in billing.html  # why the 8,000.50 EUR one is listed
    assert got["billing-lead@firm.example"].subject == billing.subject

    vat = got["account.manager@firm.example"]
    assert "invalid_tax_id" in vat.html and "invalid VAT id: check digit" in vat.html
    assert "owner=finance%20ops%20%2F%20CRM%20owner%20005AM0000000001" in vat.html

    fallback = got["finance-ops@firm.example"]
    assert "no address of their own: sent to finance ops" in fallback.html
    assert "timesheet_owner" in fallback.html
    assert "1 new, 1 open 7+ days" in fallback.subject
    assert "new, open past the age threshold" in fallback.html

    # the ledger: five sent messages, every listed exception remembered per address
    assert conn.execute(
        "SELECT count(*), bool_and(status = 'sent') FROM ops.notifications_sent "
        "WHERE kind = 'exception_digest'"
    ).fetchone() == (5, True)

    # a second run (a retry, a rerun): nothing new, nothing sent
    again = digest.send_digests(conn, SETTINGS)
    assert again["sent"] == 0 and again["failed"] == 0
    assert len(mail.mails) == 5

    # a week later the billing exceptions are old: told again, only for that
    conn.execute(
        "UPDATE ops.exceptions SET first_seen_at = now() - interval '8 days' "
        "WHERE exception_id = ANY(%s)",
        ([ids["rate"], ids["rate_big"]],),
    )
    conn.commit()
    digest.send_digests(conn, SETTINGS)
    later = mail.wait_for(7)[5:]
    assert sorted(m.to[0] for m in later) == ["billing-lead@firm.example", "billing@firm.example"]
    assert later[0].subject == (
        "erpsync exceptions: 2 to look at (0 new, 2 open 7+ days, 0 above the amount threshold)"
    )
    assert f"/erpsync/exceptions/{ids['rate_jpy']}" not in later[0].html
    assert digest.send_digests(conn, SETTINGS)["sent"] == 0


def test_mail_server_down_is_recorded_and_the_next_run_sends(conn, monkeypatch):
    down_port = free_port()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_SMTP", smtp_connection_json(down_port))
    counts = digest.send_digests(conn, SETTINGS)
    assert counts["failed"] == 5 and counts["sent"] == 0
    rows = conn.execute(
        "SELECT status, attempts, last_error FROM ops.notifications_sent ORDER BY 1"
    ).fetchall()
    assert len(rows) == 5
    assert all(r[0] == "failed" and r[1] == 1 and "Connection" in r[2] for r in rows), rows
    assert conn.execute("SELECT count(*) FROM ops.notified_exceptions").fetchone()[0] == 0

    # still down: the same digests are tried again (attempts 2), still not remembered as told
    digest.send_digests(conn, SETTINGS)
    assert conn.execute(
        "SELECT array_agg(DISTINCT attempts) FROM ops.notifications_sent"
    ).fetchone()[0] == [2]

    server = MailServer()
    server.port = down_port
    server.start()
    try:
        counts = digest.send_digests(conn, SETTINGS)
        assert counts["sent"] == 5 and counts["failed"] == 0
        assert len(server.wait_for(5)) == 5
        assert (
            conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'sent' AND attempts = 3 AND sent_at IS NOT "
                "NULL) FROM ops.notifications_sent"
            ).fetchone()[0]
            == 5
        )
        assert digest.send_digests(conn, SETTINGS)["sent"] == 0
        assert len(server.mails) == 5
    finally:
        server.stop()


def test_no_open_exceptions_no_mail(warehouse_db, mail):
    with psycopg.connect(warehouse_db) as c:
        assert digest.send_digests(c, SETTINGS) == {
            "sent": 0,
            "skipped": 0,
            "failed": 0,
            "no_recipients": 0,
            "exceptions": 0,
        }
    assert mail.mails == []


def test_digest_lists_at_most_the_cap_and_the_rest_come_next(conn, mail):
    capped = NotifySettings.from_mapping(
        {"owners": {"billing_ops": "billing@firm.example"}, "digest_max_items": 2, "base_url": BASE}
    )
    digest.send_digests(conn, capped, now=dt.datetime.now(dt.UTC))
    first = [m for m in mail.wait_for(1) if m.to == ["billing@firm.example"]][0]
    assert "1 more are not listed here" in first.html
    assert "3 to look at" in first.subject
    digest.send_digests(conn, capped)
    second = [m for m in mail.wait_for(2) if m.to == ["billing@firm.example"]]
    assert len(second) == 2 and "1 to look at" in second[1].subject


def test_data_is_escaped_never_markup_or_template(conn, mail):
    exceptions_queue.raise_exception(
        conn,
        "missing_rate",
        "time_entry",
        "<script>alert(1)</script>",
        "billing_ops",
        {"message": "{{ conn.erpsync_erp.password }} <img src=x>"},
        RUN,
    )
    conn.commit()
    digest.send_digests(conn, SETTINGS)
    billing = _by_recipient(mail.wait_for(5))["billing@firm.example"]
    assert (
        "<script>" not in billing.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in billing.html
    )
    assert "<img" not in billing.html
    # shown as text, never rendered as a Jinja template
    assert "{{ conn.erpsync_erp.password }}" in billing.html
