"""The audit trail page's data: search ``audit.audit_log``, one entry with its before/after
diff, the CSV export, and the hash chain's verification status.

Search is by entity (type, id), run (DAG id, run id), actor, action and date range, newest
first, paged by keyset on ``audit_id`` (``before``; with a date range on ``(occurred_at,
audit_id)``): every filter has an index (migrations 0004
and 0027), so a page costs an index range scan whatever the table's size. The CSV export
streams the whole filtered search through a server-side cursor (never one page, never all rows
in memory).

The hash chain (migration 0004) is verified incrementally: ``audit.verify_chain()`` re-hashes
every row (a full scan), so :func:`verify_pending` checks only the rows after the verified
checkpoint (``ops.audit_chain_checkpoint``, migration 0027) in bounded batches (each row's hash
recomputed with ``audit.row_digest`` and linked to the previous row's hash, the first one to the
checkpoint's), and moves the checkpoint forward; the first bad row is recorded as where the
chain broke and verification stops there. The checkpoint row itself is re-checked each time,
so tampering with it is seen too. :func:`chain_status` only reads (the page's GET).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection, sql
from psycopg.rows import TupleRow

from erpsync.console.db import scalar

PAGE_SIZE = 50
#: rows re-hashed per statement, and per call of :func:`verify_pending` at most
VERIFY_BATCH = 5_000
VERIFY_MAX_ROWS = 50_000
#: the pending count stops here ("more than N"): counting millions would be a scan
PENDING_COUNT_CAP = 100_000
_LOCK = "erpsync.audit_chain_checkpoint"


# ------------------------------------------------------------------ search


@dataclass(frozen=True)
class AuditFilters:
    """What the auditor searches by; empty strings mean "any"."""

    entity_type: str = ""
    entity_id: str = ""
    dag_id: str = ""
    run_id: str = ""
    actor: str = ""
    action: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None  # inclusive

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> AuditFilters:
        def text(name: str) -> str:
            return (params.get(name) or "").strip()[:200]

        return cls(
            entity_type=text("entity_type"),
            entity_id=text("entity_id"),
            dag_id=text("dag_id"),
            run_id=text("run_id"),
            actor=text("actor"),
            action=text("action"),
            date_from=_date(params.get("from")),
            date_to=_date(params.get("to")),
        )

    def query(self) -> dict[str, str]:
        """The filters as URL query parameters (for links and the CSV export)."""
        out = {
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "actor": self.actor,
            "action": self.action,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
        }
        return {k: v for k, v in out.items() if v}

    def where(self) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for column, value in (
            ("entity_type", self.entity_type),
            ("entity_id", self.entity_id),
            ("source_dag_id", self.dag_id),
            ("source_run_id", self.run_id),
            ("actor", self.actor),
            ("action", self.action),
        ):
            if value:
                parts.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if self.date_from:
            parts.append(sql.SQL("occurred_at >= %s"))
            params.append(_utc_midnight(self.date_from))
        if self.date_to:
            parts.append(sql.SQL("occurred_at < %s"))
            params.append(_utc_midnight(self.date_to + dt.timedelta(days=1)))
        if not parts:
            return sql.SQL("TRUE"), params
        return sql.SQL(" AND ").join(parts), params


def _date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value.strip()) if value and value.strip() else None
    except ValueError:
        return None


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


@dataclass(frozen=True)
class AuditRow:
    audit_id: int
    occurred_at: dt.datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str | None
    source_dag_id: str | None
    source_run_id: str | None
    source_task_id: str | None
    changed: list[str]


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditRow]
    filters: AuditFilters
    before: int | None
    next_before: int | None  # keyset for the next (older) page, None on the last page


_COLUMNS = sql.SQL(
    "audit_id, occurred_at, actor, action, entity_type, entity_id, source_dag_id, "
    "source_run_id, source_task_id"
)


def _audit_row(r: tuple[Any, ...], *, changed: list[str]) -> AuditRow:
    """An :class:`AuditRow` of a row that starts with :data:`_COLUMNS`."""
    audit_id, occurred_at, actor, action, entity_type, entity_id, dag_id, run_id, task_id = r[:9]
    return AuditRow(
        audit_id,
        occurred_at,
        actor,
        action,
        entity_type,
        entity_id,
        dag_id,
        run_id,
        task_id,
        changed,
    )


def _order(by_time: bool) -> sql.Composable:
    """Newest first. With a date range, by (occurred_at, audit_id): the scan walks
    ``audit_log_occurred_idx`` back from the range's end instead of the primary key back from
    today (which, for a range months ago, skips every newer row first)."""
    if by_time:
        return sql.SQL("occurred_at DESC, audit_id DESC")
    return sql.SQL("audit_id DESC")


def search(
    conn: Connection[TupleRow],
    filters: AuditFilters,
    *,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> AuditPage:
    """One page of matching entries, newest first, older than ``before`` (an audit id)."""
    where, params = filters.where()
    by_time = filters.date_from is not None or filters.date_to is not None
    if before is not None and by_time:
        where = sql.SQL(
            "{} AND (occurred_at, audit_id) < "
            "(SELECT occurred_at, audit_id FROM audit.audit_log WHERE audit_id = %s)"
        ).format(where)
        params = [*params, before]
    elif before is not None:
        where = sql.SQL("{} AND audit_id < %s").format(where)
        params = [*params, before]
    query = sql.SQL(
        """SELECT {cols}, before_state, after_state FROM audit.audit_log
           WHERE {where} ORDER BY {order} LIMIT %s"""
    ).format(cols=_COLUMNS, where=where, order=_order(by_time))
    found = conn.execute(query, [*params, limit + 1]).fetchall()
    rows = [
        _audit_row(r, changed=[d.key for d in diff(r[9], r[10]) if d.changed])
        for r in found[:limit]
    ]
    next_before = rows[-1].audit_id if len(found) > limit else None
    return AuditPage(rows=rows, filters=filters, before=before, next_before=next_before)


# ------------------------------------------------------------------ one entry


@dataclass(frozen=True)
class DiffRow:
    key: str
    before: str | None
    after: str | None
    changed: bool


def _show(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def diff(before: Any, after: Any) -> list[DiffRow]:
    """Key by key (top level) for objects, else one row ``value``; ``changed`` marks keys added,
    removed or with a different value."""
    if isinstance(before, dict) or isinstance(after, dict):
        b = before if isinstance(before, dict) else {}
        a = after if isinstance(after, dict) else {}
        keys = list(dict.fromkeys([*b, *a]))
        return [
            DiffRow(
                key=k,
                before=_show(b.get(k)) if k in b else None,
                after=_show(a.get(k)) if k in a else None,
                changed=(k in b) != (k in a) or b.get(k) != a.get(k),
            )
            for k in keys
        ]
    if before is None and after is None:
        return []
    return [DiffRow("value", _show(before), _show(after), before != after)]


@dataclass(frozen=True)
class AuditEntry:
    row: AuditRow
    before_state: Any
    after_state: Any
    detail: dict[str, Any]
    diff: list[DiffRow]
    prev_hash: str
    row_hash: str
    #: other entries of the same entity (newest first, a few), for the history
    history: list[AuditRow] = field(default_factory=list)


def entry(conn: Connection[TupleRow], audit_id: int, *, history: int = 20) -> AuditEntry | None:
    found = conn.execute(
        sql.SQL(
            """SELECT {cols}, before_state, after_state, detail, prev_hash, row_hash
               FROM audit.audit_log WHERE audit_id = %s"""
        ).format(cols=_COLUMNS),
        (audit_id,),
    ).fetchone()
    if found is None:
        return None
    from erpsync.console.sync_health import mask

    # what changed is decided on the stored values; what is shown is masked (no audit row
    # should hold a credential, and none is ever shown if one does)
    changed = {d.key for d in diff(found[9], found[10]) if d.changed}
    changes = [
        DiffRow(d.key, d.before, d.after, d.key in changed)
        for d in diff(mask(found[9]), mask(found[10]))
    ]
    row = _audit_row(found, changed=[d.key for d in changes if d.changed])
    others: list[AuditRow] = []
    if row.entity_id is not None:
        page = search(
            conn,
            AuditFilters(entity_type=row.entity_type, entity_id=row.entity_id),
            limit=history,
        )
        others = [r for r in page.rows if r.audit_id != row.audit_id]
    return AuditEntry(
        row=row,
        before_state=mask(found[9]),
        after_state=mask(found[10]),
        detail=mask(found[11] or {}),
        diff=changes,
        prev_hash=found[12],
        row_hash=found[13],
        history=others,
    )


# ------------------------------------------------------------------ CSV


CSV_HEADER = [
    "audit_id",
    "occurred_at",
    "actor",
    "action",
    "entity_type",
    "entity_id",
    "source_dag_id",
    "source_run_id",
    "source_task_id",
    "before_state",
    "after_state",
    "detail",
    "row_hash",
]


def csv_rows(
    conn: Connection[TupleRow], filters: AuditFilters, *, fetch: int = 2_000
) -> Iterator[tuple[Any, ...]]:
    """Every matching entry (newest first) through a server-side cursor, ``fetch`` rows per
    round trip: the export is not limited to a page and holds one batch in memory. The caller
    keeps ``conn`` open (in a transaction) while iterating."""
    where, params = filters.where()
    by_time = filters.date_from is not None or filters.date_to is not None
    query = sql.SQL(
        """SELECT {cols}, before_state::text, after_state::text, detail::text, row_hash
           FROM audit.audit_log WHERE {where} ORDER BY {order}"""
    ).format(cols=_COLUMNS, where=where, order=_order(by_time))
    with conn.cursor(name="erpsync_audit_csv") as cur:
        cur.itersize = fetch
        cur.execute(query, params)
        for r in cur:
            yield (r[0], r[1].isoformat(), *r[2:])


# ------------------------------------------------------------------ hash chain


@dataclass(frozen=True)
class ChainStatus:
    verified_audit_id: int
    verified_at: dt.datetime | None
    rows_verified: int
    pending: int
    pending_capped: bool
    broken_audit_id: int | None
    broken_reason: str | None
    broken_detected_at: dt.datetime | None

    @property
    def broken(self) -> bool:
        return self.broken_audit_id is not None

    def summary(self) -> str:
        if self.broken:
            return f"BROKEN at #{self.broken_audit_id}: {self.broken_reason}"
        pending = f"more than {self.pending:,}" if self.pending_capped else f"{self.pending:,}"
        if self.verified_at is None:
            return f"not verified yet, {pending} rows pending"
        when = self.verified_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"verified up to #{self.verified_audit_id} at {when}, {pending} rows pending"


_CHECKPOINT = """SELECT verified_audit_id, verified_row_hash, verified_at, rows_verified,
                         broken_audit_id, broken_reason, broken_detected_at
                  FROM ops.audit_chain_checkpoint"""


def _checkpoint(conn: Connection[TupleRow], *, lock: bool = False) -> tuple[Any, ...]:
    row = conn.execute(_CHECKPOINT + " FOR UPDATE" if lock else _CHECKPOINT).fetchone()
    if row is None:  # the migration inserts the row; recreated if someone removed it
        conn.execute("INSERT INTO ops.audit_chain_checkpoint DEFAULT VALUES ON CONFLICT DO NOTHING")
        return _checkpoint(conn, lock=lock)
    return row


def chain_status(conn: Connection[TupleRow]) -> ChainStatus:
    """The checkpoint and how many rows wait after it (read only, bounded)."""
    verified_id, _hash, verified_at, rows_verified, broken_id, reason, detected = _checkpoint(conn)
    pending = scalar(
        conn.execute(
            """SELECT count(*) FROM (SELECT 1 FROM audit.audit_log WHERE audit_id > %s
                                 ORDER BY audit_id LIMIT %s) t""",
            (verified_id, PENDING_COUNT_CAP + 1),
        )
    )
    return ChainStatus(
        verified_audit_id=verified_id,
        verified_at=verified_at,
        rows_verified=rows_verified,
        pending=min(pending, PENDING_COUNT_CAP),
        pending_capped=pending > PENDING_COUNT_CAP,
        broken_audit_id=broken_id,
        broken_reason=reason,
        broken_detected_at=detected,
    )


_VERIFY = """
WITH batch AS (
    SELECT a AS r, a.audit_id, a.row_hash, a.prev_hash FROM audit.audit_log a
    WHERE a.audit_id > %(after)s ORDER BY a.audit_id LIMIT %(n)s
), checked AS (
    SELECT audit_id, row_hash,
           CASE WHEN row_hash <> audit.row_digest(r) THEN 'row content does not match its hash'
                WHEN prev_hash <> coalesce(lag(row_hash) OVER (ORDER BY audit_id), %(hash)s)
                    THEN 'previous hash does not match the preceding row'
           END AS problem
    FROM batch
)
SELECT audit_id, row_hash, problem FROM checked
WHERE problem IS NOT NULL OR audit_id = (SELECT max(audit_id) FROM batch)
ORDER BY audit_id
"""


def verify_pending(
    conn: Connection[TupleRow],
    *,
    batch: int = VERIFY_BATCH,
    max_rows: int | None = None,
    budget_seconds: float = 0.5,
) -> ChainStatus:
    """Verify up to ``max_rows`` (default :data:`VERIFY_MAX_ROWS`) rows after the checkpoint,
    ``batch`` rows per statement, for about ``budget_seconds``, and move the checkpoint (in the
    caller's transaction). A second verifier at the same time returns the status without
    waiting."""
    max_rows = VERIFY_MAX_ROWS if max_rows is None else max_rows
    got = scalar(conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (_LOCK,)))
    if not got:
        return chain_status(conn)
    verified_id, verified_hash, _at, _rows, broken_id, _reason, _detected = _checkpoint(
        conn, lock=True
    )
    if broken_id is not None:
        return chain_status(conn)
    problem = _recheck_checkpoint(conn, verified_id, verified_hash)
    if problem is not None:
        _mark_broken(conn, verified_id, problem)
        return chain_status(conn)
    started, done = time.monotonic(), 0
    while done < max_rows:
        found = conn.execute(
            _VERIFY, {"after": verified_id, "n": min(batch, max_rows - done), "hash": verified_hash}
        ).fetchall()
        if not found:
            break
        bad = [(aid, why) for aid, _h, why in found if why is not None]
        if bad:
            _mark_broken(conn, bad[0][0], bad[0][1])
            return chain_status(conn)
        last_id, last_hash = found[-1][0], found[-1][1]
        checked = scalar(
            conn.execute(
                "SELECT count(*) FROM audit.audit_log WHERE audit_id > %s AND audit_id <= %s",
                (verified_id, last_id),
            )
        )
        conn.execute(
            """UPDATE ops.audit_chain_checkpoint SET verified_audit_id = %s,
                   verified_row_hash = %s, verified_at = now(),
                   rows_verified = rows_verified + %s""",
            (last_id, last_hash, checked),
        )
        verified_id, verified_hash = last_id, last_hash
        done += checked
        if time.monotonic() - started > budget_seconds:
            break
    return chain_status(conn)


def verify_all(
    url: str, *, batch: int = VERIFY_BATCH, report: Callable[[ChainStatus], object] | None = None
) -> ChainStatus:
    """Verify every pending row (``erpsync db verify-audit``, a nightly job or a first run on
    a long trail), one committed transaction per :data:`VERIFY_MAX_ROWS` rows so progress
    survives an interruption; stops at the end of the chain or where it broke."""
    import psycopg

    while True:
        with psycopg.connect(url, application_name="erpsync-audit-verify") as conn:
            before = _checkpoint(conn)[0]
            status = verify_pending(conn, batch=batch, budget_seconds=float("inf"))
        if report is not None:
            report(status)
        if status.broken or status.pending == 0 or status.verified_audit_id == before:
            return status


def _recheck_checkpoint(conn: Connection[TupleRow], audit_id: int, row_hash: str) -> str | None:
    """The verified row must still be there with the hash it had (a cheap guard for the rows
    behind the checkpoint: rewriting history means rewriting this row's hash too)."""
    if audit_id == 0:
        return None
    found = conn.execute(
        "SELECT row_hash, audit.row_digest(a) FROM audit.audit_log a WHERE audit_id = %s",
        (audit_id,),
    ).fetchone()
    if found is None:
        return "the last verified row is gone"
    if found[0] != row_hash or found[1] != row_hash:
        return "the last verified row changed after it was verified"
    return None


def _mark_broken(conn: Connection[TupleRow], audit_id: int, reason: str) -> None:
    conn.execute(
        """UPDATE ops.audit_chain_checkpoint SET broken_audit_id = %s, broken_reason = %s,
               broken_detected_at = now()""",
        (audit_id, reason),
    )
