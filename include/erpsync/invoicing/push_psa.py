"""The PSA side of the invoice push: mark what a posted ERP invoice billed as billed in Harvest.

After the ERP posts an invoice, each of its time entries and expenses is marked billed in the
PSA with ``PATCH /v2/time_entries/{id}`` (``/v2/expenses/{id}``) carrying ``is_billed: true``,
the ERP invoice (``invoice: {id, number}``) and an ``external_reference`` naming the erpsync
document number; the PSA locks billed entries. Retainer and milestone items have no PSA record
(Harvest has no milestones: a billed milestone is marked in the CRM by
:mod:`erpsync.invoicing.push_crm`).

Each item is read first: already billed by this invoice = nothing to write; billed by another
invoice = a conflict for a person (never overwritten); deleted = reported missing. A PATCH of
absolute values is idempotent and the shared request loop retries it like a read.

Vendor docs: https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/#update-a-time-entry
and https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/#update-an-expense
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MarkOutcome", "PsaItem", "mark_item", "psa_item"]

_RESOURCES = {"time": "time_entries", "expense": "expenses"}


@dataclass(frozen=True)
class PsaItem:
    """Where an item key lives in the PSA (``resource`` None: nothing to mark there)."""

    item_key: str
    resource: str | None
    psa_id: str | None


@dataclass
class MarkOutcome:
    outcome: str  # marked | already_billed | conflict | missing | nothing_to_mark
    writes: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def psa_item(conn, item_key: str) -> PsaItem:
    """Resolve an item key (``time:<id>``, ``expense:<id>``, ``milestone:<opp>:<ver>:<seq>``,
    ``retainer:<schedule>:<seq>``) to its PSA record."""
    kind, _, rest = item_key.partition(":")
    if kind in _RESOURCES:
        return PsaItem(item_key, _RESOURCES[kind], rest)
    return PsaItem(item_key, None, None)


def _billed_by(body: dict[str, Any], erp_number: str, document_number: str) -> bool:
    invoice = body.get("invoice") or {}
    ref = body.get("external_reference") or {}
    return str(invoice.get("number") or "") == erp_number or (
        str(ref.get("group_id") or "") == "erpsync" and str(ref.get("id") or "") == document_number
    )


def mark_item(
    psa, item: PsaItem, *, erp_invoice_id: str, erp_number: str, document_number: str
) -> MarkOutcome:
    """Mark one item billed in the PSA (idempotent; reads first)."""
    if item.resource is None:
        return MarkOutcome("nothing_to_mark")
    path = f"{item.resource}/{item.psa_id}"
    body = psa.get(path)
    if body is None:
        return MarkOutcome("missing", detail={"psa": path})
    if body.get("is_billed"):
        if _billed_by(body, erp_number, document_number):
            return MarkOutcome("already_billed")
        return MarkOutcome(
            "conflict",
            detail={
                "psa": path,
                "billed_on": body.get("invoice"),
                "external_reference": body.get("external_reference"),
                "erp_number": erp_number,
            },
        )
    psa.update(
        path,
        {
            "is_billed": True,
            "invoice": {"id": erp_invoice_id, "number": erp_number},
            "external_reference": {
                "id": document_number,
                "group_id": "erpsync",
                "permalink": None,
            },
        },
    )
    return MarkOutcome("marked", writes=1)
