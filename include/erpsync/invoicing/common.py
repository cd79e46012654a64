"""Small helpers every invoicing module shares: JSON-safe values and the parts of a run.

Public so the builder, approval, credit notes and the push import one copy instead of each
other's private helpers. The parts of a run (:func:`erpsync.audit.run_parts`) live in the audit
module, which every package may import; they are re-exported here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow, class_row, dict_row

from erpsync.audit import RunLike, run_parts

__all__ = [
    "Connection",
    "Params",
    "RunLike",
    "class_rows",
    "dict_one",
    "dict_rows",
    "jsonable",
    "run_parts",
    "scalar",
]

#: A warehouse connection as the invoicing functions take it (tuple rows by default; a query
#: that returns more than two columns asks its cursor for named rows).
Connection = psycopg.Connection[TupleRow]
T = TypeVar("T")

#: Query parameters: named (``%(name)s``) or positional (``%s``).
Params = Mapping[str, object] | Sequence[object] | None


def jsonable(value: Any) -> Any:
    """``value`` with Decimals as strings, dates as ISO text and tuples as lists (for JSON).

    Typed ``Any`` in and out: it keeps the shape of what it is given (a dict stays a dict)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def dict_rows(conn: Connection, query: str, params: Params = None) -> list[dict[str, Any]]:
    """The rows of ``query`` as dicts by column name (psycopg's ``dict_row``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def dict_one(conn: Connection, query: str, params: Params = None) -> dict[str, Any] | None:
    """The first row of ``query`` as a dict by column name, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def scalar(conn: Connection, query: str, params: Params = None) -> Any:
    """The first column of the one row ``query`` returns (it must return a row)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]


def class_rows(conn: Connection, row_type: type[T], query: str, params: Params = None) -> list[T]:
    """The rows of ``query`` as ``row_type`` instances, by column name (``class_row``)."""
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()
