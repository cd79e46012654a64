"""The connectors' retry arithmetic and request loop: backoff with full jitter, Retry-After in
both forms, the cap and its message, and which requests are retried at all.

The loop tests run the real :class:`~erpsync.connectors.http.VendorClient` against a loopback
HTTP server that answers from a script (status, headers), through a real Airflow connection
given as ``AIRFLOW_CONN_*`` (Airflow 3.3 resolves those in a plain process through
``BaseHook.get_connection``; no metadata database or unit-test mode is needed). Sleeps are
recorded instead of slept so the waits can be asserted exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from erpsync.connectors.errors import RetryBudgetExceeded, VendorError, WriteOutcomeUnknown
from erpsync.connectors.http import (
    Redactor,
    RetryPolicy,
    VendorClient,
    backoff_delay,
    is_idempotent,
    parse_retry_after,
    retry_wait,
    sensitive_extra_names,
)

# --------------------------------------------------------------------------- arithmetic


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    rng = random.Random(1)
    for n in range(1, 9):
        ceiling = min(8.0, 0.5 * 2 ** (n - 1))
        samples = [backoff_delay(n, policy, rng) for _ in range(400)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # full jitter: spread over the whole range, not clustered at the ceiling
        assert min(samples) < 0.1 * ceiling
        assert max(samples) > 0.9 * ceiling


def test_retry_after_wins_and_is_never_undercut():
    policy = RetryPolicy(base_delay=0.25)
    rng = random.Random(2)
    for _ in range(200):
        wait = retry_wait(3, 7.0, policy, rng)
        assert 7.0 <= wait <= 7.25


def test_retry_after_seconds_and_http_date():
    now = dt.datetime(2026, 11, 25, 20, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Wed, 25 Nov 2026 20:01:30 GMT", now) == 90.0
    assert parse_retry_after("Wednesday, 25-Nov-26 20:00:05 GMT", now) == 5.0  # RFC 850 form
    assert parse_retry_after("Wed, 25 Nov 2026 19:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None


def test_which_requests_count_as_idempotent():
    assert is_idempotent("GET")
    assert is_idempotent("head")
    assert not is_idempotent("POST")
    assert not is_idempotent("POST", {"If-Match": 'W/"1"'})
    assert not is_idempotent("PATCH")
    assert is_idempotent("PATCH", {"If-Match": 'W/"1"'})
    assert is_idempotent("DELETE", {"if-match": "*"})
    assert not is_idempotent("PUT", {"If-Match": ""})


def test_policy_overrides_from_connection_extras():
    policy = RetryPolicy.from_extras(
        {"retry_max_attempts": "3", "retry_max_total_wait": 9, "read_timeout": "5"}
    )
    assert (policy.max_attempts, policy.max_total_wait, policy.read_timeout) == (3, 9.0, 5.0)
    assert RetryPolicy.from_extras({}) == RetryPolicy()


def test_secret_extras_are_recognised_by_name_and_scrubbed_in_every_form():
    extras = {
        "token_path": "/services/oauth2/token",
        "client_secret": "s3cr3t&value/with=chars",
        "refresh_token": "rt-123456",
        "account_id": "100200",
        "api_key": "k-987654",
    }
    assert sorted(sensitive_extra_names(extras)) == ["api_key", "client_secret", "refresh_token"]
    r = Redactor()
    for name in sensitive_extra_names(extras):
        r.add(extras[name])
    text = (
        "form client_secret=s3cr3t%26value%2Fwith%3Dchars&x=1 json "
        '{"secret": "s3cr3t&value/with=chars"} plus rt-123456 and k-987654'
    )
    out = r.scrub(text)
    assert "s3cr3t" not in out and "rt-123456" not in out and "k-987654" not in out
    assert out.count("***") == 4


# --------------------------------------------------------------------------- the request loop


class _Script:
    """What the loopback server answers, in order; the last entry repeats."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], str]] = [(200, {}, "{}")]
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def set(self, *replies: tuple[int, dict[str, str], str]) -> None:
        with self.lock:
            self.replies = list(replies)
            self.seen = []

    def next(self, method: str, path: str) -> tuple[int, dict[str, str], str]:
        with self.lock:
            self.seen.append((method, path))
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture(scope="module")
def server():
    script = _Script()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = script.next(self.command, self.path)
            if status == 0:  # hang past the client's read timeout, then answer nothing useful
                time.sleep(float(body))
                status, body = 200, "{}"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _reply

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield script, httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client(server, monkeypatch):
    script, port = server
    monkeypatch.setenv(
        "AIRFLOW_CONN_LOOPBACK",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}),
    )
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=4.0, max_total_wait=30.0)
    c = VendorClient("loopback", policy=policy, sleep=waits.append, rng=random.Random(0))
    yield c, script, waits
    c.close()


ERR = '{"message": "temporarily unavailable"}'


def test_transient_errors_are_retried_until_success(client):
    c, script, waits = client
    script.set((503, {}, ERR), (502, {}, ERR), (200, {}, '{"ok": true}'))
    assert c.request_json("GET", "/thing") == {"ok": True}
    assert len(script.seen) == 3
    assert len(waits) == 2 and waits[0] <= 0.5 and waits[1] <= 1.0
    assert c.stats.retry_causes == {"503": 1, "502": 1}


