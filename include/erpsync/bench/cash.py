"""Cash page speed: synthetic payment history for a large firm, and the console's cash
functions timed on it.

:func:`seed_cash_history` writes, in SQL, ``clients x months`` posted invoices (default 3,000 x
24 = 72,000, in EUR, USD, GBP, JPY and KWD) with their Business Central payment status and
dated receivable history as :func:`erpsync.invoicing.payment_status.sync_payment_status` would
have left them (about 10 % unpaid, 10 % partly paid, the rest paid 10-90 days after posting,
the last 45 days all open), then refreshes the summaries the way the sync does.
:func:`time_cash` times each function of :mod:`erpsync.console.cash` the page calls.

``python -m erpsync.bench.cash [--clients N] [--months N]`` (a throwaway database; results in
``benchmarks/results/cash.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import uuid
from typing import Any

from erpsync.bench import scratch

AS_OF = dt.date(2026, 12, 6)

_SEED = """
WITH batch AS (
    INSERT INTO billing.invoice_batches
        (kind, scope_key, status, content_hash, prepared_by, prepared_run_id)
    VALUES ('period', %(tag)s, 'draft', '', 'bench', 'bench') RETURNING batch_id
), g AS (
    SELECT g, g / %(months)s::int AS client, g %% %(months)s::int AS m,
           (ARRAY['EUR', 'USD', 'GBP', 'JPY', 'KWD'])[(g / %(months)s::int) %% 5 + 1] AS currency,
           least((%(first)s::date + ((g %% %(months)s::int) * interval '1 month')
                  + ((g * 7) %% 20) * interval '1 day')::date, %(as_of)s::date) AS posted,
           (1000 + (g * 7919) %% 49000)::numeric AS total
      FROM generate_series(0, %(clients)s::int * %(months)s::int - 1) AS g
)
INSERT INTO billing.invoices
    (batch_id, document_number, invoice_scope, account_id, client_name, currency, invoice_date,
     net, tax, total, status, erp_invoice_id, erp_number, kind)
SELECT batch.batch_id, %(tag)s || '-' || g, %(tag)s || '-' || g, 'bench-' || client,
       'Bench client ' || client, currency, posted, total, 0, total, 'posted',
       md5(%(tag)s || g)::uuid::text, 'PSI-B' || g, 'invoice'
  FROM g CROSS JOIN batch
"""

_STATUS = """
WITH i AS (
    SELECT invoice_id, erp_invoice_id, erp_number, document_number, account_id, client_name,
           currency, invoice_date AS posted, total,
           split_part(document_number, '-', 2)::int AS g
      FROM billing.invoices WHERE document_number LIKE %(tag)s || '-%%'
), s AS (
    SELECT i.*,
           CASE WHEN posted > %(as_of)s::date - 45 OR g %% 10 = 0 THEN 'unpaid'
                WHEN g %% 10 = 1 THEN 'partly' ELSE 'paid' END AS kind,
           least(posted + 10 + g %% 80, %(as_of)s::date) AS paid_on
      FROM i
)
INSERT INTO billing.erp_invoice_status
    (invoice_id, erp_invoice_id, erp_number, document_number, account_id, client_name, currency,
     status, posting_date, due_date, total_incl_tax, remaining_amount, paid_on, last_run_id)
SELECT invoice_id, erp_invoice_id, erp_number, document_number, account_id, client_name,
       currency, CASE WHEN kind = 'paid' THEN 'Paid' ELSE 'Open' END, posted, posted + 30, total,
       CASE kind WHEN 'unpaid' THEN total WHEN 'partly' THEN round(total / 2) ELSE 0 END,
       CASE WHEN kind = 'paid' THEN paid_on END, 'bench'
  FROM s
"""

_HISTORY = """
WITH s AS (
    SELECT invoice_id, posting_date, total_incl_tax AS total, remaining_amount, status,
           least(posting_date + 10 + split_part(document_number, '-', 2)::int %% 80,
                 %(as_of)s::date) AS changed
      FROM billing.erp_invoice_status WHERE document_number LIKE %(tag)s || '-%%'
)
INSERT INTO billing.erp_receivable_history
    (invoice_id, valid_from, valid_to, status, remaining_amount, run_id)
SELECT invoice_id, posting_date, CASE WHEN remaining_amount <> total THEN changed END, 'Open',
       total, 'bench'
  FROM s
UNION ALL
SELECT invoice_id, changed, NULL, status, remaining_amount, 'bench'
  FROM s WHERE remaining_amount <> total
"""


def seed_cash_history(
    conn, *, clients: int = 3000, months: int = 24, as_of: dt.date = AS_OF
) -> dict[str, Any]:
    """Write the synthetic payment history (see the module doc) and refresh the summaries;
    returns the counts and seconds."""
    from erpsync.console import cash

    tag = f"BENCHCASH{uuid.uuid4().hex[:6]}"
    first = cash._add_months(as_of.replace(day=1), -(months - 1))
    params = {"tag": tag, "months": months, "clients": clients, "first": first, "as_of": as_of}
    started = time.perf_counter()
    invoices = conn.execute(_SEED, params).rowcount
    conn.execute(_STATUS, params)
    periods = conn.execute(_HISTORY, params).rowcount
    conn.execute("ANALYZE billing.erp_invoice_status")
    conn.execute("ANALYZE billing.erp_receivable_history")
    seeded = time.perf_counter() - started
    started = time.perf_counter()
    cash.refresh_dso_months(conn, first=first, through=as_of)
    cash.refresh_status_months(conn, None)
    refreshed = time.perf_counter() - started
    started = time.perf_counter()
    cash.refresh_dso_months(conn, first=as_of, through=as_of)  # a quiet night
    cash.refresh_status_months(conn, [as_of])
    nightly = time.perf_counter() - started
    return {
        "invoices": invoices,
        "history_periods": periods,
        "seed_seconds": round(seeded, 3),
        "full_refresh_seconds": round(refreshed, 3),
        "nightly_refresh_seconds": round(nightly, 3),
    }


def time_cash(conn, *, as_of: dt.date = AS_OF, repeat: int = 3) -> dict[str, float]:
    """Milliseconds per call (best of ``repeat``, after one warm-up) of each function the
    cash section of the Insights page calls."""
    from erpsync.console import cash

    calls = {
        "dso_by_month_12": lambda: cash.dso_by_month(conn, months=12, as_of=as_of),
        "overdue_by_client": lambda: cash.overdue_by_client(conn, as_of=as_of),
        "overdue_totals": lambda: cash.overdue_totals(conn, as_of=as_of),
        "payment_status_summary": lambda: cash.payment_status_summary(conn, as_of=as_of),
        "cash_context": lambda: cash.cash_context(conn, as_of=as_of),
    }
    return scratch.best_milliseconds(calls, repeat)


def main(argv: list[str] | None = None) -> dict[str, Any]:  # pragma: no cover - CLI
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--months", type=int, default=24)
    args = parser.parse_args(argv)
    with scratch.scratch_warehouse("cash") as url:
        with psycopg.connect(url) as conn:
            result = seed_cash_history(conn, clients=args.clients, months=args.months)
        with psycopg.connect(url) as conn:
            result["milliseconds"] = time_cash(conn)
    scratch.write_result("cash.json", result)
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
