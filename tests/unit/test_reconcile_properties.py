"""Property-based tests (hypothesis) of the reconciliation's invariants on random firms built
directly in one migrated warehouse (truncated between examples):

* every live time entry and expense is one item, in exactly one state (on hold iff it has a
  reason), deleted ones are not items;
* ready + on hold + non-billable + billed = all, in hours and in money, and the same for the
  approved subset; the money equals an independent pricing of the entries (contracted rate,
  else the PSA's rate);
* a rerun changes nothing (no row written);
* a source change merged into the existing items equals a reconciliation from scratch.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erpsync.reconcile import run_reconcile
from erpsync.reconcile.rows import Rows
from erpsync.sync.spec import RunInfo
from tests.support.databases import migrated_database
from tests.unit.test_reconcile_golden import reset

PEOPLE = ("u1", "u2", "u3")
SNAPSHOT = (
    "SELECT item_key, state, reason_code, problems, amount, hours, rate, currency, approved,"
    " reason_detail FROM recon.items ORDER BY 1"
)
PROJECTS = ("p1", "p2", "p3", "p404")  # p1 T&M (override for u1, hours cap), p2 fixed fee,
# p3 T&M in EUR, p404 has no contract

entry = st.fixed_dictionaries(
    {
        "person": st.sampled_from(PEOPLE),
        "project": st.sampled_from(PROJECTS),
        "day": st.integers(0, 60).map(lambda d: dt.date(2026, 2, 1) + dt.timedelta(days=d)),
        "hours": st.sampled_from(["0.25", "0.5", "1", "1.5", "2.75", "4", "8"]),
        "rate": st.sampled_from([None, "95", "100", "133.33"]),
        "billable": st.booleans(),
        "status": st.sampled_from(["approved", "approved", "submitted", "unsubmitted"]),
        "billed": st.booleans(),
        "notes": st.sampled_from(["a", "b", "c"]),
        "deleted": st.integers(0, 9).map(lambda n: n == 0),
    }
)
expense = st.fixed_dictionaries(
    {
        "project": st.sampled_from(PROJECTS),
        "total": st.sampled_from(["10", "74.99", "75.01", "250", "600.50"]),
        "category": st.sampled_from(["Meals", "Hotel", "Airfare"]),
        "receipt": st.booleans(),
        "billable": st.booleans(),
        "status": st.sampled_from(["approved", "submitted"]),
        "billed": st.booleans(),
    }
)


@pytest.fixture(scope="module")
def db(pg_server_url):
    with migrated_database(pg_server_url, "erpsync_test_recon_props") as url:
        yield url


def build(conn, entries, expenses) -> dict[str, Decimal]:
    """The firm; returns the independent price of each live billable T&M time entry."""
    r = Rows(conn)
    for u in PEOPLE:
        r.person(u)
    r.contract(
        "006A",
        "p1",
        cap_type="hours",
        cap_value="12",
        overrides=[{"user_email": "u1@firm.example", "rate": "150"}],
    )
    r.contract("006B", "p2", model="fixed_fee")
    r.contract("006C", "p3")
    priced: dict[str, Decimal] = {}
    for i, e in enumerate(entries):
        key = f"t{i}"
        r.time(
            key,
            e["person"],
            e["project"],
            e["day"],
            e["hours"],
            rate=e["rate"],
            billable=e["billable"],
            status=e["status"],
            billed=e["billed"],
            notes=e["notes"],
        )
        if e["deleted"]:
            conn.execute(
                "UPDATE core.time_entries SET deleted_at = now() WHERE psa_id = %s", (key,)
            )
            continue
        if e["billable"] and e["project"] in ("p1", "p3"):
            rate = "150" if (e["project"] == "p1" and e["person"] == "u1") else e["rate"]
            if rate is not None:
                priced[key] = Decimal(e["hours"]) * Decimal(rate)
    for i, x in enumerate(expenses):
        r.expense(
            f"x{i}",
            "u2",
            x["project"],
            dt.date(2026, 3, 1),
            x["total"],
            category=x["category"],
            receipt=x["receipt"],
            billable=x["billable"],
            status=x["status"],
            billed=x["billed"],
        )
    conn.commit()
    return priced


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=st.lists(entry, max_size=25), expenses=st.lists(expense, max_size=6))
def test_every_item_once_and_the_states_add_up(db, entries, expenses):
    with psycopg.connect(db) as conn:
        reset(conn)
        priced = build(conn, entries, expenses)
        result = run_reconcile(conn, RunInfo.local("prop"), as_of=dt.date(2026, 4, 15))

        live = conn.execute(
            "SELECT 'time:' || psa_id, hours, approval_status = 'approved' FROM core.time_entries"
            " WHERE deleted_at IS NULL UNION ALL SELECT 'expense:' || psa_id, NULL,"
            " approval_status = 'approved' FROM core.expenses WHERE deleted_at IS NULL"
        ).fetchall()
        items = conn.execute(
            "SELECT item_key, hours, approved, state, reason_code, amount, item_type,"
            " project_psa_id FROM recon.items"
        ).fetchall()
        assert sorted(k for k, *_ in items) == sorted(k for k, *_ in live)
        for _key, _h, _a, state, reason, _amount, _t, _p in items:
            assert state in ("ready", "billed", "non_billable", "on_hold")
            assert (state == "on_hold") == (reason is not None)

        def total(rows, col, approved_only=False):
            return sum(
                (Decimal(r[col] or 0) for r in rows if r[2] or not approved_only), Decimal(0)
            )

        for approved_only in (False, True):
            assert total(items, 1, approved_only) == total(live, 1, approved_only)
            per_state = sum(
                (
                    total([i for i in items if i[3] == s], 1, approved_only)
                    for s in ("ready", "billed", "non_billable", "on_hold")
                ),
                Decimal(0),
            )
            assert per_state == total(live, 1, approved_only)
            money_states = sum(
                (
                    total([i for i in items if i[3] == s and i[6] == "time"], 5, approved_only)
                    for s in ("ready", "billed", "non_billable", "on_hold")
                ),
                Decimal(0),
            )
            approved_keys = {k for k, _h, a in live if a or not approved_only}
            want = sum((v for k, v in priced.items() if f"time:{k}" in approved_keys), Decimal(0))
            # entries on a project without contract are priced at the PSA's rate (the amount
            # at stake), outside the model above
            unknown = total(
                [i for i in items if i[7] == "p404" and i[6] == "time"], 5, approved_only
            )
            assert money_states - unknown == want
        assert result.items == len(items)

        # the hours cap: billed + ready + held-for-other-reasons hours within the cap never
        # exceed it; only over_cap entries go beyond
        within = conn.execute(
            "SELECT coalesce(sum(hours), 0) FROM recon.items WHERE project_psa_id = 'p1'"
            " AND item_type = 'time' AND state = 'ready'"
        ).fetchone()[0]
        assert within <= 12

        before = conn.execute("SELECT item_key, xmin::text FROM recon.items ORDER BY 1").fetchall()
        # a rerun with no input change is skipped (fingerprint); one forced to recompute (an
        # unrelated input touched) compares every item and writes none
        again = run_reconcile(conn, RunInfo.local("prop-again"), as_of=dt.date(2026, 4, 15))
        assert again.skipped
        conn.execute("UPDATE recon.settings SET updated_at = now()")
        conn.commit()
        forced = run_reconcile(conn, RunInfo.local("prop-forced"), as_of=dt.date(2026, 4, 15))
        assert not forced.skipped
        for r in (again, forced):
            assert (r.inserted, r.updated, r.deleted, r.exceptions_raised) == (0, 0, 0, 0)
            assert r.by_state == result.by_state
        assert forced.exceptions_open == result.exceptions_open
        assert (
            conn.execute("SELECT item_key, xmin::text FROM recon.items ORDER BY 1").fetchall()
            == before
        )

        # a change at the source, merged into the existing items, gives exactly what a fresh
        # reconciliation from scratch gives
        conn.execute(
            "UPDATE core.time_entries SET approval_status = 'approved', hours = hours + 1"
            " WHERE psa_id IN (SELECT psa_id FROM core.time_entries ORDER BY psa_id LIMIT 2)"
        )
        conn.execute(
            "UPDATE core.time_entries SET deleted_at = now()"
            " WHERE psa_id = (SELECT max(psa_id) FROM core.time_entries)"
        )
        conn.commit()
        run_reconcile(conn, RunInfo.local("prop-merge"), as_of=dt.date(2026, 4, 15))
        merged = conn.execute(SNAPSHOT).fetchall()
        conn.execute("DELETE FROM recon.items")
        conn.commit()
        run_reconcile(conn, RunInfo.local("prop-fresh"), as_of=dt.date(2026, 4, 15))
        assert conn.execute(SNAPSHOT).fetchall() == merged
