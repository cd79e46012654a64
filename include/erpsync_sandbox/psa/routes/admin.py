"""PSA-only admin routes: the rate limit in force, and changing it at run time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from erpsync_sandbox.psa.ratelimit import RATE_LIMIT_ENV, parse_rate_limit
from erpsync_sandbox.psa.routes.base import State, json_reply, payload

__all__ = ["router"]

router = APIRouter(prefix="/__admin/psa", tags=["admin"])


@router.get("/rate_limit", summary="The PSA rate limit in force")
def get_rate_limit(state: State) -> dict[str, Any]:
    limit = state.limiter.limit
    return {
        "spec": None if limit is None else f"{limit.requests}/{limit.window_seconds:g}",
        "env": RATE_LIMIT_ENV,
    }


@router.put(
    "/rate_limit",
    summary="Change the PSA rate limit ({'spec': '100/15'} or {'spec': 'off'})",
)
async def put_rate_limit(request: Request, state: State) -> Response:
    body = await payload(request)
    try:
        state.limiter.configure(parse_rate_limit(str(body.get("spec", "off"))))
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return json_reply(get_rate_limit(state))
