"""Request budgets: every request the pack sends, counted per system and purpose.

:class:`~erpsync.connectors.http.VendorClient` records each request it sends (every attempt,
retries included) in the process-wide :data:`LEDGER`: the system (``crm``/``psa``/``erp``),
the purpose, whether the answer was a 429, and the seconds spent waiting (client-side
throttle and ``Retry-After``/back-off). The purpose is passed by a call site
(``request(..., purpose="mark")``) or derived here, in one place, from the method and resource
(:func:`purpose_of`):

* ``auth``: a token request; ``read``: GET/HEAD; ``delete``: DELETE;
* ``post``: Business Central's bound action ``Microsoft.NAV.post``; ``batch``: an OData
  ``$batch``; ``create``: any other POST;
* ``mark``: Harvest billed state: a POST or DELETE of a Harvest invoice (the pack bills in the
  ERP; a Harvest invoice only mirrors the billed state of the entries it imports, see
  :mod:`erpsync.invoicing.push_psa`) or a PATCH of a time entry or expense; ``update``: any
  other PATCH/PUT.

The Airflow layer takes a :meth:`Ledger.snapshot` when a task starts and stores the difference
when it ends (:func:`erpsync.request_budget.track_requests`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LEDGER", "Counts", "Ledger", "purpose_of"]

PURPOSES = ("auth", "read", "create", "post", "batch", "mark", "update", "delete")


def purpose_of(system: str, method: str, path: str, *, authenticated: bool = True) -> str:
    """The purpose of a request from its method and resource (see the module docstring)."""
    if not authenticated:
        return "auth"
    method = method.upper()
    bare = path.split("?", 1)[0].rstrip("/")
    tail = bare.rsplit("/", 1)[-1]
    if method in {"GET", "HEAD", "OPTIONS"}:
        return "read"
    if system == "psa" and method in {"POST", "DELETE"} and "/invoices" in bare:
        return "mark"
    if method == "DELETE":
        return "delete"
    if method == "POST":
        if tail.endswith("Microsoft.NAV.post"):
            return "post"
        if tail == "$batch":
            return "batch"
        return "create"
    if system == "psa" and ("/time_entries/" in path or "/expenses/" in path):
        return "mark"
    return "update"


@dataclass
class Counts:
    """Requests of one system and purpose: sent, answered 429, seconds waited."""

    requests: int = 0
    throttled_429: int = 0
    waited_seconds: float = 0.0  # Retry-After and back-off sleeps
    throttle_seconds: float = 0.0  # waiting for the client-side rate limiter

    def minus(self, other: Counts | None) -> Counts:
        if other is None:
            return Counts(
                self.requests, self.throttled_429, self.waited_seconds, self.throttle_seconds
            )
        return Counts(
            self.requests - other.requests,
            self.throttled_429 - other.throttled_429,
            self.waited_seconds - other.waited_seconds,
            self.throttle_seconds - other.throttle_seconds,
        )

    def is_zero(self) -> bool:
        return not (self.requests or self.throttled_429 or self.waited_seconds)


Key = tuple[str, str]  # (system, purpose)


class Ledger:
    """Thread-safe counters of requests per ``(system, purpose)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Key, Counts] = {}

    def _get(self, system: str, purpose: str) -> Counts:
        counts = self._counts.get((system, purpose))
        if counts is None:
            counts = self._counts[(system, purpose)] = Counts()
        return counts

    def sent(self, system: str, purpose: str, *, throttle_seconds: float = 0.0) -> None:
        with self._lock:
            counts = self._get(system, purpose)
            counts.requests += 1
            counts.throttle_seconds += throttle_seconds

    def throttled(self, system: str, purpose: str) -> None:
        with self._lock:
            self._get(system, purpose).throttled_429 += 1

    def waited(self, system: str, purpose: str, seconds: float) -> None:
        with self._lock:
            self._get(system, purpose).waited_seconds += seconds

    def snapshot(self) -> dict[Key, Counts]:
        with self._lock:
            return {key: c.minus(None) for key, c in self._counts.items()}

    def since(self, before: Mapping[Key, Counts]) -> dict[Key, Counts]:
        """What was counted after ``before`` (a :meth:`snapshot`), zero rows left out."""
        out = {}
        for key, counts in self.snapshot().items():
            delta = counts.minus(before.get(key))
            if not delta.is_zero():
                out[key] = delta
        return out


#: The ledger of this process.
LEDGER = Ledger()
