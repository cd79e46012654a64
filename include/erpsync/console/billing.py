"""The billing cockpit's data: per period, client and currency what is ready to bill, on hold
(by reason) and billed; invoice batches and their state; unbilled WIP by age; leakage; the
data-quality blocks in force.

Each function takes an open psycopg connection and a :class:`Filters` and reads only summaries
or indexes, so the page answers in well under a second on the large firm (1,000,000+
``recon.items``; ``erpsync.bench.console`` times it):

* item totals come from ``recon.item_totals`` and, per period, client and currency,
  ``recon.client_period_totals`` (migration 0028), which every reconciliation rewrites in the
  transaction that writes the items, from the sums it computes anyway - never a grouping of
  recon.items per request. WIP (unbilled time and expenses, ready or on hold), its
  age buckets and leakage (approved WIP older than ``recon.settings.leakage_days``) are the
  ``recon.wip`` / ``recon.leakage`` definitions, measured at the latest run's as-of date;
* batches come from ``billing.invoice_batches`` and their invoices (``invoices_batch_idx``,
  ``invoices_period_idx``, ``invoices_account_idx``); a batch's state is its status until it is
  pushed, then what its invoices reached (``held`` when the ERP's totals of one differ from the
  approved ones: an open ``erp_totals_differ`` exception, :mod:`erpsync.invoicing.push`);
* blocks come from ``ops.dq_active_blocks`` (partial index on active blocks).

Amounts are the unrounded sums, rounded once to the currency's minor units (erpsync.money, half
away from zero) - the finance table's rule (:mod:`erpsync.reconcile.report`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypedDict
from urllib.parse import quote

from psycopg import Connection, sql
from psycopg.rows import TupleRow

from erpsync import money
from erpsync.console.db import dicts, one, scalar

__all__ = [
    "AGE_BUCKETS",
    "BATCH_STATES",
    "PAGE_SIZE",
    "TABLES",
    "Filters",
    "as_of",
    "batch_totals",
    "batches",
    "choices",
    "cockpit",
    "csv_table",
    "currency_totals",
    "dq_blocks",
    "leakage",
    "on_hold",
    "on_hold_by_reason",
    "overview",
    "required_actions_url",
    "wip_ageing",
]

#: Rows per page of the long tables (periods x clients x currencies, leakage).
PAGE_SIZE = 50
#: Batches per page (a batch is one row per currency of its invoices).
BATCH_PAGE_SIZE = 20
#: The deepest page served (offset pagination stays cheap on the summary).
MAX_PAGE = 200
#: recon.item_totals.age_bucket -> label (migration 0028).
AGE_BUCKETS = ("0-30 days", "31-60 days", "61-90 days", "over 90 days")
#: A batch's state on the cockpit, in lifecycle order, with its label.
BATCH_STATES = {
    "draft": "draft",
    "dry_run": "dry run",
    "awaiting_approval": "awaiting approval",
    "approved": "approved",
    "rejected": "rejected",
    "pushed": "pushed",
    "posted": "posted",
    "billed_back": "billed back",
    "held": "held",
}
#: The exception a push raises for an invoice whose ERP totals differ from the approved ones
#: (erpsync.invoicing.push.ERP_TOTALS_DIFFER; a test keeps them equal).
HELD_REASON = "erp_totals_differ"
#: The tables the page shows and ``/billing/{table}.csv`` downloads.
TABLES = ("overview", "on_hold", "batches", "batch_totals", "wip", "leakage", "dq_blocks")

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _round(amount: Decimal | None, currency: str | None) -> Decimal | None:
    if amount is None:
        return None
    if not currency:
        return Decimal(amount)
    try:
        return money.round_money(Decimal(amount), str(currency).strip())
    except money.UnknownCurrency:
        return Decimal(amount)


def _cur(value: Any) -> str | None:
    return None if value is None else str(value).strip()


@dataclass(frozen=True)
class Filters:
    """What the finance user narrowed the cockpit to. ``period``: the first day of a month;
    ``client``: a CRM account id (or, for items without a contract, a PSA client id);
    ``currency``: ISO 4217 code; ``page``: 1-based page of the long tables."""

    period: dt.date | None = None
    client: str | None = None
    currency: str | None = None
    page: int = 1

    @classmethod
    def parse(
        cls,
        period: str | None = None,
        client: str | None = None,
        currency: str | None = None,
        page: int | str | None = 1,
    ) -> Filters:
        """From query parameters; ``ValueError`` for a malformed period or currency."""
        p = None
        if period:
            m = _PERIOD.match(period.strip())
            if not m:
                raise ValueError("period must be YYYY-MM")
            p = dt.date(int(m.group(1)), int(m.group(2)), 1)
        c = (currency or "").strip().upper() or None
        if c is not None and not _CURRENCY.match(c):
            raise ValueError("currency must be a three-letter ISO 4217 code")
        try:
            n = int(page or 1)
        except (TypeError, ValueError):
            raise ValueError("page must be a number") from None
        return cls(
            period=p,
            client=(client or "").strip() or None,
            currency=c,
            page=max(1, min(n, MAX_PAGE)),
        )

    @property
    def period_end(self) -> dt.date | None:
        """The first day of the month after ``period``."""
        if self.period is None:
            return None
        y, m = self.period.year + self.period.month // 12, self.period.month % 12 + 1
        return dt.date(y, m, 1)

    @property
    def offset(self) -> int:
        return (self.page - 1) * PAGE_SIZE

    def query(self, **changes: Any) -> dict[str, str]:
        """The filters as query parameters (for links), with ``changes`` applied."""
        values = {
            "period": self.period.strftime("%Y-%m") if self.period else None,
            "client": self.client,
            "currency": self.currency,
            "page": str(self.page) if self.page > 1 else None,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}


@dataclass
class Paged:
    """One page of a long table: ``rows``, how many there are in all, and the page size."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


