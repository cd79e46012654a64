"""Fault injection for the sandbox services: configuration, ASGI middleware and service hooks.

Real APIs misbehave; connectors must survive it. Each service (crm, psa, erp) has its own
:class:`FaultConfig`, set at start (CLI options or the ``ERPSYNC_SANDBOX_FAULTS`` /
``ERPSYNC_SANDBOX_FAULTS_<SERVICE>`` env vars, JSON) or at run time with
``PUT /__admin/faults`` (replace) / ``PATCH /__admin/faults`` (merge). Every random decision comes
from one ``random.Random(seed)`` per service, re-seeded whenever the config is set, so the same
request sequence meets the same faults.

Faults (see docs/reference/vendor-apis.md, "Cross-cutting fault injection"):

* ``error_rate_5xx``: share of requests answered with a 5xx before the handler runs.
* ``burst_429``: the next ``count`` requests (after ``start_after``) get 429 with
  ``Retry-After: retry_after``; ``every`` > 0 repeats the burst every N requests.
* ``latency_ms`` (+ ``latency_jitter_ms``): delay before each request is handled.
* ``drop_after_commit_rate``: for writes (POST/PUT/PATCH/DELETE) the handler runs and commits,
  then the server sends the response head and drops the connection without the body; the client
  sees a protocol error and cannot know whether the write happened.
* ``mutate_during_paging_rate``: after a page is served (services call
  :meth:`Faults.after_page`) touch ``mutate_count`` random records of that resource so their
  modstamp moves.
* ``tie_timestamps``: writes share whole-second modstamps, so a burst of writes has equal
  timestamps that land on page boundaries (tests ``>=`` versus ``>`` cursors).

Error bodies follow each vendor's format (Salesforce array, Harvest ``{"message"}``,
Business Central ``{"error":{"code","message"}}``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import BaseModel, Field

from erpsync_sandbox.store import Store, change_source

__all__ = [
    "Burst429",
    "DroppedConnection",
    "FaultConfig",
    "FaultMiddleware",
    "Faults",
    "error_body",
    "faults_from_env",
]

log = logging.getLogger("erpsync_sandbox.faults")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Burst429(BaseModel):
    """A burst of consecutive 429 responses."""

    count: int = Field(0, ge=0, description="requests answered 429 per burst (0 = off)")
    retry_after: int = Field(1, ge=0, description="Retry-After header value, seconds")
    start_after: int = Field(0, ge=0, description="requests let through before the first burst")
    every: int = Field(0, ge=0, description="repeat a burst every N requests (0 = once)")


class FaultConfig(BaseModel):
    """Fault settings of one service. All rates are probabilities in [0, 1]."""

    seed: int = 0
    error_rate_5xx: float = Field(0.0, ge=0.0, le=1.0)
    error_statuses: list[int] = Field(default_factory=lambda: [500, 502, 503])
    burst_429: Burst429 = Field(default_factory=Burst429)
    latency_ms: int = Field(0, ge=0)
    latency_jitter_ms: int = Field(0, ge=0)
    drop_after_commit_rate: float = Field(0.0, ge=0.0, le=1.0)
    drop_path_contains: str | None = Field(
        None, description="only drop writes whose path contains this text (e.g. salesInvoices)"
    )
    mutate_during_paging_rate: float = Field(0.0, ge=0.0, le=1.0)
    mutate_count: int = Field(3, ge=0)
    tie_timestamps: bool = False

    def is_quiet(self) -> bool:
        """True when no fault is active."""
        return (
            self.error_rate_5xx == 0
            and self.burst_429.count == 0
            and self.latency_ms == 0
            and self.latency_jitter_ms == 0
            and self.drop_after_commit_rate == 0
            and self.mutate_during_paging_rate == 0
            and not self.tie_timestamps
        )


def faults_from_env(service: str, env: MutableMapping[str, str] | None = None) -> FaultConfig:
    """Fault config from ``ERPSYNC_SANDBOX_FAULTS`` merged with ``ERPSYNC_SANDBOX_FAULTS_<SVC>``
    (both JSON objects); empty config when neither is set."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    for key in ("ERPSYNC_SANDBOX_FAULTS", f"ERPSYNC_SANDBOX_FAULTS_{service.upper()}"):
        raw = env.get(key)
        if raw:
            data.update(json.loads(raw))
    return FaultConfig.model_validate(data)


