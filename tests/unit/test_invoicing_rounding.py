"""Rounding golden tests for invoices: ties half away from zero, JPY (0 decimals), KWD (3),
tax per invoice and tax code rather than per line, and lines + tax = total (hypothesis)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erpsync.invoicing.pricing import (
    amount_line_net,
    per_line_tax,
    price_invoice,
    time_line_net,
)
from erpsync.money import minor_units, round_money


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.005", "EUR", "0.01"),
        ("-0.005", "EUR", "-0.01"),
        ("25.005", "EUR", "25.01"),
        ("12.5025", "EUR", "12.50"),
        ("129602.5", "JPY", "129603"),
        ("-2.5", "JPY", "-3"),
        ("1234.4999", "JPY", "1234"),
        ("134.4645", "KWD", "134.465"),
        ("30.83031", "KWD", "30.830"),
        ("-0.0005", "KWD", "-0.001"),
    ],
)
def test_ties_round_half_away_from_zero(amount, currency, expected):
    assert round_money(D(amount), currency) == D(expected)
    assert str(round_money(D(amount), currency)) == expected  # exactly the minor units


def test_time_line_sums_hours_before_pricing():
    # two entries of 0.125 h at 100.02: per entry 12.5025 -> 12.50 each (25.00);
    # the line prices 0.25 h once: 25.005 -> 25.01
    assert time_line_net([D("0.125"), D("0.125")], D("100.02"), "EUR") == D("25.01")
    assert sum(round_money(D("0.125") * D("100.02"), "EUR") for _ in range(2)) == D("25.00")
    assert time_line_net([D("2.5")], D("51841"), "JPY") == D("129603")
    assert time_line_net([D("3")], D("44.8215"), "KWD") == D("134.465")
    assert amount_line_net(D("80.375"), "EUR") == D("80.38")


def test_tax_per_invoice_not_per_line():
    lines = [(D("1.02"), "STANDARD")] * 3
    rates = {"STANDARD": D("19")}
    priced = price_invoice(lines, rates, "EUR")
    # per invoice: 3.06 x 19 % = 0.5814 -> 0.58; per line: 0.1938 -> 0.19, x 3 = 0.57
    assert priced.tax == D("0.58")
    assert per_line_tax(lines, rates, "EUR") == D("0.57")
    assert priced.total == D("3.64")
    # mixed codes: one tax amount per code
    mixed = price_invoice(
        [(D("100.01"), "STANDARD"), (D("50"), "EXEMPT")],
        {"STANDARD": D("21"), "EXEMPT": D("0")},
        "EUR",
    )
    assert mixed.taxes == {"STANDARD": D("21.00"), "EXEMPT": D("0.00")}
    assert mixed.total == D("171.01")


def test_kwd_tax_three_decimals():
    priced = price_invoice([(D("134.465"), "S"), (D("12.346"), "S")], {"S": D("21")}, "KWD")
    assert (priced.net, priced.tax, priced.total) == (D("146.811"), D("30.830"), D("177.641"))


CURRENCIES = st.sampled_from(["EUR", "USD", "JPY", "KWD"])
HOURS = st.decimals(min_value=D("0"), max_value=D("400"), places=4)
RATES = st.decimals(min_value=D("0"), max_value=D("60000"), places=4)
TAX = st.sampled_from([D("0"), D("19"), D("21"), D("22"), D("7.7"), D("5.5")])


@settings(max_examples=300, deadline=None)
@given(
    currency=CURRENCIES,
    groups=st.lists(
        st.tuples(st.lists(HOURS, min_size=1, max_size=6), RATES), min_size=1, max_size=8
    ),
    rate=TAX,
)
def test_lines_plus_tax_equals_total(currency, groups, rate):
    nets = [time_line_net(hours, r, currency) for hours, r in groups]
    priced = price_invoice([(n, "S") for n in nets], {"S": rate}, currency)
    q = minor_units(currency)
    assert priced.total == sum(nets) + priced.tax
    for value in (*nets, priced.tax, priced.total):
        assert -value.as_tuple().exponent <= max(q, 0) or value == 0
    # the tax is within half a minor unit of the exact tax
    exact = sum(nets) * rate / 100
    assert abs(priced.tax - exact) <= D(1).scaleb(-q) / 2
