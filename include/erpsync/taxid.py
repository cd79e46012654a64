"""VAT / tax id validation with python-stdnum, aware of the client's country.

A CRM account carries a billing country and a VAT id. The id is checked with the country's
python-stdnum module (check digits, length, format), never with a regex:

* EU member states: ``stdnum.eu.vat``. The id must carry the country's VAT prefix (Greece uses
  ``EL``); an id typed without its prefix gets it added, an id with another member state's
  prefix is rejected (a German client with a French VAT id is an onboarding error, not a typo).
* United Kingdom: ``stdnum.gb.vat`` (``GB`` prefix; ``XI`` for Northern Ireland goes through
  ``stdnum.eu.vat``).
* Any other country: ``stdnum.get_cc_module(cc, "vat")`` when python-stdnum has one (Switzerland,
  Norway's MVA alias, ...). When it has none, the result is ``not_validated``: a distinct state
  that says "we could not check this", never a silent pass.

Docs: https://arthurdejong.org/python-stdnum/doc/stable/stdnum.eu.vat
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stdnum import get_cc_module
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError
from stdnum.gb import vat as gb_vat

__all__ = ["TaxIdResult", "TaxIdStatus", "validate"]

TaxIdStatus = Literal["valid", "invalid", "missing", "not_validated"]

#: ISO 3166 country code -> the VAT prefix stdnum.eu.vat expects (Greece is the exception).
_EU_PREFIX = {cc.upper(): ("EL" if cc == "gr" else cc.upper()) for cc in eu_vat.MEMBER_STATES}
_EU_PREFIX.pop("XI", None)  # Northern Ireland is a VAT prefix, not an ISO country
_EU_PREFIXES = set(_EU_PREFIX.values()) | {"XI", "GR"}


@dataclass(frozen=True)
class TaxIdResult:
    """The outcome of one check.

    ``valid`` is True only when python-stdnum confirmed the id. ``status`` tells the other
    cases apart: ``invalid`` (checked and wrong: block the client), ``missing`` (no id given),
    ``not_validated`` (no validator for the country: nothing was checked). ``normalized`` is the
    compact form with its country prefix when the id is valid, else None. ``reason`` says why in
    words a finance user can act on (None when valid).
    """

    valid: bool
    normalized: str | None
    reason: str | None
    status: TaxIdStatus

    @property
    def blocks_write_back(self) -> bool:
        """An id that was checked and failed blocks the client's write-back."""
        return self.status == "invalid"


def _ok(normalized: str) -> TaxIdResult:
    return TaxIdResult(True, normalized, None, "valid")


def _bad(reason: str) -> TaxIdResult:
    return TaxIdResult(False, None, reason, "invalid")


def _describe(exc: ValidationError) -> str:
    # stdnum's messages: "The number has an invalid length.", "The number's checksum or check
    # digit is invalid.", ... ; keep them, they are precise and contain only the id's shape.
    return str(exc.message if hasattr(exc, "message") else exc).rstrip(".")


def _validate_eu(country: str, raw: str) -> TaxIdResult:
    prefix = _EU_PREFIX[country]
    compact = "".join(ch for ch in raw if ch.isalnum()).upper()
    if compact[:2].isalpha() and compact[:2] in _EU_PREFIXES | {"GB"}:
        given = compact[:2]
        if given == "GR" and prefix == "EL":
            compact = "EL" + compact[2:]
        elif given != prefix:
            return _bad(f"VAT id prefix {given} does not match the client country {country}")
    elif compact[:2] != prefix:
        compact = prefix + compact
    try:
        return _ok(eu_vat.validate(compact))
    except ValidationError as exc:
        return _bad(f"{country} VAT id failed validation: {_describe(exc)}")


def _validate_gb(raw: str) -> TaxIdResult:
    compact = "".join(ch for ch in raw if ch.isalnum()).upper()
    if compact.startswith("XI"):  # Northern Ireland traders
        try:
            return _ok(eu_vat.validate(compact))
        except ValidationError as exc:
            return _bad(f"GB (XI) VAT id failed validation: {_describe(exc)}")
    if compact[:2].isalpha() and not compact.startswith(("GB", "GD", "HA")):
        return _bad(f"VAT id prefix {compact[:2]} does not match the client country GB")
    try:
        number = gb_vat.validate(compact)
    except ValidationError as exc:
        return _bad(f"GB VAT id failed validation: {_describe(exc)}")
    return _ok(number if number.startswith("GB") else "GB" + number)


def validate(country: str | None, vat_id: str | None) -> TaxIdResult:
    """Check ``vat_id`` for a client in ``country`` (ISO 3166 alpha-2, any case)."""
    raw = (vat_id or "").strip()
    if not raw:
        return TaxIdResult(False, None, "no VAT id given", "missing")
    cc = (country or "").strip().upper()
    if not cc:
        return TaxIdResult(
            False, None, "no country given: the VAT id cannot be checked", "not_validated"
        )
    if cc == "EL":
        cc = "GR"
    if cc in _EU_PREFIX:
        return _validate_eu(cc, raw)
    if cc in ("GB", "UK"):
        return _validate_gb(raw)
    module = get_cc_module(cc.lower(), "vat") if len(cc) == 2 and cc.isalpha() else None
    if module is None:
        return TaxIdResult(
            False,
            None,
            f"python-stdnum has no VAT validator for {cc}: the id was not checked",
            "not_validated",
        )
    try:
        return _ok(module.validate(raw))
    except ValidationError as exc:
        return _bad(f"{cc} tax id failed validation: {_describe(exc)}")
