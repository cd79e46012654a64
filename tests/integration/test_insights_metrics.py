"""Process-intelligence metrics (erpsync.console.insights) on hand-built scenarios with known
answers: rows inserted into a real migrated warehouse (and, for the approval cycle time, a real
Airflow 3.3 metadata schema created by Airflow's own models), each metric computed and compared
to exact Decimals worked out by hand in the comments. Also: the monthly summaries equal the
direct computation over recon.items, and the percentile helpers match percentile_cont.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal as D

import psycopg
import pytest
from psycopg import sql

from erpsync.console import insights
from erpsync.runtime import database

AS_OF = dt.date(2026, 11, 20)
MONTHS = 3  # 2026-09, 2026-10, 2026-11


def ts(text: str) -> dt.datetime:
    """A UTC timestamp from 'YYYY-MM-DD HH:MM' (or a date)."""
    fmt = "%Y-%m-%d %H:%M" if " " in text else "%Y-%m-%d"
    return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)


@pytest.fixture
def conn(warehouse_db):
    with psycopg.connect(warehouse_db, autocommit=True) as c:
        yield c


def by_month(values) -> dict[str, insights.MonthValue]:
    return {v.month: v for v in values}


# ------------------------------------------------------------------------------ row builders


def add_run(conn, run_id: str, as_of: dt.date, started: str) -> None:
    conn.execute(
        """INSERT INTO recon.runs (run_id, as_of, started_at, finished_at)
           VALUES (%s, %s, %s, %s)""",
        (run_id, as_of, ts(started), ts(started) + dt.timedelta(minutes=1)),
    )


_n = iter(range(1, 1_000_000))


def add_item(
    conn,
    day: str,
    amount: str | None,
    *,
    state: str = "ready",
    item_type: str = "time",
    hours: str | None = None,
    approved: bool = True,
    currency: str = "EUR",
    reason: str | None = None,
    user: str = "u1",
    run_id: str = "r1",
) -> str:
    key = f"{item_type}:{next(_n)}"
    d = dt.date.fromisoformat(day)
    if state == "on_hold" and reason is None:
        reason = "missing_rate"
    conn.execute(
        """INSERT INTO recon.items (item_key, item_type, source_id, item_date, period_start,
                                    hours, currency, amount, approved, state, reason_code,
                                    user_psa_id, opportunity_id, first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'opp-1', %s, %s)""",
        (
            key,
            item_type,
            key.split(":")[1],
            d,
            d.replace(day=1),
            None if hours is None else D(hours),
            currency,
            None if amount is None else D(amount),
            approved,
            state,
            reason,
            user,
            run_id,
            run_id,
        ),
    )
    return key


def add_invoice(conn, posted: str | None, *, kind: str = "invoice", credit_of: int | None = None):
    batch = conn.execute(
        """INSERT INTO billing.invoice_batches (kind, scope_key, status, content_hash, prepared_by,
                                                prepared_run_id)
           VALUES ('period', %s, 'draft', 'h', 'alice', 'r') RETURNING batch_id""",
        (uuid.uuid4().hex,),
    ).fetchone()[0]
    doc = f"ES-{uuid.uuid4().hex[:8]}"
    invoice_id = conn.execute(
        """INSERT INTO billing.invoices (batch_id, kind, document_number, invoice_scope, account_id,
                                         currency, invoice_date, net, tax, total, status,
                                         credit_of_invoice_id)
           VALUES (%s, %s, %s, 's', 'acc-1', 'EUR', '2026-10-01', 100, 0, 100, 'draft', %s)
           RETURNING invoice_id""",
        (batch, kind, doc, credit_of),
    ).fetchone()[0]
    if posted is not None:
        conn.execute(
            """INSERT INTO billing.invoice_push (invoice_id, batch_id, document_number, erp_entity,
                                                 step, erp_invoice_id, erp_number, posted_at,
                                                 first_run_id, last_run_id)
               VALUES (%s, %s, %s, %s, 'posted', %s, %s, %s, 'r', 'r')""",
            (
                invoice_id,
                batch,
                doc,
                "salesCreditMemos" if kind == "credit_note" else "salesInvoices",
                uuid.uuid4().hex,
                doc,
                ts(posted),
            ),
        )
    return invoice_id


def bill(conn, item_key: str, invoice_id: int, billed_at: str) -> None:
    conn.execute(
        "INSERT INTO billing.billed_items (item_key, invoice_id, billed_at) VALUES (%s, %s, %s)",
        (item_key, invoice_id, ts(billed_at)),
    )


def add_exception(
    conn,
    reason: str,
    first_seen: str,
    *,
    status: str = "open",
    resolved: str | None = None,
) -> None:
    conn.execute(
        """INSERT INTO ops.exceptions (reason_code, entity_type, entity_key, owner, status,
                                       first_seen_run, last_seen_run, first_seen_at, resolved_at,
                                       resolved_by, waived_at, waived_by, waive_comment)
           VALUES (%s, 'time_entry', %s, 'billing_ops', %s, 'r', 'r', %s, %s, %s, %s, %s, %s)""",
        (
            reason,
            uuid.uuid4().hex,
            status,
            ts(first_seen),
            None if resolved is None else ts(resolved),
            "bob" if resolved else None,
            ts(first_seen) if status == "waived" else None,
            "carol" if status == "waived" else None,
            "accepted" if status == "waived" else None,
        ),
    )


def add_contract(conn, opp: str, version: int, created: str, completed: str | None, status: str):
    conn.execute(
        """INSERT INTO core.contracts (opportunity_id, version, project_code, status, payload,
                                       first_run_id, last_run_id, created_at, completed_at)
           VALUES (%s, %s, %s, %s, '{}', 'r', 'r', %s, %s)""",
        (
            opp,
            version,
            f"ES-{opp}",
            status,
            ts(created),
            None if completed is None else ts(completed),
        ),
    )


def add_card(conn, person: str, amount: str, start: str, end: str | None = None, currency=None):
    conn.execute(
        """INSERT INTO core.rate_cards (kind, psa_rate_id, person_psa_id, amount, currency,
                                        valid_from, valid_to, source_record_id, row_hash,
                                        first_run_id, last_run_id)
           VALUES ('billable', %s, %s, %s, %s, %s, %s, 's', 'h', 'r', 'r')""",
        (uuid.uuid4().hex, person, D(amount), currency, start, end),
    )


# ------------------------------------------------------------------------------ percentiles


def test_percentiles_interpolate_like_percentile_cont(conn):
    values = [D(2), D("5.5"), D(9), D(30)]
    for p in ("0.5", "0.9", "0.25", "0"):
        expected = conn.execute(
            "SELECT percentile_cont(%s::float8) WITHIN GROUP (ORDER BY v)::numeric "
            "FROM unnest(%s::numeric[]) v",
            (p, values),
        ).fetchone()[0]
        assert insights.percentile(values, p) == expected
    # a histogram gives what the expanded list gives
    hist = [(D(5), 3), (D(1), 1), (D(20), 2)]
    flat = [D(1), D(5), D(5), D(5), D(20), D(20)]
    for p in ("0.5", "0.9", "0.1"):
        assert insights.weighted_percentile(hist, p) == insights.percentile(flat, p)
    assert insights.percentile([], "0.5") is None


def test_month_window():
    assert insights.month_window(dt.date(2026, 2, 14), 3) == [
        dt.date(2025, 12, 1),
        dt.date(2026, 1, 1),
        dt.date(2026, 2, 1),
    ]


# ------------------------------------------------------------------------------ onboarding


def test_onboarding_cycle_time(conn):
    add_contract(conn, "A", 1, "2026-10-01 00:00", "2026-10-03 00:00", "complete")  # 2 days, Oct
    add_contract(conn, "B", 1, "2026-10-10 00:00", "2026-10-15 12:00", "complete")  # 5.5 d, Oct
    # C: v1 invalid then superseded; v2 ready 2026-11-04: from first seen (Oct 20) = 15 days
    add_contract(conn, "C", 1, "2026-10-20 00:00", None, "superseded")
    add_contract(conn, "C", 2, "2026-10-25 00:00", "2026-11-04 00:00", "complete")
    add_contract(conn, "D", 1, "2026-11-01 00:00", None, "pending")  # not ready yet
    add_contract(conn, "E", 1, "2026-07-01 00:00", "2026-08-01 00:00", "complete")  # before window
    got = by_month(insights.onboarding_cycle_time(conn, months=MONTHS, as_of=AS_OF))
    assert list(got) == ["2026-09", "2026-10", "2026-11"]
    assert got["2026-09"].values == {"median": None, "p90": None} and got["2026-09"].count == 0
    # Oct [2, 5.5]: median 3.75, p90 = 2 + 0.9 x 3.5 = 5.15
    assert got["2026-10"].values == {"median": D("3.75"), "p90": D("5.15")}
    assert got["2026-10"].count == 2
    assert got["2026-11"].values == {"median": D("15.00"), "p90": D("15.00")}


# ------------------------------------------------------------------------------ time to invoice


def test_time_to_invoice(conn):
    add_run(conn, "r1", AS_OF, "2026-11-20 06:00")
    oct_inv = add_invoice(conn, "2026-10-05 10:00")
    nov_inv = add_invoice(conn, "2026-11-02 23:30")
    for day in ("2026-09-05", "2026-09-25", "2026-09-30"):  # 30, 10, 5 days before Oct 5
        bill(conn, add_item(conn, day, "100", state="billed"), oct_inv, "2026-10-05 10:00")
    bill(
        conn,
        add_item(conn, "2026-10-31", "10", state="billed", item_type="expense"),
        nov_inv,
        "2026-11-02 23:30",
    )  # 2 days
    bill(conn, add_item(conn, "2026-10-02", "100", state="billed"), nov_inv, "2026-11-02 23:30")
    # a milestone is not work with a work date: not counted
    bill(
        conn,
        add_item(conn, "2026-06-01", "5000", state="billed", item_type="milestone"),
        nov_inv,
        "2026-11-02 23:30",
    )
    # billed, but recon.items still says ready (the next reconciliation marks it): counted
    late = add_item(conn, "2026-10-30", "100")
    bill(conn, late, nov_inv, "2026-11-02 23:30")  # 3 days
    insights.refresh_summaries(conn)
    got = by_month(insights.time_to_invoice(conn, months=MONTHS, as_of=AS_OF))
    # Oct [5, 10, 30]: median 10, p90 rank 1.8 -> 10 + 0.8 x 20 = 26
    assert got["2026-10"].values == {"median": D("10.00"), "p90": D("26.00")}
    assert got["2026-10"].count == 3
    # Nov [2, 3, 31]: median 3, p90 rank 1.8 -> 3 + 0.8 x 28 = 25.4
    assert got["2026-11"].values == {"median": D("3.00"), "p90": D("25.40")}
    assert got["2026-11"].count == 3
    assert got["2026-09"].values == {"median": None, "p90": None}


# ------------------------------------------------------------------------------ approval (HITL)


@pytest.fixture
def airflow_session(pg_server_url):
    """A throwaway database with Airflow 3.3.2's metadata schema, created by Airflow's own
    models (airflow.models.import_all_models + Base.metadata.create_all: the same tables,
    keys and foreign keys `airflow db migrate` ends with)."""
    import sqlalchemy as sa
    from airflow.models import import_all_models
    from airflow.models.base import Base
    from sqlalchemy.orm import Session

    from tests.conftest import make_database

    url = make_database(pg_server_url, "erpsync_test_af")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    import_all_models()
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()
    database.drop_database(url)


def _ti(session, dag_id, run_id, task_id, try_number=1, started=None):
    from sqlalchemy import text

    ti_id = uuid.uuid4()
    session.execute(
        text(
            """INSERT INTO dag_run (dag_id, run_id, run_type, run_after, state)
               VALUES (:d, :r, 'manual', now(), 'running') ON CONFLICT DO NOTHING"""
        ),
        {"d": dag_id, "r": run_id},
    )
    session.execute(
        text(
            """INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, try_number,
                                          pool, pool_slots, state, start_date)
               VALUES (:id, :t, :d, :r, -1, :n, 'default_pool', 1, 'deferred', :s)"""
        ),
        {
            "id": ti_id,
            "t": task_id,
            "d": dag_id,
            "r": run_id,
            "n": try_number,
            "s": None if started is None else ts(started),
        },
    )
    return ti_id


def _hitl(session, table, key_col, key, asked, answered, by):
    from sqlalchemy import text

    session.execute(
        text(
            f"""INSERT INTO {table} ({key_col}, options, subject, params, params_input,
                                     created_at, responded_at, responded_by, chosen_options)
                VALUES (:k, '["Approve", "Reject"]', 'Approve invoice batch', '{{}}', '{{}}',
                        :asked, :answered, CAST(:by AS json), :chosen)"""  # noqa: S608
        ),
        {
            "k": key,
            "asked": ts(asked),
            "answered": None if answered is None else ts(answered),
            # "null": the JSON null Airflow's timeout sweep stores (responded_by = None on a
            # sa.JSON column); None: SQL NULL
            "by": by if by in (None, "null") else f'{{"id": "{by}", "name": "{by}"}}',
            "chosen": None if answered is None else '["Approve"]',
        },
    )


def test_approval_cycle_time_from_airflow_hitl_records(airflow_session):
    from sqlalchemy import text

    s = airflow_session
    dag = "erpsync_invoice_batches"
    # run 1: try 1 asked Sep 30 09:00, answered after 1 h, then cleared; try 2 started (and
    # asked again) Oct 1 09:00 and was answered 2.5 h later. As Airflow keeps it: the current
    # record is the first ask's (created_at Sep 30; ti_id followed the new try's id), the
    # first try's copy is in hitl_detail_history under that try's own id.
    cur = _ti(s, dag, "run-1", "approve_batch", try_number=2, started="2026-10-01 09:00")
    _hitl(s, "hitl_detail", "ti_id", cur, "2026-09-30 09:00", "2026-10-01 11:30", "bob")
    old = uuid.uuid4()
    s.execute(
        text(
            """INSERT INTO task_instance_history (task_instance_id, task_id, dag_id, run_id,
                                                  map_index, try_number, pool, pool_slots, state,
                                                  start_date)
               VALUES (:id, 'approve_batch', :d, 'run-1', -1, 1, 'default_pool', 1, 'failed',
                       :s)"""
        ),
        {"id": old, "d": dag, "s": ts("2026-09-30 09:00")},
    )
    _hitl(
        s,
        "hitl_detail_history",
        "ti_history_id",
        old,
        "2026-09-30 09:00",
        "2026-09-30 10:00",
        "carol",
    )
    # run 2: 24 h (Oct 11)
    _hitl(
        s,
        "hitl_detail",
        "ti_id",
        _ti(s, dag, "run-2", "approve_batch"),
        "2026-10-10 08:00",
        "2026-10-11 08:00",
        "bob",
    )
    # run 3: the second ask timed out (default applied, no responder): counted apart
    _hitl(
        s,
        "hitl_detail",
        "ti_id",
        _ti(s, dag, "run-3", "approve_batch_2"),
        "2026-10-13 08:00",
        "2026-10-20 08:00",
        None,
    )
    # run 5: timed out as the scheduler records it (JSON null responder)
    _hitl(
        s,
        "hitl_detail",
        "ti_id",
        _ti(s, dag, "run-5", "approve_batch"),
        "2026-10-14 08:00",
        "2026-10-21 08:00",
        "null",
    )
    # milestone billing: 0.5 h (Nov)
    _hitl(
        s,
        "hitl_detail",
        "ti_id",
        _ti(s, "erpsync_milestone_billing", "m-1", "approve_batch"),
        "2026-11-02 08:00",
        "2026-11-02 08:30",
        "bob",
    )
    # not counted: still open; another DAG's question
    _hitl(
        s,
        "hitl_detail",
        "ti_id",
        _ti(s, dag, "run-4", "approve_batch"),
        "2026-11-10 08:00",
        None,
        None,
    )
    _hitl(
        s,
        "hitl_detail",
        "ti_id",
        _ti(s, "other_dag", "o-1", "approve_batch"),
        "2026-10-01 08:00",
        "2026-10-09 08:00",
        "bob",
    )
    s.commit()
    got = by_month(insights.approval_cycle_time(s, months=MONTHS, as_of=AS_OF))
    assert got["2026-09"].values == {"median": D("1.00"), "p90": D("1.00")}
    # Oct [2.5, 24]: median 13.25, p90 = 2.5 + 0.9 x 21.5 = 21.85
    assert got["2026-10"].values == {"median": D("13.25"), "p90": D("21.85")}
    assert got["2026-10"].count == 2 and got["2026-10"].extra == {"timed_out": 2}
    assert got["2026-11"].values == {"median": D("0.50"), "p90": D("0.50")}
    assert got["2026-11"].extra == {"timed_out": 0}


# ------------------------------------------------------------------------------ exceptions


def test_exception_rate_per_month_and_reason(conn):
    add_run(conn, "r-oct", dt.date(2026, 10, 5), "2026-10-05 06:00")
    add_run(conn, "r-nov", dt.date(2026, 11, 3), "2026-11-03 06:00")
    for i in range(20):
        add_item(conn, f"2026-09-{i + 1:02d}", "10", state="billed", run_id="r-oct")
    for i in range(10):
        add_item(conn, f"2026-10-{i + 1:02d}", "10", run_id="r-nov")
    add_exception(conn, "missing_rate", "2026-10-05 06:00")
    add_exception(
        conn, "missing_rate", "2026-10-05 06:00", status="resolved", resolved="2026-10-06 00:00"
    )
    add_exception(conn, "over_cap", "2026-10-05 06:00")
    add_exception(conn, "contract_missing_field", "2026-10-05 06:00")  # onboarding: not recon
    add_exception(conn, "missing_rate", "2026-11-03 06:00")
    insights.refresh_summaries(conn)
    got = by_month(insights.exception_rate(conn, months=MONTHS, as_of=AS_OF))
    # Oct: 3 raised / 20 reconciled = 15 %, missing_rate 2/20 = 10 %, over_cap 1/20 = 5 %
    assert got["2026-10"].values == {
        "all reasons": D("15.00"),
        "missing_rate": D("10.00"),
        "over_cap": D("5.00"),
    }
    assert got["2026-10"].count == 3 and got["2026-10"].extra == {"items_reconciled": 20}
    assert got["2026-11"].values == {"all reasons": D("10.00"), "missing_rate": D("10.00")}
    assert got["2026-09"].values == {"all reasons": None}


def test_exception_ageing_and_time_to_resolve(conn):
    add_exception(conn, "missing_rate", "2026-11-18 10:00")  # 2 days
    add_exception(conn, "missing_rate", "2026-11-01 10:00")  # 19 days
    add_exception(conn, "missing_rate", "2026-10-01 10:00")  # 50 days
    add_exception(conn, "missing_rate", "2026-07-01 10:00")  # 142 days
    add_exception(conn, "over_cap", "2026-11-13 10:00")  # 7 days: still 0-7
    add_exception(
        conn, "missing_rate", "2026-10-01 00:00", status="resolved", resolved="2026-10-04 00:00"
    )  # 3 days, Oct
    add_exception(
        conn, "over_cap", "2026-10-10 00:00", status="resolved", resolved="2026-11-09 12:00"
    )  # 30.5 days, Nov
    add_exception(conn, "over_cap", "2026-10-10 00:00", status="waived")  # not counted
    rows = {r.reason_code: r for r in insights.exception_ageing(conn, months=MONTHS, as_of=AS_OF)}
    assert rows["missing_rate"] == insights.AgeingRow(
        "missing_rate",
        4,
        {"0-7 days": 1, "8-30 days": 1, "31-90 days": 1, "over 90 days": 1},
        1,
        D("3.00"),
    )
    assert rows["over_cap"] == insights.AgeingRow(
        "over_cap",
        1,
        {"0-7 days": 1, "8-30 days": 0, "31-90 days": 0, "over 90 days": 0},
        1,
        D("30.50"),
    )
    got = by_month(insights.exception_resolution(conn, months=MONTHS, as_of=AS_OF))
    assert got["2026-10"].values == {"average days to resolve": D("3.00")}
    assert got["2026-11"].values == {"average days to resolve": D("30.50")}
    assert got["2026-09"].values == {"average days to resolve": None}


# ------------------------------------------------------------------------------ rework


def test_rework_credit_notes_per_invoice(conn):
    first = add_invoice(conn, "2026-10-02 10:00")
    for _ in range(3):
        add_invoice(conn, "2026-10-20 10:00")
    add_invoice(conn, "2026-10-28 10:00", kind="credit_note", credit_of=first)
    add_invoice(conn, None, kind="credit_note", credit_of=first)  # not posted: not counted
    add_invoice(conn, "2026-11-03 10:00")
    add_invoice(conn, "2026-11-04 10:00")
    got = by_month(insights.rework(conn, months=MONTHS, as_of=AS_OF))
    assert got["2026-10"].values == {"credit notes per 100 invoices": D("25.00")}
    assert got["2026-10"].extra == {"invoices": 4, "credit_notes": 1}
    assert got["2026-11"].values == {"credit notes per 100 invoices": D("0.00")}
    assert got["2026-09"].values == {"credit notes per 100 invoices": None}


# ------------------------------------------------------------------------------ realization


def test_realization_against_the_rate_card(conn):
    add_run(conn, "r1", AS_OF, "2026-11-20 06:00")
    add_card(conn, "u1", "100", "2026-01-01")  # Harvest: no currency -> EUR (settings)
    add_card(conn, "u2", "200", "2026-01-01", "2026-09-30", currency="EUR")
    add_card(conn, "u2", "150", "2026-10-01", currency="EUR")
    # Oct: u1 10 h billed at 90 (900 vs 1000); u2 4 h at 150 (600 vs 600);
    # u1 5 h billed at 108 USD = 540 USD = 500 EUR vs 5 x 100 EUR = 500 EUR
    add_item(conn, "2026-10-06", "900", state="billed", hours="10", user="u1")
    add_item(conn, "2026-10-05", "600", state="billed", hours="4", user="u2")
    add_item(conn, "2026-10-07", "540", state="billed", hours="5", user="u1", currency="USD")
    add_item(conn, "2026-10-08", "999", state="billed", hours="3", user="u3")  # no card
    add_item(conn, "2026-10-09", "50", hours="1", user="u1")  # not billed
    # Sep: u2 2 h at 180 = 360 vs card 200 -> 400
    add_item(conn, "2026-09-10", "360", state="billed", hours="2", user="u2")
    insights.refresh_summaries(conn)
    got = by_month(insights.realization(conn, months=MONTHS, as_of=AS_OF))
    # Oct: (900 + 600 + 500) / (1000 + 600 + 500) = 2000 / 2100 = 95.238... %
    assert got["2026-10"].values == {"realization": D("95.24")}
    assert got["2026-10"].extra == {
        "hours": D(19),
        "billed_eur": D("2000.00"),
        "standard_eur": D("2100.00"),
    }
    assert got["2026-09"].values == {"realization": D("90.00")}
    assert got["2026-11"].values == {"realization": None}


# ------------------------------------------------------------------------------ WIP days


def test_unbilled_wip_days(conn):
    add_run(conn, "r1", AS_OF, "2026-11-20 06:00")
    for worked, posted, amount in (
        ("2026-08-10", "2026-09-05 10:00", "3000"),
        ("2026-09-10", "2026-10-05 10:00", "6000"),
        ("2026-10-10", "2026-11-05 10:00", "9000"),
    ):
        bill(
            conn, add_item(conn, worked, amount, state="billed"), add_invoice(conn, posted), posted
        )
    add_item(conn, "2026-11-02", "1000")  # ready
    add_item(conn, "2026-10-20", "500", state="on_hold", item_type="expense")
    add_item(conn, "2026-10-21", "700", state="non_billable")
    add_item(conn, "2026-10-22", "4000", item_type="milestone")  # not time or expenses
    insights.refresh_summaries(conn)
    got = by_month(insights.wip_days(conn, months=MONTHS, as_of=AS_OF))
    # Sep end: WIP 6000 (worked Sep 10, billed in Oct); billings Jul-Sep 3000 over 92 days
    assert got["2026-09"].values == {"WIP days": D("184.00")}
    assert got["2026-09"].extra == {
        "wip_eur": D("6000.00"),
        "billings_3m_eur": D("3000.00"),
        "days": 92,
    }
    # Oct end: WIP 9000 + 500; billings Aug-Oct 9000 over 92 days: 9500 x 92 / 9000 = 97.11
    assert got["2026-10"].values == {"WIP days": D("97.11")}
    # Nov 20: WIP 1000 + 500 (= recon.wip now); billings Sep 1-Nov 20 18000 over 81 days: 6.75
    assert got["2026-11"].values == {"WIP days": D("6.75")}
    wip_now = conn.execute("SELECT sum(amount) FROM recon.wip").fetchone()[0]
    assert got["2026-11"].extra["wip_eur"] == wip_now == D(1500)


# ------------------------------------------------------------------------------ leakage


def test_leakage_amount_and_share(conn):
    add_run(conn, "r1", AS_OF, "2026-11-20 06:00")  # leakage_days 30 (default)
    add_item(conn, "2026-10-10", "400")  # approved, 41 days old: leakage
    add_item(conn, "2026-10-25", "100", state="on_hold", item_type="expense")  # 26 days: not yet
    add_item(conn, "2026-10-05", "200", approved=False)  # not approved: not leakage
    add_item(conn, "2026-10-03", "1300", state="billed")
    add_item(conn, "2026-10-04", "999", state="non_billable")
    add_item(conn, "2026-09-15", "300")  # leakage
    add_item(conn, "2026-09-16", "700", state="billed")
    add_item(conn, "2026-11-02", "500", state="billed")
    insights.refresh_summaries(conn)
    got = by_month(insights.leakage(conn, months=MONTHS, as_of=AS_OF))
    # Oct: 400 of 400 + 100 + 200 + 1300 = 2000 -> 20 %
    assert got["2026-10"].values == {"share of potential revenue": D("20.00")}
    assert got["2026-10"].extra == {"leakage_eur": D("400.00"), "potential_eur": D("2000.00")}
    assert got["2026-09"].values == {"share of potential revenue": D("30.00")}
    assert got["2026-11"].values == {"share of potential revenue": D("0.00")}
    direct = conn.execute("SELECT sum(amount) FROM recon.leakage").fetchone()[0]
    assert sum(v.extra["leakage_eur"] for v in got.values()) == direct == D(700)


# ------------------------------------------------------------------------------ the summaries


def test_summaries_equal_the_direct_computation(conn):
    """recon.monthly_items, recon.monthly_reconciled and billing.monthly_invoice_lag against
    queries straight over recon.items, billing.billed_items and the views."""
    add_run(conn, "r1", dt.date(2026, 10, 31), "2026-10-31 06:00")
    add_run(conn, "r2", AS_OF, "2026-11-20 06:00")
    inv = add_invoice(conn, "2026-11-05 10:00")
    for i in range(30):
        day = f"2026-{9 + i % 3:02d}-{1 + i % 28:02d}"
        state = ("ready", "on_hold", "billed", "non_billable")[i % 4]
        key = add_item(
            conn,
            day,
            f"{10 + i}.5",
            state=state,
            hours=f"{1 + i % 5}",
            item_type=("time", "expense")[i % 2],
            approved=i % 3 != 0,
            run_id=("r1", "r2")[i % 2],
            currency=("EUR", "USD")[i % 5 == 0],
        )
        if state == "billed" or i % 7 == 0:
            bill(conn, key, inv, "2026-11-05 10:00")
    out = insights.refresh_summaries(conn)
    assert out["monthly_items"] > 0 and out["invoice_lag"] > 0

    summary = conn.execute(
        """SELECT work_month, state, sum(items), sum(amount), sum(hours), sum(leakage_amount)
             FROM recon.monthly_items GROUP BY 1, 2 ORDER BY 1, 2"""
    ).fetchall()
    direct = conn.execute(
        """SELECT i.period_start,
                  CASE WHEN b.item_key IS NOT NULL THEN 'billed' ELSE i.state END AS st,
                  count(*), sum(i.amount), sum(i.hours),
                  sum(i.amount) FILTER (WHERE b.item_key IS NULL
                                          AND i.item_key IN (SELECT item_key FROM recon.leakage))
             FROM recon.items i LEFT JOIN billing.billed_items b ON b.item_key = i.item_key
            GROUP BY 1, 2 ORDER BY 1, 2"""
    ).fetchall()
    assert summary == direct
    reconciled = conn.execute(
        "SELECT run_month, sum(items) FROM recon.monthly_reconciled GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert reconciled == [(dt.date(2026, 10, 1), 15), (dt.date(2026, 11, 1), 15)]
    lag = conn.execute(
        "SELECT posted_month, lag_days, items FROM billing.monthly_invoice_lag ORDER BY 2"
    ).fetchall()
    days: dict[int, int] = {}
    for (d,) in conn.execute(
        """SELECT i.item_date FROM billing.billed_items b
             JOIN recon.items i ON i.item_key = b.item_key"""
    ).fetchall():
        days[(dt.date(2026, 11, 5) - d).days] = days.get((dt.date(2026, 11, 5) - d).days, 0) + 1
    assert lag == [(dt.date(2026, 11, 1), k, v) for k, v in sorted(days.items())]
    # a rebuild of unchanged data changes nothing
    insights.refresh_summaries(conn)
    assert (
        conn.execute(
            """SELECT work_month, state, sum(items), sum(amount), sum(hours), sum(leakage_amount)
                 FROM recon.monthly_items GROUP BY 1, 2 ORDER BY 1, 2"""
        ).fetchall()
        == summary
    )
    assert insights.last_refresh(conn)["run_id"] == "r2"


def test_every_metric_is_defined_and_runs_on_an_empty_warehouse(conn):
    for metric in insights.METRICS.values():
        assert metric.definition.endswith(".") and metric.unit and metric.series
        if metric.source == "warehouse":
            values = metric.compute(conn, months=MONTHS, as_of=AS_OF)
            assert [v.month for v in values] == ["2026-09", "2026-10", "2026-11"]
            header, rows = insights.csv_rows(metric, values)
            assert header[0] == "month" and len(rows) == 3


def test_the_reconcile_task_rebuilds_the_summaries_from_a_real_reconciliation(
    warehouse_db, monkeypatch
):
    """The reconcile DAG's task callable (erpsync.airflow.reconcile_tasks.reconcile) on rows a real
    reconciliation classifies; then an invoice posts and the push's rebuild is mirrored."""
    from types import SimpleNamespace

    from erpsync.airflow import reconcile_tasks
    from erpsync.reconcile.rows import Rows
    from erpsync.warehouse import connection

    with psycopg.connect(warehouse_db) as c:
        r = Rows(c)
        r.person("u1")
        r.contract("006W", "p1")
        r.rate_card("u1", "100", dt.date(2026, 1, 1))
        r.time("old", "u1", "p1", dt.date(2026, 1, 15), "2", rate="100")  # 76 days: leakage
        r.time("new", "u1", "p1", dt.date(2026, 3, 20), "1", rate="90")
        r.time("held", "u1", "p1", dt.date(2026, 3, 21), "1", rate="50", status="submitted")
        c.commit()
    monkeypatch.setattr(connection, "connect", lambda *a, **k: psycopg.connect(warehouse_db))
    context = {
        "ti": SimpleNamespace(
            dag_id="erpsync_reconcile", run_id="manual__1", task_id="reconcile", try_number=1
        ),
        "params": {"as_of": "2026-04-01"},
        "dag_run": None,
    }
    reconcile_tasks.reconcile(context)
    with psycopg.connect(warehouse_db, autocommit=True) as c:
        assert insights.last_refresh(c)["run_id"] == "manual__1"
        as_of = dt.date(2026, 4, 1)
        leak = by_month(insights.leakage(c, months=4, as_of=as_of))
        # January: 200 of 200 leaked; March: nothing (12 and 11 days old)
        assert leak["2026-01"].extra == {"leakage_eur": D("200.00"), "potential_eur": D("200.00")}
        assert leak["2026-03"].extra == {"leakage_eur": D("0.00"), "potential_eur": D("140.00")}
        assert c.execute("SELECT sum(amount) FROM recon.leakage").fetchone()[0] == D(200)
        # the March entry at 90 is invoiced (posted March 28) and the push rebuilds
        inv = add_invoice(c, "2026-03-28 09:00")
        bill(c, "time:new", inv, "2026-03-28 09:00")
        insights.refresh_summaries(c)
        assert by_month(insights.realization(c, months=3, as_of=as_of))["2026-03"].values == {
            "realization": D("90.00")  # 1 h at 90 vs the card's 100
        }
        lag = by_month(insights.time_to_invoice(c, months=3, as_of=as_of))["2026-03"]
        assert lag.values == {"median": D("8.00"), "p90": D("8.00")} and lag.count == 1
        wip = by_month(insights.wip_days(c, months=3, as_of=as_of))["2026-03"]
        assert wip.extra["wip_eur"] == D("250.00")  # 200 (January) + 50 (held), 90 billed


