"""The exceptions queue and the outbox enqueue path against a real PostgreSQL: idempotent while
open, resolved when the cause is gone, waived with who and why, audited; an unchanged record
never enqueues again; an invalid VAT id blocks the client's write-back with one exception."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from erpsync import exceptions_queue as eq
from erpsync.sync import specs
from erpsync.sync.spec import RunInfo
from erpsync.writeback import outbox
from tests.support.clients import seed_client as _client

VALID_DE = "DE136695976"
INVALID_DE = "DE136695977"


def _audit_actions(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT action FROM audit.audit_log ORDER BY 1").fetchall()]


def test_raise_is_idempotent_while_open_and_reruns_move_last_seen(warehouse_db):
    run1, run2 = RunInfo.local("first"), RunInfo.local("second")
    with psycopg.connect(warehouse_db) as conn:
        first = eq.raise_exception(
            conn, "invalid_tax_id", "client", "001A", "finance ops", {"vat": "x"}, run1
        )
        again = eq.raise_exception(
            conn,
            "invalid_tax_id",
            "client",
            "001A",
            "finance ops",
            {"vat": "y"},
            run2,
            amount_at_stake=Decimal("120.50"),
            currency="EUR",
        )
        rows = conn.execute(
            "SELECT exception_id, status, first_seen_run, last_seen_run, detail, amount_at_stake "
            "FROM ops.exceptions"
        ).fetchall()
        assert _audit_actions(conn) == ["exception.raised"]
    assert first.created and not again.created
    assert first.exception_id == again.exception_id
    assert rows == [
        (first.exception_id, "open", run1.run_id, run2.run_id, {"vat": "y"}, Decimal("120.5000"))
    ]


def test_amount_at_stake_must_be_decimal(warehouse_db):
    with psycopg.connect(warehouse_db) as conn, pytest.raises(TypeError):
        eq.raise_exception(
            conn, "x", "client", "k", "o", {}, RunInfo.local("t"), amount_at_stake=1.5
        )


def test_resolve_missing_closes_only_the_gone_causes_within_what_was_checked(warehouse_db):
    run = RunInfo.local("sync")
    with psycopg.connect(warehouse_db) as conn:
        for key in ("a", "b", "c", "d"):
            eq.raise_exception(conn, "invalid_tax_id", "client", key, "finance ops", {}, run)
        eq.raise_exception(conn, "other_reason", "client", "a", "finance ops", {}, run)
        # an incremental run looked at a, b and c; b still fails; d was not looked at
        resolved = eq.resolve_missing(
            conn, "invalid_tax_id", "client", ["b"], run, checked_keys=["a", "b", "c"]
        )
        states = dict(
            conn.execute(
                "SELECT reason_code || ':' || entity_key, status FROM ops.exceptions"
            ).fetchall()
        )
        resolved_by = conn.execute(
            "SELECT DISTINCT resolved_by FROM ops.exceptions WHERE status = 'resolved'"
        ).fetchall()
        assert _audit_actions(conn).count("exception.resolved") == 2
    assert sorted(resolved) == ["a", "c"]
    assert states == {
        "invalid_tax_id:a": "resolved",
        "invalid_tax_id:b": "open",
        "invalid_tax_id:c": "resolved",
        "invalid_tax_id:d": "open",
        "other_reason:a": "open",
    }
    assert resolved_by == [(run.actor,)]


def test_a_resolved_cause_that_comes_back_opens_a_new_row(warehouse_db):
    run = RunInfo.local("sync")
    with psycopg.connect(warehouse_db) as conn:
        first = eq.raise_exception(conn, "invalid_tax_id", "client", "a", "fo", {}, run)
        eq.resolve_missing(conn, "invalid_tax_id", "client", [], run)
        second = eq.raise_exception(conn, "invalid_tax_id", "client", "a", "fo", {}, run)
        statuses = conn.execute(
            "SELECT status FROM ops.exceptions ORDER BY exception_id"
        ).fetchall()
    assert second.created and second.exception_id != first.exception_id
    assert statuses == [("resolved",), ("open",)]


def test_waive_needs_who_and_why_and_a_waived_cause_is_not_reopened(warehouse_db):
    run = RunInfo.local("sync")
    with psycopg.connect(warehouse_db) as conn:
        raised = eq.raise_exception(conn, "invalid_tax_id", "client", "a", "fo", {}, run)
        with pytest.raises(ValueError, match="comment"):
            eq.waive(conn, raised.exception_id, by="maria", comment="  ", run=run)
        assert eq.waive(
            conn, raised.exception_id, by="maria", comment="client is a charity", run=run
        )
        assert not eq.waive(conn, raised.exception_id, by="maria", comment="again", run=run)
        rerun = eq.raise_exception(conn, "invalid_tax_id", "client", "a", "fo", {}, run)
        row = conn.execute("SELECT status, waived_by, waive_comment FROM ops.exceptions").fetchall()
        waived_audit = conn.execute(
            "SELECT actor, after_state FROM audit.audit_log WHERE action = 'exception.waived'"
        ).fetchall()
    assert rerun.exception_id == raised.exception_id and not rerun.created
    assert row == [("waived", "maria", "client is a charity")]
    assert waived_audit == [("maria", {"status": "waived", "comment": "client is a charity"})]


def test_the_database_refuses_a_second_live_row_for_one_cause(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        insert = (
            "INSERT INTO ops.exceptions (reason_code, entity_type, entity_key, owner, "
            "first_seen_run, last_seen_run) VALUES ('r', 'client', 'k', 'o', 'x', 'x')"
        )
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)


# ------------------------------------------------------------------ enqueue


def _outbox(conn) -> list[tuple]:
    return conn.execute(
        "SELECT operation, entity_key, status FROM ops.outbox ORDER BY outbox_id"
    ).fetchall()


def test_enqueue_blocks_invalid_vat_once_and_never_enqueues_an_unchanged_record(warehouse_db):
    run = RunInfo.local("sync")
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001GOOD", "Good GmbH", VALID_DE)
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        n = outbox.enqueue_changes(conn, specs.CLIENTS, ["001GOOD", "001BAD"], run)
        first = _outbox(conn)
        exceptions = conn.execute(
            "SELECT reason_code, entity_key, status, detail->>'vat_id' FROM ops.exceptions"
        ).fetchall()
        # the same keys again (a rerun, or the tax profile spec): nothing new
        assert outbox.enqueue_changes(conn, specs.CLIENTS, ["001GOOD", "001BAD"], run) == 0
        assert outbox.enqueue_changes(conn, specs.TAX_PROFILES, ["001GOOD", "001BAD"], run) == 0
        assert _outbox(conn) == first
        payload = conn.execute(
            "SELECT payload FROM ops.outbox WHERE operation = 'erp.customer' "
            "AND entity_key = '001GOOD'"
        ).fetchone()[0]
    assert n == 2
    assert sorted(first) == [
        ("erp.customer", "001BAD", "blocked"),
        ("erp.customer", "001GOOD", "pending"),
        ("psa.client", "001BAD", "blocked"),
        ("psa.client", "001GOOD", "pending"),
    ]
    assert exceptions == [("invalid_tax_id", "001BAD", "open", INVALID_DE)]
    assert payload["taxRegistrationNumber"] == VALID_DE
    assert payload["number"].startswith("ES-C")
    assert payload["_paymentTerms"] == "30 DAYS"  # resolved to paymentTermsId on delivery
    assert payload["_taxArea"] == "EXPORT"  # DE, not home (NL), no reverse charge flag


def test_fixing_the_vat_id_releases_the_client_and_resolves_its_exception(warehouse_db):
    run = RunInfo.local("sync")
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001BAD", "Bad GmbH", INVALID_DE)
        outbox.enqueue_changes(conn, specs.CLIENTS, ["001BAD"], run)
        _client(conn, "001BAD", "Bad GmbH", VALID_DE)  # fixed in the CRM, tax profile changed
        assert outbox.enqueue_changes(conn, specs.TAX_PROFILES, ["001BAD"], run) == 2
        rows = _outbox(conn)
        status = conn.execute("SELECT status FROM ops.exceptions").fetchall()
    assert rows == [
        ("erp.customer", "001BAD", "superseded"),
        ("psa.client", "001BAD", "superseded"),
        ("erp.customer", "001BAD", "pending"),
        ("psa.client", "001BAD", "pending"),
    ]
    assert status == [("resolved",)]


def test_a_changed_record_supersedes_its_unsent_row_and_a_change_back_is_sent_again(
    warehouse_db,
):
    run = RunInfo.local("sync")
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001A", "Alpha GmbH", VALID_DE)
        outbox.enqueue_changes(conn, specs.CLIENTS, ["001A"], run)
        conn.execute("UPDATE ops.outbox SET status = 'sent'")
        _client(conn, "001A", "Alpha Holding GmbH", VALID_DE)
        outbox.enqueue_changes(conn, specs.CLIENTS, ["001A"], run)
        _client(conn, "001A", "Alpha GmbH", VALID_DE)  # renamed back before the relay ran
        outbox.enqueue_changes(conn, specs.CLIENTS, ["001A"], run)
        rows = conn.execute(
            "SELECT status, payload->>'displayName' FROM ops.outbox "
            "WHERE operation = 'erp.customer' ORDER BY outbox_id"
        ).fetchall()
    assert rows == [
        ("sent", "Alpha GmbH"),
        ("superseded", "Alpha Holding GmbH"),
        ("pending", "Alpha GmbH"),
    ]


def test_a_person_can_resolve_an_exception_by_hand_and_it_is_audited(warehouse_db):
    run = RunInfo.local("sync")
    with psycopg.connect(warehouse_db) as conn:
        raised = eq.raise_exception(conn, "invalid_tax_id", "client", "a", "fo", {}, run)
        assert [e["entity_key"] for e in eq.open_exceptions(conn, "invalid_tax_id")] == ["a"]
        assert eq.resolve(conn, raised.exception_id, by="maria", comment="fixed", run=run)
        assert not eq.resolve(conn, raised.exception_id, by="maria", comment="again", run=run)
        row = conn.execute("SELECT status, resolved_by FROM ops.exceptions").fetchone()
        audit_row = conn.execute(
            "SELECT actor, before_state, after_state FROM audit.audit_log "
            "WHERE action = 'exception.resolved'"
        ).fetchall()
        assert eq.open_exceptions(conn) == []
    assert row == ("resolved", "maria")
    assert audit_row == [("maria", {"status": "open"}, {"status": "resolved", "comment": "fixed"})]
