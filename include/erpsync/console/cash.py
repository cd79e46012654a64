"""Cash on the process-intelligence page: payment status, DSO and overdue receivables.

Read-only functions over what :func:`erpsync.invoicing.payment_status.sync_payment_status`
synced from Business Central (migration 0026: ``billing.erp_invoice_status`` and the dated
``billing.erp_receivable_history``). Each takes an open psycopg connection and returns
dataclasses; money stays :class:`~decimal.Decimal` and is never added across currencies.
Only invoices erpsync pushed are counted (the ERP's other invoices are not the pack's).

Speed: the page asks for today. DSO and payment status then read the summaries the sync
refreshes (``billing.erp_cash_monthly``, ``billing.erp_cash_status_monthly``: a few rows per
month and currency); overdue reads the invoices that still owe through a partial index. A
past as-of date is computed directly from the history (exact, slower: an audit question, not
the page). ``python -m erpsync.bench.cash`` on 72,000 invoices (3,000 clients x 24 months,
about 20,000 still owing), shared 2-core machine: DSO 1 ms, payment status 0.4 ms, overdue per
client 56 ms, all of :func:`cash_context` 157 ms (benchmarks/results/cash.json).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from psycopg import Connection
from psycopg.rows import TupleRow

from erpsync.money import round_money

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from markupsafe import Markup

__all__ = [
    "CSV_METRICS",
    "DSO_DEFINITION",
    "OVERDUE_DEFINITION",
    "STATUS_DEFINITION",
    "ClientOverdue",
    "DsoMonth",
    "OverdueTotal",
    "PaymentStatusRow",
    "cash_context",
    "csv_table",
    "dso_by_month",
    "overdue_by_client",
    "overdue_totals",
    "payment_status_summary",
    "table",
]

DSO_DEFINITION = (
    "Days sales outstanding (DSO) for a month, per currency: what clients still owed at the end "
    "of the month (the remaining amount Business Central showed for each invoice erpsync "
    "pushed, as synced) divided by what was invoiced in that month and the two before it "
    "(invoice totals including tax, by posting date), times the days in those three months. "
    "For the current month, the end is today. A payment counts from the day the nightly sync "
    "first saw it."
)
OVERDUE_DEFINITION = (
    "Overdue receivables per client and currency: the remaining amount of each invoice past its "
    "due date, by days overdue (1-30, 31-60, 61-90, over 90); 'not due' is owed but not yet "
    "due. From Business Central's remainingAmount and dueDate as last synced."
)
STATUS_DEFINITION = (
    "Payment status of the invoices erpsync pushed, from Business Central: unpaid (open, "
    "nothing paid), partly paid (open, part of it paid or credited), paid (nothing remains: "
    "paid, or settled by a credit note, which Business Central also shows as Paid), canceled "
    "(canceled in the ERP), corrective (an invoice that cancels a credit memo)."
)

_CENT = Decimal("0.1")


@dataclass(frozen=True)
class DsoMonth:
    month: str  # "2026-11"
    currency: str
    receivables: Decimal  # owed at the end of the month (or as_of)
    billings: Decimal  # invoiced in the month and the two before it
    days: int  # days in those three months (to as_of for the current month)
    dso: Decimal | None  # receivables / billings x days, one decimal; None without billings


@dataclass(frozen=True)
class ClientOverdue:
    account_id: str
    client_name: str | None
    currency: str
    invoices: int  # invoices that still owe something
    remaining: Decimal  # all they owe
    not_due: Decimal
    overdue_1_30: Decimal
    overdue_31_60: Decimal
    overdue_61_90: Decimal
    overdue_over_90: Decimal
    overdue: Decimal  # the sum of the four overdue buckets
    oldest_due: dt.date | None  # earliest due date among the overdue invoices


@dataclass(frozen=True)
class PaymentStatusRow:
    state: str  # unpaid | partly_paid | paid | canceled | corrective
    currency: str
    invoices: int
    total: Decimal  # invoice totals including tax
    remaining: Decimal  # still owed
    last_synced_at: dt.datetime | None


def table(items: Sequence[DataclassInstance]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``(header, rows)`` of a list of these dataclasses, for ``csv_response``."""
    if not items:
        return [], []
    return [f.name for f in fields(items[0])], [astuple(i) for i in items]


def _amount(value: Decimal | int | str, currency: str) -> Decimal:
    """A stored amount (numeric(20, 4)) shown with its currency's minor units; exact, since
    every stored amount is already rounded to them."""
    return round_money(Decimal(value), currency.strip())


