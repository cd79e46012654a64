"""The pack's clients against the sandbox with the vendors' limits ON, at full speed.

(a) Many threads reading through the real clients receive no 429 and stay under the limit,
    checked from the sandbox's side (its limiter counters), with limits scaled down so the test
    is quick (Harvest ``20/3`` per token, Business Central ``30/3`` per user, 5 at once, no queue).
(b) When the sandbox sends 429s anyway (fault injection), the client waits ``Retry-After`` and
    the work completes exactly once.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from erpsync.connectors import throttle as throttle_mod
from erpsync.connectors.budget import LEDGER
from erpsync.connectors.business_central import BusinessCentralClient
from erpsync.connectors.errors import QuotaReserveReached
from erpsync.connectors.harvest import HarvestClient
from erpsync.connectors.http import RetryPolicy
from erpsync.connectors.salesforce import SalesforceClient
from tests.support.connections import crm_conn, erp_conn, psa_conn

FAST = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05, max_total_wait=30.0)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=5)
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def fresh_throttles(sandbox):
    throttle_mod.reset_registry()
    for service in ("psa", "erp", "crm"):
        httpx.put(f"{sandbox.urls[service]}/__admin/faults", json={}).raise_for_status()
    yield
    throttle_mod.reset_registry()
    for service in ("psa", "erp", "crm"):
        httpx.put(f"{sandbox.urls[service]}/__admin/faults", json={}).raise_for_status()


def test_harvest_reads_from_8_threads_stay_under_the_token_limit(sandbox, monkeypatch):
    admin = sandbox.urls["psa"]
    # the sandbox enforces 20 per 3 s per token; the client follows the sandbox's setting
    monkeypatch.setenv("ERPSYNC_SANDBOX_PSA_RATE_LIMIT", "20/3")
    monkeypatch.delenv("ERPSYNC_PSA_RATE_LIMIT", raising=False)
    httpx.put(f"{admin}/__admin/psa/rate_limit", json={"spec": "20/3"}).raise_for_status()
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_PSA", psa_conn(admin))
    buckets = sandbox.ctx.extras["psa_rate_limiter"]
    buckets.reset()
    client = HarvestClient(policy=FAST)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            pages = list(pool.map(lambda _: list(client.iter_pages("users", per_page=5)), range(8)))
        elapsed = time.monotonic() - started
        accepted, rejected = buckets.accepted, buckets.rejected
    finally:
        client.close()
        httpx.put(f"{admin}/__admin/psa/rate_limit", json={"spec": "100/15"}).raise_for_status()
    assert all(p == pages[0] for p in pages), "every thread read the same users"
    sent = client.stats.requests
    assert sent > 40, "enough requests to need the limiter"
    assert rejected == 0, "the sandbox refused nothing"
    assert accepted == sent
    assert client.stats.throttled_429 == 0 and not client.stats.retry_causes
    # 20 at once, then 20 more each time a window has passed since their answers: it waited
    # for the window (at least the token bucket's floor), but not much more than the window's
    bucket_floor = (sent - 20) / 20 * 3
    window_floor = (math.ceil(sent / 20) - 1) * 3
    assert bucket_floor * 0.9 <= elapsed <= window_floor * 2.5
    assert client.stats.throttle_wait > 0


def test_business_central_reads_from_8_threads_stay_under_the_user_limits(sandbox, monkeypatch):
    admin = sandbox.urls["erp"]
    httpx.put(
        f"{admin}/__admin/limits",
        json={"rate": 30, "window_seconds": 3, "max_concurrent": 5, "queue": 0},
    ).raise_for_status()
    httpx.put(f"{admin}/__admin/faults", json={"latency_ms": 30}).raise_for_status()
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_ERP", erp_conn(admin, rate_limit="30/3", max_concurrent="5")
    )
    # one client per thread (as the connectors are meant to be used): the limiter is shared
    clients = [BusinessCentralClient(policy=FAST) for _ in range(8)]

    def work(client: BusinessCentralClient) -> int:
        return sum(len(page) for _ in range(8) for page in client.iter_pages("taxGroups"))

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, clients))
        snap = httpx.get(f"{admin}/__admin/limits").json()["stats"]
    finally:
        for client in clients:
            client.close()
        httpx.put(f"{admin}/__admin/limits", json={}).raise_for_status()
    assert len(set(results)) == 1 and results[0] > 0
    assert snap["rejected"] == {"rate": 0, "concurrency": 0}, "no 429 from the sandbox"
    (user,) = snap["users"].values()  # one service principal
    assert 2 <= user["peak_active"] <= 5, "concurrent, up to the 5 BC processes at once"
    assert user["peak_window"] <= 30
    # every API request was let through (the 8 token requests go to the token endpoint)
    assert snap["accepted"] == sum(c.stats.requests for c in clients) - 8 >= 8 * 9
    assert all(c.stats.throttled_429 == 0 for c in clients)
    assert len({id(c.throttle()) for c in clients}) == 1
    assert clients[0].throttle().peak_in_flight <= 5


def test_a_429_burst_is_waited_out_and_the_create_happens_once(sandbox, monkeypatch):
    admin = sandbox.urls["psa"]
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_PSA", psa_conn(admin))
    httpx.put(
        f"{admin}/__admin/faults",
        json={"burst_429": {"count": 2, "retry_after": 1, "start_after": 0}},
    ).raise_for_status()
    store = sandbox.ctx.stores["psa"]
    before_ids = set(store.ids("clients"))
    before = LEDGER.snapshot()
    client = HarvestClient(policy=FAST)
    try:
        started = time.monotonic()
        created = client.create("clients", {"name": "Retry After LLP", "currency": "USD"})
        elapsed = time.monotonic() - started
    finally:
        client.close()
    new = set(store.ids("clients")) - before_ids
    assert new == {str(created["id"])}, "created exactly once"
    assert client.stats.retry_causes["429"] == 2 and client.stats.throttled_429 == 2
    assert elapsed >= 2.0, "Retry-After: 1 was honoured twice"
    counts = LEDGER.since(before)[("psa", "create")]
    assert (counts.requests, counts.throttled_429) == (3, 2)
    assert counts.waited_seconds >= 2.0


def test_business_central_rate_429s_without_retry_after_are_backed_off_and_create_once(
    sandbox, monkeypatch
):
    """The sandbox's own rate limit refuses (429, no Retry-After, as BC documents no header):
    the client backs off, and the create that was refused goes through exactly once."""
    admin = sandbox.urls["erp"]
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_ERP", erp_conn(admin, rate_limit="off", max_concurrent="0")
    )
    client = BusinessCentralClient(
        policy=RetryPolicy(max_attempts=20, base_delay=0.5, max_delay=1.0, max_total_wait=30.0)
    )
    number = "ERPSYNC-LIMIT-0001"
    try:
        assert client.company_id
        # one request per 2 s: the lookup fills the window, so the create is refused first
        httpx.put(
            f"{admin}/__admin/limits", json={"rate": 1, "window_seconds": 2}
        ).raise_for_status()
        assert client.find_one("customers", f"number eq '{number}'") is None
        created = client.create("customers", {"number": number, "displayName": "Limit AG"})
        snap = httpx.get(f"{admin}/__admin/limits").json()["stats"]
    finally:
        client.close()
        httpx.put(f"{admin}/__admin/limits", json={}).raise_for_status()
    assert created["number"] == number
    assert snap["rejected"]["rate"] >= 1 and client.stats.throttled_429 >= 1
    matches = sandbox.ctx.stores["erp"].scan_rows("customers", where={"number": number})
    assert len(matches) == 1, "created exactly once"


def test_salesforce_stops_before_the_quota_reserve(sandbox, monkeypatch):
    admin = f"{sandbox.urls['crm']}/__admin/crm"
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_CRM", crm_conn(sandbox.urls["crm"], quota_reserve="10")
    )
    httpx.put(admin, json={"daily_limit": 1000, "api_usage": 985}).raise_for_status()
    client = SalesforceClient(policy=FAST)
    try:
        list(client.query("SELECT Id FROM Account"))  # learns usage 986/1000 from the answer
        for _ in range(4):  # 987 .. 990
            list(client.query("SELECT Id FROM Account"))
        with pytest.raises(QuotaReserveReached) as info:
            list(client.query("SELECT Id FROM Account"))
        used = httpx.get(admin).json()
    finally:
        client.close()
        httpx.put(admin, json={"daily_limit": 100000, "api_usage": 0}).raise_for_status()
    assert "10 are kept in reserve" in str(info.value)
    assert used["api_usage"] == 990, "stopped with the reserve of 10 left"


def test_request_counts_land_in_the_table_and_the_log(sandbox, monkeypatch, warehouse_db):
    import logging

    import psycopg

    from erpsync.request_budget import TaskKey, track_requests
    from erpsync.runtime import airflow_env as project_env
    from erpsync.runtime import database

    urls = database.DatabaseUrls(warehouse_db, warehouse_db, embedded=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_WAREHOUSE", project_env.warehouse_connection_json(urls)
    )
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_PSA", psa_conn(sandbox.urls["psa"]))
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_ERP", erp_conn(sandbox.urls["erp"]))
    httpx.put(f"{sandbox.urls['psa']}/__admin/psa/rate_limit", json={"spec": "off"})
    key = TaskKey("month_end", "manual__1", "push_to_erp")
    lines: list[str] = []
    logger = logging.getLogger("test_limits.requests")
    logger.propagate, logger.level, logger.disabled = False, logging.INFO, False
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with track_requests(key, logger=logger) as counts:
            with HarvestClient(policy=FAST) as psa, BusinessCentralClient(policy=FAST) as erp:
                list(psa.iter_pages("users", per_page=50))
                client = psa.create("clients", {"name": "Budget LLP", "currency": "USD"})
                psa.update(f"clients/{client['id']}", {"name": "Budget LLP 2"})
                list(erp.iter_pages("taxGroups"))
    finally:
        httpx.put(f"{sandbox.urls['psa']}/__admin/psa/rate_limit", json={"spec": "100/15"})
    assert counts[("psa", "create")].requests == 1
    assert counts[("psa", "update")].requests == 1
    assert counts[("psa", "read")].requests >= 1
    assert counts[("erp", "auth")].requests == 1
    assert counts[("erp", "read")].requests >= 2  # company discovery + taxGroups
    with psycopg.connect(warehouse_db) as conn:
        rows = conn.execute(
            "SELECT system, purpose, requests, throttled_429, task_id, try_number"
            " FROM ops.request_counts WHERE dag_id = 'month_end' ORDER BY 1, 2"
        ).fetchall()
    stored = {(r[0], r[1]): r[2] for r in rows}
    assert stored == {k: c.requests for k, c in counts.items()}
    assert {(r[4], r[5]) for r in rows} == {("push_to_erp", 1)}
    assert len(lines) == 2, "one summary line per system"
    psa_line = next(line for line in lines if line.startswith("requests psa:"))
    assert "create 1" in psa_line and "update 1" in psa_line and "429s: 0" in psa_line
