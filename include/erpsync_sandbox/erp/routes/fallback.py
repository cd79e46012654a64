"""Every other ``/v2.0/...`` request: BC's 405 (known path, other method) or 404 answer.

Its catch-all path matches anything, so :func:`erpsync_sandbox.erp.app.create_app` includes
this router last.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.routing import Match

from erpsync_sandbox.erp.service import BCError

__all__ = ["router"]

router = APIRouter()


@router.api_route(
    "/v2.0/{rest:path}",
    methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
    include_in_schema=False,
)
async def not_found(request: Request, rest: str) -> Response:
    for route in request.app.router.routes:
        if route.path.startswith("/v2.0/{tenant}") and hasattr(route, "matches"):
            match, _ = route.matches(request.scope)
            if match is Match.PARTIAL:
                raise BCError(
                    405,
                    "BadRequest_MethodNotAllowed",
                    f"'{request.method}' requests for '{rest.rsplit('/', 1)[-1]}' are not"
                    " allowed within Dynamics 365 Business Central OData web services.",
                    note=f"no such route: {request.method} {request.url.path}",
                )
    parts = rest.split("/")
    segment = parts[-1].split("(")[0] if parts else rest
    if len(parts) >= 3 and parts[2] in ("api", "ODataV4"):
        api_parts = parts[3:]
        for part in api_parts:
            name = part.split("(")[0]
            if name not in ("v2.0", "v1.0", "companies", "Company"):
                segment = name
                break
    raise BCError(
        404,
        "BadRequest_ResourceNotFound",
        f"Resource not found for the segment '{segment}'.",
        note=f"no such route: {request.method} {request.url.path}",
    )
