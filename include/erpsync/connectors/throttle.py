"""Client-side rate limiting: spend each vendor's request budget just under its limit.

Every vendor client asks its :class:`Throttle` before it sends an authenticated request, so the
pack keeps under the documented limits instead of running into 429s and waiting them out:

* **Harvest**: 100 requests per 15 s per access token; over it 429 with ``Retry-After``
  (https://help.getharvest.com/api-v2/introduction/overview/general/#rate-limiting).
* **Business Central online**: per user (service principal) at most 6,000 OData requests in a
  5-minute sliding window and 5 processed at once (95 more queue, then 429) ("Operational
  limits for Business Central online", section "OData request limits (per user)",
  MicrosoftDocs/dynamics365smb-devitpro-pb dev-itpro/administration/operational-limits-online.md).
* **Salesforce**: a rolling 24-hour org quota, reported on every response as
  ``Sforce-Limit-Info: api-usage=N/M``; when it is spent the API answers 403
  ``REQUEST_LIMIT_EXCEEDED`` (developer.salesforce.com "API Request Limits and Allocations";
  REST API Developer Guide, "Limit Info Header"). The client stops with
  :class:`~erpsync.connectors.errors.QuotaReserveReached` while a reserve is still left, so
  other integrations of the org keep working.

Rate limits are enforced with a **sliding window that counts a request until its answer has
come back**: at most ``limit`` requests whose answers arrived within the last ``window`` seconds
or that are still in flight. A request's arrival at the server lies between its send and its
answer, so two requests the client spaces ``window`` apart (answer of the first to send of the
second) also arrive at least ``window`` apart, whatever the network latency. That keeps under
both a server-side sliding window (Business Central) and a token bucket of the same size and
refill (Harvest's ``limit`` per ``window``, which refills ``limit`` tokens per ``window``).

The limiters are shared by every client of the process that talks to the same account with the
same credentials (a registry keyed by system and a non-secret fingerprint of the key), and they
are thread-safe (a sync's prefetch thread reads while its task's other clients wait their
turn). Airflow runs every task in a process of its own, and the pools do not keep those
processes apart: ``erp_api``
has 5 slots, so five Business Central tasks can run at once, each with a limiter of its own
that believes it has the user's whole 6,000 per 5 minutes and 5 at once. So, by default, the
rate window and the concurrency cap of a real vendor host are **shared across processes**
through the warehouse PostgreSQL (:mod:`erpsync.connectors.shared_limits`, table
``ops.api_limit_tickets``): every task of every worker that uses the same account counts against
the one budget. The budget key is the system, the vendor's host and port and the credential
fingerprint (no secret). When the warehouse connection cannot be resolved or reached, the client
logs one warning and keeps the per-process limiter (a task never fails for this); then only the
pools limit how many processes share a budget (``psa_api`` 1 slot: one task spends Harvest's
token budget at a time).

Settings, first found wins: the connection extras (tenants differ; see README "Pointing at
real systems"), then the environment (``ERPSYNC_PSA_RATE_LIMIT``, ``ERPSYNC_ERP_RATE_LIMIT``,
``ERPSYNC_ERP_MAX_CONCURRENT``, ``ERPSYNC_CRM_QUOTA_RESERVE`` ...), then, for a connection to
the local sandbox only, the sandbox's own limit setting (``ERPSYNC_SANDBOX_PSA_RATE_LIMIT``,
``ERPSYNC_SANDBOX_ERP_RATE``, ``ERPSYNC_SANDBOX_ERP_MAX_CONCURRENT``: a test or benchmark that
switches the sandbox's limit off or scales it down does the same for the client), then the
documented default:

* ``rate_limit``: ``"<requests>/<seconds>"`` (Harvest default ``100/15``, Business Central
  ``6000/300``), ``"off"`` to disable.
* ``max_concurrent``: requests in flight at once per user (Business Central default 5;
  ``0`` = no cap).
* ``quota_reserve`` (Salesforce): requests of the daily quota to leave unused, a number or a
  percentage (default ``5%``); ``0`` uses the quota to the end.
* ``shared_limits``: ``on``/``off`` (env ``ERPSYNC_<SYSTEM>_SHARED_LIMITS``): share the rate
  window and the cap across processes through the warehouse. Default ``on``, except for a
  loopback (local sandbox) connection, where it is ``off`` unless set: a test or benchmark that
  wants processes to share the sandbox's budget switches it on.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from erpsync.connectors.errors import QuotaReserveReached

if TYPE_CHECKING:
    from erpsync.connectors.shared_limits import SharedWindow

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LIMITS",
    "QuotaGuard",
    "RateSpec",
    "SlidingWindow",
    "Throttle",
    "Ticket",
    "budget_key",
    "fingerprint",
    "limit_settings",
    "parse_rate",
    "parse_reserve",
    "parse_switch",
    "reset_registry",
    "throttle_for",
]

Clock = Callable[[], float]


@dataclass(frozen=True)
class RateSpec:
    """``limit`` requests per ``window`` seconds."""

    limit: int
    window: float

    def __str__(self) -> str:
        return f"{self.limit}/{self.window:g}"


def parse_rate(spec: Any) -> RateSpec | None:
    """``"100/15"`` -> RateSpec(100, 15.0); ``None``, ``""``, ``"0"``, ``"off"`` -> None."""
    if spec is None:
        return None
    text = str(spec).strip().lower()
    if text in {"", "0", "off", "none", "false", "unlimited"}:
        return None
    left, sep, right = text.partition("/")
    try:
        limit, window = int(left), float(right if sep else "1")
    except ValueError as exc:
        raise ValueError(
            f"rate_limit must look like '100/15' (requests/seconds), got {spec!r}"
        ) from exc
    if limit <= 0 or window <= 0:
        raise ValueError(f"rate_limit needs positive numbers, got {spec!r}")
    return RateSpec(limit, window)


def parse_reserve(spec: Any, limit: int) -> int:
    """Requests to keep in reserve of a quota of ``limit``: ``"5%"`` or a whole number."""
    text = str(spec if spec is not None else "").strip()
    if not text:
        return 0
    if text.endswith("%"):
        return math.ceil(limit * float(text[:-1]) / 100.0)
    return int(text)


_ON = {"on", "true", "yes", "1"}
_OFF = {"off", "false", "no", "0", ""}


def parse_switch(spec: Any) -> bool:
    """``"on"``/``"true"``/``"1"`` -> True, ``"off"``/``"false"``/``"0"`` -> False."""
    text = str(spec if spec is not None else "").strip().lower()  # True -> "true"
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise ValueError(f"shared_limits must be 'on' or 'off', got {spec!r}")


#: Documented defaults per system (see the module docstring for the sources).
DEFAULT_LIMITS: Mapping[str, Mapping[str, str]] = {
    "psa": {"rate_limit": "100/15", "max_concurrent": "0"},
    "erp": {"rate_limit": "6000/300", "max_concurrent": "5"},
    "crm": {"rate_limit": "off", "max_concurrent": "0", "quota_reserve": "5%"},
}


SETTING_NAMES = ("rate_limit", "max_concurrent", "quota_reserve", "shared_limits")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: The sandbox's own limit settings a client on a loopback connection follows.
_SANDBOX_ENV: Mapping[tuple[str, str], str] = {
    ("psa", "rate_limit"): "ERPSYNC_SANDBOX_PSA_RATE_LIMIT",
    ("erp", "rate_limit"): "ERPSYNC_SANDBOX_ERP_RATE",
    ("erp", "max_concurrent"): "ERPSYNC_SANDBOX_ERP_MAX_CONCURRENT",
}


def limit_settings(
    system: str,
    extras: Mapping[str, Any],
    base_url: str = "",
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The limit settings of a client: extras, environment, local sandbox, documented default
    (see the module docstring)."""
    env = os.environ if env is None else env
    local = (urlsplit(base_url).hostname or "") in _LOOPBACK
    out: dict[str, Any] = {}
    for name in SETTING_NAMES:
        value = extras.get(name)
        if value in (None, ""):
            value = env.get(f"ERPSYNC_{system.upper()}_{name.upper()}", "").strip() or None
        if value is None and local and (system, name) in _SANDBOX_ENV:
            value = env.get(_SANDBOX_ENV[(system, name)], "").strip() or None
            if value is None and (system, name) == ("erp", "rate_limit"):
                per_min = env.get("ERPSYNC_SANDBOX_ERP_RATE_PER_MIN", "").strip()
                value = f"{per_min}/60" if per_min and per_min != "0" else (per_min or None)
        if value is None:
            value = DEFAULT_LIMITS.get(system, {}).get(name)
        if value is None and name == "shared_limits":
            value = "off" if local else "on"
        if value is not None:
            out[name] = value
    return out


