"""The ``/__admin/*`` routes every sandbox service has (health, faults, clock, firm operations).

``GET /__admin/health``, ``GET|PUT|PATCH /__admin/faults``, ``POST /__admin/advance``
(``{"steps": n, "seed": s}``), ``GET /__admin/changes?since=``, ``POST /__admin/reset``
(``{"regenerate": true}``), ``GET /__admin/manifest``, ``GET /__admin/clock``.

The routes reach the app's :class:`~erpsync_sandbox.context.SandboxContext` and service name
through ``app.state`` (set by :func:`erpsync_sandbox.common.make_base_app`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse

from erpsync_sandbox import lifecycle
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.contract import state_dependency
from erpsync_sandbox.faults import FaultConfig, Faults

__all__ = ["router", "sandbox_context"]


@state_dependency
async def sandbox_context(request: Request) -> SandboxContext:
    """The app's sandbox context (``app.state.ctx``)."""
    ctx: SandboxContext = request.app.state.ctx
    return ctx


@state_dependency
async def service_name(request: Request) -> str:
    """The app's service: ``crm``, ``psa`` or ``erp`` (``app.state.service``)."""
    service: str = request.app.state.service
    return service


@state_dependency
async def service_faults(request: Request) -> Faults:
    """The live fault state of the app's service."""
    ctx: SandboxContext = request.app.state.ctx
    return ctx.faults_for(request.app.state.service)


Ctx = Annotated[SandboxContext, Depends(sandbox_context)]
ServiceFaults = Annotated[Faults, Depends(service_faults)]

router = APIRouter(prefix="/__admin", tags=["admin"])


@router.get("/health")
def health(ctx: Ctx, service: Annotated[str, Depends(service_name)]) -> dict[str, Any]:
    return {
        "status": "ok",
        "service": service,
        "now": ctx.clock.now(),
        "size": ctx.size,
        "seed": ctx.seed,
        "generated": ctx.is_generated(),
    }


@router.get("/faults")
def get_faults(faults: ServiceFaults) -> dict[str, Any]:
    return faults.snapshot()


@router.put("/faults")
def put_faults(config: FaultConfig, faults: ServiceFaults) -> dict[str, Any]:
    faults.set(config)
    return faults.snapshot()


@router.patch("/faults")
def patch_faults(
    faults: ServiceFaults,
    changes: dict[str, Any] = Body(...),  # noqa: B008
) -> Any:
    try:
        faults.patch(changes)
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return faults.snapshot()


@router.post("/advance")
def post_advance(
    ctx: Ctx,
    body: dict[str, Any] | None = Body(None),  # noqa: B008
) -> dict[str, Any]:
    body = body or {}
    steps = int(body.get("steps", 1))
    seed = body.get("seed")
    changes = lifecycle.advance(ctx, steps, None if seed is None else int(seed))
    return {"now": ctx.clock.now(), "count": len(changes), "changes": changes}


@router.get("/changes")
def get_changes(
    ctx: Ctx,
    since: int = Query(0, ge=0),
    limit: int | None = Query(None, ge=1),
    source: str | None = None,
) -> dict[str, Any]:
    rows = ctx.changes.since(since, limit=limit, source=source)
    return {"last_seq": ctx.changes.last_seq(), "changes": rows}


@router.post("/reset")
def post_reset(
    ctx: Ctx,
    body: dict[str, Any] | None = Body(None),  # noqa: B008
) -> dict[str, Any]:
    regenerate = bool((body or {}).get("regenerate", True))
    lifecycle.reset(ctx, regenerate=regenerate)
    return {"status": "reset", "generated": ctx.is_generated(), "now": ctx.clock.now()}


@router.get("/manifest")
def get_manifest(ctx: Ctx) -> dict[str, Any]:
    return ctx.manifest()


@router.get("/clock")
def get_clock(request: Request, ctx: Ctx) -> dict[str, Any]:
    return {"now": ctx.clock.now(), "frozen": ctx.clock.frozen}
