"""The billing cockpit's data (erpsync.console.billing) on a hand-built firm in a real warehouse.

The reconciliation writes recon.item_totals (migration 0028) with the items; these tests prove
its totals equal a straightforward SQL over recon.items - after a serial run, a parallel first
run, a parallel rerun that changes items and a serial rerun - and that every cockpit figure
(ready, on hold by reason, billed, WIP by age, leakage, batch states and totals, blocks in
force) is the hand-computed one.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from erpsync.console import billing
from erpsync.console.billing import Filters
from erpsync.reconcile import run_reconcile
from erpsync.reconcile.rows import Rows
from erpsync.sync.spec import RunInfo

D = dt.date
AS_OF = D(2026, 4, 1)

#: recon.item_totals' content, straight from recon.items (the definitions of recon.wip)
STRAIGHT = """
SELECT i.period_start, i.account_id, i.client_psa_id, i.currency, i.item_type, i.state,
       i.reason_code, i.approved,
       CASE WHEN i.item_type IN ('time', 'expense') AND i.state IN ('ready', 'on_hold') THEN
            CASE WHEN %(as_of)s::date - i.item_date <= 30 THEN 0
                 WHEN %(as_of)s::date - i.item_date <= 60 THEN 1
                 WHEN %(as_of)s::date - i.item_date <= 90 THEN 2 ELSE 3 END END,
       coalesce(w.is_leakage, false), count(*), sum(i.hours), sum(i.amount)
  FROM recon.items i
  LEFT JOIN recon.wip w ON w.item_key = i.item_key
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
"""
#: (a key may have a row per shard: readers add them up)
STORED = """
SELECT period_start, account_id, client_psa_id, currency, item_type, state, reason_code,
       approved, age_bucket, is_leakage, sum(items), sum(hours), sum(amount)
  FROM recon.item_totals
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
"""


def _key(row):
    return tuple("" if v is None else str(v) for v in row)


#: recon.client_period_totals' content, straight from recon.items and recon.wip
STRAIGHT_CLIENT = """
SELECT i.period_start, i.account_id, i.client_psa_id, i.currency,
       count(*) FILTER (WHERE i.state = 'ready'), sum(i.hours) FILTER (WHERE i.state = 'ready'),
       sum(i.amount) FILTER (WHERE i.state = 'ready'),
       count(*) FILTER (WHERE i.state = 'on_hold'),
       sum(i.hours) FILTER (WHERE i.state = 'on_hold'),
       sum(i.amount) FILTER (WHERE i.state = 'on_hold'),
       count(*) FILTER (WHERE i.state = 'billed'), sum(i.hours) FILTER (WHERE i.state = 'billed'),
       sum(i.amount) FILTER (WHERE i.state = 'billed'),
       count(w.item_key), sum(w.amount),
       count(*) FILTER (WHERE w.is_leakage), sum(w.hours) FILTER (WHERE w.is_leakage),
       sum(w.amount) FILTER (WHERE w.is_leakage)
  FROM recon.items i
  LEFT JOIN recon.wip w ON w.item_key = i.item_key
 GROUP BY 1, 2, 3, 4
