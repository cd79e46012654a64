"""User rate cards: ``POST /v2/users/{id}/billable_rates`` and ``cost_rates``.

A new rate ends the previous one (Harvest:
https://help.getharvest.com/api-v2/users-api/users/billable-rates/ and
https://help.getharvest.com/api-v2/users-api/users/cost-rates/).
"""

from __future__ import annotations

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from erpsync_sandbox.psa.routes.base import State, body_doc, json_reply, payload, v2_router

__all__ = ["router"]

router = v2_router()


def add_rate_writes(name: str) -> None:
    async def post(request: Request, parent_id: str, state: State) -> Response:
        uid = state.require_parent("users", parent_id)
        data = await payload(request, f"create_{name}")
        return json_reply(await run_in_threadpool(state.writer.create_rate, name, uid, data), 201)

    router.add_api_route(
        f"/users/{{parent_id}}/{name}",
        post,
        methods=["POST"],
        status_code=201,
        tags=["Users"],
        name=f"create_{name}",
        summary=f"Create a {name.rstrip('s').replace('_', ' ')} (ends the previous one)",
        openapi_extra=body_doc(f"create_{name}") or body_doc("create_billable_rates"),
    )


add_rate_writes("billable_rates")
add_rate_writes("cost_rates")
