"""The content hash of an invoice batch: SHA-256 over its canonical content.

Canonical content = the batch's kind and period, and per invoice (ordered by document number)
its number, parties, contract, currency, PO, dates, net/tax/total, tax rows and every line
(number, kind, description, hours, quantity, unit price, net, tax code and rate, the sorted
item keys). Numbers are written without trailing zeros (``trim_scale``) so the storage scale
never changes the hash. Statuses, ERP ids, anomalies and timestamps are not content: pushing
and posting do not change the hash, any change to what is billed does.

The hashed net, tax and total are the amounts the ERP will post: they are computed by Business
Central's VAT rule (erpsync.invoicing.pricing), and the push posts a document only when the
ERP draft's ``totalAmountExcludingTax``, ``totalTaxAmount`` and ``totalAmountIncludingTax``
equal them (erpsync.invoicing.push, "The ERP is the control point for totals"), so an approval
for this hash is an approval of what the client is invoiced.

Computed in SQL so a batch of a million items hashes without leaving the database.
"""

from __future__ import annotations

from erpsync.invoicing.common import Connection

HASH_VERSION = "erpsync-invoice-batch-v1"

_HASH_SQL = """
WITH inv AS (
    SELECT * FROM billing.invoices WHERE batch_id = %(batch)s
), l AS (
    SELECT x.invoice_id,
           string_agg(concat_ws('|', x.line_no, x.kind, x.description,
                                coalesce(trim_scale(x.hours)::text, ''),
                                trim_scale(x.quantity)::text, trim_scale(x.unit_price)::text,
                                trim_scale(x.net_amount)::text, x.tax_code,
                                trim_scale(x.tax_rate)::text,
                                coalesce(x.credit_of_line_no::text, ''),
                                array_to_string(x.item_keys, ',')),
                      E'\\n' ORDER BY x.line_no) AS body
    FROM billing.invoice_lines x JOIN inv USING (invoice_id)
    GROUP BY x.invoice_id
), t AS (
    SELECT x.invoice_id,
           string_agg(concat_ws('|', x.tax_code, trim_scale(x.rate)::text, trim_scale(x.base)::text,
                                trim_scale(x.amount)::text, coalesce(x.legal_note, '')),
                      E'\\n' ORDER BY x.tax_code) AS body
    FROM billing.invoice_taxes x JOIN inv USING (invoice_id)
    GROUP BY x.invoice_id
), per_invoice AS (
    SELECT concat_ws('|', coalesce(i.document_number, ''), i.kind, i.account_id,
                     coalesce(i.opportunity_id, ''), coalesce(i.version::text, ''), i.currency,
                     coalesce(i.po_number, ''), i.invoice_date::text,
                     coalesce(i.credit_of_invoice_id::text, ''), trim_scale(i.net)::text,
                     trim_scale(i.tax)::text, trim_scale(i.total)::text,
                     encode(sha256(convert_to(coalesce(t.body, ''), 'UTF8')), 'hex'),
                     encode(sha256(convert_to(coalesce(l.body, ''), 'UTF8')), 'hex')) AS body,
           coalesce(i.document_number, '') AS doc, i.invoice_scope
    FROM inv i LEFT JOIN l USING (invoice_id) LEFT JOIN t USING (invoice_id)
)
SELECT encode(sha256(convert_to(
    concat_ws(E'\\n', %(version)s::text, b.kind, coalesce(b.period_start::text, ''),
              coalesce(b.period_end::text, ''),
              (SELECT string_agg(p.body, E'\\n' ORDER BY p.doc, p.invoice_scope)
               FROM per_invoice p)),
    'UTF8')), 'hex')
FROM billing.invoice_batches b
WHERE b.batch_id = %(batch)s
"""


def compute_hash(conn: Connection, batch_id: int) -> str | None:
    """The hash of the batch's content as stored now (None if there is no such batch)."""
    row = conn.execute(_HASH_SQL, {"batch": batch_id, "version": HASH_VERSION}).fetchone()
    return None if row is None else str(row[0])


def current_hash(conn: Connection, batch_id: int) -> str:
    """The hash of batch ``batch_id`` as it is in the warehouse now (recomputed, not the stored
    ``content_hash``): compare it with ``decided_hash`` before pushing."""
    value = compute_hash(conn, batch_id)
    if value is None:
        from erpsync.invoicing.errors import BatchStateError

        raise BatchStateError(f"invoice batch {batch_id} does not exist")
    return value
