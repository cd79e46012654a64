"""Hand-computed reconciliation scenarios on rows built directly in a migrated warehouse: one
per billing model and per reason code, amounts asserted to the minor unit (erpsync.money)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from erpsync import money
from erpsync.reconcile import run_reconcile
from erpsync.reconcile.policy import update_settings
from erpsync.reconcile.report import finance_rows, finance_table
from erpsync.reconcile.rows import Rows
from erpsync.sync.spec import RunInfo
from tests.support.databases import migrated_database

D = dt.date
AS_OF = D(2026, 4, 1)
#: emptied between scenarios (DELETE: much faster than TRUNCATE on a handful of rows)
TABLES = (
    "recon.items",
    "recon.runs",
    "ops.exceptions",
    "billing.billed_items",
    "billing.schedule_lines",
    "billing.schedules",
    "core.contract_milestones",
    "core.crm_milestones",
    "core.contracts",
    "core.time_entries",
    "core.expenses",
    "core.rate_cards",
    "core.psa_clients",
    "core.clients",
    "core.people",
    "core.id_map",
)


@pytest.fixture(scope="module")
def db(pg_server_url):
    with migrated_database(pg_server_url, "erpsync_test_recon_golden") as url:
        yield url


def reset(conn) -> None:
    for table in TABLES:
        conn.execute(f"DELETE FROM {table}")  # noqa: S608 - constant names
    conn.execute(
        "UPDATE recon.settings SET lock_date = NULL, leakage_days = 30, expense_markup_pct = 0"
    )
    conn.commit()


@pytest.fixture
def conn(db):
    with psycopg.connect(db) as c:
        reset(c)
        yield c


def recon(conn, as_of=AS_OF, label="golden"):
    return run_reconcile(conn, RunInfo.local(label), as_of=as_of)


def item(conn, key: str) -> dict:
    cur = conn.execute(
        "SELECT state, reason_code, amount, currency, hours, rate, problems, reason_detail,"
        " approved FROM recon.items WHERE item_key = %s",
        (key,),
    )
    row = cur.fetchone()
    assert row is not None, key
    return dict(zip([c.name for c in cur.description], row, strict=True))


def cents(amount, currency="EUR") -> Decimal:
    return money.round_money(Decimal(amount), currency)


def exceptions(conn) -> set[tuple]:
    return set(
        conn.execute(
            "SELECT reason_code, entity_type, entity_key, amount_at_stake, currency"
            " FROM ops.exceptions WHERE status = 'open'"
        ).fetchall()
    )


# ------------------------------------------------------------------ time and materials


def test_time_and_materials_contract_rate_rate_cards_mid_month_and_psa_rate(conn):
    r = Rows(conn)
    for u in ("u1", "u2", "u3"):
        r.person(u)
    r.contract("006TM", "p1", overrides=[{"user_email": "u1@firm.example", "rate": "150"}])
    r.rate_card("u2", "100", D(2026, 1, 1), D(2026, 3, 15))
    r.rate_card("u2", "120", D(2026, 3, 16))
    r.time("1", "u1", "p1", D(2026, 3, 2), "7.5", rate="150")  # contracted 150
    r.time("2", "u2", "p1", D(2026, 3, 13), "2.25")  # rate card 100 (no PSA rate)
    r.time("3", "u2", "p1", D(2026, 3, 16), "1.5")  # rate card 120 from the 16th
    r.time("4", "u3", "p1", D(2026, 3, 17), "0.75", rate="133.33")  # PSA assignment rate
    r.time("5", "u3", "p1", D(2026, 3, 18), "2", billable=False)  # internal task
    conn.commit()
    result = recon(conn)
    assert item(conn, "time:1")["amount"] == Decimal("1125.00")
    assert item(conn, "time:2")["amount"] == Decimal("225.00")
    assert item(conn, "time:3")["amount"] == Decimal("180.0")
    four = item(conn, "time:4")
    assert four["amount"] == Decimal("99.9975") and cents(four["amount"]) == Decimal("100.00")
    assert item(conn, "time:5")["state"] == "non_billable"
    # 1125 + 225 + 180 + 99.9975 = 1629.9975 -> 1630.00 (rounded once, after summing)
    assert result.by_state["ready"] == {
        "items": 4,
        "hours": "12.00",
        "amounts": {"EUR": "1630.00"},
    }
    assert result.by_state["non_billable"]["hours"] == "2"
    assert exceptions(conn) == set()


def test_hours_cap_holds_what_is_over_and_a_straddling_entry_whole(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006CAP", "p1", cap_type="hours", cap_value="10")
    r.time("1", "u1", "p1", D(2026, 3, 2), "4", rate="100", billed=True)
    r.time("2", "u1", "p1", D(2026, 3, 3), "4", rate="100")
    r.time("3", "u1", "p1", D(2026, 3, 4), "4", rate="100")  # 8 -> 12: straddles 10
    r.time("4", "u1", "p1", D(2026, 3, 5), "1", rate="100", status="submitted")
    conn.commit()
    result = recon(conn)
    assert item(conn, "time:1")["state"] == "billed"
    assert item(conn, "time:2")["state"] == "ready"
    straddle = item(conn, "time:3")
    assert (straddle["state"], straddle["reason_code"]) == ("on_hold", "over_cap")
    assert Decimal(str(straddle["reason_detail"]["cap_remaining"])) == 2
    assert item(conn, "time:4")["reason_code"] == "over_cap"  # data problem before approval
    assert result.by_state["ready"]["amounts"] == {"EUR": "400.00"}
    assert result.on_hold_by_reason["over_cap"]["amounts"] == {"EUR": "500.00"}
    assert exceptions(conn) == {("over_cap", "project", "p1", Decimal("500.0000"), "EUR")}


def test_amount_cap_in_date_order(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006AMT", "p1", cap_type="amount", cap_value="1000", currency="GBP")
    r.time("2", "u1", "p1", D(2026, 3, 3), "3", rate="150", currency="GBP")
    r.time("1", "u1", "p1", D(2026, 3, 2), "3", rate="150", currency="GBP")
    r.time("3", "u1", "p1", D(2026, 3, 4), "1", rate="150", currency="GBP")  # 900 -> 1050
    conn.commit()
    result = recon(conn)
    assert [item(conn, f"time:{i}")["state"] for i in (1, 2, 3)] == [
        "ready",
        "ready",
        "on_hold",
    ]
    assert result.by_state["ready"]["amounts"] == {"GBP": "900.00"}
    assert Decimal(str(item(conn, "time:3")["reason_detail"]["cap_remaining"])) == 100


# ------------------------------------------------------------------ fixed fee, retainer


def test_fixed_fee_milestones_ready_when_accepted(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006FF", "p1", model="fixed_fee", currency="USD")
    accepted = r.milestone("006FF", 1, "12500.00", D(2026, 2, 15), currency="USD", accepted=True)
    overdue = r.milestone("006FF", 2, "8000.00", D(2026, 3, 15), currency="USD")
    future = r.milestone("006FF", 3, "4500.50", D(2026, 6, 15), currency="USD")
    billed = r.milestone("006FF", 4, "999.99", D(2026, 1, 15), currency="USD", accepted=True)
    r.billed(billed)
    r.time("1", "u1", "p1", D(2026, 3, 2), "8", rate="200", currency="USD")  # covered by fee
    conn.commit()
    result = recon(conn)
    assert item(conn, accepted)["state"] == "ready"
    assert item(conn, overdue)["reason_code"] == "milestone_not_accepted"
    assert item(conn, overdue)["reason_detail"]["days_overdue"] == 17
    assert item(conn, future)["reason_code"] == "not_yet_due"
    assert item(conn, billed)["state"] == "billed"
    t = item(conn, "time:1")
    assert (t["state"], t["amount"], t["reason_detail"]) == (
        "non_billable",
        None,
        {"why": "covered by the fixed_fee fee"},
    )
    assert result.by_state["ready"]["amounts"] == {"USD": "12500.00"}
    assert result.on_hold_by_reason["not_yet_due"]["amounts"] == {"USD": "4500.50"}
    assert result.by_state["billed"]["amounts"] == {"USD": "999.99"}
    assert exceptions(conn) == set()  # waiting for a client is not a data problem


def _crm_milestone(conn, crm_id: str, opp: str, name: str, status: str, accepted=None) -> None:
    conn.execute(
        """INSERT INTO core.crm_milestones (crm_milestone_id, opportunity_id, name, amount,
               due_date, status, accepted_date, source_record_id, row_hash, source_modstamp,
               first_run_id, last_run_id)
           VALUES (%s, %s, %s, 1000, '2026-02-15', %s, %s, %s, 'h', now(), 'r', 'r')""",
        (crm_id, opp, name, status, accepted, crm_id),
    )


def test_crm_acceptance_refresh_never_bills_a_milestone_twice(conn):
    """Acceptance comes from the CRM (Contract_Milestone__c). Accepted -> accepted; Invoiced ->
    accepted only for the contract version erpsync billed it under: a change order's new
    version of the same CRM milestone stays open, so it is never billed a second time."""
    from erpsync.reconcile.milestones import refresh_milestones

    r = Rows(conn)
    r.contract("006CO", "p9", model="fixed_fee", status="superseded")
    r.contract("006CO", "p9", model="fixed_fee", version=2)
    v1 = r.milestone("006CO", 1, "1000", D(2026, 2, 15), crm_id="a0MCO0000000001AAA")
    r.billed(v1)
    v2 = r.milestone("006CO", 1, "1000", D(2026, 2, 15), version=2, crm_id="a0MCO0000000001AAA")
    r.milestone("006CO", 2, "500", D(2026, 3, 1), version=2, name="Go-live")  # matched by name
    _crm_milestone(conn, "a0MCO0000000001AAA", "006CO", "Milestone 1", "Invoiced", D(2026, 2, 16))
    _crm_milestone(conn, "a0MCO0000000002AAA", "006CO", "go-live ", "Accepted", D(2026, 3, 2))
    conn.commit()
    stats = refresh_milestones(conn, RunInfo.local("refresh"))
    assert stats["accepted"] == 1 and stats["matched"] == 2 and stats["unmatched"] == 0
    rows = conn.execute(
        """SELECT version, seq, status, accepted_at::date, crm_milestone_id
             FROM core.contract_milestones WHERE opportunity_id = '006CO' ORDER BY 1, 2"""
    ).fetchall()
    assert rows == [
        (1, 1, "open", None, "a0MCO0000000001AAA"),  # superseded version: not refreshed
        (2, 1, "open", None, "a0MCO0000000001AAA"),  # Invoiced under v1: not billable again
        (2, 2, "accepted", D(2026, 3, 2), "a0MCO0000000002AAA"),
    ]
    recon(conn)
    assert item(conn, v2)["reason_code"] == "milestone_not_accepted"
    assert refresh_milestones(conn, RunInfo.local("again"))["updated"] == 0


def test_retainer_fee_ready_when_due_in_jpy(conn):
    r = Rows(conn)
    r.contract("006RT", "p1", model="retainer", currency="JPY", retainer_amount="150000")
    march, april = r.retainer_schedule(
        "006RT", "150000", [D(2026, 3, 31), D(2026, 4, 30)], currency="JPY"
    )
    conn.commit()
    result = recon(conn)
    assert item(conn, march)["state"] == "ready"
    assert item(conn, april)["reason_code"] == "not_yet_due"
    assert result.by_state["ready"]["amounts"] == {"JPY": "150000"}
    result = recon(conn, as_of=D(2026, 4, 30))  # the due date arrives
    assert item(conn, april)["state"] == "ready"
    assert result.by_state["ready"]["amounts"] == {"JPY": "300000"}
    assert result.updated == 1


# ------------------------------------------------------------------ expenses


def test_expenses_markup_receipt_threshold_and_policy_per_currency(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006EX", "p1")
    r.contract("006JP", "pj", currency="JPY")
    r.contract("006KW", "pk", currency="KWD")
    update_settings(conn, RunInfo.local("policy"), expense_markup_pct=Decimal("10"))
    r.expense(
        "e1", "u1", "p1", D(2026, 3, 2), "123.45", category="Airfare"
    )  # +10% = 135.795 -> 135.80
    r.expense(
        "e2", "u1", "p1", D(2026, 3, 2), "75.00", receipt=False, category="Airfare"
    )  # not above 75
    r.expense("e3", "u1", "p1", D(2026, 3, 2), "80.00", receipt=False, category="Taxi & Transit")
    r.expense("e4", "u1", "pj", D(2026, 3, 2), "12151", receipt=False, currency="JPY",
              category="Airfare")  # fmt: skip
    r.expense("e5", "u1", "pj", D(2026, 3, 2), "12150", receipt=False, currency="JPY",
              category="Airfare")  # fmt: skip
    # Hotel 2 nights: limit 2 x 250 EUR x 0.332 = 166.000 KWD
    r.expense("e6", "u1", "pk", D(2026, 3, 2), "166.001", category="Hotel", units=2,
              currency="KWD")  # fmt: skip
    r.expense("e7", "u1", "pk", D(2026, 3, 2), "166.000", category="Hotel", units=2,
              currency="KWD")  # fmt: skip
    r.expense("e8", "u1", "p1", D(2026, 3, 2), "50", billable=False)
    r.expense("e9", "u1", "p1", D(2026, 3, 2), "20", status="submitted")
    conn.commit()
    recon(conn)
    e1 = item(conn, "expense:e1")
    assert (e1["state"], e1["amount"], cents(e1["amount"])) == (
        "ready",
        Decimal("135.795"),
        Decimal("135.80"),
    )
    assert item(conn, "expense:e2")["state"] == "ready"
    assert item(conn, "expense:e3")["reason_code"] == "missing_receipt"
    assert item(conn, "expense:e4")["reason_code"] == "missing_receipt"
    assert item(conn, "expense:e5")["state"] == "ready"
    assert item(conn, "expense:e6")["reason_code"] == "expense_over_policy"
    assert Decimal(str(item(conn, "expense:e6")["reason_detail"]["policy_limit"])) == Decimal(
        "166.000"
    )
    assert item(conn, "expense:e7")["state"] == "ready"
    assert item(conn, "expense:e8")["state"] == "non_billable"
    assert item(conn, "expense:e9")["reason_code"] == "not_approved"
    # 80 x 1.1 = 88.00 EUR; 12151 x 1.1 = 13366.1 -> 13366 JPY; 166.001 x 1.1 = 182.6011 KWD
    assert exceptions(conn) == {
        ("missing_receipt", "expense", "e3", Decimal("88.0000"), "EUR"),
        ("missing_receipt", "expense", "e4", Decimal("13366.0000"), "JPY"),
        ("expense_over_policy", "expense", "e6", Decimal("182.6010"), "KWD"),
    }


# ------------------------------------------------------------------ the other reason codes


def test_each_time_reason_code_with_its_exception(conn):
    r = Rows(conn)
    for u in ("u1", "u2", "u3"):
        r.person(u)
    r.contract(
        "006R",
        "p1",
        starts_on=D(2026, 2, 1),
        ends_on=D(2026, 3, 20),
        overrides=[{"user_email": "u2@firm.example", "rate": "110"}],
    )
    r.contract("006U", "pu", currency="EUR")
    r.time("closed", "u1", "p1", D(2026, 3, 23), "2", rate="100", status="submitted")
    r.time("early", "u1", "p1", D(2026, 1, 30), "1", rate="100")
    r.time("orig", "u1", "p1", D(2026, 3, 2), "3", rate="100", notes="same")
    r.time("dup", "u1", "p1", D(2026, 3, 2), "3", rate="100", notes="same", status="submitted")
    r.time("norate", "u3", "p1", D(2026, 3, 3), "2")
    r.time("differs", "u2", "p1", D(2026, 3, 3), "2", rate="95", assignment="ua-9")
    r.time("usd", "u1", "pu", D(2026, 3, 3), "1.5", rate="108", currency="USD")
    r.time("nowhere", "u1", "p404", D(2026, 3, 3), "1", rate="100")
    r.time("pending", "u1", "p1", D(2026, 3, 4), "1", rate="100", status="unsubmitted")
    conn.commit()
    recon(conn)
    got = {
        k: (item(conn, f"time:{k}")["reason_code"], item(conn, f"time:{k}")["amount"])
        for k in (
            "closed",
            "early",
            "dup",
            "norate",
            "differs",
            "usd",
            "nowhere",
            "pending",
        )
    }
    assert got == {
        "closed": ("closed_project", Decimal("200")),
        "early": ("outside_contract_dates", Decimal("100")),
        "dup": ("duplicate_entry", Decimal("300")),
        "norate": ("missing_rate", None),
        "differs": ("rate_differs_from_contract", Decimal("220")),  # at the contracted 110
        "usd": ("currency_differs_from_contract", Decimal("162.0")),  # in USD, the PSA's
        "nowhere": ("unknown_project", Decimal("100")),
        "pending": ("not_approved", Decimal("100")),
    }
    assert item(conn, "time:orig")["state"] == "ready"
    assert item(conn, "time:dup")["reason_detail"]["duplicate_of"] == "orig"
    assert item(conn, "time:usd")["currency"] == "USD"
    assert exceptions(conn) == {
        ("closed_project", "time_entry", "closed", Decimal("200.0000"), "EUR"),
        ("outside_contract_dates", "time_entry", "early", Decimal("100.0000"), "EUR"),
        ("duplicate_entry", "time_entry", "dup", Decimal("300.0000"), "EUR"),
        ("missing_rate", "time_entry", "norate", None, "EUR"),
        ("rate_differs_from_contract", "user_assignment", "ua-9", Decimal("220.0000"), "EUR"),
        ("currency_differs_from_contract", "project", "pu", Decimal("162.0000"), "USD"),
        ("unknown_project", "time_entry", "nowhere", Decimal("100.0000"), "EUR"),
    }
    owners = dict(
        conn.execute("SELECT reason_code, owner FROM ops.exceptions WHERE status = 'open'")
    )
    assert owners["missing_rate"] == "resource_manager"
    assert owners["duplicate_entry"] == "timesheet_owner"


def test_precedence_keeps_every_problem_and_data_problems_come_before_approval(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006P", "p1")
    r.time("a", "u1", "p1", D(2026, 3, 2), "1", notes="x")
    r.time("b", "u1", "p1", D(2026, 3, 2), "1", notes="x", status="submitted")  # dup, no rate
    conn.commit()
    recon(conn)
    b = item(conn, "time:b")
    assert (b["state"], b["reason_code"], b["problems"]) == (
        "on_hold",
        "duplicate_entry",
        ["duplicate_entry", "missing_rate"],
    )
    assert item(conn, "time:a")["reason_code"] == "missing_rate"


def test_locked_period_holds_unbilled_items_dated_on_or_before_the_lock(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006L", "p1")
    r.time("feb", "u1", "p1", D(2026, 2, 28), "2", rate="100")
    r.time("febbilled", "u1", "p1", D(2026, 2, 27), "2", rate="100", billed=True)
    r.time("mar", "u1", "p1", D(2026, 3, 1), "2", rate="100")
    r.expense("efeb", "u1", "p1", D(2026, 2, 10), "30")
    conn.commit()
    update_settings(conn, RunInfo.local("lock"), lock_date=D(2026, 2, 28))
    recon(conn)
    assert item(conn, "time:feb")["reason_code"] == "locked_period"
    assert item(conn, "expense:efeb")["reason_code"] == "locked_period"
    assert item(conn, "time:febbilled")["state"] == "billed"
    assert item(conn, "time:mar")["state"] == "ready"
    assert exceptions(conn) == set()
    assert conn.execute(
        "SELECT count(*) FROM audit.audit_log WHERE action = 'reconcile.settings_changed'"
        " AND after_state ->> 'lock_date' = '2026-02-28'"
    ).fetchone() == (1,)


# ------------------------------------------------------------------ exceptions lifecycle


def test_rerun_does_not_duplicate_and_a_fix_resolves(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006X", "p1")
    r.time("1", "u1", "p1", D(2026, 3, 2), "2")  # missing rate
    conn.commit()
    first = recon(conn)
    second = recon(conn)
    assert (first.exceptions_raised, second.exceptions_raised) == (1, 0)
    assert (second.inserted, second.updated, second.deleted) == (0, 0, 0)
    assert conn.execute("SELECT count(*) FROM ops.exceptions").fetchone() == (1,)
    r.rate_card("u1", "90", D(2026, 1, 1))  # the rate card arrives with the next rates sync
    conn.commit()
    third = recon(conn)
    assert third.exceptions_resolved == 1 and third.updated == 1
    assert item(conn, "time:1")["amount"] == Decimal("180")
    assert conn.execute("SELECT status FROM ops.exceptions").fetchall() == [("resolved",)]


# ------------------------------------------------------------------ WIP, leakage, the table


def test_wip_leakage_and_the_finance_table(conn):
    r = Rows(conn)
    r.person("u1")
    conn.execute("INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', '001ACME')")
    conn.execute(
        """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country, currency,
               source_record_id, row_hash, first_run_id, last_run_id)
           SELECT '001ACME', canonical_id, 'Acme B.V.', 'NL', 'EUR', '001ACME', 'h', 'x', 'x'
             FROM core.id_map WHERE crm_id = '001ACME'"""
    )
    r.contract("006W", "p1")
    r.time("old", "u1", "p1", D(2026, 1, 15), "2", rate="100.005")  # 76 days: leakage
    r.time("new", "u1", "p1", D(2026, 3, 20), "1", rate="100")
    r.time("held", "u1", "p1", D(2026, 3, 21), "1", rate="50", status="submitted")
    conn.commit()
    recon(conn)
    rows = finance_rows(conn)
    assert rows == [
        {
            "client": "Acme B.V.",
            "currency": "EUR",
            "ready": Decimal("300.01"),  # 200.01 + 100
            "ready_items": 2,
            "on_hold": Decimal("50.00"),
            "on_hold_items": 1,
            "reasons": {"not_approved": (Decimal("50.00"), 1)},
            "wip": Decimal("350.01"),
            "leakage": Decimal("200.01"),
        }
    ]
    periods = conn.execute(
        "SELECT period_start, ready_amount, wip_oldest_days, leakage_amount"
        " FROM recon.contract_periods ORDER BY 1"
    ).fetchall()
    assert periods == [
        (D(2026, 1, 1), Decimal("200.010"), 76, Decimal("200.010")),
        (D(2026, 3, 1), Decimal("100"), 12, None),
    ]
    table = finance_table(conn)
    assert "Acme B.V." in table and "300.01" in table and "200.01" in table
    assert "on hold: not_approved (1 item)" in table


# ------------------------------------------------------------------ Harvest as it really is


def _harvest_client(conn, psa_id: str, currency: str) -> None:
    """A CRM client linked to its PSA client (core.id_map), as onboarding leaves it."""
    canonical = conn.execute(
        "INSERT INTO core.id_map (entity_type, crm_id, psa_id) VALUES ('client', %s, %s)"
        " RETURNING canonical_id",
        (f"001{psa_id}", psa_id),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country, currency,
               source_record_id, row_hash, first_run_id, last_run_id)
           VALUES (%s, %s, %s, 'DE', %s, %s, 'h', 'rows', 'rows')""",
        (f"001{psa_id}", canonical, f"Client {psa_id}", currency, f"001{psa_id}"),
    )


