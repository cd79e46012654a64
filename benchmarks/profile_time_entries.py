"""Where the engine's per-record time goes on the time-entry path (no network, no database).

Reads N time-entry bodies from the bench firm's PSA store (``.erpsync/bench/psa-large-42``),
then runs exactly what ``engine._load`` does per record (map, validate with the prebuilt
TypeAdapter, row hash, raw payload, COPY row building with psycopg's text dumpers) under cProfile.

    .venv/bin/python benchmarks/profile_time_entries.py [N] [STATE_DIR]
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import sqlite3
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    state = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / ".erpsync/bench/psa-large-42"
    from erpsync.models.canonical import adapter_for
    from erpsync.sync import engine
    from erpsync.sync.specs_time import TIME_ENTRIES as spec

    db = sqlite3.connect(state / "psa.sqlite3")
    bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM time_entries LIMIT ?", (n,))]
    adapter, mapper = adapter_for(spec.model), spec.mapper
    columns = engine._model_columns(spec)

    def per_record() -> list:
        out = []
        for record in bodies:
            key, modstamp = str(record["id"]), record.get("updated_at")
            rows = [adapter.validate_python(r).__dict__ for r in mapper(record)]
            payload = engine._payload(record)
            out.append(("psa", spec.name, "run", key, modstamp, payload))
            for row in rows:
                out.append((*(row[c] for c in columns), key, engine.row_hash(row), modstamp))
        return out

    started = time.perf_counter()
    per_record()
    plain = time.perf_counter() - started
    profile = cProfile.Profile()
    profile.enable()
    per_record()
    profile.disable()
    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(12)
    print(f"{n} records: {plain / n * 1e6:.1f} us per record without the profiler")  # noqa: T201
    print(buf.getvalue())  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
