"""Payment status end to end: an invoice pushed to the sandbox ERP by the real push, paid in
part and then in full through the sandbox's payment control, synced back each time by
:func:`erpsync.invoicing.payment_status.sync_payment_status` over the real connector.

Business Central shows a part-payment only in ``remainingAmount`` (``lastModifiedDateTime``
stays), so the test also proves the open-invoice read finds it, and that a rerun over an
unchanged ERP changes nothing.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import httpx
import psycopg

from erpsync import money
from erpsync.console import cash
from erpsync.invoicing.payment_status import sync_payment_status
from erpsync.sync.spec import RunInfo
from tests.integration import test_invoicing_push as push_tests

env = push_tests.env  # the push tests' module fixture: small sandbox firm + warehouse


def _sync(env, day: dt.date):
    from erpsync.connectors.business_central import BusinessCentralClient

    erp = BusinessCentralClient()
    try:
        with psycopg.connect(env.db) as conn:
            return sync_payment_status(conn, erp, RunInfo.local("payments"), day=day)
    finally:
        erp.close()


def _pay(env, erp_id: str, amount: Decimal) -> dict:
    resp = httpx.post(
        f"{env.sandbox.urls['erp']}/__admin/payments",
        json={"invoiceId": erp_id, "amount": str(amount)},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def _state(env, invoice_id: int):
    with psycopg.connect(env.db) as conn:
        status = conn.execute(
            """SELECT status, total_incl_tax, remaining_amount, paid_on, due_date, posting_date,
                      erp_number
                 FROM billing.erp_invoice_status WHERE invoice_id = %s""",
            (invoice_id,),
        ).fetchone()
        history = conn.execute(
            """SELECT valid_from, valid_to, status, remaining_amount
                 FROM billing.erp_receivable_history WHERE invoice_id = %s ORDER BY valid_from""",
            (invoice_id,),
        ).fetchall()
    return status, history


def _assert_summaries(env, day: dt.date, states: dict[str, int]) -> None:
    """The console's summaries were refreshed by the sync for ``day`` and say what the tables
    say (the direct computation, with the refresh mark hidden)."""
    with psycopg.connect(env.db) as conn:
        assert cash.refreshed_through(conn) == day
        summary = cash.payment_status_summary(conn, as_of=day)
        dso = cash.dso_by_month(conn, months=4, as_of=day)
        owed = cash.overdue_totals(conn, as_of=day)
        with conn.transaction(force_rollback=True):
            conn.execute("DELETE FROM billing.erp_cash_refresh")
            direct = cash.payment_status_summary(conn, as_of=day)
            assert cash.dso_by_month(conn, months=4, as_of=day) == dso
            assert cash.overdue_totals(conn, as_of=day) == owed
    assert [(r.currency, r.state, r.invoices, r.total, r.remaining) for r in summary] == [
        (r.currency, r.state, r.invoices, r.total, r.remaining) for r in direct
    ]
    got = {r.state: r.invoices for r in summary}
    assert {k: got.get(k, 0) for k in states} == states


def test_push_pay_part_sync_pay_rest_sync(env):
    batch = push_tests.make_batch(env, 1)
    result = push_tests.push(env, batch.batch_id)
    assert result.complete
    (doc, inv) = next(iter(batch.invoices.items()))
    with psycopg.connect(env.db) as conn:
        erp_id, erp_number = conn.execute(
            "SELECT erp_invoice_id, erp_number FROM billing.invoices WHERE invoice_id = %s",
            (inv["invoice_id"],),
        ).fetchone()
    bc = env.sandbox.ctx.stores["erp"].get("salesInvoices", erp_id)
    total = Decimal(str(bc["totalAmountIncludingTax"]))
    posted_on = dt.date.fromisoformat(bc["postingDate"])
    currency = inv["currency"]

    first = _sync(env, dt.date(2026, 11, 3))
    assert first.matched >= 1 and first.new >= 1
    status, history = _state(env, inv["invoice_id"])
    assert status[:4] == ("Open", total, total, None)
    assert status[4] == dt.date.fromisoformat(bc["dueDate"]) and status[5] == posted_on
    assert status[6] == erp_number
    assert history == [(posted_on, None, "Open", total)]

    part = money.round_money(total / 3, currency)
    _pay(env, erp_id, part)
    assert (
        env.sandbox.ctx.stores["erp"].get("salesInvoices", erp_id)["lastModifiedDateTime"]
        == bc["lastModifiedDateTime"]
    )  # BC does not stamp a part-payment
    second = _sync(env, dt.date(2026, 11, 10))
    assert second.open_read and second.changed == 1
    status, history = _state(env, inv["invoice_id"])
    assert status[:4] == ("Open", total, total - part, None)
    assert history == [
        (posted_on, dt.date(2026, 11, 10), "Open", total),
        (dt.date(2026, 11, 10), None, "Open", total - part),
    ]

    _assert_summaries(env, dt.date(2026, 11, 10), {"partly_paid": 1})

    rerun = _sync(env, dt.date(2026, 11, 11))
    assert (rerun.changed, rerun.new, rerun.history_rows) == (0, 0, 0)
    assert _state(env, inv["invoice_id"])[1] == history

    _pay(env, erp_id, total - part)
    third = _sync(env, dt.date(2026, 11, 20))
    assert third.changed == 1
    status, history = _state(env, inv["invoice_id"])
    assert status[:4] == ("Paid", total, Decimal(0), dt.date(2026, 11, 20))
    assert history[-1] == (dt.date(2026, 11, 20), None, "Paid", Decimal(0))
    assert history[-2][1] == dt.date(2026, 11, 20)

    _assert_summaries(env, dt.date(2026, 11, 20), {"paid": 1})

    # nothing owes anything now: no open-invoice read, and a rerun writes nothing
    last = _sync(env, dt.date(2026, 11, 21))
    assert (last.changed, last.new, last.history_rows) == (0, 0, 0)
    with psycopg.connect(env.db) as conn:
        runs = conn.execute(
            """SELECT count(*) FROM ops.run_stats WHERE entity = 'invoice_payment_status'"""
        ).fetchone()[0]
        watermark = conn.execute(
            """SELECT cursor_ts FROM ops.sync_watermarks
                WHERE source_system = 'erp' AND entity = 'invoice_payment_status'"""
        ).fetchone()[0]
    assert runs == 5 and watermark is not None


def test_an_invoice_pushed_behind_the_watermark_is_read_by_id_once(env):
    _sync(env, dt.date(2026, 11, 3))
    with psycopg.connect(env.db) as conn:  # as if the ERP's clock ran ahead of the posting
        conn.execute(
            """UPDATE ops.sync_watermarks SET cursor_ts = '2100-01-01T00:00:00Z'
                WHERE source_system = 'erp' AND entity = 'invoice_payment_status'"""
        )
    batch = push_tests.make_batch(env, 1)
    assert push_tests.push(env, batch.batch_id).complete
    invoice_id = next(iter(batch.invoices.values()))["invoice_id"]

    found = _sync(env, dt.date(2026, 11, 4))
    assert (found.fetched_by_id, found.not_found, found.new) == (1, 0, 1)
    status, history = _state(env, invoice_id)
    assert status[0] == "Open" and status[1] == status[2] and len(history) == 1

    again = _sync(env, dt.date(2026, 11, 5))
    assert (again.fetched_by_id, again.new, again.changed) == (0, 0, 0)
    assert again.open_read  # it still owes: the open-invoice read covers it from now on


class _ContractBreakingErp:
    """An ERP answering a value Business Central does not document (a status outside
    NAV.invoiceEntityAggregateStatus): the sandbox, being faithful, never does, so this stands
    in for a misbehaving tenant or extension."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records

    def iter_pages(self, entity, *, filter=None, select=None, page_size=None):
        assert entity == "salesInvoices" and select
        rows = [
            r
            for r in self.records
            if not filter or "status eq" not in filter or r["status"] == "Open"
        ]
        yield [{k: r.get(k) for k in select} for r in rows]

    def get(self, entity, rid):
        return next((r for r in self.records if r["id"] == rid), None)


