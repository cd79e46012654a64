"""SOQL execution and server-side query cursors (``nextRecordsUrl`` locators) for the sandbox CRM.

A query runs once, at ``GET .../query?q=``: the matching rows are filtered, sorted and their ids
snapshotted into a cursor, like Salesforce's server-side query cursor. ``GET
.../query/<locator>-<offset>`` then serves the *current* bodies of the snapshotted ids from
``offset`` on, so a paged read returns every matching record exactly once even while records
change underneath it (a record updated mid-read comes back with its new values, in its
snapshotted position; a record soft-deleted mid-read is still served, with ``IsDeleted = true``;
a record physically removed from the store is skipped).

Cursors expire after ``ttl_seconds`` without use (Salesforce: 15 minutes of inactivity) and at
most ``max_open`` are kept (Salesforce: 10 per user; opening one more drops the oldest); an
expired or unknown locator is 400 ``INVALID_QUERY_LOCATOR``.

Salesforce docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
and https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_queryoptions.htm
"""

from __future__ import annotations

import operator
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from erpsync_sandbox.store import Row, Store, to_iso

from .schema import salesforce_id
from .soql import CompiledQuery

__all__ = [
    "Cursor",
    "CursorRegistry",
    "QueryResult",
    "page_payload",
    "project",
    "render_bodies",
    "render_ids",
    "run_query",
]

_CMP: dict[str, Callable[[str, str], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    "!=": operator.ne,
}

DEFAULT_BATCH = 2000
MIN_BATCH = 200
MAX_BATCH = 2000

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def batch_size_from(header: str | None) -> int:
    """The batch size of a ``Sforce-Query-Options: batchSize=N`` header, clamped to 200..2000
    (Salesforce treats the value as a hint; default 2000)."""
    if not header:
        return DEFAULT_BATCH
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "batchsize":
            try:
                n = int(value.strip())
            except ValueError:
                return DEFAULT_BATCH
            return max(MIN_BATCH, min(MAX_BATCH, n))
    return DEFAULT_BATCH


@dataclass
class Cursor:
    """A server-side query cursor: the snapshotted ids and how to render them."""

    locator: str
    sobject: str
    fields: list[str]
    ids: list[str]
    batch: int
    version: str
    include_deleted: bool
    last_used: float = field(default_factory=time.monotonic)


class CursorRegistry:
    """Open cursors, keyed by locator; thread-safe."""

    def __init__(self, *, ttl_seconds: float = 900.0, max_open: int = 10) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_open = max_open
        self._lock = threading.Lock()
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()

    def open(
        self,
        sobject: str,
        fields: list[str],
        ids: list[str],
        *,
        batch: int,
        version: str,
        include_deleted: bool,
    ) -> Cursor:
        locator = salesforce_id("01g" + "".join(secrets.choice(_ALNUM) for _ in range(12)))
        cursor = Cursor(locator, sobject, fields, ids, batch, version, include_deleted)
        with self._lock:
            self._expire()
            self._cursors[locator] = cursor
            while self.max_open > 0 and len(self._cursors) > self.max_open:
                self._cursors.popitem(last=False)
        return cursor

    def get(self, locator: str) -> Cursor | None:
        """The live cursor (its inactivity timer restarts), or None if unknown or expired."""
        with self._lock:
            self._expire()
            cursor = self._cursors.get(locator)
            if cursor is not None:
                cursor.last_used = time.monotonic()
                self._cursors.move_to_end(locator)
            return cursor

    def close(self, locator: str) -> None:
        with self._lock:
            self._cursors.pop(locator, None)

    def clear(self) -> None:
        with self._lock:
            self._cursors.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cursors)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_seconds
        for loc in [k for k, c in self._cursors.items() if c.last_used < cutoff]:
            del self._cursors[loc]


def project(body: dict[str, Any], sobject: str, fields: list[str], version: str) -> dict[str, Any]:
    """A query record: ``attributes`` plus exactly the selected fields, in SELECT order."""
    return _projector(sobject, fields, version)(body)