def test_429_waits_what_retry_after_says_in_either_form(client):
    c, script, waits = client
    future = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
    http_date = future.strftime("%a, %d %b %Y %H:%M:%S GMT")
    script.set(
        (429, {"Retry-After": "3"}, ERR),
        (429, {"Retry-After": http_date}, ERR),
        (200, {}, "{}"),
    )
    c.request("GET", "/thing")
    assert 3.0 <= waits[0] <= 3.5
    assert 18.0 <= waits[1] <= 20.5


def test_the_cap_on_attempts_raises_a_clear_error(client):
    c, script, waits = client
    script.set((503, {}, ERR))
    with pytest.raises(RetryBudgetExceeded) as info:
        c.request("GET", "/always-down")
    assert len(script.seen) == 4 and len(waits) == 3
    message = str(info.value)
    assert "GET /always-down" in message
    assert "gave up after 4 attempts" in message
    assert "cap: 4 attempts, 30s total wait" in message
    assert "HTTP 503" in message and "temporarily unavailable" in message
    assert info.value.attempts == 4 and info.value.last_status == 503


def test_a_retry_after_beyond_the_wait_budget_fails_at_once(client):
    c, script, waits = client
    script.set((429, {"Retry-After": "3600"}, ERR))
    with pytest.raises(RetryBudgetExceeded) as info:
        c.request("GET", "/slow")
    assert len(script.seen) == 1 and waits == []
    assert "asked to wait 3600s (Retry-After)" in str(info.value)
    assert "30s wait budget" in str(info.value)


def test_client_errors_are_not_retried(client):
    c, script, waits = client
    for status in (400, 401, 403, 404, 409, 422):
        script.set((status, {}, '{"message": "no"}'), (200, {}, "{}"))
        with pytest.raises(VendorError) as info:
            c.request("GET", "/x")
        assert info.value.status == status
        assert len(script.seen) == 1
    assert waits == []


def test_a_bare_post_is_not_retried_on_5xx_but_is_on_429(client):
    c, script, waits = client
    script.set((503, {}, ERR), (201, {}, "{}"))
    with pytest.raises(VendorError):
        c.request("POST", "/create", json_body={"a": 1})
    assert script.seen == [("POST", "/create")]

    script.set((429, {"Retry-After": "1"}, ERR), (201, {}, '{"id": 1}'))
    assert c.request_json("POST", "/create", json_body={"a": 1}) == {"id": 1}
    assert len(script.seen) == 2  # refused by the rate limiter: nothing was done, safe to resend


def test_conditional_and_declared_idempotent_writes_are_retried(client):
    c, script, waits = client
    script.set((503, {}, ERR), (200, {}, "{}"))
    c.request("PATCH", "/e(1)", json_body={"a": 1}, headers={"If-Match": 'W/"x"'})
    assert len(script.seen) == 2
    script.set((503, {}, ERR), (200, {}, "{}"))
    c.request("PATCH", "/upsert/ext/1", json_body={"a": 1}, idempotent=True)
    assert len(script.seen) == 2
    script.set((503, {}, ERR), (200, {}, "{}"))
    with pytest.raises(VendorError):
        c.request("PATCH", "/e(1)", json_body={"a": 1})  # no If-Match: not provably idempotent
    assert len(script.seen) == 1


def test_every_request_has_a_read_timeout_and_a_slow_read_is_retried(server, monkeypatch):
    script, port = server
    monkeypatch.setenv(
        "AIRFLOW_CONN_LOOPBACK",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}),
    )
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, read_timeout=0.3)
    c = VendorClient("loopback", policy=policy, sleep=waits.append)
    script.set((0, {}, "1.0"), (200, {}, '{"late": false}'))
    started = time.monotonic()
    assert c.request_json("GET", "/slow") == {"late": False}
    assert time.monotonic() - started < 0.9, "the first attempt was cut at the read timeout"
    assert c.stats.retry_causes == {"ReadTimeout": 1}

    script.set((0, {}, "1.0"), (201, {}, "{}"))
    with pytest.raises(WriteOutcomeUnknown) as info:
        c.request("POST", "/create", json_body={"a": 1})
    assert "may have committed" in str(info.value) and "ReadTimeout" in str(info.value)
    assert len(script.seen) == 1, "a sent POST without an answer is not resent"
    time.sleep(0.8)  # let the hung handler finish before the next test
    c.close()


def test_a_post_that_could_not_connect_is_retried_then_capped(monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOWHERE",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}),
    )
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, connect_timeout=0.5)
    c = VendorClient("nowhere", policy=policy, sleep=waits.append)
    with pytest.raises(RetryBudgetExceeded) as info:
        c.request("POST", "/create", json_body={"a": 1})
    assert len(waits) == 2, "never connected, so nothing was written: safe to retry"
    assert "gave up after 3 attempts" in str(info.value)
    assert "ConnectionError (no HTTP answer)" in str(info.value)