def _psa_client(conn, psa_id: str, currency: str) -> None:
    """The PSA's own client record (rates sync, core.psa_clients)."""
    conn.execute(
        """INSERT INTO core.psa_clients (psa_id, name, currency, source_record_id, row_hash,
               first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, 'h', 'rows', 'rows')""",
        (psa_id, f"PSA client {psa_id}", currency, psa_id),
    )


def test_harvest_shapes_rates_without_currency_and_entries_in_the_clients_currency(conn):
    """Audit H2/H3: Harvest rates carry no currency (a card without one prices in the contract
    currency, not missing_rate); a time entry names its client without currency (the client's
    currency applies, so a USD client on a EUR contract is currency_differs_from_contract);
    approval is is_closed (approved / unapproved)."""
    r = Rows(conn)
    r.person("u1")
    r.person("u2")
    _harvest_client(conn, "c1", "EUR")  # currency from the CRM client linked to it
    _harvest_client(conn, "c9", "EUR")
    _psa_client(conn, "c9", "USD")  # ... unless Harvest's own client says otherwise
    r.contract("006H", "p1")
    r.contract("006HU", "p9")
    r.rate_card("u1", "120", D(2026, 1, 1), currency=None)
    r.time("card", "u1", "p1", D(2026, 3, 2), "2", currency=None)
    r.time("open", "u1", "p1", D(2026, 3, 3), "1", currency=None, status="unapproved")
    r.time("usd", "u2", "p9", D(2026, 3, 3), "1", rate="100", currency=None, client="c9")
    conn.commit()
    recon(conn)
    card = item(conn, "time:card")
    assert (card["state"], card["amount"], card["currency"]) == ("ready", Decimal("240"), "EUR")
    assert card["approved"] is True
    still_open = item(conn, "time:open")
    assert (still_open["state"], still_open["reason_code"]) == ("on_hold", "not_approved")
    assert still_open["approved"] is False and still_open["amount"] == Decimal("120")
    usd = item(conn, "time:usd")
    assert usd["reason_code"] == "currency_differs_from_contract"
    assert usd["reason_detail"]["psa_currency"] == "USD"