def error_body(service: str, status: int, message: str, code: str | None = None) -> bytes:
    """An error body in the vendor's format for ``service``."""
    if service == "crm":
        payload: Any = [{"message": message, "errorCode": code or _sf_code(status), "fields": []}]
    elif service == "erp":
        payload = {"error": {"code": code or _bc_code(status), "message": message}}
    else:
        payload = {"message": message} if code is None else {"error": code, "message": message}
    return json.dumps(payload).encode()


def _sf_code(status: int) -> str:
    return {429: "REQUEST_LIMIT_EXCEEDED", 503: "SERVER_UNAVAILABLE"}.get(
        status, "UNKNOWN_EXCEPTION"
    )


def _bc_code(status: int) -> str:
    return {
        429: "Application_TooManyRequests",
        503: "Internal_ServiceUnavailable",
        502: "Internal_BadGateway",
    }.get(status, "Internal_ServerError")


class DroppedConnection(ConnectionAbortedError):
    """Raised after a committed write to make the server drop the connection (fault)."""


class Faults:
    """Live fault state of one service: its config, its RNG and the hooks services call."""

    def __init__(
        self, service: str, config: FaultConfig | None = None, store: Store | None = None
    ) -> None:
        self.service = service
        self.store = store
        self._lock = threading.Lock()
        self.requests = 0
        self.injected: dict[str, int] = {}
        self.config = FaultConfig()
        self.rng = random.Random(0)  # noqa: S311 - reproducible fault decisions, not crypto
        self.set(config or FaultConfig())

    # ------------------------------------------------------------------ config

    def set(self, config: FaultConfig) -> FaultConfig:
        """Replace the config; re-seeds the RNG and resets request counters."""
        with self._lock:
            self.config = config
            self.rng = random.Random(config.seed)  # noqa: S311
            self.requests = 0
            self.injected = {}
            if self.store is not None:
                self.store.tie_timestamps = config.tie_timestamps
        return config

    def patch(self, changes: dict[str, Any]) -> FaultConfig:
        """Merge ``changes`` into the current config (then as :meth:`set`)."""
        data = self.config.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return self.set(FaultConfig.model_validate(data))

    def snapshot(self) -> dict[str, Any]:
        """Config plus counters, as served by ``GET /__admin/faults``."""
        with self._lock:
            out = self.config.model_dump()
            out["stats"] = {"requests": self.requests, "injected": dict(self.injected)}
        return out

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    # ------------------------------------------------------------------ per-request decisions

    def decide(self, method: str, path: str) -> dict[str, Any]:
        """Decide this request's faults (called once per non-admin request, in arrival order).

        Returns ``{"status": int|None, "retry_after": int|None, "delay": float, "drop": bool}``.
        """
        with self._lock:
            cfg = self.config
            n = self.requests
            self.requests += 1
            out: dict[str, Any] = {"status": None, "retry_after": None, "delay": 0.0, "drop": False}
            if cfg.is_quiet():
                return out
            if cfg.latency_ms or cfg.latency_jitter_ms:
                jitter = self.rng.uniform(0, cfg.latency_jitter_ms) if cfg.latency_jitter_ms else 0
                out["delay"] = (cfg.latency_ms + jitter) / 1000.0
            burst = cfg.burst_429
            if burst.count and n >= burst.start_after:
                k = n - burst.start_after
                in_burst = k % burst.every < burst.count if burst.every else k < burst.count
                if in_burst:
                    out["status"] = 429
                    out["retry_after"] = burst.retry_after
                    self._count("429")
                    return out
            if cfg.error_rate_5xx and self.rng.random() < cfg.error_rate_5xx:
                out["status"] = self.rng.choice(cfg.error_statuses or [500])
                self._count("5xx")
                return out
            if (
                cfg.drop_after_commit_rate
                and method in WRITE_METHODS
                and (cfg.drop_path_contains is None or cfg.drop_path_contains in path)
                and self.rng.random() < cfg.drop_after_commit_rate
            ):
                out["drop"] = True
            return out

    # ------------------------------------------------------------------ hooks for services

    def after_page(self, resource: str, store: Store | None = None) -> list[str]:
        """Call after serving a page of ``resource``. With probability
        ``mutate_during_paging_rate`` touches ``mutate_count`` random live records so their
        modstamp moves to now; returns the touched ids (empty when nothing happened)."""
        store = store or self.store
        with self._lock:
            cfg = self.config
            if store is None or not cfg.mutate_during_paging_rate or not cfg.mutate_count:
                return []
            if self.rng.random() >= cfg.mutate_during_paging_rate:
                return []
            bounds = store.scan_rows(resource, order="seq", limit=1)
            last = store.scan_rows(resource, order="seq", descending=True, limit=1)
            if not bounds or not last:
                return []
            lo, hi = bounds[0].seq, last[0].seq
            picks = [self.rng.randint(lo, hi) for _ in range(cfg.mutate_count)]
            self._count("mutate")
        ids: list[str] = []
        for seq in picks:
            rows = store.scan_rows(resource, order="seq", after=(seq - 1,), limit=1)
            if rows and rows[0].id not in ids:
                ids.append(rows[0].id)
        token = change_source.set("fault")
        try:
            return store.touch(resource, ids)
        finally:
            change_source.reset(token)

    def should_tie(self) -> bool:
        """Whether writes currently share whole-second modstamps."""
        return self.config.tie_timestamps


