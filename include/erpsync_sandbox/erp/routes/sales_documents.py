"""Sales invoices and credit memos beyond their entity sets: lines, and the bound actions.

* Lines: ``salesInvoices({id})/salesInvoiceLines`` and ``salesCreditMemos({id})/
  salesCreditMemoLines`` (list, get; add, update, delete on a draft).
* Bound actions ``Microsoft.NAV.post`` (both), ``Microsoft.NAV.cancel`` and
  ``Microsoft.NAV.makeCorrectiveCreditMemo`` (invoices): 204 No Content.

https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salesinvoice
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from erpsync_sandbox.erp.entities import ENTITY_SETS
from erpsync_sandbox.erp.routes.base import (
    API,
    COMPANY,
    JSON_BODY,
    IfMatchHeader,
    PreferHeader,
    Service,
    base_url,
    odata_query,
    run,
    scope_check,
)

__all__ = ["router"]

router = APIRouter()


def add_lines(router: APIRouter, doc_segment: str, line_segment: str, writable: bool) -> None:
    """The line routes of ``doc_segment`` (handlers bound to the two entity sets only)."""
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
        svc: Service,
        prefer: PreferHeader = None,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        doc = await run_in_threadpool(svc._row, doc_es, doc_id)
        return await run(
            svc.list,
            line_es,
            base_url=base_url(request),
            path=request.url.path,
            query=odata_query(request),
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
        svc: Service,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        doc = await run_in_threadpool(svc._row, doc_es, doc_id)
        return await run(
            svc.get,
            line_es,
            line_id,
            base_url=base_url(request),
            query=odata_query(request),
            parent_id=doc.id,
            parent_segment=f"{doc_segment}({doc.id})/",
        )

    router.add_api_route(
        col,
        list_lines,
        methods=["GET"],
        tags=[doc_es.tag],
        summary=f"List the {line_segment} of one of {doc_segment}",
        operation_id=f"list_{doc_segment}_{line_segment}",
    )
    router.add_api_route(
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
        request: Request,
        tenant: str,
        environment: str,
        company_id: str,
        doc_id: str,
        svc: Service,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        raw = await request.body()
        return await run(svc.add_line, doc_id, raw, base_url=base_url(request), segment=doc_segment)

    async def update_line(
        request: Request,
        tenant: str,
        environment: str,
        company_id: str,
        doc_id: str,
        line_id: str,
        svc: Service,
        if_match: IfMatchHeader = None,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        raw = await request.body()
        return await run(
            svc.update_line,
            doc_id,
            line_id,
            raw,
            if_match,
            base_url=base_url(request),
            segment=doc_segment,
        )

    async def delete_line(
        tenant: str,
        environment: str,
        company_id: str,
        doc_id: str,
        line_id: str,
        svc: Service,
        if_match: IfMatchHeader = None,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        return await run(svc.delete_line, doc_id, line_id, if_match, segment=doc_segment)

    router.add_api_route(
        col,
        create_line,
        methods=["POST"],
        status_code=201,
        tags=[doc_es.tag],
        summary=f"Add a line to a draft of {doc_segment}",
        operation_id=f"create_{doc_segment}_{line_segment}",
        openapi_extra=JSON_BODY,
    )
    router.add_api_route(
        item,
        update_line,
        methods=["PATCH"],
        tags=[doc_es.tag],
        summary=f"Update a line of a draft of {doc_segment} (If-Match required)",
        operation_id=f"update_{doc_segment}_{line_segment}",
        openapi_extra=JSON_BODY,
    )
    router.add_api_route(
        item,
        delete_line,
        methods=["DELETE"],
        status_code=204,
        tags=[doc_es.tag],
        summary=f"Delete a line of a draft of {doc_segment} (If-Match required)",
        operation_id=f"delete_{doc_segment}_{line_segment}",
    )


add_lines(router, "salesInvoices", "salesInvoiceLines", writable=True)
add_lines(router, "salesCreditMemos", "salesCreditMemoLines", writable=True)

# ---------------------------------------------------------------------- bound actions


@router.post(
    f"{API}{COMPANY}/salesInvoices({{doc_id}})/Microsoft.NAV.post",
    status_code=204,
    tags=["salesInvoices"],
    summary="Post a draft sales invoice: status Open, posted number assigned",
)
async def post_invoice(
    tenant: str, environment: str, company_id: str, doc_id: str, svc: Service
) -> Response:
    scope_check(svc, tenant, environment, company_id)
    return await run(svc.post_document, "salesInvoices", doc_id)


@router.post(
    f"{API}{COMPANY}/salesInvoices({{doc_id}})/Microsoft.NAV.cancel",
    status_code=204,
    tags=["salesInvoices"],
    summary="Cancel a posted invoice with a posted corrective credit memo",
)
async def cancel_invoice(
    request: Request, tenant: str, environment: str, company_id: str, doc_id: str, svc: Service
) -> Response:
    scope_check(svc, tenant, environment, company_id)
    return await run(svc.corrective_credit_memo, doc_id, base_url=base_url(request), cancel=True)


@router.post(
    f"{API}{COMPANY}/salesInvoices({{doc_id}})/Microsoft.NAV.makeCorrectiveCreditMemo",
    status_code=204,
    tags=["salesInvoices"],
    summary="Create a draft corrective credit memo for a posted invoice",
)
async def corrective_memo(
    request: Request, tenant: str, environment: str, company_id: str, doc_id: str, svc: Service
) -> Response:
    scope_check(svc, tenant, environment, company_id)
    return await run(svc.corrective_credit_memo, doc_id, base_url=base_url(request), cancel=False)


@router.post(
    f"{API}{COMPANY}/salesCreditMemos({{doc_id}})/Microsoft.NAV.post",
    status_code=204,
    tags=["salesCreditMemos"],
    summary="Post a draft sales credit memo",
)
async def post_memo(
    tenant: str, environment: str, company_id: str, doc_id: str, svc: Service
) -> Response:
    scope_check(svc, tenant, environment, company_id)
    return await run(svc.post_document, "salesCreditMemos", doc_id)
