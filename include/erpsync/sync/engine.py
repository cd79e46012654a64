"""The load path: one entity run, in one warehouse transaction.

    stream pages -> map + validate (the prebuilt TypeAdapter) -> quarantine invalid records
    -> COPY valid payloads into raw.vendor_records and canonical rows into a staging table
    -> merge into core (upsert on the natural key, only where the row hash differs)
    -> apply deletes (the spec's delete strategy: flagged and tombstoned records, ids it
       knew before the read; id-set comparison on full reads)
    -> enqueue write-back (outbox, same transaction) -> advance the watermark
    -> ops.run_stats row -> COMMIT

The caller opens the warehouse connection and the vendor client (``spec.source.client()``)
and closes them; the engine runs its transaction on the connection it is given.

Records requeued from the console (:mod:`erpsync.sync.requeue`) are re-read by id after an
incremental read and take the same path; they never move the watermark.

Everything happens in one transaction, so a run killed anywhere leaves nothing visible and the
watermark where it was; the rerun starts from the same place. Counts (inserted, updated,
unchanged, deleted, quarantined) come from the database (RETURNING, the server's COPY row
counts and counts over the staging table), not from Python loops. Memory is bounded by a few
pages.

Bulk path (the million-entry time-entry sync): a spec with a raw codec
(``spec.codec``, e.g. ``erpsync.models.time_expense.encode_time_entry``)
reads its pages as JSON bytes per record (:class:`sources.RawPage`); the codec turns a record's
bytes into its COPY text and row hash, equal to what map + validate + hash would give, or
declines it (then the record takes that path, which decides quarantine); the bytes are landed
in raw as they came. The COPYs of page N run in a helper thread (:class:`_Writer`) while page
N+1 is encoded, so PostgreSQL and Python work at the same time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, get_args

import orjson
from psycopg import sql
from pydantic import BaseModel, ValidationError

from erpsync.models.canonical import adapter_for
from erpsync.models.reasons import (
    DATABASE_REFUSED,
    MAPPING_FAILED,
    RecordError,
    from_validation_error,
)
from erpsync.progress import Progress
from erpsync.sync import requeue, sources, storable
from erpsync.sync.spec import (
    ConnectWarehouse,
    DeleteMode,
    EntitySpec,
    RawCodec,
    ReadPlan,
    Record,
    RunInfo,
    SyncStats,
)
from erpsync.writeback import outbox

if TYPE_CHECKING:
    from typing import TypeAlias

    import psycopg

    from erpsync.connectors.http import VendorClient

    Conn: TypeAlias = psycopg.Connection[Any]
    Cur: TypeAlias = psycopg.Cursor[Any]

log = logging.getLogger(__name__)

BOOKKEEPING = ("source_record_id", "row_hash", "source_modstamp")
KEY_SEPARATOR = "|"
#: From this many staged rows on, the merge is an UPDATE + INSERT pair instead of one
#: ``INSERT ... ON CONFLICT`` (see ``_merge``).
BULK_MERGE_ROWS = 100_000


class SyncError(RuntimeError):
    """A sync that must not commit (the message says why and what to do)."""


# ------------------------------------------------------------------ helpers


def _table(qualified: str) -> sql.Identifier:
    schema, _, name = qualified.partition(".")
    return sql.Identifier(schema, name)


def _hash_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


_HASH_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def row_hash(row: dict[str, Any]) -> str:
    """SHA-256 of the canonical content: compact JSON with sorted keys, dates and datetimes in
    ISO 8601, Decimals normalized (160 == 160.00). orjson encodes in one C call (only Decimals
    come back to Python), which keeps hashing cheap on the million-row path."""
    try:
        body = orjson.dumps(row, default=_hash_default, option=_HASH_OPTIONS)
    except TypeError:  # e.g. an int beyond 64 bits: the slow, exact path
        body = json.dumps(
            {str(k): _hash_default(v) if isinstance(v, Decimal) else v for k, v in row.items()},
            sort_keys=True,
            separators=(",", ":"),
            default=lambda v: v.isoformat() if isinstance(v, dt.date) else str(v),
            ensure_ascii=False,
        ).encode()
    return hashlib.sha256(body).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _payload(record: Any) -> str:
    try:
        return orjson.dumps(record, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # e.g. an int beyond 64 bits, or an unpaired surrogate in a string
        return json.dumps(record, default=_json_default)


def _is_flat(model: type[BaseModel]) -> bool:
    """True if no field of ``model`` holds a nested pydantic model: then a validated instance's
    ``__dict__`` is already what ``model_dump()`` would build."""
    stack = [f.annotation for f in model.model_fields.values()]
    while stack:
        kind = stack.pop()
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return False
        stack.extend(get_args(kind))
    return True


def _model_columns(spec: EntitySpec) -> list[str]:
    return list(spec.model.model_fields)


def _scope_sql(spec: EntitySpec, alias: str | None = None) -> tuple[sql.Composable, list[str]]:
    """Extra ``AND col = value`` conditions for specs sharing a core table (rate kinds)."""
    scope = spec.scope or {}
    parts: list[sql.Composable] = []
    params: list[str] = []
    for column, value in scope.items():
        ident = sql.Identifier(alias, column) if alias else sql.Identifier(column)
        parts.append(sql.SQL(" AND {} = %s").format(ident))
        params.append(value)
    return sql.SQL("").join(parts), params


def _key_text(columns: Iterable[str], alias: str | None = None) -> sql.Composable:
    """SQL for the natural key as one text (``a|b``)."""
    idents = [sql.Identifier(alias, c) if alias else sql.Identifier(c) for c in columns]
    if len(idents) == 1:
        return sql.SQL("{}::text").format(idents[0])
    return sql.SQL("concat_ws({}, {})").format(
        sql.Literal(KEY_SEPARATOR),
        sql.SQL(", ").join(sql.SQL("{}::text").format(i) for i in idents),
    )


class _Clock:
    """Seconds per stage for ``run_entity_sync(timings=...)``; a no-op without a dict."""

    __slots__ = ("timings", "mark")

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.mark = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.mark
        self.mark = now


# ------------------------------------------------------------------ the run


def run_entity_sync(
    conn: Conn,
    spec: EntitySpec,
    *,
    run: RunInfo,
    client: VendorClient | None = None,
    side: ConnectWarehouse | None = None,
    pages: Iterable[Sequence[Record]] | None = None,
    full: bool | None = None,
    timings: dict[str, float] | None = None,
) -> SyncStats:
    """Sync one entity into the warehouse in one transaction on ``conn`` and return what it
    did.

    ``client`` is the client of the spec's system (``spec.source.client()``): the read, the
    requeue re-reads and the delete strategy use it. ``side`` opens a second, autocommit
    warehouse connection for a delete strategy that needs one (the windowed count check).
    ``pages`` replaces the connector read (tests, backfills from files); ``full`` forces a
    full (True) or incremental (False) read. ``timings`` (a dict, e.g. from ``erpsync bench``)
    receives the seconds spent per stage: ``setup`` (lock, watermark, staging tables),
    ``extract`` (waiting for pages), ``validate`` (map, validate, hash, serialise), ``stage``
    (COPY), ``deletes`` (the delete strategy's check after the read), ``merge`` (upsert and
    deletes), ``finish`` (counts, quarantine, write-back, watermark, run stats) and ``commit``;
    a few clock reads per page, nothing per record.
    """
    try:
        tx = conn.transaction()
        with tx:  # commits on success, rolls back on any exception
            stats = _run(
                conn, spec, run, client=client, side=side, pages=pages, full=full, timings=timings
            )
            committing = time.perf_counter()
        if timings is not None:
            timings["commit"] = timings.get("commit", 0.0) + time.perf_counter() - committing
    except BaseException as exc:
        _record_failure(conn, spec, run, exc)
        raise
    return stats


def _record_failure(conn: Conn, spec: EntitySpec, run: RunInfo, exc: BaseException) -> None:
    """Best effort: a 'failed' ops.run_stats row, in its own transaction after the rollback."""
    try:
        if conn.closed:
            return
        with conn.transaction():
            conn.execute(
                """INSERT INTO ops.run_stats (dag_id, run_id, task_id, try_number, entity, status,
                       finished_at, detail)
                   VALUES (%s, %s, %s, %s, %s, 'failed', now(), %s::jsonb)""",
                (
                    run.dag_id,
                    run.run_id,
                    run.task_id,
                    run.try_number,
                    spec.name,
                    json.dumps(
                        {
                            "error": type(exc).__name__,
                            # engine errors say what to do; others may echo vendor data
                            "message": str(exc)[:500] if isinstance(exc, SyncError) else None,
                            "system": spec.system,
                        }
                    ),
                ),
            )
    except Exception:
        log.warning("could not record the failed run of %s", spec.name, exc_info=True)


def _run(
    conn: Conn,
    spec: EntitySpec,
    run: RunInfo,
    *,
    client: VendorClient | None,
    side: ConnectWarehouse | None,
    pages: Iterable[Sequence[Record]] | None,
    full: bool | None,
    timings: dict[str, float] | None = None,
) -> SyncStats:
    clock = _Clock(timings)
    stats = SyncStats(entity=spec.name, system=spec.system, run_id=run.run_id)
    # one run per entity at a time; a second waits rather than interleaving
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"erpsync.sync:{spec.system}:{spec.name}",)
    )
    # sorts and hash joins over a million staged rows stay in memory (this transaction only)
    conn.execute("SET LOCAL work_mem = '64MB'")
    watermark = conn.execute(
        """SELECT cursor_ts, cursor_state FROM ops.sync_watermarks
           WHERE source_system = %s AND entity = %s FOR UPDATE""",
        (spec.system, spec.name),
    ).fetchone()
    previous_ts = watermark[0] if watermark else None
    state = dict(watermark[1]) if watermark else {}

    incremental = spec.incremental and previous_ts is not None
    if full is not None:
        incremental = (not full) and previous_ts is not None
    since = None
    if incremental and previous_ts is not None and spec.cursor is not None:
        since = previous_ts - dt.timedelta(seconds=spec.cursor.overlap_seconds)

    plan = ReadPlan(
        spec=spec, client=client, state=state, incremental=incremental, since=since, side=side
    )
    with plan.resources:  # what the delete strategy opens is closed when the run ends
        return _read_and_merge(conn, spec, run, plan, pages, previous_ts, stats, clock)


def _read_and_merge(
    conn: Conn,
    spec: EntitySpec,
    run: RunInfo,
    plan: ReadPlan,
    pages: Iterable[Sequence[Record]] | None,
    previous_ts: dt.datetime | None,
    stats: SyncStats,
    clock: _Clock,
) -> SyncStats:
    # the delete strategy first: it may need a full read instead (the Salesforce deleted feed
    # no longer reaching back to the last run), bound the watermark, name ids known deleted
    # and watch the pages read
    spec.deletes.before_read(plan)
    read = plan.read
    state = plan.state
    stats.mode = read.mode
    if pages is None:
        pages = spec.source.pages(_vendor(spec, plan.client), read, raw=spec.codec is not None)
    if plan.observer is not None:
        pages = _observed(pages, plan.observer)
    # records a data engineer requeued from the console (erpsync.sync.requeue): re-read by id
    # after the read below unless this read is a full one (which reads them anyway)
    requeued = requeue.pending(conn, spec.system, spec.name)

    _create_staging(conn, spec)
    # raw rows this run id already has (an Airflow run cleared after it committed): counted
    # in ``loaded`` as before; the rows this run adds are counted by its COPYs (below)
    landed_before = _scalar(
        conn,
        "SELECT count(*) FROM raw.vendor_records WHERE run_id = %s AND source_system = %s "
        "AND entity = %s",
        (run.run_id, spec.system, spec.name),
    )
    copied = _load(conn, spec, run, pages, stats, clock)
    # ids the strategy found deleted by this read: loaded as tombstone records
    found = spec.deletes.after_read(plan)
    clock.lap("deletes")
    if found:
        if spec.deleted_flag is None:
            raise SyncError(f"{spec.name}: deletes found after the read need a deleted_flag")
        tombstones = [{spec.record_key: rid, spec.deleted_flag: True} for rid in found]
        again = _load(conn, spec, run, [tombstones], stats, clock)
        copied = {name: copied[name] + again[name] for name in copied}
    # the watermark comes from the read alone: a record re-read by id may carry a newer stamp
    # than records the read has not reached yet
    read_max = _scalar(conn, "SELECT max(source_modstamp) FROM _sync_seen")
    if requeued and read.mode == "incremental":
        again = _load(
            conn,
            spec,
            run,
            spec.source.records(_vendor(spec, plan.client), requeue.keys(requeued)),
            stats,
            clock,
        )
        copied = {name: copied[name] + again[name] for name in copied}
    if plan.gone:
        with conn.cursor().copy("COPY _sync_gone (source_record_id) FROM STDIN") as copy:
            for rid in plan.gone:
                copy.write_row((rid,))

    # rows COPY reported loaded (the server's "COPY n"), not a second scan of a million rows
    stats.read = copied["seen"]
    stats.loaded = landed_before + copied["raw"]
    if read.mode == "full" and spec.deletes.mode != DeleteMode.NONE:
        _guard_empty_full_read(conn, spec, stats)

    clock.lap("finish")
    if spec.id_map is not None:
        _ensure_id_map(conn, spec)
    inserted, updated, staged = _merge(conn, spec, run)
    deleted = _apply_deletes(conn, spec, run, full_read=read.mode == "full")
    if spec.after_merge is not None:  # derived core rows in the same transaction (vat_rates)
        spec.after_merge(conn, run)
    clock.lap("merge")
    stats.inserted, stats.updated, stats.deleted = len(inserted), len(updated), len(deleted)
    stats.unchanged = staged - stats.inserted - stats.updated
    stats.changed_keys = sorted(set(inserted) | set(updated) | set(deleted))

    stats.quarantined = _quarantine_count(conn, spec, run)
    _resolve_quarantine(conn, spec, run)
    stats.requeued = requeue.finish(conn, spec, run, requeued)

    stats.written_back = _enqueue_write_back(conn, spec, stats.changed_keys, run)

    new_ts = read_max
    # A record changed while we paged may have been passed over while a later one was seen:
    # never move the watermark past the moment the read began (re-reading is harmless).
    if new_ts is not None and plan.read_started is not None:
        new_ts = min(new_ts, plan.read_started)
    if previous_ts is not None and (new_ts is None or new_ts < previous_ts):
        new_ts = previous_ts
    stats.watermark = new_ts.isoformat() if new_ts else None
    conn.execute(
        """INSERT INTO ops.sync_watermarks (source_system, entity, cursor_ts, cursor_state,
               updated_at, updated_by_run)
           VALUES (%s, %s, %s, %s::jsonb, now(), %s)
           ON CONFLICT (source_system, entity) DO UPDATE
           SET cursor_ts = EXCLUDED.cursor_ts, cursor_state = EXCLUDED.cursor_state,
               updated_at = now(), updated_by_run = EXCLUDED.updated_by_run""",
        (spec.system, spec.name, new_ts, json.dumps(state), run.run_id),
    )
    conn.execute(
        """INSERT INTO ops.run_stats (dag_id, run_id, task_id, try_number, entity, status,
               finished_at, records_read, records_loaded, records_unchanged, records_quarantined,
               records_deleted, records_written_back, detail)
           VALUES (%s, %s, %s, %s, %s, 'success', now(), %s, %s, %s, %s, %s, %s, %s::jsonb)""",
        (
            run.dag_id,
            run.run_id,
            run.task_id,
            run.try_number,
            spec.name,
            stats.read,
            stats.inserted + stats.updated,
            stats.unchanged,
            stats.quarantined,
            stats.deleted,
            stats.written_back,
            json.dumps(
                {
                    "system": spec.system,
                    "mode": stats.mode,
                    "inserted": stats.inserted,
                    "updated": stats.updated,
                    "landed_raw": stats.loaded,
                    "watermark": stats.watermark,
                    "actor": run.actor,
                    "requeued": stats.requeued,
                }
            ),
        ),
    )
    clock.lap("finish")
    return stats


def _scalar(conn: Conn, query: str | sql.Composed, params: Sequence[Any] = ()) -> Any:
    """The one value of a one-row query (an aggregate)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _vendor(spec: EntitySpec, client: VendorClient | None) -> VendorClient:
    if client is None:
        raise SyncError(
            f"{spec.system}/{spec.name}: no {spec.system.upper()} client given; the caller "
            "opens one with spec.source.client()"
        )
    return client


