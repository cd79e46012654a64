"""Incremental cursors that lose nothing at the boundary.

An incremental read asks the vendor for records modified *at or after* a lower bound
(inclusive: ``>=``), never strictly after the last value seen: with ``>``, records that share
the watermark's timestamp but were written after the previous read (ties, common with
second-precision stamps) would be lost. The price of ``>=`` is that the previous read's
boundary records come back; :class:`BoundaryDedupe` drops those that are unchanged, keyed by
``(id, digest of the record)`` of everything seen at or after the bound, so a re-read emits
exactly the records that changed.

The bound is the watermark truncated to the second (the precision every vendor filter accepts)
minus ``lookback`` (default 10 minutes). The lookback covers records that change *while* a read
is paging: their new version may be stamped before the highest stamp the read saw and so fall
behind the watermark; the next read still reaches back over them, and the digest tells a new
version from one already loaded.

Per vendor (filters built by the helpers below):

* Salesforce: ``WHERE SystemModstamp >= 2026-11-02T09:00:00Z ORDER BY SystemModstamp, Id``
  (https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm;
  SystemModstamp is indexed and also moves on system changes, so it is the replication cursor).
* Harvest: ``updated_since=2026-11-02T09:00:00Z`` (inclusive, ``updated_at`` in whole seconds;
  https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/).
* Business Central: ``$filter=lastModifiedDateTime ge 2026-11-02T09:00:00Z``
  (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/developer/devenv-connect-apps-filtering).

State round-trip for ``ops.sync_watermarks``: ``cursor_ts`` = :attr:`Watermark.modstamp`,
``cursor_state`` = :meth:`Watermark.to_state` (``{"seen": {id: digest}, "lookback_seconds"}``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "DEFAULT_LOOKBACK",
    "BoundaryDedupe",
    "Watermark",
    "bc_incremental_filter",
    "harvest_incremental_params",
    "parse_modstamp",
    "record_digest",
    "salesforce_incremental_soql",
]

DEFAULT_LOOKBACK = dt.timedelta(minutes=10)
#: Keys whose value changes without the record changing (Salesforce ``attributes`` is stable,
#: but OData annotations other than the ETag are request-dependent).
_VOLATILE = frozenset({"@odata.context"})


def parse_modstamp(value: Any) -> dt.datetime | None:
    """A vendor modstamp as an aware UTC datetime: ``2026-11-02T09:00:00.000+0000``
    (Salesforce), ``...Z`` (Harvest), ``...T09:00:00.1234567Z`` (Business Central)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    s = str(value).strip().replace("Z", "+00:00")
    if len(s) >= 5 and s[-5] in "+-" and s[-3] != ":":
        s = s[:-2] + ":" + s[-2:]
    if "." in s:
        head, _, rest = s.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
        s = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    parsed = dt.datetime.fromisoformat(s)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def record_digest(record: Mapping[str, Any]) -> str:
    """A short stable digest of a record's content (key order does not matter)."""
    body = {k: v for k, v in record.items() if k not in _VOLATILE}
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Watermark:
    """Where the last committed incremental read got to.

    ``modstamp``: the highest modstamp loaded (None = never synced: read everything).
    ``seen``: ``{id: digest}`` of the records loaded with a modstamp at or after :attr:`bound`.
    """

    modstamp: dt.datetime | None = None
    seen: Mapping[str, str] = field(default_factory=dict)
    lookback: dt.timedelta = DEFAULT_LOOKBACK

    @property
    def bound(self) -> dt.datetime | None:
        """The inclusive lower bound of the next read (whole seconds, minus the lookback)."""
        if self.modstamp is None:
            return None
        return self.modstamp.replace(microsecond=0) - self.lookback

    def to_state(self) -> dict[str, Any]:
        return {"seen": dict(self.seen), "lookback_seconds": self.lookback.total_seconds()}

    @classmethod
    def from_state(
        cls, cursor_ts: dt.datetime | None, state: Mapping[str, Any] | None
    ) -> Watermark:
        state = state or {}
        lookback = state.get("lookback_seconds")
        return cls(
            modstamp=parse_modstamp(cursor_ts),
            seen=dict(state.get("seen") or {}),
            lookback=DEFAULT_LOOKBACK if lookback is None else dt.timedelta(seconds=lookback),
        )


