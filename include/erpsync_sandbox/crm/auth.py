"""OAuth 2.0 token endpoint and bearer-session checks of the sandbox CRM (Salesforce style).

``POST /services/oauth2/token`` accepts the ``client_credentials`` and ``password`` grants
(form-encoded, client credentials in the form or in HTTP Basic) and answers like Salesforce:
``{access_token, instance_url, id, token_type: "Bearer", issued_at, signature}``; failures are
400 ``{"error": "invalid_client" | "invalid_grant" | "unsupported_grant_type",
"error_description": ...}``.

Access tokens look like Salesforce session ids (``00D...!<opaque>``). They are stateless: an
HMAC over the issue time and a session generation, keyed with the client secret, so they stay
valid across a sandbox restart; they expire after ``session_seconds`` (default 2 h, Salesforce's
default session timeout) and are all revoked by bumping the generation
(``POST /__admin/crm/revoke-sessions``), which lets tests exercise a client's re-login path.

Salesforce OAuth docs:
https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from .schema import salesforce_id

__all__ = ["ORG_ID", "USER_ID", "Credentials", "SessionAuthority", "TokenError"]

#: The sandbox org and its integration user (ids in Salesforce format).
ORG_ID = salesforce_id("00D5g00000ERPSY")
USER_ID = salesforce_id("0055g00000INTEG")


class TokenError(Exception):
    """A token request Salesforce would refuse (OAuth error body, HTTP 400)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass
class Credentials:
    """What the token endpoint accepts; defaults are the sandbox-only values."""

    client_id: str
    client_secret: str
    username: str = "integration@erpsync.sandbox"
    password: str = "sandbox-crm-password"  # noqa: S105 - public sandbox default


def credentials_from(client_id: str, client_secret: str) -> Credentials:
    """Credentials with username/password from ``ERPSYNC_SANDBOX_CRM_USERNAME``/``_PASSWORD``."""
    creds = Credentials(client_id, client_secret)
    creds.username = os.environ.get("ERPSYNC_SANDBOX_CRM_USERNAME", creds.username)
    creds.password = os.environ.get("ERPSYNC_SANDBOX_CRM_PASSWORD", creds.password)
    return creds


class SessionAuthority:
    """Issues and checks access tokens."""

    def __init__(self, creds: Credentials, *, session_seconds: int = 7200) -> None:
        self.creds = creds
        self.session_seconds = session_seconds
        self.generation = 0
        self._key = hashlib.sha256(
            b"erpsync-sandbox-crm|" + creds.client_id.encode() + b"|" + creds.client_secret.encode()
        ).digest()

    # ------------------------------------------------------------------ token endpoint

    def grant(self, form_body: bytes, authorization: str | None, instance_url: str) -> dict:
        """Handle a token request body; returns the token response or raises TokenError."""
        try:
            form = {
                k: v[0] for k, v in parse_qs(form_body.decode(), keep_blank_values=True).items()
            }
        except UnicodeDecodeError:
            raise TokenError("invalid_request", "invalid request body") from None
        client_id = form.get("client_id")
        client_secret = form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:].strip()).decode()
                client_id, _, client_secret = raw.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise TokenError("invalid_client", "invalid client credentials") from None
        grant_type = form.get("grant_type")
        if not grant_type:
            raise TokenError("unsupported_grant_type", "grant type not supported")
        if grant_type not in ("client_credentials", "password"):
            raise TokenError("unsupported_grant_type", "grant type not supported")
        if not client_id:
            raise TokenError("invalid_client_id", "client identifier invalid")
        if not hmac.compare_digest(client_id, self.creds.client_id) or not hmac.compare_digest(
            client_secret or "", self.creds.client_secret
        ):
            raise TokenError("invalid_client", "invalid client credentials")
        if grant_type == "password" and (
            form.get("username") != self.creds.username
            or not hmac.compare_digest(form.get("password", ""), self.creds.password)
        ):
            raise TokenError("invalid_grant", "authentication failure")
        issued_ms = int(time.time() * 1000)
        identity = f"{instance_url}/id/{ORG_ID}/{USER_ID}"
        signature = base64.b64encode(
            hmac.new(
                self.creds.client_secret.encode(),
                (identity + str(issued_ms)).encode(),
                hashlib.sha256,
            ).digest()
        ).decode()
        return {
            "access_token": self.issue(issued_ms),
            "signature": signature,
            "scope": "api",
            "instance_url": instance_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": str(issued_ms),
        }

    # ------------------------------------------------------------------ tokens

    def issue(self, issued_ms: int | None = None) -> str:
        """A new access token (``00D...!<payload>``)."""
        issued_ms = int(time.time() * 1000) if issued_ms is None else issued_ms
        payload = f"{issued_ms}.{self.generation}"
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:18]
        opaque = base64.urlsafe_b64encode(payload.encode() + b"." + mac).decode().rstrip("=")
        return f"{ORG_ID[:15]}!{opaque}"

    def check(self, authorization: str | None) -> bool:
        """True if the ``Authorization`` header carries a live session."""
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or "!" not in token:
            return False
        opaque = token.strip().split("!", 1)[1]
        try:
            raw = base64.urlsafe_b64decode(opaque + "=" * (-len(opaque) % 4))
        except (binascii.Error, ValueError):
            return False
        payload, sep, mac = raw.partition(b".")
        gen, sep2, mac = mac.partition(b".")
        if not sep or not sep2:
            return False
        body = payload + b"." + gen
        expected = hmac.new(self._key, body, hashlib.sha256).digest()[:18]
        if not hmac.compare_digest(mac, expected):
            return False
        try:
            issued_ms, generation = int(payload), int(gen)
        except ValueError:
            return False
        if generation != self.generation:
            return False
        return time.time() * 1000 - issued_ms < self.session_seconds * 1000

    def revoke_all(self) -> int:
        """Invalidate every issued token; returns the new generation."""
        self.generation += 1
        return self.generation
