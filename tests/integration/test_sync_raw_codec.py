"""The engine's raw-codec path (Harvest pages kept as JSON bytes, ``encode_time_entry``) against
its dict path (mapper + pydantic) on a real PostgreSQL: the same core rows, hashes, raw
landings, quarantine reason codes and counts, and a rerun through the other path changes
nothing."""

from __future__ import annotations

import copy
import json

import msgspec
import psycopg
import pytest

from erpsync.sync import engine, sources
from erpsync.sync.spec import RunInfo
from erpsync.sync.specs_time import TIME_ENTRIES

BASE = {
    "id": 1,
    "spent_date": "2026-05-01",
    "hours": 4.0,
    "rounded_hours": 4.25,
    "notes": "Workshop",
    "is_locked": False,
    "locked_reason": None,
    "is_closed": True,  # approved via Timesheet Approval (Harvest has no approval_status)
    "is_billed": False,
    "is_running": False,
    "billable": True,
    "billable_rate": 75,
    "cost_rate": 40.5,
    "created_at": "2026-05-01T16:34:49Z",
    "updated_at": "2026-11-01T18:02:00Z",
    "user": {"id": 31, "name": "K"},
    "client": {"id": 51, "name": "C"},  # Harvest's time entry: {id, name}
    "project": {"id": 64, "name": "P"},
    "task": {"id": 80, "name": "T"},
    "user_assignment": {"id": 72},
    "task_assignment": {"id": 71},
    "invoice": None,
    "external_reference": {"id": "EXT-1", "group_id": 9, "permalink": "https://x.test/1"},
}


def records() -> list[dict]:
    out = []
    for i, changes in enumerate(
        [
            {},
            {"notes": "tab\there\nback\\slash ünï", "hours": 0.1, "billable_rate": 194.62},
            {"hours": "7.5"},  # valid, declined by the codec: the pydantic path loads it
            {"notes": "  padded  "},  # valid, stripped by the model
            {"hours": -2},  # quarantined: invalid_value
            {"spent_date": "not a date"},  # quarantined: invalid_date
            {"user": None},  # quarantined: invalid_value (no user id)
            {"client": None, "task": None, "external_reference": None, "created_at": None},
            {"is_closed": False},  # unapproved
            {"approval_status": "approved"},  # not Harvest's: ignored on both paths
        ]
    ):
        rec = copy.deepcopy(BASE)
        rec.update(changes)
        rec["id"] = 1000 + i
        out.append(rec)
    no_id = copy.deepcopy(BASE)
    del no_id["id"]  # quarantined: missing_required_field (no record key)
    out.append(no_id)
    return out


def raw_page(recs: list[dict]) -> sources.RawPage:
    body = json.dumps({"time_entries": recs}, ensure_ascii=False).encode()
    raw = msgspec.json.decode(body, type=dict[str, list[msgspec.Raw]])["time_entries"]
    return sources.RawPage(raw)


def snapshot(url: str) -> dict:
    columns = [*TIME_ENTRIES.model.model_fields, "source_record_id", "row_hash", "source_modstamp"]
    with psycopg.connect(url) as conn:
        core = conn.execute(
            f"SELECT {', '.join(columns)} FROM core.time_entries ORDER BY psa_id"  # noqa: S608
        ).fetchall()
        quarantine = conn.execute(
            "SELECT record_key, reason_code, payload FROM ops.quarantine ORDER BY 1, 2"
        ).fetchall()
        raw = conn.execute(
            "SELECT record_key, source_modstamp, payload FROM raw.vendor_records ORDER BY 1"
        ).fetchall()
    return {"core": core, "quarantine": quarantine, "raw": raw}


def sync(url: str, pages, label: str):
    with psycopg.connect(url) as conn:
        return engine.run_entity_sync(
            conn, TIME_ENTRIES, run=RunInfo.local(label), pages=pages, full=True
        )


@pytest.fixture
def second_db(pg_server_url):
    from erpsync.runtime import database
    from erpsync.warehouse import migrate
    from tests.conftest import make_database

    url = make_database(pg_server_url)
    migrate.migrate(url)
    yield url
    database.drop_database(url)


@pytest.fixture(params=["upsert", "bulk"])
def merge_path(request, monkeypatch):
    """Both merges: one INSERT ... ON CONFLICT (small runs) and UPDATE + INSERT (bulk loads)."""
    if request.param == "bulk":
        monkeypatch.setattr(engine, "BULK_MERGE_ROWS", 0)
    return request.param


