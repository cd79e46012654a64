"""The sandbox PSA: a local HTTP service that behaves like Harvest API v2.

A connector written against real Harvest (https://help.getharvest.com/api-v2/) works against
this service by changing only the base URL and the credentials. What it reproduces, and the
choices where Harvest's documentation is silent:

Authentication (every ``/v2/**`` request, checked in this order)
    * ``User-Agent`` missing or empty -> **400** ``{"error": "invalid_request",
      "error_description": "..."}`` (Harvest requires it; its exact body is undocumented).
    * ``Authorization: Bearer <token>`` (or ``?access_token=``) missing or not the sandbox token
      (``ERPSYNC_SANDBOX_PSA_TOKEN``, default ``sandbox-psa-token``) -> **401**
      ``{"error": "invalid_token", "error_description": "The access token provided is expired,
      revoked, malformed or invalid for other reasons."}``.
    * ``Harvest-Account-Id`` (or ``?account_id=``) missing or not the sandbox account
      (``ERPSYNC_SANDBOX_PSA_ACCOUNT_ID``, default ``100200``) -> **404**
      ``{"status": 404, "error": "Not Found"}``: the account header routes the request and one
      token may reach several accounts, so an account the token cannot reach is "not found"
      (docs/reference/vendor-apis.md, "Endpoints and fields to emulate").
    * Harvest's ID service endpoints that OAuth clients call first are emulated too:
      ``POST /api/v2/oauth2/token`` (``grant_type=refresh_token``; the refresh token is the
      sandbox token) and ``GET /api/v2/accounts``.

Rate limit
    A token bucket of 100 requests per 15 s per token (``ERPSYNC_SANDBOX_PSA_RATE_LIMIT``,
    ``"100/15"``; ``"off"`` disables it; ``PUT /__admin/psa/rate_limit`` changes it at run
    time). Over it: **429** ``{"message": ...}`` with ``Retry-After: <whole seconds>``.

Lists and paging (see :mod:`erpsync_sandbox.psa.paging`)
    Harvest's envelope; ``per_page`` 1..2000 (default 2000, otherwise 422); newest first
    (creation order, ``seq`` DESC); ``links.next`` is a keyset cursor URL carrying the original
    filters, so following it returns every record exactly once even while records change.
    ``updated_since`` is inclusive (``updated_at >= updated_since``, see
    :mod:`erpsync_sandbox.psa.resources`). Each list takes exactly the query parameters of its
    Harvest page (``resources.LISTS``); an unknown one is ignored, as Harvest does, and noted
    with :func:`erpsync_sandbox.contract.undocumented` (e.g. ``updated_since`` on rate lists).
    Write bodies: a parameter outside the endpoint's documented list (``resources.BODY_PARAMS``)
    is ignored and noted the same way.

Writes (see :mod:`erpsync_sandbox.psa.writes`)
    POST/PATCH/DELETE clients, contacts, projects, tasks, project task and user assignments
    (Harvest has no milestone resource: ``/v2/milestones`` is a 404); POST/PATCH/DELETE time
    entries and expenses (DELETE is a hard delete: later GETs 404 and lists no longer show the
    record; PATCH takes Harvest's documented parameters only,
    ``is_billed``/``invoice`` are read-only and a locked item refuses edits with 422); POST
    invoices (201, never deduplicated; free-form or ``line_items_import``, which marks the
    imported time and expenses billed) and DELETE invoices (releases them); POST
    ``/v2/users/{id}/billable_rates`` and ``cost_rates``. Body keys Harvest does not document
    are ignored and noted (:func:`erpsync_sandbox.contract.undocumented`). Validation failures
    are 422 ``{"message": "..."}``. Every write bumps
    ``updated_at``. Deletes answer ``200`` with an empty body, as Harvest does.

Serving speed
    List bodies are spliced from the stored JSON text into the envelope bytes (no parsing, no
    model serialisation), which is what lets one service serve > 50,000 records/s.

Faults
    The base app's fault middleware (5xx, 429 bursts, latency, drop after commit) wraps every
    route; list endpoints call ``Faults.after_page`` after each page (records change during a
    paged read); the store's ``tie_timestamps`` flag makes writes share modstamps.
"""

from __future__ import annotations

