"""The console's landing page: what needs attention today, with a link to each page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from erpsync.console.overview import attention
from erpsync.console.web import Ctx, render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request, ctx: Ctx) -> HTMLResponse:
    with ctx.warehouse() as conn:
        tiles = attention(conn)
    return render(request, ctx, "home.html", tiles=tiles)
