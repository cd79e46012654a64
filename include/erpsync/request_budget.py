"""Request budgets per task: one log line per system and a row per purpose in
``ops.request_counts`` (migration 0031).

Usage in a task module, one line under ``@task``::

    @task(task_id="push_to_erp", pool="erp_api")
    @counted_requests
    def push_to_erp(...): ...

or around any block: ``with track_requests(): ...``. The counts are the difference of the
process's request ledger (:data:`erpsync.connectors.budget.LEDGER`, fed by every vendor client)
between the start and the end of the block, so they include retries and requests made by
worker threads. At the end, whether the task succeeded or failed, it logs one line per system::

    requests psa: 412 (read 12, mark 400); 429s: 0; waited 0.0 s; throttled 36.2 s

and stores the rows (dag, run, task, map index, try) in the warehouse. Storing never fails the
task: an unreachable warehouse is logged and skipped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from erpsync.connectors.budget import LEDGER, Counts

__all__ = ["TaskKey", "counted_requests", "store_counts", "summary_lines", "track_requests"]

log = logging.getLogger("erpsync.requests")

P = ParamSpec("P")
R = TypeVar("R")

_UPSERT = """
INSERT INTO ops.request_counts
    (dag_id, run_id, task_id, map_index, try_number, system, purpose, requests, throttled_429,
     waited_seconds, throttle_seconds)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (dag_id, run_id, task_id, map_index, try_number, system, purpose) DO UPDATE SET
    requests = ops.request_counts.requests + EXCLUDED.requests,
    throttled_429 = ops.request_counts.throttled_429 + EXCLUDED.throttled_429,
    waited_seconds = ops.request_counts.waited_seconds + EXCLUDED.waited_seconds,
    throttle_seconds = ops.request_counts.throttle_seconds + EXCLUDED.throttle_seconds,
    recorded_at = now()
"""


@dataclass(frozen=True)
class TaskKey:
    """Which task try the counts belong to."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1


def current_task() -> TaskKey | None:
    """The running Airflow task's key, or None outside a task."""
    try:
        from airflow.sdk import get_current_context

        context = get_current_context()
    except Exception:  # noqa: BLE001 - outside a task there is no context; nothing to store
        return None
    ti = context.get("ti")
    dag_run = context.get("dag_run")
    if ti is None or dag_run is None:
        return None
    map_index = getattr(ti, "map_index", -1)
    try_number = getattr(ti, "try_number", 1)
    return TaskKey(
        dag_id=str(ti.dag_id),
        run_id=str(dag_run.run_id),
        task_id=str(ti.task_id),
        map_index=int(map_index if map_index is not None else -1),
        try_number=int(try_number or 1),
    )


def summary_lines(counts: Mapping[tuple[str, str], Counts]) -> list[str]:
    """One line per system: total, by purpose, 429s, seconds waited and throttled."""
    lines = []
    for system in sorted({s for s, _ in counts}):
        rows = {p: c for (s, p), c in counts.items() if s == system}
        total = sum(c.requests for c in rows.values())
        purposes = ", ".join(f"{p} {c.requests}" for p, c in sorted(rows.items()))
        lines.append(
            f"requests {system}: {total} ({purposes}); 429s:"
            f" {sum(c.throttled_429 for c in rows.values())}; waited"
            f" {sum(c.waited_seconds for c in rows.values()):.1f} s; throttled"
            f" {sum(c.throttle_seconds for c in rows.values()):.1f} s"
        )
    return lines


def store_counts(conn: Any, key: TaskKey, counts: Mapping[tuple[str, str], Counts]) -> int:
    """Add ``counts`` to ``ops.request_counts`` for ``key`` (caller commits); rows written."""
    rows = [
        (
            key.dag_id,
            key.run_id,
            key.task_id,
            key.map_index,
            key.try_number,
            system,
            purpose,
            c.requests,
            c.throttled_429,
            Decimal(f"{c.waited_seconds:.3f}"),
            Decimal(f"{c.throttle_seconds:.3f}"),
        )
        for (system, purpose), c in sorted(counts.items())
    ]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(_UPSERT, rows)
    return len(rows)


def _store(key: TaskKey, counts: Mapping[tuple[str, str], Counts]) -> None:
    from erpsync.warehouse import connection

    try:
        with connection.connect() as conn:
            store_counts(conn, key, counts)
    except Exception as exc:  # noqa: BLE001 - statistics must never fail the task
        log.warning("request counts not stored (%s)", type(exc).__name__)


@contextmanager
def track_requests(
    key: TaskKey | None = None,
    *,
    store: bool = True,
    logger: logging.Logger | None = None,
) -> Iterator[dict[tuple[str, str], Counts]]:
    """Count the requests sent inside the block; log and store them at its end.

    ``key`` defaults to the running Airflow task. Yields a dict that holds the counts once
    the block has ended.
    """
    before = LEDGER.snapshot()
    result: dict[tuple[str, str], Counts] = {}
    try:
        yield result
    finally:
        result.update(LEDGER.since(before))
        for line in summary_lines(result):
            (logger or log).info("%s", line)
        task = key or (current_task() if store else None)
        if store and task is not None and result:
            _store(task, result)


def counted_requests(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of :func:`track_requests` for a task function."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with track_requests():
            return fn(*args, **kwargs)

    return wrapper