def fingerprint(*parts: Any) -> str:
    """A short non-secret key for a credential (a token is never kept as a dict key)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return digest[:16]


def budget_key(system: str, key: str, base_url: str) -> str:
    """The name of a budget shared across processes: system, vendor host and port, credential
    fingerprint (two sandboxes on different ports never share one; no secret in it)."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{system}@{parts.hostname or ''}:{port}/{key}"


class SlidingWindow:
    """At most ``limit`` requests in flight or answered within the last ``window`` seconds.

    :meth:`acquire` blocks until a slot is free and returns a ticket;
    :meth:`release` stamps the ticket with the answer's time. Thread-safe.
    """

    def __init__(
        self,
        spec: RateSpec,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._next = 0
        self._open: dict[int, float] = {}  # ticket -> end time (inf while in flight)

    def _prune(self, now: float) -> None:
        horizon = now - self.spec.window
        for ticket in [t for t, end in self._open.items() if end <= horizon]:
            del self._open[ticket]

    def in_window(self) -> int:
        with self._cond:
            self._prune(self._clock())
            return len(self._open)

    def acquire(self) -> int:
        with self._cond:
            while True:
                now = self._clock()
                self._prune(now)
                if len(self._open) < self.spec.limit:
                    self._next += 1
                    self._open[self._next] = math.inf
                    return self._next
                oldest = min(self._open.values())
                pause = oldest + self.spec.window - now if math.isfinite(oldest) else None
                if pause is not None:
                    pause = max(pause, 0.001)
                if self._sleep is not None and pause is not None:
                    # injected sleep (tests): release the lock while "sleeping"
                    self._cond.release()
                    try:
                        self._sleep(pause)
                    finally:
                        self._cond.acquire()
                else:
                    self._cond.wait(pause)

    def release(self, ticket: int) -> None:
        with self._cond:
            if ticket in self._open:
                self._open[ticket] = self._clock()
            self._cond.notify_all()


class QuotaGuard:
    """Stops before a daily quota is spent: refuses to send once ``used >= limit - reserve``.

    ``observe(used, limit)`` is fed from every response (Salesforce's ``Sforce-Limit-Info``);
    requests sent since the last observation are counted too, so parallel callers do not
    overshoot between two answers.
    """

    def __init__(self, reserve_spec: Any = "5%") -> None:
        self.reserve_spec = reserve_spec
        self._lock = threading.Lock()
        self.used: int | None = None
        self.limit: int | None = None
        self._pending = 0

    def observe(self, used: int, limit: int) -> None:
        with self._lock:
            self.used, self.limit = used, limit
            self._pending = 0

    def reserve(self) -> int:
        return parse_reserve(self.reserve_spec, self.limit or 0)

    def check(self, system: str, label: str) -> None:
        with self._lock:
            if self.used is None or self.limit is None:
                return
            reserve = self.reserve()
            if self.used + self._pending >= self.limit - reserve:
                raise QuotaReserveReached(
                    f"{label}: {self.used} of the org's {self.limit} daily API requests are"
                    f" used and {reserve} are kept in reserve (connection extra"
                    " 'quota_reserve'); stopping before the quota is gone. Wait for the"
                    " rolling 24-hour quota to recover or raise the org limit.",
                    system=system,
                )
            self._pending += 1


@dataclass(frozen=True)
class Ticket:
    """A turn taken at a :class:`Throttle`: the window's ticket, and whether the shared
    (cross-process) window gave it."""

    number: int
    shared: bool = False


class Throttle:
    """What a client waits for before each request: a rate window and a concurrency cap (each
    optional), shared by the clients of one account in this process and, with ``shared``, by
    every process through the warehouse. (A :class:`QuotaGuard` is per client: it knows only
    what that client's answers reported, so a new client, e.g. the next task, sends one request
    to learn the current usage.)

    With ``shared``, the shared window counts both the rate and the cap across processes; the
    process's own semaphore still caps its threads (so they do not poll the database for a slot
    this process already fills). When the warehouse fails, the throttle logs one warning and
    keeps to the per-process window from then on.
    """

    def __init__(
        self,
        system: str,
        *,
        rate: RateSpec | None = None,
        max_concurrent: int = 0,
        clock: Clock = time.monotonic,
        shared: SharedWindow | None = None,
    ) -> None:
        self.system = system
        self.window = SlidingWindow(rate, clock=clock) if rate else None
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent) if max_concurrent > 0 else None
        self._clock = clock
        self._lock = threading.Lock()
        self.shared = shared
        self.in_flight = 0
        self.peak_in_flight = 0

    def describe(self) -> str:
        parts = []
        if self.window:
            parts.append(f"rate {self.window.spec}")
        if self._slots:
            parts.append(f"{self.max_concurrent} at once")
        if parts and self.shared is not None:
            parts.append("shared across processes")
        return ", ".join(parts) or "no limit"

    def _stop_sharing(self, shared: SharedWindow, exc: BaseException) -> None:
        with self._lock:
            if self.shared is not shared:
                return  # another thread already fell back
            self.shared = None
        log.warning(
            "%s: the limits shared across processes are unavailable (%s: the warehouse could"
            " not be used); this process keeps to its own limiter from now on",
            self.system,
            type(exc).__name__,
        )
        shared.close()

    def _take_turn(self) -> Ticket | None:
        shared = self.shared
        if shared is not None:
            try:
                return Ticket(shared.acquire(), shared=True)
            except Exception as exc:  # noqa: BLE001 - the warehouse failing never fails a task
                self._stop_sharing(shared, exc)
        if self.window is not None:
            return Ticket(self.window.acquire())
        return None

    def acquire(self) -> tuple[Ticket | None, float]:
        """Wait for a turn; returns ``(ticket, seconds waited)``. Pair with :meth:`release`."""
        started = self._clock()
        if self._slots is not None:
            self._slots.acquire()
        try:
            ticket = self._take_turn()
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return ticket, max(0.0, self._clock() - started)

    def release(self, ticket: Ticket | None) -> None:
        with self._lock:
            self.in_flight -= 1
        try:
            if ticket is not None and ticket.shared:
                shared = self.shared
                if shared is not None:
                    try:
                        shared.release(ticket.number)
                    except Exception as exc:  # noqa: BLE001 - as in _take_turn
                        # the ticket stays in flight until this connection's backend is gone,
                        # which the failed connection already is
                        self._stop_sharing(shared, exc)
            elif ticket is not None and self.window is not None:
                self.window.release(ticket.number)
        finally:
            if self._slots is not None:
                self._slots.release()


