"""Harvest's ID service endpoints that OAuth clients call first.

``POST /api/v2/oauth2/token`` (``grant_type=refresh_token``; the refresh token is the sandbox
token) and ``GET /api/v2/accounts`` (the accounts the token can reach). Harvest:
https://help.getharvest.com/api-v2/authentication-api/authentication/authentication/
"""

from __future__ import annotations

import secrets

import orjson
from fastapi import APIRouter, Header, Request, Response

from erpsync_sandbox.psa.routes.base import (
    INVALID_TOKEN,
    JSON,
    HarvestError,
    State,
    json_reply,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v2", tags=["Harvest ID"])


@router.post(
    "/oauth2/token",
    summary="OAuth2 token (refresh_token grant; the refresh token is the sandbox token)",
)
async def oauth_token(request: Request, state: State) -> Response:
    cfg = state.config
    form = await request.form()
    refresh = str(form.get("refresh_token") or "")
    if form.get("grant_type") != "refresh_token" or not secrets.compare_digest(
        refresh, cfg.psa_token
    ):
        return Response(
            orjson.dumps(
                {
                    "error": "invalid_grant",
                    "error_description": "The provided"
                    " authorization grant is invalid, expired or revoked.",
                }
            ),
            status_code=400,
            media_type=JSON,
        )
    return json_reply(
        {
            "access_token": cfg.psa_token,
            "refresh_token": cfg.psa_token,
            "token_type": "bearer",
            "expires_in": 1_209_600,
        }
    )


@router.get("/accounts", summary="Accounts the token can reach")
def accounts(state: State, authorization: str | None = Header(None)) -> Response:
    cfg = state.config
    token = (
        (authorization or "")[7:].strip() if (authorization or "")[:7].lower() == "bearer " else ""
    )
    if not token or not secrets.compare_digest(token, cfg.psa_token):
        raise HarvestError(401, INVALID_TOKEN)
    user = state.me_ref() or {"id": 1, "name": "Sandbox Admin"}
    first, _, last = str(user["name"]).partition(" ")
    return json_reply(
        {
            "user": {
                "id": user["id"],
                "first_name": first,
                "last_name": last,
                "email": "admin@sandbox.erpsync.test",
            },
            "accounts": [
                {
                    "id": int(cfg.psa_account_id),
                    "name": "erpsync sandbox firm",
                    "product": "harvest",
                }
            ],
        }
    )