def test_a_rebuild_is_skipped_only_while_the_summaries_are_current(conn):
    assert insights.refresh_summaries(conn, if_stale=True)["monthly_items"] == 0  # never built
    assert insights.refresh_summaries(conn, if_stale=True) == {
        "skipped": "the summaries are current"
    }
    # a reconciliation that found nothing changed does not make them stale...
    conn.execute(
        """INSERT INTO recon.runs (run_id, as_of, finished_at, result)
           VALUES ('quiet', %s, clock_timestamp(), '{"skipped": true}')""",
        (AS_OF,),
    )
    assert "skipped" in insights.refresh_summaries(conn, if_stale=True)
    # ...one that recomputed does, and so does a posting
    conn.execute(
        """INSERT INTO recon.runs (run_id, as_of, finished_at, result)
           VALUES ('busy', %s, clock_timestamp(), '{"items": 1}')""",
        (AS_OF,),
    )
    assert "skipped" not in insights.refresh_summaries(conn, if_stale=True)
    invoice = add_invoice(conn, "2026-01-01 00:00")
    assert "skipped" in insights.refresh_summaries(conn, if_stale=True)  # posted long ago
    conn.execute(
        "UPDATE billing.invoice_push SET posted_at = clock_timestamp() WHERE invoice_id = %s",
        (invoice,),
    )
    assert "skipped" not in insights.refresh_summaries(conn, if_stale=True)
    assert "skipped" in insights.refresh_summaries(conn, if_stale=True)


