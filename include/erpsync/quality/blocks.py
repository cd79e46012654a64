"""Invoicing blocks opened by critical data-quality failures (``ops.dq_blocks``, migration 0010).

A critical expectation that fails opens (or refreshes) one active block per affected scope: the
CRM account of each failing row (``client``), its opportunity (``contract``), or ``all`` when the
expectation is table-wide or a failing row cannot be traced to its client or contract (the safe
side: data that cannot be attributed must not reach any invoice). When the expectation passes
again for a scope, the next run clears that scope's block. Opening and clearing are audited in
the same transaction. Warnings never block.

Invoicing holds an item (reason ``dq_blocked``) when ``ops.dq_blocked(account_id,
opportunity_id)`` is true; :func:`blocked_scope_sql` gives the same test as a set-based
predicate for a join over many items.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from erpsync import audit

if TYPE_CHECKING:
    import psycopg

ALL_KEY = "*"
_BLOCKED_TEMPLATE = (
    "EXISTS (SELECT 1 FROM ops.dq_active_blocks dq_b WHERE dq_b.scope_type = 'all'"
    " OR (dq_b.scope_type = 'client' AND dq_b.scope_key = {account})"
    " OR (dq_b.scope_type = 'contract' AND dq_b.scope_key = {contract}))"
)
_COLUMN_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class Block:
    block_id: int
    scope_type: str
    scope_key: str
    suite: str
    expectation: str
    detail: dict[str, Any]
    first_run_id: str
    last_run_id: str
    created_at: datetime

    def describe(self) -> str:
        who = "ALL invoicing" if self.scope_type == "all" else f"{self.scope_type} {self.scope_key}"
        return f"{who}: {self.suite}.{self.expectation}"


@dataclass(frozen=True)
class Finding:
    """One critical failure for one scope (what a block is opened for)."""

    suite: str
    expectation: str
    scope_type: str
    scope_key: str
    detail: dict[str, Any]


def blocked_scope_sql(
    account_col: str = "i.account_id", contract_col: str = "i.opportunity_id"
) -> str:
    """A boolean SQL predicate, true when an active block covers the row's client or contract.

    ``account_col`` / ``contract_col`` are SQL column references of the caller's query (not
    values: nothing is interpolated from data). Equivalent to ``ops.dq_blocked(a, c)``.
    """
    for column in (account_col, contract_col):
        if not _COLUMN_REF.match(column):
            raise ValueError(f"not a column reference: {column!r}")
    # column references checked above; no value is ever interpolated
    return _BLOCKED_TEMPLATE.format(account=account_col, contract=contract_col)


def active_blocks(conn: psycopg.Connection[Any]) -> list[Block]:
    """The blocks in force, oldest first."""
    rows = conn.execute(
        """SELECT block_id, scope_type, scope_key, suite, expectation, detail, first_run_id,
                  last_run_id, created_at
             FROM ops.dq_active_blocks ORDER BY block_id"""
    ).fetchall()
    return [Block(*r) for r in rows]


def is_blocked(
    conn: psycopg.Connection[Any], account_id: str | None, opportunity_id: str | None = None
) -> bool:
    row = conn.execute("SELECT ops.dq_blocked(%s, %s)", (account_id, opportunity_id)).fetchone()
    return bool(row and row[0])


def apply(
    conn: psycopg.Connection[Any], run: Any, suites: list[str], findings: list[Finding]
) -> tuple[list[Block], list[Block]]:
    """Make the active blocks of ``suites`` match ``findings`` (this run's critical failures of
    those suites): open the new ones, refresh the ones seen again, clear the rest. Runs in the
    caller's transaction; returns (opened, cleared)."""
    run_id, actor, source = audit.run_parts(run)
    # one writer of the blocks at a time (two runs of the same suite would race on clear/open)
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('erpsync.ops.dq_blocks'))")
    cols = ("scope_type", "scope_key", "suite", "expectation")
    keys = [[getattr(f, c) for f in findings] for c in cols]
    details = [json.dumps(f.detail, default=str, sort_keys=True) for f in findings]
    touched = conn.execute(
        """INSERT INTO ops.dq_blocks
               (scope_type, scope_key, suite, expectation, detail, first_run_id, last_run_id)
           SELECT f.scope_type, f.scope_key, f.suite, f.expectation, f.detail::jsonb,
                  %(run)s, %(run)s
             FROM unnest(%(t)s::text[], %(k)s::text[], %(s)s::text[], %(e)s::text[], %(d)s::text[])
                  AS f(scope_type, scope_key, suite, expectation, detail)
           ON CONFLICT (scope_type, scope_key, suite, expectation) WHERE status = 'active'
           DO UPDATE SET detail = EXCLUDED.detail, last_run_id = EXCLUDED.last_run_id,
                         updated_at = now()
           RETURNING block_id, scope_type, scope_key, suite, expectation, detail, first_run_id,
                     last_run_id, created_at, (xmax = 0) AS inserted""",
        {"run": run_id, "t": keys[0], "k": keys[1], "s": keys[2], "e": keys[3], "d": details},
    ).fetchall()
    opened = [Block(*r[:9]) for r in touched if r[9]]
    cleared_rows = conn.execute(
        """UPDATE ops.dq_blocks b
              SET status = 'cleared', cleared_at = now(), cleared_run_id = %(run)s,
                  last_run_id = %(run)s, updated_at = now()
            WHERE b.status = 'active' AND b.suite = ANY(%(suites)s::text[])
              AND NOT EXISTS (
                  SELECT 1 FROM unnest(%(t)s::text[], %(k)s::text[], %(s)s::text[], %(e)s::text[])
                         AS f(scope_type, scope_key, suite, expectation)
                   WHERE (f.scope_type, f.scope_key, f.suite, f.expectation)
                       = (b.scope_type, b.scope_key, b.suite, b.expectation))
           RETURNING block_id, scope_type, scope_key, suite, expectation, detail, first_run_id,
                     last_run_id, created_at""",
        {
            "run": run_id,
            "suites": list(suites),
            "t": keys[0],
            "k": keys[1],
            "s": keys[2],
            "e": keys[3],
        },
    ).fetchall()
    cleared = [Block(*r) for r in cleared_rows]
    for block, action in [(b, "dq_block.opened") for b in opened] + [
        (b, "dq_block.cleared") for b in cleared
    ]:
        state = {
            "scope_type": block.scope_type,
            "scope_key": block.scope_key,
            "suite": block.suite,
            "expectation": block.expectation,
            "status": "active" if action.endswith("opened") else "cleared",
        }
        audit.record(
            conn,
            actor=actor,
            action=action,
            entity_type="dq_block",
            entity_id=str(block.block_id),
            before=None if action.endswith("opened") else {**state, "status": "active"},
            after=state,
            source=source,
            detail=block.detail
            if action.endswith("opened")
            else {"first_run_id": block.first_run_id},
        )
    return opened, cleared
