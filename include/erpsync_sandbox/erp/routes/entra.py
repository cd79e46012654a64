"""Entra ID (Microsoft identity platform) endpoints a Business Central client calls first.

Client-credentials tokens from the v2.0 and v1 token endpoints, and the tenant's OpenID
discovery document (read by MSAL). Token rules: :mod:`erpsync_sandbox.erp.auth`.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request, Response

from erpsync_sandbox.erp.auth import EntraError, TokenIssuer
from erpsync_sandbox.erp.routes.base import Issuer, base_url

__all__ = ["router"]

router = APIRouter(tags=["auth"])


async def _token(request: Request, issuer: TokenIssuer, tenant: str, v1: bool) -> Response:
    raw = await request.body()
    form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    basic = None
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, pwd = base64.b64decode(auth[6:]).decode().partition(":")
            basic = (user, pwd)
        except (binascii.Error, UnicodeDecodeError):
            basic = None
    result = issuer.issue(tenant, form, basic, v1=v1)
    return Response(
        orjson.dumps(result),
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "no-store",
        },
    )


@router.post(
    "/{tenant}/oauth2/v2.0/token",
    summary="Entra ID token (client credentials, v2.0 endpoint)",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "grant_type": {"type": "string", "example": "client_credentials"},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                            "scope": {
                                "type": "string",
                                "example": "https://api.businesscentral.dynamics.com/.default",
                            },
                        },
                    }
                }
            }
        }
    },
)
async def token_v2(request: Request, tenant: str, issuer: Issuer) -> Response:
    return await _token(request, issuer, tenant, v1=False)


@router.post(
    "/{tenant}/oauth2/token",
    summary="Entra ID token (client credentials, v1 endpoint with resource=)",
)
async def token_v1(request: Request, tenant: str, issuer: Issuer) -> Response:
    return await _token(request, issuer, tenant, v1=True)


@router.get(
    "/{tenant}/v2.0/.well-known/openid-configuration",
    summary="OpenID discovery document of the tenant (read by MSAL)",
)
async def openid_configuration(request: Request, tenant: str, issuer: Issuer) -> Response:
    if not issuer.known_tenant(tenant):
        raise EntraError(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
    base = base_url(request)
    doc = {
        "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{issuer.tenant_id}/v2.0",
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid"],
        "tenant_region_scope": "EU",
    }
    return Response(orjson.dumps(doc), headers={"Content-Type": "application/json"})
