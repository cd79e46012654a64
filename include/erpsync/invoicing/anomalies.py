"""Anomaly flags on invoice drafts: they explain themselves with their numbers, and they
inform the approver; they never block a batch.

* ``amount_vs_history``: the client's net in this batch (per currency) is far from its
  monthly history (months of the last 12 whose items were billed: ``recon.items`` in state
  ``billed`` or in ``billing.billed_items``). Flagged when there are at least
  :data:`HISTORY_MIN_MONTHS` months and the amount is above :data:`HISTORY_HIGH` x or below
  :data:`HISTORY_LOW` x the median month (scaled to the period's length).
* ``hours_spike``: a person's hours in the period against their own last 90 days, scaled to
  the period: above :data:`SPIKE_RATIO` x and at least :data:`SPIKE_MIN_EXTRA_HOURS` more.
* ``rate_off_contract``: time billed at a rate different from the person's contracted rate
  (``core.contract_rate_overrides``).
* ``possible_duplicate``: two or more items with the same person, date, task and hours
  (time) or the same person, date and amount (expenses) on one invoice.
* ``expense_credit``: negative expenses billed as negative lines. Harvest documents
  an expense's ``total_cost`` as a decimal with no sign restriction
  (https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/), and a credit in
  Harvest is a negative line (https://support.getharvest.com/hc/en-us/articles/360048686611):
  reconciliation keeps such an expense ready as a credit (``reason_detail.credit``), and the
  approver sees every one here with its amount - a credit is never billed silently.

Items held by the plausibility rules of reconciliation (hours over the entry or daily bound,
zero amounts, rates far from the rate card, implausible dates) never reach a draft: they are in
the approval summary's held items, with their reason and amount at stake.

Runs set-based against the builder's temporary table ``_inv_billable`` (items + invoice).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from erpsync import money
from erpsync.invoicing.common import Connection, class_rows

#: One flag: ``{"code", "message", "numbers"}`` (stored in ``billing.invoices.anomalies``).
Flag = dict[str, Any]

HISTORY_MIN_MONTHS = 2
HISTORY_HIGH = Decimal("2")
HISTORY_LOW = Decimal("0.5")
SPIKE_RATIO = Decimal("1.5")
SPIKE_MIN_EXTRA_HOURS = Decimal("16")
SPIKE_WINDOW_DAYS = 90
#: At most this many flags of one kind per invoice; the rest are counted in one summary flag.
MAX_FLAGS_PER_KIND = 20
AVG_MONTH_DAYS = Decimal("30.4375")

_HISTORY_SQL = """
WITH cur AS (
    SELECT account_id, currency::text AS currency, sum(net) AS net,
           array_agg(invoice_id ORDER BY invoice_id) AS ids
    FROM billing.invoices WHERE batch_id = %(batch)s GROUP BY 1, 2
), hist_items AS (
    SELECT r.account_id, r.currency::text AS currency,
           date_trunc('month', r.item_date)::date AS month, sum(r.amount) AS amount
    FROM recon.items r
    JOIN cur c ON c.account_id = r.account_id AND c.currency = r.currency::text
    WHERE r.item_date >= (%(ps)s::date - interval '12 months') AND r.item_date < %(ps)s
      AND (r.state = 'billed'
           OR EXISTS (SELECT 1 FROM billing.billed_items b WHERE b.item_key = r.item_key))
    GROUP BY 1, 2, 3
), hist AS (
    SELECT account_id, currency, count(*) AS months,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) AS median,
           min(amount) AS low, max(amount) AS high
    FROM hist_items GROUP BY 1, 2
)
SELECT c.ids, c.account_id, c.currency, c.net, h.months, h.median, h.low, h.high
FROM cur c JOIN hist h USING (account_id, currency)
WHERE h.months >= %(min_months)s
"""

_SPIKE_SQL = """
WITH cur AS (
    SELECT invoice_id, user_psa_id, sum(hours) AS hours
    FROM _inv_billable
    WHERE item_type = 'time' AND user_psa_id IS NOT NULL
    GROUP BY 1, 2
), users AS (
    SELECT DISTINCT user_psa_id FROM cur
), stats AS (
    SELECT r.user_psa_id,
           sum(r.hours) FILTER (WHERE r.item_date BETWEEN %(ps)s AND %(pe)s) AS period_hours,
           sum(r.hours) FILTER (WHERE r.item_date < %(ps)s) AS hist_hours,
           min(r.item_date) FILTER (WHERE r.item_date < %(ps)s) AS hist_first
    FROM recon.items r JOIN users u USING (user_psa_id)
    WHERE r.item_type = 'time' AND r.item_date >= %(hist_from)s AND r.item_date <= %(pe)s
    GROUP BY 1
)
SELECT cur.invoice_id, cur.user_psa_id, cur.hours, s.period_hours, s.hist_hours, s.hist_first
FROM cur JOIN stats s USING (user_psa_id)
WHERE s.hist_hours > 0
"""

_RATE_SQL = """
SELECT i.invoice_id, i.user_psa_id, p.email, i.rate, o.rate AS contract_rate, i.currency,
       sum(i.hours) AS hours, count(*) AS items
