"""What the page benchmarks share: a migrated throwaway warehouse, best-of timing of page calls,
and the JSON result under ``benchmarks/results/``."""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from erpsync import paths

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping


@contextmanager
def scratch_warehouse(name: str) -> Iterator[str]:
    """The URL of a new, migrated database ``erpsync_bench_<name>_<random>`` on the server of
    ``ERPSYNC_DATABASE_URL`` (or the embedded one, started if need be); dropped on exit."""
    from erpsync.runtime import database
    from erpsync.warehouse import migrate

    admin = os.environ.get("ERPSYNC_DATABASE_URL") or database._embedded_server_url(start=True)
    assert admin is not None, "no PostgreSQL server"
    url = database.with_database(admin, f"erpsync_bench_{name}_{uuid.uuid4().hex[:8]}")
    database.ensure_database(url)
    try:
        migrate.migrate(url)
        yield url
    finally:
        database.drop_database(url)


def best_milliseconds(calls: Mapping[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Milliseconds per call: the best of ``repeat`` runs of each call, after one warm-up."""
    out: dict[str, float] = {}
    for name, call in calls.items():
        call()
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - started)
        out[name] = round(best * 1000, 1)
    return out


def write_result(file_name: str, result: dict[str, Any]) -> None:
    """``result`` as indented JSON in ``benchmarks/results/<file_name>`` and on stdout."""
    out = paths.project_dir() / "benchmarks" / "results" / file_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
