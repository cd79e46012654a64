"""Month-end benchmark: one month's billing run end to end under the vendors' API limits.

The sandbox firm (``--size``, default ``large``: 2,000 people) is served in this process with
its limits at the vendors' documented values, and the pack's own code runs each step against
it, as the DAG tasks call it:

1. master data and rates sync (the nightly specs), project setup, then the **full time &
   expense sync** (first run; the step the full-sync floor is measured on);
2. the month-end run proper: **incremental time & expense sync**, **reconciliation** (as of the
   sandbox business day 2026-11-02), **invoice batch build** for October 2026, **approval**
   through :func:`erpsync.invoicing.decide` (the library call the DAG's ``record_decision``
   task makes with the HITL answer; the Airflow HITL API itself is exercised by
   tests/integration/test_billing_e2e.py), **ERP create and post + PSA billed state**
   (:func:`erpsync.invoicing.push.push_batch`).

Every request the pack sends is counted at the sandbox by the contract recorder
(:mod:`erpsync_sandbox.contract`, one line per request: service, method, route, status), per
step and per system. The **floor** of a step for a system is the time its documented limit
needs for the requests the step made: requests / allowed rate.

* Harvest: 100 requests per 15 s per token (https://help.getharvest.com/api-v2/introduction/overview/general/#rate-limiting)
  -> 6.67 requests/s.
* Business Central: 6,000 requests per 5-minute sliding window per user, 5 processed at once,
  95 queued (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/administration/operational-limits-online#ODataServicesUser)
  -> 20 requests/s. The sandbox limiter counts per sliding minute, so it is set to 1,200 per
  minute (the same average, stricter on bursts). A ``$batch`` counts as one request
  (erpsync_sandbox.erp.batch: Microsoft documents at most 100 operations per batch and batching
  as a way to make fewer calls, not how its operations count).
* Salesforce: a daily request quota (100,000 here), no per-second limit: its floor is 0 and the
  report gives the share of the quota used.

The limiting system of a step is the one with the largest floor; the target is a wall time
within 1.25x of that floor. The pack's clients pace themselves with the client-side limiter
(:mod:`erpsync.connectors.throttle`, on by default at the documented limits; the report's
``limits.client_side_rate_limiter`` lists the settings used); a 429 that comes anyway is waited
out (``Retry-After`` where sent, jittered backoff otherwise), and the report counts the 429s
received.

Results: ``benchmarks/results/month_end.json`` (``--out``).

``python -m erpsync.bench.month_end [--size small|medium|large] [--seed N] [--keep-db]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from erpsync import paths
from erpsync.runtime.sandbox_connections import connection_env, environ, sandbox_credentials

__all__ = ["LIMITS", "RATES", "main", "run_month_end_bench"]

PERIOD_START = dt.date(2026, 10, 1)
PERIOD_END = dt.date(2026, 10, 31)
AS_OF = dt.date(2026, 11, 2)  # the sandbox business clock
TARGET_RATIO = 1.25

#: Sandbox limit settings at the vendors' documented values (read when the apps are created).
LIMITS: dict[str, str] = {
    "ERPSYNC_SANDBOX_PSA_RATE_LIMIT": "100/15",
    "ERPSYNC_SANDBOX_ERP_RATE_PER_MIN": "1200",
    "ERPSYNC_SANDBOX_ERP_MAX_CONCURRENT": "5",
    "ERPSYNC_SANDBOX_ERP_QUEUE": "95",
    "ERPSYNC_SANDBOX_CRM_DAILY_LIMIT": "100000",
}
#: Allowed requests per second per system (0: a quota, not a rate).
RATES: dict[str, float] = {"psa": 100 / 15, "erp": 6000 / 300, "crm": 0.0}
CRM_DAILY_QUOTA = 100_000
USER_AGENT = "erpsync month-end bench (finance-ops@example.com)"
MONTH_END_STEPS = ("incremental_sync", "reconcile", "build", "approve", "push")


def _log(message: str) -> None:
    print(message, flush=True)


class RequestLog:
    """The contract recorder's log: the pack's requests since a mark, per system and route."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> list[dict[str, Any]]:
        from erpsync_sandbox import contract

        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            fh.seek(self.offset)
            lines = [json.loads(line) for line in fh if line.strip()]
        return [r for r in lines if contract.is_pack_request(r)]


