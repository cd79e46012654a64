"""Vendor shape -> canonical rows. Each mapper takes one vendor record (a dict as the API returns
it) and returns the canonical rows (plain dicts) it yields for one core table; the engine
validates them with the prebuilt adapter. A record that cannot be mapped raises
:class:`~erpsync.models.reasons.RecordError` with a catalogue reason code.
"""

from __future__ import annotations

import json
import re
from typing import Any

from erpsync.models import reasons
from erpsync.models.reasons import RecordError

_NET_DAYS = re.compile(r"^\s*net\s*(\d{1,3})\s*$", re.IGNORECASE)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _id(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def payment_terms_days(terms: str | None) -> int | None:
    """``"Net 30"`` -> 30; anything else -> None (kept as text)."""
    match = _NET_DAYS.match(terms or "")
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------ Salesforce Account


def salesforce_country(rec: dict) -> str | None:
    """The account's billing country as an ISO code: ``BillingCountryCode`` (orgs with State
    and Country/Territory Picklists, a pack requirement), else the ``BillingCountry`` label
    mapped to its code; an unmappable label is returned as it is (the model quarantines it).
    https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/compound_fields_address.htm
    """
    from erpsync.countries import iso_from_label

    code = _text(rec.get("BillingCountryCode"))
    if code:
        return code.upper()
    label = _text(rec.get("BillingCountry"))
    return iso_from_label(label) or label


def salesforce_account_to_client(rec: dict) -> list[dict]:
    terms = _text(rec.get("Payment_Terms__c"))
    return [
        {
            "crm_id": _id(rec.get("Id")),
            "legal_name": rec.get("Name"),
            "account_number": _text(rec.get("AccountNumber")),
            "billing_street": _text(rec.get("BillingStreet")),
            "billing_city": _text(rec.get("BillingCity")),
            "billing_postal_code": _text(rec.get("BillingPostalCode")),
            "billing_country": salesforce_country(rec),
            "currency": rec.get("CurrencyIsoCode"),
            "payment_terms": terms,
            "payment_terms_days": payment_terms_days(terms),
            "po_required": bool(rec.get("PO_Required__c") or False),
            "erp_customer_no": _text(rec.get("ERP_Customer_No__c")),
        }
    ]


def _validate_vat(country: Any, vat_id: str | None) -> tuple[str | None, bool | None, str | None]:
    """(normalized, valid, reason) from erpsync.taxid (python-stdnum)."""
    if not vat_id:
        return None, None, None
    from erpsync import taxid

    result = taxid.validate(str(country or ""), vat_id)
    return result.normalized, result.valid, result.reason


def salesforce_account_to_tax_profile(rec: dict) -> list[dict]:
    country = salesforce_country(rec)
    vat_id = _text(rec.get("VAT_Id__c"))
    normalized, valid, reason = _validate_vat(country, vat_id)
    return [
        {
            "crm_account_id": _id(rec.get("Id")),
            "country": country,
            "vat_id": vat_id,
            "vat_id_normalized": normalized,
            "vat_id_valid": valid,
            "vat_id_reason": reason,
            "tax_exempt": bool(rec.get("Tax_Exempt__c") or False),
            "exemption_reason": _text(rec.get("Tax_Exemption_Reason__c")),
            "reverse_charge": bool(rec.get("Reverse_Charge__c") or False),
        }
    ]


# ------------------------------------------------------------------ Business Central tax


def bc_tax_group_to_tax_code(rec: dict) -> list[dict]:
    return [
        {
            "code": rec.get("code"),
            "erp_id": _id(rec.get("id")),
            "display_name": rec.get("displayName"),
            "tax_type": rec.get("taxType"),
        }
    ]


def bc_vat_posting_setup_to_tax_rate(rec: dict) -> list[dict]:
    """Page 472 "VAT Posting Setup" as published OData V4 field names (VAT_Bus_Posting_Group,
    VAT_Prod_Posting_Group, VAT_Percent, VAT_Calculation_Type, VAT_Identifier, Blocked).
    https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/return-obtain-service-metadata-edmx-document
    """
    return [
        {
            "vat_bus_posting_group": (rec.get("VAT_Bus_Posting_Group") or "").strip(),
            "tax_code": _text(rec.get("VAT_Prod_Posting_Group")),
            "rate_percent": rec.get("VAT_Percent"),
            "calculation_type": _text(rec.get("VAT_Calculation_Type")),
            "vat_identifier": _text(rec.get("VAT_Identifier")),
            "blocked": bool(rec.get("Blocked") or False),
        }
    ]


# ------------------------------------------------------------------ Harvest


def harvest_user_to_person(rec: dict) -> list[dict]:
    roles = rec.get("roles") or []
    return [
        {
            "psa_id": _id(rec.get("id")),
            "first_name": rec.get("first_name"),
            "last_name": rec.get("last_name"),
            "email": rec.get("email"),
            # Harvest users have no employee number
            # (https://help.getharvest.com/api-v2/users-api/users/users/)
            "employee_number": None,
            "role": _text(roles[0]) if roles else None,
            "is_contractor": bool(rec.get("is_contractor") or False),
            "is_active": bool(rec.get("is_active", True)),
            "weekly_capacity_seconds": rec.get("weekly_capacity"),
        }
    ]


def harvest_client_to_psa_client(rec: dict) -> list[dict]:
    """A ``/v2/clients`` record: id, name, currency, is_active
    (https://help.getharvest.com/api-v2/clients-api/clients/clients/)."""
    return [
        {
            "psa_id": _id(rec.get("id")),
            "name": rec.get("name"),
            "currency": rec.get("currency") or None,
            "is_active": bool(rec.get("is_active", True)),
        }
    ]


def _harvest_rate(kind: str, rec: dict) -> list[dict]:
    return [
        {
            "kind": kind,
            "psa_rate_id": _id(rec.get("id")),
            "person_psa_id": _id(rec.get("user_id")),
            "amount": rec.get("amount"),
            # {id, amount, start_date, end_date, created_at, updated_at}: no currency
            "currency": None,
            "valid_from": rec.get("start_date"),
            "valid_to": rec.get("end_date") or None,
        }
    ]


def harvest_billable_rate_to_rate_card(rec: dict) -> list[dict]:
    """A ``/v2/users/{id}/billable_rates`` record; the source adds ``user_id``."""
    return _harvest_rate("billable", rec)


def harvest_cost_rate_to_rate_card(rec: dict) -> list[dict]:
    """A ``/v2/users/{id}/cost_rates`` record; the source adds ``user_id``."""
    return _harvest_rate("cost", rec)


# ------------------------------------------------------------------ Salesforce Opportunity


def _iso_day(value: Any) -> str | None:
    text = _text(value)
    return text[:10] if text and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text[:10]) else None


