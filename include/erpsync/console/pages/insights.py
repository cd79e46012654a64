"""Process intelligence: each metric of :data:`erpsync.console.insights.METRICS` with its
definition, a trend chart by month and its monthly table, downloadable as CSV.

``/insights?months=12`` (1-36 months ending with ``as_of``'s, default today in UTC);
``/insights/{metric}.csv`` the monthly table of one metric (``exception-ageing.csv``: open
exceptions by age and reason; ``cash_dso``, ``cash_overdue``, ``cash_payment_status``: the cash
tables of :mod:`erpsync.console.cash`). Reads the monthly summaries and a few small indexed
tables only (see the module doc of :mod:`erpsync.console.insights`), never recon.items.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from markupsafe import Markup

from erpsync.console import cash, charts, insights
from erpsync.console.web import ConsoleContext, Ctx, csv_response, render

router = APIRouter()

Months = Annotated[int, Query(ge=1, le=36)]
AsOf = Annotated[dt.date | None, Query()]
#: The exception-rate chart draws the total and the reasons with the most exceptions.
MAX_REASON_LINES = 4
AGEING_KEY = "exception-ageing"


def _as_of(as_of: dt.date | None) -> dt.date:
    return as_of or dt.datetime.now(dt.UTC).date()


#: Each metric's months (None when they could not be read) and why not.
Computed = dict[str, tuple[list[insights.MonthValue] | None, str | None]]


@dataclass(frozen=True)
class Latest:
    """The latest month with a value of a metric's first series (the KPI strip)."""

    month: str
    value: Decimal
    series: str


@dataclass
class MetricSection:
    """One metric on the page: its chart(s) and monthly table, or why it could not be read."""

    metric: insights.Metric
    problem: str | None
    values: list[insights.MonthValue] | None
    latest: Latest | None
    chart: Markup | None = None
    bars: Markup | None = None
    header: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


def approval_values(
    ctx: ConsoleContext, metric: insights.Metric, *, months: int, as_of: dt.date
) -> tuple[list[insights.MonthValue] | None, str | None]:
    """A metric read from Airflow's metadata database, or None and why it could not be read."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with ctx.airflow_session() as session:
            return metric.compute(session, months=months, as_of=as_of), None
    except SQLAlchemyError as exc:  # the API server's own database: rare
        return None, f"Airflow's metadata database could not be read ({type(exc).__name__})"


def all_values(
    ctx: ConsoleContext, *, months: int, as_of: dt.date
) -> tuple[Computed, insights.PageData, cash.CashContext]:
    """Every metric's months and why one could not be computed (one warehouse connection, one
    Airflow session), with the warehouse's ageing table, last summary rebuild and the cash
    section's template variables (:func:`erpsync.console.cash.cash_context`)."""
    with ctx.warehouse() as conn:
        data = insights.page_data(conn, months=months, as_of=as_of)
        cash_vars = cash.cash_context(conn, as_of=as_of, months=months)
    out: Computed = {k: (v, None) for k, v in data.values.items()}
    for metric in insights.METRICS.values():
        if metric.source == "airflow":
            out[metric.key] = approval_values(ctx, metric, months=months, as_of=as_of)
    return out, data, cash_vars


def latest(metric: insights.Metric, values: list[insights.MonthValue] | None) -> Latest | None:
    """The latest month with a value of the metric's first series, for the KPI strip."""
    for v in reversed(values or []):
        value = v.values.get(metric.series[0])
        if value is not None:
            return Latest(month=v.month, value=value, series=metric.series[0])
    return None


def _series_for_chart(metric: insights.Metric, values: list[insights.MonthValue]) -> list[str]:
    names = list(metric.series)
    totals: dict[str, Decimal] = {}
    for v in values:
        for name, value in v.values.items():
            if name not in names and value is not None:
                totals[name] = totals.get(name, Decimal(0)) + value
    extra = sorted(totals, key=lambda n: (-totals[n], n))[:MAX_REASON_LINES]
    return names + extra


def chart(metric: insights.Metric, values: list[insights.MonthValue]) -> Markup:
    series = {
        name: [(v.month, v.values.get(name)) for v in values]
        for name in _series_for_chart(metric, values)
    }
    return charts.line_chart(series, title=f"{metric.title} ({metric.unit})", unit=metric.unit)


def bars(metric: insights.Metric, values: list[insights.MonthValue]) -> Markup | None:
    if metric.bar_extra is None:
        return None
    points = [(v.month, v.extra.get(metric.bar_extra)) for v in values]
    return charts.bar_chart(
        [(m, Decimal(x)) for m, x in points if x is not None],
        title=f"{metric.title}: amount ({metric.bar_unit})",
        unit=metric.bar_unit,
    )


@router.get("/insights", response_class=HTMLResponse)
def insights_page(
    request: Request, ctx: Ctx, months: Months = 12, as_of: AsOf = None
) -> HTMLResponse:
    day = _as_of(as_of)
    sections: list[MetricSection] = []
    computed, data, cash_vars = all_values(ctx, months=months, as_of=day)
    for metric in insights.METRICS.values():
        values, problem = computed[metric.key]
        section = MetricSection(metric, problem, values, latest(metric, values))
        if values is not None:
            section.header, section.rows = insights.csv_rows(metric, values)
            section.chart, section.bars = chart(metric, values), bars(metric, values)
        sections.append(section)
    return render(
        request,
        ctx,
        "insights.html",
        sections=sections,
        ageing=data.ageing,
        buckets=[label for label, _b in insights.AGE_BUCKETS],
        refreshed=data.refreshed,
        months=months,
        as_of=day,
        query=f"months={months}" + (f"&as_of={as_of.isoformat()}" if as_of else ""),
        # cash: DSO, overdue receivables per client and payment status, from the invoice status
        # synced from Business Central (templates/_cash.html)
        **cash_vars,
    )


def ageing_csv(rows: list[insights.AgeingRow]) -> tuple[list[str], list[list[Any]]]:
    labels = [label for label, _b in insights.AGE_BUCKETS]
    header = ["reason", "open", *labels, "resolved in window", "average days to resolve"]
    return header, [
        [
            r.reason_code,
            r.open,
            *[r.buckets.get(label, 0) for label in labels],
            r.resolved_in_window,
            r.average_days_to_resolve,
        ]
        for r in rows
    ]


@router.get("/insights/{metric}.csv")
def insights_csv(
    ctx: Ctx, metric: str, months: Months = 12, as_of: AsOf = None
) -> StreamingResponse:
    day = _as_of(as_of)
    if metric in cash.CSV_METRICS:
        with ctx.warehouse() as conn:
            cash_header, cash_rows = cash.csv_table(conn, metric, as_of=day, months=months)
        return csv_response(f"insights-{metric}-{day.isoformat()}.csv", cash_header, cash_rows)
    if metric == AGEING_KEY:
        with ctx.warehouse() as conn:
            header, rows = ageing_csv(insights.exception_ageing(conn, months=months, as_of=day))
        return csv_response(f"insights-{AGEING_KEY}-{day.isoformat()}.csv", header, rows)
    found = insights.METRICS.get(metric)
    if found is None:
        raise HTTPException(404, f"no metric {metric!r}")
    if found.source == "airflow":
        values, problem = approval_values(ctx, found, months=months, as_of=day)
    else:
        with ctx.warehouse() as conn:
            values, problem = found.compute(conn, months=months, as_of=day), None
    if values is None:
        raise HTTPException(503, problem)
    header, rows = insights.csv_rows(found, values)
    return csv_response(f"insights-{metric}-{day.isoformat()}.csv", header, rows)
