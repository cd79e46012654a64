"""Payment status of the invoices erpsync pushed, read back from Business Central.

The ERP owns payment status (docs DESIGN: "invoices, invoice numbers, posting, tax, payment
status: ERP"). :func:`sync_payment_status` reads the documented salesInvoice properties
``status`` (" ", Draft, In Review, Open, Paid, Canceled, Corrective), ``remainingAmount``,
``dueDate``, ``postingDate``, ``totalAmountIncludingTax`` and ``lastModifiedDateTime``
(https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salesinvoice)
into ``billing.erp_invoice_status`` and the dated ``billing.erp_receivable_history``
(migration 0026, which states the DSO formula). Three reads, each with ``$select`` of those
fields only and server-driven paging:

1. **Incremental** (``$filter=lastModifiedDateTime ge <watermark>``, the boundary dedupe of
   :mod:`erpsync.connectors.cursors`): new postings and status changes (Paid, Canceled,
   Corrective).
2. **Open invoices** (``$filter=status eq 'Open' and postingDate ge <the earliest posting date
   of ours that still owes>``), only while the warehouse holds such an invoice: a *partial*
   payment changes ``remainingAmount`` without moving ``lastModifiedDateTime``.
   ``remainingAmount`` is computed when the page is read (``GetRemainingAmount`` in
   Apps/W1/APIV2/app/src/pages/APIV2SalesInvoices.Page.al, microsoft/ALAppExtensions), and the
   Base Application's codeunit 5477 "Sales Invoice Aggregator" modifies the record behind the
   API only when the status changes (``UpdateStatusIfChanged``), so an incremental read alone
   would never see a part-payment.
   Filtering open invoices by status is Microsoft's own example: ``salesInvoices?$filter=
   status eq 'Open' and ...`` ("all open (unpaid) sales invoices",
   https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/developer/devenv-connect-apps-filtering);
   ``$select`` of the needed fields is what Microsoft recommends for OData clients
   (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/odata-client-performance).
3. **By id** (``GET salesInvoices({id})``) for a pushed invoice neither read returned (pushed
   before the first run with a watermark past its posting): a handful, once each.

Everything lands in one transaction with the new watermark (``ops.sync_watermarks``, entity
``invoice_payment_status``) and one ``ops.run_stats`` row: a failed run changes nothing. A
second run over an unchanged ERP writes no history (proved by the integration test).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from erpsync.connectors.cursors import (
    BoundaryDedupe,
    Watermark,
    bc_incremental_filter,
    parse_modstamp,
)
from erpsync.sync import requeue

__all__ = [
    "ENTITY",
    "SELECT",
    "PaymentSyncStats",
    "sync_payment_status",
]

ENTITY = "invoice_payment_status"
ERP_ENTITY = "salesInvoices"
#: The documented salesInvoice properties read ($select); nothing else.
SELECT = (
    "id",
    "number",
    "externalDocumentNumber",
    "invoiceDate",
    "postingDate",
    "dueDate",
    "totalAmountIncludingTax",
    "remainingAmount",
    "status",
    "lastModifiedDateTime",
)
#: Every documented salesInvoice ``status`` (NAV.invoiceEntityAggregateStatus).
STATUSES = frozenset({" ", "Draft", "In Review", "Open", "Paid", "Canceled", "Corrective"})
#: Statuses after posting.
POSTED_STATUSES = frozenset({"Open", "Paid", "Canceled", "Corrective"})
EMPTY_DATE = "0001-01-01"  # BC's blank date


@dataclass
class PaymentSyncStats:
    """What one run did (counts of pushed invoices unless named otherwise)."""

    run_id: str
    day: str
    read: int = 0  # ERP records received, all reads
    matched: int = 0  # of them, invoices erpsync pushed
    new: int = 0  # first status row
    changed: int = 0  # remaining amount or status differs from the last sync
    unchanged: int = 0
    history_rows: int = 0  # receivable periods opened
    fetched_by_id: int = 0
    not_found: int = 0  # pushed, but the ERP has no such invoice
    quarantined: int = 0  # records with a value outside the documented contract
    open_read: bool = False
    watermark: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _date(value: Any) -> dt.date | None:
    if not value or str(value) == EMPTY_DATE:
        return None
    return dt.date.fromisoformat(str(value)[:10])


def _money(value: Any) -> Decimal:
    # JSON numbers arrive as float or int from httpx; str() keeps the digits BC sent
    return Decimal(str(value if value is not None else 0))


_PUSHED = """
SELECT i.invoice_id, i.erp_invoice_id, i.erp_number, i.document_number, i.account_id,
       i.client_name, i.currency, i.invoice_date,
       s.status, s.remaining_amount, s.invoice_id IS NOT NULL AS known
  FROM billing.invoices i
  LEFT JOIN billing.erp_invoice_status s ON s.invoice_id = i.invoice_id
 WHERE i.kind = 'invoice' AND i.erp_invoice_id IS NOT NULL
   AND i.status IN ('posted', 'billed_back')