def salesforce_opportunity_to_rate_overrides(rec: dict) -> list[dict]:
    """``Rate_Overrides__c`` (a JSON list of ``{user_email, role, rate, effective_from}``) of a
    closed-won opportunity -> one row per person: the person's latest contracted rate (the
    element with the last ``effective_from``: what the PSA assignment carries), with the day it
    applies from (its ``effective_from``, or the change order's ``Change_Effective_Date__c``
    when later). Earlier dated rates are priced by the reconciliation from core.contracts.
    Other opportunities yield no rows."""
    if not (rec.get("IsWon") and rec.get("IsClosed")):
        return []
    raw = rec.get("Rate_Overrides__c")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return []
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise RecordError(
            reasons.MALFORMED_JSON_FIELD, f"Rate_Overrides__c does not parse: {exc}"
        ) from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise RecordError(
            reasons.MALFORMED_JSON_FIELD, "Rate_Overrides__c is not a list of objects"
        )
    version = rec.get("Contract_Version__c") or 1
    try:
        change_order = float(version) > 1
    except (TypeError, ValueError):
        change_order = False
    change_day = _iso_day(rec.get("Change_Effective_Date__c")) if change_order else None
    latest: dict[str, dict] = {}
    for item in sorted(items, key=lambda i: _iso_day(i.get("effective_from")) or ""):
        latest[str(item.get("user_email") or "").strip().lower()] = item
    return [
        {
            "opportunity_id": _id(rec.get("Id")),
            "user_email": item.get("user_email"),
            "role": _text(item.get("role")),
            "rate": item.get("rate"),
            "currency": item.get("currency") or rec.get("CurrencyIsoCode"),
            "contract_version": version,
            "psa_project_id": _text(rec.get("PSA_Project_Id__c")),
            "effective_from": max(
                (d for d in (_iso_day(item.get("effective_from")), change_day) if d),
                default=None,
            ),
        }
        for item in latest.values()
    ]
