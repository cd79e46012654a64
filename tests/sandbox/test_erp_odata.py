"""Unit tests of the Business Central sandbox's OData $filter/$orderby/$select parsing."""

from __future__ import annotations

import pytest

from erpsync_sandbox.erp.entities import ENTITY_SETS
from erpsync_sandbox.erp.odata import (
    ODataError,
    evaluate,
    parse_filter,
    parse_orderby,
    parse_select,
    plan_filter,
)

TYPES = ENTITY_SETS["salesInvoices"].properties
ROW = {
    "id": "5d115c9c-44e3-ea11-bb43-000d3a2feca1",
    "number": "PSI-000123",
    "externalDocumentNumber": "O'Neil-7",
    "status": "Open",
    "totalAmountIncludingTax": 119.5,
    "pricesIncludeTax": False,
    "invoiceDate": "2026-11-02",
    "lastModifiedDateTime": "2026-11-02T09:00:00.500000Z",
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("lastModifiedDateTime gt 2026-11-02T09:00:00Z", True),
        ("lastModifiedDateTime gt 2026-11-02T09:00:00.5Z", False),
        ("lastModifiedDateTime ge 2026-11-02T09:00:00.500Z", True),
        ("lastModifiedDateTime lt 2026-11-02T10:00:00+01:00", False),
        ("externalDocumentNumber eq 'O''Neil-7'", True),
        ("number eq 'PSI-000123' and status ne 'Draft'", True),
        ("number eq 'X' or (status eq 'Open' and totalAmountIncludingTax gt 100)", True),
        ("not (status eq 'Open')", False),
        ("id eq 5D115C9C-44E3-EA11-BB43-000D3A2FECA1", True),
        ("totalAmountIncludingTax eq 119.50", True),
        ("pricesIncludeTax eq false", True),
        ("invoiceDate ge 2026-11-01 and invoiceDate le 2026-11-02", True),
        ("startswith(number, 'PSI-') and contains(externalDocumentNumber, 'Neil')", True),
        ("customerNumber eq null", True),
    ],
)
def test_filter_evaluation(expr: str, expected: bool) -> None:
    assert evaluate(parse_filter(expr, TYPES, "salesInvoice"), ROW, TYPES) is expected


@pytest.mark.parametrize(
    "expr",
    [
        "number eq",
        "number eq 5",
        "total eq 1",
        "status eq 'Open' and",
        "(status eq 'Open'",
        "number",
        "frobnicate(number, 'x')",
        "lastModifiedDateTime gt 'yesterday'",
        "number eq 'a' garbage",
    ],
)
def test_bad_filters_raise(expr: str) -> None:
    with pytest.raises(ODataError):
        parse_filter(expr, TYPES, "salesInvoice")


def test_plan_pushes_modstamp_and_equality_down() -> None:
    tree = parse_filter(
        "lastModifiedDateTime gt 2026-11-02T09:00:00Z and externalDocumentNumber eq 'X'"
        " and totalAmountIncludingTax gt 5",
        TYPES,
        "salesInvoice",
    )
    plan = plan_filter(tree, TYPES)
    assert ("modstamp", ">", "2026-11-02T09:00:00.000000Z") in plan.conditions
    assert ("externalDocumentNumber", "=", "X") in plan.conditions
    assert plan.residual is not None and plan.residual({"totalAmountIncludingTax": 6})
    assert plan_filter(parse_filter("number eq 'a' or number eq 'b'", TYPES, "x"), TYPES).residual


def test_orderby_and_select() -> None:
    assert parse_orderby("number desc, invoiceDate", TYPES, "salesInvoice") == [
        ("number", True),
        ("invoiceDate", False),
    ]
    assert parse_select("number,status", TYPES, "salesInvoice") == ["number", "status"]
    with pytest.raises(ODataError):
        parse_orderby("number sideways", TYPES, "salesInvoice")
    with pytest.raises(ODataError):
        parse_select("number,nope", TYPES, "salesInvoice")