# ------------------------------------------------------------------ recon.item_totals


def _totals_where(f: Filters, alias: str = "t") -> tuple[sql.Composable, list[Any]]:
    """The filters on the totals tables (only those set: the period one uses their index)."""
    a = sql.Identifier(alias)
    conds: list[sql.Composable] = []
    params: list[Any] = []
    if f.period is not None:
        conds.append(sql.SQL("{}.period_start = %s").format(a))
        params.append(f.period)
    if f.client is not None:
        conds.append(
            sql.SQL(
                "({a}.account_id = %s OR ({a}.account_id IS NULL AND {a}.client_psa_id = %s))"
            ).format(a=a)
        )
        params += [f.client, f.client]
    if f.currency is not None:
        conds.append(sql.SQL("{}.currency = %s").format(a))
        params.append(f.currency)
    if not conds:
        return sql.SQL("true"), params
    return sql.SQL(" AND ").join(conds), params


class LatestRun(TypedDict):
    """The latest finished reconciliation (None before the first) and the leakage threshold."""

    run_id: str | None
    as_of: dt.date | None
    finished_at: dt.datetime | None
    leakage_days: int


def as_of(conn: Connection[TupleRow]) -> LatestRun:
    """The latest finished reconciliation (the totals are its) and the leakage threshold."""
    row = one(
        conn.execute(
            """SELECT r.run_id, r.as_of, r2.finished_at, s.leakage_days
                 FROM recon.settings s
                 LEFT JOIN recon.latest_run r ON true
                 LEFT JOIN recon.runs r2 ON r2.run_id = r.run_id"""
        )
    )
    return {"run_id": row[0], "as_of": row[1], "finished_at": row[2], "leakage_days": row[3]}


def choices(conn: Connection[TupleRow]) -> dict[str, list[str]]:
    """The periods (newest first) and currencies the totals have, for the filter form."""
    periods = [
        r[0].strftime("%Y-%m")
        for r in conn.execute(
            "SELECT DISTINCT period_start FROM recon.item_totals ORDER BY 1 DESC LIMIT 120"
        ).fetchall()
    ]
    currencies = [
        _cur(r[0])
        for r in conn.execute(
            "SELECT DISTINCT currency FROM recon.item_totals WHERE currency IS NOT NULL ORDER BY 1"
        ).fetchall()
    ]
    return {"periods": periods, "currencies": currencies}


