"""Expenses: create, update (documented parameters only), delete (hard).

Harvest: https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/ --
``is_billed``/``invoice`` are read-only; DELETE is a hard delete.
"""

from __future__ import annotations

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from erpsync_sandbox.psa.routes.base import (
    NOT_FOUND,
    HarvestError,
    State,
    deleted,
    int_id,
    json_reply,
    note_undocumented,
    payload,
    v2_router,
)
from erpsync_sandbox.psa.writes import EXPENSE_UPDATE_PARAMS, undocumented_params

__all__ = ["router"]

router = v2_router()


@router.post("/expenses", status_code=201, tags=["Expenses"], summary="Create an expense")
async def create_expense(request: Request, state: State) -> Response:
    data = await payload(request, "create_expense")
    return json_reply(
        await run_in_threadpool(state.writer.create_expense, data, state.me_id()), 201
    )


@router.patch(
    "/expenses/{id}",
    tags=["Expenses"],
    summary="Update an expense (documented parameters; is_billed/invoice are read-only)",
)
async def update_expense(request: Request, id: str, state: State) -> Response:
    data = await payload(request)
    extra = undocumented_params(data, EXPENSE_UPDATE_PARAMS)
    note_undocumented(request, "PATCH /v2/expenses/{id}", extra)
    return json_reply(await run_in_threadpool(state.writer.update_expense, int_id(id), data))


@router.delete("/expenses/{id}", tags=["Expenses"], summary="Delete an expense (hard)")
def delete_expense(id: str, state: State) -> Response:
    if not state.store.delete("expenses", int_id(id)):
        raise HarvestError(404, NOT_FOUND)
    return deleted()