import json
import secrets
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from erpsync_sandbox.common import make_base_app
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.contract import undocumented
from erpsync_sandbox.psa.paging import (
    Cursor,
    PagePositions,
    PagingError,
    build_envelope,
    page_url,
    parse_page,
    parse_per_page,
    total_pages,
)
from erpsync_sandbox.psa.ratelimit import (
    RATE_LIMIT_ENV,
    TokenBuckets,
    parse_rate_limit,
    rate_limit_from_env,
)
from erpsync_sandbox.psa.resources import (
    BODY_PARAMS,
    COMMON_QUERY,
    LISTS,
    FilterError,
    ListSpec,
    parse_updated_since,
)
from erpsync_sandbox.psa.writes import (
    EXPENSE_UPDATE_PARAMS,
    INVOICE_CREATE_PARAMS,
    TIME_ENTRY_UPDATE_PARAMS,
    NotFound,
    PsaWriter,
    Unprocessable,
    invoice_import_undocumented,
    undocumented_params,
)
from erpsync_sandbox.store import Store, dumps

__all__ = ["create_app"]

INVALID_TOKEN = {
    "error": "invalid_token",
    "error_description": (
        "The access token provided is expired, revoked, malformed or invalid for other reasons."
    ),
}
NOT_FOUND = {"status": 404, "error": "Not Found"}
PAGING_PARAMS = frozenset({"page", "per_page", "cursor", "ref"})
JSON = "application/json; charset=utf-8"


#: Request body examples shown on the OpenAPI page (Harvest's parameter names).
EXAMPLES: dict[str, dict[str, Any]] = {
    "create_clients": {"name": "Newco AG", "currency": "CHF", "address": "Bahnhofstr. 1, Zurich"},
    "create_contacts": {"client_id": 5100001, "first_name": "Nina", "email": "nina@newco.test"},
    "create_projects": {
        "client_id": 5100001,
        "name": "Newco rollout",
        "code": "PRJ-20001",
        "is_billable": True,
        "bill_by": "People",
        "budget_by": "project",
        "starts_on": "2026-11-01",
    },
    "create_tasks": {"name": "Consulting", "default_hourly_rate": 175.0},
    "create_task_assignments": {"task_id": 8000001, "hourly_rate": 190.0, "billable": True},
    "create_user_assignments": {
        "user_id": 3100001,
        "use_default_rates": False,
        "hourly_rate": 210.0,
    },
    "create_time_entry": {
        "project_id": 6400001,
        "task_id": 8000001,
        "spent_date": "2026-11-02",
        "hours": 1.5,
        "notes": "Workshop",
    },
    "update_time_entry": {"hours": 2.0, "notes": "Workshop and write-up"},
    "import_invoice": {
        "client_id": 5100001,
        "number": "PSI-2026-0077",
        "issue_date": "2026-11-30",
        "line_items_import": {
            "project_ids": [6400001],
            "time": {"summary_type": "detailed", "from": "2026-11-01", "to": "2026-11-30"},
            "expenses": {"summary_type": "detailed", "from": "2026-11-01", "to": "2026-11-30"},
        },
    },
    "create_invoice": {
        "client_id": 5100001,
        "subject": "November 2026",
        "currency": "EUR",
        "issue_date": "2026-11-30",
        "payment_term": "net 30",
        "tax": 19.0,
        "line_items": [
            {
                "kind": "Service",
                "description": "Consulting",
                "quantity": 10,
                "unit_price": 150.0,
                "project_id": 6400001,
                "taxed": True,
            }
        ],
    },
    "create_billable_rates": {"amount": 160.0, "start_date": "2026-12-01"},
}


def _body_doc(name: str) -> dict[str, Any] | None:
    example = EXAMPLES.get(name)
    if example is None:
        return None
    content = {"application/json": {"schema": {"type": "object"}, "example": example}}
    return {"requestBody": {"content": content}}