"""


def assert_totals_match_items(conn, as_of=AS_OF):
    straight = sorted(conn.execute(STRAIGHT, {"as_of": as_of}).fetchall(), key=_key)
    stored = sorted(conn.execute(STORED).fetchall(), key=_key)
    assert stored == straight
    assert stored, "the scenario has items"
    straight = sorted(conn.execute(STRAIGHT_CLIENT).fetchall(), key=_key)
    stored = sorted(conn.execute("SELECT * FROM recon.client_period_totals").fetchall(), key=_key)
    assert stored == straight


def _client(conn, crm_id: str, name: str, currency: str) -> None:
    conn.execute("INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', %s)", (crm_id,))
    conn.execute(
        """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country, currency,
               source_record_id, row_hash, first_run_id, last_run_id)
           SELECT %s, canonical_id, %s, 'NL', %s, %s, 'h', 'x', 'x'
             FROM core.id_map WHERE crm_id = %s""",
        (crm_id, name, currency, crm_id, crm_id),
    )


def build_firm(conn) -> None:
    """Two clients (Acme in EUR, Globex in USD) and work in January-March 2026, as of 1 April:

    Acme (006A, project pA, EUR), u1 at 100/h, u2 without any rate:
      time a-jan  2026-01-15  2 h approved            -> ready 200.00, WIP 76 days (61-90), leakage
      time a-feb  2026-02-20  1.5 h approved, billed  -> billed 150.00
      time a-mar1 2026-03-20  1 h approved            -> ready 100.00, 12 days, not leakage
      time a-mar2 2026-03-21  3 h submitted           -> on hold not_approved 300.00
      time a-mar3 2026-03-22  2 h u2 (no rate)        -> on hold missing_rate (no amount)
      expense a-ex 2026-03-10 40.00 approved          -> ready 40.00, 22 days
    Globex (006G, project pG, USD), u1 at 100/h in the contract's rate override of 120:
      time g-dec  2025-12-01  1 h approved            -> ready 120.00, 121 days (over 90), leakage
      time g-mar  2026-03-30  0.5 h submitted         -> on hold not_approved 60.00
    No contract: time x-1 on PSA project pX of PSA client cX -> on hold unknown_project.
    """
    r = Rows(conn)
    r.person("u1")
    r.person("u2")
    r.rate_card("u1", "100", D(2025, 1, 1))
    _client(conn, "001ACME", "Acme B.V.", "EUR")
    _client(conn, "001GLOB", "Globex Inc.", "USD")
    r.contract("006A", "pA", account_id="001ACME")
    r.contract(
        "006G",
        "pG",
        account_id="001GLOB",
        currency="USD",
        starts_on=D(2025, 11, 1),
        overrides=[{"user_email": "u1@firm.example", "rate": "120"}],
    )
    r.time("a-jan", "u1", "pA", D(2026, 1, 15), "2", rate="100")
    r.time("a-feb", "u1", "pA", D(2026, 2, 20), "1.5", rate="100")
    r.billed("time:a-feb")
    r.time("a-mar1", "u1", "pA", D(2026, 3, 20), "1", rate="100")
    r.time("a-mar2", "u1", "pA", D(2026, 3, 21), "3", rate="100", status="submitted")
    r.time("a-mar3", "u2", "pA", D(2026, 3, 22), "2")
    r.expense("a-ex", "u1", "pA", D(2026, 3, 10), "40")
    r.time("g-dec", "u1", "pG", D(2025, 12, 1), "1", rate="120", currency="USD", client="cG")
    r.time(
        "g-mar",
        "u1",
        "pG",
        D(2026, 3, 30),
        "0.5",
        rate="120",
        currency="USD",
        status="submitted",
        client="cG",
    )
    r.time("x-1", "u1", "pX", D(2026, 3, 5), "1", rate="100", client="cX")
    conn.commit()


@pytest.fixture
def conn(warehouse_db):
    with psycopg.connect(warehouse_db) as c:
        yield c


def recon(conn, workers=None, label="cockpit"):
    return run_reconcile(conn, RunInfo.local(label), as_of=AS_OF, workers=workers)


def test_totals_match_the_items_after_serial_parallel_first_and_rerun(conn):
    build_firm(conn)
    # a second contract of Acme's in the other shard (006A: shard 1, 006A2: shard 0), so both
    # workers sum a row for Acme's March
    shard = "SELECT (hashtext(%s) & 2147483647) %% 2"
    assert conn.execute(shard, ("006A",)).fetchone() != conn.execute(shard, ("006A2",)).fetchone()
    r = Rows(conn)
    r.contract("006A2", "pA2", account_id="001ACME")
    r.time("a2-mar", "u1", "pA2", D(2026, 3, 12), "2", rate="100")
    conn.commit()
    # a parallel first reconciliation (each shard's partition built by its own worker)
    assert recon(conn, workers=2).workers == 2
    assert_totals_match_items(conn)
    both = conn.execute(
        """SELECT count(*), sum(amount) FROM recon.item_totals
            WHERE account_id = '001ACME' AND period_start = '2026-03-01' AND state = 'ready'
              AND item_type = 'time'"""
    ).fetchone()
    assert both == (2, Decimal("300"))  # a row per shard (a-mar1 100, a2-mar 200), added up
    # a parallel rerun that changes items (the workers' differences, then the merge)
    conn.execute(
        "UPDATE core.time_entries SET approval_status = 'approved' WHERE psa_id = 'a-mar2'"
    )
    conn.execute("UPDATE core.time_entries SET hours = 4 WHERE psa_id = 'g-mar'")
    conn.commit()
    result = recon(conn, workers=2, label="cockpit-2")
    assert result.updated == 2 and result.workers == 2
    assert_totals_match_items(conn)
    # a serial rerun after an item is gone and a new one arrives
    conn.execute("UPDATE core.time_entries SET deleted_at = now() WHERE psa_id = 'a-jan'")
    Rows(conn).time("a-new", "u1", "pA", D(2026, 3, 31), "1", rate="100")
    conn.commit()
    result = recon(conn, workers=1, label="cockpit-3")
    assert result.deleted == 1 and result.inserted == 1
    assert_totals_match_items(conn)
    # a serial first reconciliation builds the same totals
    conn.execute("TRUNCATE recon.items")
    conn.commit()
    recon(conn, workers=1, label="cockpit-4")
    assert_totals_match_items(conn)


def test_a_rerun_with_no_change_keeps_the_totals(conn):
    build_firm(conn)
    recon(conn)
    before = sorted(conn.execute(STORED).fetchall(), key=_key)
    assert recon(conn, label="again").skipped
    assert sorted(conn.execute(STORED).fetchall(), key=_key) == before


def test_cockpit_figures_on_the_hand_built_firm(conn):
    build_firm(conn)
    recon(conn)
    info = billing.as_of(conn)
    assert info["as_of"] == AS_OF and info["leakage_days"] == 30

    everything = Filters()
    by_cur = {r["currency"]: r for r in billing.currency_totals(conn, everything)}
    eur, usd = by_cur["EUR"], by_cur["USD"]
    assert (eur["ready_items"], eur["ready_hours"], eur["ready_amount"]) == (
        3,
        Decimal("3"),
        Decimal("340.00"),
    )  # 200 + 100 + 40 (the expense has no hours)
    assert (eur["on_hold_items"], eur["on_hold_amount"]) == (3, Decimal("400.00"))  # 300 + x-1
    assert (eur["billed_items"], eur["billed_hours"], eur["billed_amount"]) == (
        1,
        Decimal("1.5"),
        Decimal("150.00"),
    )
    assert eur["wip_amount"] == Decimal("740.00")  # ready 340 + on hold 400 (missing rate: none)
    assert eur["leakage_amount"] == Decimal("200.00")
    assert (usd["ready_amount"], usd["on_hold_amount"], usd["leakage_amount"]) == (
        Decimal("120.00"),
        Decimal("60.00"),
        Decimal("120.00"),
    )

    reasons = {
        (r["reason_code"], r["currency"]): r for r in billing.on_hold_by_reason(conn, everything)
    }
    assert reasons[("not_approved", "EUR")]["amount"] == Decimal("300.00")
    assert reasons[("not_approved", "USD")]["amount"] == Decimal("60.00")
    assert reasons[("missing_rate", "EUR")]["items"] == 1
    assert reasons[("missing_rate", "EUR")]["amount"] is None
    assert reasons[("unknown_project", "EUR")]["amount"] == Decimal("100.00")
    assert reasons[("not_approved", "EUR")]["label"] == "Not approved"

    # per period, client and currency: the March row of Acme
    march = Filters.parse(period="2026-03", client="001ACME")
    page = billing.overview(conn, march)
    assert page.total == 1
    (row,) = page.rows
    assert row["client_name"] == "Acme B.V." and row["currency"] == "EUR"
    assert (row["ready_items"], row["ready_amount"]) == (2, Decimal("140.00"))
    assert (row["on_hold_items"], row["on_hold_amount"]) == (2, Decimal("300.00"))
    assert row["billed_items"] == 0 and row["leakage_amount"] is None
    # the item without a contract is shown under its PSA client
    unknown = billing.overview(conn, Filters.parse(client="cX")).rows
    assert [r["client_name"] for r in unknown] == ["cX (no contract)"]
    # every row, newest period first
    full = billing.overview(conn, everything)
    assert [(r["period_start"], r["client"]) for r in full.rows] == [
        (D(2026, 3, 1), "001ACME"),
        (D(2026, 3, 1), "001GLOB"),
        (D(2026, 3, 1), "cX"),
        (D(2026, 2, 1), "001ACME"),
        (D(2026, 1, 1), "001ACME"),
        (D(2025, 12, 1), "001GLOB"),
    ]

    wip = {(r["currency"], r["bucket"]): r for r in billing.wip_ageing(conn, everything)}
    assert wip[("EUR", "0-30 days")]["amount"] == Decimal("540.00")  # 100 + 300 + 40 + 100
    assert wip[("EUR", "0-30 days")]["items"] == 5
    assert wip[("EUR", "61-90 days")]["amount"] == Decimal("200.00")
    assert wip[("EUR", "31-60 days")]["amount"] == Decimal("0.00")
    assert wip[("USD", "over 90 days")]["amount"] == Decimal("120.00")
    assert wip[("USD", "0-30 days")]["on_hold_amount"] == Decimal("60.00")

    leak = billing.leakage(conn, everything)
    assert [(r["currency"], r["client"], r["amount"]) for r in leak.rows] == [
        ("EUR", "001ACME", Decimal("200.00")),
        ("USD", "001GLOB", Decimal("120.00")),
    ]

    # the same figures as a straightforward SQL over recon.items and the views
    straight = conn.execute(
        """SELECT sum(amount) FILTER (WHERE state = 'ready'),
                  sum(amount) FILTER (WHERE state = 'on_hold'),
                  sum(amount) FILTER (WHERE state = 'billed')
             FROM recon.items WHERE currency = 'EUR'"""
    ).fetchone()
    assert [round(x, 2) for x in straight] == [
        eur["ready_amount"],
        eur["on_hold_amount"],
        eur["billed_amount"],
    ]
    assert (
        round(
            conn.execute("SELECT sum(amount) FROM recon.leakage WHERE currency = 'EUR'").fetchone()[
                0
            ],
            2,
        )
        == eur["leakage_amount"]
    )


def _batch(conn, status, *, prepared="maker", decided=None) -> int:
    return conn.execute(
        """INSERT INTO billing.invoice_batches (kind, period_start, period_end, scope_key, status,
               content_hash, prepared_by, prepared_run_id, decided_by, decided_hash, decided_at)
           VALUES ('period', '2026-03-01', '2026-03-31', %s, %s, 'h', %s, 'run-1', %s, %s, %s)
           RETURNING batch_id""",
        (
            f"scope-{status}-{decided}",
            status,
            prepared,
            decided,
            "h" if decided else None,
            dt.datetime(2026, 4, 2, tzinfo=dt.UTC) if decided else None,
        ),
    ).fetchone()[0]


def _approval_requested(conn, batch_id: int, run_id: str, task_id: str) -> None:
    """The audit row the approval task writes when it asks for batch ``batch_id``'s approval."""
    from erpsync import audit

    audit.record(
        conn,
        actor="maker",
        action="invoice_batch.approval_requested",
        entity_type="invoice_batch",
        entity_id=str(batch_id),
        source=audit.Source(dag_id="erpsync_invoice_batches", run_id=run_id, task_id=task_id),
    )


