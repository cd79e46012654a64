"""The dated history of Business Central VAT rates, kept by erpsync.

Business Central keeps the VAT % in VAT Posting Setup (page 472, one row per VAT Business
Posting Group x VAT Product Posting Group) without validity dates; a rate change overwrites the
percentage (or is made with the VAT Rate Change tool and new groups). Billing needs the rate in
force on an invoice date, so after each ``tax_rates`` sync (``core.vat_posting_setup`` merged)
:func:`date_vat_rates` brings ``core.tax_rates`` up to date in the same transaction:

* a combination seen for the first time opens a period from the sync date; on the very first
  sync (no derived period yet) from ``ERPSYNC_TAX_RATES_SINCE`` (default 2000-01-01: set it to
  the date the tenant's current rates took effect);
* a changed percentage closes the open period on the day before the sync date and opens a new
  one from the sync date (a second change on the same day corrects that day's period);
* a combination deleted or blocked in BC closes its open period;
* an unchanged combination changes nothing.

https://learn.microsoft.com/en-us/dynamics365/business-central/finance-setup-vat
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from erpsync.sync.spec import RunInfo

__all__ = ["INITIAL_DATE_ENV", "SOURCE_PREFIX", "date_vat_rates", "initial_date"]

INITIAL_DATE_ENV = "ERPSYNC_TAX_RATES_SINCE"
DEFAULT_INITIAL_DATE = dt.date(2000, 1, 1)
#: ``source_record_id`` prefix of the periods derived here (hand-entered rows are left alone).
SOURCE_PREFIX = "VATPostingSetup:"


def initial_date() -> dt.date:
    raw = os.environ.get(INITIAL_DATE_ENV, "").strip()
    return dt.date.fromisoformat(raw) if raw else DEFAULT_INITIAL_DATE


def _hash(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


_CURRENT = """
SELECT vat_bus_posting_group, tax_code, rate_percent FROM core.vat_posting_setup
 WHERE deleted_at IS NULL AND NOT blocked
"""

_OPEN = """
SELECT erp_id, vat_bus_posting_group, tax_code, rate_percent, valid_from FROM core.tax_rates
 WHERE source_record_id LIKE %s AND valid_to IS NULL AND deleted_at IS NULL
"""


def date_vat_rates(
    conn: psycopg.Connection[Any],
    run: RunInfo,
    day: dt.date | None = None,
    since: dt.date | None = None,
) -> dict[str, int]:
    """Bring ``core.tax_rates`` in line with ``core.vat_posting_setup`` as of ``day`` (default:
    today, UTC); returns the counts ``opened``, ``closed``, ``corrected``."""
    day = day or dt.datetime.now(dt.UTC).date()
    like = SOURCE_PREFIX + "%"
    exists = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM core.tax_rates WHERE source_record_id LIKE %s)", (like,)
    ).fetchone()
    first = not (exists and exists[0])
    start = (since or initial_date()) if first else day
    current = {(b, p): pct for b, p, pct in conn.execute(_CURRENT).fetchall()}
    opened = closed = corrected = 0
    have: set[tuple[str, str]] = set()
    for erp_id, bus, prod, pct, valid_from in conn.execute(_OPEN, (like,)).fetchall():
        key = (bus, prod)
        now_pct = current.get(key)
        if now_pct is not None and now_pct == pct:
            have.add(key)
            continue
        if valid_from >= day:  # opened today: correct (or drop) today's period
            if now_pct is None:
                conn.execute(
                    "UPDATE core.tax_rates SET deleted_at = now(), last_run_id = %s,"
                    " updated_at = now() WHERE erp_id = %s",
                    (run.run_id, erp_id),
                )
            else:
                conn.execute(
                    "UPDATE core.tax_rates SET rate_percent = %s, row_hash = %s,"
                    " last_run_id = %s, updated_at = now() WHERE erp_id = %s",
                    (now_pct, _hash(bus, prod, now_pct, valid_from), run.run_id, erp_id),
                )
                have.add(key)
            corrected += 1
            continue
        conn.execute(
            "UPDATE core.tax_rates SET valid_to = %s, last_run_id = %s, updated_at = now()"
            " WHERE erp_id = %s",
            (day - dt.timedelta(days=1), run.run_id, erp_id),
        )
        closed += 1
    for (bus, prod), pct in sorted(current.items()):
        if (bus, prod) in have:
            continue
        erp_id = f"{bus}|{prod}|{start.isoformat()}"
        conn.execute(
            """INSERT INTO core.tax_rates (erp_id, tax_code, country, vat_bus_posting_group,
                   rate_percent, valid_from, valid_to, source_record_id, row_hash,
                   first_run_id, last_run_id)
               VALUES (%s, %s, '', %s, %s, %s, NULL, %s, %s, %s, %s)
               ON CONFLICT (erp_id) DO UPDATE SET rate_percent = EXCLUDED.rate_percent,
                   valid_to = NULL, deleted_at = NULL, row_hash = EXCLUDED.row_hash,
                   last_run_id = EXCLUDED.last_run_id, updated_at = now()""",
            (
                erp_id,
                prod,
                bus,
                pct,
                start,
                f"{SOURCE_PREFIX}{bus}|{prod}",
                _hash(bus, prod, pct, start),
                run.run_id,
                run.run_id,
            ),
        )
        opened += 1
    return {"opened": opened, "closed": closed, "corrected": corrected}
