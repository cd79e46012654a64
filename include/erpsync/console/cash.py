"""Cash on the process-intelligence page: payment status, DSO and overdue receivables.

Read-only functions over what :func:`erpsync.invoicing.payment_status.sync_payment_status`
synced from Business Central (migration 0026: ``billing.erp_invoice_status`` and the dated
``billing.erp_receivable_history``). Each takes an open psycopg connection and returns
dataclasses; money stays :class:`~decimal.Decimal` and is never added across currencies.
Only invoices erpsync pushed are counted (the ERP's other invoices are not the pack's).

Speed: one row per pushed invoice (tens of thousands on the large firm, not the million recon
items); the month-end and as-of lookups use the partial index on the periods that owe
something, the billings the posting-date index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from decimal import ROUND_HALF_UP, Decimal

from erpsync.money import round_money

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
    "nothing paid), partly paid (open, part of it paid), paid, canceled (a credit memo "
    "canceled it), corrective."
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


def table(items: Sequence) -> tuple[list[str], list[tuple]]:
    """``(header, rows)`` of a list of these dataclasses, for ``csv_response``."""
    if not items:
        return [], []
    return [f.name for f in fields(items[0])], [astuple(i) for i in items]


def _amount(value, currency: str) -> Decimal:
    """A stored amount (numeric(20, 4)) shown with its currency's minor units; exact, since
    every stored amount is already rounded to them."""
    return round_money(Decimal(value), currency.strip())


def _ratio_days(receivables: Decimal, billings: Decimal, days: int) -> Decimal | None:
    if not billings:
        return None
    return (receivables / billings * days).quantize(_CENT, rounding=ROUND_HALF_UP)


_DSO = """
WITH m AS (
    SELECT g::date AS month_start,
           least((g + interval '1 month' - interval '1 day')::date, %(as_of)s) AS month_end,
           (g - interval '2 months')::date AS window_start
      FROM generate_series(
               date_trunc('month', %(as_of)s::date) - (%(months)s - 1) * interval '1 month',
               date_trunc('month', %(as_of)s::date),
               interval '1 month') AS g
),
owed AS (
    SELECT m.month_start, s.currency, sum(h.remaining_amount) AS receivables
      FROM m
      JOIN billing.erp_receivable_history h
        ON h.remaining_amount <> 0
       AND h.valid_from <= m.month_end
       AND (h.valid_to IS NULL OR h.valid_to > m.month_end)
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
SELECT m.month_start, k.currency, coalesce(o.receivables, 0), coalesce(b.billings, 0),
       m.month_end - m.window_start + 1
  FROM m
  JOIN (SELECT month_start, currency FROM owed
        UNION SELECT month_start, currency FROM billed) AS k USING (month_start)
  LEFT JOIN owed o USING (month_start, currency)
  LEFT JOIN billed b USING (month_start, currency)
 ORDER BY m.month_start, k.currency
"""


def dso_by_month(conn, *, months: int = 12, as_of: dt.date) -> list[DsoMonth]:
    """DSO per month and currency for the ``months`` months up to ``as_of``'s month (formula
    in :data:`DSO_DEFINITION` and migration 0026). Months with neither receivables nor
    billings in a currency have no row."""
    if months < 1:
        raise ValueError("months must be at least 1")
    rows = conn.execute(_DSO, {"as_of": as_of, "months": months}).fetchall()
    return [
        DsoMonth(
            month=month.strftime("%Y-%m"),
            currency=currency.strip(),
            receivables=_amount(receivables, currency),
            billings=_amount(billings, currency),
            days=int(days),
            dso=_ratio_days(Decimal(receivables), Decimal(billings), int(days)),
        )
        for month, currency, receivables, billings, days in rows
    ]


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

_OVERDUE = (
    _OWING
    + """
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
)


_TOTALS = (
    _OWING
    + """
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
)


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


def overdue_totals(conn, *, as_of: dt.date) -> list[OverdueTotal]:
    """All clients together, per currency: what is owed on ``as_of`` by days overdue."""
    rows = conn.execute(_TOTALS, {"as_of": as_of}).fetchall()
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
    conn, *, as_of: dt.date, limit: int = 100, offset: int = 0
) -> list[ClientOverdue]:
    """What each client owes on ``as_of`` per currency, by days overdue (due date to
    ``as_of``), most overdue first within each currency; one page of ``limit`` rows."""
    rows = conn.execute(_OVERDUE, {"as_of": as_of, "limit": limit, "offset": offset}).fetchall()
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

_SUMMARY = f"""
SELECT {_STATE} AS state, currency, count(*), sum(total_incl_tax), sum(remaining_amount),
       max(synced_at)
  FROM billing.erp_invoice_status
 WHERE posting_date >= %(since)s
 GROUP BY 1, 2
"""  # noqa: S608 - _STATE is a constant, values are parameters


def payment_status_summary(
    conn, *, since: dt.date | None = None, as_of: dt.date | None = None
) -> list[PaymentStatusRow]:
    """Invoices, totals and what remains, per payment state and currency, for the invoices
    posted since ``since`` (default: 12 months before ``as_of``, default today)."""
    as_of = as_of or dt.date.today()
    since = since or as_of.replace(year=as_of.year - 1, day=1)
    rows = conn.execute(_SUMMARY, {"since": since}).fetchall()
    out = [
        PaymentStatusRow(
            state=state,
            currency=currency.strip(),
            invoices=int(n),
            total=_amount(total, currency),
            remaining=_amount(remaining, currency),
            last_synced_at=synced,
        )
        for state, currency, n, total, remaining, synced in rows
    ]
    return sorted(out, key=lambda r: (r.currency, _STATE_ORDER.index(r.state)))


# --------------------------------------------------------------------------- for the page

#: ``/erpsync/insights/{metric}.csv`` names of the cash tables.
CSV_METRICS = ("cash_dso", "cash_overdue", "cash_payment_status")
#: Rows of one CSV download of the per-client table (a few pages' worth is all a page shows;
#: the download takes them all, streamed in pages of this size).
_CSV_PAGE = 5000


def csv_table(
    conn, metric: str, *, as_of: dt.date, months: int = 24
) -> tuple[list[str], list[tuple]]:
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


def cash_context(conn, *, as_of: dt.date, months: int = 12, clients: int = 50) -> dict:
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
