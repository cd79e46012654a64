"""The one catalogue of reason codes for records that fail validation (``ops.quarantine``).

A reason code names what is wrong in words a data steward can act on; the detail next to it in
the quarantine row says which field and value. Pydantic errors are translated here, so every
quarantine row carries a code from this catalogue and nothing else.
"""

from __future__ import annotations

from typing import Any

MISSING_REQUIRED_FIELD = "missing_required_field"
INVALID_CURRENCY = "invalid_currency"
INVALID_COUNTRY = "invalid_country"
NEGATIVE_RATE = "negative_rate"
INVALID_NUMBER = "invalid_number"
INVALID_DATE = "invalid_date"
INVALID_DATE_RANGE = "invalid_date_range"
INVALID_EMAIL = "invalid_email"
MALFORMED_JSON_FIELD = "malformed_json_field"
MISSING_EXEMPTION_REASON = "missing_exemption_reason"
RATE_OUT_OF_RANGE = "rate_out_of_range"
INVALID_VALUE = "invalid_value"
UNSTORABLE_VALUE = "unstorable_value"
MAPPING_FAILED = "mapping_failed"
DATABASE_REFUSED = "database_refused"

#: code -> what it means (shown in docs and the quarantine review).
CATALOGUE: dict[str, str] = {
    MISSING_REQUIRED_FIELD: "a field the canonical model needs is absent or empty",
    INVALID_CURRENCY: "currency is not a supported ISO 4217 code",
    INVALID_COUNTRY: "country is not an ISO 3166-1 alpha-2 code",
    NEGATIVE_RATE: "a rate or amount is below zero",
    INVALID_NUMBER: "a numeric field is not a number (or is a float where exact money is needed)",
    INVALID_DATE: "a date field is not an ISO date",
    INVALID_DATE_RANGE: "valid_to is before valid_from",
    INVALID_EMAIL: "an e-mail address is malformed",
    MALFORMED_JSON_FIELD: "a JSON-encoded vendor field (e.g. Rate_Overrides__c) does not parse",
    MISSING_EXEMPTION_REASON: "a tax-exempt client has no exemption reason",
    RATE_OUT_OF_RANGE: "a tax rate percentage is outside 0..100",
    INVALID_VALUE: "a field has a value of the wrong type or shape",
    UNSTORABLE_VALUE: "a value PostgreSQL cannot store in its column (a number out of the "
    "column's range, text longer than the column allows)",
    MAPPING_FAILED: "the record's mapper or codec raised (a missing key, a value of a wrong "
    "type): the detail names the exception",
    DATABASE_REFUSED: "PostgreSQL refused the record when it was staged: the detail is the "
    "database's message",
}

# pydantic error type -> reason code (custom error types already are reason codes)
_PYDANTIC: dict[str, str] = {
    "missing": MISSING_REQUIRED_FIELD,
    "string_too_short": MISSING_REQUIRED_FIELD,
    "decimal_parsing": INVALID_NUMBER,
    "decimal_type": INVALID_NUMBER,
    "decimal_max_digits": INVALID_NUMBER,
    "decimal_max_places": INVALID_NUMBER,
    "int_parsing": INVALID_NUMBER,
    "int_type": INVALID_NUMBER,
    "int_from_float": INVALID_NUMBER,
    "finite_number": INVALID_NUMBER,
    "date_parsing": INVALID_DATE,
    "date_from_datetime_parsing": INVALID_DATE,
    "date_type": INVALID_DATE,
}


class RecordError(ValueError):
    """A vendor record that cannot be mapped; carries a catalogue reason code."""

    def __init__(self, reason_code: str, detail: str) -> None:
        if reason_code not in CATALOGUE:
            raise ValueError(f"unknown reason code {reason_code!r}")
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail


def from_validation_error(exc: Any) -> RecordError:
    """The first error of a pydantic ``ValidationError`` as a catalogue ``RecordError``."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"type": "value_error", "loc": (), "msg": str(exc)}
    code = first["type"] if first["type"] in CATALOGUE else _PYDANTIC.get(first["type"])
    loc = ".".join(str(p) for p in first.get("loc", ()))
    if code is None:
        code = INVALID_VALUE
    detail = f"{loc}: {first.get('msg', '')}" if loc else str(first.get("msg", ""))
    if len(errors) > 1:
        detail += f" (+{len(errors) - 1} more)"
    return RecordError(code, detail)