def _client_names(
    conn: Connection[TupleRow], accounts: set[str], psa_clients: set[str]
) -> dict[tuple[str, str], str]:
    """Names of the clients on a page (primary-key lookups)."""
    names: dict[tuple[str, str], str] = {}
    if accounts:
        for crm_id, name in conn.execute(
            "SELECT crm_id, legal_name FROM core.clients WHERE crm_id = ANY(%s)", (list(accounts),)
        ).fetchall():
            names[("crm", crm_id)] = name
    if psa_clients:
        for psa_id, name in conn.execute(
            "SELECT psa_id, name FROM core.psa_clients WHERE psa_id = ANY(%s)",
            (list(psa_clients),),
        ).fetchall():
            if name:
                names[("psa", psa_id)] = name
    return names


def _name_rows(conn: Connection[TupleRow], rows: list[dict[str, Any]]) -> None:
    names = _client_names(
        conn,
        {r["account_id"] for r in rows if r["account_id"]},
        {r["client_psa_id"] for r in rows if not r["account_id"] and r["client_psa_id"]},
    )
    for r in rows:
        if r["account_id"]:
            r["client"] = r["account_id"]
            r["client_name"] = names.get(("crm", r["account_id"]), r["account_id"])
        elif r["client_psa_id"]:
            r["client"] = r["client_psa_id"]
            r["client_name"] = names.get(("psa", r["client_psa_id"]), r["client_psa_id"]) + (
                " (no contract)"
            )
        else:
            r["client"] = None
            r["client_name"] = "(no client)"


_COLUMNS = (
    "ready_items, ready_hours, ready_amount, on_hold_items, on_hold_hours, on_hold_amount,"
    " billed_items, billed_hours, billed_amount, wip_amount, leakage_amount"
)
_SUMS = ", ".join(f"sum({c.strip()}) AS {c.strip()}" for c in _COLUMNS.split(","))

_MONEY_KEYS = ("ready_amount", "on_hold_amount", "billed_amount", "wip_amount", "leakage_amount")


def _money_row(row: dict[str, Any], keys: Sequence[str] = _MONEY_KEYS) -> dict[str, Any]:
    cur = row.get("currency")
    for k in keys:
        if k in row:
            row[k] = _round(row[k], cur)
    for k in list(row):
        if k.endswith("_items") and row[k] is None:
            row[k] = 0
    return row


def overview(conn: Connection[TupleRow], f: Filters, *, limit: int | None = PAGE_SIZE) -> Paged:
    """Per period, client and currency: ready, on hold, billed (items, hours, amount), WIP and
    leakage; newest period first (``recon.client_period_totals``: one row per key, filtered by
    period through its index, else read whole - tens of thousands of rows on the large firm).
    ``limit=None``: every row (the CSV)."""
    where, params = _totals_where(f)
    page = sql.SQL(" LIMIT %s OFFSET %s") if limit is not None else sql.SQL("")
    query = sql.SQL(
        "SELECT period_start, account_id, client_psa_id, currency, "  # noqa: S608 - constant SQL, values are bound
        + _COLUMNS
        + "\n  FROM recon.client_period_totals t WHERE {where}\n"
        " ORDER BY period_start DESC, account_id, client_psa_id, currency{page}"
    ).format(where=where, page=page)
    rows = dicts(conn.execute(query, [*params, limit, f.offset] if limit is not None else params))
    for r in rows:
        r["currency"] = _cur(r["currency"])
        _money_row(r)
    _name_rows(conn, rows)
    if limit is None:
        return Paged(rows=rows, total=len(rows), page=1)
    total = scalar(
        conn.execute(
            sql.SQL("SELECT count(*) FROM recon.client_period_totals t WHERE {where}").format(
                where=where
            ),
            params,
        )
    )
    return Paged(rows=rows, total=total, page=f.page)


