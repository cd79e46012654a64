"""Pages published as OData V4 web services, as a BC admin publishes them for erpsync.

Page 472 "VAT Posting Setup", service name ``VATPostingSetup``:
``/v2.0/{tenant}/{environment}/ODataV4/Company('<company name>')/VATPostingSetup``
(https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/publish-web-service).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from erpsync_sandbox.erp.entities import VAT_POSTING_SETUP_SERVICE
from erpsync_sandbox.erp.routes.base import (
    ODATA_V4,
    PreferHeader,
    Service,
    base_url,
    odata_query,
    run,
    scope_check,
)

__all__ = ["router"]

router = APIRouter(tags=["odata"])


@router.get(
    f"{ODATA_V4}/Company({{company}})/{VAT_POSTING_SETUP_SERVICE.segment}",
    summary="Page 472 VAT Posting Setup, published as web service VATPostingSetup",
    operation_id="list_VATPostingSetup",
)
async def list_vat_posting_setup(
    request: Request,
    tenant: str,
    environment: str,
    company: str,
    svc: Service,
    prefer: PreferHeader = None,
) -> Response:
    scope_check(svc, tenant, environment)
    svc.check_company_name(company)
    return await run(
        svc.list,
        VAT_POSTING_SETUP_SERVICE,
        base_url=base_url(request),
        path=request.url.path,
        query=odata_query(request),
        prefer=prefer,
    )