def _observed(
    pages: Iterable[Sequence[Record]], observer: Callable[[Sequence[Record]], None]
) -> Iterator[Sequence[Record]]:
    for page in pages:
        observer(page)
        yield page


# ------------------------------------------------------------------ staging and load


def _create_staging(conn: Conn, spec: EntitySpec) -> None:
    columns = _model_columns(spec)
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE _sync_stage ON COMMIT DROP AS SELECT {cols} FROM {core} WITH NO DATA"
        ).format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in (*columns, *BOOKKEEPING)),
            core=_table(spec.core_table),
        )
    )
    conn.execute("ALTER TABLE _sync_stage ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY")
    _copy_constraints(conn, spec, columns)
    conn.execute(
        """CREATE TEMP TABLE _sync_seen (source_record_id text NOT NULL,
               source_modstamp timestamptz, valid boolean NOT NULL) ON COMMIT DROP"""
    )
    conn.execute("CREATE TEMP TABLE _sync_gone (source_record_id text NOT NULL) ON COMMIT DROP")


def _copy_constraints(conn: Conn, spec: EntitySpec, columns: list[str]) -> None:
    """Give the staging table core's NOT NULL and CHECK constraints on the staged columns, so a
    row core would refuse is refused when its page is staged, where the writer can isolate it
    (:meth:`_Writer._isolate`), not by the set-based merge, which can only fail as a whole."""
    import psycopg

    schema, _, name = spec.core_table.partition(".")
    not_null = conn.execute(
        """SELECT column_name FROM information_schema.columns
            WHERE table_schema = %s AND table_name = %s AND is_nullable = 'NO'
              AND column_name = ANY(%s)""",
        (schema, name, columns),
    ).fetchall()
    for (column,) in not_null:
        conn.execute(
            sql.SQL("ALTER TABLE _sync_stage ALTER COLUMN {} SET NOT NULL").format(
                sql.Identifier(column)
            )
        )
    checks = conn.execute(
        """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = %s::regclass AND contype = 'c'""",
        (spec.core_table,),
    ).fetchall()
    for constraint, definition in checks:
        try:
            with conn.transaction():  # a check on a column the stage lacks: skipped
                conn.execute(
                    sql.SQL("ALTER TABLE _sync_stage ADD CONSTRAINT {} {}").format(
                        sql.Identifier(constraint),
                        sql.SQL(definition),  # the catalog's own text, not input
                    )
                )
        except psycopg.errors.UndefinedColumn:
            continue


