"""Process intelligence: where the time between "signed" and "invoiced" goes.

One registry (:data:`METRICS`) of the metrics the insights page shows. Each has a key (its URL
and CSV name), a title, a one-sentence definition (formula, source, unit) shown on the page, a
unit, and a function ``(conn, *, months, as_of) -> list[MonthValue]`` that computes its trend by
month in SQL from the warehouse (the approval cycle time takes a SQLAlchemy session on Airflow's
metadata database instead of ``conn``: it reads Airflow's human-in-the-loop records).

Definitions follow docs/reference/finance-ui-research.md section 3 (sources there: IRIS
Practice Engine "cost turnaround", Kantata/LeanLaw WIP days, kpidepot approval cycle time and
invoice exception rate, bidsharp/ruddr realization). Where two definitions exist, the one chosen
is the one stated in :attr:`Metric.definition`.

Speed (page well under 1 s on a firm with over 1,000,000 reconciled items): nothing here
aggregates ``recon.items`` per request. The item-level metrics read the monthly summaries of
migration 0029 (``recon.monthly_items``, ``recon.monthly_reconciled``,
``billing.monthly_invoice_lag``), rebuilt whole by :func:`refresh_summaries` at the end of the
reconciliation task (when it recomputed something) and of the ERP push; the others read small
tables (contracts, invoices posted in the window, exceptions in the window, HITL records)
through indexes.

Percentiles are ``percentile_cont`` (linear interpolation between the closest ranks, as
PostgreSQL's ``percentile_cont`` and numpy's default). Ratios and days are Decimals, rounded half
away from zero (:data:`erpsync.money.ROUNDING`) to two decimals; amounts converted to EUR use the
firm's fixed rates ``recon.currencies.per_eur`` (currencies without one are left out). Months are
calendar months in UTC.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from psycopg import Connection
from psycopg.rows import TupleRow

from erpsync.console.db import one, scalar
from erpsync.money import ROUNDING

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.orm import Session

__all__ = [
    "METRICS",
    "AgeingRow",
    "Metric",
    "MonthValue",
    "PageData",
    "approval_cycle_time",
    "exception_ageing",
    "exception_rate",
    "exception_resolution",
    "last_refresh",
    "leakage",
    "month_window",
    "onboarding_cycle_time",
    "page_data",
    "percentile",
    "realization",
    "refresh_summaries",
    "rework",
    "time_to_invoice",
    "weighted_percentile",
    "wip_days",
]

TWO = Decimal("0.01")
HUNDRED = Decimal(100)
DAY_SECONDS = Decimal(86400)
#: The DAGs whose human-in-the-loop tasks approve invoice batches, and their task ids
#: (erpsync.airflow.approval_task.ask_task_id: approve_batch, approve_batch_2, ...).
APPROVAL_DAGS = ("erpsync_invoice_batches", "erpsync_milestone_billing")
APPROVAL_TASK_PREFIX = "approve_batch"
#: Age buckets of open exceptions, in days since first seen (upper bounds; None: no bound).
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("0-7 days", 7),
    ("8-30 days", 30),
    ("31-90 days", 90),
    ("over 90 days", None),
)


@dataclass(frozen=True)
class MonthValue:
    """One month of a metric: ``values`` are the charted series (in the metric's unit, None when
    the month has nothing to measure), ``count`` how many things were measured, ``extra`` the
    table-only columns (counts and EUR amounts)."""

    month: str  # "2026-11"
    values: dict[str, Decimal | None]
    count: int = 0
    extra: dict[str, Decimal | int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    definition: str
    unit: str
    series: tuple[str, ...]
    compute: Callable[..., list[MonthValue]]
    extra: tuple[str, ...] = ()
    #: "warehouse": compute(conn, ...); "airflow": compute(session, ...) on Airflow's metadata DB
    source: str = "warehouse"
    #: an ``extra`` column also drawn as bars (e.g. the leakage amount)
    bar_extra: str | None = None
    bar_unit: str = ""


# ---------------------------------------------------------------------------------- helpers


def _q(value: Decimal | None, quantum: Decimal = TWO) -> Decimal | None:
    return None if value is None else value.quantize(quantum, rounding=ROUNDING)


def _ratio(num: Decimal | None, den: Decimal | None, scale: Decimal = HUNDRED) -> Decimal | None:
    if num is None or not den:
        return None
    return _q(Decimal(num) * scale / Decimal(den))


def month_window(as_of: dt.date, months: int) -> list[dt.date]:
    """The first days of the ``months`` calendar months ending with ``as_of``'s, oldest first."""
    if months < 1:
        raise ValueError("months must be at least 1")
    y, m = as_of.year, as_of.month
    out = []
    for _ in range(months):
        out.append(dt.date(y, m, 1))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out[::-1]


