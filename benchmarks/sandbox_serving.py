"""Sandbox serving benchmark: how fast does one sandbox service serve paged JSON?

Issue 3 requires at least 50,000 records per second of paged JSON from one service, so that the
sandbox is never the bottleneck of the pack's own benchmarks. This script:

1. generates (or reuses) a firm with CORE's generator in a state directory
   (``large`` = 1,000,000 time entries; ``small`` for a quick run),
2. starts the PSA service (Harvest API v2) in a separate process on 127.0.0.1 with the rate
   limit and faults off,
3. reads every time entry with ``per_page=2000`` from one client (httpx, keep-alive),
   following ``links.next`` exactly like a Harvest connector, in up to three runs:

   * ``sequential:msgspec``: the plain loop (request, decode, request ...), each page decoded
     and validated into typed structs (``id``, ``updated_at``; other fields skipped the way a
     typed connector model skips them) -- the headline number;
   * ``prefetch:msgspec``: the next request goes out (``links.next`` read from the tail of the
     body) while the current page is decoded;
   * ``sequential:orjson``: every record built as a Python dict (the client costs more than
     the server here: see the CPU columns),

4. checks that each run saw ``total_entries`` distinct ids, prints records/s and the CPU
   seconds of server and client (records per server CPU second is the serving cost whatever
   else the machine is doing), and writes ``benchmarks/results/sandbox_serving.json``.

Usage::

    .venv/bin/python benchmarks/sandbox_serving.py large
    .venv/bin/python benchmarks/sandbox_serving.py --size small
    .venv/bin/python benchmarks/sandbox_serving.py large --reuse   # keep the generated firm
    .venv/bin/python benchmarks/sandbox_serving.py large --reuse --runs sequential:orjson

Harvest paging reference: https://help.getharvest.com/api-v2/introduction/overview/pagination/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import orjson

ROOT = Path(__file__).resolve().parents[1]
TARGET_RECORDS_PER_SECOND = 50_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(state_dir: Path, port: int) -> None:
    """Child process: run the PSA service on ``port`` until killed."""
    import uvicorn

    from erpsync_sandbox.common import SandboxContext
    from erpsync_sandbox.psa.app import create_app

    ctx = SandboxContext.open(state_dir)
    app = create_app(ctx)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"PSA service exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/__admin/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("PSA service did not start")


def _headers() -> dict[str, str]:
    token = os.environ.get("ERPSYNC_SANDBOX_PSA_TOKEN", "sandbox-psa-token")
    account = os.environ.get("ERPSYNC_SANDBOX_PSA_ACCOUNT_ID", "100200")
    return {
        "Authorization": f"Bearer {token}",
        "Harvest-Account-Id": account,
        "User-Agent": "erpsync sandbox benchmark (bench@erpsync.test)",
    }


def _tail_links(content: bytes) -> dict[str, Any]:
    """``links`` of a Harvest envelope read from its tail (the sandbox writes it last), so the
    next request can go out before the page is parsed; the full parse checks it afterwards."""
    at = content.rfind(b'"links":')
    return orjson.loads(content[at + 8 : -1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to tell serving cost from load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# Typed page model (built with defstruct: real types, no postponed annotations to resolve).
_Entry = msgspec.defstruct("_Entry", [("id", int), ("updated_at", str)])
_Links = msgspec.defstruct("_Links", [("next", str | None)])
_Envelope = msgspec.defstruct(
    "_Envelope", [("time_entries", list[_Entry]), ("total_entries", int), ("links", _Links)]
)
_TYPED = msgspec.json.Decoder(_Envelope)


def _decode(content: bytes, decoder: str) -> tuple[list[int], int, str | None]:
    """(ids, total_entries, links.next) of one page. ``msgspec`` decodes into typed structs
    (validates the whole document, keeps ``id``/``updated_at``, skips other fields the way a
    typed connector model does); ``orjson`` builds every record as a dict."""
    if decoder == "msgspec":
        env = _TYPED.decode(content)
        return [e.id for e in env.time_entries], env.total_entries, env.links.next
    page = orjson.loads(content)
    return [e["id"] for e in page["time_entries"]], page["total_entries"], page["links"]["next"]


def read_all(
    base: str,
    per_page: int,
    *,
    prefetch: bool,
    decoder: str = "msgspec",
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Read every time entry following ``links.next`` from one keep-alive httpx client.

    Every page is decoded in full (``decoder``) and its ids counted. ``prefetch=False`` is the
    plain connector loop (request, decode, request ...). ``prefetch=True`` overlaps them: a
    fetcher thread requests page N+1 as soon as page N's bytes arrived (taking ``links.next``
    from the tail of the body) while the main thread decodes page N and checks that link.
    """
    ids: set[int] = set()
    records = pages = payload_bytes = 0
    total_entries: int | None = None
    first_url = f"{base}/v2/time_entries?per_page={per_page}"
    pages_q: queue.Queue[tuple[str, bytes] | BaseException | None] = queue.Queue(maxsize=4)

    def fetch(client: httpx.Client) -> None:
        url: str | None = first_url
        try:
            while url:
                response = client.get(url)
                response.raise_for_status()
                pages_q.put((url, response.content))
                url = _tail_links(response.content)["next"]
            pages_q.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            pages_q.put(exc)

    with httpx.Client(headers=_headers(), timeout=120.0) as client:
        started = time.perf_counter()
        client_cpu = time.process_time()
        server_cpu = process_cpu_seconds(server_pid) if server_pid else 0.0
        first_page_seconds = 0.0
        expected_url: str | None = first_url
        if prefetch:
            fetcher = threading.Thread(target=fetch, args=(client,), daemon=True)
            fetcher.start()
        while expected_url:
            if prefetch:
                item = pages_q.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                url, content = item
                if url != expected_url:
                    raise AssertionError(f"followed {url}, links.next said {expected_url}")
            else:
                response = client.get(expected_url)
                response.raise_for_status()
                content = response.content
            payload_bytes += len(content)
            page_ids, total, expected_url = _decode(content, decoder)
            records += len(page_ids)
            ids.update(page_ids)
            pages += 1
            if total_entries is None:
                total_entries = total
                first_page_seconds = time.perf_counter() - started
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_cpu = (process_cpu_seconds(server_pid) - server_cpu) if server_pid else 0.0
        if prefetch:
            fetcher.join(timeout=10)
    return {
        "mode": "prefetch" if prefetch else "sequential",
        "decoder": decoder,
        "records": records,
        "distinct_ids": len(ids),
        "total_entries": total_entries,
        "pages": pages,
        "seconds": round(seconds, 3),
        "first_page_seconds": round(first_page_seconds, 3),
        "records_per_second": round(records / seconds) if seconds else None,
        "megabytes": round(payload_bytes / 1e6, 1),
        "megabytes_per_second": round(payload_bytes / 1e6 / seconds, 1) if seconds else None,
        "every_record_exactly_once": len(ids) == records == total_entries,
        # CPU seconds the service and the client spent: records per server CPU second is the
        # serving cost, independent of how busy the machine was during the run
        "server_cpu_seconds": round(server_cpu, 2),
        "client_cpu_seconds": round(client_cpu, 2),
        "records_per_server_cpu_second": round(records / server_cpu) if server_cpu else None,
    }


