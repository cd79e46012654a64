"""Requeue of quarantined records: after the source (or erpsync's reference data) is fixed, a
data engineer asks from the console that a quarantined record be loaded again.

The request only marks the open ``ops.quarantine`` row (``requeue_requested_at``/``_by``) and
writes an audit row; nothing is read then. The next run of that entity's sync
(:func:`erpsync.sync.engine.run_entity_sync`) picks up the pending requests
(:func:`pending`), re-reads exactly those records by id with the vendor's single-record read
(its source's ``records``, :class:`erpsync.sync.spec.Source`) even if the watermark has passed
them, loads them through the normal path (validation, quarantine with a reason if still bad,
merge) in the same transaction, and marks each request with the run and its outcome
(:func:`finish`). An entity read in full every run reads them anyway; a sync outside the
engine (the payment status sync, :mod:`erpsync.invoicing.payment_status`) reads the keys by
id itself and calls :func:`settle`.
Outcomes:

- ``loaded``: the record passed; the engine's own quarantine resolution closed the row;
- ``quarantined``: still bad; the row stays open (refreshed with this run's reason detail), or a
  new row holds the new reason and the old one is closed;
- ``not_found``: the source no longer has the record; the entity's delete detection (deleted
  feed, id-set or windowed count) confirms the delete and closes the row.

Requeued records never move the watermark: a record read by id after the incremental read may
carry a newer stamp than records the read has not seen yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from erpsync import audit

if TYPE_CHECKING:
    import psycopg

    from erpsync.sync.spec import EntitySpec, RunInfo

#: Requests served per entity run (each is one vendor request); the rest wait for the next run.
MAX_PER_RUN = 200


@dataclass(frozen=True)
class Pending:
    quarantine_id: int
    record_key: str
    requested_at: dt.datetime


@dataclass(frozen=True)
class RequestResult:
    quarantine_id: int
    accepted: bool
    reason: str = ""


def request(
    conn: psycopg.Connection[Any],
    quarantine_ids: Iterable[int],
    *,
    user: str,
    served: Collection[tuple[str, str]] | None = None,
) -> list[RequestResult]:
    """Mark open quarantine rows for requeue by ``user`` (one audit row each); resolved rows,
    rows without a record key, unknown ids and (given ``served``, the (system, entity) pairs
    whose sync serves requeues) rows of other entities are refused with the reason. Runs in
    the caller's transaction."""
    results: list[RequestResult] = []
    for qid in dict.fromkeys(int(i) for i in quarantine_ids):
        row = conn.execute(
            """SELECT source_system, entity, record_key, reason_code, resolved_at,
                      requeue_requested_at, requeued_at, requeued_by_run, requeue_outcome
               FROM ops.quarantine WHERE quarantine_id = %s FOR UPDATE""",
            (qid,),
        ).fetchone()
        if row is None:
            results.append(RequestResult(qid, False, "no such quarantine row"))
            continue
        system, entity, key, reason, resolved_at, requested_at, requeued_at, by_run, outcome = row
        if resolved_at is not None:
            results.append(RequestResult(qid, False, "already resolved"))
            continue
        if key is None:
            results.append(RequestResult(qid, False, "the record has no id to read it by"))
            continue
        if served is not None and (system, entity) not in served:
            results.append(RequestResult(qid, False, f"no sync re-reads {system}/{entity}"))
            continue
        before = {
            "requeue_requested_at": requested_at,
            "requeued_at": requeued_at,
            "requeued_by_run": by_run,
            "requeue_outcome": outcome,
        }
        updated = conn.execute(
            """UPDATE ops.quarantine SET requeue_requested_at = clock_timestamp(),
                   requeue_requested_by = %s, requeued_at = NULL, requeued_by_run = NULL,
                   requeue_outcome = NULL
               WHERE quarantine_id = %s RETURNING requeue_requested_at""",
            (user, qid),
        ).fetchone()
        assert updated is not None  # the row is locked FOR UPDATE above
        now = updated[0]
        audit.record(
            conn,
            actor=user,
            action="quarantine.requeue_requested",
            entity_type="quarantine",
            entity_id=str(qid),
            before=before,
            after={"requeue_requested_at": now, "requeue_requested_by": user},
            detail={
                "source_system": system,
                "entity": entity,
                "record_key": key,
                "reason_code": reason,
            },
        )
        results.append(RequestResult(qid, True))
    return results