def _ratio_days(receivables: Decimal, billings: Decimal, days: int) -> Decimal | None:
    if not billings:
        return None
    return (receivables / billings * days).quantize(_CENT, rounding=ROUND_HALF_UP)


def _month(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _add_months(month: dt.date, n: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + n
    return dt.date(index // 12, index % 12 + 1, 1)


def _month_end(month: dt.date) -> dt.date:
    return _add_months(month, 1) - dt.timedelta(days=1)


#: Per month and currency from ``first`` to ``last`` (first days): receivables at the end of
#: the month (or ``as_of``, whichever is earlier), billings of the three calendar months by
#: posting date, and how many invoices owe. The definition; the summary stores its result.
_MONTHLY_DIRECT = """
WITH m AS (
    SELECT g::date AS month_start,
           least((g + interval '1 month' - interval '1 day')::date, %(as_of)s) AS point,
           (g + interval '1 month' - interval '1 day')::date AS month_end,
           (g - interval '2 months')::date AS window_start
      FROM generate_series(%(first)s::date, %(last)s::date, interval '1 month') AS g
),
owed AS (
    SELECT m.month_start, s.currency, sum(h.remaining_amount) AS receivables,
           count(*) AS owing
      FROM m
      JOIN billing.erp_receivable_history h
        ON h.remaining_amount <> 0
       AND h.valid_from <= m.point
       AND (h.valid_to IS NULL OR h.valid_to > m.point)
      JOIN billing.erp_invoice_status s ON s.invoice_id = h.invoice_id
     GROUP BY 1, 2
),
billed AS (
    SELECT m.month_start, s.currency, sum(s.total_incl_tax) AS billings
      FROM m
      JOIN billing.erp_invoice_status s
        ON s.posting_date BETWEEN m.window_start AND m.month_end
       AND s.status IN ('Open', 'Paid', 'Canceled', 'Corrective')
     GROUP BY 1, 2
)
SELECT k.month_start, k.currency, coalesce(o.receivables, 0), coalesce(b.billings, 0),
       coalesce(o.owing, 0)
  FROM (SELECT month_start, currency FROM owed
        UNION SELECT month_start, currency FROM billed) AS k
  LEFT JOIN owed o USING (month_start, currency)
  LEFT JOIN billed b USING (month_start, currency)
 ORDER BY 1, 2
"""

_MONTHLY_SUMMARY = """
SELECT month, currency, receivables, billings_3m, invoices_owing
  FROM billing.erp_cash_monthly
 WHERE month BETWEEN %(first)s AND %(last)s
 ORDER BY 1, 2
"""

#: Far enough in the future that "the end of the month" is never capped.
_NO_CAP = dt.date(9999, 12, 31)


def refreshed_through(conn: Connection[TupleRow]) -> dt.date | None:
    """The sync date the summaries were last refreshed for (None: never)."""
    row = conn.execute("SELECT refreshed_through FROM billing.erp_cash_refresh").fetchone()
    return row[0] if row else None


def refresh_dso_months(conn: Connection[TupleRow], *, first: dt.date, through: dt.date) -> int:
    """Recompute ``billing.erp_cash_monthly`` for the months from ``first``'s to ``through``'s
    (the sync date) and note ``through``; returns the rows written. Called by the
    payment-status sync in its transaction."""
    first, last = min(_month(first), _month(through)), _month(through)
    conn.execute("DELETE FROM billing.erp_cash_monthly WHERE month >= %s", (first,))
    rows = conn.execute(
        _MONTHLY_DIRECT, {"first": first, "last": last, "as_of": _NO_CAP}
    ).fetchall()
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO billing.erp_cash_monthly
                       (month, currency, receivables, billings_3m, invoices_owing)
                   VALUES (%s, %s, %s, %s, %s)""",
                rows,
            )
    conn.execute(
        """INSERT INTO billing.erp_cash_refresh (refreshed_through) VALUES (%s)
           ON CONFLICT (singleton) DO UPDATE
               SET refreshed_through = EXCLUDED.refreshed_through, refreshed_at = now()""",
        (through,),
    )
    return len(rows)


def _dso_rows(
    conn: Connection[TupleRow], first: dt.date, last: dt.date, as_of: dt.date
) -> list[tuple[Any, ...]]:
    through = refreshed_through(conn)
    if through is not None and through <= as_of and _month(through) == _month(as_of):
        return conn.execute(_MONTHLY_SUMMARY, {"first": first, "last": last}).fetchall()
    # a past as-of date, or no refresh this month yet: the definition, computed directly
    return conn.execute(_MONTHLY_DIRECT, {"first": first, "last": last, "as_of": as_of}).fetchall()


def dso_by_month(conn: Connection[TupleRow], *, months: int = 12, as_of: dt.date) -> list[DsoMonth]:
    """DSO per month and currency for the ``months`` months up to ``as_of``'s month (formula
    in :data:`DSO_DEFINITION` and migration 0026). Months with neither receivables nor
    billings in a currency have no row. Reads ``billing.erp_cash_monthly`` when ``as_of`` is
    on or after the last sync of its month; computes directly otherwise."""
    if months < 1:
        raise ValueError("months must be at least 1")
    last = _month(as_of)
    first = _add_months(last, -(months - 1))
    out = []
    for month, currency, receivables, billings, _owing in _dso_rows(conn, first, last, as_of):
        days = (min(_month_end(month), as_of) - _add_months(month, -2)).days + 1
        out.append(
            DsoMonth(
                month=month.strftime("%Y-%m"),
                currency=currency.strip(),
                receivables=_amount(receivables, currency),
                billings=_amount(billings, currency),
                days=days,
                dso=_ratio_days(Decimal(receivables), Decimal(billings), days),
            )
        )
    return out


#: What is owed on ``as_of``, per invoice, from the dated history (any date).
_OWING = """
WITH owing AS (
    SELECT s.account_id, s.client_name, s.currency, s.due_date, h.remaining_amount,
           %(as_of)s::date - s.due_date AS late
      FROM billing.erp_receivable_history h
      JOIN billing.erp_invoice_status s ON s.invoice_id = h.invoice_id
     WHERE h.remaining_amount <> 0
       AND h.valid_from <= %(as_of)s
       AND (h.valid_to IS NULL OR h.valid_to > %(as_of)s)
)
"""

#: The same for an ``as_of`` on or after the last sync: the latest state, through the partial
#: index on the invoices that still owe.
_OWING_NOW = """
WITH owing AS (
    SELECT account_id, client_name, currency, due_date, remaining_amount,
           %(as_of)s::date - due_date AS late
      FROM billing.erp_invoice_status
     WHERE remaining_amount <> 0
       AND status IN ('Open', 'Paid', 'Canceled', 'Corrective')
)
"""


def _owing(conn: Connection[TupleRow], as_of: dt.date) -> str:
    through = refreshed_through(conn)
    return _OWING_NOW if through is not None and as_of >= through else _OWING


_OVERDUE = """
SELECT account_id, max(client_name), currency, count(*), sum(remaining_amount),
       coalesce(sum(remaining_amount) FILTER (WHERE late IS NULL OR late <= 0), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late BETWEEN 1 AND 30), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late BETWEEN 31 AND 60), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late BETWEEN 61 AND 90), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late > 90), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late > 0), 0) AS overdue,
       min(due_date) FILTER (WHERE late > 0)
  FROM owing
 GROUP BY account_id, currency
 ORDER BY currency, overdue DESC, account_id
 LIMIT %(limit)s OFFSET %(offset)s
