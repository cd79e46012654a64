"""Incremental cursors (erpsync.connectors.cursors): the inclusive bound and the boundary dedupe
lose nothing on ties and re-emit nothing unchanged; vendor filters and state round-trip."""

from __future__ import annotations

import datetime as dt

from erpsync.connectors.cursors import (
    BoundaryDedupe,
    Watermark,
    bc_incremental_filter,
    harvest_incremental_params,
    parse_modstamp,
    salesforce_incremental_soql,
)

T = dt.datetime(2026, 11, 2, 9, 0, 0, tzinfo=dt.UTC)


def _rec(rid: str, stamp: dt.datetime, value: str = "a") -> dict:
    return {"id": rid, "updated_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "v": value}


def _read(mark: Watermark, records: list[dict]) -> tuple[list[str], Watermark]:
    d = BoundaryDedupe(mark, modstamp_field="updated_at", lookback=dt.timedelta(0))
    out = [r["id"] for page in d.pages([records]) for r in page]
    return out, d.next_watermark()


def test_vendor_modstamp_formats_parse_to_utc():
    assert parse_modstamp("2026-11-02T09:00:00.000+0000") == T
    assert parse_modstamp("2026-11-02T09:00:00Z") == T
    assert parse_modstamp("2026-11-02T10:00:00+01:00") == T
    assert parse_modstamp("2026-11-02T09:00:00.1234567Z") == T.replace(microsecond=123456)
    assert parse_modstamp(None) is None


def test_ties_at_the_watermark_are_neither_lost_nor_repeated():
    ids, mark = _read(Watermark(), [_rec("1", T), _rec("2", T)])
    assert ids == ["1", "2"] and mark.modstamp == T and set(mark.seen) == {"1", "2"}
    # Record 3 is written later with the same timestamp; 1 and 2 come back (inclusive bound).
    ids, mark2 = _read(mark, [_rec("1", T), _rec("2", T), _rec("3", T)])
    assert ids == ["3"]
    assert set(mark2.seen) == {"1", "2", "3"}
    # Record 1 changes again within the same second: same id and stamp, new content -> emitted.
    ids, _ = _read(mark2, [_rec("1", T, "b"), _rec("2", T), _rec("3", T)])
    assert ids == ["1"]


def test_the_watermark_moves_forward_and_forgets_what_is_behind_the_bound():
    later = T + dt.timedelta(seconds=5)
    _, mark = _read(Watermark(), [_rec("1", T), _rec("2", later)])
    assert mark.modstamp == later and set(mark.seen) == {"2"}
    ids, same = _read(mark, [])
    assert ids == [] and same.modstamp == later, "an empty read never moves the watermark back"


def test_lookback_reaches_behind_the_watermark_for_changes_made_during_a_read():
    mark = Watermark(T + dt.timedelta(seconds=30), {}, dt.timedelta(minutes=10))
    assert mark.bound == T + dt.timedelta(seconds=30) - dt.timedelta(minutes=10)
    d = BoundaryDedupe(mark, modstamp_field="updated_at")
    # A record stamped before the watermark (changed while the last read was paging) is new.
    assert [r["id"] for r in d.filter([_rec("9", T)])] == ["9"]


def test_state_round_trip_for_ops_sync_watermarks():
    mark = Watermark(T, {"1": "abc"}, dt.timedelta(minutes=5))
    back = Watermark.from_state(mark.modstamp, mark.to_state())
    assert back == mark
    assert Watermark.from_state(None, None) == Watermark()


def test_vendor_filters_are_inclusive_and_whole_seconds():
    mark = Watermark(T.replace(microsecond=750000), {}, dt.timedelta(0))
    soql = salesforce_incremental_soql("Account", ["Name"], mark, where="IsDeleted = false")
    assert soql == (
        "SELECT Id, SystemModstamp, Name FROM Account WHERE (IsDeleted = false) AND "
        "SystemModstamp >= 2026-11-02T09:00:00Z ORDER BY SystemModstamp, Id"
    )
    assert salesforce_incremental_soql("Account", ["Name"], None).endswith(
        "FROM Account ORDER BY SystemModstamp, Id"
    )
    assert harvest_incremental_params(mark, {"is_active": "true"}) == {
        "is_active": "true",
        "updated_since": "2026-11-02T09:00:00Z",
    }
    assert bc_incremental_filter(mark) == "lastModifiedDateTime ge 2026-11-02T09:00:00Z"
    assert bc_incremental_filter(None) is None
