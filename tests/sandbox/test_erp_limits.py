"""Business Central sandbox limits: documented per-user defaults, per-user keying."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json

from erpsync_sandbox.erp.limits import Limiter, LimitSettings, user_of


def _token(claims: dict[str, str]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return "Bearer " + ".".join([b64(b'{"alg":"HS256"}'), b64(json.dumps(claims).encode()), "sig"])


def test_defaults_are_the_documented_per_user_odata_limits() -> None:
    cfg = LimitSettings.from_env({})
    assert (cfg.rate, cfg.window_seconds) == (6000, 300.0)
    assert (cfg.max_concurrent, cfg.queue, cfg.per_user) == (5, 95, True)
    assert cfg.retry_after is None


def test_env_and_legacy_per_minute_form() -> None:
    cfg = LimitSettings.from_env(
        {"ERPSYNC_SANDBOX_ERP_RATE": "30/6", "ERPSYNC_SANDBOX_ERP_PER_USER": "0"}
    )
    assert (cfg.rate, cfg.window_seconds, cfg.per_user) == (30, 6.0, False)
    assert LimitSettings.from_env({"ERPSYNC_SANDBOX_ERP_RATE": "off"}).rate == 0
    legacy = LimitSettings.model_validate({"rate_per_min": 600})
    assert (legacy.rate, legacy.window_seconds) == (600, 60.0)


def test_user_of_reads_oid_then_appid() -> None:
    assert user_of(_token({"oid": "u-1", "appid": "a"})) == "u-1"
    assert user_of(_token({"appid": "a"})) == "a"
    assert user_of("Basic xyz") == "(anonymous)"
    assert user_of("Bearer not-a-jwt") == "(anonymous)"


def test_sliding_window_is_kept_per_user() -> None:
    now = [0.0]
    limiter = Limiter(LimitSettings(rate=3, window_seconds=10), clock=lambda: now[0])
    assert [limiter.take_rate("alice") for _ in range(4)] == [True, True, True, False]
    assert limiter.take_rate("bob"), "another user has its own window"
    now[0] = 5.0
    assert not limiter.take_rate("alice"), "the window slides: still 3 in the last 10 s"
    now[0] = 10.01
    assert limiter.take_rate("alice")
    snap = limiter.snapshot()["stats"]
    assert snap["rejected"] == {"rate": 2, "concurrency": 0}
    assert snap["users"]["alice"]["peak_window"] == 3


def test_per_environment_mode_shares_one_window() -> None:
    limiter = Limiter(LimitSettings(rate=2, window_seconds=60, per_user=False))
    assert limiter.take_rate("alice") and limiter.take_rate("bob")
    assert not limiter.take_rate("carol")


def test_concurrency_slots_are_per_user() -> None:
    limiter = Limiter(LimitSettings(max_concurrent=1, queue=0))

    async def scenario() -> list[bool]:
        got = [await limiter.acquire("alice"), await limiter.acquire("alice")]
        got.append(await limiter.acquire("bob"))
        await limiter.release("alice")
        got.append(await limiter.acquire("alice"))
        return got

    # its own thread and loop: a browser test earlier in this worker may leave the main
    # thread's event loop running (Playwright's sync API), where asyncio.run() is refused
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(asyncio.run, scenario()).result()
    assert outcome == [True, False, True, True]
    assert limiter.snapshot()["stats"]["users"]["alice"]["peak_active"] == 1
