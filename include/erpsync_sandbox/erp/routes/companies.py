"""Companies and the standard API's ``$metadata`` (CSDL).

https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_company
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from erpsync_sandbox.erp.metadata import csdl
from erpsync_sandbox.erp.routes.base import API, COMPANY, Service, base_url, run, scope_check

__all__ = ["router"]

router = APIRouter(tags=["companies"])


@router.get(f"{API}/companies", summary="List companies")
async def list_companies(request: Request, tenant: str, environment: str, svc: Service) -> Response:
    scope_check(svc, tenant, environment)
    return await run(svc.companies, base_url=base_url(request))


@router.get(f"{API}{COMPANY}", summary="Get a company")
async def get_company(
    request: Request, tenant: str, environment: str, company_id: str, svc: Service
) -> Response:
    scope_check(svc, tenant, environment)
    return await run(svc.companies, base_url=base_url(request), company_id=company_id)


@router.get(f"{API}/$metadata", summary="CSDL metadata (standard API)")
async def metadata(tenant: str, environment: str, svc: Service) -> Response:
    scope_check(svc, tenant, environment)
    return Response(csdl(), media_type="application/xml")
