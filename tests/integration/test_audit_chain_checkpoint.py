"""The audit chain's verified checkpoint against a real PostgreSQL: rows after the checkpoint
are verified in bounded batches and the checkpoint moves; new rows show as pending; a row
changed or removed behind the triggers' back (a superuser disabling them) is reported as where
the chain broke, with the reason; so is tampering with the last verified row."""

from __future__ import annotations

import psycopg
import pytest

from erpsync import audit
from erpsync.console import audit_trail


def write(url: str, n: int, start: int = 0) -> list[int]:
    with psycopg.connect(url) as conn:
        return [
            audit.record(
                conn,
                actor="alice",
                action="exception.waived",
                entity_type="exception",
                entity_id=str(start + i),
                before={"status": "open"},
                after={"status": "waived", "reason": f"r{i}"},
                source=audit.Source("erpsync_reconcile", "run-1", "classify"),
            )
            for i in range(n)
        ]


def status(url: str) -> audit_trail.ChainStatus:
    with psycopg.connect(url) as conn:
        return audit_trail.chain_status(conn)


def verify(url: str, **kwargs) -> audit_trail.ChainStatus:
    with psycopg.connect(url) as conn:
        return audit_trail.verify_pending(conn, **kwargs)


def tamper(url: str, statement: str, params=()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit.audit_log DISABLE TRIGGER audit_log_no_update_delete")
        try:
            conn.execute(statement, params)
        finally:
            conn.execute("ALTER TABLE audit.audit_log ENABLE TRIGGER audit_log_no_update_delete")


def test_rows_are_verified_in_bounded_batches_and_new_rows_are_pending(warehouse_db):
    ids = write(warehouse_db, 30)
    first = status(warehouse_db)
    assert (first.verified_audit_id, first.pending, first.broken) == (0, 30, False)
    assert first.summary() == "not verified yet, 30 rows pending"

    done = verify(warehouse_db, batch=7)
    assert (done.verified_audit_id, done.pending, done.rows_verified) == (ids[-1], 0, 30)
    assert done.verified_at is not None
    assert done.summary().startswith(f"verified up to #{ids[-1]} at ")
    assert done.summary().endswith(", 0 rows pending")

    more = write(warehouse_db, 5, start=100)
    assert status(warehouse_db).pending == 5
    # bounded: at most max_rows per call, the rest stays pending
    partial = verify(warehouse_db, batch=2, max_rows=3)
    assert (partial.verified_audit_id, partial.pending) == (more[2], 2)
    final = verify(warehouse_db)
    assert (final.verified_audit_id, final.pending, final.rows_verified) == (more[-1], 0, 35)
    # the cheap status agrees with the full scan
    with psycopg.connect(warehouse_db) as conn:
        assert conn.execute("SELECT * FROM audit.verify_chain()").fetchall() == []


def test_a_row_changed_behind_the_triggers_back_breaks_the_chain(warehouse_db):
    ids = write(warehouse_db, 10)
    verify(warehouse_db)
    later = write(warehouse_db, 10, start=50)
    tamper(
        warehouse_db,
        "UPDATE audit.audit_log SET actor = 'mallory' WHERE audit_id = %s",
        (later[4],),
    )
    broken = verify(warehouse_db, batch=3)
    assert broken.broken
    assert broken.broken_audit_id == later[4]
    assert broken.broken_reason == "row content does not match its hash"
    assert broken.summary() == f"BROKEN at #{later[4]}: row content does not match its hash"
    # the checkpoint stopped before the broken row and stays broken
    assert ids[-1] <= broken.verified_audit_id < later[4]
    assert verify(warehouse_db).broken_audit_id == later[4]
    assert status(warehouse_db).broken_audit_id == later[4]


def test_a_removed_row_breaks_the_link_of_the_next(warehouse_db):
    ids = write(warehouse_db, 8)
    tamper(warehouse_db, "DELETE FROM audit.audit_log WHERE audit_id = %s", (ids[3],))
    broken = verify(warehouse_db)
    assert broken.broken_audit_id == ids[4]
    assert broken.broken_reason == "previous hash does not match the preceding row"


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        (
            "UPDATE audit.audit_log SET detail = '{\"x\": 1}' WHERE audit_id = %s",
            "the last verified row changed after it was verified",
        ),
        ("DELETE FROM audit.audit_log WHERE audit_id = %s", "the last verified row is gone"),
    ],
)
def test_tampering_with_the_verified_row_is_seen(warehouse_db, statement, reason):
    ids = write(warehouse_db, 4)
    assert verify(warehouse_db).verified_audit_id == ids[-1]
    tamper(warehouse_db, statement, (ids[-1],))
    broken = verify(warehouse_db)
    assert (broken.broken_audit_id, broken.broken_reason) == (ids[-1], reason)


