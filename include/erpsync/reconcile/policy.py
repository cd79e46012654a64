"""Reconciliation policy: read and change ``recon.settings`` (lock date, leakage threshold,
receipt threshold, default expense markup, plausibility bounds) and ``recon.expense_policy``
(limit per category).

Defaults (seeded by migration 0009, matching the sandbox manifest's ``policy`` section): no lock
date; leakage after 30 days; receipt required above 75 EUR (converted with
``recon.currencies.per_eur`` and rounded to the expense currency's minor units: 75.00 EUR,
81.00 USD, 64.50 GBP, 12150 JPY, 24.900 KWD); markup 0 %; limits per unit in EUR: Airfare
1200, Hotel 250 per night, Meals 60, Taxi & Transit 120, Mileage 0.23 per km, Software &
Subscriptions 500. Every change is audited in the caller's transaction.

Plausibility bounds (migration 0021; an item beyond one is held with the reason in brackets):
at most 24 hours in one time entry (``hours_over_entry_limit``), 16 hours per person per day
over all their live entries (``hours_over_day_limit``), a rate between 0.5 and 2.0 times the
person's billable rate cards (``rate_off_card``; compared in one currency through
``recon.currencies.per_eur``, a card without a currency - Harvest's - being in
``rate_card_currency``, EUR), dated at most 31 days before the contract
start, after its end or after the reconciliation date (``implausible_date``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from erpsync import audit

if TYPE_CHECKING:
    import psycopg

    from erpsync.sync.spec import RunInfo

__all__ = ["Settings", "get_settings", "set_expense_limit", "update_settings"]

_FIELDS = (
    "lock_date",
    "leakage_days",
    "receipt_threshold",
    "receipt_threshold_currency",
    "expense_markup_pct",
    "max_hours_per_entry",
    "max_hours_per_person_day",
    "rate_ratio_min",
    "rate_ratio_max",
    "date_tolerance_days",
    "rate_card_currency",
)


@dataclass(frozen=True)
class Settings:
    lock_date: dt.date | None
    leakage_days: int
    receipt_threshold: Decimal
    receipt_threshold_currency: str
    expense_markup_pct: Decimal
    #: plausibility bounds (migration 0021, see the module doc)
    max_hours_per_entry: Decimal = Decimal(24)
    max_hours_per_person_day: Decimal = Decimal(16)
    rate_ratio_min: Decimal = Decimal("0.5")
    rate_ratio_max: Decimal = Decimal("2.0")
    date_tolerance_days: int = 31
    rate_card_currency: str = "EUR"


def get_settings(conn: psycopg.Connection[Any]) -> Settings:
    row = conn.execute(
        f"SELECT {', '.join(_FIELDS)} FROM recon.settings WHERE id"  # noqa: S608 - constant
    ).fetchone()
    if row is None:
        raise LookupError("recon.settings has no row: is the warehouse migrated?")
    return Settings(*row)


def update_settings(conn: psycopg.Connection[Any], run: RunInfo, **changes: Any) -> Settings:
    """Change settings (``lock_date=date(2026, 9, 30)``, ``leakage_days=45``,
    ``max_hours_per_entry=Decimal(12)`` ...), audited."""
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown reconciliation settings {sorted(unknown)}")
    before = get_settings(conn)
    with conn.transaction():
        if changes:
            # one statement: bounds checked together (rate_ratio_min <= rate_ratio_max)
            assignments = ", ".join(f"{name} = %s" for name in changes)
            conn.execute(
                f"UPDATE recon.settings SET {assignments}, updated_at = now() WHERE id",  # noqa: S608 - names checked against _FIELDS
                tuple(changes.values()),
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
    conn: psycopg.Connection[Any],
    run: RunInfo,
    category: str,
    limit: Decimal,
    *,
    currency: str = "EUR",
    per_unit: bool = True,
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