_REGISTRY: dict[tuple[str, str, str], Throttle] = {}
_REGISTRY_LOCK = threading.Lock()
_WARNED: set[str] = set()


def _shared_window(
    system: str, key: str, base_url: str, rate: RateSpec | None, max_concurrent: int
) -> SharedWindow | None:
    """The cross-process window of this budget, connected; None (after one warning per system
    and process) when the warehouse cannot be resolved or reached."""
    from erpsync.connectors.shared_limits import SharedWindow, warehouse_connection
    from erpsync.warehouse.connection import conn_id

    try:
        shared = SharedWindow(
            budget_key(system, key, base_url),
            limit=rate.limit if rate else None,
            window=rate.window if rate else 0.0,
            max_concurrent=max_concurrent,
            connect=warehouse_connection(),
        )
        shared.open()
    except Exception as exc:  # noqa: BLE001 - any failure means "not shared", never a failed task
        if system not in _WARNED:
            _WARNED.add(system)
            # the type only: a driver message may name hosts and users
            log.warning(
                "%s: limits are not shared across processes (%s: is the Airflow connection"
                " %s defined and the warehouse migrated?); this process keeps to its own"
                " limiter, so tasks running at the same time can together exceed the vendor's"
                " limit",
                system,
                type(exc).__name__,
                conn_id(),
            )
        return None
    return shared


