"""The ERP sandbox: a FastAPI app that behaves like Dynamics 365 Business Central API v2.0.

A connector written against real Business Central works against this app by changing the base
URL and the credentials:

* Entra ID client-credentials token: ``POST /{tenant}/oauth2/v2.0/token`` (and the tenant's
  OpenID discovery document at ``/{tenant}/v2.0/.well-known/openid-configuration``).
* API: ``/v2.0/{tenant}/{environment}/api/v2.0/companies({id})/customers|projects|employees|
  taxGroups|paymentTerms|taxAreas|accounts|unitsOfMeasure|timeRegistrationEntries|salesInvoices|
  salesCreditMemos``, nested ``salesInvoices({id})/salesInvoiceLines``, the bound actions
  ``Microsoft.NAV.post|cancel|makeCorrectiveCreditMemo`` and ``$metadata``. ``accounts`` is
  read-only (APIV2Accounts.Page.al); ``unitsOfMeasure`` takes POST, PATCH and DELETE as
  documented (dynamics_unitofmeasure_create/update/delete).
* One page published as an OData V4 web service, as a BC admin publishes it for erpsync (page
  472 "VAT Posting Setup", service name ``VATPostingSetup``):
  ``/v2.0/{tenant}/{environment}/ODataV4/Company('<company name>')/VATPostingSetup``
  (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/publish-web-service).
  No custom API: the pack ships no AL extension.
* Limits: requests per minute and 5 concurrent (queue configurable), else 429
  ``Application_TooManyRequests`` (see :mod:`erpsync_sandbox.erp.limits`).
* Errors in BC's ``{"error":{"code","message"}}`` format; 401 ``Authentication_InvalidCredentials``
  for a missing or bad bearer token.

Business logic lives in :mod:`erpsync_sandbox.erp.service`; ``$filter`` parsing in
:mod:`erpsync_sandbox.erp.odata`. Extra admin routes: ``GET|PUT /__admin/limits``, and
``POST /__admin/payments`` (a client pays part or all of a posted sales invoice: BC's API
documents no way to post a customer payment, see :meth:`ErpService.apply_payment`).

Vendor reference: docs/reference/vendor-apis.md section 3 and
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Body, FastAPI, Header, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from erpsync_sandbox import contract
from erpsync_sandbox.common import make_base_app
from erpsync_sandbox.erp import batch
from erpsync_sandbox.erp.auth import EntraError, TokenIssuer
from erpsync_sandbox.erp.entities import ENTITY_SETS, VAT_POSTING_SETUP_SERVICE, EntitySet
from erpsync_sandbox.erp.limits import Limiter, LimitMiddleware, LimitSettings
from erpsync_sandbox.erp.metadata import csdl
from erpsync_sandbox.erp.service import BCError, ErpService, Reply
from erpsync_sandbox.store import change_source, dumps

__all__ = ["create_app"]

API = "/v2.0/{tenant}/{environment}/api/v2.0"
ODATA_V4 = "/v2.0/{tenant}/{environment}/ODataV4"
COMPANY = "/companies({company_id})"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}

PreferHeader = Annotated[
    str | None,
    Header(alias="Prefer", description="e.g. odata.maxpagesize=1000"),
]
IfMatchHeader = Annotated[
    str | None,
    Header(alias="If-Match", description="the entity's @odata.etag (required)"),
]


class AuthMiddleware:
    """Rejects Business Central API calls without a valid bearer token (401, BC's format)."""

    def __init__(self, app: ASGIApp, issuer: TokenIssuer) -> None:
        self.app = app
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v2.0/"):
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/")
        if len(parts) > 3 and parts[3] == "api":
            # BC also serves /v2.0/{environment}/api/... with the tenant taken from the token.
            path = "/".join(["", "v2.0", self.issuer.tenant, *parts[2:]])
            scope = dict(scope, path=path, raw_path=path.encode())
            parts = path.split("/")
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        tenant = parts[2] if len(parts) > 2 else ""
        claims = None
        if auth[:7].lower() == "bearer ":
            claims = self.issuer.verify(auth[7:].strip())
        if claims is None or not self.issuer.known_tenant(tenant):
            body = orjson.dumps(
                {
                    "error": {
                        "code": "Authentication_InvalidCredentials",
                        "message": "The server has rejected the client credentials. "
                        f" CorrelationId:  {uuid.uuid4()}.",
                    }
                }
            )
            challenge = (
                'Bearer authorization_uri="https://login.microsoftonline.com/'
                f'{self.issuer.tenant}/oauth2/authorize", error="invalid_token"'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", challenge.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _reply(reply: Reply) -> Response:
    return Response(content=reply.body or b"", status_code=reply.status, headers=reply.headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


#: Query parameters without ``$`` that Business Central reads (company and tenant selection);
#: any other is a custom query option, which OData services ignore.
_KNOWN_PARAMS = frozenset({"company", "tenant"})


def _query(request: Request) -> list[tuple[str, str]]:
    items = list(request.query_params.multi_items())
    for key, _ in items:
        if not key.startswith("$") and key not in _KNOWN_PARAMS:
            contract.undocumented(request, f"query parameter {key} (ignored)")
    return items


def create_app(ctx: Any) -> FastAPI:
    """The Business Central sandbox app on top of the shared base app (admin + faults)."""
    app = make_base_app("erp", ctx)
    app.description = (
        "Dynamics 365 Business Central API v2.0 emulation (OData v4): Entra ID client"
        " credentials, server-driven paging with $skiptoken, $filter/$top/$skip/$select/"
        "$orderby/$expand, ETags and If-Match, draft-then-post sales invoices, rate and"
        " concurrency limits."
    )
    svc = ErpService(ctx)
    cfg = ctx.config
    issuer = TokenIssuer(cfg.erp_tenant, cfg.erp_client_id, cfg.erp_client_secret)
    limiter = Limiter(LimitSettings.from_env())
    app.state.erp = svc
    app.state.erp_limiter = limiter
    app.state.erp_issuer = issuer
    app.add_middleware(LimitMiddleware, limiter=limiter)
    app.add_middleware(AuthMiddleware, issuer=issuer)

    @app.exception_handler(BCError)
    async def bc_error(request: Request, exc: BCError) -> Response:
        if exc.note:
            contract.undocumented(request, exc.note)
        headers = {"Content-Type": "application/json; charset=utf-8", **exc.headers}
        return Response(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(EntraError)
    async def entra_error(_request: Request, exc: EntraError) -> Response:
        return Response(
            orjson.dumps(exc.body()),
            status_code=exc.status,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )

    async def run(fn: Callable[..., Reply], *args: Any, **kwargs: Any) -> Response:
        return _reply(await run_in_threadpool(fn, *args, **kwargs))

    def scope_check(tenant: str, environment: str, company_id: str | None = None) -> None:
        svc.check_environment(tenant, environment)
        if company_id is not None:
            svc.check_company(company_id)

    # ------------------------------------------------------------------ Entra ID

    async def _token(request: Request, tenant: str, v1: bool) -> Response:
        raw = await request.body()
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        basic = None
        auth = request.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, pwd = base64.b64decode(auth[6:]).decode().partition(":")
                basic = (user, pwd)
            except (binascii.Error, UnicodeDecodeError):
                basic = None
        result = issuer.issue(tenant, form, basic, v1=v1)
        return Response(
            orjson.dumps(result),
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Cache-Control": "no-store",
            },
        )

    @app.post(
        "/{tenant}/oauth2/v2.0/token",
        tags=["auth"],
        summary="Entra ID token (client credentials, v2.0 endpoint)",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "grant_type": {"type": "string", "example": "client_credentials"},
                                "client_id": {"type": "string"},
                                "client_secret": {"type": "string"},
                                "scope": {
                                    "type": "string",
                                    "example": "https://api.businesscentral.dynamics.com/.default",
                                },
                            },
                        }
                    }
                }
            }
        },
    )
    async def token_v2(request: Request, tenant: str) -> Response:
        return await _token(request, tenant, v1=False)

    @app.post(
        "/{tenant}/oauth2/token",
        tags=["auth"],
        summary="Entra ID token (client credentials, v1 endpoint with resource=)",
    )
    async def token_v1(request: Request, tenant: str) -> Response:
        return await _token(request, tenant, v1=True)

    @app.get(
        "/{tenant}/v2.0/.well-known/openid-configuration",
        tags=["auth"],
        summary="OpenID discovery document of the tenant (read by MSAL)",
    )
    async def openid_configuration(request: Request, tenant: str) -> Response:
        if not issuer.known_tenant(tenant):
            raise EntraError(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = _base(request)
        doc = {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{issuer.tenant_id}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid"],
            "tenant_region_scope": "EU",
        }
        return Response(orjson.dumps(doc), headers={"Content-Type": "application/json"})

    # ------------------------------------------------------------------ admin: limits

    @app.get("/__admin/limits", tags=["admin"], summary="ERP rate/concurrency limits and stats")
    def get_limits() -> dict[str, Any]:
        return limiter.snapshot()

    @app.put("/__admin/limits", tags=["admin"], summary="Replace the ERP rate/concurrency limits")
    def put_limits(settings: LimitSettings) -> dict[str, Any]:
        limiter.set(settings)
        return limiter.snapshot()

    # ------------------------------------------------------------------ admin: payments

    @app.post(
        "/__admin/payments",
        tags=["admin"],
        summary="Sandbox control: a client pays (part of) a posted sales invoice",
    )
    def post_payment(body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
        """``{"invoiceId": id | "number": posted number, "amount": 100.5}`` -> the invoice's
        ``id, number, amount, remainingAmount, status, lastModifiedDateTime`` after payment."""
        token = change_source.set("control")
        try:
            result = svc.apply_payment(
                invoice_id=body.get("invoiceId"),
                number=body.get("number"),
                amount=body.get("amount"),
            )
        finally:
            change_source.reset(token)
        return Response(dumps(result), headers={"Content-Type": "application/json"})

    # ------------------------------------------------------------------ companies, $metadata

    @app.get(f"{API}/companies", tags=["companies"], summary="List companies")
    async def list_companies(request: Request, tenant: str, environment: str) -> Response:
        scope_check(tenant, environment)
        return await run(svc.companies, base_url=_base(request))

    @app.get(f"{API}{COMPANY}", tags=["companies"], summary="Get a company")
    async def get_company(
        request: Request, tenant: str, environment: str, company_id: str
    ) -> Response:
        scope_check(tenant, environment)
        return await run(svc.companies, base_url=_base(request), company_id=company_id)

    @app.get(f"{API}/$metadata", tags=["companies"], summary="CSDL metadata (standard API)")
    async def metadata(tenant: str, environment: str) -> Response:
        scope_check(tenant, environment)
        return Response(csdl(), media_type="application/xml")

    # ------------------------------------------------------------------ OData V4 web services

    vat_setup = VAT_POSTING_SETUP_SERVICE

    @app.get(
        f"{ODATA_V4}/Company({{company}})/{vat_setup.segment}",
        tags=["odata"],
        summary="Page 472 VAT Posting Setup, published as web service VATPostingSetup",
        operation_id="list_VATPostingSetup",
    )
    async def list_vat_posting_setup(
        request: Request,
        tenant: str,
        environment: str,
        company: str,
        prefer: PreferHeader = None,
    ) -> Response:
        scope_check(tenant, environment)
        svc.check_company_name(company)
        return await run(
            svc.list,
            vat_setup,
            base_url=_base(request),
            path=request.url.path,
            query=_query(request),
            prefer=prefer,
        )

    # ------------------------------------------------------------------ entity sets

    def add_collection(es: EntitySet, root: str) -> None:
        col = f"{root}{COMPANY}/{es.segment}"
        item = f"{col}({{entity_id}})"
        name = es.segment

        async def list_entities(
            request: Request,
            tenant: str,
            environment: str,
            company_id: str,
            prefer: PreferHeader = None,
        ) -> Response:
            scope_check(tenant, environment, company_id)
            return await run(
                svc.list,
                es,
                base_url=_base(request),
                path=request.url.path,
                query=_query(request),
                prefer=prefer,
            )

        async def get_entity(
            request: Request, tenant: str, environment: str, company_id: str, entity_id: str
        ) -> Response:
            scope_check(tenant, environment, company_id)
            return await run(svc.get, es, entity_id, base_url=_base(request), query=_query(request))

        app.add_api_route(
            col,
            list_entities,
            methods=["GET"],
            tags=[es.tag],
            summary=f"List {name} ($filter, $top, $skip, $select, $orderby, paging)",
            operation_id=f"list_{name}",
        )
        app.add_api_route(
            item,
            get_entity,
            methods=["GET"],
            tags=[es.tag],
            summary=f"Get one of {name} by id",
            operation_id=f"get_{name}",
        )
        if not es.writable or es.segment in ("salesInvoiceLines", "salesCreditMemoLines"):
            return
        documents = ("salesInvoices", "salesCreditMemos")

        async def create_entity(
            request: Request, tenant: str, environment: str, company_id: str
        ) -> Response:
            scope_check(tenant, environment, company_id)
            raw = await request.body()
            if es.segment in documents:
                return await run(svc.create_document, es.segment, raw, base_url=_base(request))
            return await run(svc.create, es, raw, base_url=_base(request))

        async def update_entity(
            request: Request,
            tenant: str,
            environment: str,
            company_id: str,
            entity_id: str,
            if_match: IfMatchHeader = None,
        ) -> Response:
            scope_check(tenant, environment, company_id)
            raw = await request.body()
            if es.segment in documents:
                return await run(
                    svc.update_invoice,
                    entity_id,
                    raw,
                    if_match,
                    base_url=_base(request),
                    segment=es.segment,
                )
            return await run(svc.update, es, entity_id, raw, if_match, base_url=_base(request))

        async def delete_entity(
            tenant: str,
            environment: str,
            company_id: str,
            entity_id: str,
            if_match: IfMatchHeader = None,
        ) -> Response:
            scope_check(tenant, environment, company_id)
            if es.segment in documents:
                return await run(svc.delete_invoice, entity_id, if_match, segment=es.segment)
            return await run(svc.delete, es, entity_id, if_match)

        create_summary = (
            f"Create a draft {es.entity_type} (deep insert of its lines; no idempotency)"
            if es.segment in documents
            else f"Create one of {name}"
        )
        app.add_api_route(
            col,
            create_entity,
            methods=["POST"],
            status_code=201,
            tags=[es.tag],
            summary=create_summary,
            operation_id=f"create_{name}",
            openapi_extra=JSON_BODY,
        )
        app.add_api_route(
            item,
            update_entity,
            methods=["PATCH"],
            tags=[es.tag],
            summary=f"Update one of {name} (If-Match required)",
            operation_id=f"update_{name}",
            openapi_extra=JSON_BODY,
        )
        app.add_api_route(
            item,
            delete_entity,
            methods=["DELETE"],
            status_code=204,
            tags=[es.tag],
            summary=f"Delete one of {name} (If-Match required)",
            operation_id=f"delete_{name}",
        )

    for es in ENTITY_SETS.values():
        add_collection(es, API)

    # ------------------------------------------------------------------ document lines

    def add_lines(doc_segment: str, line_segment: str, writable: bool) -> None:
        doc_es = ENTITY_SETS[doc_segment]
        line_es = ENTITY_SETS[line_segment]
        col = f"{API}{COMPANY}/{doc_segment}({{doc_id}})/{line_segment}"
        item = f"{col}({{line_id}})"

        async def list_lines(
            request: Request,
            tenant: str,
            environment: str,
            company_id: str,
            doc_id: str,
            prefer: PreferHeader = None,
        ) -> Response:
            scope_check(tenant, environment, company_id)
            doc = await run_in_threadpool(svc._row, doc_es, doc_id)
            return await run(
                svc.list,
                line_es,
                base_url=_base(request),
                path=request.url.path,
                query=_query(request),
                prefer=prefer,
                parent_id=doc.id,
                parent_segment=f"{doc_segment}({doc.id})/",
            )

        async def get_line(
            request: Request,
            tenant: str,
            environment: str,
            company_id: str,
            doc_id: str,
            line_id: str,
        ) -> Response:
            scope_check(tenant, environment, company_id)
            doc = await run_in_threadpool(svc._row, doc_es, doc_id)
            return await run(
                svc.get,
                line_es,
                line_id,
                base_url=_base(request),
                query=_query(request),
                parent_id=doc.id,
                parent_segment=f"{doc_segment}({doc.id})/",
            )

        app.add_api_route(
            col,
            list_lines,
            methods=["GET"],
            tags=[doc_es.tag],
            summary=f"List the {line_segment} of one of {doc_segment}",
            operation_id=f"list_{doc_segment}_{line_segment}",
        )
        app.add_api_route(
            item,
            get_line,
            methods=["GET"],
            tags=[doc_es.tag],
            summary=f"Get one of the {line_segment} of one of {doc_segment}",
            operation_id=f"get_{doc_segment}_{line_segment}",
        )
        if not writable:
            return

        async def create_line(
            request: Request, tenant: str, environment: str, company_id: str, doc_id: str
        ) -> Response:
            scope_check(tenant, environment, company_id)
            raw = await request.body()
            return await run(
                svc.add_line, doc_id, raw, base_url=_base(request), segment=doc_segment
            )

        async def update_line(
            request: Request,
            tenant: str,
            environment: str,
            company_id: str,
            doc_id: str,
            line_id: str,
            if_match: IfMatchHeader = None,
        ) -> Response:
            scope_check(tenant, environment, company_id)
            raw = await request.body()
            return await run(
                svc.update_line,
                doc_id,
                line_id,
                raw,
                if_match,
                base_url=_base(request),
                segment=doc_segment,
            )

        async def delete_line(
            tenant: str,
            environment: str,
            company_id: str,
            doc_id: str,
            line_id: str,
            if_match: IfMatchHeader = None,
        ) -> Response:
            scope_check(tenant, environment, company_id)
            return await run(svc.delete_line, doc_id, line_id, if_match, segment=doc_segment)

        app.add_api_route(
            col,
            create_line,
            methods=["POST"],
            status_code=201,
            tags=[doc_es.tag],
            summary=f"Add a line to a draft of {doc_segment}",
            operation_id=f"create_{doc_segment}_{line_segment}",
            openapi_extra=JSON_BODY,
        )
        app.add_api_route(
            item,
            update_line,
            methods=["PATCH"],
            tags=[doc_es.tag],
            summary=f"Update a line of a draft of {doc_segment} (If-Match required)",
            operation_id=f"update_{doc_segment}_{line_segment}",
            openapi_extra=JSON_BODY,
        )
        app.add_api_route(
            item,
            delete_line,
            methods=["DELETE"],
            status_code=204,
            tags=[doc_es.tag],
            summary=f"Delete a line of a draft of {doc_segment} (If-Match required)",
            operation_id=f"delete_{doc_segment}_{line_segment}",
        )

    add_lines("salesInvoices", "salesInvoiceLines", writable=True)
    add_lines("salesCreditMemos", "salesCreditMemoLines", writable=True)
    batch.register(app, API, ctx.faults_for("erp"))  # POST .../api/v2.0/$batch

    # ------------------------------------------------------------------ bound actions

    @app.post(
        f"{API}{COMPANY}/salesInvoices({{doc_id}})/Microsoft.NAV.post",
        status_code=204,
        tags=["salesInvoices"],
        summary="Post a draft sales invoice: status Open, posted number assigned",
    )
    async def post_invoice(tenant: str, environment: str, company_id: str, doc_id: str) -> Response:
        scope_check(tenant, environment, company_id)
        return await run(svc.post_document, "salesInvoices", doc_id)

    @app.post(
        f"{API}{COMPANY}/salesInvoices({{doc_id}})/Microsoft.NAV.cancel",
        status_code=204,
        tags=["salesInvoices"],
        summary="Cancel a posted invoice with a posted corrective credit memo",
    )
    async def cancel_invoice(
        request: Request, tenant: str, environment: str, company_id: str, doc_id: str
    ) -> Response:
        scope_check(tenant, environment, company_id)
        return await run(svc.corrective_credit_memo, doc_id, base_url=_base(request), cancel=True)

    @app.post(
        f"{API}{COMPANY}/salesInvoices({{doc_id}})/Microsoft.NAV.makeCorrectiveCreditMemo",
        status_code=204,
        tags=["salesInvoices"],
        summary="Create a draft corrective credit memo for a posted invoice",
    )
    async def corrective_memo(
        request: Request, tenant: str, environment: str, company_id: str, doc_id: str
    ) -> Response:
        scope_check(tenant, environment, company_id)
        return await run(svc.corrective_credit_memo, doc_id, base_url=_base(request), cancel=False)

    @app.post(
        f"{API}{COMPANY}/salesCreditMemos({{doc_id}})/Microsoft.NAV.post",
        status_code=204,
        tags=["salesCreditMemos"],
        summary="Post a draft sales credit memo",
    )
    async def post_memo(tenant: str, environment: str, company_id: str, doc_id: str) -> Response:
        scope_check(tenant, environment, company_id)
        return await run(svc.post_document, "salesCreditMemos", doc_id)

    # ------------------------------------------------------------------ everything else

    @app.api_route(
        "/v2.0/{rest:path}",
        methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
        include_in_schema=False,
    )
    async def not_found(request: Request, rest: str) -> Response:
        for route in app.router.routes:
            if route.path.startswith("/v2.0/{tenant}") and hasattr(route, "matches"):
                match, _ = route.matches(request.scope)
                if match is Match.PARTIAL:
                    raise BCError(
                        405,
                        "BadRequest_MethodNotAllowed",
                        f"'{request.method}' requests for '{rest.rsplit('/', 1)[-1]}' are not"
                        " allowed within Dynamics 365 Business Central OData web services.",
                        note=f"no such route: {request.method} {request.url.path}",
                    )
        parts = rest.split("/")
        segment = parts[-1].split("(")[0] if parts else rest
        if len(parts) >= 3 and parts[2] in ("api", "ODataV4"):
            api_parts = parts[3:]
            for part in api_parts:
                name = part.split("(")[0]
                if name not in ("v2.0", "v1.0", "companies", "Company"):
                    segment = name
                    break
        raise BCError(
            404,
            "BadRequest_ResourceNotFound",
            f"Resource not found for the segment '{segment}'.",
            note=f"no such route: {request.method} {request.url.path}",
        )

    return app