class _Copy:
    """One COPY's rows for a page, in read order: blocks of preformatted COPY text (the raw
    codec's records) and tuples for psycopg's ``write_row`` (the pydantic path)."""

    __slots__ = ("items", "buf", "joiner")

    def __init__(self, joiner: str | bytes) -> None:
        self.items: list[Any] = []
        self.buf: list[Any] = []
        self.joiner = joiner

    def row(self, row: tuple[Any, ...]) -> None:
        if self.buf:
            self.items.append(self.joiner.join(self.buf))
            self.buf = []
        self.items.append(row)

    def __bool__(self) -> bool:
        return bool(self.items or self.buf)

    def write(self, cur: Cur, statement: str | sql.Composed) -> None:
        if self.buf:
            self.items.append(self.joiner.join(self.buf))
            self.buf = []
        with cur.copy(statement) as copy:
            rows_pending = False
            for item in self.items:
                if isinstance(item, tuple):
                    copy.write_row(item)
                    rows_pending = True
                    continue
                if rows_pending:  # write_row buffers: send its rows before the next block
                    pending = copy.formatter.end()
                    if pending:
                        copy.write(pending)
                    rows_pending = False
                copy.write(item)


_RAW_COPY = (
    "COPY raw.vendor_records (source_system, entity, run_id, record_key, source_modstamp, "
    "payload) FROM STDIN"
)
_SEEN_COPY = "COPY _sync_seen (source_record_id, source_modstamp, valid) FROM STDIN"