class HarvestError(Exception):
    """An error answered in Harvest's shape."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _json(data: Any, status: int = 200) -> Response:
    return Response(content=dumps(data).encode(), status_code=status, media_type=JSON)


def _raw(text: str, status: int = 200) -> Response:
    return Response(content=text.encode(), status_code=status, media_type=JSON)


def _int_id(value: str) -> int:
    """Harvest ids are integers; anything else is simply not found."""
    try:
        return int(value)
    except ValueError:
        raise HarvestError(404, NOT_FOUND) from None


async def _payload(request: Request, route: str | None = None) -> dict[str, Any]:
    """The JSON request body with money kept exact (floats parsed as Decimal).

    With ``route`` (a key of ``BODY_PARAMS``), a parameter the endpoint does not document is
    dropped (Harvest ignores it) and noted as undocumented."""
    data = await _body(request)
    documented = BODY_PARAMS.get(route or "")
    if documented is None:
        return data
    for name in [k for k in data if k not in documented]:
        undocumented(request, f"{route}: body parameter {name!r}")
        del data[name]
    return data


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal)
    except ValueError:
        raise HarvestError(422, {"message": "The request body is not valid JSON."}) from None
    if not isinstance(data, dict):
        raise HarvestError(422, {"message": "The request body must be a JSON object."})
    return data


def create_app(ctx: SandboxContext) -> FastAPI:
    """The PSA service: the base app (admin routes, faults) plus the Harvest v2 routes."""
    app = make_base_app("psa", ctx)
    app.description = __doc__ or ""
    store: Store = ctx.stores["psa"]
    faults = ctx.faults_for("psa")
    writer = PsaWriter(store)
    cfg = ctx.config
    limiter = ctx.extras.get("psa_rate_limiter")
    if not isinstance(limiter, TokenBuckets):
        limiter = TokenBuckets(rate_limit_from_env())
        ctx.extras["psa_rate_limiter"] = limiter
    app.state.rate_limiter = limiter
    positions = PagePositions()

    # ------------------------------------------------------------------ errors

    @app.exception_handler(HarvestError)
    async def harvest_error(_: Request, exc: HarvestError) -> Response:
        return Response(
            content=orjson.dumps(exc.body),
            status_code=exc.status,
            media_type=JSON,
            headers=exc.headers,
        )

    @app.exception_handler(Unprocessable)
    async def unprocessable(_: Request, exc: Unprocessable) -> Response:
        return Response(orjson.dumps({"message": str(exc)}), status_code=422, media_type=JSON)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, __: NotFound) -> Response:
        return Response(orjson.dumps(NOT_FOUND), status_code=404, media_type=JSON)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v2/") and exc.status_code == 404:
            return Response(orjson.dumps(NOT_FOUND), status_code=404, media_type=JSON)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    # ------------------------------------------------------------------ auth + rate limit

    async def authenticate(
        request: Request,
        authorization: str | None = Header(None, description="Bearer <access token>"),
        harvest_account_id: str | None = Header(
            None, alias="Harvest-Account-Id", description="The Harvest account to act on"
        ),
        user_agent: str | None = Header(
            None, alias="User-Agent", description="Required: 'App name (contact email)'"
        ),
    ) -> str:
        if not (user_agent or "").strip():
            raise HarvestError(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "A User-Agent header is required: include the name of"
                    " your application and a link to it or your email address.",
                },
            )
        token = None
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        token = token or request.query_params.get("access_token")
        if not token or not secrets.compare_digest(token, cfg.psa_token):
            raise HarvestError(401, INVALID_TOKEN)
        account = harvest_account_id or request.query_params.get("account_id")
        if (account or "").strip() != str(cfg.psa_account_id):
            raise HarvestError(404, NOT_FOUND)
        wait = limiter.acquire(token)
        if wait is not None:
            limit = limiter.limit
            described = (
                f"{limit.requests} requests per {limit.window_seconds:g} seconds" if limit else ""
            )
            raise HarvestError(
                429,
                {"message": f"Too many requests: the limit is {described}. Retry in {wait} s."},
                {"Retry-After": str(wait)},
            )
        return token

    v2 = APIRouter(prefix="/v2", dependencies=[Depends(authenticate)])

    # ------------------------------------------------------------------ reads

    def serve_list(request: Request, spec: ListSpec, parent: int | None = None) -> Response:
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
        known = positions.get(listing, page - 1) if page is not None and page > 1 else None
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
                positions.put(listing, page, rows[-1].seq, rows[-1].id, total)
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
            "first": page_url(
                base, echo, pairs=[("page", "1"), ("per_page", pp), ("ref", "first")]
            ),
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
        faults.after_page(spec.resource, store)
        return Response(content=content, media_type=JSON)

    def serve_one(resource: str, rid: str, parent: int | None = None) -> Response:
        row = store.get_row(resource, _int_id(rid))
        if row is None or (parent is not None and row.parent_id != str(parent)):
            raise HarvestError(404, NOT_FOUND)
        return _raw(row.body)

    def require_parent(resource: str, rid: str) -> int:
        pid = _int_id(rid)
        if store.get_row(resource, pid) is None:
            raise HarvestError(404, NOT_FOUND)
        return pid

    def me() -> dict[str, Any]:
        rows = store.scan_rows("users", order="seq", limit=1)
        if not rows:
            raise HarvestError(404, NOT_FOUND)
        return rows[0].data()

    @v2.get("/users/me", tags=["Users"], summary="Retrieve the currently authenticated user")
    def get_me() -> Response:
        return _json(me())

    def add_list(path: str, name: str) -> None:
        spec = LISTS[name]

        def handler(request: Request) -> Response:
            return serve_list(request, spec)

        v2.add_api_route(
            path,
            handler,
            methods=["GET"],
            summary=spec.summary,
            tags=[spec.tag],
            name=f"list_{name}",
            description=_list_doc(spec),
        )

        def one(request: Request, id: str) -> Response:
            return serve_one(name, id)

        v2.add_api_route(
            f"{path}/{{id}}",
            one,
            methods=["GET"],
            tags=[spec.tag],
            name=f"get_{name}",
            summary=f"Retrieve one of {name.replace('_', ' ')} (404 when missing or deleted)",
        )

    for name in (
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
        add_list(f"/{name}", name)

    # nested lists: project assignments and user rate cards
    def add_nested(parent_resource: str, name: str) -> None:
        spec = LISTS[name]
        path = f"/{parent_resource}/{{parent_id}}/{name}"

        def handler(request: Request, parent_id: str) -> Response:
            return serve_list(request, spec, require_parent(parent_resource, parent_id))

        v2.add_api_route(
            path,
            handler,
            methods=["GET"],
            tags=[spec.tag],
            name=f"list_{parent_resource}_{name}",
            summary=f"{spec.summary} of one {parent_resource.rstrip('s')}",
            description=_list_doc(spec),
        )

        def one(parent_id: str, id: str) -> Response:
            return serve_one(name, id, require_parent(parent_resource, parent_id))

        v2.add_api_route(
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

    @v2.get("/company", tags=["Company"], summary="Retrieve the company of the account")
    def get_company(request: Request) -> Response:
        return _json(
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

    # ------------------------------------------------------------------ writes

    def me_ref() -> dict[str, Any] | None:
        try:
            user = me()
        except HarvestError:
            return None
        name = (
            user.get("name") or f"{user.get('first_name', '')} {user.get('last_name', '')}".strip()
        )
        return {"id": user["id"], "name": name}

    def me_id() -> int | None:
        ref = me_ref()
        return None if ref is None else int(ref["id"])

    def deleted() -> Response:
        return Response(status_code=200)

    simple = {
        "clients": ("Clients", writer.create_client, writer.update_client, writer.delete_client),
        "contacts": ("Clients", writer.create_contact, writer.update_contact, None),
        "projects": (
            "Projects",
            writer.create_project,
            writer.update_project,
            writer.delete_project,
        ),
        "tasks": ("Tasks", writer.create_task, writer.update_task, writer.delete_task),
    }

    def add_writes(name: str) -> None:
        tag, create, update, remove = simple[name]
        label = name.rstrip("s").replace("_", " ")

        async def post(request: Request) -> Response:
            payload = await _payload(request, f"create_{name}")
            return _json(await run_in_threadpool(create, payload), 201)

        async def patch(request: Request, id: str) -> Response:
            payload = await _payload(request, f"update_{name}")
            return _json(await run_in_threadpool(update, _int_id(id), payload))

        def delete(id: str) -> Response:
            rid = _int_id(id)
            if remove is None:
                if not store.delete(name, rid):
                    raise HarvestError(404, NOT_FOUND)
            else:
                remove(rid)
            return deleted()

        v2.add_api_route(
            f"/{name}",
            post,
            methods=["POST"],
            status_code=201,
            tags=[tag],
            summary=f"Create a {label}",
            name=f"create_{name}",
            openapi_extra=_body_doc(f"create_{name}"),
        )
        v2.add_api_route(
            f"/{name}/{{id}}",
            patch,
            methods=["PATCH"],
            tags=[tag],
            summary=f"Update a {label}",
            name=f"update_{name}",
            openapi_extra=_body_doc(f"update_{name}"),
        )
        v2.add_api_route(
            f"/{name}/{{id}}",
            delete,
            methods=["DELETE"],
            tags=[tag],
            summary=f"Delete a {label}",
            name=f"delete_{name}",
        )

    for name in simple:
        add_writes(name)

    assignment_writers = {
        "task_assignments": (writer.create_task_assignment, writer.update_task_assignment),
        "user_assignments": (writer.create_user_assignment, writer.update_user_assignment),
    }

    def add_assignment_writes(name: str) -> None:
        create, update = assignment_writers[name]
        label = name.rstrip("s").replace("_", " ")

        async def post(request: Request, parent_id: str) -> Response:
            pid = require_parent("projects", parent_id)
            payload = await _payload(request, f"create_{name}")
            return _json(await run_in_threadpool(create, pid, payload), 201)

        async def patch(request: Request, parent_id: str, id: str) -> Response:
            pid = require_parent("projects", parent_id)
            payload = await _payload(request, f"update_{name}")
            return _json(await run_in_threadpool(update, pid, _int_id(id), payload))

        def delete(parent_id: str, id: str) -> Response:
            writer.delete_child(name, require_parent("projects", parent_id), _int_id(id))
            return deleted()

        path = f"/projects/{{parent_id}}/{name}"
        v2.add_api_route(
            path,
            post,
            methods=["POST"],
            status_code=201,
            tags=["Projects"],
            summary=f"Create a {label} (with hourly_rate)",
            name=f"create_{name}",
            openapi_extra=_body_doc(f"create_{name}"),
        )
        v2.add_api_route(
            f"{path}/{{id}}",
            patch,
            methods=["PATCH"],
            tags=["Projects"],
            summary=f"Update a {label}",
            name=f"update_{name}",
        )
        v2.add_api_route(
            f"{path}/{{id}}",
            delete,
            methods=["DELETE"],
            tags=["Projects"],
            summary=f"Delete a {label}",
            name=f"delete_{name}",
        )

    for name in assignment_writers:
        add_assignment_writes(name)

    @v2.post(
        "/time_entries",
        status_code=201,
        tags=["Time entries"],
        summary="Create a time entry (duration)",
        openapi_extra=_body_doc("create_time_entry"),
    )
    async def create_time_entry(request: Request) -> Response:
        payload = await _payload(request, "create_time_entry")
        return _json(await run_in_threadpool(writer.create_time_entry, payload, me_id()), 201)

    def note_undocumented(request: Request, what: str, keys: list[str]) -> None:
        """Harvest ignores body keys it does not document; the sandbox ignores them too and
        notes each for the contract check."""
        for key in keys:
            undocumented(request, f"{what}: body parameter {key!r} is not documented")

    @v2.patch(
        "/time_entries/{id}",
        tags=["Time entries"],
        summary="Update a time entry (documented parameters; is_billed/invoice are read-only)",
        openapi_extra=_body_doc("update_time_entry"),
    )
    async def update_time_entry(request: Request, id: str) -> Response:
        payload = await _payload(request)
        extra = undocumented_params(payload, TIME_ENTRY_UPDATE_PARAMS)
        note_undocumented(request, "PATCH /v2/time_entries/{id}", extra)
        return _json(await run_in_threadpool(writer.update_time_entry, _int_id(id), payload))

    @v2.delete("/time_entries/{id}", tags=["Time entries"], summary="Delete a time entry (hard)")
    def delete_time_entry(id: str) -> Response:
        if not store.delete("time_entries", _int_id(id)):
            raise HarvestError(404, NOT_FOUND)
        return deleted()

    @v2.post("/expenses", status_code=201, tags=["Expenses"], summary="Create an expense")
    async def create_expense(request: Request) -> Response:
        payload = await _payload(request, "create_expense")
        return _json(await run_in_threadpool(writer.create_expense, payload, me_id()), 201)

    @v2.patch(
        "/expenses/{id}",
        tags=["Expenses"],
        summary="Update an expense (documented parameters; is_billed/invoice are read-only)",
    )
    async def update_expense(request: Request, id: str) -> Response:
        payload = await _payload(request)
        extra = undocumented_params(payload, EXPENSE_UPDATE_PARAMS)
        note_undocumented(request, "PATCH /v2/expenses/{id}", extra)
        return _json(await run_in_threadpool(writer.update_expense, _int_id(id), payload))

    @v2.delete("/expenses/{id}", tags=["Expenses"], summary="Delete an expense (hard)")
    def delete_expense(id: str) -> Response:
        if not store.delete("expenses", _int_id(id)):
            raise HarvestError(404, NOT_FOUND)
        return deleted()

    @v2.post(
        "/invoices",
        status_code=201,
        tags=["Invoices"],
        summary="Create an invoice: free-form line_items and/or line_items_import of tracked"
        " time and expenses (201; no deduplication)",
        openapi_extra=_body_doc("import_invoice"),
    )
    async def create_invoice(request: Request) -> Response:
        payload = await _payload(request)
        extra = undocumented_params(payload, INVOICE_CREATE_PARAMS)
        note_undocumented(
            request, "POST /v2/invoices", extra + invoice_import_undocumented(payload)
        )
        return _json(await run_in_threadpool(writer.create_invoice, payload, me_ref()), 201)

    @v2.delete(
        "/invoices/{id}",
        tags=["Invoices"],
        summary="Delete an invoice (the time and expenses it imported are uninvoiced again)",
    )
    async def delete_invoice(id: str) -> Response:
        await run_in_threadpool(writer.delete_invoice, _int_id(id))
        return deleted()

    def add_rate_writes(name: str) -> None:
        async def post(request: Request, parent_id: str) -> Response:
            uid = require_parent("users", parent_id)
            payload = await _payload(request, f"create_{name}")
            return _json(await run_in_threadpool(writer.create_rate, name, uid, payload), 201)

        v2.add_api_route(
            f"/users/{{parent_id}}/{name}",
            post,
            methods=["POST"],
            status_code=201,
            tags=["Users"],
            name=f"create_{name}",
            summary=f"Create a {name.rstrip('s').replace('_', ' ')} (ends the previous one)",
            openapi_extra=_body_doc(f"create_{name}") or _body_doc("create_billable_rates"),
        )

    add_rate_writes("billable_rates")
    add_rate_writes("cost_rates")

    app.include_router(v2)

    # ------------------------------------------------------------------ Harvest ID service

    @app.post(
        "/api/v2/oauth2/token",
        tags=["Harvest ID"],
        summary="OAuth2 token (refresh_token grant; the refresh token is the sandbox token)",
    )
    async def oauth_token(request: Request) -> Response:
        form = await request.form()
        refresh = str(form.get("refresh_token") or "")
        if form.get("grant_type") != "refresh_token" or not secrets.compare_digest(
            refresh, cfg.psa_token
        ):
            return Response(
                orjson.dumps(
                    {
                        "error": "invalid_grant",
                        "error_description": "The provided"
                        " authorization grant is invalid, expired or revoked.",
                    }
                ),
                status_code=400,
                media_type=JSON,
            )
        return _json(
            {
                "access_token": cfg.psa_token,
                "refresh_token": cfg.psa_token,
                "token_type": "bearer",
                "expires_in": 1_209_600,
            }
        )

    @app.get("/api/v2/accounts", tags=["Harvest ID"], summary="Accounts the token can reach")
    def accounts(authorization: str | None = Header(None)) -> Response:
        token = (
            (authorization or "")[7:].strip()
            if (authorization or "")[:7].lower() == "bearer "
            else ""
        )
        if not token or not secrets.compare_digest(token, cfg.psa_token):
            raise HarvestError(401, INVALID_TOKEN)
        user = me_ref() or {"id": 1, "name": "Sandbox Admin"}
        first, _, last = str(user["name"]).partition(" ")
        return _json(
            {
                "user": {
                    "id": user["id"],
                    "first_name": first,
                    "last_name": last,
                    "email": "admin@sandbox.erpsync.test",
                },
                "accounts": [
                    {
                        "id": int(cfg.psa_account_id),
                        "name": "erpsync sandbox firm",
                        "product": "harvest",
                    }
                ],
            }
        )

    # ------------------------------------------------------------------ admin: rate limit

    @app.get("/__admin/psa/rate_limit", tags=["admin"], summary="The PSA rate limit in force")
    def get_rate_limit() -> dict[str, Any]:
        limit = limiter.limit
        return {
            "spec": None if limit is None else f"{limit.requests}/{limit.window_seconds:g}",
            "env": RATE_LIMIT_ENV,
        }

    @app.put(
        "/__admin/psa/rate_limit",
        tags=["admin"],
        summary="Change the PSA rate limit ({'spec': '100/15'} or {'spec': 'off'})",
    )
    async def put_rate_limit(request: Request) -> Response:
        body = await _payload(request)
        try:
            limiter.configure(parse_rate_limit(str(body.get("spec", "off"))))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return _json(get_rate_limit())

    return app


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
