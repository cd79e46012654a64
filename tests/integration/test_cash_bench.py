"""The cash page benchmark's synthetic history is what the sync would leave: the summaries
it refreshes equal the direct computation, and every timed function answers."""

from __future__ import annotations

import psycopg

from erpsync.bench import cash as bench
from erpsync.console import cash


def test_seeded_history_is_consistent_and_timed(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        seeded = bench.seed_cash_history(conn, clients=60, months=12)
    assert seeded["invoices"] == 720 and seeded["history_periods"] > 720
    with psycopg.connect(warehouse_db) as conn:
        dso = cash.dso_by_month(conn, months=12, as_of=bench.AS_OF)
        owed = cash.overdue_totals(conn, as_of=bench.AS_OF)
        with conn.transaction(force_rollback=True):
            conn.execute("DELETE FROM billing.erp_cash_refresh")
            assert cash.dso_by_month(conn, months=12, as_of=bench.AS_OF) == dso
            assert cash.overdue_totals(conn, as_of=bench.AS_OF) == owed
        assert {r.currency for r in dso} == {"EUR", "USD", "GBP", "JPY", "KWD"}
        assert all(r.dso is not None and r.dso > 0 for r in dso if r.billings)
        timings = bench.time_cash(conn, repeat=1)
    assert set(timings) == {
        "dso_by_month_12",
        "overdue_by_client",
        "overdue_totals",
        "payment_status_summary",
        "cash_context",
    }
