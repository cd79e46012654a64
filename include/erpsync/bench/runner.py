"""The ``erpsync bench`` harness: one sandbox, one PostgreSQL server, three loaders.

1. generate (or reuse) the firm under ``.erpsync/bench/psa-<size>-<seed>`` (the directory
   ``benchmarks/sandbox_serving.py`` uses; large = 1,000,000+ time entries, ~2-3 min once);
2. start the PSA service (Harvest API v2) in its own process, rate limit and faults off;
3. create a fresh database ``erpsync_bench_<stamp>`` on the embedded server (or the server of
   ``ERPSYNC_DATABASE_URL``) and migrate it;
4. run, each in its own process (so peak RSS is that path's own): the pack's engine (full
   sync of every time entry: extract, validate, stage by COPY, merge), dlt's ``rest_api``
   source (benchmark venv ``.erpsync/venvs/dlt``), pandas ``to_sql``;
5. change 1% of the time entries in the sandbox store (notes edited, ``updated_at`` moved
   past the watermark) and run the engine incrementally;
6. check exactly-once counts, print rates and ratios, write ``benchmarks/results/*.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from erpsync import paths

ROOT = paths.project_dir()
DLT_PIN = "dlt[postgres]==1.31.0"
TARGETS = {"min_ratio_vs_dlt": 3.0, "max_peak_rss_mb": 500.0, "max_incremental_fraction": 0.05}
EDIT_MARK = " [bench edit "


def _log(message: str) -> None:
    print(message, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, ERPSYNC_SANDBOX_PSA_RATE_LIMIT="off")
    env.pop("ERPSYNC_SANDBOX_FAULTS", None)
    env.pop("ERPSYNC_SANDBOX_FAULTS_PSA", None)
    include = str(ROOT / "include")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (include, env.get("PYTHONPATH", "")) if p)
    return env


class PsaService:
    """The PSA service in its own process on an ephemeral loopback port."""

    def __init__(self, state_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "erpsync.bench.worker",
            "serve",
            str(state_dir),
            str(self.port),
        ]
        self.proc = subprocess.Popen(cmd, env=_env())

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"PSA service exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/__admin/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("PSA service did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _run_worker(cmd: list[str], *, timeout: float) -> dict[str, Any]:
    import threading

    from erpsync.bench.worker import RESULT_PREFIX

    samples: list[float] = [os.getloadavg()[0]]
    done = threading.Event()

    def sample() -> None:  # the machine is shared: how busy it was while this loader ran
        while not done.wait(5.0):
            samples.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{tail}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["process_wall_seconds"] = round(wall, 3)
    # the 1-minute load average sampled every 5 s while the loader ran
    result["load_average_1min"] = {
        "mean": round(sum(samples) / len(samples), 2),
        "min": round(min(samples), 2),
        "max": round(max(samples), 2),
    }
    return result


def ensure_dlt_venv() -> Path:
    """``.erpsync/venvs/dlt`` with the pinned dlt (created on first use: uv, else venv+pip)."""
    venv = ROOT / ".erpsync" / "venvs" / "dlt"
    python = venv / "bin" / "python"
    marker = venv / "erpsync-pin.txt"
    if python.exists() and marker.exists() and marker.read_text().strip() == DLT_PIN:
        return python
    import shutil

    _log(f"creating the benchmark venv {venv} with {DLT_PIN} ...")
    uv = shutil.which("uv")
    if uv:
        if not python.exists():
            subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "--python", str(python), DLT_PIN], check=True)
    else:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", DLT_PIN], check=True)
    marker.write_text(DLT_PIN + "\n")
    return python


def change_fraction(
    state_dir: Path, db: str, core_table: str, fraction: float, nonce: str
) -> dict[str, Any]:
    """Edit ``fraction`` of the time entries in the sandbox store (every Nth by id): notes
    changed, ``updated_at`` one minute past the newest stamp, so the incremental read sees
    exactly these (the same ids every bench run, so earlier runs' edits are not re-read)."""
    import psycopg
    from psycopg import sql

    from erpsync_sandbox.common import SandboxContext

    step = max(1, round(1 / fraction))
    schema, _, name = core_table.partition(".")
    with psycopg.connect(db) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT psa_id FROM {} ORDER BY psa_id").format(
                    sql.Identifier(schema, name)
                )
            ).fetchall()[::step]
        ]
        newest = conn.execute(
            sql.SQL("SELECT max(source_modstamp) FROM {}").format(sql.Identifier(schema, name))
        ).fetchone()[0]
    stamp = (newest + dt.timedelta(minutes=1)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ctx = SandboxContext.open(state_dir)
    started = time.perf_counter()
    try:
        store = ctx.stores["psa"]
        for rid in ids:
            body = store.get("time_entries", rid)
            notes = str(body.get("notes") or "").split(EDIT_MARK, 1)[0]
            store.update(
                "time_entries", rid, {"notes": f"{notes}{EDIT_MARK}{nonce}]"}, modstamp=stamp
            )
        store.checkpoint()
    finally:
        ctx.close()
    return {
        "changed": len(ids),
        "modstamp": stamp,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _count_core(db: str, core_table: str, run_ids: bool = False) -> dict[str, int]:
    import psycopg
    from psycopg import sql

    schema, _, name = core_table.partition(".")
    with psycopg.connect(db) as conn:
        rows, distinct, live = conn.execute(
            sql.SQL(
                "SELECT count(*), count(DISTINCT psa_id),"
                " count(*) FILTER (WHERE deleted_at IS NULL) FROM {}"
            ).format(sql.Identifier(schema, name))
        ).fetchone()
    return {"rows": rows, "distinct_ids": distinct, "live": live}


def _guard(errors: dict[str, str], name: str, func, *args, **kwargs) -> Any:
    """Run one loader; a failure is recorded (and printed) and the others still run."""
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported in the result JSON
        errors[name] = str(exc)[-2000:]
        _log(f"  {name} FAILED: {str(exc)[-2000:]}")
        return None


def _rate(records: int, seconds: float) -> int:
    return int(records / seconds) if seconds else 0


def run_bench(
    *,
    size: str = "large",
    seed: int = 42,
    reuse: bool = True,
    loaders: tuple[str, ...] = ("erpsync", "dlt", "pandas"),
    fraction: float = 0.01,
    out: Path | None = None,
    keep_db: bool = False,
    dlt_disposition: str = "merge",
    state_dir: Path | None = None,
    server_url: str | None = None,
    pandas_max_seconds: float | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return (and write) the report. ``state_dir`` (the sandbox firm)
    and ``server_url`` (a PostgreSQL admin URL) default to ``.erpsync/bench/psa-<size>-<seed>``
    and ``ERPSYNC_DATABASE_URL`` or the embedded server."""
    from erpsync.bench.spec import prepare_database, time_entries_spec
    from erpsync.runtime import database

    state_dir = state_dir or ROOT / ".erpsync" / "bench" / f"psa-{size}-{seed}"
    _log(f"preparing the {size} firm (seed {seed}) in {state_dir} ...")
    from erpsync_sandbox.serve import prepare_firm

    prep = prepare_firm(state_dir, size, seed, reuse)
    total = prep["time_entries"]
    _log(f"  {prep}")

    admin = (
        server_url
        or os.environ.get("ERPSYNC_DATABASE_URL")
        or database._embedded_server_url(start=True)
    )
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    db = database.with_database(admin, f"erpsync_bench_{stamp}_{uuid.uuid4().hex[:6]}")
    database.ensure_database(db)
    spec, origin = time_entries_spec()
    prepare_database(db)
    _log(f"fresh database {database.redact(db)}; spec {origin} -> {spec.core_table}")

    dlt_python = ensure_dlt_venv() if "dlt" in loaders else None
    service = PsaService(state_dir)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    py = [sys.executable, "-m", "erpsync.bench.worker"]
    try:
        service.wait_ready()
        base = ["--db", db, "--psa", service.url]
        if "erpsync" in loaders:
            _log("erpsync: full sync ...")
            full = _guard(errors, "erpsync", _run_worker, [*py, "erpsync", *base], timeout=3600)
            if full:
                full["core"] = _count_core(db, spec.core_table)
                results["erpsync_full"] = full
                _log(
                    f"  {full['seconds']} s, stages {full['stages']}, peak {full['peak_rss_mb']} MB"
                )
                change = change_fraction(state_dir, db, spec.core_table, fraction, stamp)
                _log(f"changed {change['changed']} entries in the sandbox ({change['seconds']} s)")
                _log("erpsync: incremental sync ...")
                cmd = [*py, "erpsync", *base, "--incremental"]
                inc = _guard(errors, "erpsync_incremental", _run_worker, cmd, timeout=3600)
                if inc:
                    inc["change"] = change
                    inc["core"] = _count_core(db, spec.core_table)
                    results["erpsync_incremental"] = inc
                    _log(f"  {inc['seconds']} s, stages {inc['stages']}, stats {inc['stats']}")
        if dlt_python is not None:
            _log(f"dlt rest_api ({dlt_disposition}) ...")
            workdir = ROOT / ".erpsync" / "bench" / f"dlt-pipelines-{stamp}"
            script = str(ROOT / "benchmarks" / "dlt_rest_api.py")
            cmd = [str(dlt_python), script, *base, "--workdir", str(workdir)]
            cmd += ["--disposition", dlt_disposition]
            try:
                res = _guard(errors, "dlt", _run_worker, cmd, timeout=3600)
            finally:
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)
            if res:
                results["dlt"] = res
                _log(f"  {res['seconds']} s, stages {res['stages']}")
        if "pandas" in loaders:
            cap = f" (capped at {pandas_max_seconds:.0f} s)" if pandas_max_seconds else ""
            _log(f"pandas to_sql(method='multi'){cap} ...")
            cmd = [*py, "pandas", *base]
            if pandas_max_seconds:
                cmd += ["--max-seconds", str(pandas_max_seconds)]
            res = _guard(errors, "pandas", _run_worker, cmd, timeout=3600)
            if res:
                results["pandas"] = res
                done = "" if res.get("complete", True) else " (capped: stopped early)"
                _log(f"  {res['seconds']} s, {res['rows_loaded']:,} rows{done}")
    finally:
        service.stop()
        if not keep_db:
            database.drop_database(db)

    report = _report(results, total, prep, size, seed, origin, spec.core_table, fraction)
    report["errors"] = errors
    out = out or ROOT / "benchmarks" / "results" / "sync_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    _print_summary(report)
    _log(f"-> {out}")
    return report


def _report(results, total, prep, size, seed, origin, core_table, fraction) -> dict[str, Any]:
    loaders: dict[str, Any] = {}
    full = results.get("erpsync_full")
    if full:
        stats = full["stats"]
        loaders["erpsync"] = {
            "records": stats["read"],
            "seconds": full["seconds"],
            "records_per_second": _rate(stats["read"], full["seconds"]),
            "cpu_seconds": full.get("cpu_seconds"),
            "records_per_cpu_second": _rate(stats["read"], full.get("cpu_seconds") or 0),
            "peak_rss_mb": full["peak_rss_mb"],
            "stages_seconds": full["stages"],
            "exactly_once": stats["read"] == total
            and stats["loaded"] == total
            and stats["inserted"] == total
            and full["core"]["rows"] == total
            and full["core"]["distinct_ids"] == total,
            "stats": stats,
            "core": full["core"],
            "load_average_1min": full.get("load_average_1min"),
            "spec": origin,
            "core_table": core_table,
        }
    for name in ("dlt", "pandas"):
        res = results.get(name)
        if res:
            complete = res.get("complete", True)
            loaders[name] = {
                "records": res["rows_loaded"],
                "seconds": res["seconds"],
                "records_per_second": _rate(res["rows_loaded"], res["seconds"]),
                "cpu_seconds": res.get("cpu_seconds"),
                "records_per_cpu_second": _rate(res["rows_loaded"], res.get("cpu_seconds") or 0),
                "peak_rss_mb": res["peak_rss_mb"],
                "stages_seconds": res.get("stages", {}),
                # a capped run: every row it loaded exactly once (its rate is over those rows)
                "exactly_once": (res["rows_loaded"] == total if complete else True)
                and res["distinct_ids"] == res["rows_loaded"] == res.get("records", total),
                "complete": complete,
                **({} if complete else {"capped_at_seconds": res.get("max_seconds")}),
                "settings": res.get("settings", {}),
                "load_average_1min": res.get("load_average_1min"),
                **({"dlt_version": res["dlt_version"]} if "dlt_version" in res else {}),
            }
    ratios = {}
    if "erpsync" in loaders:
        mine = loaders["erpsync"]["records_per_second"]
        for name in ("dlt", "pandas"):
            if name in loaders and loaders[name]["records_per_second"]:
                ratios[f"erpsync_vs_{name}"] = round(mine / loaders[name]["records_per_second"], 2)
            mine_cpu = loaders["erpsync"]["records_per_cpu_second"]
            theirs_cpu = loaders.get(name, {}).get("records_per_cpu_second")
            if mine_cpu and theirs_cpu:
                ratios[f"erpsync_vs_{name}_per_client_cpu_second"] = round(mine_cpu / theirs_cpu, 2)
    incremental = None
    inc = results.get("erpsync_incremental")
    if inc and full:
        changed = inc["change"]["changed"]
        incremental = {
            "fraction_changed": fraction,
            "changed": changed,
            "seconds": inc["seconds"],
            "stages_seconds": inc["stages"],
            "fraction_of_full": round(inc["seconds"] / full["seconds"], 4),
            "stats": inc["stats"],
            "peak_rss_mb": inc["peak_rss_mb"],
            "load_average_1min": inc.get("load_average_1min"),
            "exactly_once": inc["stats"]["updated"] == changed
            and inc["stats"]["inserted"] == 0
            and inc["core"]["rows"] == total
            and inc["core"]["distinct_ids"] == total,
        }
    targets = {
        "min_ratio_vs_dlt": {
            "target": TARGETS["min_ratio_vs_dlt"],
            "measured": ratios.get("erpsync_vs_dlt"),
        },
        "max_peak_rss_mb": {
            "target": TARGETS["max_peak_rss_mb"],
            "measured": loaders.get("erpsync", {}).get("peak_rss_mb"),
        },
        "max_incremental_fraction": {
            "target": TARGETS["max_incremental_fraction"],
            "measured": incremental and incremental["fraction_of_full"],
        },
    }
    for name, t in targets.items():
        m = t["measured"]
        t["met"] = (
            None
            if m is None
            else (m >= t["target"] if name.startswith("min") else m <= t["target"])
        )
    return {
        "benchmark": "sync_throughput",
        "entity": "time_entries",
        "command": " ".join(["erpsync bench", *sys.argv[2:]]),
        "size": size,
        "seed": seed,
        "prepare": prep,
        "sandbox_time_entries": total,
        "loaders": loaders,
        "ratios": ratios,
        "incremental": incremental,
        "targets": targets,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _print_summary(report: dict[str, Any]) -> None:
    _log(f"\ntime entries in the sandbox: {report['sandbox_time_entries']:,}")
    for name, res in report["loaders"].items():
        capped = "" if res.get("complete", True) else "  (capped: rate over the rows loaded)"
        _log(
            f"  {name:<8} {res['records']:>9,} records {res['seconds']:>9.1f} s"
            f" {res['records_per_second']:>9,} records/s  peak {res['peak_rss_mb']:>7.1f} MB"
            f"  exactly once: {res['exactly_once']}{capped}"
        )
    for name, value in report["ratios"].items():
        _log(f"  {name}: {value}x")
    inc = report["incremental"]
    if inc:
        _log(
            f"  incremental after {inc['changed']:,} changes: {inc['seconds']} s ="
            f" {inc['fraction_of_full']:.1%} of the full run; exactly once: {inc['exactly_once']}"
        )
    for name, t in report["targets"].items():
        _log(f"  target {name}: {t['target']} measured {t['measured']} met {t['met']}")
