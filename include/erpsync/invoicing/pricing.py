"""The invoice arithmetic in plain Python: the reference the set-based SQL builder agrees with
to the minor unit (tests check it), and what docs/invoicing.md describes.

* a time line: ``round(sum(hours) x rate)`` (hours summed first, then priced, then rounded);
* an expense, milestone or retainer line: ``round(amount)``;
* tax per invoice and tax code: ``round(sum(line nets with that code) x rate / 100)``;
* total = sum(line nets) + sum(tax amounts).

Rounding is erpsync.money's: the currency's minor units, half away from zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from erpsync.money import round_money


def time_line_net(hours: Iterable[Decimal], rate: Decimal, currency: str) -> Decimal:
    return round_money(sum(hours, Decimal(0)) * rate, currency)


def amount_line_net(amount: Decimal, currency: str) -> Decimal:
    return round_money(amount, currency)


@dataclass(frozen=True)
class Priced:
    net: Decimal
    taxes: dict[str, Decimal]
    tax: Decimal
    total: Decimal


def price_invoice(
    lines: Iterable[tuple[Decimal, str]], rates: dict[str, Decimal], currency: str
) -> Priced:
    """``lines``: (rounded net, tax code); ``rates``: tax code -> percent."""
    bases: dict[str, Decimal] = defaultdict(Decimal)
    net = Decimal(0)
    for amount, code in lines:
        net += amount
        bases[code] += amount
    taxes = {code: round_money(base * rates[code] / 100, currency) for code, base in bases.items()}
    tax = sum(taxes.values(), Decimal(0))
    return Priced(net=net, taxes=taxes, tax=tax, total=net + tax)


def per_line_tax(
    lines: Iterable[tuple[Decimal, str]], rates: dict[str, Decimal], currency: str
) -> Decimal:
    """Tax rounded per line: NOT the rule (shown in tests and docs for comparison)."""
    return sum((round_money(a * rates[c] / 100, currency) for a, c in lines), Decimal(0))
