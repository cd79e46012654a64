"""Harvest-style per-token rate limiting for the sandbox PSA.

Harvest API v2 allows 100 requests per 15 seconds per access token and answers anything
beyond that with ``429 Too Many Requests`` and a ``Retry-After: <seconds>`` header
(https://help.getharvest.com/api-v2/introduction/overview/general/#rate-limiting, section
"Rate Limiting"; the Reports API has a lower limit, 100 per 15 minutes, not modelled here).

The sandbox models that as a token bucket per bearer token: the bucket holds ``capacity``
requests and refills continuously at ``capacity / window`` requests per second, so a burst of
100 goes through and the 101st inside the window is refused with the number of whole seconds
until one request's worth has refilled.  The limit is configured by
``ERPSYNC_SANDBOX_PSA_RATE_LIMIT`` (``"100/15"`` by default; ``"off"`` or ``"0"`` disables it,
which the serving benchmark uses).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_RATE_LIMIT = "100/15"
RATE_LIMIT_ENV = "ERPSYNC_SANDBOX_PSA_RATE_LIMIT"


@dataclass(frozen=True)
class RateLimit:
    """``requests`` allowed per ``window_seconds`` for one token."""

    requests: int
    window_seconds: float

    @property
    def refill_per_second(self) -> float:
        return self.requests / self.window_seconds


def parse_rate_limit(spec: str | None) -> RateLimit | None:
    """Parse ``"100/15"`` (requests/seconds); ``None``, ``""``, ``"0"`` or ``"off"`` disable it."""
    if spec is None:
        return None
    text = spec.strip().lower()
    if text in {"", "0", "off", "none", "disabled", "unlimited"}:
        return None
    try:
        left, right = text.split("/", 1)
        requests, window = int(left), float(right)
    except ValueError as exc:
        raise ValueError(
            f"rate limit must look like '100/15' (requests/seconds), got {spec!r}"
        ) from exc
    if requests <= 0 or window <= 0:
        raise ValueError(f"rate limit needs positive numbers, got {spec!r}")
    return RateLimit(requests, window)


def rate_limit_from_env(default: str = DEFAULT_RATE_LIMIT) -> RateLimit | None:
    return parse_rate_limit(os.environ.get(RATE_LIMIT_ENV, default))


class TokenBuckets:
    """One token bucket per key (the bearer token); thread-safe.

    ``acquire(key)`` returns ``None`` when the request may go ahead, otherwise the whole number of
    seconds the caller should wait (the ``Retry-After`` value, at least 1).
    """

    def __init__(self, limit: RateLimit | None, clock: Callable[[], float] = time.monotonic):
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        #: Requests let through / refused with 429 since the last configure or reset (tests
        #: read these to check from the server's side that a client stayed under the limit).
        self.accepted = 0
        self.rejected = 0

    @property
    def limit(self) -> RateLimit | None:
        return self._limit

    def configure(self, limit: RateLimit | None) -> None:
        """Change the limit at run time (tests, admin); every bucket starts full again."""
        with self._lock:
            self._limit = limit
            self._buckets.clear()
            self.accepted = self.rejected = 0

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self.accepted = self.rejected = 0

    def _tokens(self, limit: RateLimit, key: str, now: float) -> float:
        """Tokens in ``key``'s bucket at ``now``: refilled since its last use, capped at the
        limit (a new bucket is full). Call with the lock held."""
        tokens, last = self._buckets.get(key, (float(limit.requests), now))
        return min(float(limit.requests), tokens + (now - last) * limit.refill_per_second)

    def acquire(self, key: str) -> int | None:
        limit = self._limit
        if limit is None:
            return None
        now = self._clock()
        with self._lock:
            tokens = self._tokens(limit, key, now)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                self.accepted += 1
                return None
            self._buckets[key] = (tokens, now)
            self.rejected += 1
            missing = 1.0 - tokens
            return max(1, math.ceil(missing / limit.refill_per_second))

    def remaining(self, key: str) -> int | None:
        limit = self._limit
        if limit is None:
            return None
        now = self._clock()
        with self._lock:
            return int(self._tokens(limit, key, now))
