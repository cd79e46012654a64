"""Where PostgreSQL's time goes in the time-entry sync: the engine's own run (``engine._run``)
on N records of the bench firm, fed as raw pages (no HTTP), with the CPU seconds of the
sync's server backend (``/proc/<backend pid>/stat``, so the server must run on this machine)
and the wall time per step: the raw COPY (json), the stage COPY, the seen COPY, the merge and
the delete rules. Uses a scratch database, dropped at the end.

    .venv/bin/python benchmarks/profile_sync_server.py [N] [STATE_DIR]
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = 2000


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    state = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / ".erpsync/bench/psa-large-42"
    import msgspec
    import psycopg

    from erpsync.runtime import database
    from erpsync.sync import engine, sources
    from erpsync.sync.spec import RunInfo
    from erpsync.sync.specs_time import TIME_ENTRIES as spec
    from erpsync.warehouse import migrate

    src = sqlite3.connect(state / "psa.sqlite3")
    bodies = [
        b.encode() if isinstance(b, str) else b
        for (b,) in src.execute("SELECT body FROM time_entries LIMIT ?", (n,))
    ]
    pages = []
    for i in range(0, len(bodies), PAGE):
        body = b"[" + b",".join(bodies[i : i + PAGE]) + b"]"
        pages.append(sources.RawPage(msgspec.json.decode(body, type=list[msgspec.Raw])))
    del bodies

    admin = os.environ.get("ERPSYNC_DATABASE_URL") or database._embedded_server_url(start=True)
    db = database.with_database(admin, f"erpsync_profile_{uuid.uuid4().hex[:8]}")
    database.ensure_database(db)
    migrate.migrate(db)
    tick = os.sysconf("SC_CLK_TCK")

    def backend_cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    steps: dict[str, list[float]] = {}

    def measured(name, func, pid):
        def wrapper(*args, **kwargs):
            cpu, wall = backend_cpu(pid), time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                step = steps.setdefault(name(*args) if callable(name) else name, [0.0, 0.0])
                step[0] += backend_cpu(pid) - cpu
                step[1] += time.perf_counter() - wall

        return wrapper

    conn = psycopg.connect(db)
    pid = conn.info.backend_pid
    names = {engine._RAW_COPY: "COPY raw (json)", engine._SEEN_COPY: "COPY seen"}
    engine._merge = measured("merge", engine._merge, pid)
    engine._apply_deletes = measured("delete rules", engine._apply_deletes, pid)
    engine._Copy.write = measured(
        lambda _self, _cur, stmt: (
            names.get(stmt, "COPY stage") if isinstance(stmt, str) else "COPY stage"
        ),
        engine._Copy.write,
        pid,
    )
    timings: dict[str, float] = {}
    cpu0, client0, wall0 = backend_cpu(pid), time.process_time(), time.perf_counter()
    try:
        with conn.transaction():
            engine._run(
                conn,
                spec,
                RunInfo.local("profile"),
                pages=pages,
                full=True,
                deleted_ids=None,
                timings=timings,
            )
        wall = time.perf_counter() - wall0
        server, client = backend_cpu(pid) - cpu0, time.process_time() - client0
    finally:
        conn.close()
        database.drop_database(db)
    print(
        f"{n} records: wall {wall:.1f} s, server backend CPU {server:.1f} s,"
        f" client CPU {client:.1f} s"
    )
    for name, (cpu, took) in steps.items():
        print(f"  {name:<18} server CPU {cpu:6.2f} s   wall {took:6.2f} s")
    print("  engine stages (s):", {k: round(v, 2) for k, v in timings.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
