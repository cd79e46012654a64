"""The sync health page's data: per synced entity the last run, the watermark and the counts
(read, loaded, unchanged, quarantined, deleted, written back, from ``ops.run_stats``) with a
trend over the last runs; the quarantine (``ops.quarantine``) with reason and payload, secrets
masked; the requeue of a quarantined record (:mod:`erpsync.sync.requeue`).

Every query is index-backed (migrations 0003, 0005 and 0027): the last run and the trend of an
entity read ``run_stats_entity_idx`` backwards; the quarantine list pages by keyset on
``quarantine_id``; the CSV export streams the filtered list through a server-side cursor.

Masking reuses the project's rules: payload keys that name a credential by Airflow's
sensitive-name rule (:func:`erpsync.redaction.is_secret_name`) are replaced
whole, and every text is scrubbed with :func:`erpsync.redaction.scrub` (secrets Airflow
knows, bearer/basic tokens, ``password=...``-like fragments), the rule the write-back uses for
the error text it stores.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import Connection, sql
from psycopg.rows import TupleRow

from erpsync import redaction

if TYPE_CHECKING:
    from erpsync.sync.requeue import RequestResult

PAGE_SIZE = 50
TREND_RUNS = 30
MASK = "***"
STATUSES = ("open", "requeued", "resolved", "all")


# ------------------------------------------------------------------ masking


def mask_text(text: Any) -> str:
    return redaction.scrub(str(text))


def mask(value: Any) -> Any:
    """A copy of a payload safe to show: credential-named keys masked whole, texts scrubbed."""
    if isinstance(value, dict):
        return {
            k: MASK if redaction.is_secret_name(k) and v not in (None, "") else mask(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


# ------------------------------------------------------------------ entities


@dataclass(frozen=True)
class RunSummary:
    run_stat_id: int
    dag_id: str
    run_id: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    read: int
    loaded: int
    unchanged: int
    quarantined: int
    deleted: int
    written_back: int
    mode: str | None
    error: str | None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 1)


_RUN_COLUMNS = """run_stat_id, dag_id, run_id, status, started_at, finished_at, records_read,
    records_loaded, records_unchanged, records_quarantined, records_deleted,
    records_written_back, detail->>'mode', coalesce(detail->>'message', detail->>'error')"""


@dataclass(frozen=True)
class EntityHealth:
    entity: str
    system: str
    description: str
    last_run: RunSummary | None
    watermark: dt.datetime | None
    watermark_updated_at: dt.datetime | None
    open_quarantine: int
    pending_requeue: int


def entity_specs() -> list[tuple[str, str, str]]:
    """(name, system, description) of every synced entity, from the spec registry."""
    from erpsync.sync import specs, specs_time

    every = [*specs.ALL.values(), *specs_time.BY_NAME.values()]
    out: list[tuple[str, str, str]] = [(s.name, s.system, s.description) for s in every]
    # synced outside the spec registry, with the same watermark, run stats and quarantine
    from erpsync.invoicing import payment_status

    out.append(
        (
            payment_status.ENTITY,
            "erp",
            "Payment status of the invoices erpsync pushed (Business Central salesInvoices: "
            "status, remaining amount, due date).",
        )
    )
    return out


def overview(
    conn: Connection[TupleRow], entities: Iterable[tuple[str, str, str]] | None = None
) -> list[EntityHealth]:
    """One row per entity: last run (one index probe each), watermark, open quarantine."""
    entities = list(entities if entities is not None else entity_specs())
    names = [e[0] for e in entities]
    last = {
        r[0]: RunSummary(*r[2:])
        for r in conn.execute(
            # "entity >= name ORDER BY entity, run_stat_id DESC" can only be served by
            # run_stats_entity_idx (one probe); "entity = name ORDER BY run_stat_id DESC" may be
            # planned as a backward scan of the primary key, which reads the whole table for an
            # entity that never ran
            f"""SELECT e.name, r.* FROM unnest(%s::text[]) AS e(name)
                CROSS JOIN LATERAL (
                    SELECT entity, {_RUN_COLUMNS} FROM ops.run_stats
                    WHERE entity >= e.name ORDER BY entity, run_stat_id DESC LIMIT 1) r
                WHERE r.entity = e.name""",  # noqa: S608 - constant column list
            (names,),
        ).fetchall()
    }
    marks = {
        (s, e): (ts, at)
        for s, e, ts, at in conn.execute(
            "SELECT source_system, entity, cursor_ts, updated_at FROM ops.sync_watermarks"
        ).fetchall()
    }
    quarantine = {
        (s, e): (n, p)
        for s, e, n, p in conn.execute(
            """SELECT source_system, entity, count(*),
                      count(*) FILTER (WHERE requeue_requested_at IS NOT NULL
                                         AND requeued_at IS NULL)
               FROM ops.quarantine WHERE resolved_at IS NULL GROUP BY 1, 2"""
        ).fetchall()
    }
    out = []
    for name, system, description in entities:
        ts, at = marks.get((system, name), (None, None))
        n, p = quarantine.get((system, name), (0, 0))
        out.append(EntityHealth(name, system, description, last.get(name), ts, at, n, p))
    return out


def trend(conn: Connection[TupleRow], entity: str, runs: int = TREND_RUNS) -> list[RunSummary]:
    """The entity's last ``runs`` runs, oldest first."""
    found = conn.execute(
        f"""SELECT {_RUN_COLUMNS} FROM (
                SELECT * FROM ops.run_stats WHERE entity >= %s
                ORDER BY entity, run_stat_id DESC LIMIT %s) r
            WHERE entity = %s ORDER BY run_stat_id DESC""",  # noqa: S608 - constant column list
        (entity, runs, entity),
    ).fetchall()
    return [RunSummary(*r) for r in reversed(found)]


