"""The invoice arithmetic in plain Python: the reference the set-based SQL builder agrees with
to the minor unit (tests check it), and what docs/invoicing.md describes.

* a time line: ``round(sum(hours) x rate)`` (hours summed first, then priced, then rounded);
* an expense, milestone or retainer line: ``round(amount)``;
* tax per invoice and tax code: ``round(sum(line nets with that code) x rate / 100)``, the
  positive and the negative lines apart;
* total = sum(line nets) + sum(tax amounts).

Rounding is erpsync.money's: the currency's minor units, half away from zero.

**This is Business Central's rule** (the ERP is the control point for totals: what the approver
sees is what BC posts). BaseApp's Sales Line ``UpdateVATAmounts`` (table 37 "Sales Line",
BaseApp/Source/Base Application/Sales/Document/SalesLine.Table.al, github:
StefanMaron/MSDyn365BC.Code.History) gives each line ``Amount Including VAT := TotalAmount +
Amount + Round((TotalAmount + Amount) x VAT % / 100, Currency."Amount Rounding Precision",
Currency.VATRoundingDirection()) - TotalAmountInclVAT`` over the document's other lines with
the same VAT Identifier, Tax Group Code and sign of Amount; posting groups the same way in
"VAT Amount Line" (table 290, key VAT Identifier, VAT Calculation Type, Tax Group Code, Use Tax,
Positive; ``CalcVATAmountLines``). So the VAT of a document is, per VAT identifier and sign,
``Round(sum of line amounts x VAT % / 100)`` (:func:`bc_vat`), never a sum of per-line rounded
amounts. Rounding precision: the currency's "Amount Rounding Precision" (the pack's tenants set
it to the ISO 4217 minor unit, README "Setup data the pack expects"); direction: the currency's
"VAT Rounding Type", ``Nearest`` by default ("rounds up digits that are >= 0.5",
https://learn.microsoft.com/en-us/previous-versions/dynamicsnav-2016/hh171814(v=nav.90)), which
is erpsync.money's half away from zero (AL's ``Round(Number, Precision, '=')``: "Values of 5
or greater are rounded up", https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/developer/methods-auto/system/system-round-method).
The API's ``totalTaxAmount`` is the sum of the lines'
``Amount Including VAT - Amount`` = that per-group VAT; ``totalAmountIncludingTax`` = net + it.
"Invoice Rounding" (Sales & Receivables Setup) must stay off: it adds a rounding line at
posting, and the push then holds the invoice (its total would differ from the approved one).
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
    lines = list(lines)
    net = sum((amount for amount, _code in lines), Decimal(0))
    groups = bc_vat(lines, rates, currency)
    taxes: dict[str, Decimal] = defaultdict(Decimal)
    for (code, _positive), amount in groups.items():
        taxes[code] += amount
    tax = sum(taxes.values(), Decimal(0))
    return Priced(net=net, taxes=dict(taxes), tax=tax, total=net + tax)


def bc_vat(
    lines: Iterable[tuple[Decimal, str]], rates: dict[str, Decimal], currency: str
) -> dict[tuple[str, bool], Decimal]:
    """Business Central's VAT of one document (module docstring): per (VAT identifier, the
    line amount is >= 0), ``round(sum of the group's line amounts x VAT % / 100)``. The tax
    code stands for the VAT identifier (one VAT Posting Setup row per code and tax area)."""
    bases: dict[tuple[str, bool], Decimal] = defaultdict(Decimal)
    for amount, code in lines:
        bases[(code, amount >= 0)] += amount
    return {key: round_money(base * rates[key[0]] / 100, currency) for key, base in bases.items()}


def bc_line_vat(
    lines: Iterable[tuple[Decimal, str]], rates: dict[str, Decimal], currency: str
) -> list[Decimal]:
    """The VAT Business Central shows on each line (``totalTaxAmount`` of a salesInvoiceLine):
    in line order, ``round(group base so far x VAT %) - VAT of the group's earlier lines``."""
    seen: dict[tuple[str, bool], tuple[Decimal, Decimal]] = {}
    out = []
    for amount, code in lines:
        key = (code, amount >= 0)
        base, vat = seen.get(key, (Decimal(0), Decimal(0)))
        base += amount
        new_vat = round_money(base * rates[code] / 100, currency)
        out.append(new_vat - vat)
        seen[key] = (base, new_vat)
    return out


def per_line_tax(
    lines: Iterable[tuple[Decimal, str]], rates: dict[str, Decimal], currency: str
) -> Decimal:
    """Tax rounded per line: NOT the rule (shown in tests and docs for comparison)."""
    return sum((round_money(a * rates[c] / 100, currency) for a, c in lines), Decimal(0))
