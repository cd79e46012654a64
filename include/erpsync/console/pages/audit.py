"""The audit trail: search ``audit.audit_log`` (entity, run, actor, action, dates), one entry
with its before/after, the CSV export of a whole search, and the hash chain's status.

Data: :mod:`erpsync.console.audit_trail`. Everyone who may read the console reads the trail
(auditors first of all) and may ask for the pending rows of the chain to be verified: that
records a verification, it changes no business data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from erpsync.console import audit_trail
from erpsync.console.permissions import Action
from erpsync.console.web import Ctx, csv_response, render, require

router = APIRouter()


def _before(request: Request) -> int | None:
    value = request.query_params.get("before", "")
    return int(value) if value.isdigit() else None


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, ctx: Ctx) -> HTMLResponse:
    filters = audit_trail.AuditFilters.from_params(request.query_params)
    with ctx.warehouse() as conn:
        page = audit_trail.search(conn, filters, before=_before(request))
        chain = audit_trail.chain_status(conn)
    return render(request, ctx, "audit.html", page=page, chain=chain, query=filters.query())


@router.get("/audit.csv")
def audit_csv(request: Request, ctx: Ctx) -> StreamingResponse:
    filters = audit_trail.AuditFilters.from_params(request.query_params)

    def rows() -> Iterator[tuple[Any, ...]]:
        # the connection lives as long as the download: the export streams the whole search
        with ctx.warehouse() as conn:
            yield from audit_trail.csv_rows(conn, filters)

    return csv_response("erpsync_audit_trail.csv", audit_trail.CSV_HEADER, rows())


@router.get("/audit/{audit_id}", response_class=HTMLResponse)
def audit_entry(request: Request, ctx: Ctx, audit_id: int) -> HTMLResponse:
    with ctx.warehouse() as conn:
        entry = audit_trail.entry(conn, audit_id)
    if entry is None:
        raise HTTPException(404, f"no audit entry #{audit_id}")
    return render(request, ctx, "audit_entry.html", entry=entry)


@router.post("/audit/verify", dependencies=[require(Action.READ)])
def audit_verify(ctx: Ctx) -> JSONResponse:
    with ctx.warehouse() as conn:
        chain = audit_trail.verify_pending(conn)
    return JSONResponse(
        {
            "summary": chain.summary(),
            "verified_audit_id": chain.verified_audit_id,
            "pending": chain.pending,
            "broken_audit_id": chain.broken_audit_id,
        }
    )
