"""Fixtures shared by the sync tests that run against a fresh sandbox per test: the sandbox
(small firm, seed 0) and ``systems``, the Airflow connections to it and to the warehouse with
the PSA rate limit lifted (a module that needs the limit defines its own ``systems``); and
``mail``, a local SMTP server set as the ``erpsync_smtp`` connection (notification tests)."""

from __future__ import annotations

import pytest

from tests.integration.notify_harness import MailServer
from tests.integration.test_sync_engine import connection_env, lift_psa_rate_limit


@pytest.fixture
def sandbox(tmp_path):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path / "sandbox", size="small", seed=0)
    yield handle
    handle.stop()


@pytest.fixture
def systems(sandbox, warehouse_db, monkeypatch):
    for key, value in connection_env(sandbox, warehouse_db).items():
        monkeypatch.setenv(key, value)
    lift_psa_rate_limit(sandbox)
    return sandbox


@pytest.fixture
def mail(monkeypatch):
    server = MailServer().start()
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_SMTP", server.connection_json())
    yield server
    server.stop()
