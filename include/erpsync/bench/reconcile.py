"""Reconciliation benchmark: the large firm (1,000,000+ time entries) reconciled in PostgreSQL.

Why the rows are generated in SQL (``generate_series``) rather than synced from the sandbox:
the reconciliation reads the warehouse only, and the large firm's warehouse needs people, rate
cards, contracts (with rate overrides and caps), milestones, retainer schedules, time entries
and expenses - syncing all of that through the PSA/CRM APIs takes many minutes and measures
the syncs (``erpsync bench`` already does for time entries), not the reconciliation. The
generated firm has the large firm's shape: 3,000 clients, 2,002 people with a rate change on
1 September, ~4,200 projects (T&M 60 % - a third of them capped, some with contracted rates -,
fixed fee 30 %, retainer 10 %), May-October work, 4-5 entries per person-day (> 1,000,000),
~100,000 expenses, May-September billed, October approved/submitted, plus planted problems
(missing rates, duplicates, time on closed projects, missing receipts, hotels over policy,
rate and currency differences, a project over its cap). Pass ``conninfo`` to reconcile an
existing warehouse instead (e.g. one the syncs filled).

Measured, in this order, seconds and items per second each (with the machine's load average
when each run started - the target assumes an idle machine, this one has 2 cores):

1. **headline - the first full reconciliation of the firm**: recon.items empty, every item
   classified and inserted (``runs.first``; the report's top-level ``seconds`` /
   ``entries_per_second``);
2. a rerun with no input change, **skipped** by the input fingerprint (``runs.rerun_no_change``);
3. a **full recompute** with no change: an unrelated input moves, every item is recomputed and
   compared, none written (``runs.recompute_no_change``);
4. a rerun after 1 % of the entries changed (``runs.after_change``);
5. **the baseline, in the same command**: the first full reconciliation again (recon.items
   emptied) on one connection (``runs.first_serial``; ``parallel_speedup`` = its seconds over
   the headline's).

Runs 1-4 use ``run_reconcile``'s default: one worker per shard and core for a firm this size
(``workers`` and ``steps`` in each run: seconds per step). ``meets_target``: the first
reconciliation and every full recompute under 10 s (a skipped rerun and the one-connection
baseline do not count).

Entry points: :func:`run_reconcile_bench` (for ``erpsync bench``) and
``python -m erpsync.bench.reconcile [--entries N] [--keep-db] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

TARGET_SECONDS = 10.0

RUN_TITLES = {
    "first": "HEADLINE first full reconciliation of the firm (every item new)",
    "rerun_no_change": "rerun, no input change (skipped by the input fingerprint)",
    "recompute_no_change": "full recompute, no change (every item recomputed, none written)",
    "after_change": "full recompute after 1 % of the entries changed",
    "first_serial": "baseline: the first full reconciliation again, on one connection",
}

PEOPLE = 2002
CLIENTS = 3000
PROJECTS = 4200

_GENERATE = [
    # people and their rate cards (a raise on 1 September), contract currencies per client
    """INSERT INTO core.id_map (entity_type, psa_id)
       SELECT 'person', 'u' || g FROM generate_series(1, %(people)s) g""",
    """INSERT INTO core.people (psa_id, canonical_id, first_name, last_name, email, role,
           source_record_id, row_hash, first_run_id, last_run_id)
       SELECT psa_id, canonical_id, 'P', psa_id, psa_id || '@firm.example',
              (ARRAY['Partner','Manager','Senior Consultant','Consultant','Analyst'])[
                  1 + canonical_id %% 5], psa_id, 'h', 'bench', 'bench'
         FROM core.id_map WHERE entity_type = 'person'""",
    """INSERT INTO core.rate_cards (kind, psa_rate_id, person_psa_id, amount, currency,
           valid_from, valid_to, source_record_id, row_hash, first_run_id, last_run_id)
       SELECT 'billable', 'r' || g || '-' || k, 'u' || g,
              (95 + (g %% 5) * 45 + k * 10)::numeric, 'EUR',
              CASE k WHEN 0 THEN date '2025-01-01' ELSE date '2026-09-01' END,
              CASE k WHEN 0 THEN date '2026-08-31' END, 'r' || g || '-' || k, 'h', 'bench',
              'bench'
         FROM generate_series(1, %(people)s - 2) g, generate_series(0, 1) k""",
    # contracts: one per project, adopted (set up before erpsync)
    """INSERT INTO core.contracts (opportunity_id, version, account_id, name, billing_model,
           currency, starts_on, ends_on, cap_type, cap_value, rate_overrides, project_code,
           status, psa_project_id, payload, first_run_id, last_run_id)
       SELECT 'o' || p, 1, 'a' || (p %% %(clients)s), 'Contract ' || p,
              CASE WHEN p %% 10 < 6 THEN 'time_and_materials'
                   WHEN p %% 10 < 9 THEN 'fixed_fee' ELSE 'retainer' END,
              (ARRAY['EUR','EUR','EUR','EUR','EUR','GBP','USD','USD','JPY','KWD'])[
                  1 + (p / 10) %% 10],
              date '2026-01-01',
              CASE WHEN p IN (97, 194, 291) THEN date '2026-10-15' ELSE date '2027-06-30' END,
              CASE WHEN p %% 10 < 6 AND p %% 3 = 0 THEN 'hours' END,
              CASE WHEN p %% 10 < 6 AND p %% 3 = 0
                   THEN CASE WHEN p = 30 THEN 400 ELSE 100000 END END,
              CASE WHEN p %% 10 < 6 AND p %% 4 = 1 THEN jsonb_build_array(
                   jsonb_build_object('user_email', 'u' || (1 + (p * 3) %% (%(people)s - 2))
                                      || '@firm.example', 'rate', '180'))
                   ELSE '[]'::jsonb END,
              'PRJ-' || p, 'adopted', 'p' || p, '{}'::jsonb, 'bench', 'bench'
         FROM generate_series(1, %(projects)s) p""",
    """INSERT INTO core.contract_milestones (opportunity_id, version, seq, name, amount,
           currency, due_date, status, accepted_at)
       SELECT c.opportunity_id, 1, s, 'Milestone ' || s, 10000, c.currency,
              date '2026-03-01' + 60 * s,
              CASE WHEN s < 3 THEN 'accepted' ELSE 'open' END,
              CASE WHEN s < 3 THEN timestamptz '2026-06-01' END
         FROM core.contracts c, generate_series(1, 3) s
        WHERE c.billing_model = 'fixed_fee'""",
    """INSERT INTO billing.schedules (opportunity_id, version, billing_model, currency,
           status, created_run_id)
       SELECT opportunity_id, 1, 'retainer', currency, 'active', 'bench'
         FROM core.contracts WHERE billing_model = 'retainer'""",
    """INSERT INTO billing.schedule_lines (schedule_id, seq, kind, description, period_start,
           period_end, due_date, amount, currency)
       SELECT s.schedule_id, m, 'retainer', 'Retainer month ' || m,
              (date '2026-01-01' + make_interval(months => m - 1))::date,
              (date '2026-01-01' + make_interval(months => m) - interval '1 day')::date,
              (date '2026-01-01' + make_interval(months => m) - interval '1 day')::date,
              5000, s.currency
         FROM billing.schedules s, generate_series(1, 12) m""",
    # time entries: person u = i mod people, on one of three projects of theirs, May-October
    """INSERT INTO core.time_entries (psa_id, spent_date, hours, notes, billable,
           approval_status, is_locked, is_billed, billable_rate, currency, user_psa_id,
           client_psa_id, project_psa_id, project_code, task_psa_id, user_assignment_psa_id,
           created_at, source_record_id, row_hash, first_run_id, last_run_id)
       SELECT x.id, x.day, x.hours, x.notes, x.billable,
              CASE WHEN x.day <= date '2026-10-14' THEN 'approved'
                   WHEN x.i %% 3 = 0 THEN 'submitted' ELSE 'approved' END,
              x.day <= date '2026-10-14', x.billable AND x.day <= date '2026-09-30' AND x.tm,
              -- the person's rate card (EUR), in the contract currency at the firm's FX
              -- (recon.currencies): a plausible rate (rate_off_card)
              CASE WHEN x.billable THEN
                   round((95 + (x.u %% 5) * 45
                          + CASE WHEN x.day >= date '2026-09-01' THEN 10 ELSE 0 END)
                         * cur.per_eur, cur.minor_units) END,
              c.currency, 'u' || x.u, 'c' || (x.p %% %(clients)s), 'p' || x.p, 'PRJ-' || x.p,
              't' || (x.i %% 6), 'ua-' || x.p || '-' || x.u,
              x.day + time '17:00' + make_interval(secs => x.i %% 3600),
              x.id, 'h', 'bench', 'bench'
         FROM (SELECT i, 'te' || i AS id, 1 + i %% (%(people)s - 2) AS u,
                      1 + ((i %% (%(people)s - 2)) * 3 + (i / (%(people)s - 2)) %% 3)
                          %% %(projects)s AS p,
                      date '2026-05-01' + (i / %(per_day)s)::int AS day,
                      (ARRAY[0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])[1 + i %% 9] AS hours,
                      'note ' || (i %% 12) AS notes,
                      i %% 10 <> 0 AS billable,
                      (1 + ((i %% (%(people)s - 2)) * 3 + (i / (%(people)s - 2)) %% 3)
                          %% %(projects)s) %% 10 < 6 AS tm
                 FROM generate_series(1, %(entries)s) i) x
         JOIN core.contracts c ON c.psa_project_id = 'p' || x.p
         JOIN recon.currencies cur ON cur.code = c.currency""",
    """INSERT INTO core.expenses (psa_id, spent_date, total_cost, units, currency, billable,
           approval_status, is_locked, is_billed, has_receipt, user_psa_id, client_psa_id,
           project_psa_id, project_code, expense_category_name, source_record_id, row_hash,
           first_run_id, last_run_id)
       SELECT 'ex' || i, t.spent_date,
              round((20 + i %% 40) * cur.per_eur, cur.minor_units), 1, t.currency, true,
              t.approval_status, t.is_locked, t.is_billed, true, t.user_psa_id,
              t.client_psa_id, t.project_psa_id, t.project_code, 'Meals', 'ex' || i, 'h',
              'bench', 'bench'
         FROM generate_series(1, %(expenses)s) i
         JOIN core.time_entries t ON t.psa_id = 'te' || (i * 10)
         JOIN recon.currencies cur ON cur.code = t.currency""",
    # planted problems (8 of each kind)
    """INSERT INTO core.time_entries (psa_id, spent_date, hours, notes, billable,
           approval_status, is_locked, is_billed, billable_rate, currency, user_psa_id,
           client_psa_id, project_psa_id, project_code, task_psa_id, user_assignment_psa_id,
           created_at, source_record_id, row_hash, first_run_id, last_run_id)
       SELECT 'dup' || psa_id, spent_date, hours, notes, billable, approval_status, is_locked,
              is_billed, billable_rate, currency, user_psa_id, client_psa_id, project_psa_id,
              project_code, task_psa_id, user_assignment_psa_id, created_at + interval '3 min',
              'dup' || psa_id, 'h', 'bench', 'bench'
         FROM core.time_entries
        WHERE spent_date > date '2026-10-20' AND billable AND NOT is_billed
          AND project_psa_id IN (SELECT psa_project_id FROM core.contracts
                                  WHERE billing_model = 'time_and_materials'
                                    AND cap_type IS NULL)
        ORDER BY psa_id LIMIT 8""",
    """INSERT INTO core.time_entries (psa_id, spent_date, hours, notes, billable,
           approval_status, is_locked, is_billed, billable_rate, currency, user_psa_id,
           client_psa_id, project_psa_id, project_code, task_psa_id, created_at,
           source_record_id, row_hash, first_run_id, last_run_id)
       SELECT 'norate' || g, date '2026-10-20' + g, 3, 'Client support', true, 'submitted',
              false, false, NULL, 'EUR', 'u' || (%(people)s - 1), 'c1', 'p1', 'PRJ-1', 't1',
              now(), 'norate' || g, 'h', 'bench', 'bench'
         FROM generate_series(1, 8) g""",
    """UPDATE core.expenses SET total_cost = 180, has_receipt = false, units = 1,
              expense_category_name = 'Taxi & Transit', approval_status = 'submitted',
              is_billed = false, currency = 'EUR'
        WHERE psa_id IN (SELECT e.psa_id FROM core.expenses e
                           JOIN core.contracts c ON c.psa_project_id = e.project_psa_id
                          WHERE c.currency = 'EUR' AND e.spent_date > date '2026-10-20'
                          ORDER BY e.psa_id LIMIT 8)""",
]


def _log(message: str) -> None:
    print(message, flush=True)


def generate(conninfo: str, entries: int) -> dict[str, int]:
    """Fill a migrated, empty warehouse with the large firm's shape (see module doc)."""
    import psycopg

    workdays = (dt.date(2026, 10, 30) - dt.date(2026, 5, 1)).days + 1
    params = {
        "people": PEOPLE,
        "clients": CLIENTS,
        "projects": PROJECTS,
        "entries": entries,
        "expenses": entries // 10,
        "per_day": max(1, entries // workdays + 1),
    }
    with psycopg.connect(conninfo) as conn:
        conn.execute("SET LOCAL synchronous_commit = off")
        for statement in _GENERATE:
            conn.execute(statement, params)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        # the generator's gigabyte of new pages written out now, not by the checkpointer while
        # the timed runs read (a warehouse synced hours before a nightly run has none pending)
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass  # a server of your own, without pg_checkpoint: the runs share the disk with it
        counts = conn.execute(
            """SELECT (SELECT count(*) FROM core.time_entries),
                      (SELECT count(*) FROM core.expenses),
                      (SELECT count(*) FROM core.contracts),
                      (SELECT count(*) FROM core.contract_milestones),
                      (SELECT count(*) FROM billing.schedule_lines)"""
        ).fetchone()
    return dict(
        zip(
            ("time_entries", "expenses", "contracts", "milestones", "retainer_lines"),
            counts,
            strict=True,
        )
    )


def _change(conninfo: str, fraction: float) -> int:
    """Approve / edit ``fraction`` of the unbilled entries (what a day of timesheets does)."""
    import psycopg

    with psycopg.connect(conninfo) as conn:
        n = conn.execute(
            """UPDATE core.time_entries SET hours = hours + 0.25, approval_status = 'approved',
                      updated_at = now()
                WHERE psa_id IN (SELECT psa_id FROM core.time_entries
                                  TABLESAMPLE SYSTEM (%s) REPEATABLE (7))""",
            (fraction * 100,),
        ).rowcount
        conn.commit()
    return n


def _touch(conninfo: str) -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        conn.execute("UPDATE recon.settings SET updated_at = now()")


def _empty(conninfo: str) -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        conn.execute("TRUNCATE recon.items")


def _timed(conninfo: str, label: str, workers: int | None = None) -> tuple[dict[str, Any], float]:
    import psycopg

    from erpsync.reconcile import run_reconcile
    from erpsync.sync.spec import RunInfo

    with psycopg.connect(conninfo) as conn:
        load = [round(x, 2) for x in os.getloadavg()]
        started = time.perf_counter()
        result = run_reconcile(
            conn, RunInfo.local(label), as_of=dt.date(2026, 11, 2), workers=workers
        )
        seconds = time.perf_counter() - started
    return {**result.as_dict(), "load_average_1_5_15": load}, seconds


def run_reconcile_bench(
    *,
    conninfo: str | None = None,
    entries: int = 1_050_000,
    fraction: float = 0.01,
    keep_db: bool = False,
    out: Path | None = None,
    server_url: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Reconcile the large firm and return the report (``erpsync bench``'s ``reconcile``
    stage). Without ``conninfo``: a fresh database on ``server_url`` (default
    ``ERPSYNC_DATABASE_URL``'s server or the embedded one), migrated and generated.
    ``workers``: as ``run_reconcile``'s (default: one per shard and core for a large firm); the
    baseline run is always one connection."""
    from erpsync.runtime import database
    from erpsync.warehouse import migrate

    created = None
    if conninfo is None:
        external = os.environ.get("ERPSYNC_DATABASE_URL")
        admin = server_url or database.with_database(
            external or database._embedded_server_url(start=True), "postgres"
        )
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        created = database.with_database(
            admin, f"erpsync_bench_recon_{stamp}_{uuid.uuid4().hex[:4]}"
        )
        database.ensure_database(created)
        migrate.migrate(created)
        conninfo = created
        _log(f"generating the large firm's warehouse ({entries:,} time entries) ...")
        t0 = time.perf_counter()
        counts = generate(conninfo, entries)
        _log(f"  {counts} in {time.perf_counter() - t0:.1f} s")
    else:
        counts = {}
    try:
        runs: dict[str, Any] = {}
        for label in ("first", "rerun_no_change", "recompute_no_change"):
            if label == "recompute_no_change":
                _touch(conninfo)  # an unrelated input moves: every item recomputed, none written
            result, seconds = _timed(conninfo, f"bench-{label}", workers)
            runs[label] = _run_report(result, seconds)
            _log(
                f"  {RUN_TITLES[label]}: {seconds:.2f} s, {runs[label]['items_per_second']:,}"
                f" items/s, written {result['inserted'] + result['updated']},"
                f" skipped {result['skipped']}, load {result['load_average_1_5_15'][0]},"
                f" workers {result['workers']}, steps {result['timings']}"
            )
        changed = _change(conninfo, fraction)
        result, seconds = _timed(conninfo, "bench-after-change", workers)
        runs["after_change"] = {**_run_report(result, seconds), "entries_changed": changed}
        _log(
            f"  {RUN_TITLES['after_change']} ({changed:,} entries): {seconds:.2f} s,"
            f" written {result['inserted'] + result['updated']},"
            f" load {result['load_average_1_5_15'][0]}, steps {result['timings']}"
        )
        # the baseline, in the same command: the first reconciliation on one connection
        _empty(conninfo)
        result, seconds = _timed(conninfo, "bench-first-serial", workers=1)
        runs["first_serial"] = _run_report(result, seconds)
        _log(
            f"  {RUN_TITLES['first_serial']}: {seconds:.2f} s,"
            f" {runs['first_serial']['items_per_second']:,} items/s,"
            f" load {result['load_average_1_5_15'][0]}, steps {result['timings']}"
        )
    finally:
        if created is not None and not keep_db:
            database.drop_database(created)
    first = runs["first"]
    recompute = runs["recompute_no_change"]
    report = {
        "benchmark": "reconcile",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            # other work on the machine while this ran (the target assumes an idle machine)
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        },
        "generated": counts,
        "target_seconds": TARGET_SECONDS,
        "runs": runs,
        # the headline: the first full reconciliation of the firm (every item new)
        "headline": "first",
        "headline_title": RUN_TITLES["first"],
        "seconds": first["seconds"],
        "entries_per_second": first["entries_per_second"],
        "recompute_seconds": recompute["seconds"],
        "recompute_entries_per_second": recompute["entries_per_second"],
        "skipped_rerun_seconds": runs["rerun_no_change"]["seconds"],
        # the baseline run in the same command: one connection instead of one worker per shard
        "serial_seconds": runs["first_serial"]["seconds"],
        "parallel_speedup": round(runs["first_serial"]["seconds"] / first["seconds"], 2),
        # the target is for a full reconciliation (every item recomputed), not a skipped rerun
        # nor the one-connection baseline
        "meets_target": all(
            r["seconds"] < TARGET_SECONDS
            for label, r in runs.items()
            if not r["skipped"] and label != "first_serial"
        ),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _run_report(result: dict[str, Any], seconds: float) -> dict[str, Any]:
    entries = sum(
        result["by_state"][s]["items"] for s in result["by_state"]
    )  # every item: time, expenses, milestones, retainer lines
    return {
        "seconds": round(seconds, 2),
        "items": entries,
        "items_per_second": int(entries / seconds) if seconds else 0,
        "entries_per_second": int(entries / seconds) if seconds else 0,
        "inserted": result["inserted"],
        "updated": result["updated"],
        "deleted": result["deleted"],
        "exceptions_open": result["exceptions_open"],
        "skipped": result["skipped"],
        "problems": result["problems"],
        "load_average_1_5_15": result["load_average_1_5_15"],
        "by_state": {s: v["items"] for s, v in result["by_state"].items()},
        "workers": result["workers"],
        "steps": result["timings"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_050_000)
    parser.add_argument("--conninfo", default=None, help="reconcile this warehouse instead")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results/reconcile.json"
    )
    args = parser.parse_args(argv)
    if args.out is None:
        from erpsync import paths

        args.out = paths.project_dir() / "benchmarks" / "results" / "reconcile.json"
    report = run_reconcile_bench(
        conninfo=args.conninfo, entries=args.entries, keep_db=args.keep_db, out=args.out
    )
    _log(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "headline",
                    "seconds",
                    "entries_per_second",
                    "recompute_seconds",
                    "recompute_entries_per_second",
                    "skipped_rerun_seconds",
                    "serial_seconds",
                    "parallel_speedup",
                    "meets_target",
                )
            }
        )
    )
    return 0 if report["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
