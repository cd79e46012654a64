"""Warehouse migrations against a real PostgreSQL: applied twice change nothing; edited
migrations are refused; the audit trail is append-only, enforced by the database."""

from __future__ import annotations

import psycopg
import pytest

from erpsync import audit
from erpsync.warehouse import migrate
from tests.entity_lists import core_tables, every_spec

EXPECTED_SCHEMAS = {"raw", "core", "recon", "billing", "ops", "audit"}


def _schema_fingerprint(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            """SELECT table_schema, table_name, column_name, data_type, is_nullable
               FROM information_schema.columns
               WHERE table_schema = ANY(%s) ORDER BY 1, 2, 3""",
            (list(EXPECTED_SCHEMAS),),
        ).fetchall()
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
        ).fetchall()
        migrations = conn.execute(
            "SELECT version, name, checksum, applied_at FROM ops.schema_migrations ORDER BY 1"
        ).fetchall()
    return columns + triggers + migrations


def test_first_migrate_creates_every_schema_and_core_table(fresh_db):
    applied = migrate.migrate(fresh_db)
    assert [m.version for m in applied] == [m.version for m in migrate.available()]
    with psycopg.connect(fresh_db) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        tables = {
            f"{s}.{t}"
            for s, t in conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        }
    assert EXPECTED_SCHEMAS <= schemas
    assert {
        "core.id_map",
        "ops.sync_watermarks",
        "ops.quarantine",
        "ops.run_stats",
        "audit.audit_log",
        "ops.schema_migrations",
    } <= tables
    # every entity's core table (derived from the specs: a new spec needs its migration)
    assert set(core_tables(every_spec())) <= tables


def test_migrating_twice_changes_nothing(fresh_db):
    migrate.migrate(fresh_db)
    before = _schema_fingerprint(fresh_db)
    assert migrate.migrate(fresh_db) == []
    assert _schema_fingerprint(fresh_db) == before
    assert migrate.current_version(fresh_db) == migrate.latest_version()


def test_a_migration_edited_after_it_was_applied_is_refused(fresh_db):
    migrate.migrate(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        conn.execute("UPDATE ops.schema_migrations SET checksum = 'edited' WHERE version = 2")
    with pytest.raises(migrate.MigrationError, match="0002_id_map.sql was changed"):
        migrate.migrate(fresh_db)


def test_id_map_rejects_a_second_canonical_id_for_the_same_system_id(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        conn.execute("INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', '001A')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', '001A')")


def _write_audit_rows(url: str, n: int) -> None:
    with psycopg.connect(url) as conn:
        for i in range(n):
            audit.record(
                conn,
                actor="alice",
                action="batch.approved",
                entity_type="batch",
                entity_id=str(i),
                before={"state": "prepared"},
                after={"state": "approved"},
                source=audit.Source("erpsync_invoice_batches", "run-1", "approve"),
            )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit.audit_log SET actor = 'mallory'",
        "DELETE FROM audit.audit_log",
        "TRUNCATE audit.audit_log",
    ],
)
def test_audit_trail_rejects_update_delete_and_truncate(warehouse_db, statement):
    _write_audit_rows(warehouse_db, 2)
    with psycopg.connect(warehouse_db) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM audit.audit_log").fetchone()[0] == 2
        actors = {r[0] for r in conn.execute("SELECT actor FROM audit.audit_log").fetchall()}
        assert actors == {"alice"}


def test_audit_rows_are_hash_chained_and_tampering_behind_the_triggers_is_detected(warehouse_db):
    _write_audit_rows(warehouse_db, 3)
    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        assert conn.execute("SELECT * FROM audit.verify_chain()").fetchall() == []
        first_prev = conn.execute(
            "SELECT prev_hash FROM audit.audit_log ORDER BY audit_id LIMIT 1"
        ).fetchone()[0]
        assert first_prev == "genesis"
        # a superuser disables the guard and rewrites history: the chain shows it
        conn.execute("ALTER TABLE audit.audit_log DISABLE TRIGGER audit_log_no_update_delete")
        conn.execute("UPDATE audit.audit_log SET actor = 'mallory' WHERE entity_id = '1'")
        conn.execute("ALTER TABLE audit.audit_log ENABLE TRIGGER audit_log_no_update_delete")
        broken = conn.execute("SELECT audit_id, problem FROM audit.verify_chain()").fetchall()
    assert len(broken) == 1
    assert broken[0][1] == "row content does not match its hash"
