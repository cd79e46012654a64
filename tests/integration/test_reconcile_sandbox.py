"""The reconciliation on the small sandbox firm, synced into a fresh warehouse with the real
syncs (master data and rates, project setup, time & expense) over loopback HTTP:

* it finds exactly the generator manifest's problems of the kinds it covers - no more, no
  fewer - each as one open exception at the manifest's granularity (time entry, expense, PSA
  user assignment, PSA project) with an owner and the amount at stake;
* every live time entry and expense is classified exactly once; a rerun writes nothing;
* a problem fixed at the source (a receipt attached in the PSA) and resynced closes its
  exception and releases the expense; the rest stays as it was.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import httpx
import psycopg
import pytest

from erpsync.onboarding import setup
from erpsync.reconcile import milestones as _milestones
from erpsync.reconcile import run_reconcile
from erpsync.reconcile.milestones import refresh_milestones
from erpsync.runtime import database
from erpsync.sync.spec import RunInfo
from tests.conftest import make_database
from tests.integration import writeback_harness as h
from tests.integration.test_sync_engine import connection_env

#: manifest kind -> (recon reason code, ops.exceptions entity_type)
KINDS = {
    "missing_rate": ("missing_rate", "time_entry"),
    "time_on_closed_project": ("closed_project", "time_entry"),
    "duplicate_time_entry": ("duplicate_entry", "time_entry"),
    "over_cap_hours": ("over_cap", "project"),
    "expense_missing_receipt": ("missing_receipt", "expense"),
    "expense_over_policy": ("expense_over_policy", "expense"),
    "rate_differs_from_contract": ("rate_differs_from_contract", "user_assignment"),
    "currency_differs_from_contract": ("currency_differs_from_contract", "project"),
}
AS_OF = dt.date(2026, 11, 2)  # the sandbox business clock


def _sync_time(url: str, label: str) -> None:
    h.sync_time_expense(url, RunInfo.local(label))


@pytest.fixture(scope="module")
def firm(pg_server_url, tmp_path_factory):
    from erpsync.warehouse import migrate
    from erpsync_sandbox.serve import start_sandbox

    url = make_database(pg_server_url, "erpsync_test_recon")
    migrate.migrate(url)
    sandbox = start_sandbox(tmp_path_factory.mktemp("recon") / "sandbox", size="small", seed=0)
    mp = pytest.MonkeyPatch()
    try:
        for key, value in connection_env(sandbox, url).items():
            mp.setenv(key, value)
        httpx.put(
            sandbox.urls["psa"] + "/__admin/psa/rate_limit", json={"spec": "off"}, timeout=10
        ).raise_for_status()
        mp.setenv("ERPSYNC_PSA_RATE_LIMIT", "off")  # and the client's (connectors/throttle.py)
        h.sync_all(url, RunInfo.local("master"))
        h.relay_until_done(RunInfo.local("relay"), systems=("psa",))  # clients into the PSA
        with psycopg.connect(url, autocommit=True) as conn:
            setup.run_project_setup(conn, setup.Systems(), run=RunInfo.local("setup"))
        _sync_time(url, "time")
        yield sandbox, url
    finally:
        mp.undo()
        sandbox.stop()
        database.drop_database(url)


def q(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def reconcile(url: str, label: str):
    with psycopg.connect(url) as conn:
        return run_reconcile(conn, RunInfo.local(label), as_of=AS_OF)


def expected(sandbox) -> set[tuple[str, str, str]]:
    manifest = sandbox.ctx.manifest()
    return {(*KINDS[p["kind"]], str(p["id"])) for p in manifest["problems"] if p["kind"] in KINDS}


def open_problems(url: str) -> set[tuple[str, str, str]]:
    return set(
        q(
            url,
            "SELECT reason_code, entity_type, entity_key FROM ops.exceptions "
            "WHERE status = 'open' AND reason_code IN (SELECT code FROM recon.reasons)",
        )
    )


def test_finds_exactly_the_manifest_problems(firm):
    sandbox, url = firm
    result = reconcile(url, "recon-1")
    want = expected(sandbox)
    assert {k for k, _e in KINDS.values()} == {r for r, _e, _k in want}  # every kind planted
    got = open_problems(url)
    assert got - want == set(), "problems the generator did not plant"
    assert want - got == set(), "planted problems not found"
    assert result.exceptions_raised == len(want)

    # every live entry exactly once; held entries carry the reason of their exception
    live = q(
        url,
        "SELECT (SELECT count(*) FROM core.time_entries WHERE deleted_at IS NULL),"
        " (SELECT count(*) FROM core.expenses WHERE deleted_at IS NULL)",
    )[0]
    items = dict(q(url, "SELECT item_type, count(*) FROM recon.items GROUP BY 1"))
    assert (items["time"], items["expense"]) == live
    for reason, entity_type, key in want:
        if entity_type in ("time_entry", "expense"):
            prefix = "time" if entity_type == "time_entry" else "expense"
            ((state, code),) = q(
                url,
                "SELECT state, reason_code FROM recon.items WHERE item_key = %s",
                (f"{prefix}:{key}",),
            )
            assert (state, code) == ("on_hold", reason)
    # owners and amounts at stake on every open exception (a missing rate has no amount)
    for reason, owner, amount in q(
        url,
        "SELECT reason_code, owner, amount_at_stake FROM ops.exceptions WHERE status = 'open'"
        " AND reason_code IN (SELECT code FROM recon.reasons)",
    ):
        assert owner
        assert (amount is None) == (reason == "missing_rate"), reason
    # the months the sandbox invoiced are billed; September's work is not ready to bill
    billed = q(
        url,
        "SELECT count(*) FILTER (WHERE state <> 'billed') FROM recon.items i"
        " JOIN core.time_entries t ON i.item_key = 'time:' || t.psa_id WHERE t.is_billed",
    )
    assert billed == [(0,)]
    states = Counter(dict(q(url, "SELECT state, count(*) FROM recon.items GROUP BY 1")))
    assert states["ready"] > 0 and states["billed"] > 0 and states["non_billable"] > 0


def test_rerun_changes_nothing(firm):
    _sandbox, url = firm
    reconcile(url, "recon-a")
    before = q(url, "SELECT item_key, xmin::text, updated_at FROM recon.items ORDER BY 1")
    exc_before = q(url, "SELECT exception_id, status FROM ops.exceptions ORDER BY 1")
    skipped = reconcile(url, "recon-b")  # no input changed: nothing recomputed
    with psycopg.connect(url) as conn:  # an unrelated input moves
        conn.execute("UPDATE recon.settings SET updated_at = now()")
    forced = reconcile(url, "recon-c")  # every item recomputed and compared
    assert (skipped.skipped, forced.skipped) == (True, False)
    for result in (skipped, forced):
        assert (result.inserted, result.updated, result.deleted) == (0, 0, 0)
        assert result.exceptions_raised == 0 and result.exceptions_resolved == 0
    assert forced.by_state == skipped.by_state
    assert q(url, "SELECT item_key, xmin::text, updated_at FROM recon.items ORDER BY 1") == before
    assert q(url, "SELECT exception_id, status FROM ops.exceptions ORDER BY 1") == exc_before


def test_a_problem_fixed_at_the_source_closes_its_exception(firm):
    sandbox, url = firm
    reconcile(url, "recon-before-fix")
    problems = sandbox.ctx.manifest()["problems"]
    dup = sorted(p["id"] for p in problems if p["kind"] == "duplicate_time_entry")[0]
    no_receipt = sorted(p["id"] for p in problems if p["kind"] == "expense_missing_receipt")[0]
    store = sandbox.ctx.stores["psa"]
    assert store.delete("time_entries", int(dup))  # the person deletes the duplicate
    body = store.get("expenses", int(no_receipt))  # and attaches the taxi receipt
    body["receipt"] = {
        "url": f"https://sandbox.invalid/receipts/{no_receipt}.pdf",
        "file_name": f"receipt-{no_receipt}.pdf",
        "file_size": 20480,
        "content_type": "application/pdf",
    }
    store.put("expenses", int(no_receipt), body)
    _sync_time(url, "time-after-fix")
    result = reconcile(url, "recon-after-fix")

    # the duplicate is gone from the PSA: its item is removed and its exception resolved
    assert result.deleted == 1
    assert q(url, "SELECT count(*) FROM recon.items WHERE item_key = %s", (f"time:{dup}",)) == [
        (0,)
    ]
    resolved = set(
        q(
            url,
            "SELECT reason_code, entity_key FROM ops.exceptions WHERE status = 'resolved'"
            " AND resolved_by IS NOT NULL",
        )
    )
    assert resolved == {("duplicate_entry", dup), ("missing_receipt", no_receipt)}
    # with its receipt the taxi ride (180 EUR and up) is no longer held for the receipt but
    # for the category limit (Taxi & Transit 120 EUR), which the missing receipt had masked
    assert q(
        url,
        "SELECT state, reason_code FROM recon.items WHERE item_key = %s",
        (f"expense:{no_receipt}",),
    ) == [("on_hold", "expense_over_policy")]
    assert open_problems(url) == (
        expected(sandbox)
        - {("duplicate_entry", "time_entry", dup)}
        - {("missing_receipt", "expense", no_receipt)}
    ) | {("expense_over_policy", "expense", no_receipt)}
    # audited: each resolution, and each reconciliation run
    assert q(
        url,
        "SELECT detail ->> 'entity_key' FROM audit.audit_log WHERE action = 'exception.resolved'"
        " ORDER BY 1",
    ) == sorted([(dup,), (no_receipt,)])
    assert q(
        url,
        "SELECT count(*) FROM audit.audit_log WHERE action = 'reconcile.run'"
        " AND entity_id LIKE 'recon-after-fix%%'",
    ) == [(1,)]


def test_milestone_accepted_in_the_crm_becomes_ready(firm):
    """The client accepts a fixed-fee milestone in the CRM (Contract_Milestone__c Status__c
    Accepted, Accepted_Date__c): the incremental CRM pull brings it into the warehouse and the
    reconciliation makes it ready; a milestone deleted in the CRM is reopened."""
    sandbox, url = firm
    reconcile(url, "recon-before-acceptance")
    rows = q(
        url,
        """SELECT m.opportunity_id, m.version, m.seq, m.name, m.crm_milestone_id, m.amount,
                  m.currency
             FROM core.contract_milestones m
             JOIN core.contracts c USING (opportunity_id, version)
            WHERE c.status = 'complete' ORDER BY 1, 3""",
    )
    assert rows, "project setup built no fixed-fee contract"
    assert all(r[4] for r in rows), "every set-up milestone knows its CRM record"
    opp, version, seq, name, crm_id, amount, currency = rows[0]
    key = f"milestone:{opp}:{version}:{seq}"
    assert q(url, "SELECT state, reason_code FROM recon.items WHERE item_key = %s", (key,)) == [
        ("on_hold", "not_yet_due")
    ]
    first = pull_crm_milestones(RunInfo.local("milestones-full"), conninfo=url)
    assert first.read == len(sandbox.ctx.stores["crm"].ids("Contract_Milestone__c"))
    store = sandbox.ctx.stores["crm"]
    row = store.get_row("Contract_Milestone__c", crm_id)
    body = {**row.data(), "Status__c": "Accepted", "Accepted_Date__c": "2026-11-02"}
    store.put("Contract_Milestone__c", crm_id, body, parent_id=row.parent_id)  # accepted

    pulled = pull_crm_milestones(RunInfo.local("milestones"), conninfo=url)
    assert pulled.mode == "incremental" and 1 <= pulled.read < first.read
    with psycopg.connect(url) as conn:
        stats = refresh_milestones(conn, RunInfo.local("milestones"))
        again = refresh_milestones(conn, RunInfo.local("milestones-2"))
    assert stats["accepted"] == 1 and stats["matched"] == len(rows)
    assert again["updated"] == 0  # nothing changed: nothing written
    assert q(
        url,
        "SELECT status, accepted_at, crm_milestone_id FROM core.contract_milestones"
        " WHERE opportunity_id = %s AND version = %s AND seq = %s",
        (opp, version, seq),
    ) == [("accepted", dt.datetime(2026, 11, 2, tzinfo=dt.UTC), crm_id)]
    result = reconcile(url, "recon-after-acceptance")
    assert q(url, "SELECT state, amount FROM recon.items WHERE item_key = %s", (key,)) == [
        ("ready", amount)
    ]
    assert result.by_state["ready"]["amounts"][currency.strip()]
    assert q(
        url,
        "SELECT count(*) FROM audit.audit_log WHERE action = 'milestone.accepted'"
        " AND entity_id = %s",
        (f"{opp}:{version}:{seq}",),
    ) == [(1,)]

    # deleted in the CRM (recycle bin): the pull marks it deleted, the refresh reopens it
    store.delete("Contract_Milestone__c", crm_id, soft=True, set_fields={"IsDeleted": True})
    pull_crm_milestones(RunInfo.local("milestones-3"), conninfo=url)
    assert q(
        url,
        "SELECT deleted_at IS NOT NULL FROM core.crm_milestones WHERE crm_milestone_id = %s",
        (crm_id,),
    ) == [(True,)]
    with psycopg.connect(url) as conn:
        reopened = refresh_milestones(conn, RunInfo.local("milestones-4"))
    assert reopened["reopened"] == 1
    assert q(
        url,
        "SELECT status FROM core.contract_milestones"
        " WHERE opportunity_id = %s AND version = %s AND seq = %s",
        (opp, version, seq),
    ) == [("open",)]


def _items(url: str) -> list[tuple]:
    from erpsync.reconcile import sql

    cols = ", ".join(sql.DATA_COLUMNS)
    return q(url, f"SELECT item_key, {cols} FROM recon.items ORDER BY item_key")  # noqa: S608


def _from_scratch(url: str, label: str, workers: int):
    """The first reconciliation again: recon.items emptied, every item classified anew."""
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE recon.items")
    with psycopg.connect(url) as conn:
        return run_reconcile(conn, RunInfo.local(label), as_of=AS_OF, workers=workers)


def test_parallel_workers_give_the_serial_result(firm):
    """Two workers (one shard each, own connections, the run's snapshot) classify exactly as one
    connection does: the first reconciliation (each shard's partition built and swapped in), a
    recompute with nothing changed, and an item that moves to the other shard (its entry moved
    to a project whose contract is in the other shard) - row for row, every computed column."""
    _sandbox, url = firm
    with psycopg.connect(url) as conn:  # what a failed parallel run leaves behind
        conn.execute("CREATE UNLOGGED TABLE recon_work.r0123456789ab_0 (x int)")
    serial = _from_scratch(url, "recon-serial", workers=1)
    assert q(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'recon_work'") == [(0,)]
    expected_rows = _items(url)
    assert {s for (s,) in q(url, "SELECT DISTINCT shard FROM recon.items")} == {0, 1}
    parallel = _from_scratch(url, "recon-parallel", workers=2)
    assert parallel.inserted == serial.inserted == len(expected_rows)
    assert _items(url) == expected_rows
    assert parallel.by_state == serial.by_state
    # each shard's rows are in its own partition, and item_key is unique across them
    assert q(url, "SELECT count(*), count(DISTINCT item_key) FROM recon.items") == [
        (len(expected_rows), len(expected_rows))
    ]
    assert q(url, "SELECT count(*) FROM recon.items_0 WHERE shard <> 0") == [(0,)]
    assert q(url, "SELECT count(*) FROM recon.items_1 WHERE shard <> 1") == [(0,)]

    with psycopg.connect(url) as conn:  # an unrelated input moves: a full recompute
        conn.execute("UPDATE recon.settings SET updated_at = now()")
    with psycopg.connect(url) as conn:
        again = run_reconcile(conn, RunInfo.local("recon-parallel-2"), as_of=AS_OF, workers=2)
    assert (again.skipped, again.inserted, again.updated, again.deleted) == (False, 0, 0, 0)
    assert _items(url) == expected_rows

    # a T&M entry moves to a project whose contract is in the other shard
    entry, project, code, shard = q(
        url,
        """SELECT i.source_id, p.project_psa_id, p.project_code, p.shard
             FROM recon.items i
             JOIN (SELECT DISTINCT ON (shard) shard, project_psa_id, c.project_code
                     FROM recon.items j
                     JOIN core.contracts c ON c.opportunity_id = j.opportunity_id
                                          AND c.version = j.contract_version
                    WHERE j.item_type = 'time' AND c.billing_model = 'time_and_materials'
                    ORDER BY shard, project_psa_id) p ON p.shard <> i.shard
            WHERE i.item_type = 'time' AND i.state = 'ready'
            ORDER BY i.item_key LIMIT 1""",
    )[0]
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE core.time_entries SET project_psa_id = %s, project_code = %s WHERE psa_id = %s",
            (project, code, entry),
        )
    with psycopg.connect(url) as conn:
        moved = run_reconcile(conn, RunInfo.local("recon-parallel-3"), as_of=AS_OF, workers=2)
    assert moved.updated >= 1 and moved.inserted == 0 and moved.deleted == 0
    assert q(
        url, "SELECT shard, project_psa_id FROM recon.items WHERE item_key = %s", (f"time:{entry}",)
    ) == [(shard, project)]
    after_move = _items(url)
    # the workers' summary of what the run left (and its fingerprint) is what is there: the
    # next run finds nothing changed
    with psycopg.connect(url) as conn:
        rerun = run_reconcile(conn, RunInfo.local("recon-parallel-4"), as_of=AS_OF, workers=2)
    assert rerun.skipped and rerun.by_state == moved.by_state
    _from_scratch(url, "recon-serial-after-move", workers=1)
    assert _items(url) == after_move
    # every worker table was swapped in or dropped
    assert q(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'recon_work'") == [(0,)]


def pull_crm_milestones(run, *, conninfo):
    """The milestone pull as the reconcile task makes it: its own connection and CRM client."""
    from erpsync.connectors.salesforce import SalesforceClient

    client = SalesforceClient()
    try:
        with psycopg.connect(conninfo) as conn:
            return _milestones.pull_crm_milestones(conn, client, run=run)
    finally:
        client.close()
