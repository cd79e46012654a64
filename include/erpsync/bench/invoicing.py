"""Invoice batch benchmark: build the batches of the large firm's month.

A fresh database gets the warehouse migrations and a month of reconciliation output generated
in SQL with ``generate_series``: by default 1,000,000 ready-or-held ``recon.items`` (time
entries, plus expenses and retainer fees) for 3,000 clients in EUR, USD, GBP, JPY and KWD with
every tax treatment (standard, reverse charge, exempt, export). Then the real builder
(:func:`erpsync.invoicing.build_batch`) builds the month's batch, reserving the items, and the
benchmark reports seconds, invoices per second and items per second, plus the approval summary
and hash timings. Results go to ``benchmarks/results/invoicing.json``.

``python -m erpsync.bench.invoicing [--items N] [--clients N] [--keep-db]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from erpsync import paths
from erpsync.invoicing.common import Connection, scalar
from erpsync.runtime import database

PERIOD_START = dt.date(2026, 10, 1)
PERIOD_END = dt.date(2026, 10, 31)
TARGET_SECONDS = 60.0

#: The sandbox's ERP tax groups (code, name, kind) and the rates the benchmark and the invoicing
#: golden tests use (tests/support/invoicing_data.py re-exports them).
TAX_CODES = [
    ("STANDARD", "Standard VAT", "VAT"),
    ("REVERSE", "EU reverse charge (0%)", "VAT"),
    ("EXEMPT", "Exempt supply (0%)", "VAT"),
    ("EXPORT", "Outside scope / export (0%)", "VAT"),
]
TaxRate = tuple[str, str, str, str, str, str | None]  # erp_id, code, country, percent, from, to
TAX_RATES: list[TaxRate] = [
    ("rate-nl-std", "STANDARD", "NL", "21", "2012-10-01", None),
    ("rate-be-std-old", "STANDARD", "BE", "21", "1996-01-01", "2026-08-31"),
    ("rate-be-std", "STANDARD", "BE", "22", "2026-09-01", None),
    ("rate-reverse", "REVERSE", "", "0", "2000-01-01", None),
    ("rate-exempt", "EXEMPT", "", "0", "2000-01-01", None),
    ("rate-export", "EXPORT", "", "0", "2000-01-01", None),
]
_SEED_RUN = "devdata"


def _h(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def add_tax_setup(conn: Connection, rates: Iterable[TaxRate] = TAX_RATES) -> None:
    """The ERP tax codes and ``rates`` in ``core.tax_codes`` / ``core.tax_rates`` (idempotent)."""
    run = _SEED_RUN
    for code, name, kind in TAX_CODES:
        conn.execute(
            """INSERT INTO core.tax_codes (code, erp_id, display_name, tax_type, source_record_id,
                   row_hash, first_run_id, last_run_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (code) DO NOTHING""",
            (code, f"tg-{code}", name, kind, f"tg-{code}", _h(code), run, run),
        )
    for erp_id, code, country, pct, start, end in rates:
        conn.execute(
            """INSERT INTO core.tax_rates (erp_id, tax_code, country, rate_percent, valid_from,
                   valid_to, source_record_id, row_hash, first_run_id, last_run_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (erp_id) DO NOTHING""",
            (erp_id, code, country, Decimal(pct), start, end, erp_id, _h(erp_id), run, run),
        )


# client index % 20 -> (country, currency, exempt, reverse charge)
_PROFILE_SQL = """
CASE WHEN g % 20 < 10 THEN 'NL' WHEN g % 20 < 13 THEN 'DE' WHEN g % 20 < 15 THEN 'US'
     WHEN g % 20 = 15 THEN 'GB' WHEN g % 20 = 16 THEN 'NL' WHEN g % 20 = 17 THEN 'JP'
     WHEN g % 20 = 18 THEN 'KW' ELSE 'FR' END
"""

_SETUP = [
    # clients, their id map rows, tax profiles and one contract each
    """CREATE TEMP TABLE _bench_clients AS
        SELECT g AS ci, 'acc-' || g AS crm_id, <PROFILE> AS country,
               CASE WHEN g % 20 IN (13, 14) THEN 'USD' WHEN g % 20 = 15 THEN 'GBP'
                    WHEN g % 20 = 17 THEN 'JPY' WHEN g % 20 = 18 THEN 'KWD'
                    ELSE 'EUR' END AS currency,
               g % 20 = 16 AS exempt,
               (g % 20 BETWEEN 10 AND 12) OR g % 20 = 19 AS reverse_charge
        FROM generate_series(0, %(clients)s - 1) g""",
    """INSERT INTO core.id_map (entity_type, crm_id, erp_id)
       SELECT 'client', crm_id, 'erp-' || crm_id FROM _bench_clients""",
    """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country, currency,
           erp_customer_no, source_record_id, row_hash, first_run_id, last_run_id)
       SELECT c.crm_id, m.canonical_id, 'Client ' || c.ci, c.country, c.currency, 'C' || c.ci,
              c.crm_id, md5(c.crm_id), 'bench', 'bench'
       FROM _bench_clients c
       JOIN core.id_map m ON m.entity_type = 'client' AND m.crm_id = c.crm_id""",
    """INSERT INTO core.tax_profiles (crm_account_id, country, vat_id, vat_id_normalized,
           vat_id_valid, tax_exempt, exemption_reason, reverse_charge, source_record_id, row_hash,
           first_run_id, last_run_id)
       SELECT crm_id, country, country || lpad(ci::text, 9, '0'), country || lpad(ci::text, 9, '0'),
              true, exempt, CASE WHEN exempt THEN 'exempt supply' END, reverse_charge, crm_id,
              md5(crm_id), 'bench', 'bench'
       FROM _bench_clients""",
    """INSERT INTO core.contracts (opportunity_id, version, account_id, name, billing_model,
           currency, po_number, project_code, status, payload, first_run_id, last_run_id)
       SELECT 'opp-' || ci, 1, crm_id, 'Contract ' || ci, 'time_and_materials', currency,
              CASE WHEN ci % 3 = 0 THEN 'PO-' || ci END, 'P' || ci, 'complete', '{}'::jsonb,
              'bench', 'bench'
       FROM _bench_clients""",
    # a month of reconciliation output: time (95 %), expenses (5 %), 3 % of it on hold
    """INSERT INTO recon.items (item_key, item_type, source_id, account_id, opportunity_id,
           contract_version, user_psa_id, task_name, role, item_date, period_start, hours,
           quantity, rate, currency, amount, approved, state, reason_code, first_run_id,
           last_run_id)
       SELECT CASE WHEN g % 20 = 7 THEN 'expense:' ELSE 'time:' END || g,
              CASE WHEN g % 20 = 7 THEN 'expense' ELSE 'time' END,
              g::text, c.crm_id, 'opp-' || c.ci, 1, 'u' || (g % 2000),
              (ARRAY['Advisory','Analysis','Implementation','Workshops'])[1 + g % 4],
              (ARRAY['Partner','Manager','Senior Consultant','Consultant','Analyst'])[1 + g % 5],
              DATE '2026-10-01' + (g % 31), DATE '2026-10-01',
              CASE WHEN g % 20 = 7 THEN NULL ELSE 0.25 * (1 + (g + g / 3000) % 32) END,
              CASE WHEN g % 20 = 7 THEN 1 END,
              CASE WHEN g % 20 = 7 THEN NULL
                   ELSE (ARRAY[320, 230, 175, 135, 95])[1 + g % 5]
                        * CASE c.currency WHEN 'USD' THEN 1.08 WHEN 'GBP' THEN 0.86
                                          WHEN 'JPY' THEN 162 WHEN 'KWD' THEN 0.332 ELSE 1 END END,
              c.currency,
              CASE WHEN g % 20 = 7 THEN (10 + (g % 997) * 0.37)
                        * CASE c.currency WHEN 'JPY' THEN 162 WHEN 'KWD' THEN 0.332 ELSE 1 END
                   ELSE 0.25 * (1 + (g + g / 3000) % 32)
                       * (ARRAY[320, 230, 175, 135, 95])[1 + g % 5]
                        * CASE c.currency WHEN 'USD' THEN 1.08 WHEN 'GBP' THEN 0.86
                                          WHEN 'JPY' THEN 162 WHEN 'KWD' THEN 0.332 ELSE 1 END END,
              true,
              CASE WHEN (g / 7) % 100 < 3 THEN 'on_hold' ELSE 'ready' END,
              CASE WHEN (g / 7) % 100 < 3
                   THEN (ARRAY['over_cap', 'missing_receipt',
                               'rate_differs_from_contract'])[1 + g % 3]
              END,
              'bench', 'bench'
       FROM generate_series(1, %(items)s) g
       JOIN _bench_clients c ON c.ci = g % %(clients)s""",
    # a retainer fee per 10th client
    """INSERT INTO recon.items (item_key, item_type, source_id, account_id, opportunity_id,
           contract_version, item_date, period_start, quantity, currency, amount, approved, state,
           first_run_id, last_run_id)
       SELECT 'retainer:' || ci || ':10', 'retainer', ci::text, crm_id, 'opp-' || ci, 1,
              DATE '2026-10-01', DATE '2026-10-01', 1, currency, 5000.005, true, 'ready',
              'bench', 'bench'
       FROM _bench_clients WHERE ci % 10 = 0""",
    "ANALYZE",
]


def _seed(conn: Connection, items: int, clients: int) -> None:
    add_tax_setup(conn)
    add_tax_setup(conn, [("rate-gb-std", "STANDARD", "GB", "20", "2011-01-04", None)])
    for sql in _SETUP:
        # the SQL uses % for modulo: doubled so psycopg does not read it as a placeholder
        sql = sql.replace("<PROFILE>", _PROFILE_SQL).replace(" % ", " %% ")
        conn.execute(sql, {"items": items, "clients": clients})


def run_invoicing_bench(
    *,
    items: int = 1_000_000,
    clients: int = 3_000,
    server_url: str | None = None,
    keep_db: bool = False,
    out: Path | None = None,
) -> dict[str, Any]:
    """Build the month's invoice batch over ``items`` generated recon items; return the report
    (and write it to ``out``, default ``benchmarks/results/invoicing.json``)."""
    from erpsync.invoicing import approval_markdown, build_batch, current_hash
    from erpsync.sync.spec import RunInfo
    from erpsync.warehouse import migrate

    admin = (
        server_url
        or os.environ.get("ERPSYNC_DATABASE_URL")
        or database._embedded_server_url(start=True)
    )
    assert admin, "no PostgreSQL server to run the benchmark on"
    db = database.with_database(admin, f"erpsync_bench_invoicing_{uuid.uuid4().hex[:8]}")
    database.ensure_database(db)
    try:
        migrate.migrate(db)
        with psycopg.connect(db) as conn:
            t0 = time.perf_counter()
            _seed(conn, items, clients)
            conn.commit()
            seed_s = time.perf_counter() - t0
            n_items = scalar(conn, "SELECT count(*) FROM recon.items")
            run = RunInfo(
                dag_id="bench",
                run_id=f"bench-{uuid.uuid4().hex[:8]}",
                task_id="build",
                actor="bench",
            )
            t0 = time.perf_counter()
            result = build_batch(
                conn, run, period_start=PERIOD_START, period_end=PERIOD_END, prepared_by="bench"
            )
            conn.commit()
            build_s = time.perf_counter() - t0
            assert result.batch_id is not None, "the benchmark month has nothing to bill"
            t0 = time.perf_counter()
            chash = current_hash(conn, result.batch_id)
            hash_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            md = approval_markdown(conn, result.batch_id)
            md_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = build_batch(
                conn, run, period_start=PERIOD_START, period_end=PERIOD_END, prepared_by="bench"
            )
            conn.commit()
            rebuild_s = time.perf_counter() - t0
            lines = scalar(
                conn,
                "SELECT count(*) FROM billing.invoice_lines l "
                "JOIN billing.invoices i USING (invoice_id) "
                "WHERE i.batch_id = %s",
                (result.batch_id,),
            )
    finally:
        if not keep_db:
            database.drop_database(db)
    n_inv = len(result.invoices)
    report = {
        "benchmark": "invoice batch build, large firm month",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "recon_items": n_items,
        "items_billed": result.items,
        "clients": clients,
        "invoices": n_inv,
        "invoice_lines": lines,
        "seed_seconds": round(seed_s, 2),
        "build_seconds": round(build_s, 2),
        "invoices_per_second": round(n_inv / build_s, 1) if build_s else None,
        "items_per_second": round(result.items / build_s) if build_s else None,
        "hash_seconds": round(hash_s, 2),
        "approval_markdown_seconds": round(md_s, 2),
        "approval_markdown_chars": len(md),
        "rebuild_unchanged_seconds": round(rebuild_s, 2),
        "rebuild_unchanged": again.unchanged and again.content_hash == chash,
        "anomalies": len(result.anomalies),
        "held": result.held,
        "totals": result.totals,
        "target_seconds": TARGET_SECONDS,
        "within_target": build_s <= TARGET_SECONDS,
        "database_kept": database.redact(db) if keep_db else None,
    }
    out = out or paths.project_dir() / "benchmarks" / "results" / "invoicing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=3_000)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run_invoicing_bench(
        items=args.items, clients=args.clients, keep_db=args.keep_db, out=args.out
    )
    summary = {k: v for k, v in report.items() if k not in ("held", "totals")}
    print(json.dumps(summary, indent=2))
    return 0 if report["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
