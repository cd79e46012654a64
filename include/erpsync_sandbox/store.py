"""SQLite-backed record store shared by the sandbox CRM, PSA and ERP services.

One database file per service (``<state_dir>/<service>.sqlite3``, WAL mode). Every resource
(``Account``, ``time_entries``, ``salesInvoices`` ...) is a table created on first write with the
columns ``seq, id, parent_id, modstamp, deleted, body``. ``body`` is the record exactly as the
vendor API returns it, as JSON text, so the serving path can splice stored text into responses
without parsing it (``scan(..., raw=True)``).

``modstamp`` is UTC ISO-8601 with microseconds and a ``Z`` (text order = time order). The store
also writes the vendor's own modstamp field into the body (``SystemModstamp`` for Salesforce,
``updated_at`` for Harvest, ``lastModifiedDateTime`` for Business Central) in that vendor's
format, see :func:`format_stamp`.

Vendor docs the shapes follow: docs/reference/vendor-apis.md (Salesforce REST, Harvest API v2,
Business Central API v2.0), e.g.
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_getdeleted.htm

Thread safety: each thread gets its own connection (WAL allows concurrent readers); writes are
serialised with one lock per store so writers never see ``SQLITE_BUSY``.
"""

# Table names are interpolated into SQL only after _check_name() validated them against
# [A-Za-z_][A-Za-z0-9_]*; every value is a bound parameter.
# ruff: noqa: S608
from __future__ import annotations

import contextvars
import datetime as dt
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import orjson

__all__ = [
    "ChangeLog",
    "Row",
    "Store",
    "change_source",
    "dumps",
    "format_stamp",
    "iso_now",
    "loads",
    "parse_iso",
    "to_iso",
]

#: Sort key of order="id": zero-padded length, then the id (numeric ids sort as numbers).
_IDKEY = "(printf('%04d', length(id)) || id)"


def _idkey(rid: str) -> str:
    return f"{len(rid):04d}{rid}"


_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIELD_RE = re.compile(r"^[A-Za-z_@][A-Za-z0-9_.@]*$")

#: Who is writing: "api" (a service handler), "advance" (the clock), "generate", "fault".
change_source: contextvars.ContextVar[str] = contextvars.ContextVar("change_source", default="api")


class _Default:
    """Sentinel type: use the store's configured default."""


_DEFAULT = _Default()


# --------------------------------------------------------------------------- JSON and time


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        # Money keeps its currency's decimals in the JSON text ("5000.00", "12.345").
        return orjson.Fragment(format(obj, "f"))
    if isinstance(obj, dt.datetime):
        return to_iso(obj)
    if isinstance(obj, dt.date):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(body: Any) -> str:
    """Serialise a body to compact JSON text (Decimals as exact JSON numbers)."""
    return orjson.dumps(body, default=_json_default).decode()


def loads(text: str | bytes) -> Any:
    """Parse JSON text produced by :func:`dumps`."""
    return orjson.loads(text)


def to_iso(moment: dt.datetime) -> str:
    """UTC ISO-8601 with microseconds and ``Z``: the store's modstamp format."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> dt.datetime:
    """Parse an ISO-8601 timestamp in any of the vendors' spellings into an aware UTC datetime.

    Accepts ``Z``, ``+0000``, ``+00:00``, 0-7 fractional digits, and a bare date.
    """
    s = text.strip()
    if len(s) == 10:
        return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC)
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    m = re.match(r"^(.*[T ]\d{2}:\d{2}(?::\d{2})?)(\.\d+)?([+-]\d{2}:?\d{2})?$", s)
    if not m:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    base, frac, tz = m.group(1), m.group(2) or "", m.group(3) or "+00:00"
    if frac:
        frac = "." + (frac[1:] + "000000")[:6]
    if len(tz) == 5:
        tz = tz[:3] + ":" + tz[3:]
    moment = dt.datetime.fromisoformat(base + frac + tz)
    return moment.astimezone(dt.UTC)


def format_stamp(iso: str, style: str) -> str:
    """Render a store modstamp (``YYYY-MM-DDTHH:MM:SS.ffffffZ``) in a vendor's body format.

    * ``salesforce``: ``2026-11-25T10:00:00.000+0000``
    * ``harvest``:    ``2026-11-25T10:00:00Z``
    * ``bc``:         ``2026-11-25T10:00:00.123456Z`` (Business Central returns fractions)
    * ``iso``:        unchanged
    """
    if style == "salesforce":
        return iso[:23] + "+0000"
    if style == "harvest":
        return iso[:19] + "Z"
    return iso


def iso_now() -> str:
    """Wall-clock now in the store's modstamp format."""
    return to_iso(dt.datetime.now(dt.UTC))


