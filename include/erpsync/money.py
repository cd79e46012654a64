"""Money: the one rounding rule of the pack.

Amounts are :class:`decimal.Decimal` in Python and ``numeric`` in PostgreSQL, never float.

**The rule.** An amount is rounded once, when it becomes a figure someone is billed: to the
currency's minor units (ISO 4217: JPY 0, USD/EUR/GBP 2, KWD 3, see
:data:`erpsync.models.reference.CURRENCY_MINOR_UNITS`), **half away from zero**
(``ROUND_HALF_UP`` in Python's decimal module, which is what PostgreSQL's
``round(numeric, n)`` does, so SQL and Python agree to the minor unit):

* a time line is ``round(sum of hours x rate)`` per line (hours are summed first, then
  priced, then rounded); a per-entry amount in the reconciliation is kept unrounded
  (``hours x rate``) and only rounded where it is reported;
* an expense line is ``round(cost x (1 + markup))``;
* tax is computed **per invoice and tax code**: ``round(sum of the net line amounts with that
  tax code x rate)``, not per line, so the tax on an invoice never drifts by the number of
  lines. This is Business Central's VAT rule (per document and VAT Identifier, positive and
  negative lines apart, rounded to the currency's Amount Rounding Precision with VAT Rounding
  Type Nearest; sources in :mod:`erpsync.invoicing.pricing`), so the approved totals are the
  ones the ERP posts; the push holds any document whose ERP totals differ;
* an invoice total is the sum of its rounded lines plus its rounded tax amounts, so
  lines + tax = total to the minor unit, always.

Intermediate results (rates x hours before rounding, FX) carry full ``numeric`` precision.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from erpsync.models.reference import CURRENCY_MINOR_UNITS

__all__ = [
    "ROUNDING",
    "UnknownCurrency",
    "as_text",
    "minor_units",
    "quantum",
    "round_money",
    "to_minor",
    "from_minor",
]

#: The rounding mode of every money figure (half away from zero, as PostgreSQL's round()).
ROUNDING = ROUND_HALF_UP


class UnknownCurrency(ValueError):
    """A currency code the pack has no minor-unit rule for."""


def minor_units(currency: str) -> int:
    """The number of decimals of ``currency`` (ISO 4217), e.g. 0 for JPY, 3 for KWD."""
    try:
        return CURRENCY_MINOR_UNITS[currency]
    except KeyError:
        raise UnknownCurrency(
            f"currency {currency!r} has no minor-unit rule; add it to "
            "erpsync.models.reference.CURRENCY_MINOR_UNITS"
        ) from None


def quantum(currency: str) -> Decimal:
    """The smallest unit of ``currency`` as a Decimal exponent (``Decimal('0.01')`` for EUR)."""
    return Decimal(1).scaleb(-minor_units(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """``amount`` rounded to ``currency``'s minor units, half away from zero."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be a Decimal, not {type(amount).__name__}")
    return amount.quantize(quantum(currency), rounding=ROUNDING)


def to_minor(amount: Decimal, currency: str) -> int:
    """A rounded amount as an integer count of minor units (cents, yen, fils)."""
    rounded = round_money(amount, currency)
    return int(rounded.scaleb(minor_units(currency)))


def from_minor(units: int, currency: str) -> Decimal:
    """The inverse of :func:`to_minor`."""
    return Decimal(units).scaleb(-minor_units(currency)).quantize(quantum(currency))


def as_text(
    amount: Decimal | int | str | None,
    currency: str | None = None,
    *,
    grouped: bool = False,
    unknown: Literal["raw", "raise"] = "raw",
    empty: str = "-",
) -> str:
    """``amount`` as text for a report, a log line, an export or a mail.

    With a ``currency`` the amount is rounded to its minor units by the one rule
    (:func:`round_money`, so ``Decimal("12.5")`` EUR reads ``12.50``); a currency without a
    minor-unit rule shows the amount as it is (``unknown="raw"``, for texts that describe bad
    data) or raises :class:`UnknownCurrency` (``unknown="raise"``, for documents). Without a
    currency (a figure summed over currencies, a count of money) the amount is shown as it is.
    ``grouped`` adds thousands separators (``1,234.50``); ``None`` reads ``empty``.
    """
    if amount is None:
        return empty
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    if currency is not None:
        try:
            value = round_money(value, currency)
        except UnknownCurrency:
            if unknown == "raise":
                raise
    return f"{value:,}" if grouped else str(value)