def _next_month(d: dt.date) -> dt.date:
    return dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _label(d: dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def _bounds(as_of: dt.date, months: int) -> tuple[list[dt.date], dt.datetime, dt.datetime]:
    window = month_window(as_of, months)
    start = dt.datetime.combine(window[0], dt.time(), dt.UTC)
    end = dt.datetime.combine(_next_month(window[-1]), dt.time(), dt.UTC)
    return window, start, end


def percentile(values: Sequence[Decimal], p: Decimal | str) -> Decimal | None:
    """``percentile_cont(p)`` of ``values``: linear interpolation between the closest ranks."""
    return weighted_percentile([(v, 1) for v in values], p)


def weighted_percentile(counted: Iterable[tuple[Decimal, int]], p: Decimal | str) -> Decimal | None:
    """``percentile_cont(p)`` of a histogram (value, how many times), without expanding it."""
    pairs = sorted((Decimal(v), int(n)) for v, n in counted if n > 0)
    total = sum(n for _v, n in pairs)
    if not total:
        return None
    rank = Decimal(p) * (total - 1)  # 0-based position in the expanded, sorted list
    low = int(rank)  # floor (rank >= 0)
    frac = rank - low

    def at(position: int) -> Decimal:
        seen = 0
        for v, n in pairs:
            seen += n
            if position < seen:
                return v
        return pairs[-1][0]

    lo = at(low)
    return lo if frac == 0 else lo + (at(low + 1) - lo) * frac


def _per_month(rows: Iterable[tuple[dt.date, Any]]) -> dict[dt.date, list[Any]]:
    out: dict[dt.date, list[Any]] = {}
    for month, value in rows:
        out.setdefault(month, []).append(value)
    return out


def _durations(
    window: list[dt.date], rows: Iterable[tuple[dt.date, Decimal]], unit_seconds: Decimal
) -> list[MonthValue]:
    """Median and p90 per month of (month, seconds) rows, in ``unit_seconds`` units."""
    by_month = _per_month(rows)
    out = []
    for m in window:
        values = [Decimal(s) / unit_seconds for s in by_month.get(m, [])]
        out.append(
            MonthValue(
                _label(m),
                {"median": _q(percentile(values, "0.5")), "p90": _q(percentile(values, "0.9"))},
                len(values),
            )
        )
    return out


# ---------------------------------------------------------------------------------- metrics


def onboarding_cycle_time(
    conn: Connection[TupleRow], *, months: int, as_of: dt.date
) -> list[MonthValue]:
    """Per contract (opportunity): first seen closed-won (the earliest ``core.contracts.created_at``
    of its versions: when project setup first read it) to project ready (the earliest
    ``completed_at``: every setup step done); by month of ready; median and p90 in days."""
    window, start, end = _bounds(as_of, months)
    rows = conn.execute(
        """SELECT date_trunc('month', ready AT TIME ZONE 'UTC')::date,
                  extract(epoch FROM ready - won)
             FROM (SELECT opportunity_id, min(created_at) AS won, min(completed_at) AS ready
                     FROM core.contracts
                    GROUP BY opportunity_id) c
            WHERE ready >= %s AND ready < %s""",
        (start, end),
    ).fetchall()
    return _durations(window, rows, DAY_SECONDS)


def time_to_invoice(conn: Connection[TupleRow], *, months: int, as_of: dt.date) -> list[MonthValue]:
    """Per billed time entry and expense: work date to the UTC day its invoice was posted in
    the ERP (``billing.invoice_push.posted_at``); by month of posting; median and p90 days
    (summary ``billing.monthly_invoice_lag``)."""
    window, _start, _end = _bounds(as_of, months)
    rows = conn.execute(
        """SELECT posted_month, lag_days, items FROM billing.monthly_invoice_lag
            WHERE posted_month >= %s AND posted_month <= %s""",
        (window[0], window[-1]),
    ).fetchall()
    hist: dict[dt.date, list[tuple[Decimal, int]]] = {}
    for month, lag, n in rows:
        hist.setdefault(month, []).append((Decimal(lag), int(n)))
    out = []
    for m in window:
        h = hist.get(m, [])
        out.append(
            MonthValue(
                _label(m),
                {
                    "median": _q(weighted_percentile(h, "0.5")),
                    "p90": _q(weighted_percentile(h, "0.9")),
                },
                sum(n for _v, n in h),
            )
        )
    return out


def approval_cycle_time(session: Session, *, months: int, as_of: dt.date) -> list[MonthValue]:
    """Per approval question of the billing DAGs (Airflow ``hitl_detail`` of the current try,
    ``hitl_detail_history`` of earlier tries): asked (``created_at``) to answered by a person
    (``responded_at`` with a ``responded_by`` user); by month of the answer; median and p90
    hours. Questions closed by the response timeout (the scheduler applies the defaults and sets
    ``responded_by = None``, airflow/jobs/scheduler_job_runner.py) are counted apart, not timed.

    Asked: the record's ``created_at``, or the try's ``start_date`` when later (a re-asked
    try keeps the first ask's record).

    ``session``: a SQLAlchemy session on Airflow's metadata DB. Read through Airflow's own models
    (airflow/models/hitl.py, hitl_history.py, 3.3.2), so the columns' types apply on any backend
    (UtcDateTime gives aware datetimes; JSON ``null`` and SQL NULL both read as None):
    hitl_detail.ti_id -> task_instance.id; hitl_detail_history.ti_history_id ->
    task_instance_history.task_instance_id (the earlier try's own id)."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.hitl_history import HITLDetailHistory
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from sqlalchemy import Select, select, union_all
    from sqlalchemy.orm import InstrumentedAttribute

    window, start, end = _bounds(as_of, months)

    def asks(
        hitl: type[HITLDetail] | type[HITLDetailHistory],
        ti: type[TaskInstance] | type[TaskInstanceHistory],
        key: InstrumentedAttribute[uuid.UUID],
        ti_key: InstrumentedAttribute[uuid.UUID],
    ) -> Select[*tuple[Any, ...]]:
        return (
            select(hitl.created_at, ti.start_date, hitl.responded_at, hitl.responded_by)
            .join(ti, ti_key == key)
            .where(
                ti.dag_id.in_(APPROVAL_DAGS),
                ti.task_id.like(APPROVAL_TASK_PREFIX + "%"),
                hitl.responded_at >= start,
                hitl.responded_at < end,
            )
        )

    rows = session.execute(
        union_all(
            asks(HITLDetail, TaskInstance, HITLDetail.ti_id, TaskInstance.id),
            asks(
                HITLDetailHistory,
                TaskInstanceHistory,
                HITLDetailHistory.ti_history_id,
                TaskInstanceHistory.task_instance_id,
            ),
        )
    ).fetchall()
    answered: list[tuple[dt.date, Decimal]] = []
    timed_out: dict[dt.date, int] = {}
    for created_at, started, answered_at, responded_by in rows:
        # a cleared and re-run try keeps the first ask's record (its ti_id follows the task
        # instance's new id: ON UPDATE CASCADE; upsert_hitl_detail only clears the response,
        # airflow/api_fastapi/execution_api/routes/hitl.py), so the try asked when it started
        # (start_date survives the deferral: execution_api/routes/task_instances.py ti_run)
        asked = max(created_at, started) if started is not None else created_at
        month = answered_at.astimezone(dt.UTC).date().replace(day=1)
        if responded_by:
            micro = (answered_at - asked) // dt.timedelta(microseconds=1)
            answered.append((month, Decimal(micro) / Decimal(1_000_000)))
        else:
            timed_out[month] = timed_out.get(month, 0) + 1
    out = _durations(window, answered, Decimal(3600))
    return [
        MonthValue(v.month, v.values, v.count, {"timed_out": timed_out.get(m, 0)})
        for v, m in zip(out, window, strict=True)
    ]


def _recon_reasons(conn: Connection[TupleRow]) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT code FROM recon.reasons WHERE raises_exception ORDER BY precedence"
        ).fetchall()
    ]


def exception_rate(conn: Connection[TupleRow], *, months: int, as_of: dt.date) -> list[MonthValue]:
    """Exceptions the reconciliation raised in the month (``ops.exceptions`` first seen then,
    reasons of ``recon.reasons`` that raise one) per 100 items it reconciled for the first time
    that month (``recon.monthly_reconciled``); in total and per reason; percent."""
    window, start, end = _bounds(as_of, months)
    reasons = _recon_reasons(conn)
    items: dict[dt.date, Decimal] = dict(
        conn.execute(
            """SELECT run_month, sum(items) FROM recon.monthly_reconciled
                WHERE run_month >= %s AND run_month <= %s GROUP BY 1""",
            (window[0], window[-1]),
        ).fetchall()
    )
    raised: dict[dt.date, dict[str, int]] = {}
    for month, reason, n in conn.execute(
        """SELECT date_trunc('month', first_seen_at AT TIME ZONE 'UTC')::date, reason_code, count(*)
             FROM ops.exceptions
            WHERE first_seen_at >= %s AND first_seen_at < %s AND reason_code = ANY(%s)
            GROUP BY 1, 2""",
        (start, end, reasons),
    ).fetchall():
        raised.setdefault(month, {})[reason] = int(n)
    out = []
    for m in window:
        per = raised.get(m, {})
        den = items.get(m)
        values: dict[str, Decimal | None] = {"all reasons": _ratio(Decimal(sum(per.values())), den)}
        for reason in sorted(per, key=lambda r: (-per[r], r)):
            values[reason] = _ratio(Decimal(per[reason]), den)
        out.append(
            MonthValue(
                _label(m),
                values,
                sum(per.values()),
                {"items_reconciled": int(den or 0)},
            )
        )
    return out


def exception_resolution(
    conn: Connection[TupleRow], *, months: int, as_of: dt.date
) -> list[MonthValue]:
    """Exceptions resolved in the month (fixed at the source, ``status = 'resolved'``; waived
    ones are not): average days from first seen to resolved (``ops.exceptions``)."""
    window, start, end = _bounds(as_of, months)
    rows = dict(
        (m, (n, s))
        for m, n, s in conn.execute(
            """SELECT date_trunc('month', resolved_at AT TIME ZONE 'UTC')::date, count(*),
                      sum(extract(epoch FROM resolved_at - first_seen_at))
                 FROM ops.exceptions
                WHERE resolved_at >= %s AND resolved_at < %s AND status = 'resolved'
                GROUP BY 1""",
            (start, end),
        ).fetchall()
    )
    out = []
    for m in window:
        n, seconds = rows.get(m, (0, None))
        avg = None if not n else _q(Decimal(seconds) / DAY_SECONDS / n)
        out.append(MonthValue(_label(m), {"average days to resolve": avg}, int(n)))
    return out


@dataclass(frozen=True)
class AgeingRow:
    reason_code: str
    open: int
    buckets: dict[str, int]
    resolved_in_window: int
    average_days_to_resolve: Decimal | None


def exception_ageing(conn: Connection[TupleRow], *, months: int, as_of: dt.date) -> list[AgeingRow]:
    """Per reason: open exceptions by age (days from first seen to ``as_of``, buckets
    :data:`AGE_BUCKETS`) and the average days to resolve those resolved in the window."""
    _window, start, end = _bounds(as_of, months)
    bounds = [b for _label_, b in AGE_BUCKETS]
    by_reason: dict[str, AgeingRow] = {}
    for reason, n, *counts in conn.execute(
        """SELECT reason_code, count(*),
                  count(*) FILTER (WHERE age <= %s),
                  count(*) FILTER (WHERE age > %s AND age <= %s),
                  count(*) FILTER (WHERE age > %s AND age <= %s),
                  count(*) FILTER (WHERE age > %s)
             FROM (SELECT reason_code,
                          %s::date - (first_seen_at AT TIME ZONE 'UTC')::date AS age
                     FROM ops.exceptions WHERE status = 'open') o
            GROUP BY 1""",
        (bounds[0], bounds[0], bounds[1], bounds[1], bounds[2], bounds[2], as_of),
    ).fetchall():
        by_reason[reason] = AgeingRow(
            reason,
            int(n),
            {label: int(c) for (label, _b), c in zip(AGE_BUCKETS, counts, strict=True)},
            0,
            None,
        )
    for reason, n, seconds in conn.execute(
        """SELECT reason_code, count(*), sum(extract(epoch FROM resolved_at - first_seen_at))
             FROM ops.exceptions
            WHERE resolved_at >= %s AND resolved_at < %s AND status = 'resolved'
            GROUP BY 1""",
        (start, end),
    ).fetchall():
        row = by_reason.get(reason) or AgeingRow(reason, 0, {b: 0 for b, _ in AGE_BUCKETS}, 0, None)
        by_reason[reason] = AgeingRow(
            reason,
            row.open,
            row.buckets,
            int(n),
            _q(Decimal(seconds) / DAY_SECONDS / n),
        )
    return sorted(by_reason.values(), key=lambda r: (-r.open, r.reason_code))


def rework(conn: Connection[TupleRow], *, months: int, as_of: dt.date) -> list[MonthValue]:
    """Credit notes posted in the ERP in the month per 100 invoices posted in it
    (``billing.invoices.kind``, posting time ``billing.invoice_push.posted_at``); percent."""
    window, start, end = _bounds(as_of, months)
    rows = {
        m: (int(inv), int(cn))
        for m, inv, cn in conn.execute(
            """SELECT date_trunc('month', p.posted_at AT TIME ZONE 'UTC')::date,
                      count(*) FILTER (WHERE i.kind = 'invoice'),
                      count(*) FILTER (WHERE i.kind = 'credit_note')
                 FROM billing.invoice_push p
                 JOIN billing.invoices i ON i.invoice_id = p.invoice_id
                WHERE p.posted_at >= %s AND p.posted_at < %s
                GROUP BY 1""",
            (start, end),
        ).fetchall()
    }
    out = []
    for m in window:
        inv, cn = rows.get(m, (0, 0))
        out.append(
            MonthValue(
                _label(m),
                {"credit notes per 100 invoices": _ratio(Decimal(cn), Decimal(inv))},
                inv + cn,
                {"invoices": inv, "credit_notes": cn},
            )
        )
    return out


def _eur_rows(conn: Connection[TupleRow], sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Summary rows whose amounts the query converts to EUR: ``amount / c.per_eur``, joined
    ``recon.currencies c`` (currencies without a rate drop out)."""
    return conn.execute(sql, params).fetchall()


def realization(conn: Connection[TupleRow], *, months: int, as_of: dt.date) -> list[MonthValue]:
    """Billed time's value (hours x the rate it was billed at) / (the same hours x the person's
    standard rate: the billable rate card in ``core.rate_cards`` on the work day); by work month,
    both in EUR; time without a rate card is left out; percent (summary
    ``recon.monthly_items``)."""
    window, _s, _e = _bounds(as_of, months)
    rows = {
        m: (hours, billed, std)
        for m, hours, billed, std in _eur_rows(
            conn,
            """SELECT m.work_month, sum(m.std_hours), sum(m.std_billed / c.per_eur),
                       sum(m.std_amount / c.per_eur)
                  FROM recon.monthly_items m
                  JOIN recon.currencies c ON c.code = m.currency AND c.per_eur IS NOT NULL
                 WHERE m.work_month >= %s AND m.work_month <= %s AND m.item_type = 'time'
                   AND m.state = 'billed' AND m.std_amount IS NOT NULL
                 GROUP BY 1""",
            (window[0], window[-1]),
        )
    }
    out = []
    for m in window:
        hours, billed, std = rows.get(m, (None, None, None))
        out.append(
            MonthValue(
                _label(m),
                {"realization": _ratio(billed, std)},
                0,
                {"hours": hours, "billed_eur": _q(billed), "standard_eur": _q(std)},
            )
        )
    return out


def wip_days(conn: Connection[TupleRow], *, months: int, as_of: dt.date) -> list[MonthValue]:
    """Unbilled WIP at the month's end (time and expenses worked by then, ready or on hold now,
    or billed after that month) / average daily billings over the 3 months ending then (time and
    expenses posted, per calendar day up to ``as_of``); both in EUR; days (summary
    ``recon.monthly_items``)."""
    window, _s, _e = _bounds(as_of, months)
    first = month_window(window[0], 3)[0]
    rows = _eur_rows(
        conn,
        """SELECT m.work_month, m.state, m.billed_month, sum(m.amount / c.per_eur)
              FROM recon.monthly_items m
              JOIN recon.currencies c ON c.code = m.currency AND c.per_eur IS NOT NULL
             WHERE m.item_type IN ('time', 'expense')
               AND (m.state IN ('ready', 'on_hold')
                    OR (m.state = 'billed' AND m.billed_month >= %s))
               AND m.work_month <= %s
             GROUP BY 1, 2, 3""",
        (first, window[-1]),
    )
    out = []
    for m in window:
        wip = Decimal(0)
        billings = Decimal(0)
        three = month_window(m, 3)
        for work_month, state, billed_month, eur in rows:
            eur = eur or Decimal(0)
            if work_month <= m and (
                state in ("ready", "on_hold") or (billed_month is not None and billed_month > m)
            ):
                wip += eur
            if billed_month is not None and three[0] <= billed_month <= m:
                billings += eur
        last_day = min(_next_month(m) - dt.timedelta(days=1), as_of)
        days = (last_day - three[0]).days + 1
        daily = billings / days if days > 0 else Decimal(0)
        out.append(
            MonthValue(
                _label(m),
                {"WIP days": _q(wip / daily) if daily else None},
                0,
                {"wip_eur": _q(wip), "billings_3m_eur": _q(billings), "days": days},
            )
        )
    return out


def leakage(conn: Connection[TupleRow], *, months: int, as_of: dt.date) -> list[MonthValue]:
    """By work month: leakage (``recon.leakage`` at the latest reconciliation: approved,
    unbilled billable time and expenses older than ``recon.settings.leakage_days``) in EUR, and
    its share of the potential revenue (the month's billable time and expenses: ready, on hold
    or billed); percent (summary ``recon.monthly_items``)."""
    window, _s, _e = _bounds(as_of, months)
    rows = {
        m: (lk, pot)
        for m, lk, pot in _eur_rows(
            conn,
            """SELECT m.work_month, sum(m.leakage_amount / c.per_eur),
                       sum(m.amount / c.per_eur)
                  FROM recon.monthly_items m
                  JOIN recon.currencies c ON c.code = m.currency AND c.per_eur IS NOT NULL
                 WHERE m.work_month >= %s AND m.work_month <= %s
                   AND m.item_type IN ('time', 'expense')
                   AND m.state IN ('ready', 'on_hold', 'billed')
                 GROUP BY 1""",
            (window[0], window[-1]),
        )
    }
    out = []
    for m in window:
        lk, pot = rows.get(m, (None, None))
        lk = (lk or Decimal(0)) if pot is not None else None
        out.append(
            MonthValue(
                _label(m),
                {"share of potential revenue": _ratio(lk, pot)},
                0,
                {"leakage_eur": _q(lk), "potential_eur": _q(pot)},
            )
        )
    return out


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric(
            "onboarding",
            "Onboarding cycle time",
            "Days from a contract's closed-won opportunity first read by project setup "
            "(earliest core.contracts.created_at of its versions) to its project ready (earliest "
            "completed_at: PSA project, tasks, assignments, ERP project, schedule and CRM "
            "write-back done), per contract, by month the project became ready; median and 90th "
            "percentile. The CRM's CloseDate is not read, so the clock starts when erpsync saw "
            "the deal (project setup runs every 15 minutes).",
            "days",
            ("median", "p90"),
            onboarding_cycle_time,
        ),
        Metric(
            "time-to-invoice",
            "Time to invoice",
            "Days from the work date of each billed time entry and expense to the UTC day its "
            "invoice was posted in Business Central (billing.billed_items, "
            "billing.invoice_push.posted_at), by month of posting; median and 90th percentile "
            "over items.",
            "days",
            ("median", "p90"),
            time_to_invoice,
        ),
        Metric(
            "approval",
            "Approval cycle time",
            "Hours from Airflow asking for an invoice batch's approval to a person answering "
            "(Airflow's human-in-the-loop records hitl_detail and, for earlier tries, "
            "hitl_detail_history: created_at, or the try's start when a cleared task asked "
            "again, to responded_at; tasks approve_batch* of the billing DAGs), by month of the "
            "answer; median and 90th percentile. Questions "
            "closed by the response timeout (no responder) are counted apart.",
            "hours",
            ("median", "p90"),
            approval_cycle_time,
            extra=("timed_out",),
            source="airflow",
        ),
        Metric(
            "exception-rate",
            "Exception rate",
            "Exceptions the reconciliation raised in the month (ops.exceptions first seen then, "
            "reasons flagged raises_exception in recon.reasons) per 100 items it reconciled for "
            "the first time that month; total and per reason; straight-through rate = 100 - "
            "this.",
            "%",
            ("all reasons",),
            exception_rate,
            extra=("items_reconciled",),
        ),
        Metric(
            "time-to-resolve",
            "Exception time to resolve",
            "Average days from an exception first seen to resolved (fixed at the source and "
            "closed by a rerun; waived exceptions are not counted), by month resolved "
            "(ops.exceptions). Open exceptions by age and reason are in the table below.",
            "days",
            ("average days to resolve",),
            exception_resolution,
        ),
        Metric(
            "rework",
            "Rework (credit notes)",
            "Credit notes posted in Business Central in the month per 100 invoices posted in it "
            "(billing.invoices kind credit_note / invoice, posted at billing.invoice_push."
            "posted_at); invoice accuracy = 100 - this.",
            "%",
            ("credit notes per 100 invoices",),
            rework,
            extra=("invoices", "credit_notes"),
        ),
        Metric(
            "realization",
            "Realization",
            "Billed time's value (hours x the rate billed, recon.items) divided by the same "
            "hours x the person's standard rate (their billable rate card in core.rate_cards on "
            "the work day: Harvest's user billable rate), by work month, both converted to EUR "
            "at recon.currencies.per_eur; time without a rate card is left out.",
            "%",
            ("realization",),
            realization,
            extra=("hours", "billed_eur", "standard_eur"),
        ),
        Metric(
            "wip-days",
            "Unbilled WIP days",
            "Unbilled work in progress at the month's end (billable time and expenses worked by "
            "then and not invoiced by then, in EUR) divided by average daily billings (time and "
            "expenses posted on invoices in the 3 calendar months ending then, divided by their "
            "days up to today).",
            "days",
            ("WIP days",),
            wip_days,
            extra=("wip_eur", "billings_3m_eur", "days"),
        ),
        Metric(
            "leakage",
            "Revenue leakage",
            "Approved billable time and expenses still unbilled more than recon.settings."
            "leakage_days after their work date (recon.leakage at the latest reconciliation), "
            "by work month, in EUR and as a share of the month's potential revenue (its billable "
            "time and expenses ready, on hold or billed).",
            "%",
            ("share of potential revenue",),
            leakage,
            extra=("leakage_eur", "potential_eur"),
            bar_extra="leakage_eur",
            bar_unit="EUR",
        ),
    )
}