def currency_totals(conn: Connection[TupleRow], f: Filters) -> list[dict[str, Any]]:
    """The filtered totals per currency (the cockpit's headline figures)."""
    where, params = _totals_where(f)
    cur = conn.execute(
        sql.SQL(
            "SELECT currency, "  # noqa: S608 - constant SQL, values are bound
            + _SUMS
            + "\n  FROM recon.client_period_totals t WHERE {where} GROUP BY 1 ORDER BY 1 NULLS LAST"
        ).format(where=where),
        params,
    )
    out = []
    for row in dicts(cur):
        row["currency"] = _cur(row["currency"])
        out.append(_money_row(row))
    return out


def on_hold_by_reason(conn: Connection[TupleRow], f: Filters) -> list[dict[str, Any]]:
    """On hold per reason and currency (filtered), with the reason's label and owner."""
    where, params = _totals_where(f)
    rows = conn.execute(
        sql.SQL(
            """SELECT t.reason_code, r.label, r.owner, t.currency, sum(t.items), sum(t.hours),
                      sum(t.amount)
                 FROM recon.item_totals t
                 LEFT JOIN recon.reasons r ON r.code = t.reason_code
                WHERE t.state = 'on_hold' AND {where}
                GROUP BY 1, 2, 3, 4, r.precedence
                ORDER BY r.precedence, 4"""
        ).format(where=where),
        params,
    ).fetchall()
    return [
        {
            "reason_code": code,
            "label": label or code,
            "owner": owner,
            "currency": _cur(c),
            "items": n,
            "hours": hours,
            "amount": _round(amount, _cur(c)),
        }
        for code, label, owner, c, n, hours, amount in rows
    ]


def _client_page(
    conn: Connection[TupleRow],
    query: sql.Composed,
    params: list[Any],
    f: Filters,
    limit: int | None,
) -> Paged:
    """One page of per-client money rows (``query`` ends in ``LIMIT %s OFFSET %s`` when
    ``limit`` is set and counts its rows in ``total_rows``): amounts rounded to their currency,
    clients named."""
    if limit is not None:
        params = [*params, limit, f.offset]
    rows = dicts(conn.execute(query, params))
    total = rows[0]["total_rows"] if rows else 0
    for r in rows:
        r.pop("total_rows")
        r["currency"] = _cur(r["currency"])
        r["amount"] = _round(r["amount"], r["currency"])
    _name_rows(conn, rows)
    return Paged(rows=rows, total=total if limit is not None else len(rows), page=f.page)


def on_hold(conn: Connection[TupleRow], f: Filters, *, limit: int | None = PAGE_SIZE) -> Paged:
    """On hold per period, client, currency and reason (the detail of ``on_hold_by_reason``)."""
    where, params = _totals_where(f)
    page = sql.SQL(" LIMIT %s OFFSET %s") if limit is not None else sql.SQL("")
    query = sql.SQL(
        """SELECT t.period_start, t.account_id, t.client_psa_id, t.currency, t.reason_code,
                  sum(t.items) AS items, sum(t.hours) AS hours, sum(t.amount) AS amount,
                  count(*) OVER () AS total_rows
             FROM recon.item_totals t
            WHERE t.state = 'on_hold' AND {where}
            GROUP BY 1, 2, 3, 4, 5
            ORDER BY 1 DESC, 2 NULLS LAST, 3, 4, 5{page}"""
    ).format(where=where, page=page)
    return _client_page(conn, query, params, f, limit)


def wip_ageing(conn: Connection[TupleRow], f: Filters) -> list[dict[str, Any]]:
    """Unbilled WIP per currency and age bucket (``AGE_BUCKETS``), ready and on hold; every
    bucket is listed for each currency, empty ones with zero."""
    where, params = _totals_where(f)
    rows = conn.execute(
        sql.SQL(
            """SELECT currency, age_bucket, sum(items), sum(hours), sum(amount),
                      sum(amount) FILTER (WHERE state = 'on_hold')
                 FROM recon.item_totals t
                WHERE age_bucket IS NOT NULL AND {where}
                GROUP BY 1, 2"""
        ).format(where=where),
        params,
    ).fetchall()
    found = {(_cur(c), b): (n, h, a, held) for c, b, n, h, a, held in rows}
    out = []
    for c in sorted({k[0] for k in found}, key=lambda x: x or ""):
        for b, label in enumerate(AGE_BUCKETS):
            n, h, a, held = found.get((c, b), (0, None, None, None))
            out.append(
                {
                    "currency": c,
                    "bucket": label,
                    "items": n,
                    "hours": h or Decimal(0),
                    "amount": _round(a or Decimal(0), c),
                    "on_hold_amount": _round(held or Decimal(0), c),
                }
            )
    return out