def _copy_text(value: str) -> str:
    """``value`` escaped for COPY's text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t")
        value = value.replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_bytes(payload: bytes) -> bytes:
    """A record's JSON bytes as a COPY text field (JSON escapes control characters inside
    strings; whitespace between tokens may still hold a newline or tab)."""
    if b"\\" in payload:
        payload = payload.replace(b"\\", b"\\\\")
    if b"\n" in payload or b"\t" in payload or b"\r" in payload:
        payload = payload.replace(b"\n", b"\\n").replace(b"\t", b"\\t")
        payload = payload.replace(b"\r", b"\\r")
    return payload


class _PageRows:
    """What one page adds to the COPYs (in read order), the tombstones and the quarantine."""

    __slots__ = ("seen", "raw", "stage", "gone", "bad", "source")

    def __init__(self) -> None:
        self.seen, self.raw, self.stage = _Copy(""), _Copy(b""), _Copy("")
        self.gone: list[str] = []
        self.bad: list[tuple[str | None, RecordError, Any]] = []
        #: (number of records, record by index as a dict): lets the writer re-stage a page
        #: record by record when the database refuses it
        self.source: tuple[int, Callable[[int], Any]] | None = None


class _Validator:
    """The mapper -> pydantic path of one record (every record of a dict page, and the
    records a raw codec declines): it decides validity and the quarantine reason."""

    def __init__(self, spec: EntitySpec, run: RunInfo) -> None:
        self.spec, self.run = spec, run
        self.adapter = adapter_for(spec.model)  # built once at import, reused for every record
        self.flat = _is_flat(spec.model)
        self.columns = _model_columns(spec)
        self.modstamp_field = spec.cursor.field if spec.cursor else None
        #: set by :func:`_load` from the core table's column types
        self.storable: storable.StorableCheck | None = None

    def key_and_modstamp(self, record: Any) -> tuple[str | None, Any]:
        """The record's key (as storable text) and modstamp; (None, None) for a non-object."""
        if not isinstance(record, dict):
            return None, None
        key = record.get(self.spec.record_key)
        key = None if key is None else storable.clean_text(str(key))
        modstamp = record.get(self.modstamp_field) if self.modstamp_field else None
        if modstamp is not None and not isinstance(modstamp, str | dt.datetime):
            modstamp = None  # a malformed modstamp is the model's to report
        return key, modstamp

    def __call__(self, record: Any, out: _PageRows, cleaned: bool = False) -> None:
        spec, adapter, flat, mapper = self.spec, self.adapter, self.flat, self.spec.mapper
        key, modstamp = self.key_and_modstamp(record)
        if spec.deleted_flag and isinstance(record, dict) and record.get(spec.deleted_flag):
            if key is not None:
                out.gone.append(key)
                out.seen.row((key, modstamp, True))
            return
        try:
            if key is None:
                raise RecordError("missing_required_field", f"record has no {spec.record_key}")
            rows = [
                adapter.validate_python(row).__dict__
                if flat
                else adapter.validate_python(row).model_dump()
                for row in (mapper(record) if mapper else [record])
            ]
            if self.storable is not None:
                for row in rows:
                    self.storable(row)
        except (ValidationError, RecordError) as exc:
            if not cleaned and isinstance(exc, ValidationError) and _unstorable_text(exc):
                # text no model or database can hold (an unpaired surrogate): the documented
                # cleaning rule (storable.clean_text), then validate again
                self(storable.clean_value(record), out, cleaned=True)
                return
            error = from_validation_error(exc) if isinstance(exc, ValidationError) else exc
            self._reject(key, modstamp, error, record, out)
            return
        except Exception as exc:  # noqa: BLE001 - a mapper bug on one record is that record's
            error = RecordError(MAPPING_FAILED, f"{type(exc).__name__}: {exc}")
            self._reject(key, modstamp, error, record, out)
            return
        out.seen.row((key, modstamp, True))
        out.raw.row((spec.system, spec.name, self.run.run_id, key, modstamp, _payload(record)))
        for row in rows:
            out.stage.row((*(row[c] for c in self.columns), key, row_hash(row), modstamp))

    @staticmethod
    def _reject(
        key: str | None, modstamp: Any, error: RecordError, record: Any, out: _PageRows
    ) -> None:
        out.bad.append((key, error, record))
        if key is not None:
            out.seen.row((key, modstamp, False))