"""


def _load_watermark(conn) -> Watermark:
    row = conn.execute(
        """SELECT cursor_ts, cursor_state FROM ops.sync_watermarks
            WHERE source_system = 'erp' AND entity = %s FOR UPDATE""",
        (ENTITY,),
    ).fetchone()
    if row is None:
        return Watermark()
    return Watermark.from_state(row[0], row[1])


def _save_watermark(conn, watermark: Watermark, run_id: str) -> None:
    conn.execute(
        """INSERT INTO ops.sync_watermarks
               (source_system, entity, cursor_ts, cursor_state, updated_at, updated_by_run)
           VALUES ('erp', %s, %s, %s, now(), %s)
           ON CONFLICT (source_system, entity) DO UPDATE SET
               cursor_ts = EXCLUDED.cursor_ts, cursor_state = EXCLUDED.cursor_state,
               updated_at = now(), updated_by_run = EXCLUDED.updated_by_run""",
        (ENTITY, watermark.modstamp, json.dumps(watermark.to_state()), run_id),
    )


def _keep_latest(found: dict[str, Mapping[str, Any]], records: Iterable[Mapping]) -> int:
    """Add ``records`` to ``found`` by id; a later read of the same invoice wins unless its
    ``lastModifiedDateTime`` is older. Returns how many records were read."""
    n = 0
    for record in records:
        n += 1
        rid = str(record.get("id") or "").lower()
        if not rid:
            continue
        before = found.get(rid)
        if before is not None:
            old = parse_modstamp(before.get("lastModifiedDateTime"))
            new = parse_modstamp(record.get("lastModifiedDateTime"))
            if old is not None and new is not None and new < old:
                continue
        found[rid] = record
    return n


def sync_payment_status(
    conn,
    erp,
    run,
    *,
    day: dt.date | None = None,
    page_size: int = 1000,
) -> PaymentSyncStats:
    """Read payment status from the ERP (``erp``: a
    :class:`~erpsync.connectors.business_central.BusinessCentralClient`) into the warehouse on
    the open psycopg connection ``conn``, as of ``day`` (the sync date that dates a changed
    remaining amount; default today, UTC). ``run`` is a :class:`~erpsync.sync.spec.RunInfo`.
    The caller commits (``conn`` in a transaction) or rolls back."""
    day = day or dt.datetime.now(dt.UTC).date()
    stats = PaymentSyncStats(run_id=run.run_id, day=day.isoformat())
    pushed: dict[str, tuple] = {}
    for row in conn.execute(_PUSHED).fetchall():
        pushed[str(row[1]).lower()] = row
    watermark = _load_watermark(conn)
    found: dict[str, Mapping[str, Any]] = {}

    # 1. incremental: postings and status changes since the watermark
    dedupe = BoundaryDedupe(watermark, modstamp_field="lastModifiedDateTime")
    pages = erp.iter_pages(
        ERP_ENTITY,
        filter=bc_incremental_filter(watermark),
        select=SELECT,
        page_size=page_size,
    )
    for page in dedupe.pages(pages):
        _keep_latest(found, (r for r in page if str(r.get("id", "")).lower() in pushed))
    stats.read += dedupe.read

    # 2. open invoices: part-payments do not move lastModifiedDateTime. Only from the earliest
    #    posting date among ours that still owe (older open invoices in the ERP are not ours)
    since = conn.execute(
        """SELECT min(posting_date) FROM billing.erp_invoice_status
            WHERE status = 'Open' AND remaining_amount <> 0"""
    ).fetchone()[0]
    if since is not None:
        stats.open_read = True
        open_filter = f"status eq 'Open' and postingDate ge {since.isoformat()}"
        for page in erp.iter_pages(
            ERP_ENTITY, filter=open_filter, select=SELECT, page_size=page_size
        ):
            stats.read += len(page)
            _keep_latest(found, (r for r in page if str(r.get("id", "")).lower() in pushed))

    # 3. pushed invoices no read returned and never synced, and quarantined ones a data
    #    engineer requeued in the console (erpsync.sync.requeue): one GET each
    requests = requeue.pending(conn, "erp", ENTITY)
    requeued = set(requeue.keys(requests))
    for rid, row in pushed.items():
        if rid in found or (row[-1] and rid not in requeued):
            continue
        record = erp.get(ERP_ENTITY, rid)
        stats.fetched_by_id += 1
        if record is None:
            stats.not_found += 1
            continue
        stats.read += 1
        found[rid] = {k: record.get(k) for k in SELECT}

    stats.matched = len(found)
    history_from: list[dt.date] = []  # earliest date whose receivables this run changed
    status_months: set[dt.date] = set()  # posting months whose payment states changed
    bad = {rid: reason for rid, record in found.items() if (reason := _invalid(record))}
    _quarantine(conn, run, {rid: (bad[rid], found[rid]) for rid in bad})
    stats.quarantined = len(bad)
    for rid, record in found.items():
        if rid in bad:
            continue
        touched, changed_from = _apply(conn, pushed[rid], record, day, run.run_id, stats)
        if touched is not None:
            status_months.add(touched)
        if changed_from is not None:
            history_from.append(changed_from)
    _refresh_summaries(conn, day, history_from, status_months)
    _resolve_quarantine(conn, run, [rid for rid in found if rid not in bad])
    requeue.settle(
        conn,
        system="erp",
        entity=ENTITY,
        run=run,
        requests=requests,
        outcomes={rid: "quarantined" if rid in bad else "loaded" for rid in found},
    )

    new_watermark = dedupe.next_watermark()
    _save_watermark(conn, new_watermark, run.run_id)
    stats.watermark = new_watermark.modstamp.isoformat() if new_watermark.modstamp else None
    _record_run(conn, run, stats)
    return stats


def _invalid(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(reason_code, detail)`` when a value is outside salesInvoice's documented contract."""
    status = record.get("status")
    if status not in STATUSES:
        return "invalid_status", f"status {status!r} is none of {sorted(STATUSES)}"
    for name in ("totalAmountIncludingTax", "remainingAmount"):
        try:
            if not _money(record.get(name)).is_finite():
                raise ValueError(name)
        except (ArithmeticError, ValueError):
            return "invalid_amount", f"{name} {record.get(name)!r} is not a decimal amount"
    for name in ("postingDate", "invoiceDate", "dueDate"):
        try:
            _date(record.get(name))
        except ValueError:
            return "invalid_date", f"{name} {record.get(name)!r} is not a date"
    return None