def leakage(conn: Connection[TupleRow], f: Filters, *, limit: int | None = PAGE_SIZE) -> Paged:
    """Leakage (approved WIP older than the threshold) per period, client and currency, the
    largest first within each currency."""
    where, params = _totals_where(f)
    page = sql.SQL(" LIMIT %s OFFSET %s") if limit is not None else sql.SQL("")
    query = sql.SQL(
        """SELECT t.currency, t.period_start, t.account_id, t.client_psa_id,
                  t.leakage_items AS items, t.leakage_hours AS hours, t.leakage_amount AS amount,
                  count(*) OVER () AS total_rows
             FROM recon.client_period_totals t
            WHERE t.leakage_items > 0 AND {where}
            ORDER BY 1, 7 DESC NULLS LAST, 2, 3, 4{page}"""
    ).format(where=where, page=page)
    return _client_page(conn, query, params, f, limit)


# ------------------------------------------------------------------ invoice batches


def required_actions_url(
    airflow_base: str, dag_id: str | None, run_id: str | None, task_id: str | None
) -> str:
    """Airflow's Required Actions page for one approval task, else the list of every pending
    one. Routes of the 3.3.2 UI (``airflow/ui/dist`` bundle: ``path:`required_actions` `` under
    ``dags/:dagId/runs/:runId/tasks/:taskId``, and the browse menu's
    ``/required_actions?response_received=false``)."""
    base = airflow_base.rstrip("/")
    if dag_id and run_id and task_id:
        return (
            f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
            f"/tasks/{quote(task_id, safe='')}/required_actions"
        )
    return f"{base}/required_actions?response_received=false"


def _invoice_where(f: Filters) -> tuple[sql.Composable, list[Any]]:
    conds: list[sql.Composable] = []
    params: list[Any] = []
    if f.period is not None:
        conds.append(sql.SQL("i.period_start >= %s AND i.period_start < %s"))
        params += [f.period, f.period_end]
    if f.client is not None:
        conds.append(sql.SQL("i.account_id = %s"))
        params.append(f.client)
    if f.currency is not None:
        conds.append(sql.SQL("i.currency = %s"))
        params.append(f.currency)
    if not conds:
        return sql.SQL("true"), params
    return sql.SQL(" AND ").join(conds), params


#: Per batch (and currency): its state - the batch status until it is pushed, then what its
#: invoices reached; ``held`` when one has an open ERP-totals exception.
_BATCH_STATES = """
held AS (
    -- the few invoices held now (exceptions_live_uq: reason, entity type, key)
    SELECT e.entity_key FROM ops.exceptions e
     WHERE e.reason_code = %s AND e.entity_type = 'invoice' AND e.status = 'open'
), inv AS (
    SELECT i.batch_id, i.currency, i.status, i.net, i.tax, i.total, i.kind,
           h.entity_key IS NOT NULL AS held
      FROM billing.invoices i
      LEFT JOIN held h ON h.entity_key = i.document_number
     WHERE {where}
), per_batch AS (
    SELECT b.batch_id,
           CASE WHEN b.status IN ('pushing', 'released') THEN
                CASE WHEN bool_or(inv.held) THEN 'held'
                     WHEN bool_and(inv.status = 'billed_back') THEN 'billed_back'
                     WHEN bool_and(inv.status IN ('posted', 'billed_back')) THEN 'posted'
                     ELSE 'pushed' END
                ELSE b.status END AS state
      FROM billing.invoice_batches b
      JOIN inv ON inv.batch_id = b.batch_id
     GROUP BY b.batch_id
)"""


