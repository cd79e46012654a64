"""The shapes every sync shares: who is running (``RunInfo``), what an entity is (``EntitySpec``),
how it is read (a :class:`Source`, incrementally per its ``CursorSpec``), how deletes are
detected (a :class:`DeleteStrategy`, reporting its ``DeleteMode``) and what a run did
(``SyncStats``).

Every behaviour that varies per entity is a typed field or a small object with one interface
(the habit of dlt's ``rest_api`` typing and paginators): the source reads pages, the delete
strategy decides before the read whether it can be incremental and returns after the read the
ids to tombstone; the engine (:mod:`erpsync.sync.engine`) is the same for every entity.

Kept free of I/O and heavy imports so DAG files, the engine and the write-back relay can all
import it cheaply.
"""

from __future__ import annotations

import datetime as dt
import getpass
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import psycopg

    from erpsync.audit import Source as AuditSource
    from erpsync.connectors.http import VendorClient
    from erpsync.models.canonical import Canonical

System = Literal["crm", "psa", "erp"]
History = Literal["none", "effective_dated"]
#: A vendor record as the connectors decode it (JSON object).
Record = dict[str, Any]


class DeleteMode(StrEnum):
    """How a vendor tells us a record is gone (the kind of a :class:`DeleteStrategy`)."""

    SALESFORCE_DELETED_FEED = "salesforce_deleted_feed"  # getDeleted feed + IsDeleted via queryAll
    ID_SET_COMPARE = "id_set_compare"  # full read: ids in core but not in this read are deleted
    # incremental reads + windowed count comparison (erpsync.sync.time_expense); full reads
    # compare id sets like ID_SET_COMPARE
    WINDOWED_COUNT = "windowed_count"
    NONE = "none"


@dataclass(frozen=True)
class Read:
    """What one sync reads: all records (``since is None``) or those changed since ``since``."""

    since: dt.datetime | None

    @property
    def mode(self) -> str:
        return "full" if self.since is None else "incremental"


class Source(Protocol):
    """Where an entity's records come from: one vendor listing (``sources.SalesforceQuery``,
    ``HarvestList``, ``HarvestNested``, ``BusinessCentralList``,
    ``BusinessCentralWebService``)."""

    def client(self) -> VendorClient:
        """A new client of the source's system on its default Airflow connection (no I/O):
        for the callers that open things (Airflow tasks, the CLI, benchmarks, tests)."""
        ...

    def pages(
        self, client: VendorClient, read: Read, *, raw: bool = False
    ) -> Iterator[Sequence[Record]]:
        """Pages of vendor records (one page in memory at a time), full or changed since
        ``read.since``. ``raw``: pages may come as ``sources.RawPage`` (JSON bytes per record)
        for a spec with a raw codec."""
        ...

    def records(self, client: VendorClient, keys: Sequence[str]) -> Iterator[list[Record]]:
        """The records ``keys`` re-read one by one (requeue); nothing for sources read in full
        every run."""
        ...


class ConnectWarehouse(Protocol):
    """Opens a second warehouse connection, in autocommit mode, next to the sync's own (the
    windowed delete check keeps its working set there). The caller decides how (Airflow:
    ``warehouse.connection.connect(autocommit=True)``; tests and CLI: ``psycopg.connect(url,
    autocommit=True)``); the library closes what it opens."""

    def __call__(self) -> psycopg.Connection[Any]: ...