def _quarantine(conn, run, bad: Mapping[str, tuple[tuple[str, str], Mapping]]) -> None:
    """One open ``ops.quarantine`` row per record and reason (a rerun refreshes it), as the
    sync engine keeps them; the sync-health page lists them."""
    for rid, ((reason, detail), record) in bad.items():
        conn.execute(
            """INSERT INTO ops.quarantine (run_id, source_system, entity, record_key, reason_code,
                   reason_detail, payload)
               VALUES (%s, 'erp', %s, %s, %s, %s, %s::jsonb)
               ON CONFLICT (source_system, entity, record_key, reason_code)
                   WHERE resolved_at IS NULL
               DO UPDATE SET run_id = EXCLUDED.run_id, reason_detail = EXCLUDED.reason_detail,
                   payload = EXCLUDED.payload, quarantined_at = now()""",
            (run.run_id, ENTITY, rid, reason, detail, json.dumps(record, default=str)),
        )


def _resolve_quarantine(conn, run, good: list[str]) -> None:
    """Close the open quarantine rows of records this run read and loaded."""
    if good:
        conn.execute(
            """UPDATE ops.quarantine SET resolved_at = now(), resolved_by_run = %s
                WHERE source_system = 'erp' AND entity = %s AND resolved_at IS NULL
                  AND record_key = ANY(%s)""",
            (run.run_id, ENTITY, good),
        )


