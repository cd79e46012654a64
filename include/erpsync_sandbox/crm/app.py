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

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import orjson
from fastapi import Body, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from erpsync_sandbox.common import SandboxContext, make_base_app
from erpsync_sandbox.contract import undocumented
from erpsync_sandbox.store import Store, format_stamp, parse_iso, to_iso

from . import soql
from .auth import SessionAuthority, TokenError, credentials_from
from .query import (
    CursorRegistry,
    batch_size_from,
    page_payload,
    render_bodies,
    render_ids,
    run_query,
)
from .records import SfError, create, find_by_external_id, soft_delete, update
from .schema import SCHEMAS, SObjectSchema, looks_like_id, resolve_sobject

__all__ = ["CrmSettings", "create_app"]

SERVICE = "crm"
JSON_TYPE = "application/json;charset=UTF-8"
#: API versions the sandbox answers (``/services/data/vXX.X``).
VERSIONS = [f"{v}.0" for v in range(31, 65)]
_VERSION_SET = {f"v{v}" for v in VERSIONS}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _release_label(version: str) -> str:
    k = int(float(version)) - 60
    season = ("Spring", "Summer", "Winter")[k % 3]
    year = 24 + k // 3 + (1 if season == "Winter" else 0)
    return f"{season} '{year:02d}"


# --------------------------------------------------------------------------- settings


@dataclass
class CrmSettings:
    """Run-time knobs of the sandbox CRM (env defaults, ``PUT /__admin/crm`` to change)."""

    #: Enterprise Edition's documented daily allocation is 100,000 + 1,000 per Salesforce
    #: licence (+ purchased add-ons) per rolling 24 h; the default is that base, i.e. an org
    #: whose licences add nothing (developer.salesforce.com, "Salesforce Developer Limits and
    #: Allocations Quick Reference" > "API Request Limits and Allocations").
    daily_limit: int = 100_000
    deleted_retention_days: float = 15.0
    earliest_deleted: str | None = None
    locator_ttl_seconds: float = 900.0
    max_open_cursors: int = 10
    session_seconds: int = 7200

    @classmethod
    def from_env(cls) -> CrmSettings:
        env = os.environ
        s = cls()
        s.daily_limit = int(env.get("ERPSYNC_SANDBOX_CRM_DAILY_LIMIT", s.daily_limit))
        s.deleted_retention_days = float(
            env.get("ERPSYNC_SANDBOX_CRM_DELETED_RETENTION_DAYS", s.deleted_retention_days)
        )
        s.earliest_deleted = env.get("ERPSYNC_SANDBOX_CRM_EARLIEST_DELETED") or None
        s.locator_ttl_seconds = float(
            env.get("ERPSYNC_SANDBOX_CRM_LOCATOR_TTL_SECONDS", s.locator_ttl_seconds)
        )
        s.max_open_cursors = int(
            env.get("ERPSYNC_SANDBOX_CRM_MAX_OPEN_CURSORS", s.max_open_cursors)
        )
        s.session_seconds = int(env.get("ERPSYNC_SANDBOX_CRM_SESSION_SECONDS", s.session_seconds))
        return s


class Quota:
    """The org's daily API request count (fixed 24 h window from the first counted call)."""

    WINDOW = 86_400.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.used = 0
        self._window_start = time.monotonic()

    def _roll(self) -> None:
        if time.monotonic() - self._window_start >= self.WINDOW:
            self.used = 0
            self._window_start = time.monotonic()

    def consume(self, limit: int) -> bool:
        """Count one call; False (not counted) if the quota is spent."""
        with self._lock:
            self._roll()
            if self.used >= limit:
                return False
            self.used += 1
            return True

    def current(self) -> int:
        with self._lock:
            self._roll()
            return self.used

    def set(self, used: int) -> None:
        with self._lock:
            self.used = max(0, used)
            self._window_start = time.monotonic()


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


# --------------------------------------------------------------------------- helpers


_JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": {"Name": "Acme GmbH", "BillingCountry": "DE"},
            }
        },
    }
}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = payload if isinstance(payload, bytes) else orjson.dumps(payload, default=_default)
    return Response(content=content, status_code=status, media_type=JSON_TYPE, headers=headers)


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return orjson.Fragment(format(obj, "f"))
    raise TypeError(type(obj).__name__)


