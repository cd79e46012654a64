"""Vendor limits shared by several processes through the warehouse PostgreSQL.

(a) The window arithmetic on the database clock: a ticket counts while in flight and for the
    window after its answer; a killed process's in-flight tickets are freed at once.
(b) Three separate processes (spawned, as Airflow runs each task in a process of its own)
    reading Business Central at full speed through the real client, against a sandbox scaled
    down to 20 requests per 2 s and 2 at once with no queue: with the shared limiter no 429 and
    the sandbox never saw more than the limits; with it off (each process alone keeps to the
    limits) the sandbox refuses requests.
(c) Settings and fallback: on by default for a vendor host, off for the loopback sandbox unless
    set; a warehouse that cannot be reached gives one warning and the per-process limiter.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from erpsync.connectors import throttle as throttle_mod
from erpsync.connectors.shared_limits import SharedWindow
from erpsync.connectors.throttle import budget_key, limit_settings, throttle_for
from erpsync.runtime.database import connection_parts
from tests.support.connections import erp_conn

SPAWN = multiprocessing.get_context("spawn")
PROCESSES, THREADS, READS = 3, 2, 10


def warehouse_conn_json(url: str) -> str:
    parts = connection_parts(url)
    return json.dumps({"conn_type": "postgres", **{k: v for k, v in parts.items() if v}})


def window(url: str, key: str = "erp@test:1/abc", **kwargs: Any) -> SharedWindow:
    return SharedWindow(key, connect=lambda: psycopg.connect(url, autocommit=True), **kwargs)


@pytest.fixture(autouse=True)
def fresh_registry():
    throttle_mod.reset_registry()
    yield
    throttle_mod.reset_registry()


# ---------------------------------------------------------------- (a) the window on the DB clock


def test_a_ticket_counts_until_its_answer_plus_the_window(warehouse_db) -> None:
    limiter = window(warehouse_db, limit=2, window=30.0, poll=0.01)
    first, second = limiter.acquire(), limiter.acquire()
    ticket, pause = limiter.try_acquire()
    assert ticket is None and pause < 0.1, "both in flight: poll for an answer"
    limiter.release(first)
    ticket, pause = limiter.try_acquire()
    assert ticket is None and 29.0 < pause <= 30.0, "wait until the first answer + 30 s"
    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        # the first answer came back 30.5 s ago on the database's clock: out of the window
        conn.execute(
            "UPDATE ops.api_limit_tickets SET answered_at = clock_timestamp() - interval '30.5 s'"
            " WHERE ticket = %s",
            (first,),
        )
    third = limiter.try_acquire()[0]
    assert third is not None
    assert limiter.counts() == (2, 2), "the first is forgotten; second and third in flight"
    with psycopg.connect(warehouse_db) as conn:
        (left,) = conn.execute("SELECT count(*) FROM ops.api_limit_tickets").fetchone()
    assert left == 2
    limiter.release(second)
    limiter.release(third)
    assert limiter.counts() == (2, 0)
    limiter.close()


def test_the_concurrency_cap_alone_and_budgets_apart(warehouse_db) -> None:
    capped = window(warehouse_db, "erp@a:1/x", limit=None, window=0, max_concurrent=1, poll=0.01)
    other = window(warehouse_db, "erp@b:2/x", limit=None, window=0, max_concurrent=1, poll=0.01)
    ticket = capped.acquire()
    assert capped.try_acquire()[0] is None, "one in flight is the cap"
    assert other.try_acquire()[0] is not None, "another budget is not touched"
    capped.release(ticket)
    assert capped.try_acquire()[0] is not None, "answered: the cap has room, no window"
    capped.close()
    other.close()


def _hold_two_tickets(url: str, ready) -> None:
    limiter = window(url, limit=100, window=60.0, max_concurrent=2)
    limiter.acquire()
    limiter.acquire()
    ready.put(os.getpid())
    time.sleep(120)


def test_a_killed_process_frees_its_in_flight_tickets_at_once(warehouse_db) -> None:
    ready = SPAWN.Queue()
    holder = SPAWN.Process(target=_hold_two_tickets, args=(warehouse_db, ready), daemon=True)
    holder.start()
    try:
        assert ready.get(timeout=30) == holder.pid
        limiter = window(warehouse_db, limit=100, window=60.0, max_concurrent=2, poll=0.01)
        assert limiter.try_acquire()[0] is None, "the holder fills the cap"
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        started = time.monotonic()
        while limiter.try_acquire()[0] is None:
            assert time.monotonic() - started < 1.0, "the dead process still holds the cap"
            time.sleep(0.01)
        # the two freed tickets still count in the rate window: they were answered "now"
        assert limiter.counts() == (3, 1)
        limiter.close()
    finally:
        if holder.is_alive():
            holder.kill()


# ---------------------------------------------------------------- (b) processes and a sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=5)
    yield handle
    handle.stop()


def _read_at_full_speed(barrier, results) -> None:
    """One task's process: THREADS clients reading taxGroups READS times each, all at once."""
    from concurrent.futures import ThreadPoolExecutor

    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.connectors.http import RetryPolicy

    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, max_total_wait=5.0)
    clients = [BusinessCentralClient(policy=policy) for _ in range(THREADS)]
    try:
        for client in clients:
            client.throttle()  # resolve connections and the shared window before the start
            assert client.company_id
    except BaseException as exc:
        results.put({"crashed": repr(exc)})
        barrier.abort()
        raise
    errors: list[str] = []

    def work(client: BusinessCentralClient) -> None:
        for _ in range(READS):
            try:
                list(client.iter_pages("taxGroups"))
            except Exception as exc:  # noqa: BLE001 - reported to the test
                errors.append(type(exc).__name__)

    barrier.wait(timeout=120)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, clients))
    results.put(
        {
            "requests": sum(c.stats.requests for c in clients),
            "throttled_429": sum(c.stats.throttled_429 for c in clients),
            "errors": errors,
            "limits": clients[0].throttle().describe(),
        }
    )
    for client in clients:
        client.close()


