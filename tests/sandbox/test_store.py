"""Tests of the sandbox record store (erpsync_sandbox.store): real SQLite files, real threads."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from erpsync_sandbox.store import ChangeLog, Store, dumps, format_stamp, parse_iso, to_iso


def make_store(tmp_path: Path, **kw: object) -> Store:
    return Store(tmp_path / "psa.sqlite3", system="psa", **kw)  # type: ignore[arg-type]


def test_put_get_roundtrip_keeps_seq_and_stamps_vendor_field(tmp_path: Path) -> None:
    changes = ChangeLog(tmp_path / "changes.sqlite3")
    store = make_store(tmp_path, stamp_field="updated_at", stamp_style="harvest", changelog=changes)
    store.put("time_entries", 7, {"id": 7, "hours": 1.5}, modstamp="2026-11-25T10:00:00.123456Z")
    row = store.get_row("time_entries", 7)
    assert row is not None
    assert row.modstamp == "2026-11-25T10:00:00.123456Z"
    assert row.data() == {"id": 7, "hours": 1.5, "updated_at": "2026-11-25T10:00:00Z"}
    store.put("time_entries", 7, {"id": 7, "hours": 2.0}, modstamp="2026-11-25T11:00:00.000000Z")
    row2 = store.get_row("time_entries", 7)
    assert row2 is not None and row2.seq == row.seq  # update keeps insertion order
    assert store.get("time_entries", 7)["hours"] == 2.0  # type: ignore[index]
    assert [c["op"] for c in changes.since(0)] == ["create", "update"]
    assert store.get("time_entries", 999) is None
    assert store.get("no_such_resource", 1) is None


def test_now_is_strictly_increasing_and_ties_when_asked(tmp_path: Path) -> None:
    store = make_store(tmp_path, now=lambda: "2026-11-02T09:00:00.500000Z")
    stamps = [store.now() for _ in range(5)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    store.tie_timestamps = True
    tied = {store.now() for _ in range(5)}
    assert len(tied) == 1


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("salesforce", "2026-11-25T10:00:00.123+0000"),
        ("harvest", "2026-11-25T10:00:00Z"),
        ("bc", "2026-11-25T10:00:00.123456Z"),
    ],
)
def test_format_stamp_vendor_styles(style: str, expected: str) -> None:
    assert format_stamp("2026-11-25T10:00:00.123456Z", style) == expected
    assert to_iso(parse_iso(expected))[:19] == "2026-11-25T10:00:00"


def test_parse_iso_accepts_vendor_spellings() -> None:
    a = parse_iso("2026-11-25T10:00:00.000+0000")
    b = parse_iso("2026-11-25T10:00:00Z")
    c = parse_iso("2026-11-25T11:00:00+01:00")
    assert a == b == c
    assert to_iso(parse_iso("2026-11-25")) == "2026-11-25T00:00:00.000000Z"


def test_put_many_and_raw_scan_return_exact_json_text(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    rows = (
        (i, {"id": i, "amount": Decimal("5000.00"), "kwd": Decimal("12.345")}, None, None)
        for i in range(1, 1001)
    )
    assert store.put_many("invoices", rows, chunk=128) == 1000
    raw = store.scan("invoices", raw=True, limit=2)
    assert raw[0] == '{"id":1,"amount":5000.00,"kwd":12.345}'
    assert json.loads(raw[1])["id"] == 2
    assert store.count("invoices") == 1000
    assert store.ids("invoices")[:3] == ["1", "2", "3"]


def test_scan_filters(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.put_many(
        "time_entries",
        (
            (
                i,
                {"id": i, "project": {"id": i % 3}, "billed": i % 2 == 0, "note": None},
                f"2026-01-01T00:00:{i:02d}.000000Z",
                str(i % 3),
            )
            for i in range(30)
        ),
    )
    assert {b["id"] for b in store.scan("time_entries", where={"project.id": 1})} == set(
        range(1, 30, 3)
    )
    assert store.count("time_entries", where={"parent_id": "2"}) == 10
    assert store.count("time_entries", where={"billed": True}) == 15
    assert store.count("time_entries", where={"note": None}) == 30
    assert store.count("time_entries", where={"id": ["1", "2", "40"]}) == 2
    got = store.scan("time_entries", conditions=[("id", ">=", "0"), ("project.id", "in", [0])])
    assert len(got) == 10
    newer = store.scan("time_entries", modstamp_gt="2026-01-01T00:00:25.000000Z")
    assert [b["id"] for b in newer] == [26, 27, 28, 29]
    assert store.count("time_entries", modstamp_ge="2026-01-01T00:00:25.000000Z") == 5
    with pytest.raises(ValueError, match="bad field"):
        store.scan("time_entries", where={"x'); DROP TABLE t; --": 1})


def test_keyset_paging_over_tied_modstamps_sees_every_record_once(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    # 95 records, five modstamps only: ties span page boundaries
    store.put_many(
        "r",
        ((f"id{i:03d}", {"i": i}, f"2026-01-01T00:00:0{i % 5}.000000Z", None) for i in range(95)),
    )
    seen: list[str] = []
    after = None
    while True:
        page = store.scan_rows("r", order="modstamp", after=after, limit=10)
        if not page:
            break
        seen.extend(r.id for r in page)
        after = (page[-1].modstamp, page[-1].id)
    assert sorted(seen) == sorted(store.ids("r")) and len(seen) == len(set(seen)) == 95
    desc = store.scan_rows("r", order="modstamp", descending=True, limit=3)
    assert desc[0].modstamp == "2026-01-01T00:00:04.000000Z"


def test_order_by_id_is_numeric_for_integer_ids(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    for i in (10, 9, 100, 1):
        store.put("users", i, {"id": i})
    assert [b["id"] for b in store.scan("users", order="id")] == [1, 9, 10, 100]
    assert [b["id"] for b in store.scan("users", order="id", after=("9",))] == [10, 100]
    assert [b["id"] for b in store.scan("users", order="id", descending=True, limit=2)] == [
        100,
        10,
    ]
    seqs = store.scan_rows("users", order="seq", after=(2,))
    assert [r.id for r in seqs] == ["100", "1"]


def test_soft_and_hard_delete(tmp_path: Path) -> None:
    changes = ChangeLog(tmp_path / "changes.sqlite3")
    store = Store(
        tmp_path / "crm.sqlite3",
        system="crm",
        stamp_field="SystemModstamp",
        stamp_style="salesforce",
        changelog=changes,
    )
    store.put("Account", "001A", {"Id": "001A", "IsDeleted": False})
    store.put("Account", "001B", {"Id": "001B", "IsDeleted": False})
    assert store.delete("Account", "001A", soft=True, set_fields={"IsDeleted": True})
    assert not store.delete("Account", "001A", soft=True)  # already deleted
    assert store.get("Account", "001A") is None
    kept = store.get("Account", "001A", include_deleted=True)
    assert kept is not None and kept["IsDeleted"] is True
    assert store.count("Account") == 1 and store.count("Account", include_deleted=True) == 2
    assert store.count("Account", only_deleted=True) == 1
    log = store.deleted_since("Account", "2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z")
    assert [d["id"] for d in log] == ["001A"]
    assert store.undelete("Account", "001A")
    assert store.get("Account", "001A") is not None
    assert store.delete("Account", "001B")
    assert store.get("Account", "001B", include_deleted=True) is None
    assert not store.delete("Account", "missing")
    ops = [(c["id"], c["op"]) for c in changes.since(0)]
    assert ops == [
        ("001A", "create"),
        ("001B", "create"),
        ("001A", "delete"),
        ("001A", "update"),
        ("001B", "delete"),
    ]
    assert store.purge_deleted_log("Account", "2999-01-01T00:00:00Z") == 1


def test_update_touch_and_next_int_id(tmp_path: Path) -> None:
    store = make_store(tmp_path, stamp_field="updated_at", stamp_style="harvest")
    store.put("projects", 5, {"id": 5, "name": "a"}, modstamp="2026-01-01T00:00:00.000000Z")
    body = store.update("projects", 5, {"name": "b"}, modstamp="2026-02-01T00:00:00.000000Z")
    assert body is not None and body["name"] == "b" and body["updated_at"] == "2026-02-01T00:00:00Z"
    assert store.update("projects", 6, {"name": "x"}) is None
    assert store.touch("projects", [5, 6]) == ["5"]
    row = store.get_row("projects", 5)
    assert row is not None and row.modstamp > "2026-02-01T00:00:00.000000Z"
    assert store.next_int_id("projects") == 6
    assert store.next_int_id("projects") == 7  # never handed out twice
    assert store.next_int_id("empty", start=1000) == 1000


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(150):
                store.put("r", f"{n}-{i}", {"n": n, "i": i})
                store.count("r")
        except BaseException as exc:  # noqa: BLE001 # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(100):
                store.scan("r", raw=True, limit=50)
        except BaseException as exc:  # noqa: BLE001 # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count("r") == 900
    stamps = [r.modstamp for r in store.scan_rows("r")]
    assert len(set(stamps)) == 900  # "now" never repeats across threads


def test_state_persists_and_reset_clears(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.put("clients", 1, {"id": 1})
    store.meta_set("company_id", "abc")
    before = store.content_hash()
    store.close()
    again = make_store(tmp_path)
    assert again.get("clients", 1) == {"id": 1}
    assert again.meta_get("company_id") == "abc"
    assert again.content_hash() == before
    assert again.resources() == ["clients"]
    again.reset()
    assert again.resources() == [] and again.get("clients", 1) is None
    assert again.meta_get("company_id", "gone") == "gone"
    again.put("clients", 1, {"id": 1})
    assert again.scan_rows("clients")[0].seq == 1


def test_dumps_is_compact_and_exact() -> None:
    assert dumps({"a": Decimal("0.10"), "b": [1, None]}) == '{"a":0.10,"b":[1,null]}'
