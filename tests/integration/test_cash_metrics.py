"""Cash metrics (erpsync.console.cash) on a hand-built warehouse with answers worked out by hand.

The scenario (as synced from Business Central; periods are [from, to)):

====  ========  =======  ==========  ==========  ===========================================
inv   client    cur      posted      due         what it owed
====  ========  =======  ==========  ==========  ===========================================
A     acct-1    EUR      2026-08-10  2026-09-09  1000 until 09-20, then Paid 0
B     acct-1    EUR      2026-09-05  2026-10-05  2000 until 10-15, then 500 (partly paid)
C     acct-2    EUR      2026-10-20  2026-11-19  3000
D     acct-1    EUR      2026-07-01  2026-07-31  400 (never paid)
E     acct-3    USD      2026-11-02  2026-12-02  500
G     acct-2    EUR      2026-10-01  2026-10-31  100 until 10-03, then Canceled 0
====  ========  =======  ==========  ==========  ===========================================

DSO = receivables at month end / billings of the month and the two before x their days:

* Sep (end 09-30; Jul-Sep, 92 days): owed B 2000 + D 400 = 2400; billed A+B+D = 3400;
  2400 / 3400 x 92 = 64.94 -> 64.9
* Oct (end 10-31; Aug-Oct, 92 days): owed B 500 + C 3000 + D 400 = 3900; billed A+B+C+G =
  6100; 3900 / 6100 x 92 = 58.82 -> 58.8
* Nov (as of 11-15; Sep 1-Nov 15, 76 days): EUR owed 3900, billed B+C+G = 5100;
  3900 / 5100 x 76 = 58.12 -> 58.1. USD owed 500, billed 500: 76.0
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import psycopg
import pytest

from erpsync.console import cash

D = dt.date
_ids = itertools.count(1)


def _invoice(conn, batch_id, account, currency, posted, due, total, periods, status):
    n = next(_ids)
    invoice_id = conn.execute(
        """INSERT INTO billing.invoices
               (batch_id, document_number, invoice_scope, account_id, client_name, currency,
                invoice_date, net, tax, total, status, erp_invoice_id, erp_number)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, 'posted', %s, %s)
           RETURNING invoice_id""",
        (
            batch_id,
            f"ES-CASH-{n}",
            f"scope-{n}",
            account,
            f"Client {account}",
            currency,
            posted,
            total,
            total,
            f"00000000-0000-0000-0000-{n:012d}",
            f"PSI-{n:06d}",
        ),
    ).fetchone()[0]
    last_remaining = periods[-1][2]
    conn.execute(
        """INSERT INTO billing.erp_invoice_status
               (invoice_id, erp_invoice_id, erp_number, document_number, account_id, client_name,
                currency, status, posting_date, due_date, total_incl_tax, remaining_amount,
                last_run_id)
           SELECT invoice_id, erp_invoice_id, erp_number, document_number, account_id,
                  client_name, currency, %s, %s, %s, total, %s, 'test'
             FROM billing.invoices WHERE invoice_id = %s""",
        (status, posted, due, last_remaining, invoice_id),
    )
    for start, end, remaining, state in periods:
        conn.execute(
            """INSERT INTO billing.erp_receivable_history
                   (invoice_id, valid_from, valid_to, status, remaining_amount, run_id)
               VALUES (%s, %s, %s, %s, %s, 'test')""",
            (invoice_id, start, end, state, remaining),
        )
    return invoice_id


@pytest.fixture
def scenario(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        batch_id = conn.execute(
            """INSERT INTO billing.invoice_batches
                   (kind, scope_key, status, content_hash, prepared_by, prepared_run_id)
               VALUES ('period', 'cash-test', 'draft', '', 'maker', 'test')
               RETURNING batch_id"""
        ).fetchone()[0]
        dec = Decimal
        _invoice(conn, batch_id, "acct-1", "EUR", D(2026, 8, 10), D(2026, 9, 9), dec(1000),
                 [(D(2026, 8, 10), D(2026, 9, 20), dec(1000), "Open"),
                  (D(2026, 9, 20), None, dec(0), "Paid")], "Paid")  # fmt: skip
        _invoice(conn, batch_id, "acct-1", "EUR", D(2026, 9, 5), D(2026, 10, 5), dec(2000),
                 [(D(2026, 9, 5), D(2026, 10, 15), dec(2000), "Open"),
                  (D(2026, 10, 15), None, dec(500), "Open")], "Open")  # fmt: skip
        _invoice(conn, batch_id, "acct-2", "EUR", D(2026, 10, 20), D(2026, 11, 19), dec(3000),
                 [(D(2026, 10, 20), None, dec(3000), "Open")], "Open")  # fmt: skip
        _invoice(conn, batch_id, "acct-1", "EUR", D(2026, 7, 1), D(2026, 7, 31), dec(400),
                 [(D(2026, 7, 1), None, dec(400), "Open")], "Open")  # fmt: skip
        _invoice(conn, batch_id, "acct-3", "USD", D(2026, 11, 2), D(2026, 12, 2), dec(500),
                 [(D(2026, 11, 2), None, dec(500), "Open")], "Open")  # fmt: skip
        _invoice(conn, batch_id, "acct-2", "EUR", D(2026, 10, 1), D(2026, 10, 31), dec(100),
                 [(D(2026, 10, 1), D(2026, 10, 3), dec(100), "Open"),
                  (D(2026, 10, 3), None, dec(0), "Canceled")], "Canceled")  # fmt: skip
    return warehouse_db


def test_dso_by_month_known_answers(scenario):
    with psycopg.connect(scenario) as conn:
        rows = cash.dso_by_month(conn, months=3, as_of=D(2026, 11, 15))
    got = [(r.month, r.currency, r.receivables, r.billings, r.days, r.dso) for r in rows]
    assert got == [
        ("2026-09", "EUR", Decimal("2400.00"), Decimal("3400.00"), 92, Decimal("64.9")),
        ("2026-10", "EUR", Decimal("3900.00"), Decimal("6100.00"), 92, Decimal("58.8")),
        ("2026-11", "EUR", Decimal("3900.00"), Decimal("5100.00"), 76, Decimal("58.1")),
        ("2026-11", "USD", Decimal("500.00"), Decimal("500.00"), 76, Decimal("76.0")),
    ]
    assert all(isinstance(r.receivables, Decimal) for r in rows)


def test_dso_month_without_billings_has_no_ratio(scenario):
    # June: nothing posted yet, nothing owed -> no row; July: D billed and owed 400 of 400
    with psycopg.connect(scenario) as conn:
        rows = cash.dso_by_month(conn, months=2, as_of=D(2026, 7, 31))
    assert [(r.month, r.receivables, r.billings, r.days, r.dso) for r in rows] == [
        ("2026-07", Decimal("400.00"), Decimal("400.00"), 92, Decimal("92.0"))
    ]
    with pytest.raises(ValueError):
        with psycopg.connect(scenario) as conn:
            cash.dso_by_month(conn, months=0, as_of=D(2026, 7, 31))


def test_overdue_by_client_buckets_today(scenario):
    with psycopg.connect(scenario) as conn:
        rows = cash.overdue_by_client(conn, as_of=D(2026, 11, 15))
    got = [
        (
            r.account_id,
            r.currency,
            r.invoices,
            r.remaining,
            r.not_due,
            r.overdue_1_30,
            r.overdue_31_60,
            r.overdue_61_90,
            r.overdue_over_90,
            r.overdue,
            r.oldest_due,
        )
        for r in rows
    ]
    z = Decimal("0.00")
    assert got == [
        # B: 500 due 10-05 (41 days late); D: 400 due 07-31 (107 days late)
        ("acct-1", "EUR", 2, Decimal("900.00"), z, z, Decimal("500.00"), z, Decimal("400.00"),
         Decimal("900.00"), D(2026, 7, 31)),
        # C: 3000 due 11-19, not due; G canceled, owes nothing
        ("acct-2", "EUR", 1, Decimal("3000.00"), Decimal("3000.00"), z, z, z, z, z, None),
        ("acct-3", "USD", 1, Decimal("500.00"), Decimal("500.00"), z, z, z, z, z, None),
    ]  # fmt: skip
    assert rows[0].client_name == "Client acct-1"


@pytest.mark.parametrize(
    ("as_of", "bucket"),
    [
        (D(2026, 7, 31), "not_due"),  # due today
        (D(2026, 8, 1), "overdue_1_30"),
        (D(2026, 8, 30), "overdue_1_30"),  # 30 days
        (D(2026, 8, 31), "overdue_31_60"),  # 31 days
        (D(2026, 9, 29), "overdue_31_60"),  # 60 days
        (D(2026, 9, 30), "overdue_61_90"),  # 61 days
        (D(2026, 10, 29), "overdue_61_90"),  # 90 days
        (D(2026, 10, 30), "overdue_over_90"),  # 91 days
    ],
)
def test_overdue_bucket_boundaries_follow_the_history(scenario, as_of, bucket):
    with psycopg.connect(scenario) as conn:
        rows = {r.account_id: r for r in cash.overdue_by_client(conn, as_of=as_of)}
    d_only = rows["acct-1"]
    # D (400, due 07-31) is in exactly one bucket; A/B add only what they owed then, not due
    assert getattr(d_only, bucket) == Decimal("400.00")
    owed_then = {
        D(2026, 7, 31): Decimal("400"),
        D(2026, 8, 1): Decimal("400"),
        D(2026, 8, 30): Decimal("1400"),  # + A (1000, due 09-09)
        D(2026, 8, 31): Decimal("1400"),
        D(2026, 9, 29): Decimal("2400"),  # A paid 09-20; + B (2000, due 10-05)
        D(2026, 9, 30): Decimal("2400"),
        D(2026, 10, 29): Decimal("900"),  # B partly paid 10-15: 500, and 24 days late
        D(2026, 10, 30): Decimal("900"),
    }[as_of]
    assert d_only.remaining == owed_then


def test_overdue_by_client_pages(scenario):
    with psycopg.connect(scenario) as conn:
        first = cash.overdue_by_client(conn, as_of=D(2026, 11, 15), limit=2)
        second = cash.overdue_by_client(conn, as_of=D(2026, 11, 15), limit=2, offset=2)
    assert [r.account_id for r in first + second] == ["acct-1", "acct-2", "acct-3"]


def test_payment_status_summary(scenario):
    with psycopg.connect(scenario) as conn:
        rows = cash.payment_status_summary(conn, as_of=D(2026, 11, 15))
        recent = cash.payment_status_summary(conn, since=D(2026, 10, 1))
    got = [(r.currency, r.state, r.invoices, r.total, r.remaining) for r in rows]
    assert got == [
        ("EUR", "unpaid", 2, Decimal("3400.00"), Decimal("3400.00")),  # C, D
        ("EUR", "partly_paid", 1, Decimal("2000.00"), Decimal("500.00")),  # B
        ("EUR", "paid", 1, Decimal("1000.00"), Decimal("0.00")),  # A
        ("EUR", "canceled", 1, Decimal("100.00"), Decimal("0.00")),  # G
        ("USD", "unpaid", 1, Decimal("500.00"), Decimal("500.00")),  # E
    ]
    assert all(r.last_synced_at is not None for r in rows)
    assert [(r.currency, r.state, r.invoices) for r in recent] == [
        ("EUR", "unpaid", 1),
        ("EUR", "canceled", 1),
        ("USD", "unpaid", 1),
    ]
    header, table_rows = cash.table(rows)
    assert header[:3] == ["state", "currency", "invoices"] and len(table_rows) == 5


def test_overdue_totals_per_currency(scenario):
    with psycopg.connect(scenario) as conn:
        totals = cash.overdue_totals(conn, as_of=D(2026, 11, 15))
    eur, usd = totals
    assert (eur.currency, eur.invoices, eur.remaining, eur.not_due, eur.overdue) == (
        "EUR",
        3,
        Decimal("3900.00"),
        Decimal("3000.00"),
        Decimal("900.00"),
    )
    assert (eur.overdue_31_60, eur.overdue_over_90, eur.clients_overdue) == (
        Decimal("500.00"),
        Decimal("400.00"),
        1,
    )
    assert (usd.currency, usd.overdue, usd.clients_overdue) == ("USD", Decimal("0.00"), 0)


def test_csv_tables(scenario):
    with psycopg.connect(scenario) as conn:
        header, rows = cash.csv_table(conn, "cash_overdue", as_of=D(2026, 11, 15))
        dso_header, dso_rows = cash.csv_table(conn, "cash_dso", as_of=D(2026, 11, 15), months=3)
        with pytest.raises(KeyError):
            cash.csv_table(conn, "nope", as_of=D(2026, 11, 15))
        empty_header, empty = cash.csv_table(conn, "cash_overdue", as_of=D(2026, 1, 1))
    assert header[:3] == ["account_id", "client_name", "currency"] and len(rows) == 3
    assert dso_header[-1] == "dso" and len(dso_rows) == 4
    assert empty == [] and empty_header == header


def test_the_cash_partial_renders_the_numbers_and_charts(scenario):
    from erpsync.console.web import templates

    with psycopg.connect(scenario) as conn:
        context = cash.cash_context(conn, as_of=D(2026, 11, 15), months=3)
    html = templates.env.get_template("_cash.html").render(base="/erpsync", **context)
    assert 'id="cash-dso"' in html and "58.1" in html and "64.9" in html
    assert "Client acct-1" in html and "3,900.00" in html
    assert html.count('<svg class="chart"') == 3  # DSO lines + one bucket chart per currency
    assert 'aria-label="Days sales outstanding by month"' in html
    assert "/erpsync/insights/cash_overdue.csv" in html
    assert "partly paid" in html


def test_the_cash_partial_says_when_nothing_was_synced(warehouse_db):
    from erpsync.console.web import templates

    with psycopg.connect(warehouse_db) as conn:
        context = cash.cash_context(conn, as_of=D(2026, 11, 15))
    html = templates.env.get_template("_cash.html").render(base="/erpsync", **context)
    assert "No invoice payment status synced yet." in html
    assert "No client owes anything." in html


def _direct(conn, fn):
    """``fn()`` computed from the history and status tables (the summaries' refresh mark
    hidden in a rolled-back transaction), to compare with what the summaries answer."""
    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM billing.erp_cash_refresh")
        return fn()


def _no_sync_time(rows):
    return [r.__class__(**{**r.__dict__, "last_synced_at": None}) for r in rows]


@pytest.mark.parametrize("as_of", [D(2026, 11, 15), D(2026, 11, 20), D(2026, 11, 30)])
def test_the_summaries_equal_the_direct_computation(scenario, as_of):
    with psycopg.connect(scenario) as conn:
        cash.refresh_dso_months(conn, first=D(2026, 6, 1), through=D(2026, 11, 15))
        cash.refresh_status_months(conn, None)
        assert cash.refreshed_through(conn) == D(2026, 11, 15)
        for fn in (
            lambda: cash.dso_by_month(conn, months=6, as_of=as_of),
            lambda: cash.overdue_by_client(conn, as_of=as_of),
            lambda: cash.overdue_totals(conn, as_of=as_of),
        ):
            summarized = fn()
            assert summarized and summarized == _direct(conn, fn)
        status = cash.payment_status_summary(conn, as_of=as_of)
        direct = _direct(conn, lambda: cash.payment_status_summary(conn, as_of=as_of))
        assert _no_sync_time(status) == _no_sync_time(direct) and len(status) == 5
        # the worked answers hold on the summary path too
        nov = [r for r in cash.dso_by_month(conn, months=3, as_of=D(2026, 11, 15))]
        assert [(r.month, r.currency, r.dso) for r in nov] == [
            ("2026-09", "EUR", Decimal("64.9")),
            ("2026-10", "EUR", Decimal("58.8")),
            ("2026-11", "EUR", Decimal("58.1")),
            ("2026-11", "USD", Decimal("76.0")),
        ]


def test_a_partial_refresh_keeps_the_months_it_did_not_touch(scenario):
    with psycopg.connect(scenario) as conn:
        cash.refresh_dso_months(conn, first=D(2026, 6, 1), through=D(2026, 11, 15))
        before = conn.execute("SELECT * FROM billing.erp_cash_monthly ORDER BY 1, 2").fetchall()
        cash.refresh_dso_months(conn, first=D(2026, 11, 15), through=D(2026, 11, 16))
        after = conn.execute("SELECT * FROM billing.erp_cash_monthly ORDER BY 1, 2").fetchall()
        assert [r[:5] for r in after] == [r[:5] for r in before]
        assert cash.refreshed_through(conn) == D(2026, 11, 16)
        assert cash.refresh_status_months(conn, []) == 0
