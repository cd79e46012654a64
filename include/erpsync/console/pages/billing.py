"""The billing cockpit page: ``/erpsync/billing`` and a CSV of each of its tables at
``/erpsync/billing/{table}.csv`` (filters: period ``YYYY-MM``, client, currency; ``page`` of the
period x client table, ``batch_page`` of the batches). Read only: nothing here changes state -
approving a batch happens in Airflow's Required Actions, which an awaiting batch links to.
Data: :mod:`erpsync.console.billing`."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from erpsync.console import billing
from erpsync.console.charts import bar_chart
from erpsync.console.web import ConsoleContext, Ctx, csv_response, render

router = APIRouter()

#: WIP charts drawn (one per currency: amounts of two currencies never share an axis).
MAX_CHARTS = 4


def _filters(
    period: str | None, client: str | None, currency: str | None, page: str | int | None
) -> billing.Filters:
    try:
        return billing.Filters.parse(period=period, client=client, currency=currency, page=page)
    except ValueError as exc:
        raise HTTPException(400, f"Bad filter: {exc}") from None


def airflow_base(ctx: ConsoleContext) -> str:
    """The Airflow UI's path: the console is mounted at ``<Airflow base>/erpsync``."""
    return ctx.base.removesuffix("/erpsync")


@router.get("/billing", response_class=HTMLResponse)
def billing_page(
    request: Request,
    ctx: Ctx,
    period: str | None = None,
    client: str | None = None,
    currency: str | None = None,
    page: str | None = None,
    batch_page: str | None = None,
) -> HTMLResponse:
    f = _filters(period, client, currency, page)
    try:
        bpage = int(batch_page or 1)
    except ValueError:
        raise HTTPException(400, "Bad filter: batch_page must be a number") from None
    with ctx.warehouse() as conn:
        data = billing.cockpit(conn, f, airflow_base=airflow_base(ctx), batch_page=bpage)
    charts = []
    by_currency: dict[str | None, list[tuple[str, Decimal]]] = {}
    for row in data["wip"]:
        by_currency.setdefault(row["currency"], []).append((row["bucket"], row["amount"]))
    for cur, bars in list(by_currency.items())[:MAX_CHARTS]:
        charts.append(bar_chart(bars, title=f"Unbilled WIP by age ({cur})", unit=cur or ""))
    return render(
        request,
        ctx,
        "billing.html",
        f=f,
        charts=charts,
        tables=billing.TABLES,
        age_buckets=billing.AGE_BUCKETS,
        batch_states=billing.BATCH_STATES,
        **data,
    )


@router.get("/billing/{table}.csv")
def billing_csv(
    table: str,
    ctx: Ctx,
    period: str | None = None,
    client: str | None = None,
    currency: str | None = None,
) -> StreamingResponse:
    if table not in billing.TABLES:
        raise HTTPException(404, f"No billing table {table!r}")
    f = _filters(period, client, currency, 1)
    with ctx.warehouse() as conn:
        out = billing.csv_table(conn, table, f)
    suffix = "-".join(v for v in (f.query(page=None).get("period"), f.currency) if v)
    return csv_response(
        f"billing-{table}{'-' + suffix if suffix else ''}.csv", out.header, out.rows
    )