def _floors(requests: Counter[str]) -> dict[str, float]:
    return {
        system: round(n / RATES[system], 2) if RATES.get(system) else 0.0
        for system, n in requests.items()
    }


def _step_report(name: str, seconds: float, records: list[dict[str, Any]]) -> dict[str, Any]:
    requests: Counter[str] = Counter(r["service"] for r in records)
    throttled: Counter[str] = Counter(r["service"] for r in records if r["status"] == 429)
    routes: Counter[str] = Counter(
        f"{r['service']} {r['method']} {r.get('route') or r['path']}" for r in records
    )
    floors = _floors(requests)
    limiting = max(floors, key=lambda s: floors[s]) if floors else None
    floor = floors.get(limiting, 0.0) if limiting else 0.0
    return {
        "step": name,
        "seconds": round(seconds, 2),
        "requests": dict(sorted(requests.items())),
        "responses_429": dict(sorted(throttled.items())),
        "floor_seconds": floors,
        "limiting_system": limiting if floor > 0 else None,
        "limiting_floor_seconds": floor,
        "wall_over_floor": round(seconds / floor, 2) if floor > 0 else None,
        "routes": dict(routes.most_common()),
    }


def _sync_time_expense(db: str, label: str) -> None:
    """The hourly DAG's time & expense syncs (its page sizes), in-process."""
    from erpsync.connectors.harvest import HarvestClient
    from erpsync.sync.spec import RunInfo
    from erpsync.sync.specs_time import TIME_EXPENSE
    from erpsync.sync.time_expense import DeleteCheck, sync_entity

    run = RunInfo.local(label)
    for spec in TIME_EXPENSE:
        with psycopg.connect(db) as conn, closing(HarvestClient()) as psa:
            sync_entity(
                conn,
                spec,
                run=run,
                client=psa,
                side=lambda: psycopg.connect(db, autocommit=True),
                report=DeleteCheck(spec.name),
                leaf_size=2000,
                page_size=2000,
            )


def _master_data(db: str) -> None:
    from erpsync.onboarding import setup
    from erpsync.sync import specs
    from erpsync.sync.engine import run_entity_sync
    from erpsync.sync.spec import RunInfo

    run = RunInfo.local("bench-master")
    for spec in (*specs.MASTER_DATA, *specs.RATES):
        with psycopg.connect(db) as conn, spec.source.client() as vendor:
            run_entity_sync(
                conn,
                spec,
                run=run,
                client=vendor,
                side=lambda: psycopg.connect(db, autocommit=True),
            )
    with psycopg.connect(db, autocommit=True) as conn:
        setup.run_project_setup(conn, setup.Systems(), run=RunInfo.local("bench-setup"))


def _pristine_firm(state_dir: Path, size: str, seed: int) -> None:
    """Generate the firm into ``state_dir`` once (reused by later runs, never written to)."""
    from erpsync_sandbox.serve import start_sandbox

    if (state_dir / ".month-end-ready").exists():
        return
    _log(f"month-end bench: generating the {size} firm (seed {seed}) in {state_dir} ...")
    sandbox = start_sandbox(state_dir, size, seed=seed, reset=True)
    sandbox.stop(timeout=3.0)
    (state_dir / ".month-end-ready").write_text("generated\n")


