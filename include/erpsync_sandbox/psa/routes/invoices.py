"""Invoices: create (free-form ``line_items`` and/or ``line_items_import``), delete.

Harvest: https://help.getharvest.com/api-v2/invoices-api/invoices/invoices/ -- POST answers
201 and is never deduplicated; ``line_items_import`` marks the imported time and expenses
billed, and deleting the invoice releases them.
"""

from __future__ import annotations

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from erpsync_sandbox.psa.routes.base import (
    State,
    body_doc,
    deleted,
    int_id,
    json_reply,
    note_undocumented,
    payload,
    v2_router,
)
from erpsync_sandbox.psa.writes import (
    INVOICE_CREATE_PARAMS,
    invoice_import_undocumented,
    undocumented_params,
)

__all__ = ["router"]

router = v2_router()


@router.post(
    "/invoices",
    status_code=201,
    tags=["Invoices"],
    summary="Create an invoice: free-form line_items and/or line_items_import of tracked"
    " time and expenses (201; no deduplication)",
    openapi_extra=body_doc("import_invoice"),
)
async def create_invoice(request: Request, state: State) -> Response:
    data = await payload(request)
    extra = undocumented_params(data, INVOICE_CREATE_PARAMS)
    note_undocumented(request, "POST /v2/invoices", extra + invoice_import_undocumented(data))
    return json_reply(
        await run_in_threadpool(state.writer.create_invoice, data, state.me_ref()), 201
    )


@router.delete(
    "/invoices/{id}",
    tags=["Invoices"],
    summary="Delete an invoice (the time and expenses it imported are uninvoiced again)",
)
async def delete_invoice(id: str, state: State) -> Response:
    await run_in_threadpool(state.writer.delete_invoice, int_id(id))
    return deleted()
