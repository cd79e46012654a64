"""Fewer Business Central requests in the invoice push: the check-then-create lookups of a whole
batch in ``$batch`` requests of up to 100 reads.

Which operations share a ``$batch`` and why (the exactly-once rules are those of
:mod:`erpsync.invoicing.push`; none of them changes):

* **The lookups by ``externalDocumentNumber``** (``GET salesInvoices?$filter=
  externalDocumentNumber eq '<doc no>'&$top=2``) of every invoice of the batch that no push has
  sent a create for yet: reads, 100 per ``$batch`` (Business Central's maximum), each answered
  on its own. :func:`prefetch_invoice_lookups` returns a document or ``None`` per document
  number, and nothing for an operation whose answer is not a clean 200 (that invoice is looked
  up alone, as before).
* **Using a prefetched answer is safe only if no create can have happened since it was read.**
  A push records ``create_requests`` (and ``create_unknown_since``) in ``billing.invoice_push``,
  committed, *before* it sends a create, and an invoice is worked on only under its advisory
  lock. So :func:`usable` trusts a prefetched answer only when the push row, read under the
  lock after the prefetch, shows that no create was ever sent for the invoice; otherwise the
  invoice is looked up alone right before any create, exactly as without batches. A document
  created in the ERP by hand between the prefetch and the create is the same race as a document
  created by hand between a single lookup and its create (Business Central has no idempotency
  key; the push never claimed more).
* **Creates stay one request each** (the deep insert ``POST salesInvoices`` with its lines is
  already one atomic request), and each create's answer is recorded before the next one is
  sent: batching creates would put several writes behind one lost answer.
* **Posts stay one request each, followed by a re-read**: ``Microsoft.NAV.post`` answers 204
  and the posted number must be read back. A post and its re-read cannot share a batch without
  relying on execution order, which a JSON batch only promises with ``dependsOn``; Business
  Central's pages do not document ``dependsOn``.
* **The draft check reads header and lines in one request** (``GET salesInvoices({id})?
  $expand=salesInvoiceLines``) instead of a header GET and a lines GET
  (api-reference/v2.0/dynamics-rate-limits.md, item 5: "Use Expand to fetch related entities
  in one request").

How a ``$batch`` counts against the 6,000 requests per 5 minutes is not documented (Microsoft
lists batching among the ways "to reduce the number of calls", dynamics-rate-limits.md, item
3); the sandbox counts it as one request.

Vendor docs:
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/use-odata-batch
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/administration/operational-limits-online
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/dynamics-rate-limits
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from erpsync.connectors import errors
from erpsync.connectors.business_central import BATCH_MAX, odata_quote
from erpsync.invoicing.push_erp import ERP_INVOICES, ErpDoc

__all__ = ["Lookups", "pending_document_numbers", "prefetch_invoice_lookups", "usable"]

log = logging.getLogger(__name__)

#: document number -> the ERP invoice found (None: the ERP has none), for the answers that came
#: back clean; a document number missing from it is looked up alone.
Lookups = dict[str, ErpDoc | None]


def _lookup_url(erp: Any, document_number: str) -> str:
    odata_filter = f"externalDocumentNumber eq {odata_quote(document_number)}"
    return (
        str(erp.batch_url(ERP_INVOICES)) + "?$filter=" + quote(odata_filter, safe="'") + "&$top=2"
    )


def prefetch_invoice_lookups(erp: Any, document_numbers: Sequence[str]) -> Lookups:
    """Look the ``document_numbers`` up in the ERP by ``externalDocumentNumber``, 100 per
    ``$batch``. Never raises a connector error: a batch that fails as a whole (after the
    client's retries: it holds only reads; or the login or company lookup before it) leaves
    its numbers out; so does an operation answered other than 200 or with more
    than one match (the single lookup then raises :class:`~erpsync.connectors.errors.
    AmbiguousMatch` as before)."""
    found: Lookups = {}
    numbers = list(dict.fromkeys(document_numbers))
    for start in range(0, len(numbers), BATCH_MAX):
        chunk = numbers[start : start + BATCH_MAX]
        try:  # a read ahead: whatever fails here, each invoice is still looked up alone
            operations = [{"method": "GET", "url": _lookup_url(erp, n)} for n in chunk]
            answers = erp.batch(operations)
        except errors.ConnectorError as exc:
            log.warning(
                "the $batch of %d invoice lookups failed (%s); they are looked up one by one",
                len(chunk),
                exc,
            )
            continue
        for number, answer in zip(chunk, answers, strict=True):
            body = answer.get("body")
            if answer.get("status") != 200 or not isinstance(body, Mapping):
                continue
            values = body.get("value")
            if not isinstance(values, list) or len(values) > 1:
                continue
            if values and not isinstance(values[0], dict):
                continue
            found[number] = ErpDoc.of(ERP_INVOICES, values[0]) if values else None
    return found


def usable(lookups: Lookups, document_number: str, state: Mapping[str, Any]) -> bool:
    """Whether the prefetched answer for ``document_number`` may stand for the check of
    check-then-create: it exists, and the push row (read under the invoice's lock, after the
    prefetch) shows that no create was ever sent for the invoice."""
    return (
        document_number in lookups
        and not int(state.get("create_requests") or 0)
        and state.get("create_unknown_since") is None
    )


def pending_document_numbers(conn: Any, batch_id: int) -> list[str]:
    """The document numbers of the batch's invoices (not credit notes) for which no push has
    sent a create yet: the ones whose check-then-create lookup is worth prefetching."""
    rows = conn.execute(
        """SELECT i.document_number FROM billing.invoices i
             LEFT JOIN billing.invoice_push p ON p.invoice_id = i.invoice_id
            WHERE i.batch_id = %s AND i.status <> 'rejected'
              AND i.kind = 'invoice'
              AND coalesce(p.step, 'pending') = 'pending'
              AND coalesce(p.create_requests, 0) = 0
            ORDER BY i.invoice_id""",
        (batch_id,),
    ).fetchall()
    return [str(r[0]) for r in rows]