def _invoice(conn, batch_id, number, account, currency, net, tax, status="draft") -> None:
    conn.execute(
        """INSERT INTO billing.invoices (batch_id, document_number, invoice_scope, account_id,
               currency, invoice_date, period_start, period_end, net, tax, total, status)
           VALUES (%s, %s, %s, %s, %s, '2026-04-01', '2026-03-01', '2026-03-31', %s, %s, %s, %s)""",
        (
            batch_id,
            number,
            number,
            account,
            currency,
            Decimal(net),
            Decimal(tax),
            Decimal(net) + Decimal(tax),
            status,
        ),
    )


def test_batches_states_totals_and_the_required_actions_link(conn):
    from erpsync import exceptions_queue
    from erpsync.invoicing.push import ERP_TOTALS_DIFFER

    assert billing.HELD_REASON == ERP_TOTALS_DIFFER
    awaiting = _batch(conn, "awaiting_approval")
    _invoice(conn, awaiting, "INV-1", "001ACME", "EUR", "100", "21")
    _invoice(conn, awaiting, "INV-2", "001GLOB", "USD", "50", "0")
    rejected = _batch(conn, "rejected", decided="checker")
    _invoice(conn, rejected, "INV-3", "001ACME", "EUR", "10", "2.10", status="rejected")
    posted = _batch(conn, "released", decided="checker")
    _invoice(conn, posted, "INV-4", "001ACME", "EUR", "200", "42", status="posted")
    _invoice(conn, posted, "INV-5", "001ACME", "EUR", "100", "21", status="billed_back")
    billed_back = _batch(conn, "released", decided="checker")
    _invoice(conn, billed_back, "INV-6", "001GLOB", "USD", "70", "0", status="billed_back")
    pushing = _batch(conn, "pushing", decided="checker")
    _invoice(conn, pushing, "INV-7", "001ACME", "EUR", "30", "6.30", status="created")
    held = _batch(conn, "pushing", decided="checker")
    _invoice(conn, held, "INV-8", "001ACME", "EUR", "40", "8.40", status="created")
    _invoice(conn, held, "INV-9", "001ACME", "EUR", "1", "0.21", status="posted")
    exceptions_queue.raise_exception(
        conn,
        ERP_TOTALS_DIFFER,
        "invoice",
        "INV-8",
        "finance_ops",
        {"why": "tax differs"},
        RunInfo.local("push"),
        amount_at_stake=Decimal("48.40"),
        currency="EUR",
    )
    approved = _batch(conn, "approved", decided="checker")
    _invoice(conn, approved, "INV-10", "001ACME", "EUR", "5", "1.05", status="approved")
    _approval_requested(conn, awaiting, "manual__2026-04-01", "approve_batch")
    conn.commit()

    page = billing.batches(conn, Filters(), airflow_base="/af")
    assert page.total == 7
    states = {(r["batch_id"], r["currency"]): r["state"] for r in page.rows}
    assert states == {
        (awaiting, "EUR"): "awaiting_approval",
        (awaiting, "USD"): "awaiting_approval",
        (rejected, "EUR"): "rejected",
        (posted, "EUR"): "posted",
        (billed_back, "USD"): "billed_back",
        (pushing, "EUR"): "pushed",
        (held, "EUR"): "held",
        (approved, "EUR"): "approved",
    }
    first = page.rows[-1]
    assert first["batch_id"] == awaiting and first["approval_url"] == (
        "/af/dags/erpsync_invoice_batches/runs/manual__2026-04-01/tasks/approve_batch"
        "/required_actions"
    )
    assert [r["batch_id"] for r in page.rows][:1] == [approved]  # newest first
    held_row = next(r for r in page.rows if r["batch_id"] == held)
    assert held_row["held_invoices"] == 1 and held_row["total"] == Decimal("49.61")

    totals = {(r["state"], r["currency"]): r for r in billing.batch_totals(conn, Filters())}
    assert totals[("posted", "EUR")]["total"] == Decimal("363.00")
    assert totals[("posted", "EUR")]["invoices"] == 2
    assert totals[("awaiting_approval", "EUR")]["total"] == Decimal("121.00")
    assert totals[("held", "EUR")]["batches"] == 1
    assert list(totals)[0][0] == "awaiting_approval"  # lifecycle order

    # filters narrow the invoices: Globex only, so the batch of Acme's rejected invoice is gone
    globex = billing.batches(conn, Filters(client="001GLOB"), airflow_base="/af")
    assert {(r["batch_id"], r["total"]) for r in globex.rows} == {
        (awaiting, Decimal("50.00")),
        (billed_back, Decimal("70.00")),
    }
    assert billing.batches(conn, Filters.parse(period="2026-02")).total == 0
    # no audit row for the ask: the list of every pending action
    assert billing.required_actions_url("/af", None, None, None) == (
        "/af/required_actions?response_received=false"
    )