def batches(
    conn: Connection[TupleRow], f: Filters, *, airflow_base: str = "", limit: int | None = PAGE_SIZE
) -> Paged:
    """The invoice batches with invoices in the filter, newest first: one row per batch and
    currency with its state, invoice count and totals; an awaiting batch links to the Required
    Actions page of the task that asks for its approval (from its latest
    ``invoice_batch.approval_requested`` audit row)."""
    where, params = _invoice_where(f)
    page = sql.SQL(" LIMIT %s OFFSET %s") if limit is not None else sql.SQL("")
    query = sql.SQL(
        "WITH"  # noqa: S608 - constant SQL, values are bound
        + _BATCH_STATES
        + """,
page AS (
    SELECT batch_id, state, count(*) OVER () AS total_rows FROM per_batch
     ORDER BY batch_id DESC{page}
)
SELECT b.batch_id, b.kind, b.period_start, b.period_end, b.status, p.state, p.total_rows,
       b.prepared_by, b.prepared_at, b.decided_by, b.decided_at, b.released_at,
       inv.currency, count(*), sum(inv.net), sum(inv.tax), sum(inv.total),
       count(*) FILTER (WHERE inv.held)
  FROM page p
  JOIN billing.invoice_batches b ON b.batch_id = p.batch_id
  JOIN inv ON inv.batch_id = p.batch_id
 GROUP BY b.batch_id, p.state, p.total_rows, inv.currency
 ORDER BY b.batch_id DESC, inv.currency"""
    ).format(where=where, page=page)
    args = [HELD_REASON, *params] + ([limit, (f.page - 1) * limit] if limit is not None else [])
    raw = conn.execute(query, args).fetchall()
    total = raw[0][6] if raw else 0
    awaiting = sorted({str(r[0]) for r in raw if r[5] == "awaiting_approval"})
    asks: dict[str, tuple[str, str, str]] = {}
    if awaiting:
        for entity_id, dag_id, run_id, task_id in conn.execute(
            """SELECT DISTINCT ON (entity_id) entity_id, source_dag_id, source_run_id,
                      source_task_id
                 FROM audit.audit_log
                WHERE entity_type = 'invoice_batch' AND entity_id = ANY(%s)
                  AND action = 'invoice_batch.approval_requested'
                ORDER BY entity_id, audit_id DESC""",
            (awaiting,),
        ).fetchall():
            asks[entity_id] = (dag_id, run_id, task_id)
    rows = []
    for (
        batch_id,
        kind,
        p_start,
        p_end,
        status,
        state,
        _total,
        prepared_by,
        prepared_at,
        decided_by,
        decided_at,
        released_at,
        currency,
        n,
        net,
        tax,
        total_amount,
        held,
    ) in raw:
        c = _cur(currency)
        link = None
        if state == "awaiting_approval":
            link = required_actions_url(airflow_base, *asks.get(str(batch_id), (None,) * 3))
        rows.append(
            {
                "batch_id": batch_id,
                "kind": kind,
                "period_start": p_start,
                "period_end": p_end,
                "status": status,
                "state": state,
                "state_label": BATCH_STATES.get(state, state),
                "prepared_by": prepared_by,
                "prepared_at": prepared_at,
                "decided_by": decided_by,
                "decided_at": decided_at,
                "released_at": released_at,
                "currency": c,
                "invoices": n,
                "held_invoices": held,
                "net": _round(net, c),
                "tax": _round(tax, c),
                "total": _round(total_amount, c),
                "approval_url": link,
            }
        )
    return Paged(
        rows=rows,
        total=total if limit is not None else len({r["batch_id"] for r in rows}),
        page=f.page,
        page_size=limit or PAGE_SIZE,
    )


