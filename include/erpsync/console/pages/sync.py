"""Sync health: per entity the last run, watermark, counts and a 30-run trend; the quarantine
with reason and masked payload; the requeue of quarantined records (data engineers).

Data: :mod:`erpsync.console.sync_health`; the requeue itself: :mod:`erpsync.sync.requeue` (the
next run of the entity's sync re-reads the records by id).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from markupsafe import Markup
from pydantic import BaseModel, Field

from erpsync.console import charts, sync_health
from erpsync.console.permissions import Action
from erpsync.console.web import Ctx, csv_response, render, require

router = APIRouter()

#: at most this many records per requeue request (each is one vendor request in the next run)
MAX_REQUEUE = 500


def _before(request: Request) -> int | None:
    value = request.query_params.get("before", "")
    return int(value) if value.isdigit() else None


def trend_chart(entity: str, runs: list[sync_health.RunSummary]) -> Markup:
    """Read, loaded and quarantined per run, oldest first. The x labels are the runs' numbers
    (01 = the oldest shown; the chart sorts labels as text and has room for short ones); the
    table under the chart gives each number's time."""
    series: dict[str, list[tuple[str, Decimal | None]]] = {
        "read": [],
        "loaded": [],
        "quarantined": [],
    }
    for n, r in enumerate(runs, 1):
        label = f"{n:02d}"
        series["read"].append((label, Decimal(r.read)))
        series["loaded"].append((label, Decimal(r.loaded)))
        series["quarantined"].append((label, Decimal(r.quarantined)))
    return charts.line_chart(series, title=f"{entity}: last {len(runs)} runs", unit="")


@router.get("/sync", response_class=HTMLResponse)
def sync_page(request: Request, ctx: Ctx) -> HTMLResponse:
    wanted = request.query_params.get("entity", "")
    with ctx.warehouse() as conn:
        entities = sync_health.overview(conn)
        names = [e.entity for e in entities]
        if wanted not in names:
            ran = [(e.last_run.run_stat_id, e.entity) for e in entities if e.last_run is not None]
            wanted = max(ran, key=lambda run: run[0])[1] if ran else ""
        runs = sync_health.trend(conn, wanted) if wanted else []
    chart = trend_chart(wanted, runs) if wanted else None
    return render(
        request, ctx, "sync.html", entities=entities, entity=wanted, runs=runs, chart=chart
    )


@router.get("/sync.csv")
def sync_csv(request: Request, ctx: Ctx) -> StreamingResponse:
    entity = request.query_params.get("entity", "").strip()[:100]
    with ctx.warehouse() as conn:
        rows = list(sync_health.runs_csv_rows(conn, entity or None))  # a few dozen rows
    name = f"erpsync_sync_{entity}_runs.csv" if entity else "erpsync_sync_last_runs.csv"
    return csv_response(name, sync_health.RUNS_CSV_HEADER, rows)


@router.get("/sync/quarantine", response_class=HTMLResponse)
def quarantine_page(request: Request, ctx: Ctx) -> HTMLResponse:
    filters = sync_health.QuarantineFilters.from_params(request.query_params)
    with ctx.warehouse() as conn:
        page = sync_health.quarantine_list(conn, filters, before=_before(request))
        reasons = sync_health.reasons(conn)
    entities = sync_health.entity_specs()
    return render(
        request,
        ctx,
        "quarantine.html",
        page=page,
        reasons=reasons,
        entities=entities,
        statuses=sync_health.STATUSES,
        query=filters.query(),
    )


@router.get("/sync/quarantine.csv")
def quarantine_csv(request: Request, ctx: Ctx) -> StreamingResponse:
    filters = sync_health.QuarantineFilters.from_params(request.query_params)

    def rows() -> Iterator[tuple[Any, ...]]:
        with ctx.warehouse() as conn:
            yield from sync_health.quarantine_csv_rows(conn, filters)

    return csv_response("erpsync_quarantine.csv", sync_health.QUARANTINE_CSV_HEADER, rows())


@router.get("/sync/quarantine/{quarantine_id}", response_class=HTMLResponse)
def quarantine_detail_page(request: Request, ctx: Ctx, quarantine_id: int) -> HTMLResponse:
    with ctx.warehouse() as conn:
        detail = sync_health.quarantine_detail(conn, quarantine_id)
    if detail is None:
        raise HTTPException(404, f"no quarantine row #{quarantine_id}")
    return render(request, ctx, "quarantine_detail.html", q=detail)


class RequeueBody(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=MAX_REQUEUE)


@router.post("/sync/quarantine/requeue", dependencies=[require(Action.REQUEUE)])
def requeue(body: RequeueBody, ctx: Ctx) -> JSONResponse:
    with ctx.warehouse() as conn:
        results = sync_health.requeue(conn, body.ids, user=ctx.user_name)
    accepted = [r.quarantine_id for r in results if r.accepted]
    refused = [{"id": r.quarantine_id, "reason": r.reason} for r in results if not r.accepted]
    return JSONResponse(
        {
            "requeued": accepted,
            "refused": refused,
            "message": f"{len(accepted)} record(s) will be re-read by the next run of their sync"
            + (f"; {len(refused)} refused" if refused else ""),
        },
        status_code=200 if accepted or not refused else 409,
    )