def _apply(
    conn, pushed_row: tuple, record: Mapping[str, Any], day: dt.date, run_id: str, stats
) -> tuple[dt.date | None, dt.date | None]:
    """Upsert one invoice's status row and, when what it owes changed, its history. Returns
    the posting month if its payment state changed, and the first date whose receivables
    changed (None, None when nothing did)."""
    (
        invoice_id,
        erp_id,
        erp_number,
        document_number,
        account_id,
        client_name,
        currency,
        invoice_date,
        old_status,
        old_remaining,
        known,
    ) = pushed_row
    status = str(record.get("status"))
    total = _money(record.get("totalAmountIncludingTax"))
    remaining = _money(record.get("remainingAmount"))
    posting = _date(record.get("postingDate")) or _date(record.get("invoiceDate")) or invoice_date
    due = _date(record.get("dueDate"))
    modified = parse_modstamp(record.get("lastModifiedDateTime"))
    paid_on = day if status == "Paid" else None
    conn.execute(
        """INSERT INTO billing.erp_invoice_status AS s
               (invoice_id, erp_invoice_id, erp_number, document_number, account_id, client_name,
                currency, status, posting_date, due_date, total_incl_tax, remaining_amount,
                erp_last_modified, paid_on, last_run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (invoice_id) DO UPDATE SET
               erp_number = EXCLUDED.erp_number, status = EXCLUDED.status,
               posting_date = EXCLUDED.posting_date, due_date = EXCLUDED.due_date,
               total_incl_tax = EXCLUDED.total_incl_tax,
               remaining_amount = EXCLUDED.remaining_amount,
               erp_last_modified = EXCLUDED.erp_last_modified, synced_at = now(),
               paid_on = CASE WHEN EXCLUDED.status = 'Paid'
                              THEN coalesce(s.paid_on, EXCLUDED.paid_on) END,
               last_run_id = EXCLUDED.last_run_id""",
        (
            invoice_id,
            erp_id,
            record.get("number") or erp_number,
            document_number,
            account_id,
            client_name,
            currency,
            status,
            posting,
            due,
            total,
            remaining,
            modified,
            paid_on,
            run_id,
        ),
    )
    touched = (
        posting.replace(day=1)
        if not known
        or (old_status, old_remaining)
        != (
            status,
            remaining,
        )
        else None
    )
    if status not in POSTED_STATUSES:  # a draft owes nothing yet
        stats.unchanged += 1
        return touched, None
    current = conn.execute(
        """SELECT valid_from, status, remaining_amount FROM billing.erp_receivable_history
            WHERE invoice_id = %s AND valid_to IS NULL""",
        (invoice_id,),
    ).fetchone()
    if current is None:
        stats.new += 1
        # a posted invoice owes its total from its posting date (BC sets remainingAmount to
        # the amount including VAT on posting); what this sync saw applies from its date
        _open_period(conn, invoice_id, posting, "Open", total, run_id, stats)
        if (status, remaining) != ("Open", total):
            _change(conn, invoice_id, posting, day, status, remaining, run_id, stats)
        return touched or posting.replace(day=1), posting
    valid_from, period_status, period_remaining = current
    if (period_status, period_remaining) == (status, remaining):
        stats.unchanged += 1
        return touched, None
    stats.changed += 1
    _change(conn, invoice_id, valid_from, day, status, remaining, run_id, stats)
    return touched or posting.replace(day=1), min(day, valid_from)


def _refresh_summaries(
    conn, day: dt.date, history_from: list[dt.date], status_months: set[dt.date]
) -> None:
    """Bring the console's cash summaries (migration 0026) up to date for what this run
    changed, and roll them to ``day``'s month even when nothing changed."""
    from erpsync.console import cash

    previous = cash.refreshed_through(conn)
    if previous is None:  # first refresh: everything synced so far
        earliest = conn.execute(
            "SELECT min(posting_date) FROM billing.erp_invoice_status"
        ).fetchone()[0]
        cash.refresh_dso_months(conn, first=earliest or day, through=day)
        cash.refresh_status_months(conn, None)
        return
    through = max(day, previous)
    cash.refresh_dso_months(conn, first=min([*history_from, previous, through]), through=through)
    cash.refresh_status_months(conn, status_months)


def _open_period(conn, invoice_id, start, status, remaining, run_id, stats) -> None:
    conn.execute(
        """INSERT INTO billing.erp_receivable_history
               (invoice_id, valid_from, status, remaining_amount, run_id)
           VALUES (%s, %s, %s, %s, %s)""",
        (invoice_id, start, status, remaining, run_id),
    )
    stats.history_rows += 1


def _change(conn, invoice_id, open_from, day, status, remaining, run_id, stats) -> None:
    """Close the open period the day ``day`` starts and open one with the new values; a
    second change on the same day (or a sync dated before the period began) corrects the
    open period in place."""
    if day <= open_from:
        conn.execute(
            """UPDATE billing.erp_receivable_history
                  SET status = %s, remaining_amount = %s, observed_at = now(), run_id = %s
                WHERE invoice_id = %s AND valid_to IS NULL""",
            (status, remaining, run_id, invoice_id),
        )
        return
    conn.execute(
        """UPDATE billing.erp_receivable_history SET valid_to = %s
            WHERE invoice_id = %s AND valid_to IS NULL""",
        (day, invoice_id),
    )
    _open_period(conn, invoice_id, day, status, remaining, run_id, stats)


def _record_run(conn, run, stats: PaymentSyncStats) -> None:
    conn.execute(
        """INSERT INTO ops.run_stats (dag_id, run_id, task_id, try_number, entity, status,
                                      finished_at, records_read, records_loaded,
                                      records_unchanged, records_quarantined, detail)
           VALUES (%s, %s, %s, %s, %s, 'success', now(), %s, %s, %s, %s, %s)""",
        (
            run.dag_id,
            run.run_id,
            run.task_id,
            run.try_number,
            ENTITY,
            stats.read,
            stats.new + stats.changed,
            stats.unchanged,
            stats.quarantined,
            json.dumps(stats.as_dict()),
        ),
    )
