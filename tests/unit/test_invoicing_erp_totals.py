"""Golden tests, to the minor unit, of the ERP-bound totals: erpsync computes VAT exactly as
Business Central does (per document and VAT identifier, positive and negative lines apart,
rounded nearest to the currency's precision), and the sandbox ERP computes the same, in ties
where rounding per line would give another figure (USD, EUR, JPY, KWD)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from erpsync.invoicing.pricing import bc_line_vat, bc_vat, per_line_tax, price_invoice
from erpsync_sandbox.erp.service import ErpService

R21 = {"STANDARD": D("21")}

# (currency, line nets, BC tax = round(sum x 21 %), per-line-rounded tax (NOT the rule))
GOLDENS = [
    # the example: net 574.50, 574.50 x 21 % = 120.645 -> 120.65 (per line 120.64)
    ("EUR", ["100.10", "200.20", "274.20"], "120.65", "120.64"),
    # 3 x 191.50 = 574.50 -> 120.65; per line 40.215 -> 40.22, x 3 = 120.66
    ("USD", ["191.50", "191.50", "191.50"], "120.65", "120.66"),
    # 0 decimals: 150 x 21 % = 31.5 -> 32; per line 10.5 -> 11, x 3 = 33
    ("JPY", ["50", "50", "50"], "32", "33"),
    # 3 decimals: 3.050 x 21 % = 0.6405 -> 0.641; per line 0.210 + 0.21525 -> 0.215 x 2 = 0.640
    ("KWD", ["1.000", "1.025", "1.025"], "0.641", "0.640"),
]


def _lines(nets):
    return [(D(n), "STANDARD") for n in nets]


@pytest.mark.parametrize(("currency", "nets", "bc_tax", "per_line"), GOLDENS)
def test_erpsync_computes_business_centrals_vat_in_ties(currency, nets, bc_tax, per_line):
    lines = _lines(nets)
    priced = price_invoice(lines, R21, currency)
    net = sum((D(n) for n in nets), D(0))
    assert priced.tax == D(bc_tax)
    assert str(priced.tax) == bc_tax  # to the minor unit, with the currency's exponent
    assert priced.total == net + D(bc_tax)
    assert per_line_tax(lines, R21, currency) == D(per_line) != priced.tax
    # the lines' shares (salesInvoiceLines.totalTaxAmount) add up to the document's VAT
    assert sum(bc_line_vat(lines, R21, currency), D(0)) == priced.tax


def _sandbox_lines(nets, rate="21", identifier="VAT21"):
    return [
        {
            "sequence": 10000 * (i + 1),
            "taxCode": "STANDARD",
            "amountExcludingTax": D(n),
            "taxPercent": D(rate),
            "_vatIdentifier": identifier,
        }
        for i, n in enumerate(nets)
    ]


@pytest.mark.parametrize(("currency", "nets", "bc_tax", "per_line"), GOLDENS)
def test_the_sandbox_erp_posts_the_same_totals(currency, nets, bc_tax, per_line):
    del per_line
    lines = _sandbox_lines(nets)
    ErpService._allocate_vat(lines, currency)
    tax = sum((ln["totalTaxAmount"] for ln in lines), D(0))
    assert tax == D(bc_tax)
    assert [ln["totalTaxAmount"] for ln in lines] == bc_line_vat(_lines(nets), R21, currency)
    for ln in lines:
        assert ln["amountIncludingTax"] == ln["amountExcludingTax"] + ln["totalTaxAmount"]


def test_positive_and_negative_lines_are_rounded_apart_as_business_central_does():
    # VAT Amount Line is keyed by ... Positive: 100.05 and -0.05 at 21 % are two groups
    lines = [(D("100.05"), "STANDARD"), (D("-0.05"), "STANDARD")]
    groups = bc_vat(lines, R21, "EUR")
    assert groups == {("STANDARD", True): D("21.01"), ("STANDARD", False): D("-0.01")}
    assert price_invoice(lines, R21, "EUR").tax == D("21.00")  # one group would give 21.00 too
    lines = [(D("0.05"), "STANDARD"), (D("0.05"), "STANDARD"), (D("-0.05"), "STANDARD")]
    # apart: round(0.021) = 0.02 and round(-0.0105) = -0.01 -> 0.01; together round(0.0105)=0.01
    assert price_invoice(lines, R21, "EUR").tax == D("0.01")
    sandbox = _sandbox_lines(["0.05", "0.05", "-0.05"])
    ErpService._allocate_vat(sandbox, "EUR")
    assert sum((ln["totalTaxAmount"] for ln in sandbox), D(0)) == D("0.01")
    lines = [(D("0.03"), "STANDARD"), (D("-0.01"), "STANDARD")]
    # apart: round(0.0063) = 0.01, round(-0.0021) = 0.00 -> 0.01; together round(0.0042) = 0.00
    assert price_invoice(lines, R21, "EUR").tax == D("0.01")
    sandbox = _sandbox_lines(["0.03", "-0.01"])
    ErpService._allocate_vat(sandbox, "EUR")
    assert sum((ln["totalTaxAmount"] for ln in sandbox), D(0)) == D("0.01")


def test_lines_of_different_vat_identifiers_are_rounded_apart():
    rates = {"STANDARD": D("21"), "REDUCED": D("9")}
    lines = [(D("0.50"), "STANDARD"), (D("0.50"), "REDUCED"), (D("0.50"), "STANDARD")]
    # STANDARD: 1.00 x 21 % = 0.21; REDUCED: 0.50 x 9 % = 0.045 -> 0.05
    assert price_invoice(lines, rates, "EUR").taxes == {"STANDARD": D("0.21"), "REDUCED": D("0.05")}
    sandbox = _sandbox_lines(["0.50", "0.50", "0.50"])
    sandbox[1].update(taxCode="REDUCED", taxPercent=D("9"), _vatIdentifier="VAT9")
    ErpService._allocate_vat(sandbox, "EUR")
    assert [ln["totalTaxAmount"] for ln in sandbox] == [D("0.11"), D("0.05"), D("0.10")]
