"""Canonical models and vendor mappings: each vendor shape maps to the canonical rows, money stays
exact, and every catalogue reason code is produced by the record that earns it."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from erpsync.models import canonical, mappings, reasons
from erpsync.models.canonical import (
    ADAPTERS,
    Client,
    ContractRateOverride,
    Person,
    PsaClient,
    RateCard,
    TaxCode,
    TaxProfile,
    TaxRate,
)
from erpsync.models.reasons import RecordError, from_validation_error

ACCOUNT = {
    "Id": "001000000000001AAA",
    "Name": "Acme Holding B.V.",
    "AccountNumber": "ACC-10002",
    "BillingStreet": "12 Canal Street",
    "BillingCity": "Utrecht",
    "BillingPostalCode": "3511",
    "BillingCountry": "NL",
    "CurrencyIsoCode": "EUR",
    "Payment_Terms__c": "Net 30",
    "VAT_Id__c": "NL004495445B01",
    "Tax_Exempt__c": False,
    "Tax_Exemption_Reason__c": None,
    "Reverse_Charge__c": True,
    "PO_Required__c": True,
    "ERP_Customer_No__c": "C00042",
    "IsDeleted": False,
    "SystemModstamp": "2026-10-01T10:00:00.000+0000",
}


def validate(model, row):
    return ADAPTERS[model].validate_python(row)


def reason_of(model, row) -> str:
    with pytest.raises(ValidationError) as info:
        validate(model, row)
    return from_validation_error(info.value).reason_code


def test_salesforce_account_maps_to_a_client():
    (row,) = mappings.salesforce_account_to_client(ACCOUNT)
    client = validate(Client, row)
    assert client.crm_id == ACCOUNT["Id"]
    assert client.legal_name == "Acme Holding B.V."
    assert (client.billing_country, client.currency) == ("NL", "EUR")
    assert (client.payment_terms, client.payment_terms_days) == ("Net 30", 30)
    assert client.po_required is True
    assert client.erp_customer_no == "C00042"


def test_salesforce_account_maps_to_a_tax_profile_with_a_validated_vat_id():
    (row,) = mappings.salesforce_account_to_tax_profile(ACCOUNT)
    profile = validate(TaxProfile, row)
    assert profile.crm_account_id == ACCOUNT["Id"]
    assert profile.vat_id_valid is True
    assert profile.vat_id_normalized == "NL004495445B01"
    assert profile.reverse_charge is True

    bad = {**ACCOUNT, "VAT_Id__c": "NL004495446B01"}  # wrong check digit
    profile = validate(TaxProfile, mappings.salesforce_account_to_tax_profile(bad)[0])
    assert profile.vat_id_valid is False
    assert profile.vat_id_reason

    none = {**ACCOUNT, "VAT_Id__c": None, "BillingCountry": "US"}
    profile = validate(TaxProfile, mappings.salesforce_account_to_tax_profile(none)[0])
    assert (profile.vat_id, profile.vat_id_valid) == (None, None)


def test_bc_tax_groups_and_vat_posting_setup_map_to_tax_codes_and_rates():
    group = {"id": "g-1", "code": "STANDARD", "displayName": "Standard VAT", "taxType": "VAT"}
    code = validate(TaxCode, mappings.bc_tax_group_to_tax_code(group)[0])
    assert (code.code, code.erp_id, code.tax_type) == ("STANDARD", "g-1", "VAT")

    # page 472 "VAT Posting Setup" published as OData V4 web service VATPostingSetup
    setup = {
        "VAT_Bus_Posting_Group": "DOMESTIC",
        "VAT_Prod_Posting_Group": "STANDARD",
        "VAT_Identifier": "VAT21",
        "VAT_Percent": Decimal("21"),
        "VAT_Calculation_Type": "Normal VAT",
        "Blocked": False,
    }
    tax_rate = validate(TaxRate, mappings.bc_vat_posting_setup_to_tax_rate(setup)[0])
    assert (tax_rate.vat_bus_posting_group, tax_rate.tax_code) == ("DOMESTIC", "STANDARD")
    assert tax_rate.rate_percent == Decimal("21") and tax_rate.blocked is False
    assert tax_rate.calculation_type == "Normal VAT"


def test_harvest_user_maps_to_a_person():
    user = {
        "id": 3100001,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "Ada.Lovelace@Example.com",
        "employee_number": "E01001",
        "roles": ["Senior Consultant"],
        "is_contractor": False,
        "is_active": True,
        "weekly_capacity": 144000,
    }
    person = validate(Person, mappings.harvest_user_to_person(user)[0])
    # Harvest users have no employee_number (audit H1): never read, even if a payload has one
    assert person.employee_number is None
    assert person.psa_id == "3100001"
    assert person.email == "ada.lovelace@example.com"
    assert person.role == "Senior Consultant"
    assert person.weekly_capacity_seconds == 144000


@pytest.mark.parametrize(
    ("mapper", "kind"),
    [
        (mappings.harvest_billable_rate_to_rate_card, "billable"),
        (mappings.harvest_cost_rate_to_rate_card, "cost"),
    ],
)
def test_harvest_rates_map_to_rate_cards_with_exact_money(mapper, kind):
    rate = {
        "id": 5200001,
        "user_id": 3100001,
        "amount": 160.1,  # a JSON float: read through its repr, never binary arithmetic
        "start_date": "2025-01-01",
        "end_date": None,
    }
    card = validate(RateCard, mapper(rate)[0])
    assert card.kind == kind
    assert card.amount == Decimal("160.1")
    assert isinstance(card.amount, Decimal)
    assert (card.person_psa_id, card.psa_rate_id) == ("3100001", "5200001")
    # Harvest rates carry no currency (audit H2): the card loads without one
    assert card.currency is None


def test_opportunity_rate_overrides_map_one_row_per_person():
    opp = {
        "Id": "006000000000001AAA",
        "IsWon": True,
        "IsClosed": True,
        "CurrencyIsoCode": "GBP",
        "Contract_Version__c": 2,
        "PSA_Project_Id__c": "7100001",
        "Rate_Overrides__c": json.dumps(
            [
                {"user_email": "a@example.com", "role": "Consultant", "rate": "150.00"},
                {"user_email": "b@example.com", "role": "Manager", "rate": "210.50"},
            ]
        ),
    }
    rows = [
        validate(ContractRateOverride, r)
        for r in mappings.salesforce_opportunity_to_rate_overrides(opp)
    ]
    assert [(r.user_email, r.rate, r.currency, r.contract_version) for r in rows] == [
        ("a@example.com", Decimal("150.00"), "GBP", 2),
        ("b@example.com", Decimal("210.50"), "GBP", 2),
    ]
    assert mappings.salesforce_opportunity_to_rate_overrides({**opp, "IsWon": False}) == []
    assert (
        mappings.salesforce_opportunity_to_rate_overrides({**opp, "Rate_Overrides__c": None}) == []
    )


# ------------------------------------------------------------------ reason codes


def _client(**changes):
    return {**mappings.salesforce_account_to_client(ACCOUNT)[0], **changes}


def _rate(**changes):
    base = {
        "kind": "billable",
        "psa_rate_id": "1",
        "person_psa_id": "2",
        "amount": "100",
        "currency": "EUR",
        "valid_from": "2025-01-01",
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("model", "row", "code"),
    [
        (Client, _client(legal_name=None), reasons.MISSING_REQUIRED_FIELD),
        (Client, _client(legal_name="   "), reasons.MISSING_REQUIRED_FIELD),
        (Client, {k: v for k, v in _client().items() if k != "crm_id"}, "missing_required_field"),
        (Client, _client(currency="XYZ"), reasons.INVALID_CURRENCY),
        (Client, _client(currency=None), reasons.MISSING_REQUIRED_FIELD),
        (Client, _client(billing_country="Netherlands"), reasons.INVALID_COUNTRY),
        (RateCard, _rate(amount="-5"), reasons.NEGATIVE_RATE),
        (RateCard, _rate(amount="a lot"), reasons.INVALID_NUMBER),
        (RateCard, _rate(amount=True), reasons.INVALID_NUMBER),
        (RateCard, _rate(valid_from="2025-02-30"), reasons.INVALID_DATE),
        (RateCard, _rate(valid_to="2024-12-31"), reasons.INVALID_DATE_RANGE),
        (RateCard, _rate(kind="bonus"), reasons.INVALID_VALUE),
        (
            Person,
            {"psa_id": "1", "first_name": "A", "last_name": "B", "email": "not-an-email"},
            reasons.INVALID_EMAIL,
        ),
        (
            TaxProfile,
            {"crm_account_id": "1", "country": "DE", "tax_exempt": True},
            reasons.MISSING_EXEMPTION_REASON,
        ),
        (
            TaxRate,
            {"vat_bus_posting_group": "D", "tax_code": "S", "rate_percent": "121"},
            reasons.RATE_OUT_OF_RANGE,
        ),
    ],
)
def test_each_invalid_record_gets_its_catalogue_reason_code(model, row, code):
    assert reason_of(model, row) == code
    assert code in reasons.CATALOGUE


def test_dated_rate_overrides_map_the_latest_rate_with_the_day_it_applies_from():
    opp = {
        "Id": "006000000000002AAA",
        "IsWon": True,
        "IsClosed": True,
        "CurrencyIsoCode": "EUR",
        "Contract_Version__c": 3.0,
        "Change_Effective_Date__c": "2026-03-16",
        "Rate_Overrides__c": json.dumps(
            [
                {"user_email": "a@example.com", "rate": "170.00", "effective_from": "2026-04-01"},
                {"user_email": "A@example.com", "rate": "160.00"},
                {"user_email": "b@example.com", "rate": "99.50"},
            ]
        ),
    }
    rows = [
        validate(ContractRateOverride, r)
        for r in mappings.salesforce_opportunity_to_rate_overrides(opp)
    ]
    # one row per person (the mirror's key): the latest rate, from its own day or the change
    # order's, whichever is later
    assert sorted((r.user_email, r.rate, r.effective_from) for r in rows) == [
        ("a@example.com", Decimal("170.00"), dt.date(2026, 4, 1)),
        ("b@example.com", Decimal("99.50"), dt.date(2026, 3, 16)),
    ]
    first = {**opp, "Contract_Version__c": 1}  # a first version applies from the beginning
    assert {
        r["effective_from"] for r in mappings.salesforce_opportunity_to_rate_overrides(first)
    } == {"2026-04-01", None}


def test_malformed_rate_overrides_json_is_its_own_reason():
    opp = {"Id": "006X", "IsWon": True, "IsClosed": True, "Rate_Overrides__c": "[{oops"}
    with pytest.raises(RecordError) as info:
        mappings.salesforce_opportunity_to_rate_overrides(opp)
    assert info.value.reason_code == reasons.MALFORMED_JSON_FIELD
    with pytest.raises(RecordError) as info:
        mappings.salesforce_opportunity_to_rate_overrides({**opp, "Rate_Overrides__c": '"x"'})
    assert info.value.reason_code == reasons.MALFORMED_JSON_FIELD


def test_every_catalogue_code_is_reachable_and_unknown_codes_are_refused():
    with pytest.raises(ValueError, match="unknown reason code"):
        RecordError("something_else", "x")
    # the parametrized cases above plus malformed JSON cover the model's codes; the engine's
    # own three (unstorable value, mapper failure, database refusal) are reached in
    # tests/integration/test_sync_poison.py
    covered = {
        reasons.UNSTORABLE_VALUE,
        reasons.MAPPING_FAILED,
        reasons.DATABASE_REFUSED,
        reasons.MISSING_REQUIRED_FIELD,
        reasons.INVALID_CURRENCY,
        reasons.INVALID_COUNTRY,
        reasons.NEGATIVE_RATE,
        reasons.INVALID_NUMBER,
        reasons.INVALID_DATE,
        reasons.INVALID_DATE_RANGE,
        reasons.INVALID_EMAIL,
        reasons.MALFORMED_JSON_FIELD,
        reasons.MISSING_EXEMPTION_REASON,
        reasons.RATE_OUT_OF_RANGE,
        reasons.INVALID_VALUE,
    }
    assert covered == set(reasons.CATALOGUE)


def test_validators_are_built_once_and_models_are_immutable():
    from tests.entity_lists import models  # imports every spec module: every model registered

    assert canonical.adapter_for(Client) is canonical.adapter_for(Client)
    # one prebuilt validator per entity model, and none besides (derived from the specs)
    assert set(ADAPTERS) == models()
    client = validate(Client, _client())
    with pytest.raises(ValidationError):
        client.legal_name = "changed"  # type: ignore[misc]
    assert reason_of(Client, _client(unexpected="x")) == reasons.INVALID_VALUE


def test_harvest_time_entry_and_expense_approval_from_is_closed():
    """Audit H3/H4: no approval_status in Harvest; the warehouse's comes from is_closed."""
    from erpsync.models.time_expense import (
        Expense,
        TimeEntry,
        harvest_expense,
        harvest_time_entry,
    )

    entry = {
        "id": 1,
        "spent_date": "2026-05-01",
        "hours": 2.0,
        "billable": True,
        "is_locked": False,
        "is_closed": True,
        "is_billed": False,
        "user": {"id": 3},
        "client": {"id": 5, "name": "Acme"},
        "project": {"id": 6, "name": "Rollout"},
    }
    row = validate(TimeEntry, harvest_time_entry(entry)[0])
    assert (row.approval_status, row.currency) == ("approved", None)
    row = validate(TimeEntry, harvest_time_entry({**entry, "is_closed": False})[0])
    assert row.approval_status == "unapproved"
    expense = {
        "id": 9,
        "spent_date": "2026-05-01",
        "total_cost": 12.5,
        "billable": True,
        "is_locked": False,
        "is_closed": False,
        "is_billed": False,
        "receipt": None,
        "user": {"id": 3},
        "client": {"id": 5, "name": "Acme", "currency": "EUR"},
        "project": {"id": 6, "name": "Rollout", "code": "P-6"},
        "expense_category": {"id": 1, "name": "Meals", "unit_price": None, "unit_name": None},
    }
    got = validate(Expense, harvest_expense(expense)[0])
    assert (got.approval_status, got.currency) == ("unapproved", "EUR")


def test_harvest_client_maps_to_a_psa_client_with_its_currency():
    """Harvest prices a client's time in the client's currency; its time entries and rates
    carry none, so the client is where the currency comes from (audit H2/H3)."""
    rec = {"id": 5100001, "name": "Acme GmbH", "currency": "chf", "is_active": True}
    got = validate(PsaClient, mappings.harvest_client_to_psa_client(rec)[0])
    assert (got.psa_id, got.currency, got.is_active) == ("5100001", "CHF", True)
    assert validate(PsaClient, mappings.harvest_client_to_psa_client({"id": 7})[0]).currency is None
