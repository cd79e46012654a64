"""Secrets never leak from the vendor clients, even from a hostile server that echoes every
request (form body, headers, bearer token) back in its error answers.

For each client a canary is planted in the connection password and another in a token-ish
extra that the client also sends (``client_secret`` / ``access_token`` with an empty password),
plus the access token the server issues. A loopback server in each vendor's error format answers
400 from the token endpoint, or issues a token and answers 401 (the client logs in again once)
or 500 (retried, then capped) with the echo. The canaries must appear in no exception text,
captured log record (caplog) or stdout/stderr (capsys); the echo is scrubbed to ``***``.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus

import pytest

from erpsync.connectors.business_central import BusinessCentralClient
from erpsync.connectors.errors import AuthError, ConnectorError, RetryBudgetExceeded
from erpsync.connectors.harvest import HarvestClient
from erpsync.connectors.http import RetryPolicy
from erpsync.connectors.salesforce import SalesforceClient

CANARY_PW = "canary-pw-7f3a9c21e"
CANARY_EXTRA = "canary-extra-5d1b8e44"
ISSUED = "00Dcanary!issued-token-" + "q" * 16


def _error_body(vendor: str, message: str) -> object:
    if vendor == "crm":
        return [{"errorCode": "UNKNOWN_EXCEPTION", "message": message}]
    if vendor == "erp":
        return {"error": {"code": "Internal_ServerError", "message": message}}
    return {"message": message}


class EchoServer:
    def __init__(self, vendor: str, status: int) -> None:
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                outer.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                echo = f"{unquote_plus(raw)} {raw} {dict(self.headers)} {self.command} {self.path}"
                if "oauth2" in self.path:
                    if status == 400:
                        return self._send(
                            400, {"error": "invalid_client", "error_description": echo}
                        )
                    host = self.headers["Host"]
                    return self._send(
                        200,
                        {
                            "access_token": ISSUED,
                            "instance_url": f"http://{host}",
                            "expires_in": 3599,
                        },
                    )
                return self._send(status, _error_body(vendor, echo))

            def _send(self, code: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _reply

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _connection(vendor: str, port: int, credential_in: str) -> str:
    secret = {"password": CANARY_PW} if credential_in == "password" else {"password": ""}
    extra: dict[str, str] = {}
    if vendor == "crm":
        extra = {"token_path": "/services/oauth2/token", "client_secret": CANARY_EXTRA}
    elif vendor == "erp":
        extra = {
            "tenant": "t1",
            "environment": "production",
            "token_path": "/t1/oauth2/v2.0/token",
            "company_id": "c0ffee00-0000-0000-0000-000000000001",
            "client_secret": CANARY_EXTRA,
        }
    else:
        extra = {
            "account_id": "1",
            "user_agent": "tests (t@example.com)",
            "access_token": CANARY_EXTRA,
        }
    return json.dumps(
        {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": port,
            "schema": "http",
            "login": "client-id" if vendor != "psa" else "",
            **secret,
            "extra": extra,
        }
    )


def _call(vendor: str):
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_total_wait=1.0)
    if vendor == "crm":
        client = SalesforceClient(policy=policy)
        return client, lambda: list(client.query("SELECT Id FROM Account"))
    if vendor == "psa":
        client = HarvestClient(policy=policy)
        return client, lambda: list(client.iter_pages("clients"))
    client = BusinessCentralClient(policy=policy)
    return client, lambda: client.create("customers", {"displayName": CANARY_EXTRA[::-1]})


CASES = [
    (vendor, status, credential_in)
    for vendor in ("crm", "psa", "erp")
    # Harvest has no token endpoint (a personal access token is the credential): no 400 case.
    for status in ((401, 500) if vendor == "psa" else (400, 401, 500))
    for credential_in in ("password", "extra")
]


@pytest.mark.parametrize(("vendor", "status", "credential_in"), CASES)
def test_echoed_requests_never_leak_secrets(
    vendor, status, credential_in, monkeypatch, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    server = EchoServer(vendor, status)
    try:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_ERPSYNC_{vendor.upper()}",
            _connection(vendor, server.port, credential_in),
        )
        client, call = _call(vendor)
        with pytest.raises(ConnectorError) as info:
            call()
        error = info.value
        if status in (400, 401):
            assert isinstance(error, AuthError)
        elif vendor == "erp":
            assert error.status == 500, "a POST is not retried on 5xx"  # type: ignore[attr-defined]
        else:
            assert isinstance(error, RetryBudgetExceeded)
        out = capsys.readouterr()
        texts = [str(error), repr(error), caplog.text, out.out, out.err]
        for text in texts:
            for canary in (CANARY_PW, CANARY_EXTRA, ISSUED):
                assert canary not in text
        assert "***" in str(error), "the echo was scrubbed, not dropped"
        client.close()
    finally:
        server.stop()
