"""The time-entry spec the benchmark runs: the hourly sync's own
(:data:`erpsync.sync.specs_time.TIME_ENTRIES`, Harvest ``/v2/time_entries`` ->
``core.time_entries``, the raw-codec bulk path), in a freshly migrated database."""

from __future__ import annotations

from erpsync.sync.spec import EntitySpec
from erpsync.sync.specs_time import TIME_ENTRIES

ORIGIN = "erpsync.sync.specs_time.TIME_ENTRIES"


def time_entries_spec() -> tuple[EntitySpec, str]:
    """(spec, origin): the spec the benchmark syncs and where it comes from (for the report)."""
    return TIME_ENTRIES, ORIGIN


def prepare_database(conninfo: str) -> None:
    """Migrate the (fresh) bench database: the warehouse's own schema, nothing of its own."""
    from erpsync.warehouse import migrate

    migrate.migrate(conninfo)