FROM _inv_billable i
JOIN core.people p ON p.psa_id = i.user_psa_id
JOIN core.contract_rate_overrides o
  ON o.opportunity_id = i.opportunity_id AND lower(o.user_email) = lower(p.email)
 AND o.deleted_at IS NULL AND o.currency = i.currency
WHERE i.item_type = 'time' AND i.rate <> o.rate
  -- the contracted rate from the day it applies (earlier work keeps its own, migration 0023)
  AND (o.effective_from IS NULL OR i.item_date >= o.effective_from)
GROUP BY 1, 2, 3, 4, 5, 6
"""

_CREDIT_SQL = """
SELECT invoice_id, currency, count(*) AS items, sum(amount) AS amount,
       (array_agg(item_key ORDER BY item_key))[1:%(max_flags)s] AS keys
FROM _inv_billable
WHERE item_type = 'expense' AND amount < 0
GROUP BY 1, 2
ORDER BY 1, 2
"""

_DUPLICATE_SQL = """
WITH b AS (
    SELECT invoice_id, item_key, item_type, coalesce(user_psa_id, '') AS person, item_date,
           coalesce(task_name, '') AS task, coalesce(hours, -1) AS hours,
           coalesce(amount, -1) AS amount, currency
    FROM _inv_billable
    WHERE item_type IN ('time', 'expense')
), d AS (
    SELECT invoice_id, item_type, person, item_date, task, hours, amount, currency,
           count(*) AS items
    FROM b
    GROUP BY invoice_id, item_type, person, item_date, task, hours, amount, currency
    HAVING count(*) > 1
), ranked AS (
    SELECT d.*, row_number() OVER (PARTITION BY invoice_id
                                   ORDER BY item_date, person, task, hours, amount) AS n,
           count(*) OVER (PARTITION BY invoice_id) AS groups
    FROM d
)
SELECT r.invoice_id, r.item_type, nullif(r.person, '') AS person, r.item_date, r.task,
       nullif(r.hours, -1) AS hours, nullif(r.amount, -1) AS amount, r.currency,
       array_agg(b.item_key ORDER BY b.item_key) AS keys, r.groups
FROM ranked r
JOIN b USING (invoice_id, item_type, person, item_date, task, hours, amount, currency)
WHERE r.n <= %(max_flags)s
GROUP BY r.invoice_id, r.item_type, r.person, r.item_date, r.task, r.hours, r.amount,
         r.currency, r.groups
