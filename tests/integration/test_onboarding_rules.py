"""The contract rules and billing schedules of client onboarding, as plain functions (no
systems): what makes a contract invalid, and the schedule each billing model gets."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from erpsync.onboarding import contracts, schedule
from erpsync.onboarding.contracts import ClientFacts

READY = ClientFacts(True, False, True, True, None, "5100001", "Client B.V.")
PEOPLE = {"ana@example.com": "7001"}


def opportunity(**fields) -> dict:
    base = {
        "Id": "006X",
        "Name": "Engagement",
        "AccountId": "001X",
        "OwnerId": "005X",
        "Amount": 120000.0,
        "CurrencyIsoCode": "EUR",
        "Billing_Model__c": "Time and Materials",
        "Contract_Start__c": "2026-11-09",
        "Contract_End__c": "2027-02-10",
        "Contract_Version__c": 1.0,
    }
    base.update(fields)
    return base


def milestones(*items: tuple[str | None, str | None, str | None]) -> dict:
    """The opportunity's Contract_Milestone__c records as a SOQL relationship subquery returns
    them (``Contract_Milestones__r``): (Name, Amount__c, Due_Date__c) each."""
    records = [
        {"Id": f"a0M{i:015d}", "Name": n, "Amount__c": a, "Due_Date__c": d, "Status__c": "Planned"}
        for i, (n, a, d) in enumerate(items, 1)
    ]
    return {"totalSize": len(records), "done": True, "records": records}


def problems(record: dict, client: ClientFacts = READY) -> list[tuple[str, str]]:
    c = contracts.parse(record)
    return [(p.reason_code, p.field) for p in contracts.check(c, client, PEOPLE)]


def test_a_complete_contract_has_no_problems_and_keeps_money_exact():
    c = contracts.parse(
        opportunity(
            Rate_Overrides__c=json.dumps([{"user_email": "Ana@Example.com", "rate": "187.5"}])
        )
    )
    assert contracts.check(c, READY, PEOPLE) == []
    assert c.amount == Decimal("120000.0") and c.version == 1
    assert c.rate_overrides == [{"user_email": "ana@example.com", "role": None, "rate": "187.5"}]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"Billing_Model__c": None}, ("contract_missing_field", "Billing_Model__c")),
        ({"Billing_Model__c": "Barter"}, ("contract_invalid_field", "Billing_Model__c")),
        ({"CurrencyIsoCode": None}, ("contract_missing_field", "CurrencyIsoCode")),
        ({"Contract_Start__c": None}, ("contract_missing_field", "Contract_Start__c")),
        ({"Contract_End__c": "2026-01-01"}, ("contract_invalid_field", "Contract_End__c")),
        ({"Amount": None}, ("contract_missing_field", "Amount")),
        ({"Cap_Type__c": "Hours"}, ("contract_missing_field", "Cap_Value__c")),
        ({"Rate_Overrides__c": "{not json"}, ("contract_invalid_field", "Rate_Overrides__c")),
        (
            {"Rate_Overrides__c": json.dumps([{"user_email": "nobody@x.com", "rate": "90"}])},
            ("contract_invalid_field", "Rate_Overrides__c"),
        ),
        ({"Billing_Model__c": "Fixed Fee"}, ("contract_missing_field", "Contract_Milestone__c")),
        (
            {
                "Billing_Model__c": "Fixed Fee",
                "Contract_Milestones__r": milestones(("Go-live", 100000, "2027-01-15")),
            },
            ("contract_invalid_field", "Contract_Milestone__c"),
        ),
        (
            {
                "Billing_Model__c": "Fixed Fee",
                "Contract_Milestones__r": milestones(
                    ("Design", 20000, "2026-12-15"), ("Go-live", 100000, None)
                ),
            },
            ("contract_invalid_field", "Contract_Milestone__c"),
        ),
        (
            {
                "Billing_Model__c": "Fixed Fee",
                "Contract_Milestones__r": milestones(
                    (None, 20000, "2026-12-15"), ("Go-live", 100000, "2027-01-15")
                ),
            },
            ("contract_invalid_field", "Contract_Milestone__c"),
        ),
        ({"Billing_Model__c": "Retainer"}, ("contract_missing_field", "Retainer_Amount__c")),
    ],
)
def test_each_gap_is_named_by_field(fields, expected):
    assert problems(opportunity(**fields))[0] == expected


def test_client_gaps_po_tax_id_and_missing_client():
    po_client = ClientFacts(True, True, True, True, None, "5100001", "Client")
    assert problems(opportunity(), po_client) == [("contract_missing_field", "PO_Number__c")]
    assert problems(opportunity(PO_Number__c="PO-1"), po_client) == []
    bad_vat = ClientFacts(True, False, True, False, "bad check digit", "5100001", "Client")
    assert problems(opportunity(), bad_vat) == [("contract_client_not_ready", "Account.VAT_Id__c")]
    assert problems(opportunity(), None) == [("contract_client_not_ready", "AccountId")]
    not_in_psa = ClientFacts(True, False, True, None, None, None, "Client")
    assert problems(opportunity(), not_in_psa) == [("contract_client_not_ready", "Account")]


def test_schedules_per_billing_model():
    tm = contracts.parse(opportunity(Contract_Start__c="2026-11-16", Contract_End__c="2027-01-31"))
    lines = schedule.build_lines(tm)
    assert [(ln.kind, ln.period_start, ln.period_end, ln.due_date, ln.amount) for ln in lines] == [
        ("tm_period", dt.date(2026, 11, 16), dt.date(2026, 11, 30), dt.date(2026, 12, 1), None),
        ("tm_period", dt.date(2026, 12, 1), dt.date(2026, 12, 31), dt.date(2027, 1, 1), None),
        ("tm_period", dt.date(2027, 1, 1), dt.date(2027, 1, 31), dt.date(2027, 2, 1), None),
    ]
    ff = contracts.parse(
        opportunity(
            Billing_Model__c="Fixed Fee",
            CurrencyIsoCode="JPY",
            Amount=3000000,
            Contract_Milestones__r=milestones(
                ("Go-live", 2000000, "2027-02-01"), ("Design", 1000000, "2026-12-20")
            ),
        )
    )
    # ordered by due date; each keeps the id of its CRM record
    assert [(m["name"], m["crm_id"]) for m in ff.milestones] == [
        ("Design", "a0M000000000000002"),
        ("Go-live", "a0M000000000000001"),
    ]
    assert contracts.check(ff, READY, PEOPLE) == []
    assert [(ln.kind, ln.due_date, ln.amount) for ln in schedule.build_lines(ff)] == [
        ("milestone", dt.date(2026, 12, 20), Decimal("1000000")),
        ("milestone", dt.date(2027, 2, 1), Decimal("2000000")),
    ]
    retainer = contracts.parse(
        opportunity(
            Billing_Model__c="Retainer",
            CurrencyIsoCode="KWD",
            Retainer_Amount__c=1500.125,
            Retainer_Period__c="Quarterly",
            Contract_Start__c="2026-11-01",
            Contract_End__c="2027-10-31",
        )
    )
    lines = schedule.build_lines(retainer)
    assert [(ln.period_start, ln.period_end, ln.amount) for ln in lines] == [
        (dt.date(2026, 11, 1), dt.date(2027, 1, 31), Decimal("1500.125")),
        (dt.date(2027, 2, 1), dt.date(2027, 4, 30), Decimal("1500.125")),
        (dt.date(2027, 5, 1), dt.date(2027, 7, 31), Decimal("1500.125")),
        (dt.date(2027, 8, 1), dt.date(2027, 10, 31), Decimal("1500.125")),
    ]
    open_ended = contracts.parse(
        opportunity(
            Billing_Model__c="Retainer",
            Retainer_Amount__c=5000,
            Retainer_Period__c="Monthly",
            Contract_End__c=None,
        )
    )
    assert len(schedule.build_lines(open_ended)) == schedule.OPEN_ENDED_MONTHS
