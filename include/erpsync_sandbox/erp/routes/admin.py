"""ERP-only admin routes: the rate/concurrency limits, and a client paying an invoice."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Response

from erpsync_sandbox.erp.limits import LimitSettings
from erpsync_sandbox.erp.routes.base import ErpLimiter, Service
from erpsync_sandbox.store import change_source, dumps

__all__ = ["router"]

router = APIRouter(prefix="/__admin", tags=["admin"])


@router.get("/limits", summary="ERP rate/concurrency limits and stats")
def get_limits(limiter: ErpLimiter) -> dict[str, Any]:
    return limiter.snapshot()


@router.put("/limits", summary="Replace the ERP rate/concurrency limits")
def put_limits(settings: LimitSettings, limiter: ErpLimiter) -> dict[str, Any]:
    limiter.set(settings)
    return limiter.snapshot()


@router.post(
    "/payments",
    summary="Sandbox control: a client pays (part of) a posted sales invoice",
)
def post_payment(svc: Service, body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
    """``{"invoiceId": id | "number": posted number, "amount": 100.5}`` -> the invoice's
    ``id, number, amount, remainingAmount, status, lastModifiedDateTime`` after payment."""
    token = change_source.set("control")
    try:
        result = svc.apply_payment(
            invoice_id=body.get("invoiceId"),
            number=body.get("number"),
            amount=body.get("amount"),
        )
    finally:
        change_source.reset(token)
    return Response(dumps(result), headers={"Content-Type": "application/json"})
