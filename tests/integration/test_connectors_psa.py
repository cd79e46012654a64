"""The Harvest client against the sandbox PSA over loopback HTTP: full and incremental reads,
faults, the 429 rate limit with Retry-After, writes that are never resent blindly, and secrets
kept out of errors and logs. Connections are ``AIRFLOW_CONN_ERPSYNC_PSA`` JSON (monkeypatch)."""

from __future__ import annotations

import logging

import httpx
import pytest

from erpsync.connectors.cursors import BoundaryDedupe, Watermark, harvest_incremental_params
from erpsync.connectors.errors import AuthError, ConnectorError, WriteOutcomeUnknown
from erpsync.connectors.harvest import HarvestClient
from erpsync.connectors.http import RetryPolicy
from tests.support.connections import fault_free_client, psa_conn

FAST = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05, max_total_wait=30.0)
CANARY_PW = "canary-psa-pw-91c2d7"
CANARY_EXTRA = "canary-psa-extra-4e8f0a"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=3)
    yield handle
    handle.stop()


_conn = psa_conn


@pytest.fixture
def psa(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_PSA", _conn(sandbox.urls["psa"]))
    admin = sandbox.urls["psa"]
    httpx.put(f"{admin}/__admin/psa/rate_limit", json={"spec": "off"}).raise_for_status()
    with fault_free_client(admin, lambda: HarvestClient(policy=FAST)) as client:
        yield client
    httpx.put(f"{admin}/__admin/psa/rate_limit", json={"spec": "100/15"}).raise_for_status()


def _ids(pages) -> list[str]:
    return [str(r["id"]) for page in pages for r in page]


def test_full_reads_return_exactly_the_sandbox_records(psa, sandbox):
    store = sandbox.ctx.stores["psa"]
    for resource in ("time_entries", "expenses", "users", "clients", "projects"):
        ids = _ids(psa.iter_pages(resource, per_page=500))
        assert len(ids) == len(set(ids)), resource
        assert set(ids) == set(store.ids(resource)), resource
    user = store.ids("users")[0]
    rates = _ids(psa.iter_pages(f"users/{user}/billable_rates"))
    assert rates, "nested lists use the last path segment as the envelope key"


def test_reads_survive_5xx_429_and_changes_during_paging(psa, sandbox):
    httpx.put(
        f"{sandbox.urls['psa']}/__admin/faults",
        json={
            "seed": 5,
            "error_rate_5xx": 0.3,
            "burst_429": {"count": 2, "retry_after": 1, "start_after": 2, "every": 0},
            "mutate_during_paging_rate": 1.0,
            "mutate_count": 5,
        },
    ).raise_for_status()
    store = sandbox.ctx.stores["psa"]
    ids = _ids(psa.iter_pages("time_entries", per_page=300))
    assert sorted(ids) == sorted(store.ids("time_entries")), "every record exactly once"
    injected = httpx.get(f"{sandbox.urls['psa']}/__admin/faults").json()["stats"]["injected"]
    assert injected.get("mutate", 0) >= 5
    assert psa.stats.retry_causes["429"] == 2
    assert psa.stats.retries == injected.get("429", 0) + injected.get("5xx", 0)
    assert injected.get("5xx", 0) >= 1


def test_the_rate_limit_429_waits_retry_after(psa, sandbox):
    httpx.put(
        f"{sandbox.urls['psa']}/__admin/psa/rate_limit", json={"spec": "2/1"}
    ).raise_for_status()
    ids = _ids(psa.iter_pages("time_entries", per_page=600))
    assert sorted(ids) == sorted(sandbox.ctx.stores["psa"].ids("time_entries"))
    assert psa.stats.retry_causes["429"] >= 1
    assert psa.stats.waited >= psa.stats.retry_causes["429"] * 1.0  # Retry-After: 1 at least


def test_incremental_read_returns_exactly_the_changed_records(psa, sandbox):
    first = BoundaryDedupe(Watermark(), modstamp_field="updated_at")
    total = _ids(first.pages(psa.iter_pages("time_entries", harvest_incremental_params(None))))
    assert len(total) == len(sandbox.ctx.stores["psa"].ids("time_entries"))
    mark = first.next_watermark()
    params = harvest_incremental_params(mark)
    assert params["updated_since"].endswith("Z")

    quiet = BoundaryDedupe(mark, modstamp_field="updated_at")
    assert _ids(quiet.pages(psa.iter_pages("time_entries", params))) == []
    assert quiet.skipped >= 1, "the inclusive bound re-reads the boundary, which is deduped"

    since = httpx.get(f"{sandbox.urls['psa']}/__admin/changes").json()["last_seq"]
    httpx.post(f"{sandbox.urls['psa']}/__admin/advance", json={"steps": 2, "seed": 9})
    changes = httpx.get(f"{sandbox.urls['psa']}/__admin/changes", params={"since": since}).json()
    mine = [
        c for c in changes["changes"] if c["system"] == "psa" and c["resource"] == "time_entries"
    ]
    deleted = {str(c["id"]) for c in mine if c["op"] == "delete"}
    changed = {str(c["id"]) for c in mine} - deleted
    assert changed and deleted, "the advance should add, edit and delete time entries"
    inc = BoundaryDedupe(mark, modstamp_field="updated_at")
    got = _ids(inc.pages(psa.iter_pages("time_entries", harvest_incremental_params(mark))))
    assert sorted(got) == sorted(changed)
    # Harvest deletes are hard: found by comparing the id sets of a full read.
    now = set(_ids(psa.iter_pages("time_entries")))
    assert deleted.isdisjoint(now) and now == set(sandbox.ctx.stores["psa"].ids("time_entries"))


def test_a_create_whose_answer_is_lost_is_not_resent(psa, sandbox):
    store = sandbox.ctx.stores["psa"]
    before = set(store.ids("clients"))
    httpx.put(
        f"{sandbox.urls['psa']}/__admin/faults",
        json={"drop_after_commit_rate": 1.0, "drop_path_contains": "/v2/clients"},
    ).raise_for_status()
    sent = psa.stats.requests
    with pytest.raises(WriteOutcomeUnknown) as info:
        psa.create("clients", {"name": "Lost Answer GmbH", "currency": "EUR"})
    assert psa.stats.requests == sent + 1, "a POST is never resent automatically"
    assert "look the record up" in str(info.value)
    httpx.put(f"{sandbox.urls['psa']}/__admin/faults", json={}).raise_for_status()
    created = set(store.ids("clients")) - before
    assert len(created) == 1, "the write committed once"
    (new_id,) = created
    assert psa.get(f"clients/{new_id}")["name"] == "Lost Answer GmbH"
    assert psa.get("clients/999999999") is None
    updated = psa.update(f"clients/{new_id}", {"name": "Found Answer GmbH"})
    assert updated["name"] == "Found Answer GmbH"


def test_a_bad_token_fails_clearly_without_leaking_it(sandbox, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_PSA",
        _conn(sandbox.urls["psa"], password=CANARY_PW, api_token=CANARY_EXTRA),
    )
    client = HarvestClient(policy=FAST)
    with pytest.raises(AuthError) as info:
        list(client.iter_pages("clients"))
    assert info.value.status == 401 and info.value.code == "invalid_token"
    assert client.stats.reauthentications == 0, "a static token cannot be refreshed"
    out = capsys.readouterr()
    for text in (str(info.value), repr(info.value), caplog.text, out.out, out.err):
        assert CANARY_PW not in text and CANARY_EXTRA not in text


def test_equal_timestamps_at_the_watermark_lose_nothing(psa, sandbox):
    """Writes that share the watermark's exact timestamp (fault ``tie_timestamps`` with the
    business clock frozen) arrive after a read: the inclusive bound plus the dedupe returns
    exactly them, where a ``>`` cursor would skip them."""
    httpx.put(
        f"{sandbox.urls['psa']}/__admin/faults", json={"tie_timestamps": True}
    ).raise_for_status()
    clock = sandbox.ctx.clock
    clock.freeze(True)
    try:
        clients = sandbox.ctx.stores["psa"].ids("clients")
        first, second = clients[:3], clients[3:6]
        for cid in first:
            psa.update(f"clients/{cid}", {"name": f"Tie A {cid}"})
        read = BoundaryDedupe(Watermark(), modstamp_field="updated_at")
        list(read.pages(psa.iter_pages("clients")))
        mark = read.next_watermark()
        for cid in second:
            psa.update(f"clients/{cid}", {"name": f"Tie B {cid}"})
        stamps = {psa.get(f"clients/{cid}")["updated_at"] for cid in first + second}
        assert len(stamps) == 1, "all six writes share one timestamp"
        assert stamps == {mark.modstamp.strftime("%Y-%m-%dT%H:%M:%SZ")}
        inc = BoundaryDedupe(mark, modstamp_field="updated_at")
        got = _ids(inc.pages(psa.iter_pages("clients", harvest_incremental_params(mark))))
        assert sorted(got) == sorted(map(str, second))
    finally:
        clock.freeze(False)
        httpx.put(f"{sandbox.urls['psa']}/__admin/faults", json={}).raise_for_status()


@pytest.mark.parametrize("account", ["", "   ", None])
def test_an_empty_account_id_is_a_configuration_error(sandbox, monkeypatch, account):
    """Audit HA: Harvest refuses a personal access token without Harvest-Account-Id; the
    client says what to set instead of silently sending no header."""
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_PSA", _conn(sandbox.urls["psa"], account_id=account))
    client = HarvestClient(policy=FAST)
    for _ in range(2):  # and again: never a request without the account
        with pytest.raises(ConnectorError) as info:
            list(client.iter_pages("clients"))
        assert "account_id" in str(info.value) and not isinstance(info.value, AuthError)
    assert client.stats.requests == 0


def test_every_request_carries_the_account_header(psa):
    assert psa.get("users/me") is not None
    headers = psa._auth_headers()
    assert headers["Harvest-Account-Id"] == "100200"
    assert headers["Authorization"].startswith("Bearer ") and "erpsync" in headers["User-Agent"]


def test_rate_cards_are_a_bounded_full_read_without_updated_since(
    psa, sandbox, tmp_path, monkeypatch
):
    """Audit H2: the rate lists document only page/per_page, so the sync never sends
    updated_since (the sandbox would note it) and an 'incremental' read still returns every
    rate, one request per user."""
    import datetime as dt
    import time

    from erpsync.sync import sources
    from erpsync.sync.specs import BILLABLE_RATES
    from erpsync_sandbox.contract import CONTRACT_LOG_ENV, read_log

    log = tmp_path / "contract.jsonl"
    monkeypatch.setenv(CONTRACT_LOG_ENV, str(log))
    since = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    with BILLABLE_RATES.source.client() as psa:
        got = [r for page in BILLABLE_RATES.source.pages(psa, sources.Read(since)) for r in page]
    store = sandbox.ctx.stores["psa"]
    assert sorted(str(r["id"]) for r in got) == sorted(store.ids("billable_rates"))
    assert all("currency" not in r and r["user_id"] for r in got)
    users = len(store.ids("users"))
    deadline = time.monotonic() + 5  # a request's line is written once its answer is sent
    while True:
        records = list(read_log(log))
        rates = [r for r in records if r["route"] == "/v2/users/{parent_id}/billable_rates"]
        if len(rates) >= users or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(rates) == users
    assert [n for r in records for n in r["undocumented"]] == []
