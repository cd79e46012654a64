"""Versioned warehouse migrations: ``migrations/NNNN_name.sql`` applied in order, once each.

Each migration runs in its own transaction together with its row in ``ops.schema_migrations``
(version, name, SHA-256 checksum), so a failed migration leaves nothing behind and a rerun
applies exactly what is missing. A session advisory lock keeps two migrators from racing. A
migration file edited after it was applied is refused with a message naming it: ship a new
migration instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

MIGRATION_LOCK_KEY = 0x65727073796E63  # "erpsync"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """A migration cannot be applied; the message says which one and why."""


def available() -> list[Migration]:
    """The packaged migrations, in version order."""
    folder = resources.files("erpsync.warehouse") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


def latest_version() -> int:
    return available()[-1].version


def applied(conn) -> dict[int, str]:
    """Version -> checksum of the migrations recorded in the database (empty if none)."""
    exists = conn.execute("SELECT to_regclass('ops.schema_migrations')").fetchone()[0]
    if exists is None:
        return {}
    rows = conn.execute("SELECT version, checksum FROM ops.schema_migrations").fetchall()
    return {int(v): c for v, c in rows}


def migrate(url: str) -> list[Migration]:
    """Apply the pending migrations to the database at ``url``. Returns those applied."""
    import psycopg

    done: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
                conn.execute(
                    """CREATE TABLE IF NOT EXISTS ops.schema_migrations (
                           version    integer PRIMARY KEY,
                           name       text        NOT NULL,
                           checksum   text        NOT NULL,
                           applied_at timestamptz NOT NULL DEFAULT now())"""
                )
            recorded = applied(conn)
            for migration in available():
                if migration.version in recorded:
                    if recorded[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name}.sql was changed "
                            "after it was applied to this database; add a new migration instead"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql)
                        conn.execute(
                            "INSERT INTO ops.schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
                    ) from exc
                done.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return done


def current_version(url: str) -> int:
    """The highest applied migration version (0 for an empty database)."""
    import psycopg

    with psycopg.connect(url) as conn:
        versions = applied(conn)
    return max(versions, default=0)
