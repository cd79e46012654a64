"""Country labels <-> ISO 3166-1 alpha-2 codes, for Salesforce address country fields.

In an org with State and Country/Territory Picklists, ``BillingCountryCode`` holds the ISO code
and ``BillingCountry`` the country's *integration value*, which defaults to the ISO-standard
name ("Germany", "Korea, Republic of"); without the picklists ``BillingCountry`` is free text.
erpsync reads the code and falls back to the label (:func:`iso_from_label`) when the code is
empty. Names come from the CLDR English territory names shipped with ``babel`` (a dependency of
Airflow) plus the ISO-standard spellings of Salesforce's standard country list where they differ.

* Address compound fields (``CountryCode`` only with the picklists on):
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/compound_fields_address.htm
* Standard countries and territories of the picklists (ISO code, name):
  https://help.salesforce.com/s/articleView?id=xcloud.admin_state_country_picklists_standard_countries.htm
* Integration value defaults to the full ISO-standard name:
  https://help.salesforce.com/s/articleView?id=xcloud.state_country_and_territory_picklist_fields.htm
"""

from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["iso_from_label", "is_iso_code", "salesforce_label"]

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

#: Other spellings an operator commonly types into a free-text country field.
_ALIASES: dict[str, str] = {
    "USA": "US",
    "U.S.A.": "US",
    "United States of America": "US",
    "UK": "GB",
    "Great Britain": "GB",
    "England": "GB",
    "Holland": "NL",
    "The Netherlands": "NL",
    "Czech Republic": "CZ",
    "Deutschland": "DE",
}


def _norm(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.replace("’", "'"))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", " ", plain.casefold()).strip()


@functools.cache
def _cldr() -> dict[str, str]:
    from babel import Locale

    names = Locale("en").territories
    return {code: name for code, name in names.items() if len(code) == 2 and code.isalpha()}


@functools.cache
def _by_label() -> dict[str, str]:
    table: dict[str, str] = {}
    for code, name in _cldr().items():
        table[_norm(name)] = code
    for code, name in SALESFORCE_NAMES.items():
        table[_norm(name)] = code
    for alias, code in _ALIASES.items():
        table[_norm(alias)] = code
    return table


def is_iso_code(value: str | None) -> bool:
    """True if ``value`` is an assigned ISO 3166-1 alpha-2 code (upper case)."""
    return bool(value) and len(value) == 2 and value in _cldr()  # type: ignore[arg-type]


def iso_from_label(label: str | None) -> str | None:
    """The ISO code for a country label ("Germany", "Korea, Republic of") or a code ("de");
    None when it names no country."""
    if not label or not label.strip():
        return None
    text = label.strip()
    if len(text) == 2 and is_iso_code(text.upper()):
        return text.upper()
    return _by_label().get(_norm(text))


def salesforce_label(code: str) -> str:
    """The default integration value (label) Salesforce stores in ``BillingCountry`` for an
    ISO code when State and Country/Territory Picklists are on."""
    code = code.upper()
    if code in SALESFORCE_NAMES:
        return SALESFORCE_NAMES[code]
    try:
        return _cldr()[code]
    except KeyError:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code") from None
