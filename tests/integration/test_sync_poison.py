"""One bad record never stops a sync (issue 14): records PostgreSQL cannot store, records a
mapper chokes on and records the database refuses are planted among thousands of good ones, on
the dict path and the raw-codec path, in a full and an incremental run. Every good record lands,
each bad one is quarantined once with its reason (or cleaned by the documented text rule), and a
rerun changes nothing."""

from __future__ import annotations

import copy
import json

import msgspec
import psycopg
import pytest

from erpsync.sync import engine, sources, storable
from erpsync.sync.spec import RunInfo
from erpsync.sync.specs_time import TIME_ENTRIES
from tests.integration.test_sync_raw_codec import BASE

GOOD = 3000

#: record id -> (changes, expected reason code or None when the record is cleaned and lands)
POISON: dict[int, tuple[dict, str | None]] = {
    90001: ({"notes": "before\x00after"}, None),  # NUL: cleaned (removed), lands
    90002: ({"notes": "lone \ud800 surrogate"}, None),  # unpaired surrogate: U+FFFD, lands
    90003: ({"hours": "1e200000"}, "unstorable_value"),  # beyond PostgreSQL's numeric
    90004: ({"user": "31"}, "mapping_failed"),  # the mapper calls .get on a string
    90005: ({"project": 5}, "mapping_failed"),
    90006: ({"notes": "refused by the warehouse"}, "database_refused"),  # see the fixture
}


def good(n: int, offset: int = 0, notes: str = "Workshop") -> list[dict]:
    out = []
    for i in range(n):
        rec = copy.deepcopy(BASE)
        rec["id"] = 1 + offset + i
        rec["notes"] = f"{notes} {i}"
        out.append(rec)
    return out


def poison(ids=POISON) -> list[dict]:
    out = []
    for rid in ids:
        rec = copy.deepcopy(BASE)
        rec.update(POISON[rid][0])
        rec["id"] = rid
        out.append(rec)
    return out


def raw_page(recs: list[dict]) -> sources.RawPage:
    """The page as the vendor's JSON bytes: text a JSON encoder cannot write as UTF-8 (NUL,
    an unpaired surrogate) arrives as a \\u escape, as on the wire."""
    body = json.dumps({"time_entries": recs}).encode()
    try:
        raw = msgspec.json.decode(body, type=dict[str, list[msgspec.Raw]])["time_entries"]
    except msgspec.DecodeError:
        # what HarvestClient.iter_raw_pages does with a page its strict decoder refuses (a
        # lone surrogate escape): the page's records decoded by the stdlib, as dicts
        raw = json.loads(body)["time_entries"]
    return sources.RawPage(raw)


def interleave(goods: list[dict], bads: list[dict]) -> list[list[dict]]:
    """Pages of 500 with the bad records spread over different pages."""
    records = list(goods)
    for n, bad in enumerate(bads):
        records.insert((n * 977) % len(records), bad)
    return [records[i : i + 500] for i in range(0, len(records), 500)]


@pytest.fixture
def warehouse(warehouse_db):
    """The warehouse with one rule the model does not know: the database refuses it when the
    page is staged, so the engine has to find the record by splitting the page."""
    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE core.time_entries ADD CONSTRAINT test_no_refused_notes "
            "CHECK (notes IS NULL OR notes NOT LIKE 'refused%')"
        )
    return warehouse_db


def sync(url: str, pages, label: str, *, full: bool):
    with psycopg.connect(url) as conn:
        return engine.run_entity_sync(
            conn, TIME_ENTRIES, run=RunInfo.local(label), pages=pages, full=full
        )


def state(url: str) -> dict:
    with psycopg.connect(url) as conn:
        core = dict(
            conn.execute(
                "SELECT psa_id, notes FROM core.time_entries WHERE deleted_at IS NULL"
            ).fetchall()
        )
        open_q = conn.execute(
            "SELECT record_key, reason_code, reason_detail FROM ops.quarantine "
            "WHERE resolved_at IS NULL ORDER BY 1"
        ).fetchall()
        raw_nul = conn.execute(
            "SELECT payload::text FROM raw.vendor_records WHERE record_key = '90001' LIMIT 1"
        ).fetchone()
    return {"core": core, "quarantine": open_q, "raw_nul": raw_nul[0] if raw_nul else None}