def _bump(iso: str, micros: int = 1) -> str:
    return to_iso(parse_iso(iso) + dt.timedelta(microseconds=micros))


# --------------------------------------------------------------------------- rows


class Row(NamedTuple):
    """One stored record with its bookkeeping columns; ``body`` is JSON text."""

    seq: int
    id: str
    parent_id: str | None
    modstamp: str
    deleted: bool
    body: str

    def data(self) -> dict[str, Any]:
        """The body parsed into a dict."""
        return loads(self.body)


# --------------------------------------------------------------------------- change log


class ChangeLog:
    """Append-only log of every change to the firm, shared by the three stores.

    Backed by its own SQLite file (``<state_dir>/changes.sqlite3``) so ``seq`` is global across
    systems. Rows: ``seq, at, system, resource, op (create|update|delete), id, source``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._create()

    def _create(self) -> None:
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " at TEXT NOT NULL, system TEXT NOT NULL, resource TEXT NOT NULL, op TEXT NOT NULL,"
            " id TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'api')"
        )

    def append(self, system: str, resource: str, op: str, id: str, at: str) -> int:
        """Record one change; returns its sequence number."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO changes (at, system, resource, op, id, source) VALUES (?,?,?,?,?,?)",
                (at, system, resource, op, str(id), change_source.get()),
            )
            return int(cur.lastrowid or 0)

    def since(
        self, seq: int = 0, *, limit: int | None = None, source: str | None = None
    ) -> list[dict[str, Any]]:
        """Changes with ``seq > since`` in order."""
        sql = "SELECT seq, at, system, resource, op, id, source FROM changes WHERE seq > ?"
        params: list[Any] = [seq]
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        keys = ("seq", "at", "system", "resource", "op", "id", "source")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def last_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(row[0])

    def reset(self) -> None:
        with self._lock:
            self._conn.execute("DROP TABLE IF EXISTS changes")
            if self._has("sqlite_sequence"):
                self._conn.execute("DELETE FROM sqlite_sequence WHERE name = 'changes'")
            self._create()

    def _has(self, table: str) -> bool:
        return (
            self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
            ).fetchone()
            is not None
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------- store