def _unstorable_text(exc: ValidationError) -> bool:
    return any(e["type"] == "string_unicode" for e in exc.errors(include_url=False))


#: JSON escapes of NUL and of UTF-16 surrogates (a lone one cannot be stored as UTF-8)
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abAB])")


def _encode_raw_page(
    page: sources.RawPage, codec: RawCodec, validate: _Validator, prefix: bytes
) -> _PageRows:
    """A raw page through the spec's codec: ``codec(json bytes)`` gives (key, modstamp COPY
    text, columns COPY text, row hash) or None; None sends the record (decoded as the dict
    path would) through ``validate``. The raw landing gets the record's bytes as they came."""
    out = _PageRows()
    raw_buf, stage_buf, seen_buf = out.raw.buf, out.stage.buf, out.seen.buf
    for index, item in enumerate(page.raw):
        encoded = data = None
        if not isinstance(item, dict):
            data = bytes(item)
            # a \u0000 or surrogate escape is text PostgreSQL cannot store as it stands: such
            # a record takes the pydantic path, whose storable check cleans or refuses it
            if b"\\u" not in data or _UNSTORABLE_ESCAPE.search(data) is None:
                try:
                    encoded = codec(item)
                except Exception:  # noqa: BLE001 - a codec bug declines; pydantic decides
                    encoded = None
        if encoded is None:
            validate(page.record(index), out)
            # a pydantic-path row closes the text buffers: keep the read order
            raw_buf, stage_buf, seen_buf = out.raw.buf, out.stage.buf, out.seen.buf
            continue
        key, mod, cols, digest = encoded
        assert data is not None  # a record the codec encoded came as bytes
        raw_buf.extend((prefix, key.encode(), b"\t", mod.encode(), b"\t", _copy_bytes(data), b"\n"))
        stage_buf.append(f"{cols}\t{key}\t{digest}\t{mod}\n")
        seen_buf.append(f"{key}\t{mod}\tt\n")
    return out


class _Writer:
    """The page COPYs (and quarantine inserts) on the sync's connection, in a helper thread
    one page behind the encoding, so PostgreSQL parses page N while this thread encodes page
    N+1 (both threads otherwise wait on each other; the waits release the GIL). Pages are
    written in order; the connection is used by this thread only until :meth:`close`; the
    first error stops the writing and is raised in the sync's thread."""

    def __init__(
        self,
        conn: Conn,
        spec: EntitySpec,
        run: RunInfo,
        stage_copy: sql.Composed,
        timings: dict[str, float] | None,
        validate: _Validator,
    ) -> None:
        import queue
        import threading

        self.conn, self.spec, self.run, self.stage_copy = conn, spec, run, stage_copy
        self.validate = validate
        self.timings = timings
        self.counts = {"raw": 0, "seen": 0}
        self.error: BaseException | None = None
        self.busy = 0.0
        self.queue: queue.Queue[_PageRows | None] = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._run, name="erpsync-copy", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        cur = self.conn.cursor()
        while True:
            out = self.queue.get()
            if out is None:
                return
            if self.error is not None:
                continue  # drain: the sync's thread raises the error
            started = time.perf_counter()
            try:
                self._write_page(cur, out)
            except BaseException as exc:  # noqa: BLE001 - raised in the sync's thread
                self.error = exc
            self.busy += time.perf_counter() - started

    def _write_page(self, cur: Cur, out: _PageRows) -> None:
        """Write a page in a savepoint; if the database refuses it, isolate the record(s) it
        refuses (:meth:`_isolate`): they are quarantined, every other record is staged."""
        try:
            with self.conn.transaction():
                added = self._write(cur, out)
        except _REFUSALS as exc:
            if out.source is None:
                raise
            count, record = out.source
            log.warning(
                "%s: the database refused a page of %d records (%s); isolating the record(s)",
                self.spec.name,
                count,
                _refusal_text(exc),
            )
            self._isolate(cur, record, list(range(count)), exc)
            return
        self._count(added)

    def _isolate(
        self, cur: Cur, record: Callable[[int], Any], indices: list[int], exc: BaseException
    ) -> None:
        """Bisect ``indices`` until each refused record stands alone: halves the database
        accepts are staged (each in its own savepoint), a lone refused record is quarantined
        ``database_refused`` with the database's message. Records go through the pydantic path
        (the raw codec's rows are equal to it by construction)."""
        if len(indices) == 1:
            self._refused(cur, record(indices[0]), exc)
            return
        middle = len(indices) // 2
        for half in (indices[:middle], indices[middle:]):
            out = _PageRows()
            for index in half:
                self.validate(record(index), out)
            try:
                with self.conn.transaction():
                    added = self._write(cur, out)
            except _REFUSALS as refused:
                self._isolate(cur, record, half, refused)
                continue
            self._count(added)

    def _refused(self, cur: Cur, record: Any, exc: BaseException) -> None:
        """One record the database refuses: quarantined with its message, marked seen (not
        valid, so no delete logic counts it as gone), landed in raw if raw takes it."""
        key, modstamp = self.validate.key_and_modstamp(record)
        error = RecordError(DATABASE_REFUSED, _refusal_text(exc))
        if key is not None:
            with self.conn.transaction():
                with cur.copy(_SEEN_COPY) as copy:
                    copy.write_row((key, modstamp, False))
            self._count({"seen": 1})
            try:
                with self.conn.transaction():
                    with cur.copy(_RAW_COPY) as copy:
                        copy.write_row(
                            (
                                self.spec.system,
                                self.spec.name,
                                self.run.run_id,
                                key,
                                modstamp,
                                _payload(record),
                            )
                        )
                self._count({"raw": 1})
            except _REFUSALS:
                pass  # the payload itself cannot be landed as received: the quarantine has it
        _quarantine(self.conn, self.spec, self.run, [(key, error, record)])

    def _count(self, added: dict[str, int]) -> None:
        for name, value in added.items():
            self.counts[name] += value

    def _write(self, cur: Cur, out: _PageRows) -> dict[str, int]:
        """The page's COPYs and quarantine rows; returns the rows COPY reported loaded."""
        added = {"raw": 0, "seen": 0}
        if out.raw:
            out.raw.write(cur, _RAW_COPY)
            added["raw"] += max(cur.rowcount, 0)
        if out.stage:
            out.stage.write(cur, self.stage_copy)
        if out.seen:
            out.seen.write(cur, _SEEN_COPY)
            added["seen"] += max(cur.rowcount, 0)
        if out.gone:
            with cur.copy("COPY _sync_gone (source_record_id) FROM STDIN") as copy:
                for rid in out.gone:
                    copy.write_row((rid,))
        if out.bad:
            _quarantine(self.conn, self.spec, self.run, out.bad)
        return added

    def put(self, out: _PageRows) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(out)

    def close(self) -> dict[str, int]:
        """Wait for the last page; raise the writer's error if there was one."""
        self.queue.put(None)
        self.thread.join()
        if self.timings is not None:
            self.timings["copy_in_background"] = round(self.busy, 3)
        if self.error is not None:
            raise self.error
        return self.counts