# ------------------------------------------------------------------ quarantine


@dataclass(frozen=True)
class QuarantineFilters:
    #: open (requeued included) | requeued (waiting for the next run) | resolved | all
    status: str = "open"
    system: str = ""
    entity: str = ""
    reason: str = ""
    record_key: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> QuarantineFilters:
        def text(name: str) -> str:
            return (params.get(name) or "").strip()[:200]

        status = text("status") or "open"
        return cls(
            status=status if status in STATUSES else "open",
            system=text("system"),
            entity=text("entity"),
            reason=text("reason"),
            record_key=text("record_key"),
        )

    def query(self) -> dict[str, str]:
        out = {
            "status": self.status,
            "system": self.system,
            "entity": self.entity,
            "reason": self.reason,
            "record_key": self.record_key,
        }
        return {k: v for k, v in out.items() if v}

    def where(self) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        if self.status == "open":
            parts.append(sql.SQL("resolved_at IS NULL"))
        elif self.status == "requeued":
            parts.append(
                sql.SQL(
                    "resolved_at IS NULL AND requeue_requested_at IS NOT NULL"
                    " AND requeued_at IS NULL"
                )
            )
        elif self.status == "resolved":
            parts.append(sql.SQL("resolved_at IS NOT NULL"))
        for column, value in (
            ("source_system", self.system),
            ("entity", self.entity),
            ("reason_code", self.reason),
            ("record_key", self.record_key),
        ):
            if value:
                parts.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if not parts:
            return sql.SQL("TRUE"), params
        return sql.SQL(" AND ").join(parts), params