@dataclass
class ReadPlan:
    """The read one run is about to make, as its delete strategy sees and may change it.

    The engine fills it after taking the entity lock and reading the watermark; the strategy's
    :meth:`DeleteStrategy.before_read` may turn an incremental read into a full one, bound the
    watermark (``read_started``), name ids already known deleted (``gone``) and add an
    ``observer`` that sees every page read; its :meth:`DeleteStrategy.after_read` returns ids
    found deleted after the read."""

    spec: EntitySpec
    client: VendorClient | None
    #: the watermark's ``cursor_state``, saved with the new watermark
    state: dict[str, Any]
    incremental: bool
    since: dt.datetime | None
    #: opens the second (autocommit) connection a strategy may need
    side: ConnectWarehouse | None = None
    #: closed when the run ends, committed or not (what a strategy opened)
    resources: ExitStack = field(default_factory=ExitStack)
    #: the vendor's clock when the read began: the watermark never moves past it
    read_started: dt.datetime | None = None
    #: source record ids known deleted before the read (soft-deleted by the merge)
    gone: list[str] = field(default_factory=list)
    #: sees every page the read yields, in order, before the engine loads it
    observer: Callable[[Sequence[Record]], None] | None = None
    #: the second connection, once a strategy opened it (``side()``, closed by ``resources``)
    side_conn: psycopg.Connection[Any] | None = None

    @property
    def read(self) -> Read:
        return Read(since=self.since if self.incremental else None)


class DeleteStrategy(Protocol):
    """How deletes of one kind are found: hooks before and after the read (implementations in
    :mod:`erpsync.sync.deletes` and :mod:`erpsync.sync.time_expense`)."""

    @property
    def mode(self) -> DeleteMode: ...

    @property
    def full_reads_only(self) -> bool:
        """Whether every read must be full (the id set is the evidence)."""
        ...

    def before_read(self, plan: ReadPlan) -> None: ...

    def after_read(self, plan: ReadPlan) -> list[str]:
        """Source record ids found deleted by the read just made; the engine loads them as
        tombstones (records flagged with the spec's ``deleted_flag``)."""
        ...


#: A raw-record codec (e.g. :func:`erpsync.models.time_expense.encode_time_entry`): one
#: record's JSON bytes -> (key, modstamp COPY text, columns COPY text, row hash), or None to
#: send the record through mapper and model.
RawCodec = Callable[[Any], "tuple[str, str, str, str] | None"]
#: Derived core rows kept in the sync's transaction after the merge (connection, run).
AfterMerge = Callable[["psycopg.Connection[Any]", "RunInfo"], None]


@dataclass(frozen=True)
class RunInfo:
    """The Airflow run (or local label) behind a sync or a write, recorded on its rows."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int = 1
    actor: str = "local"

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> RunInfo:
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

    def audit_source(self) -> AuditSource:
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

    ``source`` reads the vendor's records; ``model`` is the canonical pydantic model;
    ``mapper`` turns one vendor record into zero or more canonical rows for ``core_table``;
    ``natural_key`` names the core columns the merge upserts on; ``deletes`` finds the
    records the vendor no longer has.
    """

    name: str
    system: System
    source: Source
    model: type[Canonical]
    natural_key: tuple[str, ...]
    cursor: CursorSpec | None
    deletes: DeleteStrategy
    raw_table: str
    core_table: str
    history: History = "none"
    write_back: tuple[str, ...] = ()
    record_key: str = "Id"  # vendor field identifying a source record (quarantine, raw, deletes)
    mapper: Callable[[Record], list[Record]] | None = None
    deleted_flag: str | None = None  # vendor field marking a soft-deleted record (IsDeleted)
    # (id_map entity_type, id_map column, core column): rows get a canonical_id from core.id_map
    id_map: tuple[str, str, str] | None = None
    description: str = ""
    #: the bulk path: pages read as JSON bytes (``sources.RawPage``), encoded per record
    codec: RawCodec | None = None
    #: specs sharing a core table (rate kinds): ``column = value`` conditions on core rows
    scope: Mapping[str, str] | None = None
    #: derived core rows kept in the same transaction (vat_rates)
    after_merge: AfterMerge | None = None

    @property
    def incremental(self) -> bool:
        """Whether runs after the first read only what changed since the watermark. Deletes by
        id-set comparison need the full id set, so those specs always read everything."""
        return self.cursor is not None and not self.deletes.full_reads_only

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

    def as_dict(self) -> dict[str, Any]:
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

    def summary(self) -> str:
        """What the task log shows: the entity, the run and the counts table."""
        return f"erpsync sync {self.system}/{self.entity} run {self.run_id}\n{self.table()}"
