"""Where the engine's per-record time goes on the time-entry path (no network, no database).

Reads N time-entry bodies from the bench firm's PSA store (``.erpsync/bench/psa-large-42``),
then times, per record, both paths of ``engine._load``:

* the raw-codec path the Harvest sync takes (``encode_time_entry`` on the record's JSON bytes,
  then the raw/stage/seen COPY text the engine builds from it);
* the mapper -> pydantic path (records the codec declines, and every spec without a codec):
  JSON decode, map, validate with the prebuilt TypeAdapter, row hash, raw payload, COPY rows
  through psycopg's text dumpers;

and prints a cProfile of the codec path.

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
    import psycopg
    from psycopg._copy_base import format_row_text  # what Copy.write_row runs

    from erpsync.models.canonical import adapter_for
    from erpsync.models.time_expense import encode_time_entry
    from erpsync.sync import engine
    from erpsync.sync.specs_time import TIME_ENTRIES as spec

    db = sqlite3.connect(state / "psa.sqlite3")
    bodies = [
        b.encode() if isinstance(b, str) else b
        for (b,) in db.execute("SELECT body FROM time_entries LIMIT ?", (n,))
    ]
    adapter, mapper = adapter_for(spec.model), spec.mapper
    columns = engine._model_columns(spec)
    tx = psycopg.adapt.Transformer()

    def codec_path() -> int:
        prefix = b"psa\ttime_entries\trun\t"
        raw, stage, seen = [], [], []
        for body in bodies:
            key, mod, cols, digest = encode_time_entry(body)
            raw.extend((prefix, key.encode(), b"\t", mod.encode(), b"\t"))
            raw.extend((engine._copy_bytes(body), b"\n"))
            stage.append(f"{cols}\t{key}\t{digest}\t{mod}\n")
            seen.append(f"{key}\t{mod}\tt\n")
        return len(b"".join(raw)) + len("".join(stage)) + len("".join(seen))

    def pydantic_path() -> int:
        out = bytearray()
        for body in bodies:
            record = json.loads(body)
            key, modstamp = str(record["id"]), record.get("updated_at")
            rows = [adapter.validate_python(r).__dict__ for r in mapper(record)]
            payload = engine._payload(record)
            format_row_text(("psa", spec.name, "run", key, modstamp, payload), tx, out)
            for row in rows:
                values = (*(row[c] for c in columns), key, engine.row_hash(row), modstamp)
                format_row_text(values, tx, out)
        return len(out)

    for label, func in (("raw codec path", codec_path), ("mapper + pydantic path", pydantic_path)):
        started = time.perf_counter()
        func()
        took = time.perf_counter() - started
        print(f"{label:<24} {took / n * 1e6:6.1f} us per record ({n} records)")
    profile = cProfile.Profile()
    profile.enable()
    codec_path()
    profile.disable()
    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(12)
    print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