"""


_TOTALS = """
SELECT currency, count(*), sum(remaining_amount),
       coalesce(sum(remaining_amount) FILTER (WHERE late IS NULL OR late <= 0), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late BETWEEN 1 AND 30), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late BETWEEN 31 AND 60), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late BETWEEN 61 AND 90), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late > 90), 0),
       coalesce(sum(remaining_amount) FILTER (WHERE late > 0), 0),
       count(DISTINCT account_id) FILTER (WHERE late > 0)
  FROM owing
 GROUP BY currency
 ORDER BY currency
"""


@dataclass(frozen=True)
class OverdueTotal:
    currency: str
    invoices: int
    remaining: Decimal
    not_due: Decimal
    overdue_1_30: Decimal
    overdue_31_60: Decimal
    overdue_61_90: Decimal
    overdue_over_90: Decimal
    overdue: Decimal
    clients_overdue: int

    def buckets(self) -> list[tuple[str, Decimal]]:
        """``(label, amount)`` per bucket, for a bar chart."""
        return [
            ("not due", self.not_due),
            ("1-30", self.overdue_1_30),
            ("31-60", self.overdue_31_60),
            ("61-90", self.overdue_61_90),
            ("over 90", self.overdue_over_90),
        ]


def overdue_totals(conn: Connection[TupleRow], *, as_of: dt.date) -> list[OverdueTotal]:
    """All clients together, per currency: what is owed on ``as_of`` by days overdue."""
    rows = conn.execute(_owing(conn, as_of) + _TOTALS, {"as_of": as_of}).fetchall()
    return [
        OverdueTotal(
            currency=r[0].strip(),
            invoices=int(r[1]),
            remaining=_amount(r[2], r[0]),
            not_due=_amount(r[3], r[0]),
            overdue_1_30=_amount(r[4], r[0]),
            overdue_31_60=_amount(r[5], r[0]),
            overdue_61_90=_amount(r[6], r[0]),
            overdue_over_90=_amount(r[7], r[0]),
            overdue=_amount(r[8], r[0]),
            clients_overdue=int(r[9]),
        )
        for r in rows
    ]


def overdue_by_client(
    conn: Connection[TupleRow], *, as_of: dt.date, limit: int = 100, offset: int = 0
) -> list[ClientOverdue]:
    """What each client owes on ``as_of`` per currency, by days overdue (due date to
    ``as_of``), most overdue first within each currency; one page of ``limit`` rows."""
    rows = conn.execute(
        _owing(conn, as_of) + _OVERDUE, {"as_of": as_of, "limit": limit, "offset": offset}
    ).fetchall()
    return [
        ClientOverdue(
            account_id=r[0],
            client_name=r[1],
            currency=r[2].strip(),
            invoices=int(r[3]),
            remaining=_amount(r[4], r[2]),
            not_due=_amount(r[5], r[2]),
            overdue_1_30=_amount(r[6], r[2]),
            overdue_31_60=_amount(r[7], r[2]),
            overdue_61_90=_amount(r[8], r[2]),
            overdue_over_90=_amount(r[9], r[2]),
            overdue=_amount(r[10], r[2]),
            oldest_due=r[11],
        )
        for r in rows
    ]


_STATE = """
CASE status
    WHEN 'Open' THEN CASE WHEN remaining_amount = total_incl_tax THEN 'unpaid'
                          ELSE 'partly_paid' END
    WHEN 'Paid' THEN 'paid'
    WHEN 'Canceled' THEN 'canceled'
    WHEN 'Corrective' THEN 'corrective'
    ELSE 'draft'