def _version(version: str) -> str:
    if version not in _VERSION_SET:
        raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
    return version[1:]


def _not_found() -> SfError:
    return SfError(404, "NOT_FOUND", "The requested resource does not exist")


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SfError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None
    if not isinstance(data, dict):
        raise SfError(
            400,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of SObject out of START_ARRAY token",
        )
    return data


def _full_record(
    body: dict[str, Any], schema: SObjectSchema, version: str, fields: list[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": {
            "type": schema.name,
            "url": f"/services/data/v{version}/sobjects/{schema.name}/{body.get('Id')}",
        }
    }
    for name in fields or schema.names:
        out[name] = body.get(name)
    return out


def _sf_datetime(moment: dt.datetime) -> str:
    return format_stamp(to_iso(moment), "salesforce")


def _parse_replication_date(name: str, value: str | None) -> dt.datetime:
    if not value:
        raise SfError(400, "MISSING_ARGUMENT", f"Missing required parameter: {name}")
    text = value.strip().replace(" ", "+").rstrip(":")
    try:
        moment = parse_iso(text)
    except ValueError:
        raise SfError(
            400, "INVALID_REPLICATION_DATE", f"Unable to parse {name} date: {value}"
        ) from None
    return moment.replace(second=0, microsecond=0)


# --------------------------------------------------------------------------- app


