"""One measured path of ``erpsync bench``, in its own process (so peak RSS is that path's own).

    python -m erpsync.bench.worker serve STATE_DIR PORT
    python -m erpsync.bench.worker erpsync --db URL --psa URL [--incremental]
    python -m erpsync.bench.worker pandas --db URL --psa URL [--max-seconds S]

Each measured path prints one JSON line (``BENCH_RESULT {...}``) with its seconds, stage
timings, counts and ``peak_rss_mb`` (``ru_maxrss`` of this process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
PSA_TOKEN = "sandbox-psa-token"  # noqa: S105 - the sandbox's documented value
PSA_ACCOUNT = "100200"
USER_AGENT = "erpsync bench (bench@erpsync.test)"


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_seconds() -> float:
    """User + system CPU of this process (a busy machine stretches wall time, not this)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def psa_headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {PSA_TOKEN}",
        "Harvest-Account-Id": PSA_ACCOUNT,
        "User-Agent": USER_AGENT,
    }


def psa_connection(url: str) -> str:
    host, port = url.removeprefix("http://").split(":")
    return json.dumps(
        {
            "conn_type": "http",
            "host": host,
            "port": int(port),
            "schema": "http",
            "password": PSA_TOKEN,
            "extra": {"account_id": PSA_ACCOUNT, "user_agent": USER_AGENT},
        }
    )


def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def serve(state_dir: str, port: int) -> None:
    import uvicorn

    from erpsync_sandbox.common import SandboxContext
    from erpsync_sandbox.psa.app import create_app

    ctx = SandboxContext.open(state_dir)
    uvicorn.run(create_app(ctx), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_erpsync(db: str, psa: str, incremental: bool) -> dict[str, Any]:
    """The pack's engine: run_entity_sync with the time-entry spec, stage timings on. No side
    connection, so incremental runs leave out the spec's windowed delete check (vendor-bound:
    one count request in an hour without deletes), as the benchmark always has: it measures
    the load path."""
    os.environ["AIRFLOW_CONN_ERPSYNC_PSA"] = psa_connection(psa)
    # An Airflow worker runs the sync with Airflow already imported; so does the benchmark
    # (the connectors import the HTTP provider on first use: seconds of imports, not syncing).
    import airflow.providers.http.hooks.http  # noqa: F401
    import psycopg

    from erpsync.bench.spec import time_entries_spec
    from erpsync.sync.engine import run_entity_sync
    from erpsync.sync.spec import RunInfo

    spec, origin = time_entries_spec()
    timings: dict[str, float] = {}
    label = "bench_incremental" if incremental else "bench_full"
    cpu = cpu_seconds()
    started = time.perf_counter()
    with psycopg.connect(db) as conn, spec.source.client() as client:
        stats = run_entity_sync(
            conn,
            spec,
            run=RunInfo.local(label),
            client=client,
            full=not incremental,
            timings=timings,
        )
    seconds = time.perf_counter() - started
    return {
        "path": "erpsync",
        "mode": stats.mode,
        "spec": origin,
        "core_table": spec.core_table,
        "seconds": round(seconds, 3),
        "stages": {k: round(v, 3) for k, v in timings.items()},
        "stats": stats.as_dict(),
        "cpu_seconds": round(cpu_seconds() - cpu, 3),
        "peak_rss_mb": peak_rss_mb(),
    }


PANDAS_COLUMNS = [
    "id",
    "spent_date",
    "hours",
    "notes",
    "billable",
    "billable_rate",
    "cost_rate",
    "approval_status",
    "is_locked",
    "is_billed",
    "updated_at",
    "user.id",
    "client.id",
    "client.currency",
    "project.id",
    "task.id",
    "invoice.id",
]


def run_pandas(
    db: str, psa: str, chunksize: int = 1000, max_seconds: float | None = None
) -> dict[str, Any]:
    """The plain baseline: httpx pages -> json_normalize DataFrame -> to_sql(method="multi").

    ``max_seconds`` caps the run: after the page that crosses it the loader stops and reports
    what it loaded (``complete: false``); its records/s is then measured over those rows."""
    import httpx
    import pandas as pd
    import sqlalchemy

    from erpsync.runtime import database

    engine = sqlalchemy.create_engine(database.to_sqlalchemy(db))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS pandas_bench")
        conn.exec_driver_sql("DROP TABLE IF EXISTS pandas_bench.time_entries")
    records = 0
    capped = False
    cpu = cpu_seconds()
    started = time.perf_counter()
    url: str | None = f"{psa}/v2/time_entries?per_page=2000"
    with httpx.Client(headers=psa_headers(), timeout=120.0) as client:
        while url:
            response = client.get(url)
            response.raise_for_status()
            page = response.json()
            frame = pd.json_normalize(page["time_entries"]).reindex(columns=PANDAS_COLUMNS)
            frame.to_sql(
                "time_entries",
                engine,
                schema="pandas_bench",
                if_exists="append",
                index=False,
                method="multi",
                chunksize=chunksize,
            )
            records += len(frame)
            url = page["links"]["next"]
            if url and max_seconds is not None and time.perf_counter() - started > max_seconds:
                capped = True
                break
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        rows, distinct = conn.exec_driver_sql(
            "SELECT count(*), count(DISTINCT id) FROM pandas_bench.time_entries"
        ).one()
    engine.dispose()
    return {
        "path": "pandas",
        "settings": {"method": "multi", "chunksize": chunksize, "per_page": 2000},
        "complete": not capped,
        "max_seconds": max_seconds,
        "seconds": round(seconds, 3),
        "records": records,
        "rows_loaded": rows,
        "distinct_ids": distinct,
        "cpu_seconds": round(cpu_seconds() - cpu, 3),
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m erpsync.bench.worker")
    parser.add_argument("path", choices=("serve", "erpsync", "pandas"))
    parser.add_argument("args", nargs="*")
    parser.add_argument("--db")
    parser.add_argument("--psa")
    parser.add_argument("--incremental", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    if args.path == "serve":
        serve(args.args[0], int(args.args[1]))
        return 0
    if args.path == "erpsync":
        emit(run_erpsync(args.db, args.psa, args.incremental))
    else:
        emit(run_pandas(args.db, args.psa, max_seconds=args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
