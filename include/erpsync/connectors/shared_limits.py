"""Vendor limits shared by every process that uses one vendor account, through the warehouse.

Airflow runs each task in a process of its own (``erp_api`` lets five Business Central tasks run
at once), and a vendor counts its limit per user or token, not per process: five processes that
each keep to Business Central's 6,000 requests per 5 minutes and 5 at once would together send
five times the rate and 25 at once. The warehouse PostgreSQL is the one thing every worker
shares, so the budget lives there, in ``ops.api_limit_tickets`` (migration 0032): one row
(ticket) per request, counted the way :class:`erpsync.connectors.throttle.SlidingWindow` counts
in a process, i.e. while in flight and for ``window`` seconds after its answer came back.

:meth:`SharedWindow.acquire`, one short autocommit transaction per try:

1. ``pg_advisory_xact_lock(hashtextextended('erpsync.limits:' || budget_key, 0))`` serialises
   the tries of one budget (a transaction-level advisory lock is released at commit; PostgreSQL
   docs, "Advisory Lock Functions"); the statements after it see every ticket committed before
   it was granted (READ COMMITTED takes a snapshot per statement);
2. tickets answered ``window`` or more seconds ago are deleted;
3. in-flight tickets whose PostgreSQL backend is gone (no longer in ``pg_stat_activity``, whose
   rows every role may see, read afresh in each transaction: PostgreSQL docs, "The Cumulative
   Statistics System") are stamped answered now, so a killed task frees its slots at once:
   when its process dies, its connection's backend exits;
4. with fewer than ``limit`` tickets in the window and fewer than ``max_concurrent`` in flight
   a ticket is inserted with ``pg_backend_pid()``; otherwise the transaction ends and the caller
   sleeps, outside it, until the oldest answer leaves the window (or a short poll when only
   the concurrency cap binds), then tries again.

Every stamp is the database's ``clock_timestamp()``, so workers on several machines agree on the
window. The process keeps one autocommit connection per budget, shared by its threads under a
lock; the sleeps happen without the lock. The budget key names system, vendor host and a
truncated hash of the credential, never a secret. A connection pooler in transaction mode would
hide the backend of a ticket: point the warehouse connection at PostgreSQL itself.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = ["SharedWindow", "warehouse_connection"]

Connect = Callable[[], "psycopg.Connection[Any]"]

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('erpsync.limits:' || %(key)s, 0))"
_FORGET = """
DELETE FROM ops.api_limit_tickets
WHERE budget_key = %(key)s AND answered_at <= clock_timestamp() - make_interval(secs => %(window)s)
"""
_FREE_DEAD = """
UPDATE ops.api_limit_tickets SET answered_at = clock_timestamp()
WHERE budget_key = %(key)s AND answered_at IS NULL
  AND backend_pid NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
"""
_COUNT = """
SELECT count(*),
       count(*) FILTER (WHERE answered_at IS NULL),
       extract(epoch FROM min(answered_at) + make_interval(secs => %(window)s)
                          - clock_timestamp())::float8
FROM ops.api_limit_tickets WHERE budget_key = %(key)s
"""
_TAKE = """
INSERT INTO ops.api_limit_tickets (budget_key, backend_pid) VALUES (%(key)s, pg_backend_pid())
RETURNING ticket
"""
_ANSWERED = """
UPDATE ops.api_limit_tickets SET answered_at = clock_timestamp()
WHERE budget_key = %(key)s AND ticket = %(ticket)s
"""


def warehouse_connection() -> Connect:
    """A function opening autocommit connections to the warehouse (Airflow connection
    ``erpsync_warehouse``), resolved now: a reconnect from a worker thread asks Airflow nothing.
    A statement that waits more than 10 s (a stuck lock, a lost network) fails, and the caller
    falls back to its own limiter instead of hanging."""
    from erpsync.warehouse.connection import conninfo

    params = conninfo()
    params["application_name"] = "erpsync limits"
    params["options"] = "-c statement_timeout=10000"

    def connect() -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(**params, autocommit=True)

    return connect


class SharedWindow:
    """At most ``limit`` requests of ``budget_key`` in flight or answered within the last
    ``window`` seconds, and at most ``max_concurrent`` in flight (0 = no cap), counted over
    every process that uses the same warehouse (``connect``: e.g. :func:`warehouse_connection`).
    ``limit=None``: the cap only.

    Thread-safe; the connection is opened on first use (or by :meth:`open`) and reopened in a
    forked child. A database error is raised to the caller (:class:`psycopg.Error`), which
    falls back to its own limiter.
    """

    def __init__(
        self,
        budget_key: str,
        *,
        limit: int | None,
        window: float,
        max_concurrent: int = 0,
        connect: Connect,
        poll: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit is None and max_concurrent <= 0:
            raise ValueError("a shared window needs a rate limit or a concurrency cap")
        self.budget_key = budget_key
        self.limit = limit
        self.window = float(window) if limit is not None else 0.0
        self.max_concurrent = max_concurrent
        self._connect = connect
        self._poll = poll
        self._sleep = sleep
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = 0
        self._rng = random.Random()  # noqa: S311 - poll jitter, not crypto

    def _connection(self) -> psycopg.Connection[Any]:
        """The process's connection (caller holds ``self._lock``)."""
        if self._conn is not None and (self._pid != os.getpid() or self._conn.closed):
            self._conn = None  # a forked child must not talk on its parent's socket
        if self._conn is None:
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    def open(self) -> None:
        """Connect now (to find out early whether the warehouse can be reached)."""
        with self._lock:
            try:
                self._connection().execute("SELECT 1 FROM ops.api_limit_tickets LIMIT 0")
            except BaseException:
                self._drop()
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def try_acquire(self) -> tuple[int | None, float]:
        """One try: ``(ticket, 0.0)``, or ``(None, seconds to wait before the next try)``."""
        args = {"key": self.budget_key, "window": self.window}
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    conn.execute(_LOCK, args)
                    conn.execute(_FORGET, args)
                    conn.execute(_FREE_DEAD, args)
                    row = conn.execute(_COUNT, args).fetchone()
                    assert row is not None  # an aggregate always returns a row
                    in_window, in_flight, oldest_leaves_in = int(row[0]), int(row[1]), row[2]
                    rate_binds = self.limit is not None and in_window >= self.limit
                    cap_binds = self.max_concurrent > 0 and in_flight >= self.max_concurrent
                    if not rate_binds and not cap_binds:
                        taken = conn.execute(_TAKE, args).fetchone()
                        assert taken is not None
                        return int(taken[0]), 0.0
            except BaseException:
                self._drop()
                raise
        if rate_binds and oldest_leaves_in is not None:
            return None, max(float(oldest_leaves_in), 0.001)
        # only in-flight requests fill the budget: their answers are not known in advance
        return None, self._poll * (0.5 + self._rng.random())

    def acquire(self) -> int:
        """Block until a request may be sent; returns its ticket. Pair with :meth:`release`."""
        while True:
            ticket, pause = self.try_acquire()
            if ticket is not None:
                return ticket
            self._sleep(pause)

    def release(self, ticket: int) -> None:
        """The answer of ``ticket`` came back (or the request failed): stamp it answered."""
        with self._lock:
            try:
                self._connection().execute(_ANSWERED, {"key": self.budget_key, "ticket": ticket})
            except BaseException:
                self._drop()
                raise

    def counts(self) -> tuple[int, int]:
        """``(tickets in the window, tickets in flight)`` now (tests, diagnostics)."""
        args = {"key": self.budget_key, "window": self.window}
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_FORGET, args)
                row = conn.execute(_COUNT, args).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])
