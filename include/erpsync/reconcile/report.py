"""The finance table: per client and contract currency, what is ready to bill, what is on hold
and why, the unbilled work in progress and the leakage - plain text for the task log.

Amounts are sums of the unrounded item amounts, rounded once to the currency's minor units
(erpsync.money, half away from zero). WIP = unbilled billable time and expenses (ready or on
hold); leakage = the approved part of it older than ``recon.settings.leakage_days``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from erpsync import money

if TYPE_CHECKING:
    import psycopg

__all__ = ["finance_rows", "finance_table"]

_QUERY = """
WITH asof AS (
    SELECT coalesce(%(as_of)s::date, (SELECT as_of FROM recon.latest_run), current_date) AS d
)
SELECT coalesce(cl.legal_name, i.account_id, '(no contract)') AS client,
       coalesce(i.currency, '---') AS currency,
       i.state, i.reason_code,
       count(*) AS items,
       sum(i.amount) AS amount,
       sum(i.amount) FILTER (WHERE i.item_type IN ('time', 'expense')
                             AND i.state IN ('ready', 'on_hold')) AS wip,
       sum(i.amount) FILTER (WHERE i.item_type IN ('time', 'expense')
                             AND i.state IN ('ready', 'on_hold') AND i.approved
                             AND (SELECT d FROM asof) - i.item_date > s.leakage_days) AS leakage
  FROM recon.items i
  CROSS JOIN recon.settings s
  LEFT JOIN core.clients cl ON cl.crm_id = i.account_id
 WHERE i.state IN ('ready', 'on_hold')
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2, 3, 4
"""


def _round(amount: Decimal | None, currency: str) -> Decimal | None:
    if amount is None:
        return None
    try:
        return money.round_money(Decimal(amount), currency)
    except money.UnknownCurrency:
        return Decimal(amount)


def finance_rows(
    conn: psycopg.Connection[Any], as_of: dt.date | None = None
) -> list[dict[str, Any]]:
    """Per client and currency: ready, on hold (total and per reason), WIP, leakage, rounded."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for client, currency, state, reason, items, amount, wip, leakage in conn.execute(
        _QUERY, {"as_of": as_of}
    ).fetchall():
        currency = str(currency).strip()
        row = out.setdefault(
            (client, currency),
            {
                "client": client,
                "currency": currency,
                "ready": Decimal(0),
                "ready_items": 0,
                "on_hold": Decimal(0),
                "on_hold_items": 0,
                "reasons": {},
                "wip": Decimal(0),
                "leakage": Decimal(0),
            },
        )
        if state == "ready":
            row["ready"] += amount or 0
            row["ready_items"] += items
        else:
            row["on_hold"] += amount or 0
            row["on_hold_items"] += items
            row["reasons"][reason] = (amount, items)
        row["wip"] += wip or 0
        row["leakage"] += leakage or 0
    rows = []
    for row in out.values():
        cur = row["currency"]
        for key in ("ready", "on_hold", "wip", "leakage"):
            row[key] = _round(row[key], cur)
        row["reasons"] = {r: (_round(a, cur), n) for r, (a, n) in sorted(row["reasons"].items())}
        rows.append(row)
    return rows


def _fmt(amount: Decimal | None) -> str:
    return money.as_text(amount, grouped=True)


def finance_table(conn: psycopg.Connection[Any], as_of: dt.date | None = None) -> str:
    """The per-client table a finance user reads at the end of the reconcile task log."""
    rows = finance_rows(conn, as_of)
    ((day,),) = conn.execute(
        "SELECT coalesce(%s::date, (SELECT as_of FROM recon.latest_run), current_date)", (as_of,)
    ).fetchall()
    ((leakage_days,),) = conn.execute("SELECT leakage_days FROM recon.settings").fetchall()
    header = (
        f"Reconciliation as of {day}: amounts in the contract currency, rounded to its minor "
        f"units (half away from zero); WIP = unbilled billable time and expenses; leakage = "
        f"approved work older than {leakage_days} days still unbilled"
    )
    cols = ("Client", "Cur", "Ready", "On hold", "WIP", "Leakage")
    widths = [max(30, *(len(r["client"]) for r in rows)) if rows else 30, 3, 16, 16, 16, 16]
    lines = [header, ""]
    lines.append(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        )
    )
    lines.append("  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(nothing ready or on hold)")
    for r in rows:
        cells = [
            r["client"],
            r["currency"],
            _fmt(r["ready"]),
            _fmt(r["on_hold"]),
            _fmt(r["wip"]),
            _fmt(r["leakage"]),
        ]
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        for reason, (amount, n) in r["reasons"].items():
            label = f"  on hold: {reason} ({n} item{'s' if n != 1 else ''})"
            lines.append(
                label.ljust(widths[0] + widths[1] + widths[2] + 6) + _fmt(amount).rjust(widths[3])
            )
    return "\n".join(lines)
