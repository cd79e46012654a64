"""The shapes every sync shares: who is running (``RunInfo``), what an entity is (``EntitySpec``),
how it is read incrementally (``CursorSpec``), how deletes are detected (``DeleteMode``) and what
a run did (``SyncStats``).

Kept free of I/O and heavy imports so DAG files, the engine and the write-back relay can all
import it cheaply.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from erpsync import audit

System = Literal["crm", "psa", "erp"]
History = Literal["none", "effective_dated"]


class DeleteMode(StrEnum):
    """How a vendor tells us a record is gone."""

    SALESFORCE_DELETED_FEED = "salesforce_deleted_feed"  # getDeleted feed + IsDeleted via queryAll
    ID_SET_COMPARE = "id_set_compare"  # full read: ids in core but not in this read are deleted
    # incremental reads + windowed count comparison (erpsync.sync.time_expense); full reads
    # compare id sets like ID_SET_COMPARE
    WINDOWED_COUNT = "windowed_count"
    NONE = "none"


@dataclass(frozen=True)
class RunInfo:
    """The Airflow run (or local label) behind a sync or a write, recorded on its rows."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int = 1
    actor: str = "local"

    @classmethod
    def from_context(cls, context: Any) -> RunInfo:
        from erpsync.audit import actor_from_context

        ti = context["ti"]
        return cls(
            dag_id=str(ti.dag_id),
            run_id=str(ti.run_id),
            task_id=str(ti.task_id),
            try_number=int(getattr(ti, "try_number", 1) or 1),
            actor=actor_from_context(context),
        )

    @classmethod
    def local(cls, label: str = "local") -> RunInfo:
        """A run outside Airflow (tests, CLI): unique run id, actor = the OS user."""
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no passwd entry in some containers
            user = "unknown"
        return cls(
            dag_id=f"local:{label}",
            run_id=f"{label}__{uuid.uuid4().hex[:12]}",
            task_id=label,
            try_number=1,
            actor=f"local:{user}",
        )

    def audit_source(self) -> audit.Source:
        from erpsync.audit import Source

        return Source(dag_id=self.dag_id, run_id=self.run_id, task_id=self.task_id)


@dataclass(frozen=True)
class CursorSpec:
    """Incremental read: the vendor field holding the modification stamp, and the tie-breaker.

    ``field`` is the vendor's modstamp (``SystemModstamp``, ``updated_at``,
    ``lastModifiedDateTime``); ``id_field`` breaks ties between equal stamps. ``overlap_seconds``
    re-reads a small window before the watermark so records committed late at the boundary are not
    lost (the merge makes re-reading harmless).
    """

    field: str
    id_field: str = "id"
    overlap_seconds: int = 0


@dataclass(frozen=True)
class EntitySpec:
    """One entity synced from one system into one core table.

    ``source`` describes the read (a ``sources.SourceRead``); ``model`` is the canonical pydantic
    model; ``mapper`` turns one vendor record into zero or more canonical rows for ``core_table``;
    ``natural_key`` names the core columns the merge upserts on.
    """

    name: str
    system: System
    source: Any
    model: type
    natural_key: tuple[str, ...]
    cursor: CursorSpec | None
    deletes: DeleteMode
    raw_table: str
    core_table: str
    history: History = "none"
    write_back: tuple[str, ...] = ()
    record_key: str = "Id"  # vendor field identifying a source record (quarantine, raw, deletes)
    mapper: Callable[[dict], Any] | None = None
    deleted_flag: str | None = None  # vendor field marking a soft-deleted record (IsDeleted)
    # (id_map entity_type, id_map column, core column): rows get a canonical_id from core.id_map
    id_map: tuple[str, str, str] | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def incremental(self) -> bool:
        """Whether runs after the first read only what changed since the watermark. Deletes by
        id-set comparison need the full id set, so those specs always read everything."""
        return self.cursor is not None and self.deletes != DeleteMode.ID_SET_COMPARE

    @property
    def asset_uri(self) -> str:
        schema, _, table = self.core_table.partition(".")
        return f"erpsync://warehouse/{schema}/{table}"


@dataclass
class SyncStats:
    """What one entity run did. Counts come from the database (RETURNING / row counts)."""

    entity: str
    system: str
    run_id: str
    mode: str = "full"  # full | incremental
    read: int = 0
    loaded: int = 0  # valid rows landed in raw
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    deleted: int = 0
    written_back: int = 0  # outbox rows enqueued
    changed_keys: list[str] = field(default_factory=list)
    watermark: str | None = None
    #: requeued quarantine records served by this run, by outcome (erpsync.sync.requeue)
    requeued: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deleted

    def as_dict(self) -> dict:
        return {
            "entity": self.entity,
            "system": self.system,
            "mode": self.mode,
            "read": self.read,
            "loaded": self.loaded,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "deleted": self.deleted,
            "written_back": self.written_back,
            "watermark": self.watermark,
        }

    def table(self) -> str:
        """A readable table for the task log."""
        rows = [(k, str(v)) for k, v in self.as_dict().items()]
        width = max(len(k) for k, _ in rows)
        vwidth = max(len(v) for _, v in rows)
        line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
        out = [line]
        out += [f"| {k.ljust(width)} | {v.rjust(vwidth)} |" for k, v in rows]
        out.append(line)
        return "\n".join(out)