@dataclass(frozen=True)
class QuarantineRow:
    quarantine_id: int
    run_id: str
    source_system: str
    entity: str
    record_key: str | None
    reason_code: str
    reason_detail: str
    quarantined_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by_run: str | None
    requeue_requested_at: dt.datetime | None
    requeue_requested_by: str | None
    requeued_at: dt.datetime | None
    requeued_by_run: str | None
    requeue_outcome: str | None

    @property
    def state(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        if self.requeue_requested_at is not None and self.requeued_at is None:
            return "requeued"
        return "open"


_Q_COLUMNS = sql.SQL(
    """quarantine_id, run_id, source_system, entity, record_key, reason_code, reason_detail,
       quarantined_at, resolved_at, resolved_by_run, requeue_requested_at, requeue_requested_by,
       requeued_at, requeued_by_run, requeue_outcome"""
)


def _row(r: tuple[Any, ...]) -> QuarantineRow:
    values = list(r)
    values[6] = mask_text(values[6])  # a vendor message may echo what it was sent
    return QuarantineRow(*values)


@dataclass(frozen=True)
class QuarantinePage:
    rows: list[QuarantineRow]
    filters: QuarantineFilters
    before: int | None
    next_before: int | None


def quarantine_list(
    conn: Connection[TupleRow],
    filters: QuarantineFilters,
    *,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> QuarantinePage:
    where, params = filters.where()
    if before is not None:
        where = sql.SQL("{} AND quarantine_id < %s").format(where)
        params = [*params, before]
    found = conn.execute(
        sql.SQL(
            "SELECT {cols} FROM ops.quarantine WHERE {where} ORDER BY quarantine_id DESC LIMIT %s"
        ).format(cols=_Q_COLUMNS, where=where),
        [*params, limit + 1],
    ).fetchall()
    rows = [_row(r) for r in found[:limit]]
    next_before = rows[-1].quarantine_id if len(found) > limit else None
    return QuarantinePage(rows, filters, before, next_before)


def reasons(conn: Connection[TupleRow]) -> list[str]:
    """The reason codes in the quarantine (for the filter's choices; a loose index scan)."""
    return [
        r[0]
        for r in conn.execute(
            """WITH RECURSIVE r(code) AS (
                   (SELECT reason_code FROM ops.quarantine ORDER BY reason_code LIMIT 1)
                   UNION ALL
                   SELECT (SELECT reason_code FROM ops.quarantine
                           WHERE reason_code > r.code ORDER BY reason_code LIMIT 1)
                   FROM r WHERE r.code IS NOT NULL)
               SELECT code FROM r WHERE code IS NOT NULL"""
        ).fetchall()
    ]


@dataclass(frozen=True)
class QuarantineDetail:
    row: QuarantineRow
    payload: Any  # masked
    payload_json: str  # masked, pretty
    #: the record's other quarantine rows (newest first)
    others: list[QuarantineRow] = field(default_factory=list)
    #: audit entries about this row (requeue requested / served): (audit_id, at, actor, action)
    audit: list[tuple[Any, ...]] = field(default_factory=list)


def quarantine_detail(conn: Connection[TupleRow], quarantine_id: int) -> QuarantineDetail | None:
    found = conn.execute(
        sql.SQL("SELECT {cols}, payload FROM ops.quarantine WHERE quarantine_id = %s").format(
            cols=_Q_COLUMNS
        ),
        (quarantine_id,),
    ).fetchone()
    if found is None:
        return None
    row = _row(found[:-1])
    payload = mask(found[-1])
    others: list[QuarantineRow] = []
    if row.record_key is not None:
        others = [
            _row(r)
            for r in conn.execute(
                sql.SQL(
                    """SELECT {cols} FROM ops.quarantine
                       WHERE source_system = %s AND entity = %s AND record_key = %s
                         AND quarantine_id <> %s
                       ORDER BY quarantine_id DESC LIMIT 20"""
                ).format(cols=_Q_COLUMNS),
                (row.source_system, row.entity, row.record_key, row.quarantine_id),
            ).fetchall()
        ]
    trail = conn.execute(
        """SELECT audit_id, occurred_at, actor, action, source_run_id FROM audit.audit_log
           WHERE entity_type = 'quarantine' AND entity_id = %s ORDER BY audit_id DESC LIMIT 50""",
        (str(quarantine_id),),
    ).fetchall()
    return QuarantineDetail(
        row=row,
        payload=payload,
        payload_json=json.dumps(payload, indent=2, sort_keys=True, default=str),
        others=others,
        audit=[tuple(t) for t in trail],
    )


QUARANTINE_CSV_HEADER = [
    "quarantine_id",
    "state",
    "source_system",
    "entity",
    "record_key",
    "reason_code",
    "reason_detail",
    "quarantined_at",
    "run_id",
    "resolved_at",
    "resolved_by_run",
    "requeue_requested_at",
    "requeue_requested_by",
    "requeued_by_run",
    "requeue_outcome",
]


def quarantine_csv_rows(
    conn: Connection[TupleRow], filters: QuarantineFilters, *, fetch: int = 2_000
) -> Iterator[tuple[Any, ...]]:
    """Every matching row (payloads left out: the detail page shows them masked), streamed."""
    where, params = filters.where()
    query = sql.SQL(
        "SELECT {cols} FROM ops.quarantine WHERE {where} ORDER BY quarantine_id DESC"
    ).format(cols=_Q_COLUMNS, where=where)
    with conn.cursor(name="erpsync_quarantine_csv") as cur:
        cur.itersize = fetch
        cur.execute(query, params)
        for r in cur:
            q = _row(r)
            yield (
                q.quarantine_id,
                q.state,
                q.source_system,
                q.entity,
                q.record_key,
                q.reason_code,
                q.reason_detail,
                q.quarantined_at.isoformat(),
                q.run_id,
                q.resolved_at.isoformat() if q.resolved_at else "",
                q.resolved_by_run or "",
                q.requeue_requested_at.isoformat() if q.requeue_requested_at else "",
                q.requeue_requested_by or "",
                q.requeued_by_run or "",
                q.requeue_outcome or "",
            )


RUNS_CSV_HEADER = [
    "entity",
    "run_stat_id",
    "dag_id",
    "run_id",
    "status",
    "mode",
    "started_at",
    "finished_at",
    "read",
    "loaded",
    "unchanged",
    "quarantined",
    "deleted",
    "written_back",
]


def runs_csv_rows(
    conn: Connection[TupleRow], entity: str | None = None
) -> Iterator[tuple[Any, ...]]:
    """The overview (each entity's last run) or, for ``entity``, its trend, as CSV rows."""
    if entity:
        pairs = [(entity, r) for r in trend(conn, entity)]
    else:
        pairs = [(e.entity, e.last_run) for e in overview(conn) if e.last_run is not None]
    for name, r in pairs:
        yield (
            name,
            r.run_stat_id,
            r.dag_id,
            r.run_id,
            r.status,
            r.mode or "",
            r.started_at.isoformat(),
            r.finished_at.isoformat() if r.finished_at else "",
            r.read,
            r.loaded,
            r.unchanged,
            r.quarantined,
            r.deleted,
            r.written_back,
        )


def requeue(
    conn: Connection[TupleRow], quarantine_ids: Iterable[int], *, user: str
) -> list[RequestResult]:
    """Ask the next run of each record's entity to re-read it (see :mod:`erpsync.sync.requeue`)."""
    from erpsync.sync import requeue as engine_requeue

    served = {(system, name) for name, system, _ in entity_specs()}
    return engine_requeue.request(conn, quarantine_ids, user=user, served=served)
