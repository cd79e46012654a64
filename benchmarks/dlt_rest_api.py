"""dlt baseline for ``erpsync bench``: the sandbox's Harvest time entries through dlt's
``rest_api`` source into PostgreSQL, with dlt's recommended/default settings.

Runs in the benchmark-only venv ``.erpsync/venvs/dlt`` (pin in ``benchmarks/dlt-requirements.txt``;
``erpsync bench`` creates the venv on first use). It imports nothing from erpsync.

    .erpsync/venvs/dlt/bin/python benchmarks/dlt_rest_api.py --db URL --psa URL --workdir DIR

Settings: ``client`` with Harvest's auth headers, paginator ``json_link`` with
``next_url_path="links.next"``, ``data_selector="time_entries"``, ``per_page=2000``;
``primary_key="id"`` with ``write_disposition="merge"`` (dlt's default ``delete-insert``
strategy: the like-for-like of the engine's upsert) or ``append`` (``--disposition``); the
postgres destination with its defaults (``insert_values`` loader file format, default
extract/normalize/load workers). Prints one ``BENCH_RESULT {...}`` line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def _credentials(url: str) -> dict:
    """dlt's postgres credentials from a libpq URL (a Unix-socket ``?host=/dir`` included)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    # a socket directory stays in the query (libpq lets ?host= override the URL's host)
    return {
        "database": parts.path.lstrip("/"),
        "username": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
        "host": parts.hostname or "localhost",
        "port": parts.port or 5432,
        "query": query,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--psa", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--disposition", default="merge", choices=("merge", "append"))
    args = parser.parse_args()

    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": f"{args.psa}/v2/",
                "headers": {
                    "Authorization": "Bearer sandbox-psa-token",
                    "Harvest-Account-Id": "100200",
                    "User-Agent": "erpsync bench dlt (bench@erpsync.test)",
                },
                "paginator": {"type": "json_link", "next_url_path": "links.next"},
            },
            "resource_defaults": {
                "primary_key": "id",
                "write_disposition": args.disposition,
            },
            "resources": [
                {
                    "name": "time_entries",
                    "endpoint": {
                        "path": "time_entries",
                        "params": {"per_page": 2000},
                        "data_selector": "time_entries",
                    },
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="erpsync_bench",
        pipelines_dir=args.workdir,
        destination=dlt.destinations.postgres(credentials=_credentials(args.db)),
        dataset_name="dlt_bench",
    )

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    cpu_start = cpu()
    started = time.perf_counter()
    extract_info = pipeline.extract(source)
    extracted = time.perf_counter()
    pipeline.normalize()
    normalized = time.perf_counter()
    pipeline.load()
    loaded = time.perf_counter()
    del extract_info
    with pipeline.sql_client() as client:
        rows, distinct = client.execute_sql(
            "SELECT count(*), count(DISTINCT id) FROM time_entries"
        )[0]
    result = {
        "path": "dlt",
        "dlt_version": dlt.__version__,
        "settings": {
            "source": "rest_api",
            "paginator": "json_link next_url_path=links.next",
            "data_selector": "time_entries",
            "per_page": 2000,
            "write_disposition": args.disposition,
            "primary_key": "id",
            "loader_file_format": pipeline.destination.capabilities().preferred_loader_file_format,
        },
        "seconds": round(loaded - started, 3),
        "stages": {
            "extract": round(extracted - started, 3),
            "normalize": round(normalized - extracted, 3),
            "load": round(loaded - normalized, 3),
        },
        "rows_loaded": rows,
        "distinct_ids": distinct,
        "cpu_seconds": round(cpu() - cpu_start, 3),
        "peak_rss_mb": round(
            max(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            )
            / 1024,
            1,
        ),
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
