"""A person's actions on the exceptions queue against a real PostgreSQL: assign, comment, waive,
reopen, in bulk with an outcome per id, each audited with the person as actor in the caller's
transaction; and the queue's own behaviour around them, proven through the real code that
raises and resolves exceptions (the outbox's VAT check): a waived exception stays waived on a
rerun, an assigned one keeps its owner, a fixed one closes itself, also after a reopen."""

from __future__ import annotations

import psycopg
import pytest

from erpsync import exceptions_queue as eq
from erpsync.sync import specs
from erpsync.sync.spec import RunInfo
from erpsync.warehouse import migrate
from erpsync.writeback import outbox
from tests.support.clients import seed_client as _client

VALID_DE = "DE136695976"
INVALID_DE = "DE136695977"


def _sync_clients(conn, *crm_ids: str) -> None:
    """What a client sync run does after loading core: enqueue the write-back, which raises an
    invalid-VAT exception per failing client and resolves those fixed since."""
    outbox.enqueue_changes(conn, specs.CLIENTS, list(crm_ids), RunInfo.local("client_sync"))


def _exception(conn, crm_id: str, status: str | None = None) -> dict:
    cur = conn.execute(
        """SELECT exception_id, status, owner, assigned_by, waived_by, waive_comment,
                  resolved_by, account_id, client_name
             FROM ops.exceptions
            WHERE reason_code = 'invalid_tax_id' AND entity_key = %s
              AND (%s::text IS NULL OR status = %s)
            ORDER BY exception_id DESC LIMIT 1""",
        (crm_id, status, status),
    )
    row = cur.fetchone()
    assert row is not None, f"no exception for {crm_id}"
    return dict(zip([c.name for c in cur.description], row, strict=True))


def _audit(conn, exception_id: int) -> list[tuple]:
    return conn.execute(
        """SELECT action, actor, before_state, after_state FROM audit.audit_log
            WHERE entity_type = 'exception' AND entity_id = %s ORDER BY audit_id""",
        (str(exception_id),),
    ).fetchall()


def _outcomes(outcomes: list[eq.ActionOutcome]) -> list[tuple]:
    return [(o.exception_id, o.outcome, o.why) for o in outcomes]


