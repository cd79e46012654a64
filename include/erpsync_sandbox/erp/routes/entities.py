"""The entity sets of the standard API v2.0: list, get, create, update, delete.

One set of routes per :data:`~erpsync_sandbox.erp.entities.ENTITY_SETS` entry (customers,
projects, employees, taxGroups, paymentTerms, taxAreas, accounts, unitsOfMeasure,
timeRegistrationEntries, salesInvoices, salesCreditMemos, ...); read-only sets (``accounts``,
APIV2Accounts.Page.al) get only the two GETs. Draft sales documents are created with a deep
insert of their lines; their lines and bound actions are in :mod:`.sales_documents`.
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from erpsync_sandbox.erp.entities import ENTITY_SETS, EntitySet
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

#: Sales documents: created and updated through the document logic (numbers, totals, lines).
DOCUMENTS = ("salesInvoices", "salesCreditMemos")

router = APIRouter()


def add_collection(router: APIRouter, es: EntitySet, root: str) -> None:
    """The routes of entity set ``es`` under ``root`` (handlers bound to ``es`` only)."""
    col = f"{root}{COMPANY}/{es.segment}"
    item = f"{col}({{entity_id}})"
    name = es.segment

    async def list_entities(
        request: Request,
        tenant: str,
        environment: str,
        company_id: str,
        svc: Service,
        prefer: PreferHeader = None,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        return await run(
            svc.list,
            es,
            base_url=base_url(request),
            path=request.url.path,
            query=odata_query(request),
            prefer=prefer,
        )

    async def get_entity(
        request: Request,
        tenant: str,
        environment: str,
        company_id: str,
        entity_id: str,
        svc: Service,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        return await run(
            svc.get, es, entity_id, base_url=base_url(request), query=odata_query(request)
        )

    router.add_api_route(
        col,
        list_entities,
        methods=["GET"],
        tags=[es.tag],
        summary=f"List {name} ($filter, $top, $skip, $select, $orderby, paging)",
        operation_id=f"list_{name}",
    )
    router.add_api_route(
        item,
        get_entity,
        methods=["GET"],
        tags=[es.tag],
        summary=f"Get one of {name} by id",
        operation_id=f"get_{name}",
    )
    if not es.writable or es.segment in ("salesInvoiceLines", "salesCreditMemoLines"):
        return

    async def create_entity(
        request: Request, tenant: str, environment: str, company_id: str, svc: Service
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        raw = await request.body()
        if es.segment in DOCUMENTS:
            return await run(svc.create_document, es.segment, raw, base_url=base_url(request))
        return await run(svc.create, es, raw, base_url=base_url(request))

    async def update_entity(
        request: Request,
        tenant: str,
        environment: str,
        company_id: str,
        entity_id: str,
        svc: Service,
        if_match: IfMatchHeader = None,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        raw = await request.body()
        if es.segment in DOCUMENTS:
            return await run(
                svc.update_invoice,
                entity_id,
                raw,
                if_match,
                base_url=base_url(request),
                segment=es.segment,
            )
        return await run(svc.update, es, entity_id, raw, if_match, base_url=base_url(request))

    async def delete_entity(
        tenant: str,
        environment: str,
        company_id: str,
        entity_id: str,
        svc: Service,
        if_match: IfMatchHeader = None,
    ) -> Response:
        scope_check(svc, tenant, environment, company_id)
        if es.segment in DOCUMENTS:
            return await run(svc.delete_invoice, entity_id, if_match, segment=es.segment)
        return await run(svc.delete, es, entity_id, if_match)

    create_summary = (
        f"Create a draft {es.entity_type} (deep insert of its lines; no idempotency)"
        if es.segment in DOCUMENTS
        else f"Create one of {name}"
    )
    router.add_api_route(
        col,
        create_entity,
        methods=["POST"],
        status_code=201,
        tags=[es.tag],
        summary=create_summary,
        operation_id=f"create_{name}",
        openapi_extra=JSON_BODY,
    )
    router.add_api_route(
        item,
        update_entity,
        methods=["PATCH"],
        tags=[es.tag],
        summary=f"Update one of {name} (If-Match required)",
        operation_id=f"update_{name}",
        openapi_extra=JSON_BODY,
    )
    router.add_api_route(
        item,
        delete_entity,
        methods=["DELETE"],
        status_code=204,
        tags=[es.tag],
        summary=f"Delete one of {name} (If-Match required)",
        operation_id=f"delete_{name}",
    )


for _es in ENTITY_SETS.values():
    add_collection(router, _es, API)