# ---------------------------------------------------------------------------------- summaries

#: One pass over recon.items (joined once to what was billed and to the rate-card timeline)
#: fills the three summaries of migration 0029: per work month and
#: outcome (recon.monthly_items), per posting month and days from work to posting
#: (billing.monthly_invoice_lag), per first reconciliation run (recon.monthly_reconciled).
REFRESH = """
WITH billed AS (
    SELECT b.item_key, coalesce(p.posted_at, b.billed_at) AS posted
      FROM billing.billed_items b
      LEFT JOIN billing.invoice_push p ON p.invoice_id = b.invoice_id
), lr AS (
    SELECT r.as_of, s.leakage_days, s.rate_card_currency
      FROM recon.settings s LEFT JOIN recon.latest_run r ON true
     WHERE s.id
), card AS (
    -- each person's billable rate cards as a timeline: a card applies from its valid_from to
    -- the day before the next card starts (or its own valid_to), i.e. the latest card covering
    -- the day, as the reconciliation picks it; a handful of rows per person, so the items join
    -- them by hash on the person and test the dates (no per-item index lookup)
    SELECT r.person_psa_id, r.valid_from AS eff_from,
           least(coalesce(r.valid_to + 1, 'infinity'::date),
                 coalesce(lead(r.valid_from) OVER w, 'infinity'::date)) AS eff_to,
           r.amount, coalesce(r.currency, lr.rate_card_currency) AS currency
      FROM core.rate_cards r CROSS JOIN lr
     WHERE r.kind = 'billable' AND r.deleted_at IS NULL
    WINDOW w AS (PARTITION BY r.person_psa_id ORDER BY r.valid_from, r.psa_rate_id)
), x AS (
    SELECT i.period_start, i.item_type, i.item_date, i.approved, i.currency, i.hours, i.amount,
           i.user_psa_id, i.first_run_id,
           date_trunc('month', b.posted AT TIME ZONE 'UTC')::date AS billed_month,
           CASE WHEN i.item_type IN ('time', 'expense')
                THEN (b.posted AT TIME ZONE 'UTC')::date - i.item_date END AS lag_days,
           CASE WHEN b.item_key IS NOT NULL THEN 'billed' ELSE i.state END AS state,
           CASE WHEN b.item_key IS NOT NULL THEN NULL ELSE i.reason_code END AS reason_code
      FROM recon.items i
      LEFT JOIN billed b ON b.item_key = i.item_key
), std AS (
    -- billed time at the person's standard rate, in the item's currency (recon.currencies)
    SELECT x.*,
           k.amount * CASE WHEN k.currency = x.currency THEN 1
                           ELSE ic.per_eur / kc.per_eur END AS rate
      FROM x
      LEFT JOIN card k
        ON x.item_type = 'time' AND x.state = 'billed' AND k.person_psa_id = x.user_psa_id
       AND x.item_date >= k.eff_from AND x.item_date < k.eff_to
      LEFT JOIN recon.currencies kc ON kc.code = k.currency
      LEFT JOIN recon.currencies ic ON ic.code = x.currency
), agg AS (
    -- one plain hash aggregate at the grain of all three summaries (tens of thousands of
    -- groups), rolled up below: grouping sets would sort every row
    SELECT s.period_start, s.item_type, s.state, s.reason_code, s.approved, s.currency,
           s.billed_month, s.lag_days, s.first_run_id,
           count(*) AS items, sum(s.hours) AS hours, sum(s.amount) AS amount,
           sum(s.amount) FILTER (WHERE s.item_type IN ('time', 'expense')
                                   AND s.state IN ('ready', 'on_hold') AND s.approved
                                   AND (lr.as_of - s.item_date) > lr.leakage_days) AS leakage,
           sum(s.hours) FILTER (WHERE s.rate IS NOT NULL) AS std_hours,
           sum(s.amount) FILTER (WHERE s.rate IS NOT NULL) AS std_billed,
           sum(s.hours * s.rate) AS std_amount
      FROM std s
      CROSS JOIN lr
     GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
), monthly AS (
    INSERT INTO recon.monthly_items
        (work_month, item_type, state, reason_code, approved, currency, billed_month, items,
         hours, amount, leakage_amount, std_hours, std_billed, std_amount)
    SELECT period_start, item_type, state, reason_code, approved, currency, billed_month,
           sum(items), sum(hours), sum(amount), sum(leakage), sum(std_hours), sum(std_billed),
           sum(std_amount)
      FROM agg
     GROUP BY 1, 2, 3, 4, 5, 6, 7
    RETURNING 1
), lag AS (
    INSERT INTO billing.monthly_invoice_lag (posted_month, lag_days, items)
    SELECT billed_month, lag_days, sum(items) FROM agg
     WHERE lag_days IS NOT NULL
     GROUP BY 1, 2
    RETURNING 1
), reconciled AS (
    INSERT INTO recon.monthly_reconciled (run_month, item_type, items)
    SELECT date_trunc('month', r.started_at AT TIME ZONE 'UTC')::date, a.item_type, sum(a.items)
      FROM agg a
      JOIN recon.runs r ON r.run_id = a.first_run_id
     GROUP BY 1, 2
    RETURNING 1
)
SELECT (SELECT count(*) FROM monthly), (SELECT count(*) FROM lag), (SELECT count(*) FROM reconciled)
"""