END
"""
_STATE_ORDER = ("unpaid", "partly_paid", "paid", "canceled", "corrective", "draft")

_STATUS_DIRECT = f"""
SELECT date_trunc('month', posting_date)::date AS month, currency, {_STATE} AS state,
       count(*), sum(total_incl_tax), sum(remaining_amount), max(synced_at)
  FROM billing.erp_invoice_status
 WHERE posting_date >= %(since)s
   AND (%(months)s::date[] IS NULL OR date_trunc('month', posting_date)::date = ANY(%(months)s))
 GROUP BY 1, 2, 3
"""  # noqa: S608 - _STATE is a constant, values are parameters

_STATUS_SUMMARY = """
SELECT m.month, m.currency, m.state, m.invoices, m.total, m.remaining, r.refreshed_at
  FROM billing.erp_cash_status_monthly m CROSS JOIN billing.erp_cash_refresh r
 WHERE m.month >= %(since)s
"""

_EPOCH = dt.date(1900, 1, 1)


def refresh_status_months(
    conn: Connection[TupleRow], months: Iterable[dt.date] | None = None
) -> int:
    """Recompute ``billing.erp_cash_status_monthly`` for the posting ``months`` (first days;
    None: all); returns the rows written. Called by the payment-status sync with the posting
    months of the invoices whose state it changed."""
    wanted = None if months is None else sorted({_month(m) for m in months})
    if wanted == []:
        return 0
    if wanted is None:
        conn.execute("DELETE FROM billing.erp_cash_status_monthly")
    else:
        conn.execute("DELETE FROM billing.erp_cash_status_monthly WHERE month = ANY(%s)", (wanted,))
    rows = conn.execute(
        _STATUS_DIRECT, {"since": wanted[0] if wanted else _EPOCH, "months": wanted}
    ).fetchall()
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO billing.erp_cash_status_monthly
                       (month, currency, state, invoices, total, remaining)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                [row[:6] for row in rows],
            )
    return len(rows)


def payment_status_summary(
    conn: Connection[TupleRow], *, since: dt.date | None = None, as_of: dt.date | None = None
) -> list[PaymentStatusRow]:
    """Invoices, totals and what remains, per payment state and currency, for the invoices
    posted since ``since`` (default: the first of the month 12 months before ``as_of``,
    default today). Reads ``billing.erp_cash_status_monthly`` for a month-aligned ``since``
    once the sync has refreshed it; computes directly otherwise."""
    as_of = as_of or dt.date.today()
    since = since or _add_months(_month(as_of), -12)
    if since.day == 1 and refreshed_through(conn) is not None:
        rows = conn.execute(_STATUS_SUMMARY, {"since": since}).fetchall()
    else:
        rows = conn.execute(_STATUS_DIRECT, {"since": since, "months": None}).fetchall()
    merged: dict[tuple[str, str], list[Any]] = {}
    for _month_start, currency, state, n, total, remaining, synced in rows:
        key = (currency.strip(), state)
        acc = merged.setdefault(key, [0, Decimal(0), Decimal(0), None])
        acc[0] += int(n)
        acc[1] += Decimal(total)
        acc[2] += Decimal(remaining)
        if synced is not None and (acc[3] is None or synced > acc[3]):
            acc[3] = synced
    out = [
        PaymentStatusRow(
            state=state,
            currency=currency,
            invoices=n,
            total=_amount(total, currency),
            remaining=_amount(remaining, currency),
            last_synced_at=synced,
        )
        for (currency, state), (n, total, remaining, synced) in merged.items()
    ]
    return sorted(out, key=lambda r: (r.currency, _STATE_ORDER.index(r.state)))


# --------------------------------------------------------------------------- for the page

#: ``/erpsync/insights/{metric}.csv`` names of the cash tables.
CSV_METRICS = ("cash_dso", "cash_overdue", "cash_payment_status")
#: Rows of one CSV download of the per-client table (a few pages' worth is all a page shows;
#: the download takes them all, streamed in pages of this size).
_CSV_PAGE = 5000


def csv_table(
    conn: Connection[TupleRow], metric: str, *, as_of: dt.date, months: int = 24
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``(header, rows)`` of one cash table for ``csv_response`` (``metric`` in
    :data:`CSV_METRICS`)."""
    if metric == "cash_dso":
        return table(dso_by_month(conn, months=months, as_of=as_of))
    if metric == "cash_payment_status":
        return table(payment_status_summary(conn, as_of=as_of))
    if metric == "cash_overdue":
        out: list[ClientOverdue] = []
        while True:
            page = overdue_by_client(conn, as_of=as_of, limit=_CSV_PAGE, offset=len(out))
            out += page
            if len(page) < _CSV_PAGE:
                break
        header, rows = table(out)
        return header or [f.name for f in fields(ClientOverdue)], rows
    raise KeyError(metric)


