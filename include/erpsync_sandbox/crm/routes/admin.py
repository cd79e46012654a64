"""CRM-only admin routes: settings, quota usage, open cursors, revoking every session."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from erpsync_sandbox.crm.routes.base import CrmState, State, sf_datetime
from erpsync_sandbox.store import parse_iso

__all__ = ["router"]

router = APIRouter()


def admin_state(state: CrmState) -> dict[str, Any]:
    return {
        "settings": asdict(state.settings),
        "api_usage": state.quota.current(),
        "open_cursors": len(state.cursors),
        "session_generation": state.auth.generation,
        "earliest_date_available": sf_datetime(state.earliest_available()),
    }


@router.get("/__admin/crm", tags=["admin"], summary="CRM settings, quota usage, cursors")
def get_crm_admin(state: State) -> dict[str, Any]:
    return admin_state(state)


@router.put(
    "/__admin/crm",
    tags=["admin"],
    summary="Change CRM settings (daily_limit, deleted_retention_days, "
    "earliest_deleted, locator_ttl_seconds, max_open_cursors, "
    "session_seconds) and/or api_usage",
)
def put_crm_admin(state: State, changes: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
    known = set(asdict(state.settings)) | {"api_usage"}
    unknown = sorted(set(changes) - known)
    if unknown:
        return JSONResponse({"detail": f"unknown settings {unknown}"}, status_code=422)
    try:
        if changes.get("earliest_deleted"):
            parse_iso(str(changes["earliest_deleted"]))
        values = {
            key: (
                value
                if key == "earliest_deleted"
                else int(value)
                if key == "api_usage"
                else type(getattr(state.settings, key))(value)
            )
            for key, value in changes.items()
        }
    except (TypeError, ValueError) as exc:
        return JSONResponse({"detail": f"bad setting value: {exc}"}, status_code=422)
    for key, value in values.items():
        if key == "api_usage":
            state.quota.set(value)
        else:
            setattr(state.settings, key, value)
    state.cursors.ttl_seconds = state.settings.locator_ttl_seconds
    state.cursors.max_open = state.settings.max_open_cursors
    state.auth.session_seconds = state.settings.session_seconds
    return admin_state(state)


@router.post("/__admin/crm/quota/reset", tags=["admin"], summary="Reset the daily API usage")
def reset_quota(state: State) -> dict[str, Any]:
    state.quota.set(0)
    return admin_state(state)


@router.post(
    "/__admin/crm/revoke-sessions",
    tags=["admin"],
    summary="Invalidate every access token (clients must log in again)",
)
def revoke_sessions(state: State) -> dict[str, Any]:
    generation = state.auth.revoke_all()
    state.store.meta_set("crm_session_generation", generation)
    state.cursors.clear()
    return admin_state(state)
