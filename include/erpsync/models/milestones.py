"""A fixed-fee contract's milestone as the CRM holds it: Salesforce ``Contract_Milestone__c``.

Harvest has no milestone resource (audit H16-H18), so a contract's milestones and the
client's acceptance are records of the custom object ``Contract_Milestone__c``, a master-detail
child of the Opportunity, shipped as Salesforce DX metadata in
``vendor/salesforce/force-app/main/default/objects/Contract_Milestone__c/``:

``Name``, ``Opportunity__c`` (the contract), ``Amount__c`` (currency: the opportunity's),
``Due_Date__c``, ``Status__c`` (restricted picklist Planned | Accepted | Invoiced),
``Accepted_Date__c``, ``Invoice_Number__c`` (text 35, written by erpsync after the ERP posts).

Standard fields of a custom object:
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/system_fields.htm

The model is registered in :data:`erpsync.models.canonical.ADAPTERS` here, so the sync engine
validates these records like every canonical entity.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import TypeAdapter

from erpsync.models.canonical import ADAPTERS, Canonical, RequiredText

__all__ = [
    "MILESTONE_FIELDS",
    "MILESTONE_SOBJECT",
    "STATUSES",
    "CrmMilestone",
    "salesforce_contract_milestone",
]

MILESTONE_SOBJECT = "Contract_Milestone__c"
#: The restricted picklist ``Status__c``: Planned until the client accepts, Accepted (billable),
#: Invoiced (erpsync billed it; the ERP invoice number is in ``Invoice_Number__c``).
STATUSES = ("Planned", "Accepted", "Invoiced")
#: What erpsync reads of a milestone record (SOQL select list, besides Id and the stamps).
MILESTONE_FIELDS = (
    "Name",
    "Opportunity__c",
    "Amount__c",
    "Due_Date__c",
    "Status__c",
    "Accepted_Date__c",
    "Invoice_Number__c",
)


class CrmMilestone(Canonical):
    crm_milestone_id: RequiredText
    opportunity_id: RequiredText
    name: RequiredText
    amount: Decimal | None = None
    due_date: dt.date | None = None
    status: Literal["Planned", "Accepted", "Invoiced"]
    accepted_date: dt.date | None = None
    invoice_number: str | None = None


ADAPTERS.setdefault(CrmMilestone, TypeAdapter(CrmMilestone))


def _amount(value: Any) -> Any:
    return Decimal(repr(value)) if isinstance(value, float) else value


def salesforce_contract_milestone(rec: dict) -> list[dict]:
    """One ``Contract_Milestone__c`` record -> one ``core.crm_milestones`` row."""
    return [
        {
            "crm_milestone_id": rec.get("Id"),
            "opportunity_id": rec.get("Opportunity__c"),
            "name": rec.get("Name"),
            "amount": _amount(rec.get("Amount__c")),
            "due_date": rec.get("Due_Date__c") or None,
            "status": rec.get("Status__c"),
            "accepted_date": rec.get("Accepted_Date__c") or None,
            "invoice_number": (str(rec.get("Invoice_Number__c") or "").strip() or None),
        }
    ]
