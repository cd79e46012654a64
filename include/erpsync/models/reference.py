"""Reference code lists used by the canonical models: ISO 3166-1 alpha-2 countries and the ISO
4217 currencies the pack supports with their minor units (the rounding rule, DESIGN.md)."""

from __future__ import annotations

#: ISO 4217 code -> minor units (decimals). A currency outside this table is quarantined.
CURRENCY_MINOR_UNITS: dict[str, int] = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2,
    "HUF": 2, "RON": 2, "BGN": 2, "ISK": 0, "TRY": 2, "CAD": 2, "AUD": 2, "NZD": 2, "JPY": 0,
    "CNY": 2, "HKD": 2, "SGD": 2, "KRW": 0, "INR": 2, "IDR": 2, "MYR": 2, "THB": 2, "PHP": 2,
    "TWD": 2, "VND": 0, "ZAR": 2, "BRL": 2, "MXN": 2, "ARS": 2, "CLP": 0, "COP": 2, "PEN": 2,
    "AED": 2, "SAR": 2, "QAR": 2, "ILS": 2, "EGP": 2, "MAD": 2, "NGN": 2, "KES": 2,
    "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3, "TND": 3, "LYD": 3, "IQD": 3,
}  # fmt: skip

#: The currencies the firm contracts and bills in (DESIGN.md "Money and control rules"): an
#: opportunity in another currency is refused at onboarding. A subset of CURRENCY_MINOR_UNITS.
FIRM_CURRENCIES: frozenset[str] = frozenset({"EUR", "USD", "GBP", "CHF", "DKK", "JPY", "KWD"})

COUNTRIES: frozenset[str] = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO
    DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU
    GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW
    KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU
    MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW
    PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT
    ZA ZM ZW""".split()
)
