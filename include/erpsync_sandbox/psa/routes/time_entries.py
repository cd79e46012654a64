"""Time entries: create (duration), update (documented parameters only), delete (hard).

Harvest: https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/ --
``is_billed``/``invoice`` are read-only and a locked entry refuses edits with 422; DELETE is a
hard delete (later GETs 404).
"""

from __future__ import annotations

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from erpsync_sandbox.psa.routes.base import (
    NOT_FOUND,
    HarvestError,
    State,
    body_doc,
    deleted,
    int_id,
    json_reply,
    note_undocumented,
    payload,
    v2_router,
)
from erpsync_sandbox.psa.writes import TIME_ENTRY_UPDATE_PARAMS, undocumented_params

__all__ = ["router"]

router = v2_router()


@router.post(
    "/time_entries",
    status_code=201,
    tags=["Time entries"],
    summary="Create a time entry (duration)",
    openapi_extra=body_doc("create_time_entry"),
)
async def create_time_entry(request: Request, state: State) -> Response:
    data = await payload(request, "create_time_entry")
    return json_reply(
        await run_in_threadpool(state.writer.create_time_entry, data, state.me_id()), 201
    )


@router.patch(
    "/time_entries/{id}",
    tags=["Time entries"],
    summary="Update a time entry (documented parameters; is_billed/invoice are read-only)",
    openapi_extra=body_doc("update_time_entry"),
)
async def update_time_entry(request: Request, id: str, state: State) -> Response:
    data = await payload(request)
    extra = undocumented_params(data, TIME_ENTRY_UPDATE_PARAMS)
    note_undocumented(request, "PATCH /v2/time_entries/{id}", extra)
    return json_reply(await run_in_threadpool(state.writer.update_time_entry, int_id(id), data))


@router.delete("/time_entries/{id}", tags=["Time entries"], summary="Delete a time entry (hard)")
def delete_time_entry(id: str, state: State) -> Response:
    if not state.store.delete("time_entries", int_id(id)):
        raise HarvestError(404, NOT_FOUND)
    return deleted()