def batch_totals(conn: Connection[TupleRow], f: Filters) -> list[dict[str, Any]]:
    """Per batch state and currency: batches, invoices and totals (every batch in the filter),
    in lifecycle order."""
    where, params = _invoice_where(f)
    query = sql.SQL(
        "WITH"
        + _BATCH_STATES
        + """
SELECT p.state, inv.currency, count(DISTINCT p.batch_id), count(*), sum(inv.net),
       sum(inv.tax), sum(inv.total)
  FROM per_batch p JOIN inv ON inv.batch_id = p.batch_id
 GROUP BY 1, 2"""
    ).format(where=where)
    order = list(BATCH_STATES)
    rows = []
    for state, currency, n_batches, n_invoices, net, tax, total in conn.execute(
        query, [HELD_REASON, *params]
    ).fetchall():
        c = _cur(currency)
        rows.append(
            {
                "state": state,
                "state_label": BATCH_STATES.get(state, state),
                "currency": c,
                "batches": n_batches,
                "invoices": n_invoices,
                "net": _round(net, c),
                "tax": _round(tax, c),
                "total": _round(total, c),
            }
        )
    rows.sort(
        key=lambda r: (order.index(r["state"]) if r["state"] in order else 99, r["currency"] or "")
    )
    return rows


# ------------------------------------------------------------------ data-quality blocks


def dq_blocks(conn: Connection[TupleRow], f: Filters, *, limit: int = 500) -> list[dict[str, Any]]:
    """The data-quality blocks in force that hold the filtered client's items (all of them
    without a client filter): scope 'all', the client, or one of its contracts."""
    conds = [sql.SQL("true")]
    params: list[Any] = []
    if f.client is not None:
        conds = [
            sql.SQL(
                "(b.scope_type = 'all' OR (b.scope_type = 'client' AND b.scope_key = %s)"
                " OR (b.scope_type = 'contract' AND EXISTS (SELECT 1 FROM core.contracts c"
                " WHERE c.opportunity_id = b.scope_key AND c.account_id = %s)))"
            )
        ]
        params += [f.client, f.client]
    rows = conn.execute(
        sql.SQL(
            """SELECT b.block_id, b.scope_type, b.scope_key, cl.legal_name, b.suite,
                      b.expectation, b.detail, b.created_at, b.updated_at, b.last_run_id
                 FROM ops.dq_active_blocks b
                 LEFT JOIN core.clients cl ON b.scope_type = 'client' AND cl.crm_id = b.scope_key
                WHERE {cond}
                ORDER BY b.created_at, b.block_id
                LIMIT %s"""
        ).format(cond=conds[0]),
        [*params, limit],
    ).fetchall()
    out = []
    for block_id, scope_type, scope_key, name, suite, expectation, detail, since, seen, run in rows:
        text = json.dumps(detail or {}, default=str, sort_keys=True)
        out.append(
            {
                "block_id": block_id,
                "scope_type": scope_type,
                "scope_key": scope_key,
                "scope_name": name or ("every client" if scope_type == "all" else scope_key),
                "suite": suite,
                "expectation": expectation,
                "detail": text if len(text) <= 300 else text[:297] + "...",
                "since": since,
                "last_seen": seen,
                "last_run_id": run,
            }
        )
    return out


# ------------------------------------------------------------------ CSV


@dataclass
class Csv:
    """One table as a CSV: its header and rows."""

    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)


def _period(d: dt.date | None) -> str:
    return d.strftime("%Y-%m") if d else ""


