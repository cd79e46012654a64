"""The billing cockpit page through the real console app: every role reads it, nobody changes
anything on it, filters narrow it, each table downloads as CSV, an awaiting batch links to
Airflow's Required Actions. Figures: tests/integration/test_billing_cockpit.py's hand-built firm."""

from __future__ import annotations

import csv
import datetime as dt
import io

import psycopg
import pytest

from erpsync.console import billing
from erpsync.reconcile import run_reconcile
from erpsync.reconcile import sql as reconcile_sql
from erpsync.sync.spec import RunInfo
from tests.integration.test_billing_cockpit import (
    AS_OF,
    _approval_requested,
    _batch,
    _invoice,
    build_firm,
)


@pytest.fixture
def firm(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        build_firm(conn)
        run_reconcile(conn, RunInfo.local("page"), as_of=AS_OF)
        awaiting = _batch(conn, "awaiting_approval")
        _invoice(conn, awaiting, "INV-1", "001ACME", "EUR", "1000", "210")
        _approval_requested(conn, awaiting, "scheduled__2026-04-01", "approve")
        posted = _batch(conn, "released", decided="checker")
        _invoice(conn, posted, "INV-2", "001GLOB", "USD", "70", "0", status="posted")
        conn.execute(
            """INSERT INTO ops.dq_blocks (scope_type, scope_key, suite, expectation,
                   first_run_id, last_run_id)
               VALUES ('client', '001ACME', 'clients', 'vat_id_valid', 'r', 'r')"""
        )
        conn.commit()
    return {"awaiting": awaiting, "posted": posted}


@pytest.mark.parametrize("role", ["auditor", "finance_ops", "data_engineer"])
def test_every_role_reads_the_cockpit(console, firm, role):
    page = console(role).get("/erpsync/billing")
    assert page.status_code == 200, page.text
    html = page.text
    assert "Billing cockpit" in html
    assert "Reconciliation as of <strong>2026-04-01</strong>" in html
    assert "Acme B.V." in html and "Globex Inc." in html
    assert "340.00" in html  # EUR ready to bill
    assert "Not approved" in html and "Missing rate" in html
    assert 'role="img"' in html and "Unbilled WIP by age (EUR)" in html
    assert "vat_id_valid" in html
    # the awaiting batch links to the approval task's Required Actions in Airflow's UI
    assert (
        'href="/dags/erpsync_invoice_batches/runs/scheduled__2026-04-01/tasks/approve'
        '/required_actions"'
    ) in html
    assert "awaiting approval" in html and "posted" in html
    for table in billing.TABLES:
        assert f"/erpsync/billing/{table}.csv" in html
    # read only: no form posts anything from this page
    assert "data-post" not in html
    # counts are numbers (a dict row's "items" key, not its method)
    assert "built-in method" not in html
    assert (
        '<td>0-30 days</td><td class="num">5</td><td class="num">7</td><td class="num">540.00</td>'
    ) in html  # EUR WIP 0-30 days: 5 items, 7 hours
    # the console's Content-Security-Policy allows no inline script or style
    assert "<script>" not in html and " style=" not in html and "onclick" not in html


def test_anonymous_callers_are_refused(console, firm):
    anonymous = console(None)
    assert anonymous.get("/erpsync/billing").status_code == 401
    assert anonymous.get("/erpsync/billing/overview.csv").status_code == 401
    assert anonymous.page("/erpsync/billing").status_code == 303


def test_nothing_changes_state_on_the_cockpit(console, firm):
    finance = console("finance_ops")
    answer = finance.post_action("/erpsync/billing", {})
    assert answer.status_code == 405


def test_filters_narrow_every_table(console, firm):
    finance = console("finance_ops")
    html = finance.get("/erpsync/billing", params={"period": "2026-03", "client": "001GLOB"}).text
    assert "Globex Inc." in html
    assert "Acme B.V." not in html
    assert "INV" not in html  # document numbers are not shown, batches are
    assert 'data-batch="' + str(firm["posted"]) + '"' in html
    assert 'data-batch="' + str(firm["awaiting"]) + '"' not in html
    assert "No block in force." in html  # Acme's block does not hold Globex
    usd = finance.get("/erpsync/billing", params={"currency": "USD"}).text
    assert "Unbilled WIP by age (USD)" in usd and "Unbilled WIP by age (EUR)" not in usd


@pytest.mark.parametrize(
    "params", [{"period": "2026-13"}, {"currency": "EURO"}, {"page": "x"}, {"batch_page": "y"}]
)
def test_malformed_filters_are_refused(console, firm, params):
    assert console("auditor").get("/erpsync/billing", params=params).status_code == 400


def test_each_table_downloads_as_csv(console, firm):
    auditor = console("auditor")
    for table in billing.TABLES:
        answer = auditor.get(f"/erpsync/billing/{table}.csv")
        assert answer.status_code == 200, table
        assert answer.headers["content-type"].startswith("text/csv")
        assert f"billing-{table}" in answer.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(answer.text)))
        assert rows and len({len(r) for r in rows}) == 1, table
    overview = list(
        csv.DictReader(
            io.StringIO(
                auditor.get("/erpsync/billing/overview.csv", params={"period": "2026-03"}).text
            )
        )
    )
    acme = next(r for r in overview if r["client_id"] == "001ACME")
    assert (acme["ready_amount"], acme["on_hold_amount"], acme["ready_items"]) == (
        "140.00",
        "300.00",
        "2",
    )
    assert auditor.get("/erpsync/billing/secrets.csv").status_code == 404


def test_the_cockpit_of_an_empty_warehouse(console, warehouse_db):
    html = console("auditor").get("/erpsync/billing").text
    assert "No reconciliation has run yet." in html
    assert "No items." in html and "No block in force." in html


def test_pages_of_the_period_table(console, warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        conn.execute(
            """INSERT INTO recon.item_totals (period_start, account_id, currency, item_type,
                   state, approved, is_leakage, items, hours, amount)
               SELECT %s, 'acc' || lpad(g::text, 3, '0'), 'EUR', 'time', 'billed', true,
                      false, 1, 1, 100
                 FROM generate_series(1, 120) g""",
            (dt.date(2026, 3, 1),),
        )
        conn.execute(reconcile_sql.CLIENT_PERIOD_TOTALS)
    finance = console("finance_ops")
    first = finance.get("/erpsync/billing").text
    assert "page 1 of 3 (120 rows)" in first and "acc001" in first and "acc051" not in first
    third = finance.get("/erpsync/billing", params={"page": 3}).text
    assert "acc120" in third and "acc001" not in third