def _projector(
    sobject: str, fields: list[str], version: str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    prefix = f"/services/data/v{version}/sobjects/{sobject}/"

    def one(body: dict[str, Any]) -> dict[str, Any]:
        get = body.get
        out: dict[str, Any] = {"attributes": {"type": sobject, "url": f"{prefix}{get('Id')}"}}
        for name in fields:
            out[name] = get(name)
        return out

    return one


def _body(row: Row) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(row.body)
    if row.deleted or "IsDeleted" in body:
        body["IsDeleted"] = row.deleted
    if "Id" not in body:
        body["Id"] = row.id
    return body


@dataclass
class QueryResult:
    """What a query found: a count, or the snapshotted ids plus the first page's bodies when the
    query had to parse them anyway (``first is None``: render the first page from the store)."""

    total: int
    ids: list[str]
    first: list[dict[str, Any]] | None
    count_only: bool = False
    aggregate: int | None = None


def run_query(
    store: Store,
    q: CompiledQuery,
    *,
    include_deleted: bool,
    first_batch: int,
    purged_before: str | None = None,
) -> QueryResult:
    """Evaluate ``q`` over the store.

    ``purged_before`` (store ISO Z): soft-deleted rows deleted before it are gone from the
    recycle bin and not returned even by queryAll. Returns the ordered ids (the cursor's
    snapshot) and, when bodies were parsed to filter or sort, those of the first batch.
    """
    filters: dict[str, Any] = {"include_deleted": include_deleted}
    if q.modstamp_gt is not None:
        filters["modstamp_gt"] = to_iso(q.modstamp_gt)
    if q.modstamp_ge is not None:
        filters["modstamp_ge"] = to_iso(q.modstamp_ge)
    if q.ids is not None and all(len(i) == 18 for i in q.ids):
        filters["conditions"] = [("id", "in", list(q.ids))]
    rows = store.scan_rows(q.sobject, order="seq", **filters)
    if include_deleted and purged_before is not None:
        rows = [r for r in rows if not (r.deleted and r.modstamp < purged_before)]

    pred: Callable[[dict[str, Any]], bool] | None = q.predicate
    if q.stamp_filters is not None:
        # WHERE only compares SystemModstamp: evaluate it on the modstamp column (the body's
        # SystemModstamp is that column cut to milliseconds) without parsing any body.
        for op, key in q.stamp_filters:
            cmp = _CMP[op]
            rows = [r for r in rows if cmp(r.modstamp[:23] + "000", key)]
        pred = None
    desc = q.stamp_order() if q.order else None
    if q.order and desc is not None:
        if [n for n, _ in q.order_names] == ["Id"]:
            rows.sort(key=lambda r: r.id, reverse=desc)
        else:
            rows.sort(key=lambda r: (r.modstamp[:23], r.id), reverse=desc)

    if pred is None and (not q.order or desc is not None) and not q.count:
        # Fast path: no body parsed at all.
        start = q.offset or 0
        sel = rows[start : None if q.limit is None else start + q.limit]
        if q.count == "":
            return QueryResult(len(sel), [], [], count_only=True)
        return QueryResult(len(sel), [r.id for r in sel], None)

    pairs = [(r, _body(r)) for r in rows]
    if pred is not None:
        pairs = [p for p in pairs if pred(p[1])]
    if q.order and desc is None:
        q.sort(pairs, lambda p: p[1])
    start = q.offset or 0
    if start or q.limit is not None:
        pairs = pairs[start : None if q.limit is None else start + q.limit]
    if q.count is not None:
        if q.count == "":
            return QueryResult(len(pairs), [], [], count_only=True)
        name = q.count
        n = sum(1 for _, b in pairs if b.get(name) is not None)
        return QueryResult(1, [], [], count_only=True, aggregate=n)
    return QueryResult(len(pairs), [r.id for r, _ in pairs], [b for _, b in pairs[:first_batch]])


def fetch_bodies(store: Store, sobject: str, ids: list[str]) -> list[dict[str, Any]]:
    """Current bodies of ``ids`` in that order (rows physically gone are skipped)."""
    if not ids:
        return []
    found: dict[str, Row] = {}
    step = 900  # stay well below SQLite's bound-parameter limit
    for i in range(0, len(ids), step):
        chunk = ids[i : i + step]
        for row in store.scan_rows(sobject, conditions=[("id", "in", chunk)], include_deleted=True):
            found[row.id] = row
    return [_body(found[i]) for i in ids if i in found]


def render_ids(
    store: Store, sobject: str, fields: list[str], version: str, ids: list[str]
) -> list[dict[str, Any]]:
    """Query records for ``ids`` from the store's *current* rows, in that order."""
    one = _projector(sobject, fields, version)
    return [one(b) for b in fetch_bodies(store, sobject, ids)]


def render_bodies(
    bodies: list[dict[str, Any]], sobject: str, fields: list[str], version: str
) -> list[dict[str, Any]]:
    """Query records from bodies already parsed (the first page of a filtered query)."""
    one = _projector(sobject, fields, version)
    return [one(b) for b in bodies]


def page_payload(
    cursor: Cursor | None,
    total: int,
    records: list[dict[str, Any]],
    *,
    version: str,
    next_offset: int | None,
) -> bytes:
    """The JSON bytes of one query response page."""
    payload: dict[str, Any] = {"totalSize": total, "done": next_offset is None}
    if next_offset is not None and cursor is not None:
        payload["nextRecordsUrl"] = (
            f"/services/data/v{version}/query/{cursor.locator}-{next_offset}"
        )
    payload["records"] = records
    return orjson.dumps(payload)
