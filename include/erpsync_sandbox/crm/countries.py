"""The org's country picklist (State and Country/Territory Picklists on): ISO code -> label.

Salesforce keeps ``BillingCountryCode`` (ISO 3166-1 alpha-2) and ``BillingCountry`` (the
integration value, by default the ISO-standard English name) in step. The names are Salesforce's
standard list; where it is not spelled out below, CLDR's English name (``babel``) is the same.
https://help.salesforce.com/s/articleView?id=xcloud.admin_state_country_picklists_standard_countries.htm
https://help.salesforce.com/s/articleView?id=xcloud.state_country_and_territory_picklist_fields.htm
"""

from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["code_for", "is_code", "label_for"]

#: Salesforce's standard names (ISO 3166 English short names) where CLDR's English name differs.
SALESFORCE_NAMES: dict[str, str] = {
    "AX": "Aland Islands",
    "BL": "Saint Barthélemy",
    "BN": "Brunei Darussalam",
    "BO": "Bolivia, Plurinational State of",
    "BQ": "Bonaire, Sint Eustatius and Saba",
    "CD": "Congo, the Democratic Republic of the",
    "CG": "Congo",
    "CI": "Cote d'Ivoire",
    "CV": "Cape Verde",
    "FK": "Falkland Islands (Malvinas)",
    "FM": "Micronesia, Federated States of",
    "HK": "Hong Kong",
    "IR": "Iran, Islamic Republic of",
    "KN": "Saint Kitts and Nevis",
    "KP": "Korea, Democratic People's Republic of",
    "KR": "Korea, Republic of",
    "LA": "Lao People's Democratic Republic",
    "LC": "Saint Lucia",
    "MD": "Moldova, Republic of",
    "MF": "Saint Martin (French part)",
    "MK": "Macedonia, the former Yugoslav Republic of",
    "MM": "Myanmar",
    "MO": "Macao",
    "PM": "Saint Pierre and Miquelon",
    "PS": "Palestine",
    "RU": "Russian Federation",
    "SH": "Saint Helena, Ascension and Tristan da Cunha",
    "SX": "Sint Maarten (Dutch part)",
    "SY": "Syrian Arab Republic",
    "TR": "Turkey",
    "TZ": "Tanzania, United Republic of",
    "VA": "Holy See (Vatican City State)",
    "VC": "Saint Vincent and the Grenadines",
    "VE": "Venezuela, Bolivarian Republic of",
    "VG": "Virgin Islands, British",
    "VN": "Viet Nam",
}


@functools.cache
def _cldr() -> dict[str, str]:
    from babel import Locale

    names = Locale("en").territories
    return {code: name for code, name in names.items() if len(code) == 2 and code.isalpha()}


def _norm(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", " ", plain.casefold()).strip()


def is_code(code: str) -> bool:
    """True if ``code`` is a country of the picklist (codes are case-insensitive)."""
    return code.upper() in _cldr()


def label_for(code: str) -> str:
    """The integration value stored in ``BillingCountry`` for ``code``."""
    code = code.upper()
    return SALESFORCE_NAMES.get(code) or _cldr()[code]


@functools.cache
def _by_label() -> dict[str, str]:
    return {_norm(label_for(code)): code for code in _cldr()}


def code_for(label: str) -> str | None:
    """The code whose integration value is ``label`` (Salesforce matches the label exactly, up
    to case; the sandbox also ignores accents and punctuation), or None."""
    return _by_label().get(_norm(label))