#: Whether the summaries are older than what they summarise: the latest reconciliation that
#: recomputed something (a run whose inputs had not changed records ``skipped``; its inputs
#: include billing.billed_items, the rate cards, the settings and the FX) or the latest posting.
STALE = """
SELECT r.refreshed_at IS NULL
       OR r.refreshed_at < (SELECT max(finished_at) FROM recon.runs
                             WHERE coalesce((result ->> 'skipped')::boolean, false) IS FALSE)
       OR r.refreshed_at < (SELECT max(posted_at) FROM billing.invoice_push
                             WHERE posted_at IS NOT NULL)
  FROM (SELECT 1) one
  LEFT JOIN recon.insights_refresh r ON true
"""


def refresh_summaries(conn: Connection[TupleRow], *, if_stale: bool = False) -> dict[str, Any]:
    """Rebuild the insights summaries of migration 0029 whole, in one transaction on ``conn``
    (readers see the old summaries until it commits). Called at the end of the reconciliation
    task (``if_stale``: not after a reconciliation that found nothing changed, which then stays
    about a second) and of the ERP push; returns the row counts and seconds taken."""
    started = time.perf_counter()
    if if_stale and not scalar(conn.execute(STALE)):
        return {"skipped": "the summaries are current"}
    with conn.transaction():
        # one refresh at a time; a second waits and then rebuilds from what the first committed
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('erpsync.insights.refresh'))")
        # the joins over recon.items hash in memory instead of spilling (the reconciliation
        # sets 512MB for the same table)
        conn.execute("SET LOCAL work_mem = '256MB'")
        # a few thousand groups, which the planner cannot foresee from 1,000,000+ rows: hash
        # them in one pass rather than sort every row by nine keys (10x slower, measured)
        conn.execute("SET LOCAL enable_sort = off")
        conn.execute("DELETE FROM recon.monthly_items")
        conn.execute("DELETE FROM recon.monthly_reconciled")
        conn.execute("DELETE FROM billing.monthly_invoice_lag")
        items, lag, reconciled = one(conn.execute(REFRESH))
        seconds = round(time.perf_counter() - started, 3)
        conn.execute(
            """INSERT INTO recon.insights_refresh (id, refreshed_at, run_id, as_of, seconds)
               SELECT true, clock_timestamp(), r.run_id, r.as_of, %s
                 FROM (SELECT 1) one LEFT JOIN recon.latest_run r ON true
               ON CONFLICT (id) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at,
                   run_id = EXCLUDED.run_id, as_of = EXCLUDED.as_of, seconds = EXCLUDED.seconds""",
            (seconds,),
        )
    return {
        "monthly_items": items,
        "monthly_reconciled": reconciled,
        "invoice_lag": lag,
        "seconds": seconds,
    }


