"""Plausibility rules (issue 14), one scenario per rule on rows built directly in a migrated
warehouse: the held items' reasons and the amounts at stake (the exceptions raised), the bounds
changed through the audited policy functions (recon.settings, migration 0021), and negative
Harvest expenses billed as credits, never silently."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from erpsync.reconcile import run_reconcile
from erpsync.reconcile.policy import get_settings, update_settings
from erpsync.reconcile.rows import Rows
from erpsync.sync.spec import RunInfo
from tests.support.databases import migrated_database
from tests.unit.test_reconcile_golden import TABLES, item

D = dt.date
AS_OF = D(2026, 4, 1)
DEFAULTS = {
    "max_hours_per_entry": Decimal(24),
    "max_hours_per_person_day": Decimal(16),
    "rate_ratio_min": Decimal("0.5"),
    "rate_ratio_max": Decimal("2.0"),
    "date_tolerance_days": 31,
    "rate_card_currency": "EUR",
}


@pytest.fixture(scope="module")
def db(pg_server_url):
    with migrated_database(pg_server_url, "erpsync_test_recon_plausibility") as url:
        yield url


@pytest.fixture
def conn(db):
    with psycopg.connect(db) as c:
        for table in TABLES:
            c.execute(f"DELETE FROM {table}")  # noqa: S608 - constant names
        c.execute(
            "UPDATE recon.settings SET lock_date = NULL, expense_markup_pct = 0,"
            " max_hours_per_entry = 24, max_hours_per_person_day = 16, rate_ratio_min = 0.5,"
            " rate_ratio_max = 2.0, date_tolerance_days = 31, rate_card_currency = 'EUR'"
        )
        c.commit()
        yield c


def recon(conn, as_of=AS_OF):
    return run_reconcile(conn, RunInfo.local("plausibility"), as_of=as_of)


def held(conn, key: str) -> tuple:
    i = item(conn, key)
    return i["state"], i["reason_code"], i["amount"]


def open_exceptions(conn) -> set[tuple]:
    return set(
        conn.execute(
            "SELECT reason_code, entity_type, entity_key, amount_at_stake, currency"
            " FROM ops.exceptions WHERE status = 'open'"
        ).fetchall()
    )


def test_documented_defaults(conn):
    s = get_settings(conn)
    assert {k: getattr(s, k) for k in DEFAULTS} == DEFAULTS


def test_hours_per_entry_above_the_bound_are_held_and_the_bound_is_audited_policy(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006H", "p1")
    r.time("big", "u1", "p1", D(2026, 3, 2), "25", rate="100")
    r.time("full", "u1", "p1", D(2026, 3, 3), "24", rate="100")  # on the bound: plausible
    # a person-day bound that lets a 25 h day through: this test is about the entry bound
    update_settings(conn, RunInfo.local("policy"), max_hours_per_person_day=Decimal(40))
    conn.commit()
    result = recon(conn)
    assert held(conn, "time:big") == ("on_hold", "hours_over_entry_limit", Decimal("2500"))
    assert item(conn, "time:big")["reason_detail"]["max_hours_per_entry"] == 24
    assert held(conn, "time:full") == ("ready", None, Decimal("2400"))
    assert result.on_hold_by_reason["hours_over_entry_limit"] == {
        "items": 1,
        "hours": "25",
        "amounts": {"EUR": "2500.00"},
    }
    assert open_exceptions(conn) == {
        ("hours_over_entry_limit", "time_entry", "big", Decimal("2500"), "EUR"),
    }
    owner = conn.execute(
        "SELECT owner FROM ops.exceptions WHERE reason_code = 'hours_over_entry_limit'"
    ).fetchone()[0]
    assert owner == "timesheet_owner"

    # finance raises the bound (audited): the entry is ready, its exception resolved
    update_settings(conn, RunInfo.local("policy"), max_hours_per_entry=Decimal(30))
    conn.commit()
    audit = conn.execute(
        "SELECT before_state, after_state FROM audit.audit_log"
        " WHERE action = 'reconcile.settings_changed' ORDER BY audit_id DESC LIMIT 1"
    ).fetchone()
    assert audit is not None
    assert str(audit[0]["max_hours_per_entry"]) == "24"
    assert str(audit[1]["max_hours_per_entry"]) == "30"
    recon(conn)
    assert held(conn, "time:big") == ("ready", None, Decimal("2500"))
    assert open_exceptions(conn) == set()


def test_hours_per_person_per_day_count_every_entry_and_hold_the_billable_ones(conn):
    r = Rows(conn)
    for u in ("u1", "u2"):
        r.person(u)
    r.contract("006D", "p1")
    r.contract("006E", "p2")
    # u1 on 2 March: 9 + 5 billable on two contracts + 3 internal = 17 h > 16
    r.time("a", "u1", "p1", D(2026, 3, 2), "9", rate="100")
    r.time("b", "u1", "p2", D(2026, 3, 2), "5", rate="120")
    r.time("c", "u1", "p1", D(2026, 3, 2), "3", billable=False)
    r.time("d", "u1", "p1", D(2026, 3, 3), "8", rate="100")  # another day: fine
    # u2 on 2 March: exactly 16 h, plausible
    r.time("e", "u2", "p1", D(2026, 3, 2), "10", rate="100")
    r.time("f", "u2", "p1", D(2026, 3, 2), "6", rate="100")
    conn.commit()
    recon(conn)
    assert held(conn, "time:a") == ("on_hold", "hours_over_day_limit", Decimal("900"))
    assert held(conn, "time:b") == ("on_hold", "hours_over_day_limit", Decimal("600"))
    assert item(conn, "time:a")["reason_detail"]["person_day_hours"] == 17
    assert item(conn, "time:a")["reason_detail"]["max_hours_per_person_day"] == 16
    assert item(conn, "time:c")["state"] == "non_billable"
    for key in ("d", "e", "f"):
        assert item(conn, f"time:{key}")["state"] == "ready", key
    assert open_exceptions(conn) == {
        ("hours_over_day_limit", "time_entry", "a", Decimal("900"), "EUR"),
        ("hours_over_day_limit", "time_entry", "b", Decimal("600"), "EUR"),
    }


def test_zero_amounts_are_held_and_a_negative_expense_is_a_marked_credit(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006Z", "p1")
    update_settings(conn, RunInfo.local("policy"), expense_markup_pct=Decimal("10"))
    r.time("zero", "u1", "p1", D(2026, 3, 2), "0", rate="100")  # a timer started, never run
    r.time("free", "u1", "p1", D(2026, 3, 3), "2", rate="0")  # a zero rate
    r.expense("e0", "u1", "p1", D(2026, 3, 2), "0")
    r.expense("credit", "u1", "p1", D(2026, 3, 4), "-50.00")  # a refund: Harvest allows it
    r.expense("charge", "u1", "p1", D(2026, 3, 4), "20.00")
    r.expense("pending", "u1", "p1", D(2026, 3, 5), "-10.00", status="unapproved")
    conn.commit()
    result = recon(conn)
    assert held(conn, "time:zero") == ("on_hold", "zero_amount", Decimal("0"))
    assert held(conn, "time:free") == ("on_hold", "zero_amount", Decimal("0"))
    assert held(conn, "expense:e0") == ("on_hold", "zero_amount", Decimal("0"))
    # billed as a negative line, with its markup, and marked as a credit
    credit = item(conn, "expense:credit")
    assert (credit["state"], credit["amount"]) == ("ready", Decimal("-55.000"))
    assert credit["reason_detail"] == {"credit": True, "total_cost": -50.0}
    assert item(conn, "expense:charge")["reason_detail"] is None
    pending = item(conn, "expense:pending")
    assert (pending["reason_code"], pending["reason_detail"]["credit"]) == ("not_approved", True)
    assert result.by_state["ready"]["amounts"] == {"EUR": "-33.00"}  # -55 + 22
    assert open_exceptions(conn) == {
        ("zero_amount", "time_entry", "zero", Decimal("0"), "EUR"),
        ("zero_amount", "time_entry", "free", Decimal("0"), "EUR"),
        ("zero_amount", "expense", "e0", Decimal("0"), "EUR"),
    }


def test_rates_far_outside_the_persons_rate_card(conn):
    r = Rows(conn)
    for u in ("u1", "u2", "u3"):
        r.person(u)
    r.contract("006RC", "p1", overrides=[{"user_email": "u3@firm.example", "rate": "400"}])
    r.rate_card("u1", "100", D(2026, 1, 1), D(2026, 2, 28))
    r.rate_card("u1", "120", D(2026, 3, 1))
    r.rate_card("u3", "150", D(2026, 1, 1))
    r.time("high", "u1", "p1", D(2026, 3, 2), "2", rate="250")  # > 2.0 x 120
    r.time("low", "u1", "p1", D(2026, 3, 3), "2", rate="45")  # < 0.5 x 100
    r.time("top", "u1", "p1", D(2026, 3, 4), "2", rate="240")  # 2.0 x 120: on the bound
    r.time("floor", "u1", "p1", D(2026, 3, 5), "2", rate="50")  # 0.5 x 100: on the bound
    r.time("card", "u1", "p1", D(2026, 3, 6), "2")  # priced from the card itself
    r.time("nocard", "u2", "p1", D(2026, 3, 6), "2", rate="9999")  # no card: no band
    r.time("override", "u3", "p1", D(2026, 3, 6), "1")  # contracted 400 > 2.0 x 150
    conn.commit()
    recon(conn)
    assert held(conn, "time:high") == ("on_hold", "rate_off_card", Decimal("500"))
    assert held(conn, "time:low") == ("on_hold", "rate_off_card", Decimal("90"))
    assert held(conn, "time:override") == ("on_hold", "rate_off_card", Decimal("400"))
    detail = item(conn, "time:high")["reason_detail"]
    assert (detail["rate_card_low"], detail["rate_card_high"]) == (100, 120)
    assert (detail["rate_ratio_min"], detail["rate_ratio_max"]) == (0.5, 2.0)
    for key in ("top", "floor", "card", "nocard"):
        assert item(conn, f"time:{key}")["state"] == "ready", key
    assert open_exceptions(conn) == {
        ("rate_off_card", "time_entry", "high", Decimal("500"), "EUR"),
        ("rate_off_card", "time_entry", "low", Decimal("90"), "EUR"),
        ("rate_off_card", "time_entry", "override", Decimal("400"), "EUR"),
    }
    owner = conn.execute(
        "SELECT DISTINCT owner FROM ops.exceptions WHERE reason_code = 'rate_off_card'"
    ).fetchone()[0]
    assert owner == "resource_manager"


def test_dates_far_from_the_contract_period_or_in_the_future(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006DT", "p1", starts_on=D(2026, 2, 1), ends_on=D(2026, 3, 20))
    r.contract("006OPEN", "po", ends_on=None)  # open-ended
    r.time("late", "u1", "p1", D(2026, 3, 23), "2", rate="100")  # 3 days after the end
    r.time("later", "u1", "p1", D(2026, 4, 21), "2", rate="100")  # 32 days after the end
    r.time("early", "u1", "p1", D(2025, 12, 31), "1", rate="100")  # 32 days before the start
    r.time("typo", "u1", "po", D(2062, 3, 2), "3", rate="100")  # a mistyped year
    r.time("soon", "u1", "po", D(2026, 5, 2), "1", rate="100")  # as-of + 31 days: tolerated
    r.time("fixed", "u1", "po", D(2026, 3, 2), "1", rate="100")
    r.expense("etypo", "u1", "po", D(2036, 3, 2), "20.00")
    conn.commit()
    recon(conn)
    assert held(conn, "time:late") == ("on_hold", "closed_project", Decimal("200"))
    later = item(conn, "time:later")
    assert (later["reason_code"], later["problems"], later["amount"]) == (
        "implausible_date",
        ["implausible_date", "closed_project"],
        Decimal("200"),
    )
    assert later["reason_detail"]["date_tolerance_days"] == 31
    assert later["reason_detail"]["contract_ends_on"] == "2026-03-20"
    assert held(conn, "time:early") == ("on_hold", "implausible_date", Decimal("100"))
    assert held(conn, "time:typo") == ("on_hold", "implausible_date", Decimal("300"))
    assert held(conn, "expense:etypo") == ("on_hold", "implausible_date", Decimal("20.00"))
    assert item(conn, "time:soon")["state"] == "ready"
    assert item(conn, "time:fixed")["state"] == "ready"
    assert open_exceptions(conn) == {
        ("closed_project", "time_entry", "late", Decimal("200"), "EUR"),
        ("implausible_date", "time_entry", "later", Decimal("200"), "EUR"),
        ("implausible_date", "time_entry", "early", Decimal("100"), "EUR"),
        ("implausible_date", "time_entry", "typo", Decimal("300"), "EUR"),
        ("implausible_date", "expense", "etypo", Decimal("20"), "EUR"),
    }


def test_an_absurd_entry_is_held_with_its_amount_and_consumes_no_cap(conn):
    """Issue 14: 1,000,000,000,000 hours in one entry was accepted with no flag."""
    r = Rows(conn)
    r.person("u1")
    r.contract("006CP", "p1", cap_type="hours", cap_value="10")
    r.time("huge", "u1", "p1", D(2026, 3, 2), "1000000000000", rate="100")
    r.time("next", "u1", "p1", D(2026, 3, 3), "8", rate="100")
    r.time("over", "u1", "p1", D(2026, 3, 4), "4", rate="100")  # 12 > 10
    conn.commit()
    recon(conn)
    assert held(conn, "time:huge") == (
        "on_hold",
        "hours_over_entry_limit",
        Decimal("100000000000000"),
    )
    assert item(conn, "time:huge")["problems"] == [
        "hours_over_entry_limit",
        "hours_over_day_limit",
    ]
    assert held(conn, "time:next") == ("ready", None, Decimal("800"))
    assert held(conn, "time:over")[1] == "over_cap"
    assert ("hours_over_entry_limit", "time_entry", "huge", Decimal("100000000000000"), "EUR") in (
        open_exceptions(conn)
    )


def test_bounds_are_checked_together(conn):
    # min and max moved past each other in one audited change: accepted as a whole
    after = update_settings(
        conn, RunInfo.local("policy"), rate_ratio_min=Decimal(3), rate_ratio_max=Decimal(4)
    )
    assert (after.rate_ratio_min, after.rate_ratio_max) == (3, 4)
    with pytest.raises(psycopg.errors.CheckViolation):
        update_settings(conn, RunInfo.local("policy"), rate_ratio_min=Decimal(5))
    conn.rollback()
