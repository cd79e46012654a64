"""The exceptions worklist: every open, waived and resolved exception, filtered, sorted, paged;
one exception's detail; the CSV; and the actions of finance ops (assign, comment, waive with a
reason, reopen), one at a time or in bulk.

Reads go through :mod:`erpsync.console.exceptions`, actions through
:mod:`erpsync.exceptions_queue` (each writes the audit trail with the Airflow user as actor, in
the same transaction). Actions need ``Action.ACT_EXCEPTIONS``; everyone who may read the console
sees the pages, without the action controls when they may not act.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

from erpsync import exceptions_queue, money
from erpsync.console import exceptions as worklist_data
from erpsync.console.permissions import Action
from erpsync.console.web import ConsoleContext, Ctx, csv_response, render, require

router = APIRouter()

#: The most ids one bulk action takes (a page is 50 rows).
MAX_BULK = 500

#: The worklist's columns: (sort key, header, numeric).
COLUMNS = (
    ("id", "#", True),
    ("reason", "Reason", False),
    ("entity", "Entity", False),
    ("client", "Client", False),
    ("owner", "Owner", False),
    ("amount", "At stake", True),
    ("currency", "Currency", False),
    ("age", "Age (days)", True),
)


def places(currency: str | None) -> int:
    """Decimals to show an amount in ``currency`` with (its minor units; 2 when unknown)."""
    try:
        return money.minor_units(str(currency).strip()) if currency else 2
    except money.UnknownCurrency:
        return 2


def _url(base: str, path: str, query: dict[str, str]) -> str:
    return f"{base}{path}" + (f"?{urlencode(query)}" if query else "")


@router.get("/exceptions", response_class=HTMLResponse)
def exceptions_page(request: Request, ctx: Ctx) -> HTMLResponse:
    filters = worklist_data.Filters.from_query(request.query_params)
    with ctx.warehouse() as conn:
        page = worklist_data.worklist(conn, filters)
        options = worklist_data.filter_options(conn, filters.status)
    base = ctx.base

    def sort_url(key: str) -> str:
        if filters.sort == key:
            direction = "asc" if filters.dir == "desc" else "desc"
        else:
            direction = worklist_data.DEFAULT_DIR.get(key, "asc")
        return _url(base, "/exceptions", filters.query(sort=key, dir=direction, page=1))

    return render(
        request,
        ctx,
        "exceptions.html",
        page=page,
        f=filters,
        options=options,
        columns=COLUMNS,
        sort_url=sort_url,
        tab_url=lambda s: _url(base, "/exceptions", filters.query(status=s, page=1)),
        page_url=lambda n: _url(base, "/exceptions", filters.query(page=n)),
        csv_url=_url(base, "/exceptions.csv", filters.query(page=1)),
        statuses=worklist_data.STATUSES,
        can_act=ctx.allowed(Action.ACT_EXCEPTIONS),
        max_page=worklist_data.MAX_PAGE,
        places=places,
    )


@router.get("/exceptions.csv")
def exceptions_csv(request: Request, ctx: Ctx) -> StreamingResponse:
    filters = worklist_data.Filters.from_query(request.query_params)
    with ctx.warehouse() as conn:
        rows = worklist_data.export_rows(conn, filters)
    return csv_response(f"exceptions-{filters.status}.csv", worklist_data.CSV_HEADER, rows)


def _link(ctx: ConsoleContext, ref: worklist_data.SourceRef) -> str | None:
    build = {"crm": ctx.links.crm, "psa": ctx.links.psa, "erp": ctx.links.erp}.get(ref.system)
    return build(ref.kind, ref.record_id) if build else None


@router.get("/exceptions/{exception_id}", response_class=HTMLResponse)
def exception_page(request: Request, ctx: Ctx, exception_id: int) -> HTMLResponse:
    with ctx.warehouse() as conn:
        detail = worklist_data.exception_detail(conn, exception_id)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No exception {exception_id}")
    links = [(ref, _link(ctx, ref)) for ref in detail.refs]
    return render(
        request,
        ctx,
        "exception_detail.html",
        d=detail,
        ex=detail.exception,
        links=links,
        can_act=ctx.allowed(Action.ACT_EXCEPTIONS),
        back=_url(ctx.base, "/exceptions", {"status": detail.exception["status"]}),
        places=places,
    )


class ActionRequest(BaseModel):
    """The body of an action (what ``erpsyncPost`` sends)."""

    action: Literal["assign", "comment", "waive", "reopen"]
    ids: list[int] = Field(min_length=1, max_length=MAX_BULK)
    owner: str | None = None
    comment: str | None = None


def _required(value: str | None, message: str) -> str:
    if value is None or not value.strip():
        raise HTTPException(422, message)
    return value.strip()


# response_model=None: FastAPI would otherwise take the return annotation as a response model and
# validate the answer with it (fastapi/routing.py, APIRoute.__init__); the dict goes out as built.
@router.post(
    "/exceptions/actions", dependencies=[require(Action.ACT_EXCEPTIONS)], response_model=None
)
def exceptions_action(body: ActionRequest, ctx: Ctx) -> dict[str, Any]:
    """Apply one action to the ids, in one transaction; the outcome of each id."""
    by = ctx.user_name
    if body.action == "assign":
        owner = _required(body.owner, "Assign needs the owner to assign to.")
    elif body.action in ("comment", "waive"):
        what = "Waive needs a reason." if body.action == "waive" else "A comment needs text."
        comment = _required(body.comment, what)
    with ctx.warehouse() as conn:
        if body.action == "assign":
            outcomes = exceptions_queue.assign(conn, body.ids, owner=owner, by=by)
        elif body.action == "comment":
            outcomes = exceptions_queue.comment(conn, body.ids, text=comment, by=by)
        elif body.action == "waive":
            outcomes = exceptions_queue.waive_many(conn, body.ids, by=by, comment=comment)
        else:
            outcomes = exceptions_queue.reopen(conn, body.ids, by=by, comment=body.comment)
    return {"action": body.action, "results": [o.as_dict() for o in outcomes]}