#: Per download: (header, row key) per column; a key ending in "@month" is a date shown as YYYY-MM.
_CSV_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "overview": [
        ("period", "period_start@month"),
        ("client_id", "client"),
        ("client", "client_name"),
        ("currency", "currency"),
        *[
            (f"{state}_{what}", f"{state}_{what}")
            for state in ("ready", "on_hold", "billed")
            for what in ("items", "hours", "amount")
        ],
        ("wip_amount", "wip_amount"),
        ("leakage_amount", "leakage_amount"),
    ],
    "on_hold": [
        ("period", "period_start@month"),
        ("client_id", "client"),
        ("client", "client_name"),
        ("currency", "currency"),
        ("reason_code", "reason_code"),
        ("items", "items"),
        ("hours", "hours"),
        ("amount", "amount"),
    ],
    "batches": [
        (key, key)
        for key in (
            "batch_id",
            "kind",
            "period_start",
            "period_end",
            "state",
            "status",
            "currency",
            "invoices",
            "held_invoices",
            "net",
            "tax",
            "total",
            "prepared_by",
            "prepared_at",
            "decided_by",
            "decided_at",
            "released_at",
        )
    ],
    "batch_totals": [
        (key, key) for key in ("state", "currency", "batches", "invoices", "net", "tax", "total")
    ],
    "wip": [
        ("currency", "currency"),
        ("age_bucket", "bucket"),
        ("items", "items"),
        ("hours", "hours"),
        ("amount", "amount"),
        ("on_hold_amount", "on_hold_amount"),
    ],
    "leakage": [
        ("currency", "currency"),
        ("period", "period_start@month"),
        ("client_id", "client"),
        ("client", "client_name"),
        ("items", "items"),
        ("hours", "hours"),
        ("amount", "amount"),
    ],
    "dq_blocks": [
        (key, key)
        for key in (
            "block_id",
            "scope_type",
            "scope_key",
            "scope_name",
            "suite",
            "expectation",
            "detail",
            "since",
            "last_seen",
            "last_run_id",
        )
    ],
}


def _csv_rows(conn: Connection[TupleRow], table: str, f: Filters) -> list[dict[str, Any]]:
    if table == "overview":
        return overview(conn, f, limit=None).rows
    if table == "on_hold":
        return on_hold(conn, f, limit=None).rows
    if table == "batches":
        return batches(conn, f, limit=None).rows
    if table == "batch_totals":
        return batch_totals(conn, f)
    if table == "wip":
        return wip_ageing(conn, f)
    if table == "leakage":
        return leakage(conn, f, limit=None).rows
    if table == "dq_blocks":
        return dq_blocks(conn, f, limit=100_000)
    raise KeyError(table)


def csv_table(conn: Connection[TupleRow], table: str, f: Filters) -> Csv:
    """Every row of ``table`` (one of ``TABLES``) under the filters, for the download."""
    columns = _CSV_COLUMNS[table]
    out = Csv([header for header, _ in columns])
    for r in _csv_rows(conn, table, f):
        out.rows.append(
            [
                _period(r[key.removesuffix("@month")]) if key.endswith("@month") else r[key]
                for _, key in columns
            ]
        )
    return out


# ------------------------------------------------------------------ the page


class Cockpit(TypedDict):
    """The cockpit page's template variables (:func:`cockpit`)."""

    run: LatestRun
    choices: dict[str, list[str]]
    totals: list[dict[str, Any]]
    overview: Paged
    reasons: list[dict[str, Any]]
    wip: list[dict[str, Any]]
    leakage: Paged
    batches: Paged
    batch_totals: list[dict[str, Any]]
    blocks: list[dict[str, Any]]


def cockpit(
    conn: Connection[TupleRow], f: Filters, *, airflow_base: str = "", batch_page: int = 1
) -> Cockpit:
    """Everything the cockpit page shows, under the filters (the benchmark times this): the
    latest run, filter choices, totals per currency, the period x client x currency table (page
    ``f.page``), on hold by reason, WIP by age, leakage (first page), batches (page
    ``batch_page``) with their totals per state, and the blocks in force."""
    batch_filters = Filters(
        period=f.period,
        client=f.client,
        currency=f.currency,
        page=max(1, min(int(batch_page or 1), MAX_PAGE)),
    )
    first = Filters(period=f.period, client=f.client, currency=f.currency)
    return {
        "run": as_of(conn),
        "choices": choices(conn),
        "totals": currency_totals(conn, f),
        "overview": overview(conn, f),
        "reasons": on_hold_by_reason(conn, f),
        "wip": wip_ageing(conn, f),
        "leakage": leakage(conn, first),
        "batches": batches(conn, batch_filters, airflow_base=airflow_base, limit=BATCH_PAGE_SIZE),
        "batch_totals": batch_totals(conn, f),
        "blocks": dq_blocks(conn, f, limit=100),
    }