def test_the_page_never_reads_the_item_tables(conn):
    """Speed by construction: the page's warehouse data (insights.page_data) is computed by a
    role that may not read recon.items or billing.billed_items (1,000,000+ rows each on a large
    firm) - only the summaries and small, indexed tables."""
    add_run(conn, "r1", AS_OF, "2026-11-20 06:00")
    bill(
        conn,
        add_item(conn, "2026-10-01", "100", state="billed"),
        add_invoice(conn, "2026-10-05 10:00"),
        "2026-10-05 10:00",
    )
    add_exception(conn, "missing_rate", "2026-11-01 10:00")
    insights.refresh_summaries(conn)
    role = sql.Identifier(f"insights_probe_{uuid.uuid4().hex[:8]}")
    conn.execute(sql.SQL("CREATE ROLE {}").format(role))
    try:
        for schema in ("recon", "billing", "ops", "core"):
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role)
            )
            conn.execute(
                sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                    sql.Identifier(schema), role
                )
            )
        conn.execute(
            sql.SQL(
                "REVOKE SELECT ON recon.items, recon.items_0, recon.items_1, billing.billed_items"
                " FROM {}"
            ).format(role)
        )
        conn.execute(sql.SQL("SET ROLE {}").format(role))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM recon.items LIMIT 1")
        data = insights.page_data(conn, months=MONTHS, as_of=AS_OF)
        assert by_month(data.values["time-to-invoice"])["2026-10"].count == 1
        assert data.ageing[0].open == 1 and data.refreshed["run_id"] == "r1"
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
        conn.execute(sql.SQL("DROP ROLE {}").format(role))
