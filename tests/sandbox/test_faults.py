"""Tests of sandbox fault injection: real uvicorn servers on loopback, real HTTP (httpx)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from erpsync_sandbox.common import make_base_app
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.faults import FaultConfig, Faults, error_body, faults_from_env
from tests.support.servers import start_server


@contextmanager
def running(app: FastAPI) -> Iterator[httpx.Client]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical"))
    thread, port = start_server(server)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


def app_for(ctx: SandboxContext, service: str) -> FastAPI:
    """The base app plus two toy vendor routes that use the store like a service would."""
    app = make_base_app(service, ctx)
    store = ctx.stores[service]

    @app.post("/things")
    def create(body: dict[str, Any]) -> dict[str, Any]:
        return store.put("things", body["id"], body)

    @app.get("/things")
    def page(limit: int = 10) -> dict[str, Any]:
        rows = store.scan("things", order="seq", limit=limit)
        touched = ctx.faults_for(service).after_page("things", store)
        return {"records": rows, "touched": touched}

    return app


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[SandboxContext]:
    context = SandboxContext.open(tmp_path / "state")
    yield context
    context.close()


def statuses(client: httpx.Client, n: int) -> list[int]:
    return [client.post("/things", json={"id": f"x{i}"}).status_code for i in range(n)]


def test_5xx_rate_is_reproducible_from_the_seed(ctx: SandboxContext) -> None:
    with running(app_for(ctx, "psa")) as client:
        cfg = {"seed": 42, "error_rate_5xx": 0.4}
        client.put("/__admin/faults", json=cfg).raise_for_status()
        first = statuses(client, 30)
        client.put("/__admin/faults", json=cfg).raise_for_status()
        second = statuses(client, 30)
        client.put("/__admin/faults", json={"seed": 7, "error_rate_5xx": 0.4})
        third = statuses(client, 30)
        stats = client.get("/__admin/faults").json()["stats"]
    assert first == second
    assert first != third
    assert {s for s in first} <= {200, 500, 502, 503} and 200 in first
    assert 5 <= sum(s >= 500 for s in first) <= 20
    assert stats["requests"] == 30 and stats["injected"]["5xx"] == sum(s >= 500 for s in third)


def test_5xx_bodies_use_each_vendors_error_format(ctx: SandboxContext) -> None:
    for service, check in (
        ("crm", lambda b: isinstance(b, list) and b[0]["errorCode"] and b[0]["message"]),
        ("psa", lambda b: isinstance(b, dict) and b["message"]),
        ("erp", lambda b: b["error"]["code"].startswith("Internal_") and b["error"]["message"]),
    ):
        ctx.faults_for(service).set(FaultConfig(error_rate_5xx=1.0))
        with running(app_for(ctx, service)) as client:
            resp = client.post("/things", json={"id": "a"})
            assert resp.status_code >= 500
            assert check(resp.json()), (service, resp.text)
            # admin routes are never faulted
            assert client.get("/__admin/health").status_code == 200
    assert ctx.stores["crm"].get("things", "a") is None  # 5xx happens before the handler


def test_burst_429_with_retry_after_then_recovers(ctx: SandboxContext) -> None:
    with running(app_for(ctx, "psa")) as client:
        client.put(
            "/__admin/faults", json={"burst_429": {"count": 3, "retry_after": 7, "start_after": 1}}
        )
        responses = [client.post("/things", json={"id": f"b{i}"}) for i in range(6)]
    assert [r.status_code for r in responses] == [200, 429, 429, 429, 200, 200]
    assert responses[1].headers["retry-after"] == "7"
    assert "message" in responses[1].json()


def test_repeating_429_bursts(ctx: SandboxContext) -> None:
    faults = ctx.faults_for("erp")
    faults.set(FaultConfig.model_validate({"burst_429": {"count": 1, "every": 3}}))
    got = [faults.decide("GET", "/x")["status"] for _ in range(7)]
    assert got == [429, None, None, 429, None, None, 429]


def test_latency_delays_requests(ctx: SandboxContext) -> None:
    with running(app_for(ctx, "erp")) as client:
        client.put("/__admin/faults", json={"latency_ms": 250})
        t0 = time.monotonic()
        client.get("/things")
        slow = time.monotonic() - t0
        client.put("/__admin/faults", json={})
        t0 = time.monotonic()
        client.get("/things")
        fast = time.monotonic() - t0
    assert slow >= 0.25
    assert fast < slow


def test_drop_after_commit_commits_then_drops_the_connection(ctx: SandboxContext) -> None:
    with running(app_for(ctx, "erp")) as client:
        client.put("/__admin/faults", json={"drop_after_commit_rate": 1.0})
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/things", json={"id": "inv-1"})
        # reads are never dropped, and the write did happen
        assert client.get("/things").status_code == 200
        client.put(
            "/__admin/faults",
            json={"drop_after_commit_rate": 1.0, "drop_path_contains": "salesInvoices"},
        )
        assert client.post("/things", json={"id": "inv-2"}).status_code == 200
        stats = client.get("/__admin/faults").json()["stats"]
    assert ctx.stores["erp"].get("things", "inv-1") is not None
    assert ctx.stores["erp"].get("things", "inv-2") is not None
    assert stats["injected"] == {}  # counters reset by the second PUT


def test_mutate_during_paging_moves_modstamps(ctx: SandboxContext) -> None:
    store = ctx.stores["psa"]
    store.put_many(
        "things",
        ((i, {"id": i}, f"2026-01-01T00:00:00.{i:06d}Z", None) for i in range(50)),
    )
    before = {r.id: r.modstamp for r in store.scan_rows("things")}
    with running(app_for(ctx, "psa")) as client:
        client.put("/__admin/faults", json={"mutate_during_paging_rate": 1.0, "mutate_count": 4})
        touched = client.get("/things").json()["touched"]
    assert 1 <= len(touched) <= 4
    after = {r.id: r.modstamp for r in store.scan_rows("things")}
    assert all(after[t] > before[t] for t in touched)
    assert all(after[i] == before[i] for i in before if i not in touched)
    log = ctx.changes.since(0, source="fault")
    assert sorted(c["id"] for c in log) == sorted(touched)
    assert all(c["op"] == "update" for c in log)


def test_tie_timestamps_makes_a_write_burst_share_a_modstamp(ctx: SandboxContext) -> None:
    with running(app_for(ctx, "crm")) as client:
        client.put("/__admin/faults", json={"tie_timestamps": True})
        for i in range(5):
            client.post("/things", json={"id": f"t{i}"})
        client.put("/__admin/faults", json={})
        for i in range(3):
            client.post("/things", json={"id": f"u{i}"})
    rows = {r.id: r.modstamp for r in ctx.stores["crm"].scan_rows("things")}
    tied = {rows[f"t{i}"] for i in range(5)}
    assert len(tied) <= 2  # whole-second stamps; a burst may straddle one second boundary
    assert all(s.endswith(".000000Z") for s in tied)
    assert len({rows[f"u{i}"] for i in range(3)}) == 3


def test_admin_put_patch_validation(ctx: SandboxContext) -> None:
    with running(app_for(ctx, "psa")) as client:
        assert client.put("/__admin/faults", json={"error_rate_5xx": 2}).status_code == 422
        client.put("/__admin/faults", json={"latency_ms": 5, "burst_429": {"count": 2}})
        got = client.patch("/__admin/faults", json={"burst_429": {"retry_after": 9}}).json()
        assert got["latency_ms"] == 5
        assert got["burst_429"] == {"count": 2, "retry_after": 9, "start_after": 0, "every": 0}
        assert client.patch("/__admin/faults", json={"latency_ms": -1}).status_code == 422
        replaced = client.put("/__admin/faults", json={"seed": 3}).json()
        assert replaced["latency_ms"] == 0 and replaced["seed"] == 3


def test_faults_from_env_and_error_body() -> None:
    env = {
        "ERPSYNC_SANDBOX_FAULTS": '{"error_rate_5xx": 0.1, "seed": 5}',
        "ERPSYNC_SANDBOX_FAULTS_PSA": '{"latency_ms": 30}',
    }
    psa = faults_from_env("psa", env)
    crm = faults_from_env("crm", env)
    assert (psa.error_rate_5xx, psa.seed, psa.latency_ms) == (0.1, 5, 30)
    assert crm.latency_ms == 0 and crm.error_rate_5xx == 0.1
    assert faults_from_env("erp", {}).is_quiet()
    assert error_body("crm", 503, "x").startswith(b"[")
    assert Faults("psa").after_page("things") == []  # no store: nothing to mutate
