"""The pack's billing vocabulary: item types, billing models, cap types, the milestone item key.

One home for words that the reconciliation, the builder, the onboarding contract parser and the
billing DAGs' forms share, in the way :mod:`erpsync.models.reasons` is the home of quarantine
codes. The values are the ones stored in the warehouse (``recon.items.item_type``,
``core.contracts.billing_model``, ``core.contracts.cap_type``); the labels are the Salesforce
picklist values of the opportunity fields the contract is read from (``vendor/salesforce/``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BILLING_MODEL_LABELS",
    "CAP_TYPE_LABELS",
    "BillingModel",
    "CapType",
    "ItemType",
    "milestone_item_key",
    "milestone_item_key_sql",
]


class ItemType(StrEnum):
    """What a billable item is (``recon.items.item_type``, an invoice line's source)."""

    TIME = "time"
    EXPENSE = "expense"
    MILESTONE = "milestone"
    RETAINER = "retainer"


class BillingModel(StrEnum):
    """How a contract bills (``core.contracts.billing_model``)."""

    TIME_AND_MATERIALS = "time_and_materials"
    FIXED_FEE = "fixed_fee"
    RETAINER = "retainer"


class CapType(StrEnum):
    """What a not-to-exceed cap counts (``core.contracts.cap_type``)."""

    HOURS = "hours"
    AMOUNT = "amount"


#: Opportunity ``Billing_Model__c`` picklist label -> billing model.
BILLING_MODEL_LABELS: dict[str, BillingModel] = {
    "Time and Materials": BillingModel.TIME_AND_MATERIALS,
    "Fixed Fee": BillingModel.FIXED_FEE,
    "Retainer": BillingModel.RETAINER,
}
#: Opportunity ``Cap_Type__c`` picklist label -> cap type.
CAP_TYPE_LABELS: dict[str, CapType] = {"Hours": CapType.HOURS, "Amount": CapType.AMOUNT}


def milestone_item_key(opportunity_id: str, version: int, seq: int) -> str:
    """The item key of a contract milestone: ``milestone:<opportunity>:<version>:<seq>``."""
    return f"{ItemType.MILESTONE}:{opportunity_id}:{version}:{seq}"


def milestone_item_key_sql(alias: str) -> str:
    """The same key as a SQL expression over a ``core.contract_milestones`` row ``alias``."""
    if not alias.isidentifier():
        raise ValueError(f"not a table alias: {alias!r}")
    return (
        f"'{ItemType.MILESTONE}:' || {alias}.opportunity_id || ':' || {alias}.version"
        f" || ':' || {alias}.seq"
    )
