"""The time-entry spec the benchmark runs.

TIMESYNC's ``erpsync.sync.specs_time.TIME_ENTRIES`` (core.time_entries, migration 0007) when it
is there; until then a local spec of the same shape (Harvest ``/v2/time_entries`` ->
canonical time entry -> ``core.bench_time_entries``, created by the benchmark in its own
database), so the harness runs either way.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pydantic import TypeAdapter

from erpsync.models.canonical import ADAPTERS, Canonical, Currency, Rate, RequiredText
from erpsync.sync.sources import HarvestList
from erpsync.sync.spec import CursorSpec, DeleteMode, EntitySpec


class BenchTimeEntry(Canonical):
    psa_id: RequiredText
    spent_date: dt.date
    hours: Decimal
    notes: str | None = None
    person_psa_id: RequiredText
    project_psa_id: RequiredText
    task_psa_id: RequiredText
    client_psa_id: str | None = None
    billable: bool
    billable_rate: Rate | None = None
    cost_rate: Rate | None = None
    currency: Currency | None = None
    approval_status: str
    is_locked: bool
    is_billed: bool
    invoice_psa_id: str | None = None
    psa_updated_at: dt.datetime


def _register() -> None:
    """Register the stand-in's validator only when the stand-in is used (registering it at
    import would add a model to the shared registry whenever the bench module is imported)."""
    ADAPTERS.setdefault(BenchTimeEntry, TypeAdapter(BenchTimeEntry))


def _ref(rec: dict, name: str) -> str | None:
    ref = rec.get(name)
    return None if not ref or ref.get("id") is None else str(ref["id"])


def harvest_time_entry(rec: dict) -> list[dict]:
    client = rec.get("client") or {}
    return [
        {
            "psa_id": None if rec.get("id") is None else str(rec["id"]),
            "spent_date": rec.get("spent_date"),
            "hours": rec.get("hours"),
            "notes": rec.get("notes"),
            "person_psa_id": _ref(rec, "user"),
            "project_psa_id": _ref(rec, "project"),
            "task_psa_id": _ref(rec, "task"),
            "client_psa_id": _ref(rec, "client"),
            "billable": bool(rec.get("billable")),
            "billable_rate": rec.get("billable_rate"),
            "cost_rate": rec.get("cost_rate"),
            "currency": client.get("currency"),
            "approval_status": rec.get("approval_status") or "unsubmitted",
            "is_locked": bool(rec.get("is_locked")),
            "is_billed": bool(rec.get("is_billed")),
            "invoice_psa_id": _ref(rec, "invoice"),
            "psa_updated_at": rec.get("updated_at"),
        }
    ]


LOCAL_TABLE = "core.bench_time_entries"

LOCAL_DDL = f"""
CREATE TABLE IF NOT EXISTS {LOCAL_TABLE} (
    psa_id            text        PRIMARY KEY,
    spent_date        date        NOT NULL,
    hours             numeric     NOT NULL,
    notes             text,
    person_psa_id     text        NOT NULL,
    project_psa_id    text        NOT NULL,
    task_psa_id       text        NOT NULL,
    client_psa_id     text,
    billable          boolean     NOT NULL,
    billable_rate     numeric,
    cost_rate         numeric,
    currency          text,
    approval_status   text        NOT NULL,
    is_locked         boolean     NOT NULL,
    is_billed         boolean     NOT NULL,
    invoice_psa_id    text,
    psa_updated_at    timestamptz NOT NULL,
    source_record_id  text        NOT NULL,
    row_hash          text        NOT NULL,
    source_modstamp   timestamptz,
    deleted_at        timestamptz,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bench_time_entries_source_idx ON {LOCAL_TABLE} (source_record_id);
"""

LOCAL_TIME_ENTRIES = EntitySpec(
    name="bench_time_entries",
    system="psa",
    source=HarvestList("time_entries"),
    model=BenchTimeEntry,
    mapper=harvest_time_entry,
    natural_key=("psa_id",),
    cursor=CursorSpec(field="updated_at", id_field="id", overlap_seconds=1),
    deletes=DeleteMode.NONE,
    record_key="id",
    raw_table="raw.vendor_records",
    core_table=LOCAL_TABLE,
    description="Benchmark-only stand-in for TIMESYNC's time_entries spec.",
)


def time_entries_spec() -> tuple[EntitySpec, str]:
    """(spec, origin): TIMESYNC's spec if importable, else the local one."""
    try:
        from erpsync.sync.specs_time import TIME_ENTRIES  # type: ignore[import-not-found]
    except ImportError:
        _register()
        return LOCAL_TIME_ENTRIES, "local"
    return TIME_ENTRIES, "erpsync.sync.specs_time.TIME_ENTRIES"


def prepare_database(conninfo: str, spec: EntitySpec) -> None:
    """Migrate the (fresh) bench database and create the local core table if it is used."""
    import psycopg

    from erpsync.warehouse import migrate

    migrate.migrate(conninfo)
    if spec is LOCAL_TIME_ENTRIES:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(LOCAL_DDL)