class CashContext(TypedDict):
    """The template variables of ``templates/_cash.html`` (:func:`cash_context`)."""

    cash_as_of: dt.date
    cash_definitions: dict[str, str]
    cash_dso: list[DsoMonth]
    cash_dso_chart: Markup
    cash_overdue_totals: list[OverdueTotal]
    cash_overdue_charts: list[Markup]
    cash_overdue: list[ClientOverdue]
    cash_status: list[PaymentStatusRow]


def cash_context(
    conn: Connection[TupleRow], *, as_of: dt.date, months: int = 12, clients: int = 50
) -> CashContext:
    """Everything ``templates/_cash.html`` shows, as template variables (``cash_*``)."""
    from erpsync.console.charts import bar_chart, line_chart

    dso = dso_by_month(conn, months=months, as_of=as_of)
    series: dict[str, list[tuple[str, Decimal | None]]] = {}
    for row in dso:
        series.setdefault(row.currency, []).append((row.month, row.dso))
    totals = overdue_totals(conn, as_of=as_of)
    return {
        "cash_as_of": as_of,
        "cash_definitions": {
            "dso": DSO_DEFINITION,
            "overdue": OVERDUE_DEFINITION,
            "status": STATUS_DEFINITION,
        },
        "cash_dso": dso,
        "cash_dso_chart": line_chart(series, title="Days sales outstanding by month", unit="d"),
        "cash_overdue_totals": totals,
        "cash_overdue_charts": [
            bar_chart(t.buckets(), title=f"Receivables by days overdue ({t.currency})")
            for t in totals
        ],
        "cash_overdue": overdue_by_client(conn, as_of=as_of, limit=clients),
        "cash_status": payment_status_summary(conn, as_of=as_of),
    }