def _refusals() -> tuple[type[BaseException], ...]:
    import psycopg

    # the database refusing data (22xxx), a constraint (23xxx), or text psycopg cannot encode
    return (psycopg.errors.DataError, psycopg.errors.IntegrityError, UnicodeEncodeError)


_REFUSALS = _refusals()


def _refusal_text(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    lines = str(exc).splitlines()
    # the primary message only: its detail ("Failing row contains ...") repeats record data
    text = primary or (lines[0] if lines else type(exc).__name__)
    return storable.clean_text(text)[:1000]


def _load(
    conn: Conn,
    spec: EntitySpec,
    run: RunInfo,
    pages: Iterable[Sequence[Record]],
    stats: SyncStats,
    clock: _Clock,
) -> dict[str, int]:
    """Validate and stage every page; returns the rows COPY loaded (``raw``, ``seen``).

    A :class:`sources.RawPage` of a spec with a raw codec (``spec.codec``)
    takes the codec's path per record (JSON bytes -> COPY text and row hash, the bytes landed
    in raw as they came); a record the codec declines, and every record of other pages, takes
    the mapper -> pydantic path (:class:`_Validator`), which decides quarantine. The COPYs run
    in :class:`_Writer`'s thread, overlapping the next page's encoding."""
    validate = _Validator(spec, run)
    codec = spec.codec
    stage_copy = sql.SQL("COPY _sync_stage ({}) FROM STDIN").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in (*validate.columns, *BOOKKEEPING))
    )
    prefix = "".join(_copy_text(v) + "\t" for v in (spec.system, spec.name, run.run_id))
    prefix_b = prefix.encode()
    clock.lap("setup")  # lock, watermark, staging tables
    validate.storable = storable.StorableCheck(
        storable.column_types(conn, spec.core_table, validate.columns)
    )
    writer = _Writer(conn, spec, run, stage_copy, clock.timings, validate)
    try:
        for page in Progress(f"sync {spec.system}/{spec.name}", unit="pages").iterate(
            pages, records=len
        ):
            clock.lap("extract")
            if codec is not None and isinstance(page, sources.RawPage):
                out = _encode_raw_page(page, codec, validate, prefix_b)
                out.source = (len(page), page.record)
            else:
                out = _PageRows()
                for record in page:
                    validate(record, out)
                out.source = (len(page), page.__getitem__)
            clock.lap("validate")
            writer.put(out)
            clock.lap("stage")  # waiting for the writer (it is two pages behind)
        clock.lap("extract")  # the last (empty) request
    except BaseException:
        writer.queue.put(None)  # stop after the page in hand; the transaction rolls back
        writer.thread.join()
        raise
    copied = writer.close()
    clock.lap("stage")
    return copied


