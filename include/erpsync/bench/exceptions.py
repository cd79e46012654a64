"""Exceptions worklist speed: a large synthetic queue, and the console's worklist functions timed
on it.

:func:`seed_exceptions` writes, in SQL, ``n`` exceptions (default 200,000) over 3,000 clients:
the reasons, entity types and owners the pack's checks raise (reconciliation per time entry,
expense, project and assignment; VAT ids; write-backs; invoices), amounts in five currencies,
first seen over two years, 15 % open, 5 % waived and 80 % resolved, keys and clients in no
particular order relative to the ids (a real queue is not sorted either). :func:`time_worklist`
times each call the worklist and detail pages make (:mod:`erpsync.console.exceptions`).

``python -m erpsync.bench.exceptions [--rows N]`` (a throwaway database; results in
``benchmarks/results/exceptions.json``).

Results (2026-12-06 10:55 UTC, 200,000 exceptions, best of 3, on the shared 2-core machine at
load average 10, so with eight engineers' tests running): every call 1-32 ms except a search
for a one-character prefix ("3": 17 % of the queue) at 181 ms, whose tab counts read 10,001
matches per tab (``lower(entity_key)`` is an expression index, so PostgreSQL cannot count from
the index alone); the slowest page 210 ms, the detail 3 ms, the filter values 4 ms.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from erpsync.bench import scratch

_CLIENTS = """
WITH ids AS (
    INSERT INTO core.id_map (entity_type, crm_id)
    SELECT 'client', 'BENCH' || lpad(g::text, 5, '0') FROM generate_series(1, %(clients)s) g
    RETURNING canonical_id, crm_id
)
INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country, currency,
                          source_record_id, row_hash, first_run_id, last_run_id)
SELECT crm_id, canonical_id,
       (ARRAY['Alpha', 'Beta', 'Gamma', 'Delta', 'Omega', 'Nord', 'Sud', 'Rhein'])
           [1 + (hashtext(crm_id) & 7)] || ' ' || substr(crm_id, 6) || ' '
       || (ARRAY['GmbH', 'AG', 'Ltd', 'BV', 'SAS'])[1 + (hashtext(crm_id || 'x') & 3)],
       'DE', 'EUR', crm_id, 'h', 'bench', 'bench'
  FROM ids
"""

# (reason, entity type, owner) as the pack raises them; hashtext spreads rows over them
_SEED = """
WITH kinds(k, reason, entity_type, owner) AS (VALUES
    (0, 'missing_rate', 'time_entry', 'resource_manager'),
    (1, 'duplicate_entry', 'time_entry', 'timesheet_owner'),
    (2, 'unknown_project', 'time_entry', 'billing_ops'),
    (3, 'missing_receipt', 'expense', 'expense_owner'),
    (4, 'expense_over_policy', 'expense', 'expense_owner'),
    (5, 'over_cap', 'project', 'engagement_manager'),
    (6, 'rate_differs_from_contract', 'user_assignment', 'resource_manager'),
    (7, 'invalid_tax_id', 'client', 'finance ops'),
    (8, 'write_back_failed', 'client', 'finance ops'),
    (9, 'erp_totals_differ', 'invoice', 'finance ops'),
    (10, 'closed_project', 'time_entry', 'project_manager'),
    (11, 'outside_contract_dates', 'time_entry', 'project_manager')
), g AS (
    -- scrambled: unique per row (an odd multiplier is a bijection modulo 2^32), in no order
    SELECT g, hashtext('r' || g) & 2147483647 AS h, hashtext('c' || g) & 2147483647 AS hc,
           (g::bigint * 2654435761) %% 4294967296 AS scrambled
      FROM generate_series(1, %(rows)s) g
), r AS (
    SELECT g.*, k.*,
           CASE WHEN h %% 100 < 15 THEN 'open' WHEN h %% 100 < 20 THEN 'waived'
                ELSE 'resolved' END AS status,
           'BENCH' || lpad((1 + hc %% %(clients)s)::text, 5, '0') AS account_id,
           now() - ((h / 7) %% 730) * interval '1 day' - (h %% 86400) * interval '1 second'
               AS first_seen
      FROM g JOIN kinds k ON k.k = g.h %% 12
)
INSERT INTO ops.exceptions
    (reason_code, entity_type, entity_key, owner, status, detail, amount_at_stake, currency,
     first_seen_run, last_seen_run, first_seen_at, last_seen_at, resolved_at, resolved_by,
     waived_at, waived_by, waive_comment, account_id, client_name, assigned_by, assigned_at)