def pending(
    conn: psycopg.Connection[Any], system: str, entity: str, limit: int = MAX_PER_RUN
) -> list[Pending]:
    """The oldest open requeue requests of one entity (no lock: a request made while the run
    is going stays pending, see :func:`finish`)."""
    rows = conn.execute(
        """SELECT quarantine_id, record_key, requeue_requested_at FROM ops.quarantine
           WHERE source_system = %s AND entity = %s AND resolved_at IS NULL
             AND requeue_requested_at IS NOT NULL AND requeued_at IS NULL
           ORDER BY requeue_requested_at, quarantine_id LIMIT %s""",
        (system, entity, limit),
    ).fetchall()
    return [Pending(int(q), str(k), t) for q, k, t in rows]


def keys(requests: list[Pending]) -> list[str]:
    return list(dict.fromkeys(r.record_key for r in requests))


def finish(
    conn: psycopg.Connection[Any], spec: EntitySpec, run: RunInfo, requests: list[Pending]
) -> dict[str, int]:
    """After the merge and the quarantine resolution of an engine run (same transaction, the
    run's ``_sync_seen``/``_sync_gone`` still there): each served request's outcome, recorded
    by :func:`settle`."""
    if not requests:
        return {}
    rows = conn.execute(
        """SELECT k, CASE
                   WHEN EXISTS (SELECT 1 FROM ops.quarantine o
                                WHERE o.source_system = %(system)s AND o.entity = %(entity)s
                                  AND o.record_key = k AND o.resolved_at IS NULL
                                  AND o.run_id = %(run)s) THEN 'quarantined'
                   WHEN k IN (SELECT source_record_id FROM _sync_gone) THEN 'not_found'
                   WHEN k IN (SELECT source_record_id FROM _sync_seen WHERE valid) THEN 'loaded'
                   ELSE 'not_found' END
           FROM unnest(%(keys)s::text[]) AS k""",
        {"system": spec.system, "entity": spec.name, "run": run.run_id, "keys": keys(requests)},
    ).fetchall()
    return settle(
        conn,
        system=spec.system,
        entity=spec.name,
        run=run,
        requests=requests,
        outcomes=dict(rows),
    )


def settle(
    conn: psycopg.Connection[Any],
    *,
    system: str,
    entity: str,
    run: RunInfo,
    requests: list[Pending],
    outcomes: dict[str, str],
) -> dict[str, int]:
    """Record on each served request the run and its outcome (``outcomes``: record key ->
    ``loaded`` / ``quarantined``; a key missing there was not found at the source), and an
    audit row each. A request renewed during the run (a newer ``requeue_requested_at`` than
    the one served) stays pending. For syncs outside the engine (e.g.
    :mod:`erpsync.invoicing.payment_status`), which read the requested keys by id themselves."""
    if not requests:
        return {}
    rows = conn.execute(
        """WITH served AS (
               SELECT * FROM unnest(%(ids)s::bigint[], %(at)s::timestamptz[], %(outcome)s::text[])
                   AS s(qid, at, outcome))
           UPDATE ops.quarantine q SET requeued_at = now(), requeued_by_run = %(run)s,
               requeue_outcome = s.outcome
           FROM served s
           WHERE q.quarantine_id = s.qid AND q.requeue_requested_at = s.at
           RETURNING q.quarantine_id, q.record_key, q.requeue_outcome, q.requeue_requested_by""",
        {
            "ids": [r.quarantine_id for r in requests],
            "at": [r.requested_at for r in requests],
            "outcome": [outcomes.get(r.record_key, "not_found") for r in requests],
            "run": run.run_id,
        },
    ).fetchall()
    counts: dict[str, int] = {}
    for qid, key, outcome, by in rows:
        counts[outcome] = counts.get(outcome, 0) + 1
        audit.record(
            conn,
            actor=run.actor,
            action="quarantine.requeued",
            entity_type="quarantine",
            entity_id=str(qid),
            after={"requeue_outcome": outcome, "requeued_by_run": run.run_id},
            source=run.audit_source(),
            detail={
                "source_system": system,
                "entity": entity,
                "record_key": key,
                "requested_by": by,
            },
        )
    return counts
