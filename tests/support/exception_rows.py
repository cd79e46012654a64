"""Exceptions raised through the real queue code and aged: what the worklist tests (library and
console page) seed their scenario with."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from erpsync import exceptions_queue as eq


def raise_aged(conn, scenario, payload: dict, run) -> list[int]:
    """Raise each ``(reason, entity_type, key, owner, amount, currency, account, age_days)`` of
    ``scenario`` with ``payload``, first seen ``age_days`` ago; their ids in scenario order."""
    ids = []
    for reason, etype, key, owner, amount, currency, account, age in scenario:
        out = eq.raise_exception(
            conn,
            reason,
            etype,
            key,
            owner,
            payload,
            run,
            amount_at_stake=None if amount is None else Decimal(amount),
            currency=currency,
            account_id=account,
        )
        conn.execute(
            "UPDATE ops.exceptions SET first_seen_at = now() - %s WHERE exception_id = %s",
            (timedelta(days=age), out.exception_id),
        )
        ids.append(out.exception_id)
    return ids
