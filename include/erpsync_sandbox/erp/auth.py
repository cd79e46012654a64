"""Entra ID (Azure AD) client-credentials tokens for the Business Central sandbox.

Real Business Central takes an OAuth2 bearer token that the client gets from Entra ID with the
client-credentials grant::

    POST https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token
    grant_type=client_credentials&client_id=..&client_secret=..
    &scope=https://api.businesscentral.dynamics.com/.default

The sandbox serves the same endpoint (and the tenant's OpenID discovery document, which MSAL
reads first) on the ERP service itself, so a connector changes only the authority host.
Tokens are HS256 JWTs signed with a key derived from the client secret: stateless, so they
survive a sandbox restart, and they expire like Entra's (``expires_in`` 3599 s).

References:
https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/administration/automation-apis-using-s2s-authentication
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["BC_AUDIENCE", "BC_SCOPE", "EntraError", "TokenIssuer"]

BC_AUDIENCE = "https://api.businesscentral.dynamics.com"
BC_SCOPE = BC_AUDIENCE + "/.default"
TOKEN_LIFETIME = 3599


class EntraError(Exception):
    """An Entra ID token error: ``{"error", "error_description", "error_codes", ...}``."""

    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description

    def body(self) -> dict[str, Any]:
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.aadsts}: {self.description} Trace ID: {trace} Correlation ID:"
                f" {corr} Timestamp: {stamp}"
            ),
            "error_codes": [self.aadsts],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.aadsts}",
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class TokenIssuer:
    """Checks client credentials and issues / verifies the sandbox's access tokens."""

    tenant: str
    client_id: str
    client_secret: str
    lifetime: int = TOKEN_LIFETIME

    @property
    def tenant_id(self) -> str:
        """A stable GUID for the tenant (Entra returns GUIDs in ``tid``)."""
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.tenant}.erpsync-sandbox"))

    def _key(self) -> bytes:
        return hashlib.sha256(f"erpsync-sandbox-erp:{self.client_secret}".encode()).digest()

    def known_tenant(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant.lower(), self.tenant_id)

    def issue(
        self,
        tenant: str,
        form: dict[str, str],
        basic: tuple[str, str] | None = None,
        *,
        v1: bool = False,
    ) -> dict[str, Any]:
        """Validate a token request's form (and optional HTTP Basic client auth) and return
        the token response, or raise :class:`EntraError`."""
        if not self.known_tenant(tenant):
            raise EntraError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID"
                " and are signing into the correct cloud.",
            )
        grant = form.get("grant_type", "")
        if not grant:
            raise EntraError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        if grant != "client_credentials":
            raise EntraError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id = form.get("client_id") or (basic[0] if basic else "")
        secret = form.get("client_secret") or (basic[1] if basic else "")
        if not client_id:
            raise EntraError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        if v1:
            resource = form.get("resource", "").rstrip("/")
            if resource != BC_AUDIENCE:
                raise EntraError(
                    400,
                    "invalid_resource",
                    500011,
                    f"The resource principal named {resource} was not found in the tenant.",
                )
        else:
            scope = form.get("scope", "")
            scopes = scope.split()
            if BC_SCOPE not in scopes and BC_SCOPE + "/" not in scopes:
                raise EntraError(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {scope or '(none)'} is not valid. Client"
                    " credential flows must have a scope value with /.default suffixed to the"
                    " resource identifier (application ID URI).",
                )
        if not hmac.compare_digest(client_id, self.client_id) or not hmac.compare_digest(
            secret, self.client_secret
        ):
            raise EntraError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is"
                " the client secret value, not the client secret ID, for a secret added to app"
                f" '{client_id}'.",
            )
        now = int(time.time())
        claims = {
            "aud": BC_AUDIENCE,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "appid": client_id,
            "tid": self.tenant_id,
            "roles": ["API.ReadWrite.All", "app_access"],
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
            "ver": "1.0",
        }
        token = self.sign(claims)
        out: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime,
            "access_token": token,
        }
        if v1:
            out.update(
                {
                    "expires_on": str(now + self.lifetime),
                    "not_before": str(now),
                    "resource": BC_AUDIENCE,
                }
            )
        return out

    def sign(self, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self._key(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(sig)}"

    def verify(self, token: str) -> dict[str, Any] | None:
        """The token's claims if it is ours, unexpired and for Business Central; else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self._key(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(parts[2]), expected):
                return None
            claims: dict[str, Any] = json.loads(_unb64(parts[1]))
        except (ValueError, TypeError):
            return None
        if claims.get("aud") != BC_AUDIENCE or int(claims.get("exp", 0)) < time.time():
            return None
        return claims
