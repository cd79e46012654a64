"""Deterministic identifiers and tax ids for the sandbox firm.

* Salesforce 18-character ids (15-character id + 3-character case-safe suffix, prefix ``001``
  Account, ``003`` Contact, ``005`` User, ``006`` Opportunity):
  https://help.salesforce.com/s/articleView?id=000385008
* Business Central GUIDs (random UUID4 from the generator's RNG).
* EU/UK VAT ids with correct check digits, validated with python-stdnum
  (https://arthurdejong.org/python-stdnum/doc/stable/stdnum.eu.vat); invalid ones are valid ids
  with a broken check digit, so they look plausible but fail validation.
"""

from __future__ import annotations

import random
import uuid

from stdnum.eu import vat as eu_vat
from stdnum.gb import vat as gb_vat

__all__ = ["guid", "invalid_vat", "sf_id", "valid_vat", "vat_is_valid"]

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def _b62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "".join(reversed(out))


def sf_id(prefix: str, n: int) -> str:
    """The ``n``-th Salesforce id with key prefix ``prefix`` (18 chars, case-safe suffix)."""
    base = f"{prefix}Dn00{_b62(n, 8)}"
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(base[chunk * 5 : chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        suffix += _SUFFIX[bits]
    return base + suffix


def guid(rng: random.Random) -> str:
    """A UUID4 drawn from ``rng`` (Business Central style, lowercase)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def vat_is_valid(vat_id: str) -> bool:
    """Whether ``vat_id`` (with country prefix) passes python-stdnum's check."""
    if vat_id.upper().startswith("GB"):
        return bool(gb_vat.is_valid(vat_id))
    return bool(eu_vat.is_valid(vat_id))


def _digits(rng: random.Random, n: int, first_nonzero: bool = True) -> str:
    s = "".join(rng.choice("0123456789") for _ in range(n))
    if first_nonzero and s[0] == "0":
        s = str(rng.randint(1, 9)) + s[1:]
    return s


def _candidate(country: str, rng: random.Random) -> list[str]:
    """Candidates for one random number: the check position(s) varied over all values."""
    if country == "DE":
        b = _digits(rng, 8)
        return [f"DE{b}{d}" for d in range(10)]
    if country == "NL":
        b = _digits(rng, 8)
        return [f"NL{b}{d}B01" for d in range(10)]
    if country == "AT":
        b = _digits(rng, 7)
        return [f"ATU{b}{d}" for d in range(10)]
    if country == "DK":
        b = _digits(rng, 7)
        return [f"DK{b}{d}" for d in range(10)]
    if country == "PL":
        b = _digits(rng, 9)
        return [f"PL{b}{d}" for d in range(10)]
    if country == "IT":
        b = _digits(rng, 7, first_nonzero=False) + f"{rng.randint(1, 100):03d}"
        return [f"IT{b}{d}" for d in range(10)]
    if country == "BE":
        b = "0" + _digits(rng, 7)
        return [f"BE{b}{97 - int(b) % 97:02d}"]
    if country == "FR":
        from stdnum import luhn

        siren = _digits(rng, 8)
        siren += luhn.calc_check_digit(siren)
        key = (12 + 3 * (int(siren) % 97)) % 97
        return [f"FR{key:02d}{siren}"]
    if country == "IE":
        b = _digits(rng, 7, first_nonzero=False)
        return [f"IE{b}{c}" for c in "ABCDEFGHIJKLMNOPQRSTUVW"]
    if country == "GB":
        b = _digits(rng, 7)
        return [f"GB{b}{d:02d}" for d in range(100)]
    raise ValueError(f"no VAT format for {country}")


def valid_vat(country: str, rng: random.Random) -> str:
    """A random VAT id for ``country`` that python-stdnum accepts."""
    for _ in range(1000):
        for cand in _candidate(country, rng):
            if vat_is_valid(cand):
                return cand
    raise RuntimeError(f"could not make a valid VAT id for {country}")


def invalid_vat(country: str, rng: random.Random) -> str:
    """A plausible VAT id for ``country`` (right format) whose check digit is wrong."""
    good = valid_vat(country, rng)
    for _ in range(100):
        tail = good[-1]
        if tail.isdigit():
            bad = good[:-1] + str((int(tail) + rng.randint(1, 9)) % 10)
        else:  # NL ...B01 / IE letter: break a digit in the middle instead
            i = len(good) - 4
            bad = good[:i] + str((int(good[i]) + rng.randint(1, 9)) % 10) + good[i + 1 :]
        if not vat_is_valid(bad):
            return bad
    raise RuntimeError(f"could not make an invalid VAT id for {country}")