#: Refusals that mean the client used something outside Salesforce's contract (noted for the
#: contract log as well as answered as Salesforce answers).
_CONTRACT_REFUSALS = frozenset(
    {"INVALID_FIELD", "INVALID_FIELD_FOR_INSERT_UPDATE", "MALFORMED_QUERY", "INVALID_TYPE"}
)


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
    store: Store = ctx.stores[SERVICE]
    faults = ctx.faults_for(SERVICE)
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
    state = {"settings": settings, "auth": auth, "quota": quota, "cursors": cursors}
    ctx.extras["crm"] = state
    app.state.crm = state
    app.add_middleware(SalesforceEdge, auth=auth, quota=quota, settings=settings)

    def schema_for(sobject: str) -> SObjectSchema:
        # strict: only the declared fields exist; a key a stored record holds beyond them is
        # neither queryable nor returned (Salesforce: INVALID_FIELD)
        return SCHEMAS[sobject]

    def sobject_schema(name: str) -> SObjectSchema:
        canon = resolve_sobject(name)
        if canon is None:
            raise _not_found()
        return schema_for(canon)

    def now_dt() -> dt.datetime:
        return ctx.clock.now_dt()

    def earliest_available() -> dt.datetime:
        moment = now_dt() - dt.timedelta(days=settings.deleted_retention_days)
        if settings.earliest_deleted:
            moment = max(moment, parse_iso(settings.earliest_deleted))
        return moment.replace(second=0, microsecond=0)

    # ------------------------------------------------------------------ errors

    @app.exception_handler(SfError)
    async def sf_error(request: Request, exc: SfError) -> Response:
        if exc.code in _CONTRACT_REFUSALS:  # a field or query Salesforce does not have
            undocumented(request, f"{exc.code}: {exc.message}")
        return _json(exc.body(), exc.status)

    @app.exception_handler(soql.SoqlError)
    async def soql_error(request: Request, exc: soql.SoqlError) -> Response:
        if exc.code in _CONTRACT_REFUSALS:
            undocumented(request, f"{exc.code}: {exc.message}")
        return _json([{"message": exc.message, "errorCode": exc.code}], exc.status)

    @app.exception_handler(TokenError)
    async def token_error(request: Request, exc: TokenError) -> Response:
        return _json({"error": exc.error, "error_description": exc.description}, exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/__admin") or request.url.path in (
            "/docs",
            "/openapi.json",
        ):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        if exc.status_code == 405:
            return _json(
                [
                    {
                        "message": f"HTTP Method '{request.method}' not allowed.",
                        "errorCode": "METHOD_NOT_ALLOWED",
                    }
                ],
                405,
            )
        if exc.status_code == 404:
            return _json(_not_found().body(), 404)
        return _json(
            [{"message": str(exc.detail), "errorCode": "UNKNOWN_EXCEPTION"}], exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/__admin"):
            return JSONResponse({"detail": exc.errors()}, status_code=422)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _json(
            [
                {
                    "message": f"{where}: {first.get('msg', 'invalid request')}",
                    "errorCode": "MALFORMED_QUERY" if "q" in where else "INVALID_INPUT",
                }
            ],
            400,
        )

    # ------------------------------------------------------------------ OAuth

    @app.post(
        "/services/oauth2/token",
        tags=["OAuth"],
        summary="Get an access token (client_credentials or password grant)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["grant_type"],
                            "properties": {
                                "grant_type": {
                                    "type": "string",
                                    "enum": ["client_credentials", "password"],
                                },
                                "client_id": {"type": "string"},
                                "client_secret": {"type": "string"},
                                "username": {"type": "string"},
                                "password": {"type": "string"},
                            },
                        }
                    }
                },
            }
        },
    )
    async def token(request: Request) -> Response:
        raw = await request.body()
        instance_url = str(request.base_url).rstrip("/")
        return _json(auth.grant(raw, request.headers.get("authorization"), instance_url))

    # ------------------------------------------------------------------ discovery

    @app.get(
        "/services/data", tags=["Versions"], summary="List API versions", include_in_schema=False
    )
    @app.get("/services/data/", tags=["Versions"], summary="List API versions")
    def versions() -> Response:
        return _json(
            [
                {"label": _release_label(v), "url": f"/services/data/v{v}", "version": v}
                for v in VERSIONS
            ]
        )

    @app.get("/services/data/{version}", tags=["Versions"], include_in_schema=False)
    @app.get(
        "/services/data/{version}/",
        tags=["Versions"],
        summary="List the resources of an API version",
    )
    def resources(version: str) -> Response:
        v = _version(version)
        base = f"/services/data/v{v}"
        names = ["sobjects", "query", "queryAll", "limits"]
        return _json({n: f"{base}/{n}" for n in names})

    @app.get("/services/data/{version}/limits", tags=["Limits"], include_in_schema=False)
    @app.get(
        "/services/data/{version}/limits/",
        tags=["Limits"],
        summary="Org limits (DailyApiRequests reflects the sandbox quota)",
    )
    def limits(version: str) -> Response:
        _version(version)
        used = quota.current()
        return _json(
            {
                "DailyApiRequests": {
                    "Max": settings.daily_limit,
                    "Remaining": max(0, settings.daily_limit - used),
                },
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                "DataStorageMB": {"Max": 1024, "Remaining": 1000},
                "SingleEmail": {"Max": 5000, "Remaining": 5000},
            }
        )

    @app.get("/services/data/{version}/sobjects", tags=["SObjects"], include_in_schema=False)
    @app.get(
        "/services/data/{version}/sobjects/",
        tags=["SObjects"],
        summary="Describe global: the sObjects the sandbox serves",
    )
    def describe_global(version: str) -> Response:
        v = _version(version)
        return _json(
            {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [schema_for(name).summary(v) for name in SCHEMAS],
            }
        )

    # ------------------------------------------------------------------ query

    def start_query(
        request: Request,
        version: str,
        q: str | None,
        options: str | None,
        include_deleted: bool,
    ) -> Response:
        v = _version(version)
        if q is None:
            raise SfError(400, "MALFORMED_QUERY", "A query string must be provided.")
        parsed = soql.parse(q)
        for note in parsed.undocumented:
            undocumented(request, note)
        canon = resolve_sobject(parsed.sobject)
        if canon is None:
            raise soql.error_at(
                q,
                parsed.sobject_pos,
                f"sObject type '{parsed.sobject}' is not supported. If you are attempting to"
                " use a custom object, be sure to append the '__c' after the entity name."
                " Please reference your WSDL or the describe call for the appropriate names.",
                "INVALID_TYPE",
            )
        schema = schema_for(canon)
        compiled = soql.compile_query(q, schema, parsed, today=now_dt().date())
        batch = batch_size_from(options)
        purged = to_iso(earliest_available()) if include_deleted else None
        result = run_query(
            store,
            compiled,
            include_deleted=include_deleted,
            first_batch=batch,
            purged_before=purged,
        )
        if result.count_only:
            if result.aggregate is None:
                return _json({"totalSize": result.total, "done": True, "records": []})
            return _json(
                {
                    "totalSize": 1,
                    "done": True,
                    "records": [
                        {"attributes": {"type": "AggregateResult"}, "expr0": result.aggregate}
                    ],
                }
            )
        cursor = None
        next_offset = None
        if result.total > batch:
            cursor = cursors.open(
                canon,
                compiled.fields,
                result.ids,
                batch=batch,
                version=v,
                include_deleted=include_deleted,
            )
            next_offset = batch
        if result.first is not None:
            records = render_bodies(result.first, canon, compiled.fields, v)
        else:
            records = render_ids(store, canon, compiled.fields, v, result.ids[:batch])
        payload = page_payload(cursor, result.total, records, version=v, next_offset=next_offset)
        faults.after_page(canon, store)
        return _json(payload)

    def continue_query(version: str, locator: str) -> Response:
        v = _version(version)
        loc, sep, off = locator.rpartition("-")
        cursor = cursors.get(loc) if sep else None
        if cursor is None or not off.isdigit() or int(off) >= len(cursor.ids):
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        offset = int(off)
        ids = cursor.ids[offset : offset + cursor.batch]
        records = render_ids(store, cursor.sobject, cursor.fields, v, ids)
        end = offset + len(ids)
        payload = page_payload(
            cursor,
            len(cursor.ids),
            records,
            version=v,
            next_offset=end if end < len(cursor.ids) else None,
        )
        faults.after_page(cursor.sobject, store)
        return _json(payload)

    q_param = Query(
        None,
        description="SOQL, e.g. SELECT Id, Name FROM Account "
        "WHERE SystemModstamp > 2026-01-01T00:00:00Z ORDER BY SystemModstamp",
    )
    options_header = Header(
        None, alias="Sforce-Query-Options", description="batchSize=200..2000 (default 2000)"
    )

    @app.get(
        "/services/data/{version}/query",
        tags=["Query"],
        summary="Run a SOQL query (first batch; follow nextRecordsUrl)",
    )
    @app.get("/services/data/{version}/query/", tags=["Query"], include_in_schema=False)
    def query(
        request: Request,
        version: str,
        q: str | None = q_param,
        sforce_query_options: str | None = options_header,
    ) -> Response:
        return start_query(request, version, q, sforce_query_options, include_deleted=False)

    @app.get(
        "/services/data/{version}/queryAll",
        tags=["Query"],
        summary="Run a SOQL query including soft-deleted rows (IsDeleted = true)",
    )
    @app.get("/services/data/{version}/queryAll/", tags=["Query"], include_in_schema=False)
    def query_all(
        request: Request,
        version: str,
        q: str | None = q_param,
        sforce_query_options: str | None = options_header,
    ) -> Response:
        return start_query(request, version, q, sforce_query_options, include_deleted=True)

    @app.get(
        "/services/data/{version}/query/{locator}",
        tags=["Query"],
        summary="Next batch of a query (the nextRecordsUrl locator)",
    )
    def query_more(version: str, locator: str) -> Response:
        return continue_query(version, locator)

    @app.get(
        "/services/data/{version}/queryAll/{locator}",
        tags=["Query"],
        summary="Next batch of a queryAll",
    )
    def query_all_more(version: str, locator: str) -> Response:
        return continue_query(version, locator)

    # ------------------------------------------------------------------ deleted feed

    @app.get(
        "/services/data/{version}/sobjects/{sobject}/deleted",
        tags=["SObjects"],
        include_in_schema=False,
    )
    @app.get(
        "/services/data/{version}/sobjects/{sobject}/deleted/",
        tags=["SObjects"],
        summary="Records deleted between start and end (delete log, retention window)",
    )
    def deleted(
        version: str,
        sobject: str,
        start: str | None = Query(None, description="ISO-8601 date-time (seconds ignored)"),
        end: str | None = Query(None, description="ISO-8601 date-time (seconds ignored)"),
    ) -> Response:
        _version(version)
        schema = sobject_schema(sobject)
        lo = _parse_replication_date("start", start)
        hi = _parse_replication_date("end", end)
        if lo > hi:
            raise SfError(
                400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate"
            )
        earliest = earliest_available()
        latest = min(hi, now_dt().replace(second=0, microsecond=0))
        lo_eff = max(lo, earliest)
        records: list[dict[str, str]] = []
        if lo_eff < latest:
            entries = store.deleted_since(
                schema.name, to_iso(lo_eff), to_iso(latest - dt.timedelta(microseconds=1))
            )
            if len(entries) > 600_000:
                raise SfError(
                    400,
                    "EXCEEDED_ID_LIMIT",
                    "record limit reached. cannot submit more than 600000 records",
                )
            records = [
                {"id": e["id"], "deletedDate": format_stamp(e["deletedDate"], "salesforce")}
                for e in entries
            ]
        return _json(
            {
                "deletedRecords": records,
                "earliestDateAvailable": _sf_datetime(earliest),
                "latestDateCovered": _sf_datetime(latest),
            }
        )

    @app.get(
        "/services/data/{version}/sobjects/{sobject}/updated",
        tags=["SObjects"],
        include_in_schema=False,
    )
    @app.get(
        "/services/data/{version}/sobjects/{sobject}/updated/",
        tags=["SObjects"],
        summary="Ids of records created or updated between start and end",
    )
    def updated(
        version: str,
        sobject: str,
        start: str | None = Query(None, description="ISO-8601 date-time (seconds ignored)"),
        end: str | None = Query(None, description="ISO-8601 date-time (seconds ignored)"),
    ) -> Response:
        _version(version)
        schema = sobject_schema(sobject)
        lo = _parse_replication_date("start", start)
        hi = _parse_replication_date("end", end)
        if lo > hi:
            raise SfError(
                400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate"
            )
        latest = min(hi, now_dt().replace(second=0, microsecond=0))
        ids: list[str] = []
        if lo < latest:
            rows = store.scan_rows(
                schema.name, order="modstamp", modstamp_ge=to_iso(lo), modstamp_lt=to_iso(latest)
            )
            ids = [r.id for r in rows]
            if len(ids) > 600_000:
                raise SfError(
                    400,
                    "EXCEEDED_ID_LIMIT",
                    "record limit reached. cannot submit more than 600000 records",
                )
        return _json({"ids": ids, "latestDateCovered": _sf_datetime(latest)})

    # ------------------------------------------------------------------ sObjects

    @app.get(
        "/services/data/{version}/sobjects/{sobject}/describe",
        tags=["SObjects"],
        summary="Describe an sObject (fields and their types)",
    )
    @app.get(
        "/services/data/{version}/sobjects/{sobject}/describe/",
        tags=["SObjects"],
        include_in_schema=False,
    )
    def describe(version: str, sobject: str) -> Response:
        v = _version(version)
        return _json(sobject_schema(sobject).describe(v))

    @app.get(
        "/services/data/{version}/sobjects/{sobject}",
        tags=["SObjects"],
        summary="Basic information about an sObject",
    )
    @app.get(
        "/services/data/{version}/sobjects/{sobject}/", tags=["SObjects"], include_in_schema=False
    )
    def sobject_info(version: str, sobject: str) -> Response:
        v = _version(version)
        return _json({"objectDescribe": sobject_schema(sobject).summary(v), "recentItems": []})

    @app.post(
        "/services/data/{version}/sobjects/{sobject}",
        tags=["SObjects"],
        summary="Create a record (201 {id, success, errors})",
        status_code=201,
        openapi_extra=_JSON_BODY,
    )
    @app.post(
        "/services/data/{version}/sobjects/{sobject}/", tags=["SObjects"], include_in_schema=False
    )
    async def create_record(
        version: str,
        sobject: str,
        request: Request,
    ) -> Response:
        _version(version)
        schema = sobject_schema(sobject)
        body = create(store, schema, _parse_body(await request.body()))
        return _json({"id": body["Id"], "success": True, "errors": []}, 201)

    @app.get(
        "/services/data/{version}/sobjects/{sobject}/{record_id}",
        tags=["SObjects"],
        summary="Get a record by id (optionally ?fields=a,b)",
    )
    def get_record(
        version: str,
        sobject: str,
        record_id: str,
        fields: str | None = Query(None, description="comma-separated field names"),
    ) -> Response:
        v = _version(version)
        schema = sobject_schema(sobject)
        if not looks_like_id(record_id):
            raise SfError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {record_id}",
            )
        row = store.get_row(schema.name, _full_id(record_id))
        if row is None:
            raise _not_found()
        names = _field_list(schema, fields)
        return _json(_full_record(row.data(), schema, v, names))

    @app.patch(
        "/services/data/{version}/sobjects/{sobject}/{record_id}",
        tags=["SObjects"],
        summary="Update a record (204)",
        status_code=204,
        openapi_extra=_JSON_BODY,
    )
    async def update_record(
        version: str,
        sobject: str,
        record_id: str,
        request: Request,
    ) -> Response:
        _version(version)
        schema = sobject_schema(sobject)
        data = _parse_body(await request.body())
        if not looks_like_id(record_id):
            raise _not_found()
        rid = _full_id(record_id)
        if update(store, schema, rid, data) is None:
            row = store.get_row(schema.name, rid, include_deleted=True)
            if row is not None and row.deleted:
                raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
            raise _not_found()
        return Response(status_code=204)

    @app.delete(
        "/services/data/{version}/sobjects/{sobject}/{record_id}",
        tags=["SObjects"],
        summary="Delete a record (soft delete, 204)",
        status_code=204,
    )
    async def delete_record(version: str, sobject: str, record_id: str) -> Response:
        _version(version)
        schema = sobject_schema(sobject)
        rid = _full_id(record_id)
        row = (
            store.get_row(schema.name, rid, include_deleted=True)
            if looks_like_id(record_id)
            else None
        )
        if row is None:
            raise _not_found()
        if row.deleted or not soft_delete(store, schema, rid):
            raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return Response(status_code=204)

    def ext_field(request: Request, schema: SObjectSchema, name: str) -> str:
        f = schema.lookup(name)
        if f is not None and f.name == "Id":
            # REST upsert/retrieve by external ID takes external-ID fields only ("In REST API,
            # upsert uses external ids, not record ids"); Id is documented only for POST
            # .../{sobject}/Id (create). Update a known record with PATCH .../{sobject}/{id}.
            # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
            undocumented(request, f"record Id used as external ID field ({request.method})")
            f = None
        if f is None or not f.external_id:
            raise SfError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {name}",
            )
        return f.name

    def multiple(schema: SObjectSchema, v: str, ids: list[str]) -> Response:
        return _json([f"/services/data/v{v}/sobjects/{schema.name}/{i}" for i in ids], 300)

    @app.get(
        "/services/data/{version}/sobjects/{sobject}/{field}/{value}",
        tags=["SObjects"],
        summary="Get a record by external id (300 if several match)",
    )
    def get_by_external_id(
        request: Request, version: str, sobject: str, field: str, value: str
    ) -> Response:
        v = _version(version)
        schema = sobject_schema(sobject)
        name = ext_field(request, schema, field)
        ids = find_by_external_id(store, schema, name, value)
        if not ids:
            raise _not_found()
        if len(ids) > 1:
            return multiple(schema, v, ids)
        body = store.get(schema.name, ids[0])
        if body is None:
            raise _not_found()
        return _json(_full_record(body, schema, v))

    @app.patch(
        "/services/data/{version}/sobjects/{sobject}/{field}/{value}",
        tags=["SObjects"],
        summary="Upsert by external id: 201 created, 200 updated (204 before v46), 300 ambiguous",
        responses={
            201: {"description": "created: {id, success, errors, created: true}"},
            200: {"description": "updated: {id, success, errors, created: false}"},
            300: {"description": "several records match: list of record URLs"},
            404: {"description": "updateOnly=true and nothing matches"},
        },
        openapi_extra=_JSON_BODY,
    )
    async def upsert(
        version: str,
        sobject: str,
        field: str,
        value: str,
        request: Request,
        update_only: bool = Query(
            False,
            alias="updateOnly",
            description="never create; 404 when nothing matches",
        ),
    ) -> Response:
        v = _version(version)
        schema = sobject_schema(sobject)
        name = ext_field(request, schema, field)
        data = _parse_body(await request.body())
        for key in list(data):
            f = schema.lookup(key)
            if f is not None and f.name == name:
                if str(data[key]).casefold() != value.casefold():
                    raise SfError(
                        400,
                        "INVALID_FIELD",
                        f"The value of the external ID field {name} in the body differs from"
                        " the value in the URL",
                        [name],
                    )
                del data[key]
        ids = find_by_external_id(store, schema, name, value)
        if len(ids) > 1:
            return multiple(schema, v, ids)
        new_style = float(v) >= 46.0
        if ids:
            if update(store, schema, ids[0], data) is None:
                raise _not_found()
            if not new_style:
                return Response(status_code=204)
            return _json({"id": ids[0], "success": True, "errors": [], "created": False}, 200)
        if update_only:
            raise _not_found()
        body = create(store, schema, data, extra={name: value})
        out: dict[str, Any] = {"id": body["Id"], "success": True, "errors": []}
        if new_style:
            out["created"] = True
        return _json(out, 201)

    # ------------------------------------------------------------------ admin

    def admin_state() -> dict[str, Any]:
        return {
            "settings": asdict(settings),
            "api_usage": quota.current(),
            "open_cursors": len(cursors),
            "session_generation": auth.generation,
            "earliest_date_available": _sf_datetime(earliest_available()),
        }

    @app.get("/__admin/crm", tags=["admin"], summary="CRM settings, quota usage, cursors")
    def get_crm_admin() -> dict[str, Any]:
        return admin_state()

    @app.put(
        "/__admin/crm",
        tags=["admin"],
        summary="Change CRM settings (daily_limit, deleted_retention_days, "
        "earliest_deleted, locator_ttl_seconds, max_open_cursors, "
        "session_seconds) and/or api_usage",
    )
    def put_crm_admin(changes: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
        known = set(asdict(settings)) | {"api_usage"}
        unknown = sorted(set(changes) - known)
        if unknown:
            return JSONResponse({"detail": f"unknown settings {unknown}"}, status_code=422)
        try:
            if changes.get("earliest_deleted"):
                parse_iso(str(changes["earliest_deleted"]))
            values = {
                key: (
                    value
                    if key == "earliest_deleted"
                    else int(value)
                    if key == "api_usage"
                    else type(getattr(settings, key))(value)
                )
                for key, value in changes.items()
            }
        except (TypeError, ValueError) as exc:
            return JSONResponse({"detail": f"bad setting value: {exc}"}, status_code=422)
        for key, value in values.items():
            if key == "api_usage":
                quota.set(value)
            else:
                setattr(settings, key, value)
        cursors.ttl_seconds = settings.locator_ttl_seconds
        cursors.max_open = settings.max_open_cursors
        auth.session_seconds = settings.session_seconds
        return admin_state()

    @app.post("/__admin/crm/quota/reset", tags=["admin"], summary="Reset the daily API usage")
    def reset_quota() -> dict[str, Any]:
        quota.set(0)
        return admin_state()

    @app.post(
        "/__admin/crm/revoke-sessions",
        tags=["admin"],
        summary="Invalidate every access token (clients must log in again)",
    )
    def revoke_sessions() -> dict[str, Any]:
        generation = auth.revoke_all()
        store.meta_set("crm_session_generation", generation)
        cursors.clear()
        return admin_state()

    return app


def _full_id(record_id: str) -> str:
    from .schema import salesforce_id

    return salesforce_id(record_id) if len(record_id) == 15 else record_id


def _field_list(schema: SObjectSchema, fields: str | None) -> list[str] | None:
    if not fields:
        return None
    out: list[str] = []
    for raw in fields.split(","):
        name = raw.strip()
        if not name:
            continue
        f = schema.lookup(name)
        if f is None:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on sobject of type {schema.name}",
            )
        out.append(f.name)
    return out