def test_search_filters_pages_and_diff(warehouse_db):
    write(warehouse_db, 12)
    with psycopg.connect(warehouse_db) as conn:
        audit.record(
            conn,
            actor="bob",
            action="batch.approved",
            entity_type="batch",
            entity_id="7",
            before={"state": "prepared", "total": "10.00"},
            after={"state": "approved", "total": "10.00", "approver": "bob"},
            source=audit.Source("erpsync_invoice_batches", "run-9", "approve"),
        )
        everything = audit_trail.search(conn, audit_trail.AuditFilters(), limit=5)
        assert len(everything.rows) == 5 and everything.rows[0].actor == "bob"
        older = audit_trail.search(
            conn, audit_trail.AuditFilters(), before=everything.next_before, limit=5
        )
        assert [r.audit_id for r in older.rows] == [
            everything.rows[-1].audit_id - i for i in range(1, 6)
        ]
        by_run = audit_trail.search(conn, audit_trail.AuditFilters(run_id="run-9"))
        assert [(r.actor, r.changed) for r in by_run.rows] == [("bob", ["state", "approver"])]
        assert by_run.next_before is None
        by_actor = audit_trail.search(conn, audit_trail.AuditFilters(actor="alice"), limit=100)
        assert len(by_actor.rows) == 12
        filters = audit_trail.AuditFilters.from_params(
            {"entity_type": "exception", "entity_id": "3", "from": "2000-01-01", "to": "bogus"}
        )
        assert filters.date_to is None
        assert [r.entity_id for r in audit_trail.search(conn, filters).rows] == ["3"]
        future = audit_trail.AuditFilters(date_from=audit_trail.dt.date(2999, 1, 1))
        assert audit_trail.search(conn, future).rows == []
        one = audit_trail.entry(conn, by_run.rows[0].audit_id)
        assert {d.key: d.changed for d in one.diff} == {
            "state": True,
            "total": False,
            "approver": True,
        }
        csv = list(audit_trail.csv_rows(conn, audit_trail.AuditFilters(), fetch=4))
        assert len(csv) == 13 and len(csv[0]) == len(audit_trail.CSV_HEADER)


def test_verify_all_catches_up_in_committed_steps_and_stops_where_the_chain_broke(
    warehouse_db, monkeypatch
):
    monkeypatch.setattr(audit_trail, "VERIFY_MAX_ROWS", 7)
    ids = write(warehouse_db, 20)
    steps = []
    done = audit_trail.verify_all(warehouse_db, batch=3, report=steps.append)
    assert (done.verified_audit_id, done.pending, done.broken) == (ids[-1], 0, False)
    assert [s.verified_audit_id for s in steps] == [ids[6], ids[13], ids[19]]
    more = write(warehouse_db, 5, start=100)
    tamper(warehouse_db, "DELETE FROM audit.audit_log WHERE audit_id = %s", (more[1],))
    broken = audit_trail.verify_all(warehouse_db)
    assert broken.broken_audit_id == more[2]
