"""Harvest's list and retrieve endpoints, the current user and the company.

Lists and paging (see :mod:`erpsync_sandbox.psa.paging`): Harvest's envelope; ``per_page``
1..2000; newest first; ``links.next`` is a keyset cursor URL carrying the original filters.
Each list takes exactly the query parameters of its Harvest page (``resources.LISTS``); an
unknown one is ignored and noted as undocumented.
https://help.getharvest.com/api-v2/introduction/overview/pagination/
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from erpsync_sandbox.contract import undocumented
from erpsync_sandbox.psa.paging import (
    Cursor,
    PagingError,
    build_envelope,
    page_url,
    parse_page,
    parse_per_page,
    total_pages,
)
from erpsync_sandbox.psa.resources import (
    COMMON_QUERY,
    LISTS,
    FilterError,
    ListSpec,
    parse_updated_since,
)
from erpsync_sandbox.psa.routes.base import (
    JSON,
    PAGING_PARAMS,
    HarvestError,
    PsaState,
    State,
    json_reply,
    v2_router,
)

__all__ = ["router", "serve_list"]

router = v2_router()


def _cursor_id(rid: str) -> int | str:
    return int(rid) if rid.isdigit() else rid


def _list_doc(spec: ListSpec) -> str:
    params = ["`page`", "`per_page` (1..2000, default 2000; larger -> 422)", "`cursor`"]
    if spec.updated_since:
        params.append("`updated_since` (inclusive: updated_at >= value)")
    params.extend(f"`{f.param}`" for f in spec.filters)
    where = f" Harvest reference: {spec.doc}" if spec.doc else ""
    return (
        f"Harvest list envelope with key `{spec.resource}`, newest first; follow `links.next`"
        f" (a keyset cursor) to read every record exactly once. Query parameters: "
        + ", ".join(params)
        + "."
        + where
    )


def serve_list(
    state: PsaState, request: Request, spec: ListSpec, parent: int | None = None
) -> Response:
    """One page of a Harvest list (envelope, ``links``, keyset cursors); see the module doc."""
    store = state.store
    q = request.query_params
    try:
        per_page = parse_per_page(q.get("per_page"))
        cursor_text = q.get("cursor")
        cursor = Cursor.decode(cursor_text) if cursor_text else None
        page = None if cursor is not None else parse_page(q.get("page"))
        where: dict[str, Any] = {}
        conditions: list[tuple[str, str, Any]] = []
        modstamp_ge: str | None = None
        echo: list[tuple[str, str]] = []
        for name, value in q.multi_items():
            if name in PAGING_PARAMS:
                continue
            flt = spec.by_param.get(name)
            if flt is not None:
                parsed = flt.parse(value)
                if flt.op == "=":
                    where[flt.path] = parsed
                else:
                    conditions.append((flt.path, flt.op, parsed))
                echo.append((name, value))
            elif name == "updated_since" and spec.updated_since:
                modstamp_ge = parse_updated_since(value)
                echo.append((name, value))
            elif name not in COMMON_QUERY:
                # Harvest ignores a parameter its list does not document
                undocumented(request, f"list {spec.resource}: query parameter {name!r}")
    except (PagingError, FilterError) as exc:
        raise HarvestError(422, {"message": str(exc)}) from None
    if parent is not None:
        where["parent_id"] = str(parent)
    if cursor is not None and cursor.seq is None:
        row = store.get_row(spec.resource, cursor.id, include_deleted=True)
        if row is None:
            raise HarvestError(422, {"message": "The cursor parameter is invalid."})
        cursor = Cursor(cursor.direction, cursor.id, row.seq, cursor.total)
    filters: dict[str, Any] = {
        "where": where or None,
        "conditions": conditions or None,
        "modstamp_ge": modstamp_ge,
    }
    listing = (spec.resource, parent, per_page, tuple(echo))
    known = state.positions.get(listing, page - 1) if page is not None and page > 1 else None
    if known is not None:
        anchor = store.get_row(spec.resource, known[1])
        if anchor is None or anchor.seq != known[0]:
            known = None  # deleted or the firm was reset: fall back to OFFSET
    if cursor is not None and cursor.total is not None:
        total = cursor.total
    elif known is not None:
        total = known[2]
    else:
        total = store.count(spec.resource, **filters)
    has_previous = False
    if cursor is None:
        assert page is not None
        rows = store.scan_rows(
            spec.resource,
            order="seq",
            descending=True,
            limit=per_page + 1,
            offset=None if known is not None else (page - 1) * per_page,
            after=None if known is None else (known[0],),
            **filters,
        )
        has_more = len(rows) > per_page
        rows = rows[:per_page]
        has_previous = page > 1
        if rows:
            state.positions.put(listing, page, rows[-1].seq, rows[-1].id, total)
    elif cursor.direction == "after":
        rows = store.scan_rows(
            spec.resource,
            order="seq",
            descending=True,
            after=(cursor.seq,),
            limit=per_page + 1,
            **filters,
        )
        has_more = len(rows) > per_page
        rows = rows[:per_page]
        has_previous = True
    else:  # "before": the page of newer records just before the cursor, newest first
        rows = store.scan_rows(
            spec.resource,
            order="seq",
            after=(cursor.seq,),
            limit=per_page + 1,
            **filters,
        )
        has_previous = len(rows) > per_page
        rows = rows[:per_page]
        rows.reverse()
        has_more = True
    pages = total_pages(total, per_page)
    base = f"{str(request.base_url).rstrip('/')}{request.url.path}"
    pp = str(per_page)
    next_link = previous_link = None
    if has_more and rows:
        last = rows[-1]
        token = Cursor("after", _cursor_id(last.id), last.seq, total).encode()
        next_link = page_url(
            base, echo, pairs=[("cursor", token), ("per_page", pp), ("ref", "next_cursor")]
        )
    if has_previous:
        if page is not None:
            previous_link = page_url(
                base,
                echo,
                pairs=[("page", str(page - 1)), ("per_page", pp), ("ref", "previous")],
            )
        elif rows:
            first = rows[0]
            token = Cursor("before", _cursor_id(first.id), first.seq, total).encode()
            previous_link = page_url(
                base,
                echo,
                pairs=[("cursor", token), ("per_page", pp), ("ref", "previous_cursor")],
            )
    links = {
        "first": page_url(base, echo, pairs=[("page", "1"), ("per_page", pp), ("ref", "first")]),
        "next": next_link,
        "previous": previous_link,
        "last": page_url(
            base, echo, pairs=[("page", str(max(pages, 1))), ("per_page", pp), ("ref", "last")]
        ),
    }
    if page is not None:
        page_no: int | None = page
        next_no: int | None = page + 1 if has_more else None
        prev_no: int | None = page - 1 if page > 1 else None
    elif not has_more:  # cursor mode: numbers only on the last page, as Harvest does
        page_no = max(pages, 1)
        next_no = None
        prev_no = page_no - 1 if page_no > 1 else None
    else:
        page_no = next_no = prev_no = None
    content = build_envelope(
        spec.resource,
        [r.body for r in rows],
        per_page=per_page,
        total=total,
        page=page_no,
        next_page=next_no,
        previous_page=prev_no,
        links=links,
    )
    state.faults.after_page(spec.resource, store)
    return Response(content=content, media_type=JSON)


@router.get("/users/me", tags=["Users"], summary="Retrieve the currently authenticated user")
def get_me(state: State) -> Response:
    return json_reply(state.me())


def add_list(path: str, name: str) -> None:
    """``GET {path}`` (the list) and ``GET {path}/{id}`` (one record) of resource ``name``."""
    spec = LISTS[name]

    def handler(request: Request, state: State) -> Response:
        return serve_list(state, request, spec)

    router.add_api_route(
        path,
        handler,
        methods=["GET"],
        summary=spec.summary,
        tags=[spec.tag],
        name=f"list_{name}",
        description=_list_doc(spec),
    )

    def one(request: Request, id: str, state: State) -> Response:
        return state.serve_one(name, id)

    router.add_api_route(
        f"{path}/{{id}}",
        one,
        methods=["GET"],
        tags=[spec.tag],
        name=f"get_{name}",
        summary=f"Retrieve one of {name.replace('_', ' ')} (404 when missing or deleted)",
    )


for _name in (
    "clients",
    "contacts",
    "projects",
    "tasks",
    "users",
    "task_assignments",
    "user_assignments",
    "time_entries",
    "expenses",
    "expense_categories",
    "invoices",
):
    add_list(f"/{_name}", _name)


def add_nested(parent_resource: str, name: str) -> None:
    """Nested lists: project assignments and user rate cards (the parent must exist)."""
    spec = LISTS[name]
    path = f"/{parent_resource}/{{parent_id}}/{name}"

    def handler(request: Request, parent_id: str, state: State) -> Response:
        return serve_list(state, request, spec, state.require_parent(parent_resource, parent_id))

    router.add_api_route(
        path,
        handler,
        methods=["GET"],
        tags=[spec.tag],
        name=f"list_{parent_resource}_{name}",
        summary=f"{spec.summary} of one {parent_resource.rstrip('s')}",
        description=_list_doc(spec),
    )

    def one(parent_id: str, id: str, state: State) -> Response:
        return state.serve_one(name, id, state.require_parent(parent_resource, parent_id))

    router.add_api_route(
        f"{path}/{{id}}",
        one,
        methods=["GET"],
        tags=[spec.tag],
        name=f"get_{parent_resource}_{name}",
        summary=f"Retrieve one of {name.replace('_', ' ')}",
    )


add_nested("projects", "task_assignments")
add_nested("projects", "user_assignments")
add_nested("users", "billable_rates")
add_nested("users", "cost_rates")


@router.get("/company", tags=["Company"], summary="Retrieve the company of the account")
def get_company(request: Request) -> Response:
    return json_reply(
        {
            "base_uri": str(request.base_url).rstrip("/"),
            "full_domain": request.url.netloc,
            "name": "erpsync sandbox firm",
            "is_active": True,
            "week_start_day": "Monday",
            "wants_timestamp_timers": False,
            "time_format": "decimal",
            "date_format": "%Y-%m-%d",
            "plan_type": "sandbox",
            "clock": "24h",
            "currency_code_display": "iso_code_before",
            "currency_symbol_display": "symbol_before",
            "decimal_symbol": ".",
            "thousands_separator": ",",
            "color_scheme": "orange",
            "weekly_capacity": 144000,
            "expense_feature": True,
            "invoice_feature": True,
            "estimate_feature": False,
            "approval_feature": True,
        }
    )
