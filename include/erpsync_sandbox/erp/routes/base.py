"""What the ERP routers share: path templates, headers, the state dependencies, replies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from erpsync_sandbox import contract
from erpsync_sandbox.contract import state_dependency
from erpsync_sandbox.erp.auth import TokenIssuer
from erpsync_sandbox.erp.limits import Limiter
from erpsync_sandbox.erp.service import ErpService, Reply

__all__ = [
    "API",
    "COMPANY",
    "JSON_BODY",
    "ODATA_V4",
    "ErpLimiter",
    "IfMatchHeader",
    "Issuer",
    "PreferHeader",
    "Service",
    "base_url",
    "odata_query",
    "run",
    "scope_check",
]

API = "/v2.0/{tenant}/{environment}/api/v2.0"
ODATA_V4 = "/v2.0/{tenant}/{environment}/ODataV4"
COMPANY = "/companies({company_id})"

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


@state_dependency
async def erp_service(request: Request) -> ErpService:
    """The app's Business Central emulation (``app.state.erp``, set by ``create_app``)."""
    svc: ErpService = request.app.state.erp
    return svc


@state_dependency
async def token_issuer(request: Request) -> TokenIssuer:
    """The app's Entra ID token issuer (``app.state.erp_issuer``)."""
    issuer: TokenIssuer = request.app.state.erp_issuer
    return issuer


@state_dependency
async def erp_limiter(request: Request) -> Limiter:
    """The app's rate/concurrency limiter (``app.state.erp_limiter``)."""
    limiter: Limiter = request.app.state.erp_limiter
    return limiter


Service = Annotated[ErpService, Depends(erp_service)]
Issuer = Annotated[TokenIssuer, Depends(token_issuer)]
ErpLimiter = Annotated[Limiter, Depends(erp_limiter)]


def reply(result: Reply) -> Response:
    return Response(content=result.body or b"", status_code=result.status, headers=result.headers)


async def run(fn: Callable[..., Reply], *args: Any, **kwargs: Any) -> Response:
    """Run a (blocking) service call in the thread pool and answer its reply."""
    return reply(await run_in_threadpool(fn, *args, **kwargs))


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


#: Query parameters without ``$`` that Business Central reads (company and tenant selection);
#: any other is a custom query option, which OData services ignore.
_KNOWN_PARAMS = frozenset({"company", "tenant"})


def odata_query(request: Request) -> list[tuple[str, str]]:
    items = list(request.query_params.multi_items())
    for key, _ in items:
        if not key.startswith("$") and key not in _KNOWN_PARAMS:
            contract.undocumented(request, f"query parameter {key} (ignored)")
    return items


def scope_check(
    svc: ErpService, tenant: str, environment: str, company_id: str | None = None
) -> None:
    """BC's answer for an unknown environment or company (before anything else)."""
    svc.check_environment(tenant, environment)
    if company_id is not None:
        svc.check_company(company_id)
