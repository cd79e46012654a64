"""Reconciliation policy: read and change ``recon.settings`` (lock date, leakage threshold,
receipt threshold, default expense markup) and ``recon.expense_policy`` (limit per category).

Defaults (seeded by migration 0009, matching the sandbox manifest's ``policy`` section): no lock
date; leakage after 30 days; receipt required above 75 EUR (converted with
``recon.currencies.per_eur`` and rounded to the expense currency's minor units: 75.00 EUR,
81.00 USD, 64.50 GBP, 12150 JPY, 24.900 KWD); markup 0 %; limits per unit in EUR: Airfare
1200, Hotel 250 per night, Meals 60, Taxi & Transit 120, Mileage 0.23 per km, Software &
Subscriptions 500. Every change is audited in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from erpsync import audit

__all__ = ["Settings", "get_settings", "set_expense_limit", "update_settings"]

_FIELDS = (
    "lock_date",
    "leakage_days",
    "receipt_threshold",
    "receipt_threshold_currency",
    "expense_markup_pct",
)


@dataclass(frozen=True)
class Settings:
    lock_date: dt.date | None
    leakage_days: int
    receipt_threshold: Decimal
    receipt_threshold_currency: str
    expense_markup_pct: Decimal


def get_settings(conn) -> Settings:
    row = conn.execute(
        f"SELECT {', '.join(_FIELDS)} FROM recon.settings WHERE id"  # noqa: S608 - constant
    ).fetchone()
    return Settings(*row)


def update_settings(conn, run, **changes: Any) -> Settings:
    """Change settings (``lock_date=date(2026, 9, 30)``, ``leakage_days=45`` ...), audited."""
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown reconciliation settings {sorted(unknown)}")
    before = get_settings(conn)
    with conn.transaction():
        for name, value in changes.items():
            conn.execute(
                f"UPDATE recon.settings SET {name} = %s, updated_at = now() WHERE id",  # noqa: S608
                (value,),
            )
        after = get_settings(conn)
        audit.record(
            conn,
            actor=str(getattr(run, "actor", None) or "unknown"),
            action="reconcile.settings_changed",
            entity_type="recon_settings",
            entity_id="settings",
            before={k: getattr(before, k) for k in changes},
            after={k: getattr(after, k) for k in changes},
            source=run.audit_source() if hasattr(run, "audit_source") else None,
        )
    return after


def set_expense_limit(
    conn, run, category: str, limit: Decimal, *, currency: str = "EUR", per_unit: bool = True
) -> None:
    """Set (or add) the policy limit of an expense category, audited."""
    with conn.transaction():
        old = conn.execute(
            "SELECT limit_amount, limit_currency, per_unit FROM recon.expense_policy"
            " WHERE category = %s",
            (category,),
        ).fetchone()
        conn.execute(
            """INSERT INTO recon.expense_policy (category, limit_amount, limit_currency, per_unit)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (category) DO UPDATE SET limit_amount = EXCLUDED.limit_amount,
                   limit_currency = EXCLUDED.limit_currency, per_unit = EXCLUDED.per_unit""",
            (category, Decimal(limit), currency, per_unit),
        )
        audit.record(
            conn,
            actor=str(getattr(run, "actor", None) or "unknown"),
            action="reconcile.expense_policy_changed",
            entity_type="expense_policy",
            entity_id=category,
            before=None if old is None else list(old),
            after=[Decimal(limit), currency, per_unit],
            source=run.audit_source() if hasattr(run, "audit_source") else None,
        )