def _n(value: Any) -> str:
    """A rate with thousands separators, or "n/a" when it could not be measured (a run on the
    small firm can take less CPU than the clock resolves: no rate, not a crash)."""
    return f"{value:,}" if value is not None else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size_arg", nargs="?", help="firm size (small | medium | large)")
    parser.add_argument("--size", default=None, help="firm size (default large)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--per-page", type=int, default=2000)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="reuse an already generated state")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "sandbox_serving.json"
    )
    parser.add_argument(
        "--runs",
        default="sequential:msgspec,prefetch:msgspec,sequential:orjson",
        help="comma-separated client runs MODE:DECODER; MODE sequential (plain loop) or"
        " prefetch (next request overlaps decoding); DECODER msgspec (typed) or orjson (dicts)",
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve is not None:
        serve(args.serve, args.port)
        return 0

    size = args.size or args.size_arg or "large"
    state_dir = args.state_dir or ROOT / ".erpsync" / "bench" / f"psa-{size}-{args.seed}"
    print(f"preparing {size} firm (seed {args.seed}) in {state_dir} ...", flush=True)
    from erpsync_sandbox.serve import prepare_firm

    prep = prepare_firm(state_dir, size, args.seed, args.reuse)
    print(f"  {prep}", flush=True)

    port = _free_port()
    env = dict(os.environ, ERPSYNC_SANDBOX_PSA_RATE_LIMIT="off")
    env.pop("ERPSYNC_SANDBOX_FAULTS", None)
    env.pop("ERPSYNC_SANDBOX_FAULTS_PSA", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "include"), env.get("PYTHONPATH", "")) if p
    )
    cmd = [sys.executable, __file__, "--serve", str(state_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    runs: list[dict[str, Any]] = []
    try:
        wait_ready(base, proc)
        for spec in args.runs.split(","):
            mode, _, decoder = spec.strip().partition(":")
            if mode not in ("sequential", "prefetch") or decoder not in ("msgspec", "orjson"):
                parser.error(f"bad run {spec!r}: use sequential|prefetch:msgspec|orjson")
            run = read_all(
                base,
                args.per_page,
                prefetch=mode == "prefetch",
                decoder=decoder,
                server_pid=proc.pid,
            )
            runs.append(run)
            print(
                f"  {run['mode']:>10}/{run['decoder']:<7}: {run['records']:,} time entries in"
                f" {run['pages']} pages,"
                f" {run['seconds']} s = {_n(run['records_per_second'])} records/s"
                f" ({run['megabytes_per_second']} MB/s); server CPU {run['server_cpu_seconds']} s"
                f" = {_n(run['records_per_server_cpu_second'])} records per server CPU s;"
                f" client CPU {run['client_cpu_seconds']} s; exactly once:"
                f" {run['every_record_exactly_once']}",
                flush=True,
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    ok = all(run["every_record_exactly_once"] for run in runs)
    headline = runs[0]["records_per_second"] or 0  # the first run (default sequential:msgspec)
    best = max(run["records_per_second"] or 0 for run in runs)
    report = {
        "benchmark": "sandbox_serving",
        "service": "psa",
        "endpoint": "/v2/time_entries (per_page, follow links.next)",
        "command": " ".join(["benchmarks/sandbox_serving.py", *(argv or sys.argv[1:])]),
        "size": size,
        "seed": args.seed,
        "per_page": args.per_page,
        "prepare": prep,
        "runs": runs,
        "headline_run": f"{runs[0]['mode']}:{runs[0]['decoder']}",
        "records_per_second": headline,
        "best_records_per_second": best,
        "every_record_exactly_once": ok,
        "target_records_per_second": TARGET_RECORDS_PER_SECOND,
        "meets_target": bool(ok and headline >= TARGET_RECORDS_PER_SECOND),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{report['headline_run']}: {headline:,} records/s (best {best:,}; target"
        f" {TARGET_RECORDS_PER_SECOND:,}); -> {args.out}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
