"""The ids a person types in the billing trigger form, checked before the run starts, and the
lookups the billing tasks make by such an id.

A billing run for a client id that does not exist used to finish "successfully" with nothing
billed; a credit note for an unknown invoice failed only after the data-quality gate. Every
reference in the form is looked up here first, and the run is refused with a message naming
each value that does not resolve and what it should be.

An invoice is referred to by its document number, its ERP number or its invoice id
(:func:`resolve_invoice`, the one place that rule is written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from erpsync.invoicing.common import Connection

__all__ = ["RecordedDecision", "recorded_decision", "resolve_invoice", "unknown_references"]

_INVOICE_BY_REFERENCE = """
SELECT invoice_id FROM billing.invoices
 WHERE document_number = %(ref)s OR erp_number = %(ref)s OR invoice_id::text = %(ref)s
 ORDER BY invoice_id LIMIT 1"""


def resolve_invoice(conn: Connection, ref: str) -> int | None:
    """The invoice id ``ref`` names (document number, ERP number or invoice id), else None."""
    row = conn.execute(_INVOICE_BY_REFERENCE, {"ref": str(ref)}).fetchone()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class RecordedDecision:
    """A batch's stored status and who decided it (None while undecided)."""

    status: str
    decided_by: str | None


def recorded_decision(conn: Connection, batch_id: int) -> RecordedDecision | None:
    """The decision stored for ``batch_id`` (None: no such batch): how a retried
    ``record_decision`` task tells a decision it already committed from a conflicting one."""
    row = conn.execute(
        "SELECT status, decided_by FROM billing.invoice_batches WHERE batch_id = %s",
        (batch_id,),
    ).fetchone()
    return None if row is None else RecordedDecision(str(row[0]), row[1])


def unknown_references(conn: Connection, request: dict[str, Any]) -> list[str]:
    """One problem per reference of ``request`` (the planned form) that does not resolve."""
    problems: list[str] = []
    clients = [str(c) for c in request.get("clients") or []]
    if clients:
        rows = conn.execute(
            """SELECT c.crm_id, c.deleted_at IS NOT NULL
                 FROM unnest(%s::text[]) AS asked(crm_id)
                 LEFT JOIN core.clients c USING (crm_id)""",
            (clients,),
        ).fetchall()
        state = {crm_id: deleted for crm_id, deleted in rows if crm_id is not None}
        unknown = [c for c in clients if c not in state]
        deleted = [c for c in clients if state.get(c)]
        if unknown:
            problems.append(
                f"Clients (clients): unknown client id(s) {unknown}: not a CRM account id "
                "erpsync knows (core.clients); enter the Salesforce Account Id, or run the "
                "master data sync if the account is new"
            )
        if deleted:
            problems.append(f"client id(s) {deleted} were deleted in the CRM: nothing to bill")
    credit_for = request.get("credit_note_for")
    if credit_for and resolve_invoice(conn, str(credit_for)) is None:
        problems.append(
            f"no invoice {credit_for!r} to credit: enter the document number, the ERP "
            "invoice number or the invoice id of a posted invoice"
        )
    return problems
