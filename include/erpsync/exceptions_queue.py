"""The exceptions queue (``ops.exceptions``): problems a person has to act on.

One live row (open or waived) per ``(reason_code, entity_type, entity_key)``: a rerun that sees
the same problem again only moves ``last_seen_run``, it never adds a second row. When the cause
is gone (the VAT id was fixed in the CRM), :func:`resolve_missing` closes the row; a person can
:func:`waive` one with a comment. Every state change (raised, resolved, waived) writes an audit
row in the caller's transaction, so the queue and its audit trail commit together.

Reason codes are named constants here, not literals scattered over the code base.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from erpsync import audit

__all__ = [
    "INVALID_TAX_ID",
    "WRITE_BACK_BLOCKED",
    "WRITE_BACK_FAILED",
    "RaiseOutcome",
    "open_exceptions",
    "raise_exception",
    "resolve",
    "resolve_missing",
    "waive",
]

#: A client's VAT / tax id failed validation: its ERP/PSA write-back is blocked.
INVALID_TAX_ID = "invalid_tax_id"
#: A write to another system was rejected or kept failing: the outbox row needs a person.
WRITE_BACK_FAILED = "write_back_failed"
#: A write cannot be built (e.g. a contracted rate for an e-mail no PSA user has).
WRITE_BACK_BLOCKED = "write_back_blocked"


@dataclass(frozen=True)
class RaiseOutcome:
    exception_id: int
    created: bool  # False when an open (or waived) row for the same cause already existed
    status: str


def _run_parts(run: Any) -> tuple[str, str, audit.Source]:
    """(run id, actor, audit source) from a RunInfo-like object."""
    run_id = str(getattr(run, "run_id", None) or run)
    actor = str(getattr(run, "actor", None) or "unknown")
    if hasattr(run, "audit_source"):
        source = run.audit_source()
    else:
        source = audit.Source(run_id=run_id)
    return run_id, actor, source


def raise_exception(
    conn,
    reason_code: str,
    entity_type: str,
    entity_key: str,
    owner: str,
    detail: dict | None,
    run: Any,
    *,
    amount_at_stake: Decimal | None = None,
    currency: str | None = None,
) -> RaiseOutcome:
    """Open an exception, or refresh the live one for the same cause (idempotent).

    Runs in the caller's transaction. A waived exception for the same cause stays waived (a
    person accepted it); only ``last_seen_run`` and ``detail`` move.
    """
    if amount_at_stake is not None and not isinstance(amount_at_stake, Decimal):
        raise TypeError("amount_at_stake must be a Decimal")
    run_id, actor, source = _run_parts(run)
    detail_json = json.dumps(detail or {}, default=str, sort_keys=True)
    row = conn.execute(
        """INSERT INTO ops.exceptions
               (reason_code, entity_type, entity_key, owner, detail, amount_at_stake, currency,
                first_seen_run, last_seen_run)
           VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)
           ON CONFLICT (reason_code, entity_type, entity_key) WHERE status IN ('open', 'waived')
           DO UPDATE SET last_seen_run = EXCLUDED.last_seen_run,
                         last_seen_at = now(),
                         detail = EXCLUDED.detail,
                         owner = EXCLUDED.owner,
                         amount_at_stake = EXCLUDED.amount_at_stake,
                         currency = EXCLUDED.currency
           RETURNING exception_id, (xmax = 0) AS inserted, status""",
        (
            reason_code,
            entity_type,
            entity_key,
            owner,
            detail_json,
            amount_at_stake,
            currency,
            run_id,
            run_id,
        ),
    ).fetchone()
    exception_id, inserted, status = int(row[0]), bool(row[1]), str(row[2])
    if inserted:
        audit.record(
            conn,
            actor=actor,
            action="exception.raised",
            entity_type="exception",
            entity_id=str(exception_id),
            before=None,
            after={
                "status": "open",
                "reason_code": reason_code,
                "entity_type": entity_type,
                "entity_key": entity_key,
                "owner": owner,
            },
            source=source,
            detail=detail or {},
        )
    return RaiseOutcome(exception_id, inserted, status)


def resolve_missing(
    conn,
    reason_code: str,
    entity_type: str,
    still_failing_keys: Iterable[str],
    run: Any,
    *,
    checked_keys: Iterable[str] | None = None,
) -> list[str]:
    """Resolve the live exceptions of ``reason_code``/``entity_type`` whose cause is gone.

    ``still_failing_keys``: the keys that still fail the check. ``checked_keys``: when the run
    only looked at some entities (an incremental sync), the keys it looked at; exceptions for
    entities it did not look at stay as they are. Returns the resolved entity keys.
    """
    run_id, actor, source = _run_parts(run)
    failing = sorted(set(still_failing_keys))
    scope = None if checked_keys is None else sorted(set(checked_keys))
    rows = conn.execute(
        """UPDATE ops.exceptions
              SET status = 'resolved', resolved_at = now(), resolved_by = %s, last_seen_run = %s
            WHERE reason_code = %s AND entity_type = %s AND status IN ('open', 'waived')
              AND NOT (entity_key = ANY(%s))
              AND (%s::text[] IS NULL OR entity_key = ANY(%s::text[]))
        RETURNING exception_id, entity_key, owner""",
        (actor, run_id, reason_code, entity_type, failing, scope, scope),
    ).fetchall()
    for exception_id, entity_key, _owner in rows:
        audit.record(
            conn,
            actor=actor,
            action="exception.resolved",
            entity_type="exception",
            entity_id=str(exception_id),
            before={"status": "open"},
            after={"status": "resolved", "reason": "cause no longer present"},
            source=source,
            detail={
                "reason_code": reason_code,
                "entity_type": entity_type,
                "entity_key": entity_key,
            },
        )
    return [str(r[1]) for r in rows]


def resolve(conn, exception_id: int, *, by: str, comment: str, run: Any) -> bool:
    """Resolve one exception by hand. Returns False if it was not live."""
    _run_id, _actor, source = _run_parts(run)
    row = conn.execute(
        """UPDATE ops.exceptions SET status = 'resolved', resolved_at = now(), resolved_by = %s
            WHERE exception_id = %s AND status IN ('open', 'waived')
        RETURNING (SELECT status FROM ops.exceptions WHERE exception_id = %s)""",
        (by, exception_id, exception_id),
    ).fetchone()
    if row is None:
        return False
    audit.record(
        conn,
        actor=by,
        action="exception.resolved",
        entity_type="exception",
        entity_id=str(exception_id),
        before={"status": row[0]},
        after={"status": "resolved", "comment": comment},
        source=source,
    )
    return True


def waive(conn, exception_id: int, *, by: str, comment: str, run: Any) -> bool:
    """Waive an open exception: ``by`` accepts it, ``comment`` says why (both required)."""
    if not by or not by.strip():
        raise ValueError("a waiver needs the name of who waives it")
    if not comment or not comment.strip():
        raise ValueError("a waiver needs a comment saying why")
    _run_id, _actor, source = _run_parts(run)
    row = conn.execute(
        """UPDATE ops.exceptions
              SET status = 'waived', waived_at = now(), waived_by = %s, waive_comment = %s
            WHERE exception_id = %s AND status = 'open'
        RETURNING reason_code, entity_type, entity_key""",
        (by, comment, exception_id),
    ).fetchone()
    if row is None:
        return False
    audit.record(
        conn,
        actor=by,
        action="exception.waived",
        entity_type="exception",
        entity_id=str(exception_id),
        before={"status": "open"},
        after={"status": "waived", "comment": comment},
        source=source,
        detail={"reason_code": row[0], "entity_type": row[1], "entity_key": row[2]},
    )
    return True


def open_exceptions(conn, reason_code: str | None = None) -> list[dict]:
    """The open exceptions (optionally of one reason), oldest first."""
    cur = conn.execute(
        """SELECT exception_id, reason_code, entity_type, entity_key, owner, status, detail,
                  amount_at_stake, currency, first_seen_run, last_seen_run
             FROM ops.exceptions
            WHERE status = 'open' AND (%s::text IS NULL OR reason_code = %s)
            ORDER BY exception_id""",
        (reason_code, reason_code),
    )
    names = [c.name for c in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
