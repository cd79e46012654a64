"""Effective-dated contract rates (issue 15), hand-computed to the minor unit: a change order
effective mid-month prices the work before it at the old version's rate and the work from its
day on at the new one, never re-pricing the earlier entries; a rate override element's own
``effective_from`` splits a person's rate inside one version; which version and rate priced each
item stays in recon.items."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import psycopg
import pytest

from erpsync import money
from erpsync.onboarding.contracts import CONTRACT_MISSING_FIELD, ClientFacts, check, parse
from erpsync.reconcile import run_reconcile
from erpsync.reconcile.rows import Rows
from erpsync.sync.spec import RunInfo
from tests.support.databases import migrated_database
from tests.unit.test_reconcile_golden import reset

D = dt.date
AS_OF = D(2026, 4, 1)


@pytest.fixture(scope="module")
def db(pg_server_url):
    with migrated_database(pg_server_url, "erpsync_test_recon_effective") as url:
        yield url


@pytest.fixture
def conn(db):
    with psycopg.connect(db) as c:
        reset(c)
        yield c


def recon(conn, label="effective"):
    return run_reconcile(conn, RunInfo.local(label), as_of=AS_OF)


def priced(conn) -> dict[str, tuple]:
    """item key -> (contract version, rate, amount, state)"""
    return {
        k: (v, r, a, s)
        for k, v, r, a, s in conn.execute(
            "SELECT item_key, contract_version, rate, amount, state FROM recon.items"
        ).fetchall()
    }


def line_total(conn, keys: list[str], currency: str = "EUR") -> Decimal:
    """What an invoice time line bills for these items: hours summed, priced, rounded once."""
    total = conn.execute(
        "SELECT sum(amount) FROM recon.items WHERE item_key = ANY(%s)", (keys,)
    ).fetchone()[0]
    return money.round_money(Decimal(total), currency)


def _change_order(r: Rows, opp: str, project: str, overrides_v1, overrides_v2, effective):
    r.contract(opp, project, version=1, status="superseded", overrides=overrides_v1)
    r.contract(opp, project, version=2, overrides=overrides_v2, effective_from=effective)


def test_change_order_mid_month_prices_before_at_old_rate_and_after_at_new(conn):
    r = Rows(conn)
    r.person("u1")
    r.person("u2")
    _change_order(
        r,
        "006CO",
        "p1",
        [{"user_email": "u1@firm.example", "rate": "150.00"}],
        [
            {"user_email": "u1@firm.example", "rate": "165.55"},
            # u2: contracted from the change order, with a step inside the version
            {"user_email": "u2@firm.example", "rate": "100.00"},
            {"user_email": "u2@firm.example", "rate": "110.01", "effective_from": "2026-03-25"},
        ],
        D(2026, 3, 16),
    )
    # the PSA stamped the rate in force when each entry was logged
    r.time("1", "u1", "p1", D(2026, 3, 2), "7.5", rate="150")
    r.time("2", "u1", "p1", D(2026, 3, 13), "2.25", rate="150")
    r.time("3", "u1", "p1", D(2026, 3, 15), "1", rate="150")  # the day before the change
    r.time("4", "u1", "p1", D(2026, 3, 16), "0.75", rate="165.55")  # its first day
    r.time("5", "u1", "p1", D(2026, 3, 20), "3.33", rate="165.55")
    r.time("6", "u2", "p1", D(2026, 3, 10), "2", rate="95")  # v1: no contract rate for u2
    r.time("7", "u2", "p1", D(2026, 3, 24), "1.5", rate="100")
    r.time("8", "u2", "p1", D(2026, 3, 25), "0.25", rate="110.01")
    r.time("9", "u2", "p1", D(2026, 3, 31), "0.25", rate="110.01")
    conn.commit()
    result = recon(conn)
    got = priced(conn)
    assert got["time:1"] == (1, Decimal("150.00"), Decimal("1125.0000"), "ready")
    assert got["time:2"][:3] == (1, Decimal("150.00"), Decimal("337.5000"))
    assert got["time:3"][:3] == (1, Decimal("150.00"), Decimal("150.0000"))
    assert got["time:4"][:3] == (2, Decimal("165.55"), Decimal("124.1625"))
    assert got["time:5"][:3] == (2, Decimal("165.55"), Decimal("551.2815"))
    assert got["time:6"][:3] == (1, Decimal("95"), Decimal("190"))
    assert got["time:7"][:3] == (2, Decimal("100.00"), Decimal("150.0000"))
    assert got["time:8"][:3] == (2, Decimal("110.01"), Decimal("27.5025"))
    assert got["time:9"][:3] == (2, Decimal("110.01"), Decimal("27.5025"))
    assert {v[3] for v in got.values()} == {"ready"}  # no rate_differs_from_contract
    # the invoice lines (one per role and rate): 10.75 h x 150.00 = 1612.50; 4.08 h x 165.55 =
    # 675.444 -> 675.44; 0.5 h x 110.01 = 55.005 -> 55.01 (hours summed, rounded once)
    assert line_total(conn, ["time:1", "time:2", "time:3"]) == Decimal("1612.50")
    assert line_total(conn, ["time:4", "time:5"]) == Decimal("675.44")
    assert line_total(conn, ["time:8", "time:9"]) == Decimal("55.01")
    # 1612.50 + 675.444 + 190 + 150 + 55.005 = 2682.949 -> 2682.95
    assert result.by_state["ready"]["amounts"] == {"EUR": "2682.95"}


def test_a_change_order_never_reprices_work_dated_before_it(conn):
    r = Rows(conn)
    r.person("u1")
    r.contract("006RP", "p1", overrides=[{"user_email": "u1@firm.example", "rate": "150"}])
    r.time("1", "u1", "p1", D(2026, 3, 2), "8", rate="150")
    r.time("2", "u1", "p1", D(2026, 3, 9), "4.5", rate="150")
    conn.commit()
    recon(conn, "before")
    before = priced(conn)
    assert before["time:1"] == (1, Decimal("150"), Decimal("1200"), "ready")
    # the change order arrives (version 2 effective the 16th; version 1 superseded)
    conn.execute("UPDATE core.contracts SET status = 'superseded' WHERE opportunity_id = '006RP'")
    r.contract(
        "006RP",
        "p1",
        version=2,
        overrides=[{"user_email": "u1@firm.example", "rate": "180"}],
        effective_from=D(2026, 3, 16),
    )
    r.time("3", "u1", "p1", D(2026, 3, 17), "2", rate="180")
    conn.commit()
    recon(conn, "after")
    after = priced(conn)
    assert after["time:1"] == before["time:1"] and after["time:2"] == before["time:2"]
    assert after["time:3"] == (2, Decimal("180"), Decimal("360"), "ready")
    # the rerun rewrote nothing for the earlier work (same row version as the first run)
    untouched = conn.execute(
        "SELECT count(*) FROM recon.items WHERE item_key IN ('time:1', 'time:2')"
        " AND first_run_id = last_run_id"
    ).fetchone()[0]
    assert untouched == 2


def test_versions_in_effect_invalid_and_undated_versions(conn):
    r = Rows(conn)
    r.person("u1")
    ov = lambda rate: [{"user_email": "u1@firm.example", "rate": rate}]  # noqa: E731
    # p1: v2 was invalid when v3 superseded it: it never prices anything
    r.contract("006A", "p1", version=1, status="superseded", overrides=ov("100"))
    r.contract(
        "006A",
        "p1",
        version=2,
        status="superseded",
        overrides=ov("500"),
        effective_from=D(2026, 3, 5),
        problems=[{"reason_code": CONTRACT_MISSING_FIELD}],
    )
    r.contract("006A", "p1", version=3, overrides=ov("120"), effective_from=D(2026, 3, 20))
    # p2: a version recorded before effective dates existed applies from the beginning (as
    # before); a later change order dated before an earlier one takes over from its own day
    r.contract("006B", "p2", version=1, status="superseded", overrides=ov("100"))
    r.contract("006B", "p2", version=2, status="superseded", overrides=ov("200"))
    r.contract(
        "006B",
        "p2",
        version=3,
        status="superseded",
        overrides=ov("300"),
        effective_from=D(2026, 3, 20),
    )
    r.contract("006B", "p2", version=4, overrides=ov("400"), effective_from=D(2026, 3, 10))
    for n, (project, day, rate) in enumerate(
        [
            ("p1", D(2026, 3, 6), "100"),
            ("p1", D(2026, 3, 20), "120"),
            ("p2", D(2026, 3, 2), "200"),
            ("p2", D(2026, 3, 10), "400"),
            ("p2", D(2026, 3, 25), "400"),
        ],
        1,
    ):
        r.time(str(n), "u1", project, day, "1", rate=rate)
    conn.commit()
    recon(conn)
    got = priced(conn)
    assert [(got[f"time:{n}"][0], got[f"time:{n}"][1]) for n in range(1, 6)] == [
        (1, Decimal("100")),
        (3, Decimal("120")),
        (2, Decimal("200")),
        (4, Decimal("400")),
        (4, Decimal("400")),
    ]
    assert {v[3] for v in got.values()} == {"ready"}
    # the view lists the days each version is in effect (history)
    assert conn.execute(
        "SELECT opportunity_id, version, applies_from, applies_to"
        " FROM core.contract_version_periods ORDER BY 1, 2"
    ).fetchall() == [
        ("006A", 1, None, D(2026, 3, 19)),
        ("006A", 3, D(2026, 3, 20), None),
        ("006B", 2, None, D(2026, 3, 9)),
        ("006B", 4, D(2026, 3, 10), None),
    ]


# ------------------------------------------------------------------ the CRM record


def _record(**fields):
    base = {
        "Id": "006X",
        "AccountId": "001X",
        "Name": "X",
        "Billing_Model__c": "Time and Materials",
        "CurrencyIsoCode": "EUR",
        "Amount": 1000,
        "Contract_Start__c": "2026-01-01",
        "Contract_Version__c": 2,
    }
    return {**base, **fields}


CLIENT = ClientFacts(True, False, True, True, None, "9", "X", "EUR")


def test_parse_reads_the_effective_dates_and_a_change_order_needs_one():
    c = parse(
        _record(
            Change_Effective_Date__c="2026-03-16",
            Rate_Overrides__c=json.dumps(
                [
                    {"user_email": "A@x.example", "rate": "150"},
                    {"user_email": "a@x.example", "rate": "160", "effective_from": "2026-04-01"},
                ]
            ),
        )
    )
    assert c.valid and c.effective_from == D(2026, 3, 16)
    assert c.rate_overrides == [
        {"user_email": "a@x.example", "role": None, "rate": "150"},
        {"user_email": "a@x.example", "role": None, "rate": "160", "effective_from": "2026-04-01"},
    ]
    people = {"a@x.example": "1"}
    assert check(c, CLIENT, people, change_order=True) == []
    undated = parse(_record())
    problems = check(undated, CLIENT, people, change_order=True)
    assert [(p.reason_code, p.field) for p in problems] == [
        (CONTRACT_MISSING_FIELD, "Change_Effective_Date__c")
    ]
    assert check(undated, CLIENT, people) == []  # a first version needs none
    bad = parse(
        _record(
            Change_Effective_Date__c="16/03/2026",
            Rate_Overrides__c=json.dumps(
                [
                    {"user_email": "a@x.example", "rate": "1", "effective_from": "soon"},
                    {"user_email": "b@x.example", "rate": "1"},
                    {"user_email": "b@x.example", "rate": "2"},
                ]
            ),
        )
    )
    assert sorted(p.field for p in bad.problems) == [
        "Change_Effective_Date__c",
        "Rate_Overrides__c",
        "Rate_Overrides__c",
    ]
