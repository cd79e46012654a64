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
* Limits: per user 6,000 requests per 5-minute sliding window and 5 concurrent (95 queued), else 429
  ``Application_TooManyRequests`` (see :mod:`erpsync_sandbox.erp.limits`).
* Errors in BC's ``{"error":{"code","message"}}`` format; 401 ``Authentication_InvalidCredentials``
  for a missing or bad bearer token.

The routes live in :mod:`erpsync_sandbox.erp.routes`, one module per resource group
(:data:`ROUTERS`); business logic in :mod:`erpsync_sandbox.erp.service`; ``$filter`` parsing in
:mod:`erpsync_sandbox.erp.odata`. Extra admin routes: ``GET|PUT /__admin/limits``, and
``POST /__admin/payments`` (a client pays part or all of a posted sales invoice: BC's API
documents no way to post a customer payment, see :meth:`ErpService.apply_payment`).

Vendor reference: docs/reference/vendor-apis.md section 3 and
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response

from erpsync_sandbox import contract
from erpsync_sandbox.common import make_base_app
from erpsync_sandbox.erp import batch
from erpsync_sandbox.erp.auth import EntraError, TokenIssuer
from erpsync_sandbox.erp.limits import Limiter, LimitMiddleware, LimitSettings
from erpsync_sandbox.erp.routes import (
    admin,
    companies,
    entities,
    entra,
    fallback,
    odata_services,
    sales_documents,
)
from erpsync_sandbox.erp.routes.base import API
from erpsync_sandbox.erp.service import BCError, ErpService

__all__ = ["ROUTERS", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The Business Central routers, in matching order. A new resource module adds its router
#: here, before ``fallback.router`` (a catch-all for ``/v2.0/...``, which must stay last).
ROUTERS: tuple[APIRouter, ...] = (
    entra.router,
    admin.router,
    companies.router,
    odata_services.router,
    entities.router,
    sales_documents.router,
    fallback.router,
)


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


async def bc_error(request: Request, exc: Exception) -> Response:
    """A :class:`BCError` in BC's ``{"error": {"code", "message"}}`` format."""
    assert isinstance(exc, BCError)
    if exc.note:
        contract.undocumented(request, exc.note)
    headers = {"Content-Type": "application/json; charset=utf-8", **exc.headers}
    return Response(exc.body(), status_code=exc.status, headers=headers)


async def entra_error(_request: Request, exc: Exception) -> Response:
    """An :class:`EntraError` in Entra ID's OAuth error format."""
    assert isinstance(exc, EntraError)
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )


#: Fields the pack's reads and the service's own checks look documents up by: the
#: check-then-create lookup ``$filter=externalDocumentNumber eq '...'`` (batched or alone), a
#: credit memo's ``invoiceId``, and the number a post or a create is checked against. Indexed, so
#: a large firm's company (thousands of posted invoices) answers each from the index instead
#: of scanning every document's JSON body. Storage only: no field or parameter is added; the
#: fields are Business Central's API v2.0 ``salesInvoice`` (``externalDocumentNumber``,
#: ``number``: .../api-reference/v2.0/resources/dynamics_salesinvoice) and ``salesCreditMemo``
#: (``invoiceId``, ``number``: .../api-reference/v2.0/resources/dynamics_salescreditmemo), under
#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro.
INDEXED_FIELDS: dict[str, tuple[str, ...]] = {
    "salesInvoices": ("externalDocumentNumber", "number"),
    "salesCreditMemos": ("invoiceId", "number"),
}


def create_app(ctx: Any) -> FastAPI:
    """The Business Central sandbox app on top of the shared base app (admin + faults).

    The routers reach the service, issuer and limiter through ``app.state`` (see
    :mod:`erpsync_sandbox.erp.routes.base`)."""
    app = make_base_app("erp", ctx)
    app.description = (
        "Dynamics 365 Business Central API v2.0 emulation (OData v4): Entra ID client"
        " credentials, server-driven paging with $skiptoken, $filter/$top/$skip/$select/"
        "$orderby/$expand, ETags and If-Match, draft-then-post sales invoices, rate and"
        " concurrency limits."
    )
    app.state.erp = ErpService(ctx)
    store = ctx.stores["erp"]
    for resource, fields in INDEXED_FIELDS.items():
        for field in fields:
            store.ensure_index(resource, (field,))
    cfg = ctx.config
    issuer = TokenIssuer(cfg.erp_tenant, cfg.erp_client_id, cfg.erp_client_secret)
    limiter = Limiter(LimitSettings.from_env())
    app.state.erp_limiter = limiter
    app.state.erp_issuer = issuer
    app.add_middleware(LimitMiddleware, limiter=limiter)
    app.add_middleware(AuthMiddleware, issuer=issuer)
    app.add_exception_handler(BCError, bc_error)
    app.add_exception_handler(EntraError, entra_error)
    for router in ROUTERS:
        if router is fallback.router:  # $batch is added on the app, before the catch-all
            batch.register(app, API, ctx.faults_for("erp"))  # POST .../api/v2.0/$batch
        app.include_router(router)
    return app
