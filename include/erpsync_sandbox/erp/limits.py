"""Business Central operational limits for the sandbox: requests per minute and concurrency.

Business Central throttles each environment: a per-minute request quota (600/min in production
per the operational-limits page; newer docs say 6,000 per 5 minutes per user, so it is
configurable) and at most 5 requests executing at once with a queue of 95 behind them. A request
beyond either limit gets ``429`` with ``{"error":{"code":"Application_TooManyRequests",...}}``.
Whether BC sends ``Retry-After`` is unverified, so the header is optional here.

Settings (env, read when the app is created; also changeable at run time with
``PUT /__admin/limits``):

* ``ERPSYNC_SANDBOX_ERP_RATE_PER_MIN`` (default 600; 0 disables the rate limit)
* ``ERPSYNC_SANDBOX_ERP_MAX_CONCURRENT`` (default 5; 0 disables the concurrency limit)
* ``ERPSYNC_SANDBOX_ERP_QUEUE`` (default 95: requests that wait for a slot before 429)
* ``ERPSYNC_SANDBOX_ERP_RETRY_AFTER`` (seconds; unset or empty = no ``Retry-After`` header)

Reference: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/dynamics-rate-limits
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["LimitMiddleware", "LimitSettings", "Limiter"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LimitSettings(BaseModel):
    """Throttling settings of the ERP sandbox."""

    rate_per_min: int = Field(600, ge=0, description="requests per sliding minute (0 = off)")
    max_concurrent: int = Field(5, ge=0, description="requests executing at once (0 = off)")
    queue: int = Field(95, ge=0, description="requests waiting for a slot before 429")
    retry_after: int | None = Field(None, ge=0, description="Retry-After seconds (None = omit)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LimitSettings:
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        for key, name in (
            ("ERPSYNC_SANDBOX_ERP_RATE_PER_MIN", "rate_per_min"),
            ("ERPSYNC_SANDBOX_ERP_MAX_CONCURRENT", "max_concurrent"),
            ("ERPSYNC_SANDBOX_ERP_QUEUE", "queue"),
            ("ERPSYNC_SANDBOX_ERP_RETRY_AFTER", "retry_after"),
        ):
            raw = env.get(key, "").strip()
            if raw:
                data[name] = int(raw)
        return cls.model_validate(data)


class Limiter:
    """Sliding-window request counter plus an admission gate (active slots + bounded queue)."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self.settings = settings
        self._stamps: collections.deque[float] = collections.deque()
        self.active = 0
        self.waiting = 0
        self.rejected = {"rate": 0, "concurrency": 0}
        self._cond: asyncio.Condition | None = None

    def set(self, settings: LimitSettings) -> None:
        with self._lock:
            self.settings = settings
            self._stamps.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out = self.settings.model_dump()
            out["stats"] = {
                "active": self.active,
                "waiting": self.waiting,
                "window_count": len(self._stamps),
                "rejected": dict(self.rejected),
            }
        return out

    def take_rate(self) -> bool:
        """Count one request in the sliding minute; False when the quota is spent."""
        with self._lock:
            limit = self.settings.rate_per_min
            if not limit:
                return True
            now = self._clock()
            while self._stamps and self._stamps[0] <= now - 60.0:
                self._stamps.popleft()
            if len(self._stamps) >= limit:
                self.rejected["rate"] += 1
                return False
            self._stamps.append(now)
            return True

    async def acquire(self) -> bool:
        """Take an execution slot, waiting in the queue if allowed; False = reject (429)."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond = self._cond
        async with cond:
            limit = self.settings.max_concurrent
            if not limit or self.active < limit:
                self.active += 1
                return True
            if self.waiting >= self.settings.queue:
                self.rejected["concurrency"] += 1
                return False
            self.waiting += 1
            try:
                await cond.wait_for(
                    lambda: (
                        not self.settings.max_concurrent
                        or self.active < self.settings.max_concurrent
                    )
                )
            finally:
                self.waiting -= 1
            self.active += 1
            return True

    async def release(self) -> None:
        assert self._cond is not None
        async with self._cond:
            self.active -= 1
            self._cond.notify()


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
                f"The request rate limit ({cfg.rate_per_min} requests per minute) has been"
                " exceeded. Retry with a cool-off period."
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
        if not self.limiter.take_rate():
            await self._reject(send, "rate")
            return
        if not await self.limiter.acquire():
            await self._reject(send, "concurrency")
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await self.limiter.release()
