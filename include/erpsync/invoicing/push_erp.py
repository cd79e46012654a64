"""The Business Central side of the invoice push: document bodies, lookups and bound actions.

Built on :class:`erpsync.connectors.business_central.BusinessCentralClient` and its request loop
(timeouts, 429/5xx retries for reads, no automatic retry of a POST once sent). What this module
adds is specific to sales documents:

* ``invoice_body``: a warehouse invoice as a ``salesInvoices`` deep insert (header plus
  ``salesInvoiceLines``), ``externalDocumentNumber`` = the invoice's stable document number;
  each line's ``sequence`` is ``line_no x 10000`` so the lines of a draft can be compared with
  the warehouse lines one to one.
* ``find_invoice`` (``$filter=externalDocumentNumber eq '...'``) and ``find_credit_memo``
  (``$filter=invoiceId eq <guid>``): the check of check-then-create.
* ``post`` (``Microsoft.NAV.post``) and ``make_corrective_credit_memo``
  (``Microsoft.NAV.makeCorrectiveCreditMemo``), bound actions answered 204 with no body.

Business Central has no idempotency key (docs/reference/vendor-apis.md, "Business Central"):
the callers in :mod:`erpsync.invoicing.push` look the document up before any create and again
after any create whose answer was lost.

Vendor docs: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salesinvoice
and .../api/dynamics_salesinvoice_post, .../api/dynamics_salesinvoice_makecorrectivecreditmemo
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from erpsync import money
from erpsync.connectors.business_central import odata_quote

__all__ = [
    "DESCRIPTION_MAX",
    "ERP_INVOICES",
    "ERP_MEMOS",
    "REVENUE_ACCOUNT",
    "ErpDoc",
    "LineSpec",
    "add_line",
    "credit_memo_body",
    "draft_lines",
    "find_credit_memo",
    "find_credit_memo_by_document",
    "find_invoice",
    "get_doc",
    "invoice_body",
    "line_specs",
    "list_lines",
    "make_corrective_credit_memo",
    "post",
]

ERP_INVOICES = "salesInvoices"
ERP_MEMOS = "salesCreditMemos"
#: The G/L account invoice lines are posted to (``lineType`` Account), as the firm's invoices.
#: Account numbers differ between tenants and localizations: ``ERPSYNC_BC_REVENUE_ACCOUNT``
#: names the tenant's (a posting account with Direct Posting).
REVENUE_ACCOUNT = "8000"
#: Unit of Measure code of hour-based lines (``ERPSYNC_BC_HOUR_UNIT`` for the tenant's code).
HOUR_UNIT = "HOUR"


def revenue_account() -> str:
    return (os.environ.get("ERPSYNC_BC_REVENUE_ACCOUNT") or REVENUE_ACCOUNT).strip()


def hour_unit() -> str:
    return (os.environ.get("ERPSYNC_BC_HOUR_UNIT") or HOUR_UNIT).strip()


#: Business Central's ``description`` field holds 100 characters.
DESCRIPTION_MAX = 100
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def dec(value: Any) -> Decimal:
    """A JSON number from the ERP as an exact Decimal (floats via their shortest repr)."""
    if value is None or value == "":
        return Decimal(0)
    return Decimal(str(value))


def _jnum(value: Decimal) -> float | int:
    """A Decimal as a JSON number that the ERP reads back as exactly the same value."""
    if value == value.to_integral_value():
        return int(value)
    out = float(value)
    if Decimal(repr(out)) != value:
        raise ValueError(f"{value} cannot be sent as an exact JSON number")
    return out


@dataclass(frozen=True)
class ErpDoc:
    """The parts of an ERP sales document the push needs."""

    entity: str
    id: str
    number: str
    status: str
    net: Decimal
    tax: Decimal
    total: Decimal
    external_document_number: str
    raw: dict[str, Any]

    @property
    def is_draft(self) -> bool:
        return self.status == "Draft"

    @classmethod
    def of(cls, entity: str, body: dict[str, Any]) -> ErpDoc:
        return cls(
            entity=entity,
            id=str(body["id"]),
            number=str(body.get("number") or ""),
            status=str(body.get("status") or ""),
            net=dec(body.get("totalAmountExcludingTax")),
            tax=dec(body.get("totalTaxAmount")),
            total=dec(body.get("totalAmountIncludingTax")),
            external_document_number=str(body.get("externalDocumentNumber") or ""),
            raw=body,
        )


@dataclass(frozen=True)
class LineSpec:
    """One warehouse invoice line as the ERP line it becomes."""

    sequence: int
    description: str
    quantity: Decimal
    unit_price: Decimal
    unit_of_measure: str
    tax_code: str
    amount: Decimal  # the rounded net amount the ERP must compute for the line

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sequence": self.sequence,
            "lineType": "Account",
            "lineObjectNumber": revenue_account(),
            "description": self.description,
            "quantity": _jnum(self.quantity),
            "unitPrice": _jnum(self.unit_price),
            "taxCode": self.tax_code,
        }
        if self.unit_of_measure:
            out["unitOfMeasureCode"] = self.unit_of_measure
        return out

    def matches(self, erp_line: dict[str, Any]) -> bool:
        return (
            int(erp_line.get("sequence") or 0) == self.sequence
            and str(erp_line.get("taxCode") or "") == self.tax_code
            and dec(erp_line.get("amountExcludingTax")) == self.amount
        )


def line_specs(lines: list[dict[str, Any]], currency: str) -> list[LineSpec]:
    """The ERP lines of warehouse ``billing.invoice_lines`` rows (ordered by ``line_no``).

    Quantity and unit price are sent as the warehouse has them (hours x rate) when the ERP's
    per-line rounding of ``quantity x unitPrice`` gives exactly the warehouse net amount;
    otherwise (a line grouping several rates) the line goes as 1 x its net amount, so the ERP
    never recomputes a different figure than the one approved.
    """
    out = []
    for line in lines:
        net = money.round_money(Decimal(line["net_amount"]), currency)
        qty, price, uom = Decimal(1), net, ""
        for candidate, unit in ((line.get("hours"), hour_unit()), (line.get("quantity"), "")):
            if candidate is None or line.get("unit_price") is None or Decimal(candidate) == 0:
                continue
            unit_price = Decimal(line["unit_price"])
            if money.round_money(Decimal(candidate) * unit_price, currency) == net:
                qty, price, uom = Decimal(candidate), unit_price, unit
                break
        description = str(line.get("description") or line.get("kind") or "")[:DESCRIPTION_MAX]
        out.append(
            LineSpec(
                sequence=int(line["line_no"]) * 10000,
                description=description,
                quantity=qty,
                unit_price=price,
                unit_of_measure=uom,
                tax_code=str(line.get("tax_code") or ""),
                amount=net,
            )
        )
    return out


def invoice_body(invoice: dict[str, Any], specs: list[LineSpec]) -> dict[str, Any]:
    """The ``POST salesInvoices`` deep insert of a warehouse invoice."""
    customer_id = str(invoice.get("erp_customer_id") or "")
    body: dict[str, Any] = {
        "externalDocumentNumber": invoice["document_number"],
        "currencyCode": str(invoice["currency"]).strip(),
        "salesInvoiceLines": [s.body() for s in specs],
    }
    if _GUID.match(customer_id):
        body["customerId"] = customer_id
    else:
        body["customerNumber"] = str(invoice.get("erp_customer_number") or customer_id)
    if invoice.get("po_number"):
        body["customerPurchaseOrderReference"] = str(invoice["po_number"])[:35]
    for column, field in (("invoice_date", "invoiceDate"), ("due_date", "dueDate")):
        if invoice.get(column) is not None:
            body[field] = str(invoice[column])
    if invoice.get("invoice_date") is not None:
        body["postingDate"] = str(invoice["invoice_date"])
    return body


def _line_segment(entity: str) -> str:
    return "salesInvoiceLines" if entity == ERP_INVOICES else "salesCreditMemoLines"


def get_doc(erp, entity: str, doc_id: str, *, with_lines: bool = False) -> ErpDoc | None:
    """The document ``doc_id``; ``with_lines`` reads its lines in the same request
    (``$expand=salesInvoiceLines`` / ``salesCreditMemoLines``; :func:`draft_lines` uses them)."""
    if with_lines:
        body = erp.get(entity, doc_id, expand=_line_segment(entity))
    else:
        body = erp.get(entity, doc_id)
    return None if body is None else ErpDoc.of(entity, body)


def draft_lines(erp, doc: ErpDoc) -> list[dict[str, Any]]:
    """The lines of ``doc``: those read with it (:func:`get_doc` ``with_lines``), else listed."""
    expanded = doc.raw.get(_line_segment(doc.entity))
    if isinstance(expanded, list):
        return expanded
    return list_lines(erp, doc.entity, doc.id)


def find_invoice(erp, document_number: str) -> ErpDoc | None:
    """The sales invoice whose ``externalDocumentNumber`` is ``document_number`` (None if none;
    several raise :class:`~erpsync.connectors.errors.AmbiguousMatch`: a duplicate to fix)."""
    body = erp.find_one(ERP_INVOICES, f"externalDocumentNumber eq {odata_quote(document_number)}")
    return None if body is None else ErpDoc.of(ERP_INVOICES, body)


def find_credit_memo(erp, erp_invoice_id: str) -> ErpDoc | None:
    """The credit memo correcting the posted invoice ``erp_invoice_id`` (None if none)."""
    if not _GUID.match(erp_invoice_id):
        raise ValueError(f"not an ERP document id: {erp_invoice_id!r}")
    body = erp.find_one(ERP_MEMOS, f"invoiceId eq {erp_invoice_id}")
    return None if body is None else ErpDoc.of(ERP_MEMOS, body)


def list_lines(erp, entity: str, doc_id: str) -> list[dict[str, Any]]:
    segment = "salesInvoiceLines" if entity == ERP_INVOICES else "salesCreditMemoLines"
    return [line for page in erp.iter_pages(f"{entity}({doc_id})/{segment}") for line in page]


def add_line(erp, doc_id: str, spec: LineSpec, entity: str = ERP_INVOICES) -> dict[str, Any]:
    """POST one line to a draft invoice or credit memo (not retried once sent: the caller
    lists again). Documented: .../api/dynamics_salesinvoiceline_create and
    .../api/dynamics_salescreditmemoline_create
    (``POST salesCreditMemos({id})/salesCreditMemoLines``)."""
    segment = "salesInvoiceLines" if entity == ERP_INVOICES else "salesCreditMemoLines"
    return erp.create(f"{entity}({doc_id})/{segment}", spec.body())


def credit_memo_body(credit: dict[str, Any], erp_invoice_id: str) -> dict[str, Any]:
    """The ``POST salesCreditMemos`` header of a partial credit note (its lines follow with
    :func:`add_line`): the customer, currency, dates, the credit note's document number as
    ``externalDocumentNumber`` (the check-then-create key) and ``invoiceId``, the posted
    invoice it corrects (Business Central sets Applies-to Doc. No. from it).
    https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salescreditmemo
    (properties externalDocumentNumber, creditMemoDate, postingDate, customerId/customerNumber,
    currencyCode, invoiceId) and .../api/dynamics_salescreditmemo_create."""
    if not _GUID.match(erp_invoice_id):
        raise ValueError(f"not an ERP document id: {erp_invoice_id!r}")
    customer_id = str(credit.get("erp_customer_id") or "")
    body: dict[str, Any] = {
        "externalDocumentNumber": credit["document_number"],
        "currencyCode": str(credit["currency"]).strip(),
        "invoiceId": erp_invoice_id,
    }
    if _GUID.match(customer_id):
        body["customerId"] = customer_id
    else:
        body["customerNumber"] = str(credit.get("erp_customer_number") or customer_id)
    if credit.get("invoice_date") is not None:
        body["creditMemoDate"] = str(credit["invoice_date"])
        body["postingDate"] = str(credit["invoice_date"])
    return body


def find_credit_memo_by_document(erp, document_number: str) -> ErpDoc | None:
    """The credit memo whose ``externalDocumentNumber`` is the credit note's document number."""
    body = erp.find_one(ERP_MEMOS, f"externalDocumentNumber eq {odata_quote(document_number)}")
    return None if body is None else ErpDoc.of(ERP_MEMOS, body)


def _action(erp, entity: str, doc_id: str, action: str) -> None:
    erp.request("POST", erp.entity_path(f"{entity}({doc_id})/Microsoft.NAV.{action}"))


def post(erp, entity: str, doc_id: str) -> None:
    """``Microsoft.NAV.post``: the draft becomes a posted document with its final number."""
    _action(erp, entity, doc_id, "post")


def make_corrective_credit_memo(erp, erp_invoice_id: str) -> None:
    """``Microsoft.NAV.makeCorrectiveCreditMemo``: a draft credit memo copying every line of
    the posted invoice (the only way the ERP offers to create a credit memo)."""
    _action(erp, ERP_INVOICES, erp_invoice_id, "makeCorrectiveCreditMemo")
