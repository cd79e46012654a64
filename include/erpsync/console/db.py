"""Typed reads of a psycopg cursor that the console's page modules share.

The console's connections use psycopg's default tuple rows (``Connection[TupleRow]``), whose
``fetchone()`` is ``tuple | None`` and whose ``description`` is ``list[Column] | None``
(https://www.psycopg.org/psycopg3/docs/api/cursors.html#psycopg.Cursor.fetchone): these helpers
say once what a query that always returns a row, or a row as a dict, means.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor
from psycopg.rows import TupleRow


def one(cur: Cursor[TupleRow]) -> tuple[Any, ...]:
    """The one row of a query that always returns one (an aggregate, a function call)."""
    row = cur.fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row


def scalar(cur: Cursor[TupleRow]) -> Any:
    """The first column of :func:`one`'s row (``count(*)``, ``max(...)``, a lock function)."""
    return one(cur)[0]


def dicts(cur: Cursor[TupleRow]) -> list[dict[str, Any]]:
    """Every remaining row as a dict keyed by column name."""
    cols = [d.name for d in cur.description or ()]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