def run_month_end_bench(
    *,
    size: str = "large",
    seed: int = 0,
    state_dir: Path | None = None,
    keep_db: bool = False,
    out: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark on the ``size`` firm; return the report and write it to ``out``."""
    import psycopg

    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.connectors.harvest import HarvestClient
    from erpsync.invoicing import build_batch, current_hash, decide
    from erpsync.invoicing.push import push_batch
    from erpsync.reconcile import run_reconcile
    from erpsync.runtime import database
    from erpsync.sync.spec import RunInfo
    from erpsync.warehouse import migrate
    from erpsync_sandbox import contract
    from erpsync_sandbox.serve import start_sandbox

    state_dir = state_dir or paths.project_dir() / ".erpsync" / "bench" / f"month-end-{size}-{seed}"
    log_path = Path(tempfile.mkdtemp(prefix="erpsync-month-end-")) / "requests.jsonl"
    admin = os.environ.get("ERPSYNC_DATABASE_URL") or database._embedded_server_url(start=True)
    if not admin:
        raise RuntimeError("no PostgreSQL server: set ERPSYNC_DATABASE_URL")
    db = database.with_database(admin, f"erpsync_bench_month_end_{uuid.uuid4().hex[:8]}")
    database.ensure_database(db)
    steps: list[dict[str, Any]] = []
    requests = RequestLog(log_path)
    facts: dict[str, Any] = {}
    work_dir = log_path.parent / "sandbox"
    t0 = time.perf_counter()
    _pristine_firm(state_dir, size, seed)
    # every run bills the same untouched firm: the push writes to the sandbox's stores
    shutil.copytree(state_dir, work_dir)
    facts["sandbox_prepare_seconds"] = round(time.perf_counter() - t0, 1)
    with environ({**LIMITS, contract.CONTRACT_LOG_ENV: str(log_path)}):
        sandbox = start_sandbox(work_dir, size, seed=seed, reset=False)
        try:
            migrate.migrate(db)
            credentials = sandbox_credentials(sandbox.ctx.config, user_agent=USER_AGENT)
            with environ(connection_env(sandbox.urls, credentials, db)):

                def step(name: str, fn: Callable[[], Any]) -> Any:
                    _log(f"month-end bench: {name} ...")
                    requests.mark()
                    started = time.perf_counter()
                    value = fn()
                    report = _step_report(
                        name, time.perf_counter() - started, requests.since_mark()
                    )
                    steps.append(report)
                    _log(
                        f"month-end bench: {name} {report['seconds']} s, requests"
                        f" {report['requests']}, floor {report['limiting_floor_seconds']} s"
                        f" ({report['limiting_system']}), 429s {report['responses_429']}"
                    )
                    return value

                step("master_data", lambda: _master_data(db))
                step("full_time_expense_sync", lambda: _sync_time_expense(db, "bench-time-full"))
                step("incremental_sync", lambda: _sync_time_expense(db, "bench-time-incr"))

                def reconcile() -> None:
                    with psycopg.connect(db) as conn:
                        run_reconcile(conn, RunInfo.local("bench-reconcile"), as_of=AS_OF)

                step("reconcile", reconcile)

                def build() -> int:
                    with psycopg.connect(db) as conn:
                        result = build_batch(
                            conn,
                            RunInfo.local("bench-build"),
                            period_start=PERIOD_START,
                            period_end=PERIOD_END,
                            prepared_by="bench-preparer",
                        )
                        conn.commit()
                        return int(result.batch_id or 0)

                batch_id = step("build", build)

                def approve() -> None:
                    with psycopg.connect(db) as conn:
                        decide(
                            conn,
                            RunInfo.local("bench-approve"),
                            batch_id,
                            decision="approve",
                            by="bench-approver",
                            content_hash=current_hash(conn, batch_id),
                            comment="month-end benchmark",
                        )
                        conn.commit()

                step("approve", approve)

                def push() -> dict[str, Any]:
                    result = push_batch(
                        partial(psycopg.connect, db),
                        RunInfo.local("bench-push"),
                        batch_id,
                        erp=BusinessCentralClient(),
                        psa=HarvestClient(),
                    )
                    return dict(result.as_dict())

                pushed = step("push", push)
                with psycopg.connect(db) as conn:
                    facts.update(_batch_facts(conn, batch_id))
                facts["push"] = {
                    k: pushed[k]
                    for k in (
                        "invoices",
                        "created",
                        "posted",
                        "billed_back",
                        "failed",
                        "harvest_invoiced",
                        "ledger_only",
                        "complete",
                    )
                }
        finally:
            sandbox.stop(timeout=3.0)
            shutil.rmtree(work_dir, ignore_errors=True)
            if not keep_db:
                database.drop_database(db)
    # what the pack used that the vendors do not document (the suite's contract check)
    facts["undocumented_uses"] = contract.violations(contract.read_log(log_path))
    report = _report(size, seed, steps, facts, keep_db, db)
    out = out or paths.project_dir() / "benchmarks" / "results" / "month_end.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _batch_facts(conn: Any, batch_id: int) -> dict[str, Any]:
    invoices = conn.execute(
        "SELECT count(*) FROM billing.invoices WHERE batch_id = %s AND status <> 'rejected'",
        (batch_id,),
    ).fetchone()[0]
    items = conn.execute(
        """SELECT count(*) FROM billing.billed_items b
             JOIN billing.invoices i ON i.invoice_id = b.invoice_id WHERE i.batch_id = %s""",
        (batch_id,),
    ).fetchone()[0]
    entries = conn.execute(
        """SELECT count(*) FROM billing.billed_items b
             JOIN billing.invoices i ON i.invoice_id = b.invoice_id
            WHERE i.batch_id = %s AND b.item_key LIKE 'time:%%'""",
        (batch_id,),
    ).fetchone()[0]
    return {
        "batch_id": batch_id,
        "invoices": int(invoices),
        "billed_items": int(items),
        "billed_time_entries": int(entries),
    }


def _client_limits() -> dict[str, dict[str, Any]]:
    """The pack's client-side limit settings per system, as its clients would resolve them
    against a loopback sandbox (``rate_limit: off`` = no client-side rate limiting)."""
    from erpsync.connectors.throttle import limit_settings

    return {
        system: limit_settings(system, {}, "http://127.0.0.1") for system in ("psa", "erp", "crm")
    }


def _report(
    size: str, seed: int, steps: list[dict[str, Any]], facts: dict[str, Any], keep_db: bool, db: str
) -> dict[str, Any]:
    from erpsync.runtime import database

    by_name = {s["step"]: s for s in steps}
    month: Counter[str] = Counter()
    throttled: Counter[str] = Counter()
    seconds = 0.0
    for name in MONTH_END_STEPS:
        s = by_name.get(name)
        if s is None:
            continue
        month.update(s["requests"])
        throttled.update(s["responses_429"])
        seconds += s["seconds"]
    floors = _floors(month)
    limiting = max(floors, key=lambda k: floors[k]) if floors else None
    floor = floors.get(limiting, 0.0) if limiting else 0.0
    push = by_name.get("push", {"requests": {}})
    invoices = max(int(facts.get("invoices") or 0), 1)
    items = max(int(facts.get("billed_items") or 0), 1)
    full = by_name.get("full_time_expense_sync", {})
    crm_total = sum(s["requests"].get("crm", 0) for s in steps)
    return {
        "benchmark": "month-end billing run under the vendors' API limits",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "size": size,
        "seed": seed,
        "period": [PERIOD_START.isoformat(), PERIOD_END.isoformat()],
        "limits": {
            "psa": "100 requests / 15 s per token",
            "erp": "6,000 requests / 5 min per user (sandbox: 1,200 per sliding minute),"
            " 5 concurrent, 95 queued",
            "crm": f"{CRM_DAILY_QUOTA:,} requests per day (quota)",
            # connectors/throttle.py: on by default at the documented limits (the sandbox's
            # own limits for a loopback sandbox), unless switched off by extras or environment
            "client_side_rate_limiter": _client_limits(),
        },
        **{k: v for k, v in facts.items() if k != "push"},
        "push_result": facts.get("push"),
        "steps": steps,
        "month_end": {
            "steps": list(MONTH_END_STEPS),
            "seconds": round(seconds, 2),
            "requests": dict(sorted(month.items())),
            "responses_429": dict(sorted(throttled.items())),
            "floor_seconds": floors,
            "limiting_system": limiting,
            "limiting_floor_seconds": floor,
            "wall_over_floor": round(seconds / floor, 2) if floor else None,
            "within_target": bool(floor) and seconds <= TARGET_RATIO * floor,
        },
        "push_requests_per_invoice": {
            k: round(v / invoices, 2) for k, v in push["requests"].items()
        },
        "push_requests_per_billed_item": {
            k: round(v / items, 4) for k, v in push["requests"].items()
        },
        "full_time_expense_sync": {
            "seconds": full.get("seconds"),
            "psa_requests": full.get("requests", {}).get("psa", 0),
            "psa_floor_seconds": full.get("floor_seconds", {}).get("psa"),
            "wall_over_floor": full.get("wall_over_floor"),
            "within_target": bool(full.get("wall_over_floor"))
            and float(full["wall_over_floor"]) <= TARGET_RATIO,
        },
        "crm_daily_quota_used": round(crm_total / CRM_DAILY_QUOTA, 4),
        "target_ratio": TARGET_RATIO,
        "database_kept": database.redact(db) if keep_db else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", choices=("small", "medium", "large"), default="large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run_month_end_bench(
        size=args.size, seed=args.seed, state_dir=args.state_dir, keep_db=args.keep_db, out=args.out
    )
    summary = {k: v for k, v in report.items() if k != "steps"}
    print(json.dumps(summary, indent=2))
    return 0 if report["month_end"]["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
