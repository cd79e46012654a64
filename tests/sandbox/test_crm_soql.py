"""Unit tests of the sandbox CRM's SOQL subset: parsing, binding errors and Salesforce semantics."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from erpsync_sandbox.crm.schema import SCHEMAS, salesforce_id
from erpsync_sandbox.crm.soql import SoqlError, compile_query, dt_key, parse

ACCOUNT = SCHEMAS["Account"]
OPP = SCHEMAS["Opportunity"]
TODAY = dt.date(2026, 11, 2)


def run(q: str, rows: list[dict[str, Any]], schema: Any = ACCOUNT) -> list[Any]:
    c = compile_query(q, schema, today=TODAY)
    out = [r for r in rows if c.predicate is None or c.predicate(r)]
    if c.order:
        c.sort(out)
    return [r.get("Name") for r in out[: c.limit]] if c.limit else [r.get("Name") for r in out]


ROWS = [
    {
        "Name": "acme",
        "Type": "Customer",
        "Tax_Exempt__c": False,
        "VAT_Id__c": "DE1",
        "SystemModstamp": "2026-11-01T10:00:00.000+0000",
        "CreatedDate": "2026-11-02T08:00:00.000+0000",
    },
    {
        "Name": "Beta",
        "Type": None,
        "Tax_Exempt__c": True,
        "VAT_Id__c": None,
        "SystemModstamp": "2026-11-01T10:00:00.001+0000",
        "CreatedDate": "2026-10-01T08:00:00.000+0000",
    },
    {
        "Name": "O'Neil & Co",
        "Type": "Partner",
        "Tax_Exempt__c": False,
        "VAT_Id__c": "FR2",
        "SystemModstamp": "2026-10-01T00:00:00.000+0000",
        "CreatedDate": "2026-11-01T23:59:59.000+0000",
    },
]


def test_case_insensitive_names_and_values_with_canonical_output() -> None:
    c = compile_query("select id, NAME, vat_id__C from ACCOUNT", ACCOUNT)
    assert c.fields == ["Id", "Name", "VAT_Id__c"] and c.sobject == "Account"
    assert run("SELECT Name FROM Account WHERE Name = 'ACME'", ROWS) == ["acme"]
    assert run("SELECT Name FROM Account WHERE Name LIKE 'o\\'neil%'", ROWS) == ["O'Neil & Co"]


def test_null_semantics_of_equality_inequality_and_not_in() -> None:
    assert run("SELECT Name FROM Account WHERE Type = null", ROWS) == ["Beta"]
    assert run("SELECT Name FROM Account WHERE Type != null", ROWS) == ["acme", "O'Neil & Co"]
    # SOQL's != and NOT IN keep rows whose field is null
    assert run("SELECT Name FROM Account WHERE Type != 'Customer'", ROWS) == ["Beta", "O'Neil & Co"]
    assert run("SELECT Name FROM Account WHERE Type NOT IN ('Partner')", ROWS) == ["acme", "Beta"]
    assert run("SELECT Name FROM Account WHERE Type > 'A'", ROWS) == ["acme", "O'Neil & Co"]


def test_datetime_literals_and_millisecond_precision() -> None:
    gt = "SELECT Name FROM Account WHERE SystemModstamp > {}"
    assert run(gt.format("2026-11-01T10:00:00Z"), ROWS) == ["Beta"]
    assert run(gt.format("2026-11-01T10:00:00.000+0000"), ROWS) == ["Beta"]
    assert run(gt.format("2026-11-01T11:00:00+01:00"), ROWS) == ["Beta"]
    ge = "SELECT Name FROM Account WHERE SystemModstamp >= 2026-11-01T10:00:00Z"
    assert run(ge, ROWS) == ["acme", "Beta"]
    assert dt_key("2026-11-01T10:00:00.001+0000") == "2026-11-01T10:00:00.001000"
    assert dt_key("2026-11-01T10:00:00Z") == "2026-11-01T10:00:00.000000"


def test_date_constants_use_the_business_date() -> None:
    assert run("SELECT Name FROM Account WHERE CreatedDate = TODAY", ROWS) == ["acme"]
    assert run("SELECT Name FROM Account WHERE CreatedDate = YESTERDAY", ROWS) == ["O'Neil & Co"]
    assert run("SELECT Name FROM Account WHERE CreatedDate = LAST_N_DAYS:7", ROWS) == [
        "acme",
        "O'Neil & Co",
    ]
    assert run("SELECT Name FROM Account WHERE CreatedDate < LAST_N_DAYS:7", ROWS) == ["Beta"]


def test_order_by_nulls_and_direction() -> None:
    asc = run("SELECT Name FROM Account ORDER BY VAT_Id__c", ROWS)
    assert asc == ["Beta", "acme", "O'Neil & Co"]  # nulls first when ascending
    desc = run("SELECT Name FROM Account ORDER BY VAT_Id__c DESC", ROWS)
    assert desc == ["O'Neil & Co", "acme", "Beta"]  # nulls last when descending
    last = run("SELECT Name FROM Account ORDER BY VAT_Id__c ASC NULLS LAST LIMIT 2", ROWS)
    assert last == ["acme", "O'Neil & Co"]
    multi = run("SELECT Name FROM Account ORDER BY Tax_Exempt__c DESC, Name", ROWS)
    assert multi == ["Beta", "acme", "O'Neil & Co"]


def test_numbers_booleans_and_ids() -> None:
    opps = [
        {"Name": "a", "Amount": 100, "IsWon": True, "AccountId": salesforce_id("001000000000001")},
        {"Name": "b", "Amount": 250.5, "IsWon": False, "AccountId": None},
    ]
    assert run("SELECT Name FROM Opportunity WHERE Amount > 100", opps, OPP) == ["b"]
    assert run("SELECT Name FROM Opportunity WHERE Amount IN (100, 7)", opps, OPP) == ["a"]
    assert run("SELECT Name FROM Opportunity WHERE IsWon = TRUE", opps, OPP) == ["a"]
    assert run("SELECT Name FROM Opportunity WHERE AccountId = '001000000000001'", opps, OPP) == [
        "a"
    ]
    assert run(
        "SELECT Name FROM Opportunity WHERE NOT (IsWon = true OR Amount < 0)", opps, OPP
    ) == ["b"]


def test_pushdowns_for_the_store() -> None:
    c = compile_query(
        "SELECT Id FROM Account WHERE SystemModstamp > 2026-01-01T00:00:00Z AND "
        "Id IN ('001000000000001AAA')",
        ACCOUNT,
    )
    assert c.modstamp_gt == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert c.ids == ["001000000000001AAA"]
    ored = compile_query(
        "SELECT Id FROM Account WHERE SystemModstamp > 2026-01-01T00:00:00Z OR Name = 'x'",
        ACCOUNT,
    )
    assert ored.modstamp_gt is None  # not a conjunct: must not narrow the scan
    assert (
        compile_query(
            "SELECT Id FROM Account ORDER BY SystemModstamp DESC, Id DESC", ACCOUNT
        ).stamp_order()
        is True
    )


@pytest.mark.parametrize(
    ("query", "code", "text"),
    [
        ("SELECT FROM Account", "MALFORMED_QUERY", "unexpected token: 'FROM'"),
        ("SELECT Id FROM Account WHERE Name = 'x", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id FROM Account LIMIT ten", "MALFORMED_QUERY", "unexpected token: 'ten'"),
        ("SELECT Id FROM Account WHERE (Name = 'x'", "MALFORMED_QUERY", "<EOF>"),
        ("SELECT Id FROM Account GROUP BY Name", "MALFORMED_QUERY", "GROUP"),
        ("SELECT Id, (SELECT Id FROM Contacts) FROM Account", "MALFORMED_QUERY", "subqueries"),
        ("SELECT Owner.Name FROM Account", "INVALID_FIELD", "Didn't understand relationship"),
        ("SELECT Id FROM Account WHERE Tax_Exempt__c = 'yes'", "INVALID_FIELD", "boolean"),
        ("SELECT Id FROM Account WHERE CreatedDate > 2026-01-01", "INVALID_FIELD", "dateTime"),
        ("SELECT Id FROM Opportunity WHERE Amount = '5'", "INVALID_FIELD", "double"),
        ("SELECT Id FROM Account ORDER BY BillingStreet", "INVALID_FIELD", "can not be sorted"),
        ("SELECT Id, id FROM Account", "DUPLICATE_FIELD", "duplicate field selected: Id"),
        ("SELECT Id FROM Account OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE", "2000"),
    ],
)
def test_errors(query: str, code: str, text: str) -> None:
    schema = OPP if "Opportunity" in query else ACCOUNT
    with pytest.raises(SoqlError) as err:
        compile_query(query, schema)
    assert err.value.code == code
    assert text in err.value.message


def test_error_pointer_names_row_and_column() -> None:
    with pytest.raises(SoqlError) as err:
        parse("SELECT Id\nFROM Account\nWHERE Name = ")
    assert "ERROR at Row:3:Column:14" in err.value.message
    assert err.value.message.startswith("\nWHERE Name = \n")
