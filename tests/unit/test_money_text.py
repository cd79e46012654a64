"""money.as_text: the one way money becomes text (rounded by the one rule, unknown currencies)."""

from decimal import Decimal

import pytest

from erpsync import money


def test_an_amount_is_rounded_to_its_currency_and_keeps_its_minor_units():
    assert money.as_text(Decimal("12.5"), "EUR") == "12.50"
    assert money.as_text(Decimal("1234.5"), "JPY") == "1235"
    assert money.as_text(Decimal("0.0005"), "KWD") == "0.001"
    assert money.as_text(Decimal("-0.005"), "EUR") == "-0.01"  # half away from zero


def test_grouping_none_and_amounts_without_a_currency():
    assert money.as_text(Decimal("1234567.891"), "EUR", grouped=True) == "1,234,567.89"
    assert money.as_text(Decimal("1234.5"), grouped=True) == "1,234.5"
    assert money.as_text(None) == "-"
    assert money.as_text(None, "EUR", empty="") == ""
    assert money.as_text("7.125", "USD") == "7.13"


def test_an_unknown_currency_is_shown_raw_or_refused():
    assert money.as_text(Decimal("1.23456"), "XXX") == "1.23456"
    with pytest.raises(money.UnknownCurrency, match="XXX"):
        money.as_text(Decimal("1"), "XXX", unknown="raise")