def expect_outcome(url: str, good_ids: set[str]) -> dict:
    now = state(url)
    landed = set(now["core"])
    cleaned = {str(rid) for rid, (_, reason) in POISON.items() if reason is None}
    assert landed == good_ids | cleaned, "every good record lands, and the cleaned ones"
    assert now["core"]["90001"] == "beforeafter"
    assert now["core"]["90002"] == "lone \ufffd surrogate"
    # the landing zone keeps the payload as received (json holds \u0000)
    assert now["raw_nul"] is not None and "\\u0000" in now["raw_nul"]
    quarantined = {key: (reason, detail) for key, reason, detail in now["quarantine"]}
    expected = {str(rid): reason for rid, (_, reason) in POISON.items() if reason is not None}
    assert {k: r for k, (r, _) in quarantined.items()} == expected, "each bad record once"
    assert "numeric" in quarantined["90003"][1]
    assert "AttributeError" in quarantined["90004"][1]
    assert "test_no_refused_notes" in quarantined["90006"][1], "the database's own message"
    return now


@pytest.mark.parametrize("path", ["dicts", "raw"])
def test_poison_records_are_isolated_on_full_and_incremental_runs(warehouse, path):
    to_pages = (lambda pages: [raw_page(p) for p in pages]) if path == "raw" else (lambda p: p)
    goods = good(GOOD)
    first = sync(warehouse, to_pages(interleave(goods, poison())), "full", full=True)
    good_ids = {str(r["id"]) for r in goods}
    assert first.inserted == GOOD + 2
    assert first.quarantined == 4
    assert first.read == GOOD + len(POISON)
    before = expect_outcome(warehouse, good_ids)

    # a rerun of the same read changes nothing: no new row, no second quarantine row
    again = sync(warehouse, to_pages(interleave(goods, poison())), "rerun", full=True)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    assert again.quarantined == 4
    assert state(warehouse) == before

    # the incremental path: a few changed good entries and the same poison, read again
    changed = good(50, notes="changed")
    inc = sync(warehouse, to_pages(interleave(changed, poison())), "incremental", full=False)
    assert (inc.inserted, inc.updated, inc.deleted) == (0, 50, 0)
    assert inc.quarantined == 4
    after = expect_outcome(warehouse, good_ids)
    assert after["quarantine"] == before["quarantine"]
    with psycopg.connect(warehouse) as conn:
        total_q = conn.execute("SELECT count(*) FROM ops.quarantine").fetchone()[0]
    assert total_q == 4, "a rerun refreshes the open quarantine rows, never adds to them"


def test_a_fixed_record_leaves_quarantine_on_the_next_read(warehouse):
    sync(warehouse, interleave(good(100), poison()), "first", full=True)
    fixed = poison([90003, 90004, 90006])
    for rec in fixed:
        rec.update({"hours": 2, "user": {"id": 31, "name": "K"}, "notes": "fixed"})
    sync(warehouse, [fixed], "fixed", full=False)
    with psycopg.connect(warehouse) as conn:
        still_open = conn.execute(
            "SELECT record_key FROM ops.quarantine WHERE resolved_at IS NULL ORDER BY 1"
        ).fetchall()
        landed = conn.execute(
            "SELECT count(*) FROM core.time_entries WHERE psa_id IN ('90003','90004','90006')"
        ).fetchone()[0]
    assert [k for (k,) in still_open] == ["90005"]
    assert landed == 3


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        (storable.ColumnType("n", "integer"), 2**31, "integer range"),
        (storable.ColumnType("n", "smallint"), -(2**15) - 1, "smallint range"),
        (storable.ColumnType("n", "bigint"), 2**63, "bigint range"),
        (storable.ColumnType("n", "numeric", precision=18, scale=4), 10**14, "numeric(18,4)"),
        (storable.ColumnType("n", "numeric"), __import__("decimal").Decimal("NaN"), "finite"),
        (storable.ColumnType("c", "character", max_length=3), "EURO", "at most 3"),
        (storable.ColumnType("c", "character varying", max_length=5), "x" * 6, "at most 5"),
    ],
)
def test_each_unstorable_kind_is_named(column, value, problem):
    assert problem in column.problem(value)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        (storable.ColumnType("n", "integer"), 2**31 - 1),
        (storable.ColumnType("n", "numeric", precision=18, scale=4), 10**13),
        (storable.ColumnType("c", "character", max_length=3), "EUR"),
        (storable.ColumnType("d", "date"), __import__("datetime").date(9999, 12, 31)),
    ],
)
def test_storable_values_pass(column, value):
    assert column.problem(value) is None


def test_text_cleaning_rule_reaches_nested_values():
    value = {"a\x00": ["x\x00y", {"k": "\udc80"}], "n": 1}
    assert storable.clean_value(value) == {"a": ["xy", {"k": "\ufffd"}], "n": 1}
    assert json.dumps(storable.clean_value("ok")) == '"ok"'
