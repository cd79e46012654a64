"""The hourly time & expense sync: the engine's incremental load plus hard-delete detection that
does not re-read everything.

Harvest hard-deletes time entries and expenses and keeps no tombstones, so the only evidence of
a delete is an id the warehouse holds that the PSA no longer lists. Re-reading every id every
hour costs ``ceil(N / 2000)`` list requests (500 for the large firm's million entries, at
Harvest's 100 requests / 15 s: over a minute of the rate limit each hour, per entity). Instead:

**Windowed count comparison, bisected on ``spent_date``.** After the incremental read (same
transaction, before the merge) the warehouse's *expected* live set is core's live rows,
overlaid with what this run just read (their new ``spent_date``) plus the entity's open
quarantine rows (records the PSA has but core does not hold). Its count over a ``spent_date``
window is free (SQL over the ``spent_date`` index); Harvest's is one ``per_page=1`` list
request filtered by ``from``/``to`` whose envelope carries ``total_entries``.

1. Root: the warehouse's whole ``spent_date`` range (1 request). Equal counts -> no delete to
   find; done.
2. Otherwise split the window at the warehouse's median ``spent_date`` (both halves hold about
   as many rows) and ask Harvest for the left half's count (1 request); the right half's count
   is the parent's minus the left's. Recurse only into halves whose counts differ.
3. A window holding at most ``leaf_size`` warehouse rows (or a single day) is read in full
   (its ids, ``ceil(rows / page_size)`` requests, normally 1): warehouse ids not listed are
   candidates.
4. Each candidate is confirmed with ``GET /v2/<resource>/{id}``: a 404 is a delete; an answer
   means the record moved (its ``spent_date`` changed after this run's read) and the next
   incremental read brings it.

Cost per hour: 1 request when nothing was deleted (the usual hour); for ``d`` deletes about
``d * (log2(N / leaf_size) + 2)`` requests, fewer when deletes share windows (large firm,
``leaf_size`` 2000: ~9 levels, ~11 requests per deleted entry against 500 for a full re-read;
small firm in the tests with ``leaf_size`` 25: 4 deletes in ~25 requests against 120), and
never much more than a full re-read (every window differing reads every id once, plus one
count per split).

A delete and a create in the same window keep Harvest's count equal only if the create is
*not* yet in the warehouse: a create read by this run's incremental read is in the overlay and
makes the warehouse count exceed Harvest's, so the pair is caught. A create made after the
read (between the read and the count) can hide a delete for one hour; the next run reads the
create and the counts differ again, so a delete is found at most one run late. Records
changed while paging are re-read by the 10-minute lookback (see :mod:`specs_time`).

Full reads (the first run, or ``full=True``) need none of this: the engine compares id sets.
All of it is the spec's delete strategy, :class:`WindowedCount`: before the read it opens the
side connection (the caller's :class:`~erpsync.sync.spec.ConnectWarehouse`) and watches the
pages read; after the read it returns the deleted ids, which the engine loads as tombstone
records (``{"id": ..., "_erpsync_deleted": True}``, the spec's ``deleted_flag``), so merge,
soft delete (``deleted_at``), quarantine resolution, watermark and run stats stay one
transaction in :func:`erpsync.sync.engine.run_entity_sync`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from psycopg import sql

from erpsync.sync.spec import (
    ConnectWarehouse,
    DeleteMode,
    EntitySpec,
    ReadPlan,
    Record,
    RunInfo,
    SyncStats,
)

if TYPE_CHECKING:
    import psycopg

    from erpsync.connectors.harvest import HarvestClient

log = logging.getLogger(__name__)

DEFAULT_LEAF_SIZE = 2000
DEFAULT_PAGE_SIZE = 2000


@dataclass
class DeleteCheck:
    """What the delete detection of one run did (requests counted by the detection client)."""

    entity: str
    ran: bool = False
    requests: int = 0
    count_requests: int = 0
    id_pages: int = 0
    ids_listed: int = 0
    confirm_requests: int = 0
    windows: int = 0
    candidates: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"delete check {self.entity}: {self.requests} requests ({self.count_requests} "
            f"counts, {self.id_pages} id pages / {self.ids_listed} ids, {self.confirm_requests} "
            f"confirmations), {self.windows} windows, {len(self.candidates)} candidates, "
            f"{len(self.deleted)} deleted"
        )


@dataclass(frozen=True)
class WindowedCount:
    """The windowed count comparison (the module docstring) as a delete strategy.

    ``window_column`` is the core column windows are cut on (``spent_date``, the vendor field
    of the same name filtered with ``from``/``to``); ``leaf_size`` and ``page_size`` as in the
    module docstring; ``report`` (tests, one run) receives what the detection did."""

    window_column: str = "spent_date"
    leaf_size: int = DEFAULT_LEAF_SIZE
    page_size: int = DEFAULT_PAGE_SIZE
    report: DeleteCheck | None = field(default=None, compare=False)

    @property
    def mode(self) -> DeleteMode:
        return DeleteMode.WINDOWED_COUNT

    @property
    def full_reads_only(self) -> bool:
        return False

    def before_read(self, plan: ReadPlan) -> None:
        """On an incremental read: open the side connection and record every record read
        (id, ``spent_date``) in its ``_te_seen``, the overlay of :class:`_Expected`."""
        if not plan.incremental:
            return
        if plan.side is None:
            # every task passes one (erpsync.airflow.sync_tasks); a caller replaying pages
            # from files (tests, backfills) has no vendor to count against
            log.warning("%s: no side connection, deletes not checked this run", plan.spec.name)
            return
        side = plan.resources.enter_context(plan.side())
        side.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _te_seen (psa_id text NOT NULL, spent_date date, "
            "seq bigint GENERATED ALWAYS AS IDENTITY)"
        )
        side.execute("TRUNCATE _te_seen")
        key = plan.spec.record_key

        def observe(page: Sequence[Record]) -> None:
            with side.cursor().copy("COPY _te_seen (psa_id, spent_date) FROM STDIN") as copy:
                for rec in page:
                    if rec.get(key) is not None:
                        copy.write_row((str(rec[key]), _date(rec.get("spent_date"))))

        plan.observer = observe
        plan.side_conn = side

    def after_read(self, plan: ReadPlan) -> list[str]:
        """The ids the PSA no longer has (after an incremental read; nothing after a full
        one, whose id-set comparison the engine makes)."""
        if plan.side_conn is None:
            return []
        from erpsync.connectors.harvest import HarvestClient

        client = plan.client
        if not isinstance(client, HarvestClient):
            raise TypeError(f"{plan.spec.name}: the windowed delete check needs a HarvestClient")
        check = self.report if self.report is not None else DeleteCheck(plan.spec.name)
        gone = find_deleted(
            plan.spec,
            plan.side_conn,
            client,
            check,
            leaf=self.leaf_size,
            per_page=self.page_size,
            window_column=self.window_column,
        )
        print(check.summary())
        return gone


def sync_entity(
    conn: psycopg.Connection[Any],
    spec: EntitySpec,
    *,
    run: RunInfo,
    client: HarvestClient,
    side: ConnectWarehouse,
    full: bool | None = None,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    page_size: int = DEFAULT_PAGE_SIZE,
    report: DeleteCheck | None = None,
) -> SyncStats:
    """:func:`erpsync.sync.engine.run_entity_sync` of a time & expense spec with the delete
    detection's windows and pages sized by ``leaf_size``/``page_size`` (tests size them down
    to the small firm); ``report`` receives what the detection did."""
    from erpsync.sync import engine

    if not isinstance(spec.deletes, WindowedCount):
        raise TypeError(f"{spec.name}: not a windowed-count spec")
    deletes = replace(spec.deletes, leaf_size=leaf_size, page_size=page_size, report=report)
    return engine.run_entity_sync(
        conn, replace(spec, deletes=deletes), run=run, client=client, side=side, full=full
    )


def _date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


# ------------------------------------------------------------------ the detection


class _Expected:
    """The warehouse's expected live set (core live rows, overlaid with this run's read and
    the open quarantine) per ``spent_date`` window, in SQL on the side connection."""

    def __init__(
        self, spec: EntitySpec, side: psycopg.Connection[Any], column: str = "spent_date"
    ) -> None:
        self.side = side
        schema, _, table = spec.core_table.partition(".")
        # _te_seen may hold a record twice (changed while paging): its last sighting wins
        self.cte = sql.SQL(
            """WITH seen AS (
                   SELECT DISTINCT ON (psa_id) psa_id, spent_date FROM _te_seen
                   ORDER BY psa_id, seq DESC),
               expected AS (
                   SELECT t.psa_id, t.{col} AS spent_date FROM {core} t
                   WHERE t.deleted_at IS NULL
                     AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.psa_id = t.psa_id)
                   UNION ALL
                   SELECT psa_id, spent_date FROM seen
                   UNION ALL
                   SELECT DISTINCT q.record_key, (q.payload->>'spent_date')::date
                   FROM ops.quarantine q
                   WHERE q.source_system = {system} AND q.entity = {entity}
                     AND q.resolved_at IS NULL
                     AND q.payload->>'spent_date' ~ '^\\d{{4}}-\\d{{2}}-\\d{{2}}$'
                     AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.psa_id = q.record_key)
                     AND NOT EXISTS (SELECT 1 FROM {core} t
                                     WHERE t.psa_id = q.record_key AND t.deleted_at IS NULL))
            """
        ).format(
            col=sql.Identifier(column),
            core=sql.Identifier(schema, table),
            system=sql.Literal(spec.system),
            entity=sql.Literal(spec.name),
        )

    def _query(
        self, select: str, a: dt.date | None, b: dt.date | None
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        where: sql.Composable = sql.SQL("")
        params: list[dt.date | None] = []
        if a is not None:
            where = sql.SQL(" WHERE spent_date BETWEEN %s AND %s")
            params = [a, b]
        return self.side.execute(
            sql.SQL("{} SELECT {} FROM expected{}").format(self.cte, sql.SQL(select), where),
            params,
        )

    def _one(self, select: str, a: dt.date | None, b: dt.date | None) -> tuple[Any, ...]:
        row = self._query(select, a, b).fetchone()
        assert row is not None  # an aggregate always returns a row
        return row

    def count(self, a: dt.date | None = None, b: dt.date | None = None) -> int:
        return int(self._one("count(*)", a, b)[0])

    def bounds(self) -> tuple[dt.date | None, dt.date | None]:
        lo, hi = self._one("min(spent_date), max(spent_date)", None, None)
        return lo, hi

    def median(self, a: dt.date, b: dt.date) -> dt.date:
        median: dt.date = self._one(
            "percentile_disc(0.5) WITHIN GROUP (ORDER BY spent_date)", a, b
        )[0]
        return median

    def ids(self, a: dt.date, b: dt.date) -> set[str]:
        return {str(r[0]) for r in self._query("psa_id", a, b).fetchall()}


def _window(a: dt.date | None, b: dt.date | None) -> dict[str, str]:
    if a is None or b is None:
        return {}
    return {"from": a.isoformat(), "to": b.isoformat()}


def find_deleted(
    spec: EntitySpec,
    side: psycopg.Connection[Any],
    client: HarvestClient,
    check: DeleteCheck | None = None,
    *,
    leaf: int = DEFAULT_LEAF_SIZE,
    per_page: int = DEFAULT_PAGE_SIZE,
    window_column: str = "spent_date",
) -> list[str]:
    """The ids of ``spec``'s records the PSA no longer has (see the module docstring).
    ``side`` is a warehouse connection holding this run's ``_te_seen``."""
    from erpsync.sync.sources import HarvestList

    if not isinstance(spec.source, HarvestList):
        raise TypeError(f"{spec.name}: the windowed delete check reads a Harvest list")
    check = check if check is not None else DeleteCheck(spec.name)
    check.ran = True
    resource = spec.source.resource
    expected = _Expected(spec, side, window_column)
    before = client.stats.requests

    def remote_count(a: dt.date, b: dt.date) -> int:
        check.count_requests += 1
        payload = client.request_json(
            "GET", f"/v2/{resource}", params={**_window(a, b), "per_page": 1}
        )
        return int(payload["total_entries"])

    def remote_ids(a: dt.date, b: dt.date) -> set[str]:
        out: set[str] = set()
        for page in client.iter_pages(resource, _window(a, b), per_page=per_page):
            check.id_pages += 1
            out.update(str(r["id"]) for r in page)
        if not out:
            check.id_pages += 1  # an empty window still costs its request
        check.ids_listed += len(out)
        return out

    candidates: list[str] = []
    lo, hi = expected.bounds()
    if lo is None or hi is None:
        check.requests = client.stats.requests - before
        return []  # nothing live in the warehouse: nothing to delete
    # (a, b, Harvest's count of the window): a split asks for the left half's count only,
    # the right half's is the parent's minus the left's
    stack: list[tuple[dt.date, dt.date, int]] = [(lo, hi, remote_count(lo, hi))]
    while stack:
        a, b, remote = stack.pop()
        check.windows += 1
        local = expected.count(a, b)
        if local == remote or local == 0:
            continue  # equal: nothing to find here; none of ours: nothing can be deleted
        if local <= leaf or a == b:
            candidates.extend(sorted(expected.ids(a, b) - remote_ids(a, b)))
            continue
        mid = expected.median(a, b)
        if mid >= b:
            mid = b - dt.timedelta(days=1)
        left = remote_count(a, mid)
        stack.append((mid + dt.timedelta(days=1), b, remote - left))
        stack.append((a, mid, left))
    check.candidates = candidates
    deleted = []
    for rid in candidates:
        check.confirm_requests += 1
        if client.get(f"{resource}/{rid}") is None:
            deleted.append(rid)
        else:
            log.info(
                "%s %s is listed outside its warehouse window: moved, not deleted", resource, rid
            )
    check.deleted = deleted
    check.requests = client.stats.requests - before
    return deleted
