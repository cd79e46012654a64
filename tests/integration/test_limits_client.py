"""Client-side limiter pieces without a server: the sliding window, settings precedence,
request purposes and the quota guard."""

from __future__ import annotations

import threading

import pytest

from erpsync.connectors.budget import Ledger, purpose_of
from erpsync.connectors.errors import QuotaExhausted, QuotaReserveReached
from erpsync.connectors.throttle import (
    QuotaGuard,
    RateSpec,
    SlidingWindow,
    Throttle,
    limit_settings,
    parse_rate,
    parse_reserve,
)


def test_parse_rate_and_reserve() -> None:
    assert parse_rate("100/15") == RateSpec(100, 15.0)
    assert parse_rate("off") is None and parse_rate(None) is None and parse_rate("0") is None
    with pytest.raises(ValueError, match="100/15"):
        parse_rate("fast")
    assert parse_reserve("5%", 100_000) == 5000
    assert parse_reserve("250", 100_000) == 250


def test_a_request_counts_until_its_answer_plus_the_window() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    window = SlidingWindow(RateSpec(2, 10.0), clock=lambda: now[0], sleep=sleep)
    first = window.acquire()
    second = window.acquire()
    now[0] = 1.0
    window.release(first)  # answered at t=1
    now[0] = 4.0
    window.release(second)  # answered at t=4
    third = window.acquire()  # must wait until t=11 (first answer + window)
    assert now[0] == pytest.approx(11.0, abs=0.01)
    assert slept and third
    assert window.in_window() == 2


def test_concurrency_cap_is_shared_by_threads() -> None:
    throttle = Throttle("erp", max_concurrent=3)
    gate = threading.Barrier(3)
    done = threading.Event()

    def worker() -> None:
        ticket, _ = throttle.acquire()
        try:
            try:
                gate.wait(timeout=0.2)
            except threading.BrokenBarrierError:
                pass
            done.wait(0.05)
        finally:
            throttle.release(ticket)

    threads = [threading.Thread(target=worker) for _ in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert throttle.peak_in_flight == 3 and throttle.in_flight == 0


def test_settings_extras_then_env_then_local_sandbox_then_documented() -> None:
    local, remote = "http://127.0.0.1:8000", "https://api.harvestapp.com"
    assert limit_settings("psa", {}, remote, env={})["rate_limit"] == "100/15"
    assert limit_settings("erp", {}, remote, env={}) == {
        "rate_limit": "6000/300",
        "max_concurrent": "5",
        "shared_limits": "on",
    }
    assert limit_settings("crm", {}, remote, env={})["quota_reserve"] == "5%"
    sandbox_env = {"ERPSYNC_SANDBOX_PSA_RATE_LIMIT": "off"}
    assert limit_settings("psa", {}, local, env=sandbox_env)["rate_limit"] == "off"
    assert limit_settings("psa", {}, remote, env=sandbox_env)["rate_limit"] == "100/15"
    env = {**sandbox_env, "ERPSYNC_PSA_RATE_LIMIT": "50/15"}
    assert limit_settings("psa", {}, local, env=env)["rate_limit"] == "50/15"
    extras = {"rate_limit": "10/1"}
    assert limit_settings("psa", extras, local, env=env)["rate_limit"] == "10/1"
    legacy = {"ERPSYNC_SANDBOX_ERP_RATE_PER_MIN": "600"}
    assert limit_settings("erp", {}, local, env=legacy)["rate_limit"] == "600/60"


@pytest.mark.parametrize(
    ("system", "method", "path", "purpose"),
    [
        ("psa", "GET", "/v2/time_entries", "read"),
        ("psa", "PATCH", "/v2/time_entries/12", "mark"),
        ("psa", "PATCH", "/v2/projects/3/task_assignments/4", "update"),
        ("psa", "POST", "/v2/invoices", "mark"),
        ("psa", "DELETE", "/v2/invoices/77", "mark"),
        ("psa", "POST", "/v2/clients", "create"),
        ("erp", "POST", "/v2.0/t/p/api/v2.0/companies(1)/salesInvoices", "create"),
        (
            "erp",
            "POST",
            "/v2.0/t/p/api/v2.0/companies(1)/salesInvoices(2)/Microsoft.NAV.post",
            "post",
        ),
        ("erp", "POST", "/v2.0/t/p/api/v2.0/$batch", "batch"),
        ("erp", "DELETE", "/v2.0/t/p/api/v2.0/companies(1)/salesInvoices(2)", "delete"),
    ],
)
def test_purpose_from_method_and_resource(system, method, path, purpose) -> None:
    assert purpose_of(system, method, path) == purpose
    assert purpose_of(system, method, path, authenticated=False) == "auth"


def test_ledger_counts_since_a_snapshot() -> None:
    ledger = Ledger()
    ledger.sent("psa", "read")
    before = ledger.snapshot()
    ledger.sent("psa", "read", throttle_seconds=0.5)
    ledger.throttled("psa", "read")
    ledger.waited("psa", "read", 2.0)
    ledger.sent("erp", "post")
    delta = ledger.since(before)
    assert delta[("psa", "read")].requests == 1
    assert delta[("psa", "read")].throttled_429 == 1
    assert delta[("psa", "read")].waited_seconds == 2.0
    assert delta[("erp", "post")].requests == 1


def test_quota_guard_keeps_the_reserve() -> None:
    guard = QuotaGuard("10")
    guard.check("crm", "CRM")  # nothing observed yet: go ahead
    guard.observe(88, 100)
    guard.check("crm", "CRM")  # 88 + 0 < 90
    guard.check("crm", "CRM")  # 88 + 1 < 90
    with pytest.raises(QuotaReserveReached) as info:
        guard.check("crm", "CRM")  # 88 + 2 in flight reaches the reserve
    assert isinstance(info.value, QuotaExhausted), "handled like a spent quota"
    assert "88 of the org's 100" in str(info.value)


def test_a_malformed_limit_extra_is_a_clear_connection_error(monkeypatch) -> None:
    import json

    from erpsync.connectors.errors import ConnectorError
    from erpsync.connectors.harvest import HarvestClient

    conn = {
        "conn_type": "http",
        "host": "api.harvestapp.com",
        "schema": "https",
        "password": "pat-123456",
        "extra": {"account_id": "1", "rate_limit": "fast"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_PSA", json.dumps(conn))
    with pytest.raises(ConnectorError, match=r"erpsync_psa: rate_limit must look like '100/15'"):
        HarvestClient().throttle()