class FaultMiddleware:
    """Pure ASGI middleware applying a service's :class:`Faults` to every non-admin request."""

    def __init__(self, app: ASGIApp, faults: Faults, service: str) -> None:
        self.app = app
        self.faults = faults
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/__admin"):
            await self.app(scope, receive, send)
            return
        decision = self.faults.decide(scope["method"], scope["path"])
        if decision["delay"]:
            await asyncio.sleep(decision["delay"])
        status = decision["status"]
        if status is not None:
            if status == 429:
                message = "Too many requests: retry later (sandbox fault burst_429)."
            else:
                message = f"Injected server error {status} (sandbox fault error_rate_5xx)."
            headers = [(b"content-type", b"application/json")]
            if decision["retry_after"] is not None:
                headers.append((b"retry-after", str(decision["retry_after"]).encode()))
            body = error_body(self.service, status, message)
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if not decision["drop"]:
            await self.app(scope, receive, send)
            return

        start: dict[str, Any] = {}

        async def dropping_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                if message["status"] >= 400:  # nothing committed: answer normally
                    await send(message)
                return
            if message["type"] == "http.response.body" and start:
                if start["status"] >= 400:
                    await send(message)
                    return
                # The write is committed. Send the head, then abort: the body never arrives.
                if start["status"] in (204, 304) or not message.get("body"):
                    # a bodiless answer would be complete with its head alone: announce a body
                    # so the client sees the connection drop mid-response, as on a real network
                    headers = [
                        (k, v)
                        for k, v in start.get("headers", [])
                        if k.lower() != b"content-length"
                    ]
                    start.update(status=200, headers=[*headers, (b"content-length", b"2")])
                await send(start)
                with self.faults._lock:
                    self.faults._count("drop")
                raise DroppedConnection("sandbox fault drop_after_commit")
            await send(message)

        await self.app(scope, receive, dropping_send)


class _DropFilter(logging.Filter):
    """Keep uvicorn's log readable: the injected drops are expected, not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


logging.getLogger("uvicorn.error").addFilter(_DropFilter())