def test_a_record_outside_the_documented_contract_is_quarantined_then_loaded_once_fixed(
    warehouse_db,
):
    ids = ["00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"]
    with psycopg.connect(warehouse_db) as conn:
        batch = conn.execute(
            """INSERT INTO billing.invoice_batches
                   (kind, scope_key, status, content_hash, prepared_by, prepared_run_id)
               VALUES ('period', 'q', 'draft', '', 'm', 't') RETURNING batch_id"""
        ).fetchone()[0]
        for n, erp_id in enumerate(ids):
            conn.execute(
                """INSERT INTO billing.invoices
                       (batch_id, document_number, invoice_scope, account_id, currency,
                        invoice_date, net, tax, total, status, erp_invoice_id, erp_number)
                   VALUES (%s, %s, %s, 'acct', 'EUR', '2026-11-02', 100, 0, 100, 'posted',
                           %s, %s)""",
                (batch, f"ES-Q-{n}", f"q-{n}", erp_id, f"PSI-{n}"),
            )
    record = {
        "number": "PSI-0",
        "postingDate": "2026-11-02",
        "dueDate": "2026-12-02",
        "totalAmountIncludingTax": 100,
        "remainingAmount": 100,
        "lastModifiedDateTime": "2026-11-02T10:00:00Z",
    }
    erp = _ContractBreakingErp(
        [
            {**record, "id": ids[0], "status": "Open"},
            {**record, "id": ids[1], "number": "PSI-1", "status": "Disputed"},
        ]
    )
    with psycopg.connect(warehouse_db) as conn:
        first = sync_payment_status(conn, erp, RunInfo.local("q"), day=dt.date(2026, 11, 3))
    assert (first.quarantined, first.new) == (1, 1)
    with psycopg.connect(warehouse_db) as conn:
        loaded = conn.execute("SELECT erp_invoice_id FROM billing.erp_invoice_status").fetchall()
        open_rows = conn.execute(
            """SELECT record_key, reason_code FROM ops.quarantine
                WHERE entity = 'invoice_payment_status' AND resolved_at IS NULL"""
        ).fetchall()
    assert loaded == [(ids[0],)] and open_rows == [(ids[1], "invalid_status")]

    erp.records[1].update(status="Open", lastModifiedDateTime="2026-11-03T10:00:00Z")
    with psycopg.connect(warehouse_db) as conn:
        fixed = sync_payment_status(conn, erp, RunInfo.local("q"), day=dt.date(2026, 11, 4))
        still_open = conn.execute(
            """SELECT count(*) FROM ops.quarantine
                WHERE entity = 'invoice_payment_status' AND resolved_at IS NULL"""
        ).fetchone()[0]
    assert (fixed.quarantined, fixed.new) == (0, 1) and still_open == 0