"""


@dataclass(frozen=True)
class _HistoryRow:
    ids: list[int]
    account_id: str
    currency: str
    net: Decimal
    months: int
    median: Decimal
    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class _SpikeRow:
    invoice_id: int
    user_psa_id: str
    hours: Decimal
    period_hours: Decimal | None
    hist_hours: Decimal
    hist_first: dt.date


@dataclass(frozen=True)
class _RateRow:
    invoice_id: int
    user_psa_id: str
    email: str
    rate: Decimal
    contract_rate: Decimal
    currency: str
    hours: Decimal
    items: int


@dataclass(frozen=True)
class _CreditRow:
    invoice_id: int
    currency: str
    items: int
    amount: Decimal
    keys: list[str]


@dataclass(frozen=True)
class _DuplicateRow:
    invoice_id: int
    item_type: str
    person: str | None
    item_date: dt.date
    task: str
    hours: Decimal | None
    amount: Decimal | None
    currency: str
    keys: list[str]
    groups: int


def _money(amount: Decimal | None, currency: str) -> str:
    # a flag describes the data as it is: an unknown currency unrounded, no amount as None
    return money.as_text(amount, currency, empty="None")


def _cap(found: list[Flag]) -> None:
    """Keep at most MAX_FLAGS_PER_KIND flags of each kind; say how many more there were."""
    by_code: dict[str, list[Flag]] = defaultdict(list)
    for f in found:
        by_code[f["code"]].append(f)
    kept: list[Flag] = []
    for code, group in by_code.items():
        total = max([len(group)] + [f["numbers"].get("groups_on_invoice", 0) for f in group])
        kept += group[:MAX_FLAGS_PER_KIND]
        if total > MAX_FLAGS_PER_KIND:
            kept.append(
                {
                    "code": code,
                    "message": f"{total - MAX_FLAGS_PER_KIND} more {code} flags on this invoice "
                    f"({total} in all; the first {MAX_FLAGS_PER_KIND} are listed)",
                    "numbers": {"total": total, "listed": MAX_FLAGS_PER_KIND},
                }
            )
    found[:] = kept


def credit_flags(conn: Connection, max_keys: int = MAX_FLAGS_PER_KIND) -> dict[int, list[Flag]]:
    """``expense_credit`` flags per invoice of the builder's ``_inv_billable``: the negative
    expenses on it, counted and summed per currency (the first ``max_keys`` item keys)."""
    out: dict[int, list[Flag]] = defaultdict(list)
    for row in class_rows(conn, _CreditRow, _CREDIT_SQL, {"max_flags": max_keys}):
        cur, items = row.currency, row.items
        total = _money(row.amount, cur)
        out[row.invoice_id].append(
            {
                "code": "expense_credit",
                "message": (
                    f"{items} negative expense(s) billed as credit lines: {total} {cur} "
                    "(refunds entered in the PSA; check they belong on this invoice)"
                ),
                "numbers": {
                    "items": items,
                    "amount": total,
                    "currency": cur,
                    "item_keys": list(row.keys),
                },
            }
        )
    return out


def flag_batch(
    conn: Connection, batch_id: int, *, period_start: dt.date, period_end: dt.date, kind: str
) -> int:
    """Compute the flags of every invoice in the batch and store them in
    ``billing.invoices.anomalies``. Returns the number of flags."""
    flags: dict[int, list[Flag]] = defaultdict(list)
    days = Decimal((period_end - period_start).days + 1)
    params = {
        "batch": batch_id,
        "ps": period_start,
        "pe": period_end,
        "min_months": HISTORY_MIN_MONTHS,
        "hist_from": period_start - dt.timedelta(days=SPIKE_WINDOW_DAYS),
        "max_flags": MAX_FLAGS_PER_KIND,
    }
    if kind == "period":
        scale = days / AVG_MONTH_DAYS
        for h in class_rows(conn, _HistoryRow, _HISTORY_SQL, params):
            account, cur, net, months = h.account_id, h.currency, h.net, h.months
            median, low, high = h.median, h.low, h.high
            expected = Decimal(median) * scale
            if expected <= 0:
                continue
            ratio = (Decimal(net) / expected).quantize(Decimal("0.01"))
            if HISTORY_LOW <= ratio <= HISTORY_HIGH:
                continue
            flag = {
                "code": "amount_vs_history",
                "message": (
                    f"client {account} is billed {_money(net, cur)} {cur} this period, "
                    f"{ratio}x its median month of {_money(median, cur)} {cur} "
                    f"over {months} months (range {_money(low, cur)}-{_money(high, cur)})"
                ),
                "numbers": {
                    "this_period": _money(net, cur),
                    "median_month": _money(median, cur),
                    "expected_for_period": _money(expected, cur),
                    "history_months": months,
                    "history_min": _money(low, cur),
                    "history_max": _money(high, cur),
                    "ratio": str(ratio),
                    "currency": cur,
                },
            }
            for invoice_id in h.ids:
                flags[invoice_id].append(flag)
        for sp in class_rows(conn, _SpikeRow, _SPIKE_SQL, params):
            user, hours, hist_hours = sp.user_psa_id, sp.hours, sp.hist_hours
            hist_days = Decimal(max((period_start - sp.hist_first).days, 28))
            expected = (Decimal(hist_hours) / hist_days * days).quantize(Decimal("0.01"))
            period_hours = Decimal(sp.period_hours or 0)
            if expected <= 0:
                continue
            ratio = (period_hours / expected).quantize(Decimal("0.01"))
            if ratio < SPIKE_RATIO or period_hours - expected < SPIKE_MIN_EXTRA_HOURS:
                continue
            flags[sp.invoice_id].append(
                {
                    "code": "hours_spike",
                    "message": (
                        f"person {user} logged {period_hours} h this period against "
                        f"{expected} h expected from their last {hist_days} days "
                        f"({hist_hours} h), {ratio}x; {hours} h of it on this invoice"
                    ),
                    "numbers": {
                        "person": user,
                        "period_hours": str(period_hours),
                        "expected_hours": str(expected),
                        "history_hours": str(hist_hours),
                        "history_days": int(hist_days),
                        "hours_on_invoice": str(hours),
                        "ratio": str(ratio),
                    },
                }
            )
    for ra in class_rows(conn, _RateRow, _RATE_SQL):
        user, email, rate, contract_rate = ra.user_psa_id, ra.email, ra.rate, ra.contract_rate
        cur, hours, items = ra.currency, ra.hours, ra.items
        flags[ra.invoice_id].append(
            {
                "code": "rate_off_contract",
                "message": (
                    f"{items} entries ({hours} h) of {email} billed at {rate} {cur}/h; "
                    f"the contract says {contract_rate} {cur}/h"
                ),
                "numbers": {
                    "person": user,
                    "email": email,
                    "billed_rate": str(rate),
                    "contract_rate": str(contract_rate),
                    "hours": str(hours),
                    "items": items,
                    "difference": _money((Decimal(rate) - Decimal(contract_rate)) * hours, cur),
                    "currency": cur,
                },
            }
        )
    for d in class_rows(conn, _DuplicateRow, _DUPLICATE_SQL, params):
        cur, keys = d.currency, d.keys
        what = (
            f"{d.hours} h of {d.task or 'time'}"
            if d.item_type == "time"
            else f"{_money(d.amount, cur)} {cur}"
        )
        flags[d.invoice_id].append(
            {
                "code": "possible_duplicate",
                "message": (
                    f"{len(keys)} {d.item_type} items of {d.person} on {d.item_date} with the"
                    f" same {what}"
                ),
                "numbers": {
                    "item_type": d.item_type,
                    "person": d.person,
                    "date": d.item_date.isoformat(),
                    "hours": None if d.hours is None else str(d.hours),
                    "amount": None if d.amount is None else _money(d.amount, cur),
                    "count": len(keys),
                    "item_keys": list(keys),
                    "groups_on_invoice": d.groups,
                },
            }
        )
    for invoice_id, found in credit_flags(conn).items():
        flags[invoice_id].extend(found)
    for found in flags.values():
        _cap(found)
    if flags:
        ids = sorted(flags)
        conn.execute(
            """UPDATE billing.invoices i SET anomalies = f.flags
               FROM unnest(%s::bigint[], %s::jsonb[]) AS f(invoice_id, flags)
               WHERE i.invoice_id = f.invoice_id""",
            (ids, [json.dumps(flags[i]) for i in ids]),
        )
    return sum(len(v) for v in flags.values())