def throttle_for(
    system: str, key: str, settings: Mapping[str, Any], *, base_url: str = ""
) -> Throttle:
    """The throttle of ``system`` for the account/user ``key`` (a fingerprint), configured
    from ``settings`` (:func:`limit_settings`): one per process, and its window shared across
    processes when ``shared_limits`` is on (``base_url`` names the vendor host in the budget)."""
    rate = parse_rate(settings.get("rate_limit"))
    max_concurrent = int(settings.get("max_concurrent") or 0)
    share = parse_switch(settings.get("shared_limits")) and (rate is not None or max_concurrent > 0)
    config = f"{rate}|{max_concurrent}|{'shared' if share else 'local'}|{base_url}"
    with _REGISTRY_LOCK:
        throttle = _REGISTRY.get((system, key, config))
        if throttle is None:
            shared = None
            if share:
                shared = _shared_window(system, key, base_url, rate, max_concurrent)
            throttle = Throttle(system, rate=rate, max_concurrent=max_concurrent, shared=shared)
            _REGISTRY[(system, key, config)] = throttle
        return throttle


def reset_registry() -> None:
    """Forget every shared throttle (tests that restart sandboxes) and close the connections
    of their shared windows."""
    with _REGISTRY_LOCK:
        for throttle in _REGISTRY.values():
            if throttle.shared is not None:
                throttle.shared.close()
        _REGISTRY.clear()
        _WARNED.clear()
