"""What PostgreSQL can store: every canonical row is checked against its core table's columns
before it is staged, so one unstorable value quarantines one record instead of failing the run.

The checks follow the column types the warehouse declares (read once per run from
``information_schema.columns``), not a list kept by hand:

* **Text** (``text``, ``varchar(n)``, ``char(n)``, and strings inside ``json``/``jsonb``):
  PostgreSQL's text types cannot hold the NUL character (U+0000), and UTF-8 cannot encode an
  unpaired UTF-16 surrogate (U+D800..U+DFFF, which JSON's ``\\uD800`` escapes can produce).
  **Cleaning rule:** NUL characters are removed and unpaired surrogates are replaced by
  U+FFFD (the Unicode replacement character) in the canonical row; the vendor's payload is
  landed in ``raw.vendor_records`` exactly as received (type ``json`` keeps ``\\u0000``), so
  nothing is lost. Text longer than a bounded column (``varchar(n)``/``char(n)``) is not cut:
  the record is quarantined ``unstorable_value``.
* **Numbers**: ``smallint``/``integer``/``bigint`` ranges; ``numeric(p, s)``: at most
  ``p - s`` digits before the point; unconstrained ``numeric``: at most 131,072 digits before
  the point and 16,383 after (PostgreSQL's limits); NaN and infinities never reach a money
  column. Out of range: quarantined ``unstorable_value``.
* **Dates and timestamps**: Python's ``date``/``datetime`` (years 1..9999) always fit
  PostgreSQL's ranges (4713 BC..5874897 AD; timestamps to 294276 AD); a vendor date outside
  Python's range fails validation first (``invalid_date``).

Reference: PostgreSQL 16 manual, "8.1 Numeric Types", "8.3 Character Types" ("the character
with code zero cannot be stored"), "8.14 JSON Types" (jsonb rejects ``\\u0000``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from erpsync.models.reasons import UNSTORABLE_VALUE, RecordError

if TYPE_CHECKING:
    import psycopg

__all__ = ["ColumnType", "StorableCheck", "clean_text", "clean_value", "column_types"]

_INT_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
#: PostgreSQL's numeric without a declared precision.
_NUMERIC_MAX_INT_DIGITS = 131_072
_NUMERIC_MAX_FRAC_DIGITS = 16_383


def _has_bad_char(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def clean_text(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL removed, unpaired surrogates -> U+FFFD."""
    if not _has_bad_char(text):
        return text
    text = text.replace("\x00", "")
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def clean_value(value: Any) -> Any:
    """``value`` with :func:`clean_text`'s rule applied to every string in it (nested too)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_value(v) for v in value)
    return value


@dataclass(frozen=True)
class ColumnType:
    """A core column as ``information_schema.columns`` describes it."""

    name: str
    data_type: str
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None

    def problem(self, value: Any) -> str | None:
        """Why PostgreSQL would refuse ``value`` (already text-cleaned) here, or None."""
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, str):
            if self.max_length is not None and len(value) > self.max_length:
                return f"{len(value)} characters, the column holds at most {self.max_length}"
            return None
        if isinstance(value, int) and self.data_type in _INT_RANGES:
            low, high = _INT_RANGES[self.data_type]
            if not low <= value <= high:
                return f"{value} is outside the {self.data_type} range {low}..{high}"
            return None
        if isinstance(value, int | Decimal) and self.data_type == "numeric":
            return self._numeric_problem(Decimal(value))
        if isinstance(value, dt.date):
            return None
        return None

    def _numeric_problem(self, value: Decimal) -> str | None:
        if not value.is_finite():
            return f"{value} is not a finite number"
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        int_digits = max(len(digits) + exponent, 0) if any(digits) else 0
        frac_digits = max(-exponent, 0)
        if self.precision is not None:
            allowed = self.precision - (self.scale or 0)
            if int_digits > allowed:
                return (
                    f"{_short(value)} has {int_digits} digits before the point; "
                    f"numeric({self.precision},{self.scale or 0}) holds {allowed}"
                )
            return None
        if int_digits > _NUMERIC_MAX_INT_DIGITS or frac_digits > _NUMERIC_MAX_FRAC_DIGITS:
            return f"{_short(value)} is beyond PostgreSQL's numeric range"
        return None


def _short(value: Decimal) -> str:
    text = f"{value:E}" if abs(value.adjusted()) > 30 else str(value)
    return text[:60]


def column_types(
    conn: psycopg.Connection[Any], table: str, columns: list[str]
) -> dict[str, ColumnType]:
    """The declared types of ``columns`` of ``table`` (``schema.name``)."""
    schema, _, name = table.partition(".")
    rows = conn.execute(
        """SELECT column_name, data_type, character_maximum_length, numeric_precision,
                  numeric_scale
             FROM information_schema.columns
            WHERE table_schema = %s AND table_name = %s AND column_name = ANY(%s)""",
        (schema, name, list(columns)),
    ).fetchall()
    types = {}
    for column, data_type, max_length, precision, scale in rows:
        # numeric without a declared precision reports the precision as NULL
        types[column] = ColumnType(column, data_type, max_length, precision, scale)
    return types


class StorableCheck:
    """Cleans a canonical row's text in place and refuses what PostgreSQL cannot store."""

    def __init__(self, types: dict[str, ColumnType]) -> None:
        self.types = types

    def __call__(self, row: dict[str, Any]) -> None:
        """Clean ``row`` (in place); raise :class:`RecordError` ``unstorable_value`` if a value
        still cannot be stored in its column."""
        for column, value in row.items():
            if isinstance(value, str | dict | list):
                cleaned = clean_value(value)
                if cleaned is not value:
                    row[column] = value = cleaned
            kind = self.types.get(column)
            if kind is None:
                continue
            problem = kind.problem(value)
            if problem is not None:
                raise RecordError(UNSTORABLE_VALUE, f"{column}: {problem}")
