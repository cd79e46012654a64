"""The CRM side of the invoice push: a billed fixed-fee milestone is marked Invoiced in the CRM.

A contract's milestones live in the CRM as ``Contract_Milestone__c`` records (Harvest has no
milestones: audit H16-H18). After the ERP posts an invoice, each of its milestone
items gets ``Status__c = Invoiced`` and ``Invoice_Number__c`` = the posted ERP number, with the
documented ``PATCH /services/data/vXX.X/sobjects/Contract_Milestone__c/{id}`` (204 No Content),
and the record is read back: the mark is recorded only when the CRM shows both values.

Each record is read first: already Invoiced with this number = nothing to write; carrying
another invoice number = a conflict for a person (never overwritten); deleted = reported
missing. Outcomes go to ``billing.push_crm_marks`` (migration 0017), so a retry skips what is
done; a write the read-back does not confirm raises :class:`CrmMarkNotApplied` (nothing is
recorded, the push step is retried).

Vendor docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from erpsync import exceptions_queue
from erpsync.invoicing.common import Connection
from erpsync.models.milestones import MILESTONE_SOBJECT

if TYPE_CHECKING:
    from erpsync.connectors.salesforce import SalesforceClient
    from erpsync.invoicing.push import _Ctx

__all__ = ["CrmMarkNotApplied", "CrmMarkOutcome", "bill_back_milestones", "mark_milestone"]

log = logging.getLogger(__name__)

INVOICED = "Invoiced"
FINANCE_OPS = "finance ops"


class CrmMarkNotApplied(RuntimeError):
    """The CRM accepted the update but the read-back does not show it."""


@dataclass
class CrmMarkOutcome:
    outcome: str  # marked | already_billed | conflict | missing
    writes: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def _shows(body: dict[str, Any], number: str) -> bool:
    return body.get("Status__c") == INVOICED and str(body.get("Invoice_Number__c") or "") == number


def mark_milestone(
    crm: SalesforceClient, record_id: str | None, *, erp_number: str
) -> CrmMarkOutcome:
    """Mark one CRM milestone Invoiced with ``erp_number`` (idempotent; reads first and after).

    ``crm``: a :class:`~erpsync.connectors.salesforce.SalesforceClient` (``get``/``update``)."""
    if not record_id:
        return CrmMarkOutcome("missing", detail={"why": "no CRM milestone id on the contract"})
    where = f"{MILESTONE_SOBJECT}/{record_id}"
    body = crm.get(MILESTONE_SOBJECT, record_id)
    if body is None:
        return CrmMarkOutcome("missing", detail={"crm": where})
    if _shows(body, erp_number):
        return CrmMarkOutcome("already_billed", detail={"crm": where})
    if body.get("Invoice_Number__c") or body.get("Status__c") == INVOICED:
        return CrmMarkOutcome(
            "conflict",
            detail={
                "crm": where,
                "status": body.get("Status__c"),
                "invoice_number": body.get("Invoice_Number__c"),
                "erp_number": erp_number,
            },
        )
    wanted = {"Status__c": INVOICED, "Invoice_Number__c": erp_number}
    crm.update(MILESTONE_SOBJECT, record_id, wanted)
    after = crm.get(MILESTONE_SOBJECT, record_id)
    if after is None or not _shows(after, erp_number):
        seen = None if after is None else {k: after.get(k) for k in wanted}
        raise CrmMarkNotApplied(
            f"{where}: PATCH {wanted} answered success but the record reads {seen}"
        )
    return CrmMarkOutcome(
        "marked", writes=1, detail={"crm": where, "before": body.get("Status__c")}
    )


def _crm_id(conn: Connection, item_key: str) -> str | None:
    _kind, _, rest = item_key.partition(":")
    opportunity_id, version, seq = rest.rsplit(":", 2)
    row = conn.execute(
        """SELECT crm_milestone_id FROM core.contract_milestones
            WHERE opportunity_id = %s AND version = %s AND seq = %s""",
        (opportunity_id, int(version), int(seq)),
    ).fetchone()
    return None if row is None or not row[0] else str(row[0])


def _client(ctx: _Ctx) -> SalesforceClient:
    """The push's CRM client; when the caller gave none, one on the default connection."""
    if ctx.crm is None:
        from erpsync.connectors.salesforce import SalesforceClient

        ctx.crm = SalesforceClient()
    return ctx.crm


def bill_back_milestones(
    ctx: _Ctx, invoice: dict[str, Any], erp_number: str, keys: list[str]
) -> dict[str, int]:
    """Mark the invoice's milestone items Invoiced in the CRM; each outcome is recorded in
    ``billing.push_crm_marks`` (a retry skips recorded keys). ``ctx``: the push context
    (``conn``, ``run``, ``result.run_id``; ``crm`` is built from the ``erpsync_crm``
    connection on first use). Returns outcome counts."""
    keys = [k for k in keys if k.startswith("milestone:")]
    if not keys:
        return {}
    conn = ctx.conn
    invoice_id = int(invoice["invoice_id"])
    done = {
        r[0]
        for r in conn.execute(
            "SELECT item_key FROM billing.push_crm_marks WHERE item_key = ANY(%s)", (keys,)
        ).fetchall()
    }
    counts: dict[str, int] = {}
    for key in keys:
        if key in done:
            continue
        record_id = _crm_id(conn, key)
        outcome = mark_milestone(_client(ctx), record_id, erp_number=erp_number)
        with conn.transaction():
            conn.execute(
                """INSERT INTO billing.push_crm_marks
                       (item_key, invoice_id, sobject, record_id, outcome, detail, run_id)
                   VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)
                   ON CONFLICT (item_key) DO NOTHING""",
                (
                    key,
                    invoice_id,
                    MILESTONE_SOBJECT,
                    record_id,
                    outcome.outcome,
                    json.dumps(outcome.detail, default=str),
                    ctx.result.run_id,
                ),
            )
            if outcome.outcome in ("conflict", "missing"):
                exceptions_queue.raise_exception(
                    conn,
                    "crm_milestone_not_marked",
                    "milestone",
                    key,
                    FINANCE_OPS,
                    {
                        **outcome.detail,
                        "outcome": outcome.outcome,
                        "document_number": invoice["document_number"],
                        "erp_number": erp_number,
                        "note": "billed by erpsync in the ERP; the CRM milestone could not be"
                        " marked Invoiced (another invoice number on it, or the record is gone)",
                    },
                    ctx.run,
                )
        counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
    if counts:
        log.info("%s milestones in the CRM: %s", invoice["document_number"], counts)
    return counts