def test_raw_codec_path_loads_exactly_what_the_dict_path_loads(warehouse_db, second_db, merge_path):
    recs = records()
    via_raw = sync(warehouse_db, [raw_page(recs)], "raw")
    via_dicts = sync(second_db, [copy.deepcopy(recs)], "dicts")
    for stats in (via_raw, via_dicts):
        assert (stats.read, stats.loaded, stats.inserted, stats.quarantined) == (10, 7, 7, 4)
    assert snapshot(warehouse_db) == snapshot(second_db)
    with psycopg.connect(warehouse_db) as conn:
        approval = dict(
            conn.execute("SELECT psa_id, approval_status FROM core.time_entries").fetchall()
        )
    # approval from is_closed (audit H3): no real entry is quarantined for lacking a status
    assert (approval["1000"], approval["1008"], approval["1009"]) == (
        "approved",
        "unapproved",
        "approved",
    )
    reasons = [(k, r) for k, r, _ in snapshot(warehouse_db)["quarantine"]]
    assert sorted(r for _, r in reasons) == [
        "invalid_date",
        "invalid_value",
        "invalid_value",
        "missing_required_field",
    ]

    # each path sees the other's rows as unchanged (same hashes), and resolves nothing wrongly
    again = sync(warehouse_db, [copy.deepcopy(recs)], "dicts_again")
    assert (again.inserted, again.updated, again.unchanged, again.deleted) == (0, 0, 7, 0)
    again = sync(second_db, [raw_page(recs)], "raw_again")
    assert (again.inserted, again.updated, again.unchanged, again.deleted) == (0, 0, 7, 0)

    # one entry changed, one gone from the full read: updated and soft-deleted on both paths
    changed = [r | {"notes": "changed"} if r.get("id") == 1001 else r for r in recs[1:]]
    changed.append(copy.deepcopy(BASE) | {"id": 2000})
    for url, pages in ((warehouse_db, [raw_page(changed)]), (second_db, [changed])):
        third = sync(url, pages, "third")
        assert (third.inserted, third.updated, third.unchanged, third.deleted) == (1, 1, 5, 1)
        assert third.changed_keys == ["1000", "1001", "2000"]
    assert snapshot(warehouse_db)["core"] == snapshot(second_db)["core"]


def test_a_page_mixing_both_paths_keeps_the_read_order(warehouse_db, merge_path):
    """Two versions of one entry with the same stamp on one page, one through each path: the
    later one read wins, as on the dict path."""
    first = copy.deepcopy(BASE) | {"id": 77, "notes": "first"}
    second = copy.deepcopy(BASE) | {"id": 77, "notes": "second", "hours": "3"}  # declined
    third = copy.deepcopy(BASE) | {"id": 78, "notes": "after"}
    stats = sync(warehouse_db, [raw_page([first, second, third])], "order")
    assert (stats.read, stats.inserted) == (3, 2)
    with psycopg.connect(warehouse_db) as conn:
        rows = conn.execute("SELECT psa_id, notes, hours FROM core.time_entries ORDER BY 1")
        assert [(r[0], r[1], str(r[2])) for r in rows] == [
            ("77", "second", "3"),
            ("78", "after", "4.0"),
        ]
        landed = conn.execute("SELECT count(*) FROM raw.vendor_records").fetchone()[0]
    assert landed == 3


@pytest.fixture(scope="module")
def psa_client(tmp_path_factory):
    from erpsync.bench.worker import psa_connection
    from erpsync.connectors.harvest import HarvestClient
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(
        tmp_path_factory.mktemp("sandbox"), size="small", seed=5, services=("psa",)
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_CONN_ERPSYNC_PSA", psa_connection(handle.urls["psa"]))
    client = HarvestClient(conn_id="erpsync_psa")
    yield client
    client.close()
    mp.undo()
    handle.stop()


def test_raw_pages_hold_exactly_the_records_of_the_dict_pages(psa_client):
    """``iter_raw_pages`` reads the same pages as ``iter_pages`` (same requests and paging);
    each raw record decodes to the dict ``iter_pages`` returns, and the codec encodes every
    sandbox entry (none needs the pydantic path)."""
    dicts = [rec for page in psa_client.iter_pages("time_entries", per_page=500) for rec in page]
    raw = [rec for page in psa_client.iter_raw_pages("time_entries", per_page=500) for rec in page]
    assert len(dicts) > 1000
    assert all(isinstance(r, msgspec.Raw) for r in raw)
    assert [json.loads(bytes(r)) for r in raw] == dicts
    from erpsync.models.time_expense import encode_time_entry

    assert all(encode_time_entry(r) is not None for r in raw)
    page = sources.RawPage(raw[:3])
    assert list(page) == dicts[:3] and page.record(1) == dicts[1] and len(page) == 3
