"""The exceptions queue (``ops.exceptions``): problems a person has to act on.

One live row (open or waived) per ``(reason_code, entity_type, entity_key)``: a rerun that sees
the same problem again only moves ``last_seen_run``, it never adds a second row. When the cause
is gone (the VAT id was fixed in the CRM), :func:`resolve_missing` closes the row.

People work the queue from the finance console (erpsync.console): :func:`assign` it to an
owner (a rerun then keeps that owner), :func:`comment` on it, :func:`waive` it with a reason (a
rerun keeps it waived), :func:`reopen` a waived or resolved one. The console's actions are
bulk: one call for many ids, in the caller's transaction, with an :class:`ActionOutcome` per id
(done, or skipped and why). Every state change and every action writes an audit row in the
caller's transaction, so the queue and its audit trail commit together.

Reason codes are named constants here, not literals scattered over the code base.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from erpsync import audit

__all__ = [
    "INVALID_TAX_ID",
    "WRITE_BACK_BLOCKED",
    "WRITE_BACK_FAILED",
    "ActionOutcome",
    "RaiseOutcome",
    "assign",
    "comment",
    "open_exceptions",
    "raise_exception",
    "reopen",
    "resolve",
    "resolve_missing",
    "waive",
    "waive_many",
]

#: A client's VAT / tax id failed validation: its ERP/PSA write-back is blocked.
INVALID_TAX_ID = "invalid_tax_id"
#: A write to another system was rejected or kept failing: the outbox row needs a person.
WRITE_BACK_FAILED = "write_back_failed"
#: A write cannot be built (e.g. a contracted rate for an e-mail no PSA user has).
WRITE_BACK_BLOCKED = "write_back_blocked"


#: Outcomes of one id of a bulk action (:class:`ActionOutcome`).
DONE, SKIPPED = "done", "skipped"


@dataclass(frozen=True)
class ActionOutcome:
    """What a bulk action did to one exception: ``done``, or ``skipped`` and ``why``."""

    exception_id: int
    outcome: str
    why: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.exception_id, "outcome": self.outcome, "why": self.why}


@dataclass(frozen=True)
class RaiseOutcome:
    exception_id: int
    created: bool  # False when an open (or waived) row for the same cause already existed
    status: str


def _source(run: Any) -> audit.Source:
    """The audit source of an action: the run's, or none for a person acting in the console."""
    return audit.Source() if run is None else audit.run_parts(run)[2]


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
    account_id: str | None = None,
) -> RaiseOutcome:
    """Open an exception, or refresh the live one for the same cause (idempotent).

    Runs in the caller's transaction. A waived exception for the same cause stays waived (a
    person accepted it); only ``last_seen_run`` and ``detail`` move. An exception a person
    assigned keeps its owner. ``account_id``: the client (CRM Account id) when the caller knows
    it; otherwise the database derives it from the entity (``ops.exception_account``, migration
    0025).
    """
    if amount_at_stake is not None and not isinstance(amount_at_stake, Decimal):
        raise TypeError("amount_at_stake must be a Decimal")
    run_id, actor, source = audit.run_parts(run)
    detail_json = json.dumps(detail or {}, default=str, sort_keys=True)
    row = conn.execute(
        """WITH acct AS (
               SELECT coalesce(%(account)s, ops.exception_account(%(etype)s, %(ekey)s,
                                                                   %(detail)s::jsonb)) AS id
           )
           INSERT INTO ops.exceptions
               (reason_code, entity_type, entity_key, owner, detail, amount_at_stake, currency,
                first_seen_run, last_seen_run, account_id, client_name)
           SELECT %(reason)s, %(etype)s, %(ekey)s, %(owner)s, %(detail)s::jsonb, %(amount)s,
                  %(currency)s, %(run)s, %(run)s, acct.id,
                  (SELECT c.legal_name FROM core.clients c WHERE c.crm_id = acct.id)
             FROM acct
           ON CONFLICT (reason_code, entity_type, entity_key) WHERE status IN ('open', 'waived')
           DO UPDATE SET last_seen_run = EXCLUDED.last_seen_run,
                         last_seen_at = now(),
                         detail = EXCLUDED.detail,
                         owner = CASE WHEN ops.exceptions.assigned_at IS NULL
                                      THEN EXCLUDED.owner ELSE ops.exceptions.owner END,
                         amount_at_stake = EXCLUDED.amount_at_stake,
                         currency = EXCLUDED.currency,
                         account_id = coalesce(EXCLUDED.account_id, ops.exceptions.account_id),
                         client_name = coalesce(EXCLUDED.client_name, ops.exceptions.client_name)
           RETURNING exception_id, (xmax = 0) AS inserted, status""",
        {
            "reason": reason_code,
            "etype": entity_type,
            "ekey": entity_key,
            "owner": owner,
            "detail": detail_json,
            "amount": amount_at_stake,
            "currency": currency,
            "run": run_id,
            "account": account_id,
        },
    ).fetchone()
    exception_id, inserted, status = int(row[0]), bool(row[1]), str(row[2])
    if inserted:
        _audit(
            conn,
            exception_id,
            "raised",
            actor=actor,
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
    run_id, actor, source = audit.run_parts(run)
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
        _audit(
            conn,
            exception_id,
            "resolved",
            actor=actor,
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


def _audit(conn, exception_id: int, action: str, *, actor: str, **fields: Any) -> None:
    """The audit row of one change to exception ``exception_id`` (``exception.<action>``);
    ``fields`` are :func:`erpsync.audit.record`'s before/after/source/detail."""
    audit.record(
        conn,
        actor=actor,
        action=f"exception.{action}",
        entity_type="exception",
        entity_id=str(exception_id),
        **fields,
    )


def resolve(conn, exception_id: int, *, by: str, comment: str, run: Any) -> bool:
    """Resolve one exception by hand. Returns False if it was not live."""
    _run_id, _actor, source = audit.run_parts(run)
    row = conn.execute(
        """UPDATE ops.exceptions SET status = 'resolved', resolved_at = now(), resolved_by = %s
            WHERE exception_id = %s AND status IN ('open', 'waived')
        RETURNING (SELECT status FROM ops.exceptions WHERE exception_id = %s)""",
        (by, exception_id, exception_id),
    ).fetchone()
    if row is None:
        return False
    _audit(
        conn,
        exception_id,
        "resolved",
        actor=by,
        before={"status": row[0]},
        after={"status": "resolved", "comment": comment},
        source=source,
    )
    return True


def _required(value: str | None, message: str) -> str:
    if value is None or not str(value).strip():
        raise ValueError(message)
    return str(value).strip()


def waive(conn, exception_id: int, *, by: str, comment: str, run: Any) -> bool:
    """Waive an open exception: ``by`` accepts it, ``comment`` says why (both required)."""
    by = _required(by, "a waiver needs the name of who waives it")
    comment = _required(comment, "a waiver needs a comment saying why")
    source = _source(run)
    row = conn.execute(
        """UPDATE ops.exceptions
              SET status = 'waived', waived_at = now(), waived_by = %s, waive_comment = %s
            WHERE exception_id = %s AND status = 'open'
        RETURNING reason_code, entity_type, entity_key""",
        (by, comment, exception_id),
    ).fetchone()
    if row is None:
        return False
    _audit(
        conn,
        exception_id,
        "waived",
        actor=by,
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


# ---------------------------------------------------------------- a person's actions (bulk)


def _ids(ids: Iterable[int]) -> list[int]:
    """The ids as ints, each once, in the order given."""
    out: list[int] = []
    for raw in ids:
        if isinstance(raw, bool):
            raise ValueError(f"not an exception id: {raw!r}")
        value = int(raw)
        if value not in out:
            out.append(value)
    return out


def _lock(conn, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The rows of ``ids`` locked for the rest of the transaction (in id order: two bulk actions
    over overlapping ids wait for each other instead of deadlocking)."""
    cur = conn.execute(
        """SELECT exception_id, reason_code, entity_type, entity_key, owner, status,
                  assigned_by, waived_by, waive_comment, resolved_by
             FROM ops.exceptions WHERE exception_id = ANY(%s)
            ORDER BY exception_id FOR UPDATE""",
        (ids,),
    )
    names = [c.name for c in cur.description]
    return {int(r[0]): dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def _cause(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("reason_code", "entity_type", "entity_key")}


_NOT_FOUND = "no such exception"


def _each(
    conn,
    ids: Iterable[int],
    act: Callable[[int, dict[str, Any]], ActionOutcome],
) -> list[ActionOutcome]:
    """Lock the rows of ``ids`` and ``act`` on each one that exists, in the order asked; an id
    with no row is skipped as not found. The bulk actions below share this loop."""
    wanted = _ids(ids)
    rows = _lock(conn, wanted)
    return [
        act(exception_id, rows[exception_id])
        if exception_id in rows
        else ActionOutcome(exception_id, SKIPPED, _NOT_FOUND)
        for exception_id in wanted
    ]


def assign(
    conn, ids: Iterable[int], *, owner: str, by: str, run: Any = None
) -> list[ActionOutcome]:
    """Assign open or waived exceptions to ``owner`` (a person or a team). A rerun that sees the
    cause again keeps this owner (:func:`raise_exception`). Resolved ones are skipped."""
    owner = _required(owner, "an assignment needs the owner to assign to")
    by = _required(by, "an assignment needs the name of who assigns it")
    source = _source(run)

    def act(exception_id: int, row: dict[str, Any]) -> ActionOutcome:
        if row["status"] == "resolved":
            return ActionOutcome(exception_id, SKIPPED, "resolved: reopen it first")
        if row["owner"] == owner and row["assigned_by"] is not None:
            return ActionOutcome(exception_id, SKIPPED, f"already assigned to {owner}")
        conn.execute(
            """UPDATE ops.exceptions SET owner = %s, assigned_by = %s, assigned_at = now()
                WHERE exception_id = %s""",
            (owner, by, exception_id),
        )
        _audit(
            conn,
            exception_id,
            "assigned",
            actor=by,
            before={"owner": row["owner"]},
            after={"owner": owner},
            source=source,
            detail=_cause(row),
        )
        return ActionOutcome(exception_id, DONE)

    return _each(conn, ids, act)


def comment(
    conn, ids: Iterable[int], *, text: str, by: str, run: Any = None
) -> list[ActionOutcome]:
    """Add a comment to exceptions of any status (it lives in the audit trail, which is the
    exception's history)."""
    text = _required(text, "a comment needs text")
    by = _required(by, "a comment needs the name of who writes it")
    source = _source(run)

    def act(exception_id: int, row: dict[str, Any]) -> ActionOutcome:
        _audit(
            conn,
            exception_id,
            "commented",
            actor=by,
            after={"comment": text},
            source=source,
            detail={**_cause(row), "status": row["status"]},
        )
        return ActionOutcome(exception_id, DONE)

    return _each(conn, ids, act)


def waive_many(
    conn, ids: Iterable[int], *, by: str, comment: str, run: Any = None
) -> list[ActionOutcome]:
    """:func:`waive` each open exception of ``ids``; waived and resolved ones are skipped."""
    by = _required(by, "a waiver needs the name of who waives it")
    comment = _required(comment, "a waiver needs a comment saying why")

    def act(exception_id: int, row: dict[str, Any]) -> ActionOutcome:
        if row["status"] == "waived":
            return ActionOutcome(exception_id, SKIPPED, f"already waived by {row['waived_by']}")
        if row["status"] == "resolved":
            return ActionOutcome(exception_id, SKIPPED, "resolved: nothing to waive")
        waive(conn, exception_id, by=by, comment=comment, run=run)
        return ActionOutcome(exception_id, DONE)

    return _each(conn, ids, act)


def reopen(
    conn, ids: Iterable[int], *, by: str, comment: str | None = None, run: Any = None
) -> list[ActionOutcome]:
    """Reopen waived or resolved exceptions. A resolved one is refused (skipped) while another
    live row for the same cause exists (the cause came back and was raised again: at most one
    live row per cause, ``exceptions_live_uq``); work on that one instead."""
    by = _required(by, "reopening needs the name of who reopens it")
    note = (comment or "").strip() or None
    source = _source(run)

    def act(exception_id: int, row: dict[str, Any]) -> ActionOutcome:
        if row["status"] == "open":
            return ActionOutcome(exception_id, SKIPPED, "already open")
        if row["status"] == "resolved":
            live = conn.execute(
                """SELECT exception_id FROM ops.exceptions
                    WHERE reason_code = %s AND entity_type = %s AND entity_key = %s
                      AND status IN ('open', 'waived') AND exception_id <> %s""",
                (row["reason_code"], row["entity_type"], row["entity_key"], exception_id),
            ).fetchone()
            if live is not None:
                return ActionOutcome(exception_id, SKIPPED, _live_elsewhere(int(live[0])))
        try:
            with conn.transaction():  # a savepoint: a row raised meanwhile fails only this id
                conn.execute(
                    """UPDATE ops.exceptions
                          SET status = 'open', resolved_at = NULL, resolved_by = NULL,
                              waived_at = NULL, waived_by = NULL, waive_comment = NULL
                        WHERE exception_id = %s""",
                    (exception_id,),
                )
        except psycopg.errors.UniqueViolation:
            return ActionOutcome(exception_id, SKIPPED, _live_elsewhere(None))
        before = {"status": row["status"]}
        if row["status"] == "waived":
            before.update(waived_by=row["waived_by"], waive_comment=row["waive_comment"])
        else:
            before.update(resolved_by=row["resolved_by"])
        _audit(
            conn,
            exception_id,
            "reopened",
            actor=by,
            before=before,
            after={"status": "open", "comment": note},
            source=source,
            detail=_cause(row),
        )
        return ActionOutcome(exception_id, DONE)

    return _each(conn, ids, act)


def _live_elsewhere(other: int | None) -> str:
    which = f"exception {other}" if other is not None else "another exception"
    return f"{which} is already open or waived for the same cause: work on that one instead"