def test_the_vat_exception_knows_its_client(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        _sync_clients(conn, "001BAD")
        row = _exception(conn, "001BAD")
    assert (row["account_id"], row["client_name"]) == ("001BAD", "Bad GmbH")


def test_a_waived_exception_stays_waived_across_reruns_and_closes_when_fixed(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        _sync_clients(conn, "001BAD")
        ex = _exception(conn, "001BAD")
        outcomes = eq.waive_many(conn, [ex["exception_id"]], by="maria", comment="charity")
        _sync_clients(conn, "001BAD")  # the rerun still sees the invalid VAT id
        after_rerun = _exception(conn, "001BAD")
        live = conn.execute("SELECT count(*) FROM ops.exceptions").fetchone()[0]
        _client(conn, "001BAD", "Bad GmbH", VALID_DE)  # fixed in the CRM
        _sync_clients(conn, "001BAD")
        fixed = _exception(conn, "001BAD")
        actions = [a[0] for a in _audit(conn, ex["exception_id"])]
    assert _outcomes(outcomes) == [(ex["exception_id"], "done", None)]
    assert (after_rerun["exception_id"], after_rerun["status"]) == (ex["exception_id"], "waived")
    assert (after_rerun["waived_by"], after_rerun["waive_comment"]) == ("maria", "charity")
    assert live == 1
    assert (fixed["exception_id"], fixed["status"]) == (ex["exception_id"], "resolved")
    assert actions == ["exception.raised", "exception.waived", "exception.resolved"]


def test_an_assigned_owner_survives_a_rerun_and_the_assignment_is_audited(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        _sync_clients(conn, "001BAD")
        ex = _exception(conn, "001BAD")
        first = eq.assign(conn, [ex["exception_id"]], owner="jonas", by="maria")
        again = eq.assign(conn, [ex["exception_id"]], owner="jonas", by="maria")
        _sync_clients(conn, "001BAD")
        after = _exception(conn, "001BAD")
        history = _audit(conn, ex["exception_id"])
    assert _outcomes(first) == [(ex["exception_id"], "done", None)]
    assert _outcomes(again) == [(ex["exception_id"], "skipped", "already assigned to jonas")]
    assert (after["owner"], after["assigned_by"]) == ("jonas", "maria")
    assert history[1] == ("exception.assigned", "maria", {"owner": ex["owner"]}, {"owner": "jonas"})


def test_bulk_actions_report_each_id_and_skip_what_does_not_apply(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        for key in ("001A", "001B", "001C"):
            _client(conn, key, f"{key} GmbH", INVALID_DE)
        _sync_clients(conn, "001A", "001B", "001C")
        a, b, c = (_exception(conn, k)["exception_id"] for k in ("001A", "001B", "001C"))
        eq.waive_many(conn, [b], by="maria", comment="known")
        _client(conn, "001C", "001C GmbH", VALID_DE)
        _sync_clients(conn, "001C")  # resolved by the rerun
        waived = eq.waive_many(conn, [a, b, c, 999999, a], by="maria", comment="accepted")
        assigned = eq.assign(conn, [b, c], owner="jonas", by="maria")
        commented = eq.comment(conn, [a, c, 999999], text="called the client", by="lena")
        comment_rows = conn.execute(
            """SELECT entity_id, actor, after_state, detail ->> 'status' FROM audit.audit_log
                WHERE action = 'exception.commented' ORDER BY entity_id::bigint"""
        ).fetchall()
    assert _outcomes(waived) == [
        (a, "done", None),
        (b, "skipped", "already waived by maria"),
        (c, "skipped", "resolved: nothing to waive"),
        (999999, "skipped", "no such exception"),
    ]
    assert _outcomes(assigned) == [(b, "done", None), (c, "skipped", "resolved: reopen it first")]
    assert _outcomes(commented) == [
        (a, "done", None),
        (c, "done", None),
        (999999, "skipped", "no such exception"),
    ]
    assert comment_rows == [
        (str(a), "lena", {"comment": "called the client"}, "waived"),
        (str(c), "lena", {"comment": "called the client"}, "resolved"),
    ]


def test_actions_need_their_inputs(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        with pytest.raises(ValueError, match="comment saying why"):
            eq.waive_many(conn, [1], by="maria", comment="  ")
        with pytest.raises(ValueError, match="owner"):
            eq.assign(conn, [1], owner="", by="maria")
        with pytest.raises(ValueError, match="text"):
            eq.comment(conn, [1], text=" ", by="maria")
        with pytest.raises(ValueError, match="who"):
            eq.reopen(conn, [1], by="")


def test_a_bulk_action_is_one_transaction(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        for key in ("001A", "001B"):
            _client(conn, key, f"{key} GmbH", INVALID_DE)
        _sync_clients(conn, "001A", "001B")
        ids = [_exception(conn, k)["exception_id"] for k in ("001A", "001B")]
    with psycopg.connect(warehouse_db) as conn:
        with pytest.raises(RuntimeError), conn.transaction():
            eq.waive_many(conn, ids, by="maria", comment="accepted")
            raise RuntimeError("the request failed after the action")
        statuses = conn.execute("SELECT DISTINCT status FROM ops.exceptions").fetchall()
        waived_audit = conn.execute(
            "SELECT count(*) FROM audit.audit_log WHERE action = 'exception.waived'"
        ).fetchone()[0]
    assert statuses == [("open",)]
    assert waived_audit == 0


def test_reopen_a_waived_exception_and_the_rerun_keeps_it_open(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        _sync_clients(conn, "001BAD")
        ex = _exception(conn, "001BAD")["exception_id"]
        eq.waive_many(conn, [ex], by="maria", comment="charity")
        reopened = eq.reopen(conn, [ex], by="lena", comment="not a charity after all")
        twice = eq.reopen(conn, [ex], by="lena")
        _sync_clients(conn, "001BAD")
        row = _exception(conn, "001BAD")
        history = _audit(conn, ex)
    assert _outcomes(reopened) == [(ex, "done", None)]
    assert _outcomes(twice) == [(ex, "skipped", "already open")]
    assert (row["exception_id"], row["status"], row["waived_by"]) == (ex, "open", None)
    assert history[-1] == (
        "exception.reopened",
        "lena",
        {"status": "waived", "waived_by": "maria", "waive_comment": "charity"},
        {"status": "open", "comment": "not a charity after all"},
    )


def test_reopen_a_resolved_exception_is_refused_while_its_cause_has_a_live_row(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        _sync_clients(conn, "001BAD")
        old = _exception(conn, "001BAD")["exception_id"]
        _client(conn, "001BAD", "Bad GmbH", VALID_DE)
        _sync_clients(conn, "001BAD")  # fixed: resolved
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        _sync_clients(conn, "001BAD")  # broken again: a new live row
        new = _exception(conn, "001BAD", "open")["exception_id"]
        refused = eq.reopen(conn, [old], by="lena")
        statuses = conn.execute(
            "SELECT exception_id, status FROM ops.exceptions ORDER BY 1"
        ).fetchall()
    assert new != old
    assert _outcomes(refused) == [
        (
            old,
            "skipped",
            f"exception {new} is already open or waived for the same cause:"
            " work on that one instead",
        )
    ]
    assert statuses == [(old, "resolved"), (new, "open")]


def test_a_reopened_resolved_exception_closes_itself_again_while_fixed(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        _sync_clients(conn, "001BAD")
        ex = _exception(conn, "001BAD")["exception_id"]
        _client(conn, "001BAD", "Bad GmbH", VALID_DE)
        _sync_clients(conn, "001BAD")
        assert _outcomes(eq.reopen(conn, [ex], by="lena")) == [(ex, "done", None)]
        reopened = _exception(conn, "001BAD")
        _sync_clients(conn, "001BAD")  # still fixed: the rerun closes it again
        after = _exception(conn, "001BAD")
        actions = [a[0] for a in _audit(conn, ex)]
    assert (reopened["status"], reopened["resolved_by"]) == ("open", None)
    assert after["status"] == "resolved"
    assert actions == [
        "exception.raised",
        "exception.resolved",
        "exception.reopened",
        "exception.resolved",
    ]


def _contract(conn, opportunity_id: str, account_id: str) -> None:
    conn.execute(
        """INSERT INTO core.contracts (opportunity_id, version, account_id, project_code, status,
               payload, first_run_id, last_run_id)
           VALUES (%s, 1, %s, %s, 'pending', '{}'::jsonb, 'r', 'r')""",
        (opportunity_id, account_id, f"P-{opportunity_id}"),
    )


def _recon_item(conn, item_key: str, account_id: str) -> None:
    kind, _, source_id = item_key.partition(":")
    conn.execute(
        """INSERT INTO recon.items (item_date, period_start, approved, item_key, state,
               item_type, source_id, account_id, first_run_id, last_run_id)
           VALUES ('2026-11-02', '2026-11-01', true, %s, 'ready', %s, %s, %s, 'r', 'r')""",
        (item_key, kind, source_id, account_id),
    )


def test_the_client_is_derived_from_each_kind_of_entity(warehouse_db):
    run = RunInfo.local("checks")
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001A", "Alpha GmbH", VALID_DE)
        _contract(conn, "006X", "001A")
        _recon_item(conn, "time:9001", "001A")
        _recon_item(conn, "expense:77", "001A")
        cases = [
            ("client", "erp.customer:001A", {}),  # the relay's write_back_failed key
            ("time_entry", "9001", {"item_key": "time:9001"}),
            ("expense", "77", {}),
            ("opportunity", "006X", {}),
            ("project", "4711", {"opportunity_id": "006X"}),
            ("contract_rate_override", "006X|ann@example.com", {}),
            ("person", "42", {}),
        ]
        for entity_type, key, detail in cases:
            eq.raise_exception(conn, "some_check", entity_type, key, "fo", detail, run)
        eq.raise_exception(conn, "some_check", "invoice", "INV-1", "fo", {}, run, account_id="001A")
        rows = conn.execute(
            "SELECT entity_type, account_id, client_name FROM ops.exceptions ORDER BY 1"
        ).fetchall()
    alpha = ("001A", "Alpha GmbH")
    assert {r[0]: (r[1], r[2]) for r in rows} == {
        "client": alpha,
        "contract_rate_override": alpha,
        "expense": alpha,
        "invoice": alpha,
        "opportunity": alpha,
        "person": (None, None),
        "project": alpha,
        "time_entry": alpha,
    }


def test_the_migration_fills_in_the_client_of_existing_exceptions(fresh_db, monkeypatch):
    every = migrate.available()
    monkeypatch.setattr(migrate, "available", lambda: [m for m in every if m.version < 25])
    migrate.migrate(fresh_db)
    run = RunInfo.local("before_0025")
    with psycopg.connect(fresh_db) as conn:
        _client(conn, "001A", "Alpha GmbH", INVALID_DE)
        _recon_item(conn, "time:9001", "001A")
        conn.execute(
            """INSERT INTO ops.exceptions (reason_code, entity_type, entity_key, owner, detail,
                   first_seen_run, last_seen_run)
               VALUES ('invalid_tax_id', 'client', '001A', 'fo', '{}', %(r)s, %(r)s),
                      ('missing_rate', 'time_entry', '9001', 'fo',
                       '{"item_key": "time:9001"}', %(r)s, %(r)s)""",
            {"r": run.run_id},
        )
    monkeypatch.setattr(migrate, "available", lambda: every)
    applied = migrate.migrate(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "SELECT entity_type, account_id, client_name FROM ops.exceptions ORDER BY 1"
        ).fetchall()
    assert 25 in [m.version for m in applied]
    assert rows == [("client", "001A", "Alpha GmbH"), ("time_entry", "001A", "Alpha GmbH")]


def test_through_the_reconciliation_a_waiver_and_an_owner_hold_and_a_fix_closes(warehouse_db):
    """The same guarantees on the reconciliation's own exceptions (run_reconcile raises them
    and resolves those whose cause is gone)."""
    import datetime as dt

    from erpsync.reconcile import run_reconcile
    from erpsync.reconcile.rows import Rows

    def recon(conn):
        run_reconcile(conn, RunInfo.local("reconcile"), as_of=dt.date(2026, 4, 1))

    with psycopg.connect(warehouse_db) as conn:
        r = Rows(conn)
        r.person("u1")
        r.person("u2")
        r.contract("006X", "p1")  # client 001ACME
        r.time("1", "u1", "p1", dt.date(2026, 3, 2), "2")  # no rate for u1: missing_rate
        r.time("2", "u2", "p1", dt.date(2026, 3, 3), "3")  # nor for u2
        conn.commit()
        recon(conn)
        rows = conn.execute(
            "SELECT entity_key, exception_id, account_id FROM ops.exceptions ORDER BY 1"
        ).fetchall()
        (_, first, account), (_, second, _) = rows
        eq.waive_many(conn, [first], by="maria", comment="internal training, never billed")
        eq.assign(conn, [second], owner="jonas", by="maria")
        conn.commit()
        recon(conn)  # nothing fixed: the waiver and the owner hold
        kept = conn.execute(
            "SELECT exception_id, status, owner FROM ops.exceptions ORDER BY 1"
        ).fetchall()
        r.rate_card("u1", "90", dt.date(2026, 1, 1))
        r.rate_card("u2", "90", dt.date(2026, 1, 1))
        conn.commit()
        recon(conn)  # both fixed: both close themselves
        closed = conn.execute(
            "SELECT exception_id, status FROM ops.exceptions ORDER BY 1"
        ).fetchall()
    assert account == "001ACME"
    assert kept == [(first, "waived", "resource_manager"), (second, "open", "jonas")]
    assert closed == [(first, "resolved"), (second, "resolved")]
