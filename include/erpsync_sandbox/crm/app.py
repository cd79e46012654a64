"""The sandbox CRM: a Salesforce REST API (v60.0 and nearby versions) subset over the CRM store.

``create_app(ctx)`` builds on :func:`erpsync_sandbox.common.make_base_app` (admin routes, fault
middleware) and serves what a Salesforce replication client uses, so a connector written for
Salesforce works by changing the instance URL and credentials:

* ``POST /services/oauth2/token`` (client_credentials / password grants), bearer sessions on
  ``/services/data/v*/**`` (401 ``INVALID_SESSION_ID``);
* ``GET /services/data/`` (versions), ``/services/data/vXX.X/`` (resources), ``/limits``;
* ``GET /query?q=`` and ``/queryAll?q=`` (SOQL subset, see :mod:`.soql`), paging with
  ``Sforce-Query-Options: batchSize=N`` and ``nextRecordsUrl`` server-side cursors (see
  :mod:`.query`);
* ``GET /sobjects/{type}/deleted/?start=&end=`` (delete log with a retention window);
* ``GET|PATCH|DELETE /sobjects/{type}/{id}`` (PATCH: 204, 404 ``ENTITY_IS_DELETED`` for a
  deleted record), ``POST /sobjects/{type}``, ``GET|PATCH /sobjects/{type}/{extIdField}/{value}``
  (external-id upsert; external-ID fields only: ``Id`` there is refused 404 and recorded as
  undocumented, since "In REST API, upsert uses external ids, not record ids"), ``describe``;
* strict fields: only :mod:`.schema`'s fields exist (``INVALID_FIELD`` otherwise, in SOQL and in
  write bodies; read-only ones ``INVALID_FIELD_FOR_INSERT_UPDATE``); SOQL ``dateTime`` literals
  outside the documented forms are accepted but recorded as undocumented;
* ``Sforce-Limit-Info: api-usage=N/M`` on every response and the daily request quota (403
  ``REQUEST_LIMIT_EXCEEDED``, no ``Retry-After``); errors as Salesforce's JSON arrays.

Choices where Salesforce's behaviour is not fully documented (see also the module docs of
:mod:`.query` and :mod:`.auth`):

* Upsert that updates answers **200** with ``{id, success, errors, created: false}`` from API
  v46.0 on (what current Salesforce documents) and 204 for older versions; creates answer 201
  with ``created: true``.
* ``/deleted`` with ``start`` before ``earliestDateAvailable`` still answers 200 with the
  deletions the log still holds and ``earliestDateAvailable``, so the client can see that the
  window was exceeded and run a full resync. Seconds of ``start``/``end`` are ignored (as
  documented); the range is ``[start, latestDateCovered)`` with ``latestDateCovered =
  min(end, now)`` truncated to the minute, so consecutive calls neither miss nor repeat entries.
  Soft-deleted rows older than the window are also gone from ``queryAll`` (recycle bin emptied).
* The daily quota is a fixed 24-hour window that starts at the first counted request (real
  Salesforce uses a rolling 24 h); only authenticated ``/services/data/v*`` calls count.

Configuration (env, also settable at run time with ``PUT /__admin/crm``):
``ERPSYNC_SANDBOX_CRM_DAILY_LIMIT`` (100000), ``ERPSYNC_SANDBOX_CRM_DELETED_RETENTION_DAYS`` (15),
``ERPSYNC_SANDBOX_CRM_EARLIEST_DELETED`` (ISO datetime: pretend the delete log was purged up to
it), ``ERPSYNC_SANDBOX_CRM_LOCATOR_TTL_SECONDS`` (900), ``ERPSYNC_SANDBOX_CRM_MAX_OPEN_CURSORS``
(10), ``ERPSYNC_SANDBOX_CRM_SESSION_SECONDS`` (7200), ``ERPSYNC_SANDBOX_CRM_USERNAME`` /
``_PASSWORD`` (password grant).

Salesforce REST API reference:
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/intro_rest.htm
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from erpsync_sandbox.common import make_base_app
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.contract import undocumented

from . import soql
from .auth import SessionAuthority, TokenError, credentials_from
from .query import CursorRegistry
from .records import SfError
from .routes import admin, discovery, oauth, query, replication, sobjects
from .routes.base import JSON_TYPE, SERVICE, CrmState, json_reply, not_found
from .settings import CrmSettings, Quota

__all__ = ["ROUTERS", "CrmSettings", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The Salesforce routers (one module per resource group under :mod:`.routes`), in matching
#: order.
ROUTERS: tuple[APIRouter, ...] = (
    oauth.router,
    discovery.router,
    query.router,
    replication.router,
    sobjects.router,
    admin.router,
)

# --------------------------------------------------------------------------- edge middleware


def _error_array(message: str, code: str) -> bytes:
    return orjson.dumps([{"message": message, "errorCode": code}])


class SalesforceEdge:
    """Outermost middleware: bearer check and quota on ``/services/data/v*``, and
    ``Sforce-Limit-Info`` on every response."""

    def __init__(
        self, app: ASGIApp, auth: SessionAuthority, quota: Quota, settings: CrmSettings
    ) -> None:
        self.app = app
        self.auth = auth
        self.quota = quota
        self.settings = settings

    def _header(self) -> tuple[bytes, bytes]:
        value = f"api-usage={self.quota.current()}/{self.settings.daily_limit}"
        return (b"sforce-limit-info", value.encode())

    async def _reply(self, send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", JSON_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    self._header(),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/services/data/v"):
            authorization = None
            for key, value in scope.get("headers", []):
                if key == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            if not self.auth.check(authorization):
                await self._reply(
                    send, 401, _error_array("Session expired or invalid", "INVALID_SESSION_ID")
                )
                return
            if not self.quota.consume(self.settings.daily_limit):
                await self._reply(
                    send,
                    403,
                    _error_array("TotalRequests Limit exceeded.", "REQUEST_LIMIT_EXCEEDED"),
                )
                return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h for h in message.get("headers", []) if h[0].lower() != b"sforce-limit-info"
                ]
                headers.append(self._header())
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_header)


# --------------------------------------------------------------------------- errors

#: Refusals that mean the client used something outside Salesforce's contract (noted for the
#: contract log as well as answered as Salesforce answers).
_CONTRACT_REFUSALS = frozenset(
    {"INVALID_FIELD", "INVALID_FIELD_FOR_INSERT_UPDATE", "MALFORMED_QUERY", "INVALID_TYPE"}
)


async def sf_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SfError)
    if exc.code in _CONTRACT_REFUSALS:  # a field or query Salesforce does not have
        undocumented(request, f"{exc.code}: {exc.message}")
    return json_reply(exc.body(), exc.status)


async def soql_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, soql.SoqlError)
    if exc.code in _CONTRACT_REFUSALS:
        undocumented(request, f"{exc.code}: {exc.message}")
    return json_reply([{"message": exc.message, "errorCode": exc.code}], exc.status)


async def token_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TokenError)
    return json_reply({"error": exc.error, "error_description": exc.description}, exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith("/__admin") or request.url.path in (
        "/docs",
        "/openapi.json",
    ):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    if exc.status_code == 405:
        return json_reply(
            [
                {
                    "message": f"HTTP Method '{request.method}' not allowed.",
                    "errorCode": "METHOD_NOT_ALLOWED",
                }
            ],
            405,
        )
    if exc.status_code == 404:
        return json_reply(not_found().body(), 404)
    return json_reply(
        [{"message": str(exc.detail), "errorCode": "UNKNOWN_EXCEPTION"}], exc.status_code
    )


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if request.url.path.startswith("/__admin"):
        return JSONResponse({"detail": exc.errors()}, status_code=422)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return json_reply(
        [
            {
                "message": f"{where}: {first.get('msg', 'invalid request')}",
                "errorCode": "MALFORMED_QUERY" if "q" in where else "INVALID_INPUT",
            }
        ],
        400,
    )


# --------------------------------------------------------------------------- app


def create_app(ctx: SandboxContext) -> FastAPI:
    """The sandbox CRM app on top of the shared base app (admin routes, fault middleware)."""
    app = make_base_app(SERVICE, ctx)
    app.title = "erpsync sandbox CRM (Salesforce REST API v60.0 subset)"
    app.description = (
        "Salesforce REST emulation for erpsync: OAuth2 token endpoint, SOQL query/queryAll with "
        "server-side cursors, deleted-records feed, sObject CRUD and external-id upsert, daily "
        "API quota. Get a token at `POST /services/oauth2/token` (client_credentials), then "
        "send `Authorization: Bearer <access_token>`."
    )
    store = ctx.stores[SERVICE]
    settings = CrmSettings.from_env()
    auth = SessionAuthority(
        credentials_from(ctx.config.crm_client_id, ctx.config.crm_client_secret),
        session_seconds=settings.session_seconds,
    )
    auth.generation = int(store.meta_get("crm_session_generation", 0) or 0)
    quota = Quota()
    cursors = CursorRegistry(
        ttl_seconds=settings.locator_ttl_seconds, max_open=settings.max_open_cursors
    )
    state = CrmState(
        store=store,
        faults=ctx.faults_for(SERVICE),
        clock=ctx.clock,
        settings=settings,
        auth=auth,
        quota=quota,
        cursors=cursors,
    )
    ctx.extras["crm"] = state
    app.state.crm = state
    app.add_middleware(SalesforceEdge, auth=auth, quota=quota, settings=settings)
    app.add_exception_handler(SfError, sf_error)
    app.add_exception_handler(soql.SoqlError, soql_error)
    app.add_exception_handler(TokenError, token_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for router in ROUTERS:
        app.include_router(router)
    return app
