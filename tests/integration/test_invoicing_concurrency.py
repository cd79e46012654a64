"""Two billing runs at once never reserve the same item: the second builder waits for the
first one's transaction and then sees its reservations."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg

from erpsync.invoicing import build_batch
from erpsync.sync.spec import RunInfo
from tests.support import invoicing_data as dd

PERIOD = {"period_start": dt.date(2026, 10, 1), "period_end": dt.date(2026, 10, 31)}


def test_concurrent_builds_never_share_an_item(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        dd.add_tax_setup(conn)
        dd.add_client(conn, "acc-1", country="NL")
        dd.add_contract(conn, "opp-1", "acc-1")
        for n in range(5):
            dd.add_item(conn, f"time:{n}", account_id="acc-1", opportunity_id="opp-1",
                        currency="EUR", item_date="2026-10-05", hours="1", rate="100",
                        role="Analyst")  # fmt: skip
        conn.commit()

    first = psycopg.connect(warehouse_db)
    second = psycopg.connect(warehouse_db)
    try:
        first.execute("SELECT 1")
        a = build_batch(first, RunInfo("t", "run-a", "build", actor="a"), **PERIOD,
                        prepared_by="alice")  # fmt: skip
        assert a.items == 5
        out: dict = {}

        def other_run() -> None:  # all clients: overlaps the first run's scope
            second.execute("SELECT 1")
            out["b"] = build_batch(second, RunInfo("t", "run-b", "build", actor="b"), **PERIOD,
                                   clients=["acc-1"], prepared_by="bob")  # fmt: skip
            second.commit()

        worker = threading.Thread(target=other_run)
        worker.start()
        worker.join(timeout=1.5)
        assert worker.is_alive(), "the second builder must wait for the first transaction"
        first.commit()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert out["b"].status == "empty" and out["b"].items == 0
        with psycopg.connect(warehouse_db) as check:
            rows = check.execute(
                "SELECT item_key, count(*) FROM billing.batch_items WHERE active GROUP BY 1"
            ).fetchall()
        assert sorted(rows) == [(f"time:{n}", 1) for n in range(5)]
    finally:
        first.close()
        second.close()