class BoundaryDedupe:
    """Filters the pages of an inclusive incremental read and computes the next watermark.

    ``pages(...)`` yields each page without the records already loaded unchanged (same id and
    digest in the watermark's ``seen``). Memory stays bounded: only records within the lookback
    of the highest modstamp so far are remembered. :meth:`next_watermark` is valid once the
    read is complete; store it only after the load that used the records commits.
    """

    def __init__(
        self,
        watermark: Watermark | None = None,
        *,
        modstamp_field: str,
        id_field: str = "id",
        lookback: dt.timedelta | None = None,
        key: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> None:
        self.watermark = watermark or Watermark()
        self.modstamp_field = modstamp_field
        self.id_field = id_field
        self.lookback = self.watermark.lookback if lookback is None else lookback
        self._key = key or (lambda r: str(r[id_field]))
        self._observed: dict[str, tuple[dt.datetime, str]] = {}
        self._high: dt.datetime | None = self.watermark.modstamp
        self.read = 0
        self.skipped = 0

    PRUNE_AT = 50_000

    def filter(self, page: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        out = []
        seen = self.watermark.seen
        for record in page:
            self.read += 1
            rid = self._key(record)
            stamp = parse_modstamp(record.get(self.modstamp_field))
            digest = record_digest(record)
            if stamp is not None:
                self._observed[rid] = (stamp, digest)
                if self._high is None or stamp > self._high:
                    self._high = stamp
            if seen.get(rid) == digest:
                self.skipped += 1
                continue
            out.append(record)
        if len(self._observed) > self.PRUNE_AT and self._high is not None:
            bound = self._high.replace(microsecond=0) - self.lookback
            self._observed = {k: v for k, v in self._observed.items() if v[0] >= bound}
        return out

    def pages(
        self, pages: Iterable[Sequence[Mapping[str, Any]]]
    ) -> Iterator[list[Mapping[str, Any]]]:
        for page in pages:
            kept = self.filter(page)
            if kept:
                yield kept

    def next_watermark(self) -> Watermark:
        """The watermark after this read: highest modstamp observed (never lower than before)
        and the digests of every record observed at or after the new bound."""
        high = self._high
        if high is None:
            return Watermark(None, {}, self.lookback)
        bound = high.replace(microsecond=0) - self.lookback
        seen = {rid: d for rid, (s, d) in self._observed.items() if s >= bound}
        return Watermark(high, seen, self.lookback)


# --------------------------------------------------------------------------- vendor filters


def salesforce_incremental_soql(
    sobject: str,
    fields: Sequence[str],
    watermark: Watermark | None,
    *,
    where: str | None = None,
) -> str:
    """``SELECT .. FROM sobject [WHERE (where) AND] SystemModstamp >= bound
    ORDER BY SystemModstamp, Id`` (no modstamp condition on the first read)."""
    names = list(dict.fromkeys(["Id", "SystemModstamp", *fields]))
    conditions = []
    if where:
        conditions.append(f"({where})")
    bound = watermark.bound if watermark else None
    if bound is not None:
        conditions.append(f"SystemModstamp >= {_iso(bound)}")
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # SOQL, not SQL: field and object names come from the entity specs, the bound is formatted
    return f"SELECT {', '.join(names)} FROM {sobject}{clause} ORDER BY SystemModstamp, Id"  # noqa: S608


def harvest_incremental_params(
    watermark: Watermark | None, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """List parameters plus ``updated_since=<bound>`` (inclusive in Harvest)."""
    out = dict(params or {})
    bound = watermark.bound if watermark else None
    if bound is not None:
        out["updated_since"] = _iso(bound)
    return out


def bc_incremental_filter(watermark: Watermark | None, extra: str | None = None) -> str | None:
    """``lastModifiedDateTime ge <bound>`` (and ``extra``), None when nothing to filter."""
    parts = []
    if extra:
        parts.append(f"({extra})")
    bound = watermark.bound if watermark else None
    if bound is not None:
        parts.append(f"lastModifiedDateTime ge {_iso(bound)}")
    return " and ".join(parts) or None