def run_processes(sandbox, warehouse_db, monkeypatch, *, shared: str) -> tuple[list, dict]:
    admin = sandbox.urls["erp"]
    httpx.put(
        f"{admin}/__admin/limits",
        json={"rate": 20, "window_seconds": 2, "max_concurrent": 2, "queue": 0},
    ).raise_for_status()
    httpx.put(f"{admin}/__admin/faults", json={"latency_ms": 30}).raise_for_status()
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_ERP", erp_conn(admin, rate_limit="20/2", max_concurrent="2")
    )
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_WAREHOUSE", warehouse_conn_json(warehouse_db))
    monkeypatch.delenv("ERPSYNC_WAREHOUSE_CONN_ID", raising=False)
    monkeypatch.setenv("ERPSYNC_ERP_SHARED_LIMITS", shared)
    barrier, results = SPAWN.Barrier(PROCESSES + 1), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_read_at_full_speed, args=(barrier, results), daemon=True)
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        try:
            barrier.wait(timeout=120)  # every process is connected and has its company: go
        except threading.BrokenBarrierError:
            pytest.fail(f"a process could not start: {results.get(timeout=5)}")
        reports = [results.get(timeout=60) for _ in workers]
        snap = httpx.get(f"{admin}/__admin/limits").json()["stats"]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
        httpx.put(f"{admin}/__admin/limits", json={}).raise_for_status()
        httpx.put(f"{admin}/__admin/faults", json={}).raise_for_status()
    return reports, snap


def test_three_processes_share_one_budget_and_get_no_429(sandbox, warehouse_db, monkeypatch):
    started = time.monotonic()
    reports, snap = run_processes(sandbox, warehouse_db, monkeypatch, shared="on")
    assert all(r["limits"] == "rate 20/2, 2 at once, shared across processes" for r in reports)
    assert all(r["errors"] == [] for r in reports), "every read completed"
    assert sum(r["throttled_429"] for r in reports) == 0
    assert snap["rejected"] == {"rate": 0, "concurrency": 0}, "the sandbox refused nothing"
    (user,) = snap["users"].values()  # one service principal for all three processes
    assert user["peak_window"] <= 20 and user["peak_active"] <= 2, "never over the limits"
    assert user["peak_window"] >= 15 and user["peak_active"] == 2, "but the budget was used"
    tokens = PROCESSES * THREADS  # token requests go to the token endpoint, not the API
    assert snap["accepted"] == sum(r["requests"] for r in reports) - tokens
    assert snap["accepted"] >= PROCESSES * THREADS * READS, "every read reached the API"
    # 60 reads + the companies at 20 per 2 s: at least two windows were waited for
    assert time.monotonic() - started >= 4.0


def test_without_sharing_the_processes_together_exceed_the_limit(
    sandbox, warehouse_db, monkeypatch
):
    """The control: each process keeps to 20 per 2 s and 2 at once on its own, and the three
    together are refused by the sandbox (so the test above can fail)."""
    reports, snap = run_processes(sandbox, warehouse_db, monkeypatch, shared="off")
    assert all(r["limits"] == "rate 20/2, 2 at once" for r in reports)
    refused = snap["rejected"]["rate"] + snap["rejected"]["concurrency"]
    assert refused > 0
    assert sum(r["throttled_429"] for r in reports) == refused


# ---------------------------------------------------------------- (c) settings and fallback