@dataclass(frozen=True)
class PageData:
    """Everything the insights page reads from the warehouse (the approval cycle time, from
    Airflow's database, is computed apart)."""

    values: dict[str, list[MonthValue]]
    ageing: list[AgeingRow]
    refreshed: SummaryRefresh | None


def page_data(conn: Connection[TupleRow], *, months: int, as_of: dt.date) -> PageData:
    """The insights page's warehouse data on one connection: every warehouse metric's months,
    the exception ageing and when the summaries were rebuilt (what the page-speed benchmark
    times)."""
    return PageData(
        values={
            m.key: m.compute(conn, months=months, as_of=as_of)
            for m in METRICS.values()
            if m.source == "warehouse"
        },
        ageing=exception_ageing(conn, months=months, as_of=as_of),
        refreshed=last_refresh(conn),
    )


class SummaryRefresh(TypedDict):
    """The last rebuild of the summaries (``recon.insights_refresh``)."""

    refreshed_at: dt.datetime
    run_id: str | None
    as_of: dt.date | None
    seconds: Decimal | None


def last_refresh(conn: Connection[TupleRow]) -> SummaryRefresh | None:
    """When the summaries were last rebuilt (None: never)."""
    row = conn.execute(
        "SELECT refreshed_at, run_id, as_of, seconds FROM recon.insights_refresh"
    ).fetchone()
    if row is None:
        return None
    refreshed_at, run_id, as_of, seconds = row
    return {
        "refreshed_at": refreshed_at.astimezone(dt.UTC),
        "run_id": run_id,
        "as_of": as_of,
        "seconds": seconds,
    }


def csv_rows(metric: Metric, values: list[MonthValue]) -> tuple[list[str], list[list[Any]]]:
    """The monthly table of a metric as CSV header and rows (every series seen, then extras)."""
    series: list[str] = list(metric.series)
    for v in values:
        for name in v.values:
            if name not in series:
                series.append(name)
    header = ["month", *[f"{s} ({metric.unit})" for s in series], "count", *metric.extra]
    rows = [
        [
            v.month,
            *[v.values.get(s) for s in series],
            v.count,
            *[v.extra.get(e) for e in metric.extra],
        ]
        for v in values
    ]
    return header, rows
