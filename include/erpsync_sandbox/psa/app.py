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

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from erpsync_sandbox.common import make_base_app
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.psa.ratelimit import TokenBuckets, rate_limit_from_env
from erpsync_sandbox.psa.routes import (
    admin,
    expenses,
    harvest_id,
    invoices,
    lists,
    rates,
    setup,
    time_entries,
)
from erpsync_sandbox.psa.routes.base import JSON, NOT_FOUND, HarvestError, PsaState
from erpsync_sandbox.psa.writes import NotFound, PsaWriter, Unprocessable

__all__ = ["ROUTERS", "create_app"]

#: The Harvest routers (one module per resource group under :mod:`erpsync_sandbox.psa.routes`),
#: in matching order (``/v2/users/me`` before ``/v2/users/{id}``).
ROUTERS: tuple[APIRouter, ...] = (
    lists.router,
    setup.router,
    time_entries.router,
    expenses.router,
    invoices.router,
    rates.router,
    harvest_id.router,
    admin.router,
)


async def harvest_error(_: Request, exc: Exception) -> Response:
    """A :class:`HarvestError` in Harvest's shape (status, body, headers)."""
    assert isinstance(exc, HarvestError)
    return Response(
        content=orjson.dumps(exc.body),
        status_code=exc.status,
        media_type=JSON,
        headers=exc.headers,
    )


async def unprocessable(_: Request, exc: Exception) -> Response:
    return Response(orjson.dumps({"message": str(exc)}), status_code=422, media_type=JSON)


async def not_found(_: Request, __: Exception) -> Response:
    return Response(orjson.dumps(NOT_FOUND), status_code=404, media_type=JSON)


async def http_error(request: Request, exc: Exception) -> Response:
    """Harvest's 404 body for an unknown ``/v2/`` path; FastAPI's shape elsewhere."""
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith("/v2/") and exc.status_code == 404:
        return Response(orjson.dumps(NOT_FOUND), status_code=404, media_type=JSON)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


#: Lists read by project and date range (``project_id`` + ``from``/``to``: the billed-state step
#: and the delete check read a project's month): indexed, so a large firm's store answers them
#: without scanning every time entry. Storage only: no field or parameter is added. Harvest
#: documents those filters on "List all time entries"
#: (https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/#list-all-time-entries)
#: and "List all expenses"
#: (https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/#list-all-expenses).
INDEXED_BY_PROJECT_AND_DATE = ("time_entries", "expenses")


def create_app(ctx: SandboxContext) -> FastAPI:
    """The PSA service: the base app (admin routes, faults) plus the Harvest v2 routes."""
    app = make_base_app("psa", ctx)
    app.description = __doc__ or ""
    store = ctx.stores["psa"]
    for resource in INDEXED_BY_PROJECT_AND_DATE:
        store.ensure_index(resource, ("project.id", "spent_date"))
    limiter = ctx.extras.get("psa_rate_limiter")
    if not isinstance(limiter, TokenBuckets):
        limiter = TokenBuckets(rate_limit_from_env())
        ctx.extras["psa_rate_limiter"] = limiter
    app.state.rate_limiter = limiter
    app.state.psa = PsaState(
        store=store,
        faults=ctx.faults_for("psa"),
        writer=PsaWriter(store),
        config=ctx.config,
        limiter=limiter,
    )
    app.add_exception_handler(HarvestError, harvest_error)
    app.add_exception_handler(Unprocessable, unprocessable)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for router in ROUTERS:
        app.include_router(router)
    return app