def _quarantine(
    conn: Conn, spec: EntitySpec, run: RunInfo, bad: list[tuple[str | None, RecordError, Any]]
) -> None:
    """One open quarantine row per record and reason: a rerun refreshes it instead of adding."""
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO ops.quarantine (run_id, source_system, entity, record_key, reason_code,
                   reason_detail, payload)
               VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)
               ON CONFLICT (source_system, entity, record_key, reason_code)
                   WHERE resolved_at IS NULL
               DO UPDATE SET run_id = EXCLUDED.run_id, reason_detail = EXCLUDED.reason_detail,
                   payload = EXCLUDED.payload, quarantined_at = now()""",
            [
                (
                    run.run_id,
                    spec.system,
                    spec.name,
                    key,
                    error.reason_code,
                    storable.clean_text(error.detail)[:2000],
                    # jsonb cannot hold NUL: the quarantine keeps a cleaned copy (the raw
                    # landing, type json, keeps the payload as received where it can)
                    _payload(storable.clean_value(record)),
                )
                for key, error, record in bad
            ],
        )


def _quarantine_count(conn: Conn, spec: EntitySpec, run: RunInfo) -> int:
    return int(
        _scalar(
            conn,
            """SELECT count(*) FROM ops.quarantine WHERE run_id = %s AND source_system = %s
               AND entity = %s AND resolved_at IS NULL""",
            (run.run_id, spec.system, spec.name),
        )
    )


def _resolve_quarantine(conn: Conn, spec: EntitySpec, run: RunInfo) -> None:
    """Close open quarantine rows of records read (or deleted) in this run that this run did
    not quarantine again: they are valid now, deleted, or failing for another reason (which
    has its own open row)."""
    conn.execute(
        """UPDATE ops.quarantine q SET resolved_at = now(), resolved_by_run = %s
           WHERE q.source_system = %s AND q.entity = %s AND q.resolved_at IS NULL
             AND q.run_id <> %s
             AND (q.record_key IN (SELECT source_record_id FROM _sync_seen)
                  OR q.record_key IN (SELECT source_record_id FROM _sync_gone))""",
        (run.run_id, spec.system, spec.name, run.run_id),
    )


def _guard_empty_full_read(conn: Conn, spec: EntitySpec, stats: SyncStats) -> None:
    """A full read that returned nothing while core holds live rows would delete everything:
    almost always a vendor or permission problem, so refuse rather than wipe the table."""
    if stats.read:
        return
    scope, params = _scope_sql(spec)
    live = _scalar(
        conn,
        sql.SQL("SELECT count(*) FROM {} WHERE deleted_at IS NULL{}").format(
            _table(spec.core_table), scope
        ),
        params,
    )
    if live:
        raise SyncError(
            f"{spec.system}/{spec.name}: the full read returned no records but "
            f"{spec.core_table} holds {live} live rows; refusing to delete them all. Check the "
            "connection's permissions and the vendor's status, then rerun."
        )


# ------------------------------------------------------------------ merge and deletes


def _ensure_id_map(conn: Conn, spec: EntitySpec) -> None:
    assert spec.id_map is not None
    entity_type, map_column, core_column = spec.id_map
    conn.execute(
        sql.SQL(
            """INSERT INTO core.id_map (entity_type, {mc})
               SELECT DISTINCT %s, {cc} FROM _sync_stage
               ON CONFLICT (entity_type, {mc}) WHERE {mc} IS NOT NULL DO NOTHING"""
        ).format(mc=sql.Identifier(map_column), cc=sql.Identifier(core_column)),
        (entity_type,),
    )


def _merge_columns(spec: EntitySpec) -> tuple[list[str], list[sql.Composable], sql.Composable]:
    """What both merge paths write: the core columns, the staged values selected for them
    (``s.<col>``, and ``m.canonical_id`` from core.id_map for specs with an ``id_map``), and the
    id_map join that supplies it (empty without one)."""
    insert_cols = [*_model_columns(spec), *BOOKKEEPING]
    select_cols: list[sql.Composable] = [
        sql.SQL("s.{}").format(sql.Identifier(c)) for c in insert_cols
    ]
    join: sql.Composable = sql.SQL("")
    if spec.id_map is not None:
        entity_type, map_column, core_column = spec.id_map
        insert_cols.append("canonical_id")
        select_cols.append(sql.SQL("m.canonical_id"))
        join = sql.SQL(" JOIN core.id_map m ON m.entity_type = {et} AND m.{mc} = s.{cc}").format(
            et=sql.Literal(entity_type),
            mc=sql.Identifier(map_column),
            cc=sql.Identifier(core_column),
        )
    return insert_cols, select_cols, join


def _merge(conn: Conn, spec: EntitySpec, run: RunInfo) -> tuple[list[str], list[str], int]:
    """Upsert the staged rows: (inserted keys, updated keys, distinct staged keys).

    Per natural key the last version read wins (highest modstamp, then the last staged). An
    existing core row is updated only if its row hash differs or it was deleted; a new key is
    inserted. Up to :data:`BULK_MERGE_ROWS` staged rows this is one ``INSERT ... ON CONFLICT``
    (an index probe per row: right for the hourly and nightly runs). A bulk load (a full read
    of a million time entries) instead runs two statements, an UPDATE of the keys core has and
    a plain INSERT of the ones it does not, because speculative insertion costs about a third
    more per row; the same result, because the entity lock (``_run``) makes this run the only
    writer of its core rows. Without duplicate keys in the stage (counted with a hash
    aggregate) the bulk path uses the stage as it is, without sorting it for ``DISTINCT ON``."""
    key_text = _key_text(spec.natural_key)
    counted = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM _sync_stage),"
            " (SELECT count(*) FROM (SELECT {key} FROM _sync_stage GROUP BY 1) g)"
        ).format(key=key_text)
    ).fetchone()
    assert counted is not None
    staged_rows, staged = counted
    if staged_rows < BULK_MERGE_ROWS:
        inserted, updated = _merge_upsert(conn, spec, run)
        return inserted, updated, staged
    nk = [sql.Identifier(c) for c in spec.natural_key]
    nk_s = sql.SQL(", ").join(sql.SQL("s.{}").format(c) for c in nk)
    source = sql.Identifier("_sync_stage")
    if staged_rows != staged:
        conn.execute(
            sql.SQL(
                """CREATE TEMP TABLE _sync_win ON COMMIT DROP AS
                   SELECT DISTINCT ON ({nk_s}) s.* FROM _sync_stage s
                   ORDER BY {nk_s}, s.source_modstamp DESC NULLS LAST, s.seq DESC"""
            ).format(nk_s=nk_s)
        )
        source = sql.Identifier("_sync_win")
    insert_cols, select_cols, join = _merge_columns(spec)
    updatable = [c for c in insert_cols if c not in spec.natural_key]
    match = sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=c) for c in nk)
    if spec.history == "effective_dated":
        _keep_history(conn, spec, run)
    update = sql.SQL(
        """UPDATE {core} AS t SET {sets}, last_run_id = %(run)s, deleted_at = NULL,
               updated_at = now()
           FROM {source} s{join}
           WHERE {match}
             AND (t.row_hash IS DISTINCT FROM s.row_hash OR t.deleted_at IS NOT NULL)
           RETURNING {key}"""
    ).format(
        core=_table(spec.core_table),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = {v}").format(c=sql.Identifier(c), v=v)
            for c, v in zip(insert_cols, select_cols, strict=True)
            if c in updatable
        ),
        source=source,
        join=join,
        match=match,
        key=_key_text(spec.natural_key, "t"),
    )
    insert = sql.SQL(
        """INSERT INTO {core} AS t ({cols}, first_run_id, last_run_id)
           SELECT {select}, %(run)s, %(run)s
           FROM {source} s{join}
           WHERE NOT EXISTS (SELECT 1 FROM {core} t WHERE {match})
           ORDER BY {nk_s}
           RETURNING {key}"""
    ).format(
        core=_table(spec.core_table),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in insert_cols),
        select=sql.SQL(", ").join(select_cols),
        source=source,
        join=join,
        match=match,
        nk_s=nk_s,
        key=_key_text(spec.natural_key, "t"),
    )
    updated = [r[0] for r in conn.execute(update, {"run": run.run_id}).fetchall()]
    inserted = [r[0] for r in conn.execute(insert, {"run": run.run_id}).fetchall()]
    return inserted, updated, staged


def _merge_upsert(conn: Conn, spec: EntitySpec, run: RunInfo) -> tuple[list[str], list[str]]:
    """One ``INSERT ... ON CONFLICT`` of the staged rows; returns (inserted, updated) keys."""
    insert_cols, select_cols, join = _merge_columns(spec)
    nk = sql.SQL(", ").join(sql.Identifier(c) for c in spec.natural_key)
    nk_s = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in spec.natural_key)
    updatable = [c for c in insert_cols if c not in spec.natural_key]
    query = sql.SQL(
        """INSERT INTO {core} AS t ({cols}, first_run_id, last_run_id)
           SELECT DISTINCT ON ({nk_s}) {select}, %(run)s, %(run)s
           FROM _sync_stage s{join}
           ORDER BY {nk_s}, s.source_modstamp DESC NULLS LAST, s.seq DESC
           ON CONFLICT ({nk}) DO UPDATE SET {sets}, last_run_id = EXCLUDED.last_run_id,
               deleted_at = NULL, updated_at = now()
           WHERE t.row_hash IS DISTINCT FROM EXCLUDED.row_hash OR t.deleted_at IS NOT NULL
           RETURNING (xmax = 0) AS inserted, {key}"""
    ).format(
        core=_table(spec.core_table),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in insert_cols),
        nk_s=nk_s,
        select=sql.SQL(", ").join(select_cols),
        join=join,
        nk=nk,
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updatable
        ),
        key=_key_text(spec.natural_key, "t"),
    )
    if spec.history == "effective_dated":
        _keep_history(conn, spec, run)
    rows = conn.execute(query, {"run": run.run_id}).fetchall()
    inserted = [key for is_new, key in rows if is_new]
    updated = [key for is_new, key in rows if not is_new]
    return inserted, updated


def _keep_history(conn: Conn, spec: EntitySpec, run: RunInfo) -> None:
    """Copy the versions the merge is about to replace into core.record_history."""
    match = sql.SQL(" AND ").join(
        sql.SQL("s.{c} = t.{c}").format(c=sql.Identifier(c)) for c in spec.natural_key
    )
    conn.execute(
        sql.SQL(
            """INSERT INTO core.record_history (core_table, natural_key, row_data,
                   superseded_by_run)
               SELECT %s, {key}, to_jsonb(t), %s FROM {core} t
               WHERE EXISTS (SELECT 1 FROM _sync_stage s
                             WHERE {match} AND s.row_hash IS DISTINCT FROM t.row_hash)"""
        ).format(key=_key_text(spec.natural_key, "t"), core=_table(spec.core_table), match=match),
        (spec.core_table, run.run_id),
    )


def _apply_deletes(conn: Conn, spec: EntitySpec, run: RunInfo, *, full_read: bool) -> list[str]:
    """Soft-delete (``deleted_at``) core rows whose source is gone; history rows stay.

    - records flagged deleted (``IsDeleted``, the tombstones of the delete strategy's
      ``after_read``) or named by its ``before_read`` (the Salesforce deleted feed);
    - on a full read with deletes enabled: rows whose source record was not read at all;
    - always: rows of a record read (and valid) in this run that it no longer yields (an
      override removed from a contract's ``Rate_Overrides__c``).
    """
    # Each rule is its own SELECT (semi-/anti-joins the planner runs as hash joins), combined
    # with UNION: OR-ed subqueries would run once per core row (quadratic at a million rows).
    scope, scope_params = _scope_sql(spec, "t")
    keys = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in spec.natural_key)
    base = sql.SQL("SELECT {keys} FROM {core} t WHERE t.deleted_at IS NULL{scope} AND ").format(
        keys=keys, core=_table(spec.core_table), scope=scope
    )
    match = sql.SQL(" AND ").join(
        sql.SQL("s.{c} = t.{c}").format(c=sql.Identifier(c)) for c in spec.natural_key
    )
    rules = [
        sql.SQL("t.source_record_id IN (SELECT source_record_id FROM _sync_gone)"),
        sql.SQL(
            """t.source_record_id IN (SELECT source_record_id FROM _sync_seen WHERE valid)
               AND NOT EXISTS (SELECT 1 FROM _sync_stage s WHERE {match})"""
        ).format(match=match),
    ]
    if full_read and spec.deletes.mode != DeleteMode.NONE:
        rules.append(
            sql.SQL(
                "NOT EXISTS (SELECT 1 FROM _sync_seen x"
                " WHERE x.source_record_id = t.source_record_id)"
            )
        )
    doomed = sql.SQL(" UNION ").join(base + rule for rule in rules)
    query = sql.SQL(
        """WITH doomed AS ({doomed})
           UPDATE {core} AS t SET deleted_at = now(), last_run_id = %s, updated_at = now()
           FROM doomed d
           WHERE {join} AND t.deleted_at IS NULL
           RETURNING {key}"""
    ).format(
        doomed=doomed,
        core=_table(spec.core_table),
        join=sql.SQL(" AND ").join(
            sql.SQL("t.{c} = d.{c}").format(c=sql.Identifier(c)) for c in spec.natural_key
        ),
        key=_key_text(spec.natural_key, "t"),
    )
    params = [*scope_params * len(rules), run.run_id]
    return [r[0] for r in conn.execute(query, params).fetchall()]


# ------------------------------------------------------------------ write-back


def _enqueue_write_back(conn: Conn, spec: EntitySpec, changed_keys: list[str], run: RunInfo) -> int:
    """Hand the changed natural keys (inserted, updated and deleted) to the write-back outbox
    inside this transaction; returns the number of sendable outbox rows enqueued."""
    return int(outbox.enqueue_changes(conn, spec, changed_keys, run) or 0)