def test_blocks_in_force_for_a_client(conn):
    build_firm(conn)
    conn.execute(
        """INSERT INTO ops.dq_blocks (scope_type, scope_key, suite, expectation, first_run_id,
               last_run_id)
           VALUES ('client', '001ACME', 'clients', 'vat_id_valid', 'r', 'r'),
                  ('contract', '006G', 'contracts', 'currency_known', 'r', 'r'),
                  ('all', '*', 'time_entries', 'no_future_dates', 'r', 'r')"""
    )
    conn.execute(
        """INSERT INTO ops.dq_blocks (scope_type, scope_key, suite, expectation, first_run_id,
               last_run_id, status, cleared_at)
           VALUES ('client', '001GLOB', 'clients', 'old', 'r', 'r', 'cleared', now())"""
    )
    conn.commit()
    every = billing.dq_blocks(conn, Filters())
    assert [(b["scope_type"], b["scope_key"]) for b in every] == [
        ("client", "001ACME"),
        ("contract", "006G"),
        ("all", "*"),
    ]
    assert every[0]["scope_name"] == "Acme B.V."
    globex = billing.dq_blocks(conn, Filters(client="001GLOB"))
    assert [b["expectation"] for b in globex] == ["currency_known", "no_future_dates"]


def test_filters_parse_and_refuse_malformed_values():
    f = Filters.parse(period="2026-12", client=" 001ACME ", currency="eur", page="3")
    assert (f.period, f.period_end, f.client, f.currency, f.offset) == (
        D(2026, 12, 1),
        D(2027, 1, 1),
        "001ACME",
        "EUR",
        2 * billing.PAGE_SIZE,
    )
    assert f.query(page=None) == {"period": "2026-12", "client": "001ACME", "currency": "EUR"}
    assert Filters.parse(page="100000").page == billing.MAX_PAGE
    for bad in ({"period": "2026-13"}, {"period": "march"}, {"currency": "EURO"}, {"page": "x"}):
        with pytest.raises(ValueError):
            Filters.parse(**bad)


def test_every_table_downloads(conn):
    build_firm(conn)
    recon(conn)
    for table in billing.TABLES:
        out = billing.csv_table(conn, table, Filters())
        assert out.header and all(len(r) == len(out.header) for r in out.rows), table
    overview = billing.csv_table(conn, "overview", Filters())
    assert len(overview.rows) == 6
    with pytest.raises(KeyError):
        billing.csv_table(conn, "secrets", Filters())