class Store:
    """A SQLite record store for one sandbox service.

    Parameters
    ----------
    path:
        The database file. Parent directories are created.
    system:
        ``"crm"``, ``"psa"`` or ``"erp"``; used in the change log.
    stamp_field / stamp_style:
        Default vendor modstamp field written into bodies on every write (``None`` = don't).
        ``put(..., stamp_field=...)`` overrides it per call.
    now:
        Callable returning "now" as an ISO Z string (the business clock). Defaults to wall time.
    changelog:
        Optional :class:`ChangeLog`; single writes (``put``, ``delete``, ``touch``) are logged
        unless ``log=False``; ``put_many`` logs only with ``log=True``.
    """

    def __init__(
        self,
        path: Path,
        *,
        system: str = "",
        stamp_field: str | None = None,
        stamp_style: str = "iso",
        now: Callable[[], str] | None = None,
        changelog: ChangeLog | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.system = system or self.path.stem
        self.stamp_field = stamp_field
        self.stamp_style = stamp_style
        self.now_fn: Callable[[], str] = now or iso_now
        self.changelog = changelog
        #: When true, ``now()`` truncates to whole seconds and does not break ties, so a burst
        #: of writes shares one modstamp (fault ``tie_timestamps``).
        self.tie_timestamps = False
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._wlock = threading.RLock()
        self._tables: set[str] = set()
        self._last_now = ""
        self._closed = False
        with self._wlock:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            self._load_tables(conn)
            for table in self.resources():  # state written before the id-order index existed
                conn.execute(
                    f'CREATE INDEX IF NOT EXISTS "ix_{table}_idkey" ON "{table}" ({_IDKEY})'
                )

    # ------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError(f"store {self.path} is closed")
            conn = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
            )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA temp_store=MEMORY")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection."""
        with self._conns_lock:
            self._closed = True
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:  # closed from its own thread already
                    pass
            self._conns.clear()
        self._local = threading.local()

    def _load_tables(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        self._tables = {r[0] for r in rows}

    @staticmethod
    def _check_name(resource: str) -> str:
        if not _NAME_RE.match(resource):
            raise ValueError(f"bad resource name: {resource!r}")
        return resource

    def _ensure(self, resource: str) -> None:
        if resource in self._tables:
            return
        self._check_name(resource)
        with self._wlock:
            conn = self._conn()
            conn.executescript(
                f"""
                CREATE TABLE IF NOT EXISTS "{resource}" (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    parent_id TEXT NULL,
                    modstamp TEXT NOT NULL,
                    deleted INTEGER NOT NULL DEFAULT 0,
                    body TEXT NOT NULL
                );
                CREATE INDEX IF NOT EXISTS "ix_{resource}_modstamp"
                    ON "{resource}" (modstamp, id);
                CREATE INDEX IF NOT EXISTS "ix_{resource}_parent" ON "{resource}" (parent_id);
                CREATE INDEX IF NOT EXISTS "ix_{resource}_idkey" ON "{resource}" ({_IDKEY});
                """
            )
            self._tables.add(resource)

    def ensure_index(self, resource: str, paths: tuple[str, ...]) -> None:
        """An index on the JSON fields ``paths`` of ``resource`` (the same ``json_extract``
        expressions :meth:`scan_rows` filters with, so SQLite uses it): a filtered list of a
        large store then reads the matching rows instead of scanning every record."""
        self._ensure(resource)
        columns = ", ".join(self._col(path) for path in paths)
        name = "ix_" + resource + "_" + "_".join(p.replace(".", "_") for p in paths)
        with self._wlock:
            self._conn().execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{resource}" ({columns})')

    def _exists(self, resource: str) -> bool:
        if resource in self._tables:
            return True
        # another process/thread may have created it (e.g. after a reset elsewhere)
        conn = self._conn()
        found = (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (resource,)
            ).fetchone()
            is not None
        )
        if found:
            self._tables.add(resource)
        return found

    def resources(self) -> list[str]:
        """Names of the record tables (excluding internal ``__deleted__*`` logs)."""
        conn = self._conn()
        self._load_tables(conn)
        return sorted(
            t for t in self._tables if not t.startswith("__") and not t.startswith("sqlite_")
        )

    # ------------------------------------------------------------------ time

    def now(self) -> str:
        """The store's "now" (business clock): strictly increasing unless ties are on."""
        with self._wlock:
            now = self.now_fn()
            if self.tie_timestamps:
                now = now[:19] + ".000000Z"
                if now < self._last_now:
                    now = self._last_now
            elif now <= self._last_now:
                now = _bump(self._last_now)
            self._last_now = now
            return now

    def _stamp(self, body: dict[str, Any], modstamp: str, stamp_field: Any) -> None:
        field = self.stamp_field if isinstance(stamp_field, _Default) else stamp_field
        if field:
            body[field] = format_stamp(modstamp, self.stamp_style)

    # ------------------------------------------------------------------ writes

    def put(
        self,
        resource: str,
        id: str | int,
        body: dict[str, Any],
        *,
        modstamp: str | None = None,
        parent_id: str | int | None = None,
        stamp_field: str | None | _Default = _DEFAULT,
        log: bool = True,
        deleted: bool = False,
    ) -> dict[str, Any]:
        """Insert or replace one record (keeps its ``seq`` on update); returns ``body``.

        ``modstamp=None`` means now from the store's clock. The vendor modstamp field is written
        into ``body`` (in place) when a stamp field applies.
        """
        self._ensure(resource)
        sid = str(id)
        pid = None if parent_id is None else str(parent_id)
        with self._wlock:
            ms = modstamp or self.now()
            self._stamp(body, ms, stamp_field)
            text = dumps(body)
            conn = self._conn()
            existed = (
                conn.execute(f'SELECT 1 FROM "{resource}" WHERE id = ?', (sid,)).fetchone()
                is not None
            )
            conn.execute(
                f'INSERT INTO "{resource}" (id, parent_id, modstamp, deleted, body)'
                " VALUES (?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET parent_id=excluded.parent_id,"
                " modstamp=excluded.modstamp, deleted=excluded.deleted, body=excluded.body",
                (sid, pid, ms, 1 if deleted else 0, text),
            )
            if log and self.changelog is not None:
                self.changelog.append(
                    self.system, resource, "update" if existed else "create", sid, ms
                )
        return body

    def put_many(
        self,
        resource: str,
        rows: Iterable[tuple[Any, Any, str | None, Any]],
        *,
        stamp_field: str | None | _Default = _DEFAULT,
        log: bool = False,
        chunk: int = 20000,
    ) -> int:
        """Bulk insert-or-replace ``(id, body, modstamp, parent_id)`` tuples; returns the count.

        ``body`` may be a dict (stamped and serialised) or pre-serialised JSON text (stored as
        given). Runs ``executemany`` in one transaction per ``chunk`` rows, so a generator can
        stream millions of rows without holding them in memory.
        """
        self._ensure(resource)
        sql = (
            f'INSERT INTO "{resource}" (id, parent_id, modstamp, deleted, body) VALUES (?,?,?,0,?)'
            " ON CONFLICT(id) DO UPDATE SET parent_id=excluded.parent_id,"
            " modstamp=excluded.modstamp, deleted=0, body=excluded.body"
        )
        total = 0
        batch: list[tuple[str, str | None, str, str]] = []

        def flush() -> None:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, batch)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if log and self.changelog is not None:
                for sid, _pid, ms, _text in batch:
                    self.changelog.append(self.system, resource, "create", sid, ms)

        with self._wlock:
            for rid, body, modstamp, parent_id in rows:
                ms = modstamp or self.now()
                if isinstance(body, dict):
                    self._stamp(body, ms, stamp_field)
                    text = dumps(body)
                elif isinstance(body, bytes):
                    text = body.decode()
                else:
                    text = body
                batch.append((str(rid), None if parent_id is None else str(parent_id), ms, text))
                if len(batch) >= chunk:
                    flush()
                    total += len(batch)
                    batch = []
            if batch:
                flush()
                total += len(batch)
        return total

    def update(
        self,
        resource: str,
        id: str | int,
        changes: dict[str, Any],
        *,
        modstamp: str | None = None,
        stamp_field: str | None | _Default = _DEFAULT,
        log: bool = True,
    ) -> dict[str, Any] | None:
        """Merge top-level ``changes`` into an existing record (read-modify-write under the
        write lock); returns the new body or None if missing."""
        with self._wlock:
            row = self.get_row(resource, id, include_deleted=True)
            if row is None:
                return None
            body = row.data()
            body.update(changes)
            return self.put(
                resource,
                id,
                body,
                modstamp=modstamp,
                parent_id=row.parent_id,
                stamp_field=stamp_field,
                log=log,
                deleted=row.deleted,
            )

    def touch(
        self,
        resource: str,
        ids: Iterable[str | int],
        *,
        modstamp: str | None = None,
        log: bool = True,
    ) -> list[str]:
        """Move the modstamp of existing records to now (body unchanged apart from its stamp
        field); returns the ids touched. Used by the "mutate during paging" fault."""
        touched: list[str] = []
        with self._wlock:
            for rid in ids:
                if self.update(resource, rid, {}, modstamp=modstamp, log=log) is not None:
                    touched.append(str(rid))
        return touched

    def delete(
        self,
        resource: str,
        id: str | int,
        *,
        soft: bool = False,
        set_fields: dict[str, Any] | None = None,
        log: bool = True,
        modstamp: str | None = None,
    ) -> bool:
        """Delete a record. Hard (default) removes the row; soft sets ``deleted=1``, moves its
        modstamp to now, applies ``set_fields`` (e.g. ``{"IsDeleted": True}``) and records the
        deletion in ``__deleted__<resource>`` for :meth:`deleted_since`. Returns False if the
        record did not exist (or was already soft-deleted). ``modstamp`` overrides "now"."""
        if not self._exists(resource):
            return False
        sid = str(id)
        with self._wlock:
            conn = self._conn()
            row = conn.execute(
                f'SELECT deleted, body, parent_id FROM "{resource}" WHERE id = ?', (sid,)
            ).fetchone()
            if row is None or (soft and row[0]):
                return False
            ms = modstamp or self.now()
            if soft:
                body = loads(row[1])
                if set_fields:
                    body.update(set_fields)
                self._stamp(body, ms, _DEFAULT)
                dlog = f"__deleted__{resource}"
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        f'UPDATE "{resource}" SET deleted = 1, modstamp = ?, body = ? WHERE id = ?',
                        (ms, dumps(body), sid),
                    )
                    conn.execute(
                        f'CREATE TABLE IF NOT EXISTS "{dlog}" (seq INTEGER PRIMARY KEY'
                        " AUTOINCREMENT, id TEXT NOT NULL, deleted_date TEXT NOT NULL)"
                    )
                    conn.execute(
                        f'INSERT INTO "{dlog}" (id, deleted_date) VALUES (?, ?)', (sid, ms)
                    )
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                self._tables.add(dlog)
            else:
                conn.execute(f'DELETE FROM "{resource}" WHERE id = ?', (sid,))
            if log and self.changelog is not None:
                self.changelog.append(self.system, resource, "delete", sid, ms)
            return True

    def undelete(self, resource: str, id: str | int, **kw: Any) -> bool:
        """Restore a soft-deleted record (``deleted=0``, modstamp now)."""
        row = self.get_row(resource, id, include_deleted=True)
        if row is None or not row.deleted:
            return False
        self.put(resource, id, row.data(), parent_id=row.parent_id, **kw)
        return True

    def deleted_since(self, resource: str, start: str, end: str) -> list[dict[str, str]]:
        """Soft deletions with ``start <= deleted_date <= end`` (ISO Z strings), oldest first:
        ``[{"id", "deletedDate"}]`` with ``deletedDate`` in the store's ISO format."""
        dlog = f"__deleted__{resource}"
        if not self._exists(dlog):
            return []
        rows = (
            self._conn()
            .execute(
                f'SELECT id, deleted_date FROM "{dlog}" WHERE deleted_date >= ? AND deleted_date'
                " <= ? ORDER BY deleted_date, seq",
                (start, end),
            )
            .fetchall()
        )
        return [{"id": r[0], "deletedDate": r[1]} for r in rows]

    def purge_deleted_log(self, resource: str, before: str) -> int:
        """Drop deletion-log entries older than ``before`` (Salesforce purges its log)."""
        dlog = f"__deleted__{resource}"
        if not self._exists(dlog):
            return 0
        with self._wlock:
            cur = self._conn().execute(f'DELETE FROM "{dlog}" WHERE deleted_date < ?', (before,))
            return cur.rowcount

    # ------------------------------------------------------------------ reads

    def get(
        self, resource: str, id: str | int, *, include_deleted: bool = False
    ) -> dict[str, Any] | None:
        """The record body, or None if missing (or soft-deleted unless ``include_deleted``)."""
        row = self.get_row(resource, id, include_deleted=include_deleted)
        return None if row is None else row.data()

    def get_raw(self, resource: str, id: str | int, *, include_deleted: bool = False) -> str | None:
        """The record's JSON text, or None."""
        row = self.get_row(resource, id, include_deleted=include_deleted)
        return None if row is None else row.body

    def get_row(self, resource: str, id: str | int, *, include_deleted: bool = False) -> Row | None:
        """The full :class:`Row` (with ``seq``, ``modstamp`` for ETags), or None."""
        if not self._exists(resource):
            return None
        r = (
            self._conn()
            .execute(
                f'SELECT seq, id, parent_id, modstamp, deleted, body FROM "{resource}"'
                " WHERE id = ?",
                (str(id),),
            )
            .fetchone()
        )
        if r is None or (r[4] and not include_deleted):
            return None
        return Row(r[0], r[1], r[2], r[3], bool(r[4]), r[5])

    def _where(
        self,
        *,
        where: dict[str, Any] | None = None,
        conditions: Sequence[tuple[str, str, Any]] | None = None,
        modstamp_gt: str | None = None,
        modstamp_ge: str | None = None,
        modstamp_lt: str | None = None,
        modstamp_le: str | None = None,
        include_deleted: bool = False,
        only_deleted: bool = False,
    ) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if only_deleted:
            clauses.append("deleted = 1")
        elif not include_deleted:
            clauses.append("deleted = 0")
        all_conditions = [
            (name, "in" if isinstance(value, list | tuple | set) else "=", value)
            for name, value in (where or {}).items()
        ]
        all_conditions.extend(conditions or [])
        for name, op, value in all_conditions:
            col = self._col(name)
            op = op.lower().strip()
            if op in ("=", "==", "eq") and value is None:
                clauses.append(f"{col} IS NULL")
            elif op in ("!=", "<>", "ne") and value is None:
                clauses.append(f"{col} IS NOT NULL")
            elif op == "in":
                values = list(value)
                if not values:
                    clauses.append("0")
                else:
                    clauses.append(f"{col} IN ({','.join('?' * len(values))})")
                    params.extend(_bind(v) for v in values)
            else:
                sql_op = {
                    "=": "=",
                    "==": "=",
                    "eq": "=",
                    "!=": "!=",
                    "<>": "!=",
                    "ne": "!=",
                    "<": "<",
                    "lt": "<",
                    "<=": "<=",
                    "le": "<=",
                    ">": ">",
                    "gt": ">",
                    ">=": ">=",
                    "ge": ">=",
                    "like": "LIKE",
                }.get(op)
                if sql_op is None:
                    raise ValueError(f"bad operator {op!r}")
                clauses.append(f"{col} {sql_op} ?")
                params.append(_bind(value))
        for op, value in (
            (">", modstamp_gt),
            (">=", modstamp_ge),
            ("<", modstamp_lt),
            ("<=", modstamp_le),
        ):
            if value is not None:
                clauses.append(f"modstamp {op} ?")
                params.append(value)
        return clauses, params

    @staticmethod
    def _col(name: str) -> str:
        if name in ("id", "parent_id", "modstamp", "seq", "deleted"):
            return name
        if not _FIELD_RE.match(name):
            raise ValueError(f"bad field name: {name!r}")
        path = ".".join(f'"{p}"' if "@" in p else p for p in name.split("."))
        return f"json_extract(body, '$.{path}')"

    def scan_rows(
        self,
        resource: str,
        *,
        where: dict[str, Any] | None = None,
        conditions: Sequence[tuple[str, str, Any]] | None = None,
        modstamp_gt: str | None = None,
        modstamp_ge: str | None = None,
        modstamp_lt: str | None = None,
        modstamp_le: str | None = None,
        after: tuple[Any, ...] | None = None,
        order: str = "seq",
        descending: bool = False,
        limit: int | None = None,
        offset: int | None = None,
        include_deleted: bool = False,
        only_deleted: bool = False,
    ) -> list[Row]:
        """Like :meth:`scan` but returns :class:`Row` tuples (body as JSON text)."""
        if not self._exists(resource):
            return []
        clauses, params = self._where(
            where=where,
            conditions=conditions,
            modstamp_gt=modstamp_gt,
            modstamp_ge=modstamp_ge,
            modstamp_lt=modstamp_lt,
            modstamp_le=modstamp_le,
            include_deleted=include_deleted,
            only_deleted=only_deleted,
        )
        cmp = "<" if descending else ">"
        direction = " DESC" if descending else ""
        if order == "seq":
            order_sql = f"seq{direction}"
            if after is not None:
                clauses.append(f"seq {cmp} ?")
                params.append(int(after[0]))
        elif order == "modstamp":
            order_sql = f"modstamp{direction}, id{direction}"
            if after is not None:
                if len(after) >= 2:
                    clauses.append(f"(modstamp, id) {cmp} (?, ?)")
                    params.extend([after[0], str(after[1])])
                else:
                    clauses.append(f"modstamp {cmp} ?")
                    params.append(after[0])
        elif order == "id":
            # length first: numeric ids (Harvest) sort as numbers, fixed-length ids as text;
            # one indexed expression so keyset pages are index seeks.
            order_sql = f"{_IDKEY}{direction}"
            if after is not None:
                clauses.append(f"{_IDKEY} {cmp} ?")
                params.append(_idkey(str(after[0])))
        else:
            raise ValueError(f"bad order {order!r}")
        sql = f'SELECT seq, id, parent_id, modstamp, deleted, body FROM "{resource}"'
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {order_sql}"
        if limit is not None or offset:
            sql += " LIMIT ?"
            params.append(-1 if limit is None else int(limit))
            if offset:
                sql += " OFFSET ?"
                params.append(int(offset))
        rows = self._conn().execute(sql, params).fetchall()
        return [Row(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows]

    def scan(
        self,
        resource: str,
        *,
        where: dict[str, Any] | None = None,
        modstamp_gt: str | None = None,
        modstamp_ge: str | None = None,
        after: tuple[Any, ...] | None = None,
        order: str = "seq",
        descending: bool = False,
        limit: int | None = None,
        include_deleted: bool = False,
        raw: bool = False,
        **more: Any,
    ) -> list[dict[str, Any]] | list[str]:
        """Records of ``resource`` in ``order`` (``seq`` | ``modstamp`` (then id) | ``id``).

        * ``where``: equality on ``id``/``parent_id`` or body fields (dotted paths allowed,
          e.g. ``{"project.id": 7}``; ``None`` means IS NULL; a list means IN).
        * ``conditions``: ``[(field, op, value)]`` with ops ``= != < <= > >= in like``.
        * ``after``: keyset position, ``(modstamp, id)`` for modstamp order, ``(seq,)`` for seq
          order, ``(id,)`` for id order; rows strictly after it (before it when descending).
        * ``raw=True`` returns each body's JSON text without parsing (fast serving path).

        Extra keywords: ``conditions``, ``modstamp_lt``, ``modstamp_le``, ``offset``,
        ``only_deleted``.
        """
        rows = self.scan_rows(
            resource,
            where=where,
            modstamp_gt=modstamp_gt,
            modstamp_ge=modstamp_ge,
            after=after,
            order=order,
            descending=descending,
            limit=limit,
            include_deleted=include_deleted,
            **more,
        )
        if raw:
            return [r.body for r in rows]
        return [loads(r.body) for r in rows]

    def iter_rows(self, resource: str, *, batch: int = 10000, **filters: Any) -> Iterator[Row]:
        """Stream all matching rows in ``seq`` order, ``batch`` at a time."""
        last: int | None = None
        while True:
            rows = self.scan_rows(
                resource,
                order="seq",
                after=None if last is None else (last,),
                limit=batch,
                **filters,
            )
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

    def count(self, resource: str, **filters: Any) -> int:
        """Number of records matching the same filters as :meth:`scan` (no order/limit)."""
        if not self._exists(resource):
            return 0
        filters.pop("order", None)
        filters.pop("descending", None)
        filters.pop("limit", None)
        filters.pop("raw", None)
        filters.pop("offset", None)
        after = filters.pop("after", None)
        clauses, params = self._where(**filters)
        if after is not None:
            clauses.append("seq > ?")
            params.append(int(after[0]))
        sql = f'SELECT COUNT(*) FROM "{resource}"'
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return int(self._conn().execute(sql, params).fetchone()[0])

    def ids(self, resource: str, *, include_deleted: bool = False) -> list[str]:
        """All record ids in insertion order."""
        if not self._exists(resource):
            return []
        sql = f'SELECT id FROM "{resource}"'
        if not include_deleted:
            sql += " WHERE deleted = 0"
        return [r[0] for r in self._conn().execute(sql + " ORDER BY seq").fetchall()]

    def max_modstamp(self, resource: str) -> str | None:
        if not self._exists(resource):
            return None
        row = self._conn().execute(f'SELECT MAX(modstamp) FROM "{resource}"').fetchone()
        return row[0]

    def next_int_id(self, resource: str, *, start: int = 1) -> int:
        """Next free integer id for ``resource`` (Harvest-style ids), never reused within a run:
        max(existing numeric id, last handed out) + 1."""
        with self._wlock:
            counters: dict[str, int] = getattr(self, "_int_counters", {})
            self._int_counters = counters
            current = 0
            if self._exists(resource):
                row = (
                    self._conn()
                    .execute(
                        f'SELECT MAX(CAST(id AS INTEGER)) FROM "{resource}"'
                        " WHERE id GLOB '[0-9]*'"
                    )
                    .fetchone()
                )
                current = int(row[0] or 0)
            nxt = max(current, counters.get(resource, 0), start - 1) + 1
            counters[resource] = nxt
            return nxt

    # ------------------------------------------------------------------ metadata (kv)

    def meta_get(self, key: str, default: Any = None) -> Any:
        """Small JSON key/value area for per-service state (company id, quotas, clock ...)."""
        if not self._exists("__meta__"):
            return default
        row = self._conn().execute('SELECT value FROM "__meta__" WHERE key = ?', (key,)).fetchone()
        return default if row is None else loads(row[0])

    def meta_set(self, key: str, value: Any) -> None:
        with self._wlock:
            conn = self._conn()
            if "__meta__" not in self._tables:
                conn.execute(
                    'CREATE TABLE IF NOT EXISTS "__meta__" (key TEXT PRIMARY KEY, value TEXT)'
                )
                self._tables.add("__meta__")
            conn.execute(
                'INSERT INTO "__meta__" (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE'
                " SET value = excluded.value",
                (key, dumps(value)),
            )

    # ------------------------------------------------------------------ maintenance

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Faster, less durable writes for bulk generation (synchronous=OFF on this thread)."""
        conn = self._conn()
        conn.execute("PRAGMA synchronous=OFF")
        try:
            yield
        finally:
            conn.execute("PRAGMA synchronous=NORMAL")

    def reset(self) -> None:
        """Drop every table (records, deletion logs, metadata)."""
        with self._wlock:
            conn = self._conn()
            self._load_tables(conn)
            for table in sorted(self._tables):
                if table.startswith("sqlite_"):
                    continue
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone():
                conn.execute("DELETE FROM sqlite_sequence")
            self._tables = set()
            self._last_now = ""
            self._int_counters = {}

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (before measuring size or copying)."""
        with self._wlock:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def content_hash(self) -> str:
        """SHA-256 over every table's rows in id order: equal stores, equal hash."""
        import hashlib

        h = hashlib.sha256()
        conn = self._conn()
        self._load_tables(conn)
        for table in sorted(t for t in self._tables if not t.startswith("sqlite_")):
            h.update(table.encode() + b"\0")
            cols = "*" if table.startswith("__") else "id, parent_id, modstamp, deleted, body"
            order = "1" if table.startswith("__") else "id"
            for row in conn.execute(f'SELECT {cols} FROM "{table}" ORDER BY {order}'):
                h.update(repr(row).encode())
        return h.hexdigest()


def _bind(value: Any) -> Any:
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, Decimal):
        return float(value)
    return value
