"""Harvest API v2 list paging for the sandbox PSA: cursors, ``per_page`` and the envelope.

Harvest pages every list with ``page``/``per_page`` and answers with an envelope
``{"<resource>": [...], "per_page", "total_pages", "total_entries", "next_page",
"previous_page", "page", "links": {"first", "next", "previous", "last"}}`` whose ``links.next``
is a cursor URL (``?cursor=<base64 JSON>&per_page=2000&ref=next_cursor``); in cursor mode
``page``, ``next_page`` and ``previous_page`` are null except on the last page
(https://help.getharvest.com/api-v2/introduction/overview/pagination/).

Sandbox choices (documented in ``psa/app.py`` as well):

* Order: newest first, i.e. by creation, which the store's ``seq`` column records and keeps
  stable when a record is updated (``seq`` DESC). Harvest documents "most recently created
  first" for its lists; ids are handed out in creation order (``Store.next_int_id``), so this
  is id DESC for records the API creates (the generator may bulk-load in its own order).
* Cursors are keysets on that order: ``{"after": {"id": N, "seq": S}, "total": T}`` means
  "records created before record N". A read that follows ``links.next`` therefore returns every
  record that exists for the whole read exactly once, even while records are updated, created
  (new ones sort before the start and are not in this read) or deleted (they just vanish).
  ``page=N`` requests are numbered pages like Harvest's; when the same listing's page N-1 was
  served recently (a client walking ``page=1, 2, 3 ...``), page N continues by keyset after it
  (:class:`PagePositions`), otherwise it is an OFFSET, which is not stable under concurrent
  changes.
* ``total_entries`` is counted on the first page (or a ``page=`` request answered by OFFSET)
  and carried in the cursor, so a million-row read does not recount per page; it is the count
  when the read began.
* Bodies are the stored JSON text from ``Store.scan_rows`` (which also gives each row's
  ``seq`` for the cursor), spliced into the envelope bytes by :func:`build_envelope` without
  parsing or re-serialising them.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

MAX_PER_PAGE = 2000
DEFAULT_PER_PAGE = 2000


class PagingError(ValueError):
    """A paging parameter Harvest would refuse with 422."""


@dataclass(frozen=True)
class Cursor:
    """Decoded keyset cursor: ``direction`` is ``after`` (older records) or ``before``."""

    direction: str
    id: int | str
    seq: int | None  # None: a Harvest-made cursor ({"after": {"id": N}}), resolved by id
    total: int | None = None

    def encode(self) -> str:
        key: dict[str, Any] = {"id": self.id}
        if self.seq is not None:
            key["seq"] = self.seq
        payload: dict[str, Any] = {self.direction: key}
        if self.total is not None:
            payload["total"] = self.total
        return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = orjson.loads(raw)
            direction = "after" if "after" in data else "before"
            key = data[direction]
            total = data.get("total")
            seq = key.get("seq")
            return cls(
                direction,
                key["id"],
                None if seq is None else int(seq),
                None if total is None else int(total),
            )
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PagingError("The cursor parameter is invalid.") from exc


def parse_per_page(value: str | None) -> int:
    """``per_page`` 1..2000, default 2000; Harvest answers 422 outside that range."""
    if value is None or value == "":
        return DEFAULT_PER_PAGE
    try:
        per_page = int(value)
    except ValueError as exc:
        raise PagingError("per_page must be an integer between 1 and 2000") from exc
    if per_page < 1 or per_page > MAX_PER_PAGE:
        # Harvest: "If you provide a value for per_page that is too large, you will receive a
        # 422 Unprocessable Entity error." The exact message text is not documented.
        raise PagingError("per_page must be between 1 and 2000")
    return per_page


def parse_page(value: str | None) -> int:
    if value is None or value == "":
        return 1
    try:
        page = int(value)
    except ValueError as exc:
        raise PagingError("page must be a positive integer") from exc
    if page < 1:
        raise PagingError("page must be a positive integer")
    return page


def total_pages(total: int, per_page: int) -> int:
    return math.ceil(total / per_page) if total > 0 else 0


def page_url(
    base: str, filters: Sequence[tuple[str, str]], *, pairs: Sequence[tuple[str, str]]
) -> str:
    """``base`` + query: the paging pairs first (as Harvest prints them), then the filters."""
    return f"{base}?{urlencode([*pairs, *filters])}"


def build_envelope(
    resource: str,
    bodies: Sequence[str],
    *,
    per_page: int,
    total: int,
    page: int | None,
    next_page: int | None,
    previous_page: int | None,
    links: Mapping[str, str | None],
) -> bytes:
    """The list response as bytes: stored JSON bodies spliced in without re-serialising."""
    meta = orjson.dumps(
        {
            "per_page": per_page,
            "total_pages": total_pages(total, per_page),
            "total_entries": total,
            "next_page": next_page,
            "previous_page": previous_page,
            "page": page,
            "links": links,
        }
    )
    head = b'{"' + resource.encode() + b'":['
    joined = ",".join(bodies).encode()
    return b"".join((head, joined, b"],", meta[1:]))


class PagePositions:
    """Where recently served ``page=N`` pages ended, so ``page=N+1`` continues by keyset.

    Connectors such as Singer's tap-harvest walk ``page=1, 2, 3 ...``. Answering page N+1 with
    ``OFFSET N*per_page`` costs a scan of every skipped row (seconds per page on a million time
    entries) and repeats or skips records when others are created or deleted meanwhile. When
    the same listing's page N was served in the last ``ttl`` seconds, page N+1 starts right after
    its last record instead (and reuses its ``total_entries``, like a cursor); the caller checks
    that this record still exists with the same ``seq`` (not deleted, no reset since), otherwise
    OFFSET applies.
    """

    def __init__(self, capacity: int = 4096, ttl: float = 600.0) -> None:
        self._capacity = capacity
        self._ttl = ttl
        self._lock = threading.Lock()
        self._ends: OrderedDict[tuple[Any, ...], tuple[int, str, int, float]] = OrderedDict()

    def get(self, listing: tuple[Any, ...], page: int) -> tuple[int, str, int] | None:
        """``(seq, id, total_entries)`` of the last record of ``page`` of ``listing``."""
        with self._lock:
            found = self._ends.get((listing, page))
            if found is None:
                return None
            if time.monotonic() - found[3] > self._ttl:
                del self._ends[(listing, page)]
                return None
            return found[0], found[1], found[2]

    def put(
        self, listing: tuple[Any, ...], page: int, last_seq: int, last_id: str, total: int
    ) -> None:
        with self._lock:
            self._ends[(listing, page)] = (last_seq, last_id, total, time.monotonic())
            self._ends.move_to_end((listing, page))
            while len(self._ends) > self._capacity:
                self._ends.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._ends.clear()
