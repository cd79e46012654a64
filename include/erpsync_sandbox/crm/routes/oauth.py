"""The OAuth 2.0 token endpoint (client credentials; password grant for older clients).

https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
Sessions and grants: :mod:`erpsync_sandbox.crm.auth`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from erpsync_sandbox.crm.routes.base import State, json_reply

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/services/oauth2/token",
    tags=["OAuth"],
    summary="Get an access token (client_credentials or password grant)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {
                                "type": "string",
                                "enum": ["client_credentials", "password"],
                            },
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                            "username": {"type": "string"},
                            "password": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def token(request: Request, state: State) -> Response:
    raw = await request.body()
    instance_url = str(request.base_url).rstrip("/")
    return json_reply(state.auth.grant(raw, request.headers.get("authorization"), instance_url))
