"""The billing schedule of one contract version (``billing.schedules`` / ``schedule_lines``).

* Time and materials: one line per calendar month of the contract, billed in arrears on the
  first day of the next month; the amount comes from approved time, so it is NULL here (the cap,
  if any, sits on the schedule).
* Fixed fee: one line per milestone, due on the milestone's due date, for its amount.
* Retainer: one line per month or quarter from the start date, due at the start of the period,
  for the retainer amount. A retainer without an end date is scheduled for twelve months.

A change order writes the new version's schedule and marks the previous one superseded (history
kept); rewriting the same version is a no-op.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from erpsync.models.billing_terms import BillingModel
from erpsync.onboarding.contracts import Contract

__all__ = ["ScheduleLine", "build_lines"]

#: How far an open-ended contract is scheduled ahead.
OPEN_ENDED_MONTHS = 12


@dataclass(frozen=True)
class ScheduleLine:
    seq: int
    kind: str
    description: str
    period_start: dt.date | None
    period_end: dt.date | None
    due_date: dt.date
    amount: Decimal | None
    currency: str


def _add_months(day: dt.date, months: int) -> dt.date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    # clamp to the month's last day (31 Jan + 1 month = 28/29 Feb)
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, d)
        except ValueError:
            continue
    raise ValueError(day)


def _end(contract: Contract) -> dt.date:
    assert contract.starts_on is not None
    return contract.ends_on or (
        _add_months(contract.starts_on, OPEN_ENDED_MONTHS) - dt.timedelta(1)
    )


def build_lines(contract: Contract) -> list[ScheduleLine]:
    """The schedule lines of a valid contract."""
    if contract.starts_on is None or contract.currency is None:
        raise ValueError("a schedule needs a start date and a currency")
    start, end, cur = contract.starts_on, _end(contract), contract.currency
    lines: list[ScheduleLine] = []
    if contract.billing_model == BillingModel.FIXED_FEE:
        for i, m in enumerate(contract.milestones, 1):
            due = dt.date.fromisoformat(m["due_date"])
            lines.append(
                ScheduleLine(i, "milestone", m["name"], None, None, due, Decimal(m["amount"]), cur)
            )
    elif contract.billing_model == BillingModel.RETAINER:
        step = 3 if contract.retainer_period == "quarterly" else 1
        period_start, i = start, 0
        while period_start <= end:
            i += 1
            period_end = min(_add_months(start, step * i) - dt.timedelta(1), end)
            lines.append(
                ScheduleLine(
                    i,
                    "retainer",
                    f"{contract.retainer_period} retainer {period_start.isoformat()}",
                    period_start,
                    period_end,
                    period_start,
                    contract.retainer_amount,
                    cur,
                )
            )
            period_start = period_end + dt.timedelta(1)
    elif contract.billing_model == BillingModel.TIME_AND_MATERIALS:
        month_start, i = start, 0
        while month_start <= end:
            i += 1
            next_month = _add_months(month_start.replace(day=1), 1)
            period_end = min(next_month - dt.timedelta(1), end)
            lines.append(
                ScheduleLine(
                    i,
                    "tm_period",
                    f"time and materials {month_start:%Y-%m}",
                    month_start,
                    period_end,
                    next_month,
                    None,
                    cur,
                )
            )
            month_start = next_month
    else:
        raise ValueError(f"unknown billing model {contract.billing_model!r}")
    return lines