def test_shared_by_default_for_vendor_hosts_off_for_the_local_sandbox() -> None:
    remote, local = "https://api.businesscentral.dynamics.com", "http://127.0.0.1:8000"
    assert limit_settings("erp", {}, remote, env={})["shared_limits"] == "on"
    assert limit_settings("psa", {}, remote, env={})["shared_limits"] == "on"
    assert limit_settings("erp", {}, local, env={})["shared_limits"] == "off"
    env = {"ERPSYNC_ERP_SHARED_LIMITS": "on"}
    assert limit_settings("erp", {}, local, env=env)["shared_limits"] == "on"
    extras = {"shared_limits": "off"}
    assert limit_settings("erp", extras, remote, env=env)["shared_limits"] == "off"
    with pytest.raises(ValueError, match="shared_limits"):
        throttle_for("erp", "k", {"rate_limit": "10/1", "shared_limits": "sometimes"})


def test_the_budget_key_names_host_port_and_fingerprint_only() -> None:
    secret = "client-secret-value"
    fp = throttle_mod.fingerprint("erp", "http://127.0.0.1:8001", "app", secret)
    one = budget_key("erp", fp, "http://127.0.0.1:8001/v2.0/t/production/api/v2.0")
    other = budget_key("erp", fp, "http://127.0.0.1:8002/v2.0/t/production/api/v2.0")
    assert one == f"erp@127.0.0.1:8001/{fp}" and one != other
    assert budget_key("erp", fp, "https://api.businesscentral.dynamics.com/v2.0") == (
        f"erp@api.businesscentral.dynamics.com:443/{fp}"
    )
    assert secret not in one


def test_a_throttle_shares_through_the_warehouse_when_it_is_on(warehouse_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_WAREHOUSE", warehouse_conn_json(warehouse_db))
    monkeypatch.delenv("ERPSYNC_WAREHOUSE_CONN_ID", raising=False)
    settings = {"rate_limit": "5/60", "max_concurrent": "2", "shared_limits": "on"}
    throttle = throttle_for("erp", "fp1", settings, base_url="http://127.0.0.1:9")
    assert throttle.describe() == "rate 5/60, 2 at once, shared across processes"
    ticket, waited = throttle.acquire()
    assert ticket is not None and ticket.shared and waited >= 0
    with psycopg.connect(warehouse_db) as conn:
        rows = conn.execute(
            "SELECT budget_key, answered_at IS NULL FROM ops.api_limit_tickets"
        ).fetchall()
    assert rows == [("erp@127.0.0.1:9/fp1", True)]
    throttle.release(ticket)
    assert throttle.shared is not None and throttle.shared.counts() == (1, 0)


def test_an_unreachable_warehouse_gives_one_warning_and_the_local_limiter(
    tmp_path, monkeypatch, caplog
):
    nowhere = {"conn_type": "postgres", "host": str(tmp_path), "port": 5432, "schema": "x"}
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_WAREHOUSE", json.dumps(nowhere))
    monkeypatch.delenv("ERPSYNC_WAREHOUSE_CONN_ID", raising=False)
    settings = {"rate_limit": "5/60", "max_concurrent": "2", "shared_limits": "on"}
    with caplog.at_level(logging.WARNING, logger="erpsync.connectors.throttle"):
        first = throttle_for("erp", "fp1", settings, base_url="https://bc.example:443")
        second = throttle_for("erp", "fp2", settings, base_url="https://bc.example:443")
    assert first.shared is None and second.shared is None
    assert first.describe() == "rate 5/60, 2 at once"
    warnings = [r for r in caplog.records if "not shared across processes" in r.getMessage()]
    assert len(warnings) == 1, "one warning per system and process"
    assert "OperationalError" in warnings[0].getMessage()
    ticket, _ = first.acquire()  # the per-process limiter works
    assert ticket is not None and not ticket.shared
    first.release(ticket)


def test_a_warehouse_lost_mid_run_falls_back_without_failing(warehouse_db, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_WAREHOUSE", warehouse_conn_json(warehouse_db))
    monkeypatch.delenv("ERPSYNC_WAREHOUSE_CONN_ID", raising=False)
    settings = {"rate_limit": "5/60", "max_concurrent": "0", "shared_limits": "on"}
    throttle = throttle_for("psa", "fp1", settings, base_url="http://127.0.0.1:9")
    shared = throttle.shared
    assert shared is not None
    ticket, _ = throttle.acquire()
    with psycopg.connect(warehouse_db, autocommit=True) as conn:  # the warehouse goes away
        conn.execute("ALTER TABLE ops.api_limit_tickets RENAME TO api_limit_tickets_gone")
    with caplog.at_level(logging.WARNING, logger="erpsync.connectors.throttle"):
        throttle.release(ticket)
        again, _ = throttle.acquire()
    assert throttle.shared is None and again is not None and not again.shared
    throttle.release(again)
    assert any("from now on" in r.getMessage() for r in caplog.records)
