"""The process-intelligence page (/erpsync/insights) through the real console app: every role
reads it, anonymous callers do not; each metric is shown with its definition, a chart and its
monthly table; the CSVs carry the exact Decimals of a hand-built scenario, the approval cycle
time included (rows in the console's real Airflow metadata database)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import psycopg
import pytest
from markupsafe import escape

from erpsync.console import insights
from tests.integration.test_insights_metrics import (
    add_exception,
    add_invoice,
    add_item,
    add_run,
    bill,
    ts,
)

QUERY = "months=3&as_of=2026-11-20"


@pytest.fixture
def scenario(warehouse_db):
    """Rework 1 credit note per 4 invoices in October; time to invoice [5, 10, 30] days in
    October; one open missing_rate exception 19 days old."""
    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        add_run(conn, "r1", dt.date(2026, 11, 20), "2026-11-20 06:00")
        first = add_invoice(conn, "2026-10-05 10:00")
        for _ in range(3):
            add_invoice(conn, "2026-10-20 10:00")
        add_invoice(conn, "2026-10-28 10:00", kind="credit_note", credit_of=first)
        for day in ("2026-09-05", "2026-09-25", "2026-09-30"):
            bill(conn, add_item(conn, day, "100", state="billed"), first, "2026-10-05 10:00")
        add_exception(conn, "missing_rate", "2026-11-01 10:00")
        insights.refresh_summaries(conn)
    return warehouse_db


def read_csv(answer) -> list[list[str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(answer.text)))


@pytest.mark.parametrize("role", ["auditor", "finance_ops", "data_engineer"])
def test_every_role_reads_every_metric_with_its_definition_and_chart(console, scenario, role):
    page = console(role).page(f"/erpsync/insights?{QUERY}")
    assert page.status_code == 200, page.text
    html = page.text
    for metric in insights.METRICS.values():
        assert f'data-metric="{metric.key}"' in html
        assert metric.title in html
        assert escape(metric.definition) in html
        assert f"/erpsync/insights/{metric.key}.csv?{QUERY.replace('&', '&amp;')}" in html
    assert html.count('<svg class="chart" role="img"') >= len(insights.METRICS)
    assert 'data-metric="exception-ageing"' in html and 'id="cash"' in html
    assert "Item summaries rebuilt" in html
    # the KPI strip: the latest month with a value (rework: October's 25.00 %)
    strip = html[html.index('data-kpi="rework"') :]
    assert "25.00 %" in strip[:300] and "2026-10" in strip[:400]


def test_anonymous_callers_are_refused(console, scenario):
    anonymous = console(None)
    assert anonymous.get(f"/erpsync/insights?{QUERY}").status_code == 401
    assert anonymous.get("/erpsync/insights/rework.csv").status_code == 401
    assert anonymous.page("/erpsync/insights").status_code == 303


def test_metric_csvs_carry_the_exact_values(console, scenario):
    client = console("auditor")
    rework = read_csv(client.get(f"/erpsync/insights/rework.csv?{QUERY}"))
    assert rework[0] == [
        "month",
        "credit notes per 100 invoices (%)",
        "count",
        "invoices",
        "credit_notes",
    ]
    assert rework[1:] == [
        ["2026-09", "", "0", "0", "0"],
        ["2026-10", "25.00", "5", "4", "1"],
        ["2026-11", "", "0", "0", "0"],
    ]
    lag = read_csv(client.get(f"/erpsync/insights/time-to-invoice.csv?{QUERY}"))
    assert lag[2] == ["2026-10", "10.00", "26.00", "3"]
    ageing = read_csv(client.get(f"/erpsync/insights/exception-ageing.csv?{QUERY}"))
    assert ageing[1] == ["missing_rate", "1", "0", "1", "0", "0", "0", ""]


def test_the_cash_section_and_its_csvs_are_on_the_page(console, scenario):
    client = console("auditor")
    page = client.page(f"/erpsync/insights?{QUERY}")
    assert 'id="cash-heading"' in page.text and "/erpsync/insights/cash_dso.csv" in page.text
    for table in ("cash_dso", "cash_overdue", "cash_payment_status"):
        answer = client.get(f"/erpsync/insights/{table}.csv?{QUERY}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")


def test_unknown_metric_and_bad_window_are_refused(console, scenario):
    client = console("finance_ops")
    assert client.get("/erpsync/insights/nothing.csv").status_code == 404
    assert client.get("/erpsync/insights?months=0").status_code == 422
    assert client.get("/erpsync/insights?months=37").status_code == 422


def test_approval_cycle_time_reads_airflows_hitl_records(console, scenario):
    """Rows in the console's Airflow metadata database (the API server's own): one approval
    answered after 90 minutes, one closed by the timeout."""
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import delete, insert, select

    run_id = f"insights-{uuid.uuid4().hex[:8]}"
    dag_id = "erpsync_invoice_batches"
    session = settings.Session()
    try:
        session.execute(
            insert(DagRun.__table__).values(
                dag_id=dag_id,
                run_id=run_id,
                run_type="manual",
                run_after=ts("2026-10-01 08:00"),
                state="running",
            )
        )
        for task, asked, answered, by in (
            ("approve_batch", "2026-10-01 09:00", "2026-10-01 10:30", {"id": "b", "name": "b"}),
            ("approve_batch_2", "2026-10-02 09:00", "2026-10-09 09:00", None),
        ):
            ti = uuid.uuid4()
            session.execute(
                insert(TaskInstance.__table__).values(
                    id=ti,
                    task_id=task,
                    dag_id=dag_id,
                    run_id=run_id,
                    map_index=-1,
                    try_number=1,
                    pool="default_pool",
                    pool_slots=1,
                    state="success",
                )
            )
            session.execute(
                insert(HITLDetail.__table__).values(
                    ti_id=ti,
                    options=["Approve", "Reject"],
                    subject="Approve",
                    params={},
                    params_input={},
                    created_at=ts(asked),
                    responded_at=ts(answered),
                    responded_by=by,
                )
            )
        session.commit()
        rows = read_csv(console("auditor").get(f"/erpsync/insights/approval.csv?{QUERY}"))
        assert rows[0] == ["month", "median (hours)", "p90 (hours)", "count", "timed_out"]
        assert rows[2] == ["2026-10", "1.50", "1.50", "1", "1"]
        page = console("finance_ops").page(f"/erpsync/insights?{QUERY}")
        assert "Approval cycle time (hours)" in page.text
    finally:
        session.rollback()
        tis = TaskInstance.__table__
        session.execute(
            delete(HITLDetail.__table__).where(
                HITLDetail.__table__.c.ti_id.in_(select(tis.c.id).where(tis.c.run_id == run_id))
            )
        )
        session.execute(delete(tis).where(tis.c.run_id == run_id))
        session.execute(delete(DagRun.__table__).where(DagRun.__table__.c.run_id == run_id))
        session.commit()
        session.close()