SELECT r.reason, r.entity_type,
       CASE r.entity_type
            WHEN 'client' THEN CASE WHEN r.reason = 'write_back_failed' THEN 'erp.customer:'
                                    ELSE '' END || r.account_id || '-' || r.g
            WHEN 'invoice' THEN 'INV-' || r.scrambled
            ELSE (3000000000 + r.scrambled)::text END,
       CASE WHEN r.h %% 9 = 0 THEN 'Owner ' || (r.h %% 40) ELSE r.owner END,
       r.status, jsonb_build_object('bench', true),
       CASE WHEN r.entity_type = 'client' THEN NULL ELSE ((r.h %% 2000000) / 100.0)::numeric END,
       CASE WHEN r.entity_type = 'client' THEN NULL
            ELSE (ARRAY['EUR', 'USD', 'GBP', 'CHF', 'JPY'])[1 + r.h %% 5] END,
       'bench', 'bench', r.first_seen, r.first_seen,
       CASE WHEN r.status = 'resolved' THEN r.first_seen + (r.h %% 60) * interval '1 day' END,
       CASE WHEN r.status = 'resolved' THEN 'bench' END,
       CASE WHEN r.status = 'waived' THEN r.first_seen END,
       CASE WHEN r.status = 'waived' THEN 'maria' END,
       CASE WHEN r.status = 'waived' THEN 'accepted' END,
       r.account_id, c.legal_name,
       CASE WHEN r.h %% 9 = 0 THEN 'maria' END, CASE WHEN r.h %% 9 = 0 THEN r.first_seen END
  FROM r JOIN core.clients c ON c.crm_id = r.account_id
"""


def seed_exceptions(conn, *, rows: int = 200_000, clients: int = 3000) -> dict[str, Any]:
    """Write the synthetic queue (see the module doc); returns the counts and seconds."""
    started = time.perf_counter()
    conn.execute(_CLIENTS, {"clients": clients})
    n = conn.execute(_SEED, {"rows": rows, "clients": clients}).rowcount
    conn.commit()
    seeded = time.perf_counter() - started
    conn.execute("VACUUM ANALYZE ops.exceptions")
    conn.execute("ANALYZE core.clients")
    per_status = dict(
        conn.execute("SELECT status, count(*) FROM ops.exceptions GROUP BY 1").fetchall()
    )
    return {"exceptions": n, "per_status": per_status, "seed_seconds": round(seeded, 3)}


def _calls(conn) -> dict[str, Any]:
    from erpsync.console import exceptions as cx

    def page(**query: str):
        return lambda: cx.worklist(conn, cx.Filters.from_query(query))

    sample = conn.execute(
        "SELECT exception_id, entity_key, client_name FROM ops.exceptions"
        " WHERE status = 'open' AND entity_type = 'time_entry' ORDER BY exception_id LIMIT 1"
    ).fetchone()
    exception_id, key, client = sample
    calls: dict[str, Any] = {
        "open_default": page(),
        "open_last_page": page(page=str(cx.MAX_PAGE)),
        "resolved_default": page(status="resolved"),
        "waived_default": page(status="waived"),
    }
    for sort in cx.SORTS:
        for direction in ("asc", "desc"):
            calls[f"open_sort_{sort}_{direction}"] = page(sort=sort, dir=direction)
            calls[f"resolved_sort_{sort}_{direction}"] = page(
                status="resolved", sort=sort, dir=direction
            )
    calls.update(
        {
            "filter_reason": page(reason="over_cap", sort="amount", dir="desc"),
            "filter_entity_type": page(entity_type="invoice", sort="client", dir="asc"),
            "filter_owner_currency": page(owner="resource_manager", currency="CHF"),
            "filter_client_name_part": page(client=client.split()[0], sort="amount"),
            "filter_client_exact": page(client=client, sort="age"),
            "search_exact_key": page(q=key, sort="id", dir="desc"),
            "search_rare_prefix": page(q=key[:7], sort="reason"),
            "search_broad_prefix": page(q="3", sort="client", dir="desc"),
            "search_resolved_prefix": page(status="resolved", q=key[:6], sort="entity"),
            "filter_options_open": lambda: cx.filter_options(conn, "open"),
            "filter_options_resolved": lambda: cx.filter_options(conn, "resolved"),
            "detail": lambda: cx.exception_detail(conn, exception_id),
        }
    )
    return calls


def time_worklist(conn, *, repeat: int = 3) -> dict[str, float]:
    """Milliseconds per call (best of ``repeat``, after one warm-up) of each call the worklist
    and detail pages make, plus ``worst_page``: the slowest of them."""
    out = scratch.best_milliseconds(_calls(conn), repeat)
    out["worst_page"] = max(out.values())
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:  # pragma: no cover - CLI
    import os

    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=3000)
    args = parser.parse_args(argv)
    with scratch.scratch_warehouse("exceptions") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            result = seed_exceptions(conn, rows=args.rows, clients=args.clients)
        with psycopg.connect(url) as conn:
            result["milliseconds"] = time_worklist(conn)
        result["load_average"] = os.getloadavg()[0]
    scratch.write_result("exceptions.json", result)
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
