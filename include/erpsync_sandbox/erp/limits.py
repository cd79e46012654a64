"""Business Central operational limits for the sandbox: request rate and concurrency, per user.

Business Central online throttles OData (API) requests **per user** (a service principal is a
user): at most 6,000 requests in any 5-minute sliding window, 5 processed at the same time,
95 more queued (100 connections), and a request beyond the rate or the queue gets ``429`` with
``{"error":{"code":"Application_TooManyRequests",...}}``. Older revisions of the page gave
per-environment limits (600 requests per minute in production, 300 in a sandbox); those were
replaced by the per-user limits and can still be configured here.
Source: "Operational limits for Business Central online", section "OData request limits (per
user)" (learn.microsoft.com/dynamics365/business-central/dev-itpro/administration/
operational-limits-online; MicrosoftDocs/dynamics365smb-devitpro-pb
dev-itpro/administration/operational-limits-online.md, checked at 5dc00b6, 2026-08-21).
Whether BC sends ``Retry-After`` is not documented ("retry with a cool-off period"), so the
header is optional here.

The user is the token's ``oid`` claim (else ``appid``): each service principal has its own
window, concurrency slots and queue. ``per_user=false`` puts every caller in one bucket (the
old per-environment model).

Settings (env, read when the app is created; also changeable at run time with
``PUT /__admin/limits``):

* ``ERPSYNC_SANDBOX_ERP_RATE`` (default ``6000/300``: requests / window seconds; ``off`` or
  ``0`` disables the rate limit). ``ERPSYNC_SANDBOX_ERP_RATE_PER_MIN=N`` is the older form
  (``N/60``).
* ``ERPSYNC_SANDBOX_ERP_MAX_CONCURRENT`` (default 5; 0 disables the concurrency limit)
* ``ERPSYNC_SANDBOX_ERP_QUEUE`` (default 95: requests that wait for a slot before 429)
* ``ERPSYNC_SANDBOX_ERP_RETRY_AFTER`` (seconds; unset or empty = no ``Retry-After`` header)
* ``ERPSYNC_SANDBOX_ERP_PER_USER`` (default ``1``; ``0`` = one bucket for the environment)

The admin body takes the same fields (``rate``, ``window_seconds``, ``max_concurrent``,
``queue``, ``retry_after``, ``per_user``); ``rate_per_min`` is accepted as ``rate`` per 60 s.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from pydantic import BaseModel, Field, model_validator

__all__ = ["LimitMiddleware", "LimitSettings", "Limiter", "user_of"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Documented per-user OData limits (see the module docstring for the source).
DOCUMENTED_RATE = 6000
DOCUMENTED_WINDOW_SECONDS = 300.0
DOCUMENTED_MAX_CONCURRENT = 5
DOCUMENTED_QUEUE = 95
ENVIRONMENT_KEY = "(environment)"


class LimitSettings(BaseModel):
    """Throttling settings of the ERP sandbox."""

    rate: int = Field(
        DOCUMENTED_RATE, ge=0, description="requests per sliding window per user (0 = off)"
    )
    window_seconds: float = Field(DOCUMENTED_WINDOW_SECONDS, gt=0, description="window length")
    max_concurrent: int = Field(
        DOCUMENTED_MAX_CONCURRENT, ge=0, description="requests executing at once (0 = off)"
    )
    queue: int = Field(DOCUMENTED_QUEUE, ge=0, description="requests waiting for a slot")
    retry_after: int | None = Field(None, ge=0, description="Retry-After seconds (None = omit)")
    per_user: bool = Field(True, description="limits per token user (False = per environment)")

    @model_validator(mode="before")
    @classmethod
    def _per_minute(cls, data: Any) -> Any:
        """``rate_per_min: N`` (the older per-minute form) means ``rate: N`` per 60 s."""
        if isinstance(data, dict) and data.get("rate_per_min") is not None:
            data = dict(data)
            data["rate"] = data.pop("rate_per_min")
            data.setdefault("window_seconds", 60.0)
        return data

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LimitSettings:
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        spec = env.get("ERPSYNC_SANDBOX_ERP_RATE", "").strip().lower()
        if spec in {"off", "0", "none"}:
            data["rate"] = 0
        elif spec:
            left, _, right = spec.partition("/")
            data["rate"] = int(left)
            if right:
                data["window_seconds"] = float(right)
        for key, name in (
            ("ERPSYNC_SANDBOX_ERP_RATE_PER_MIN", "rate_per_min"),
            ("ERPSYNC_SANDBOX_ERP_MAX_CONCURRENT", "max_concurrent"),
            ("ERPSYNC_SANDBOX_ERP_QUEUE", "queue"),
            ("ERPSYNC_SANDBOX_ERP_RETRY_AFTER", "retry_after"),
        ):
            raw = env.get(key, "").strip()
            if raw:
                data[name] = int(raw)
        per_user = env.get("ERPSYNC_SANDBOX_ERP_PER_USER", "").strip().lower()
        if per_user:
            data["per_user"] = per_user not in {"0", "false", "no", "off"}
        return cls.model_validate(data)


def user_of(authorization: str) -> str:
    """The user a bearer token belongs to: its ``oid`` claim, else ``appid`` (the auth
    middleware in front has already verified the signature)."""
    if authorization[:7].lower() != "bearer ":
        return "(anonymous)"
    parts = authorization[7:].strip().split(".")
    if len(parts) != 3:
        return "(anonymous)"
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return "(anonymous)"
    if not isinstance(claims, dict):
        return "(anonymous)"
    return str(claims.get("oid") or claims.get("appid") or "(anonymous)")


class _UserState:
    __slots__ = ("active", "peak_active", "peak_window", "stamps", "waiting")

    def __init__(self) -> None:
        self.stamps: collections.deque[float] = collections.deque()
        self.active = 0
        self.waiting = 0
        self.peak_active = 0
        self.peak_window = 0


class Limiter:
    """Per-user sliding-window request counter plus an admission gate (active slots + bounded
    queue). Counters (``peak_active``, ``peak_window``, ``rejected``) let tests check from the
    server's side that a client stayed under the limits."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self.settings = settings
        self._users: dict[str, _UserState] = {}
        self.rejected = {"rate": 0, "concurrency": 0}
        self.accepted = 0
        self._cond: asyncio.Condition | None = None

    def key(self, user: str) -> str:
        return user if self.settings.per_user else ENVIRONMENT_KEY

    def _state(self, key: str) -> _UserState:
        state = self._users.get(key)
        if state is None:
            state = self._users[key] = _UserState()
        return state

    def set(self, settings: LimitSettings) -> None:
        with self._lock:
            self.settings = settings
            for state in self._users.values():
                state.stamps.clear()
                state.peak_active = state.active
                state.peak_window = 0
            self.rejected = {"rate": 0, "concurrency": 0}
            self.accepted = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out = self.settings.model_dump()
            users = {
                key: {
                    "active": s.active,
                    "waiting": s.waiting,
                    "window_count": len(s.stamps),
                    "peak_active": s.peak_active,
                    "peak_window": s.peak_window,
                }
                for key, s in self._users.items()
            }
            out["stats"] = {
                "active": sum(s.active for s in self._users.values()),
                "waiting": sum(s.waiting for s in self._users.values()),
                "window_count": sum(len(s.stamps) for s in self._users.values()),
                "accepted": self.accepted,
                "rejected": dict(self.rejected),
                "users": users,
            }
        return out

    def take_rate(self, user: str = ENVIRONMENT_KEY) -> bool:
        """Count one request in the user's sliding window; False when the window is full."""
        with self._lock:
            state = self._state(self.key(user))
            limit = self.settings.rate
            now = self._clock()
            while state.stamps and state.stamps[0] <= now - self.settings.window_seconds:
                state.stamps.popleft()
            if limit and len(state.stamps) >= limit:
                self.rejected["rate"] += 1
                return False
            state.stamps.append(now)
            state.peak_window = max(state.peak_window, len(state.stamps))
            return True

    async def acquire(self, user: str = ENVIRONMENT_KEY) -> bool:
        """Take an execution slot, waiting in the queue if allowed; False = reject (429)."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond = self._cond
        key = self.key(user)
        state = self._state(key)

        def free() -> bool:
            limit = self.settings.max_concurrent
            return not limit or state.active < limit

        async with cond:
            if not free():
                if state.waiting >= self.settings.queue:
                    self.rejected["concurrency"] += 1
                    return False
                state.waiting += 1
                try:
                    await cond.wait_for(free)
                finally:
                    state.waiting -= 1
            state.active += 1
            state.peak_active = max(state.peak_active, state.active)
            self.accepted += 1
            return True

    async def release(self, user: str = ENVIRONMENT_KEY) -> None:
        assert self._cond is not None
        async with self._cond:
            self._state(self.key(user)).active -= 1
            self._cond.notify_all()


class LimitMiddleware:
    """ASGI middleware applying :class:`Limiter` to Business Central API paths (``/v2.0/...``)."""

    def __init__(self, app: ASGIApp, limiter: Limiter, prefix: str = "/v2.0/") -> None:
        self.app = app
        self.limiter = limiter
        self.prefix = prefix

    async def _reject(self, send: Send, why: str) -> None:
        cfg = self.limiter.settings
        if why == "rate":
            message = (
                f"The request rate limit ({cfg.rate} requests per {cfg.window_seconds:g}"
                " seconds) has been exceeded. Retry with a cool-off period."
            )
        else:
            message = (
                f"Too many concurrent requests ({cfg.max_concurrent} executing,"
                f" {cfg.queue} queued). Retry with a cool-off period."
            )
        body = json.dumps(
            {
                "error": {
                    "code": "Application_TooManyRequests",
                    "message": f"{message}  CorrelationId:  {uuid.uuid4()}.",
                }
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        retry_after = self.limiter.settings.retry_after
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        user = user_of(headers.get(b"authorization", b"").decode("latin-1"))
        if not self.limiter.take_rate(user):
            await self._reject(send, "rate")
            return
        if not await self.limiter.acquire(user):
            await self._reject(send, "concurrency")
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await self.limiter.release(user)
