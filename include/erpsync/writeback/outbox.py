"""The transactional outbox (``ops.outbox``): writes erpsync owes the CRM, PSA and ERP, enqueued
in the same transaction as the core change that caused them.

:func:`enqueue_changes` is called by the sync engine inside its merge transaction with the keys
whose core rows changed. For each write-back operation of the spec it builds the target payload
from the core tables (``targets.py``) and inserts one outbox row, unless the entity's latest row
already carries the same payload: the idempotency key is derived from the operation, the entity,
the payload hash and the row it follows, so an unchanged record never enqueues again, a rerun of
the same merge inserts nothing (``ON CONFLICT DO NOTHING``), and A -> B -> A still sends A again.
A newer row supersedes the entity's older unsent rows.

Clients whose VAT id fails validation get a ``blocked`` row (never sent) and one open
``invalid_tax_id`` exception each; when a later sync sees a valid id, the exception is resolved
and a sendable row is enqueued. See https://microservices.io/patterns/data/transactional-outbox.html
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from erpsync import exceptions_queue
from erpsync.writeback import targets

__all__ = ["enqueue_changes", "payload_hash"]


def payload_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a payload (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _idempotency_key(operation: str, entity_key: str, digest: str, follows: int | None) -> str:
    seed = f"{operation}|{entity_key}|{digest}|{follows or 0}"
    return f"{operation}:{hashlib.sha256(seed.encode()).hexdigest()[:40]}"


def _normalize_keys(changed_keys) -> list[str]:
    out = []
    for key in changed_keys:
        if isinstance(key, tuple | list):
            out.append("|".join(str(k) for k in key))
        else:
            out.append(str(key))
    return sorted(set(out))


def _enqueue_one(conn, op: targets.Operation, built: targets.Built, run: Any) -> str | None:
    """Insert one row unless the entity's latest row already says the same. Returns the new
    row's status, or None when nothing was inserted."""
    digest = payload_hash(built.payload)
    status = "blocked" if built.blocked_reason else "pending"
    latest = conn.execute(
        """SELECT outbox_id, payload_hash, status FROM ops.outbox
            WHERE operation = %s AND entity_key = %s ORDER BY outbox_id DESC LIMIT 1""",
        (op.name, built.entity_key),
    ).fetchone()
    if latest is not None and latest[1] == digest:
        was_blocked = latest[2] == "blocked"
        if was_blocked == (status == "blocked"):
            return None  # same payload, same verdict: nothing new to send
    follows = None if latest is None else int(latest[0])
    row = conn.execute(
        """INSERT INTO ops.outbox
               (target_system, operation, entity_type, entity_key, canonical_id, idempotency_key,
                external_ref, payload, payload_hash, status, blocked_reason, created_dag_id,
                created_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (idempotency_key) DO NOTHING
           RETURNING outbox_id""",
        (
            op.target_system,
            op.name,
            op.entity_type,
            built.entity_key,
            built.canonical_id,
            _idempotency_key(op.name, built.entity_key, digest, follows),
            built.external_ref,
            json.dumps(built.payload, sort_keys=True, default=str),
            digest,
            status,
            built.blocked_reason,
            getattr(run, "dag_id", None),
            getattr(run, "run_id", None),
            getattr(run, "run_id", None),
        ),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        """UPDATE ops.outbox SET status = 'superseded', updated_at = now(), last_run_id = %s
            WHERE operation = %s AND entity_key = %s AND outbox_id < %s
              AND status IN ('pending', 'blocked', 'failed')""",
        (getattr(run, "run_id", None), op.name, built.entity_key, row[0]),
    )
    return status


def enqueue_changes(conn, spec: Any, changed_keys, run: Any) -> int:
    """Enqueue the write-back of ``changed_keys`` (natural keys of ``spec.core_table``) in the
    caller's transaction. Returns the number of sendable (pending) rows enqueued."""
    keys = _normalize_keys(changed_keys)
    operations = targets.operations_for(spec)
    if not keys or not operations:
        return 0
    # Payloads join several core tables (a client's row needs its tax profile). Two syncs
    # running in parallel (CeleryExecutor) each see only the other's committed rows, so without
    # this both could build nothing and the write would be lost. The transaction-level lock
    # makes the second enqueue wait for the first commit and then see its rows.
    for name in sorted({op.name for op in operations}):
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"erpsync.outbox.enqueue:{name}",)
        )
    enqueued = 0
    tax_checked: set[str] = set()
    tax_failing: dict[str, targets.Built] = {}
    for op in operations:
        for built in op.build(conn, keys):
            status = _enqueue_one(conn, op, built, run)
            enqueued += status == "pending"
            if op.entity_type == "client":
                tax_checked.add(built.entity_key)
                if built.blocked_reason:
                    tax_failing[built.entity_key] = built
            elif built.blocked_reason:
                exceptions_queue.raise_exception(
                    conn,
                    exceptions_queue.WRITE_BACK_BLOCKED,
                    op.entity_type,
                    built.entity_key,
                    built.owner,
                    {"operation": op.name, "reason": built.blocked_reason, **built.block_detail},
                    run,
                )
    for key, built in sorted(tax_failing.items()):
        exceptions_queue.raise_exception(
            conn,
            exceptions_queue.INVALID_TAX_ID,
            "client",
            key,
            built.owner,
            {**built.block_detail, "blocked": "ERP customer and PSA client write-back"},
            run,
        )
    if tax_checked:
        exceptions_queue.resolve_missing(
            conn,
            exceptions_queue.INVALID_TAX_ID,
            "client",
            tax_failing,
            run,
            checked_keys=tax_checked,
        )
    return enqueued
