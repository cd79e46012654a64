"""Airflow connections to the sandbox vendors, and vendor clients on a fault-free sandbox: what
the connector tests of the three systems share."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


def sandbox_conn(
    url: str, *, password: str, extra: dict[str, Any], login: str | None = None
) -> str:
    """``AIRFLOW_CONN_*`` JSON of an http connection to the sandbox server at ``url``."""
    host, port = url.removeprefix("http://").split(":")
    conn: dict[str, Any] = {"conn_type": "http", "host": host, "port": int(port), "schema": "http"}
    if login is not None:
        conn["login"] = login
    return json.dumps({**conn, "password": password, "extra": extra})


def psa_conn(url: str, *, password: str = "sandbox-psa-token", **extra: str) -> str:  # noqa: S107
    """The Harvest connection to the sandbox PSA at ``url`` (its account and token)."""
    account = {"account_id": "100200", "user_agent": "erpsync tests (t@example.com)"}
    return sandbox_conn(url, password=password, extra={**account, **extra})


def erp_conn(url: str, *, password: str = "sandbox-erp-secret", **extra: str) -> str:  # noqa: S107
    """The Business Central connection to the sandbox ERP at ``url`` (its tenant and token path)."""
    tenant = {"tenant": "sandbox", "environment": "production"}
    token = {"token_path": "/sandbox/oauth2/v2.0/token"}
    return sandbox_conn(
        url, login="erpsync-sandbox", password=password, extra={**tenant, **token, **extra}
    )


def crm_conn(
    url: str,
    *,
    login: str = "erpsync-sandbox",
    password: str = "sandbox-crm-secret",  # noqa: S107
    **extra: str,
) -> str:
    """The Salesforce connection to the sandbox CRM at ``url`` (API version and token path)."""
    token = {"api_version": "v60.0", "token_path": "/services/oauth2/token"}
    return sandbox_conn(url, login=login, password=password, extra={**token, **extra})


def clear_faults(url: str) -> None:
    """No fault injected any more on the sandbox server at ``url``."""
    httpx.put(f"{url}/__admin/faults", json={}).raise_for_status()


@contextmanager
def fault_free_client(url: str, make: Callable[[], _C]) -> Iterator[_C]:
    """A client made by ``make`` against the sandbox server at ``url``, with no faults injected
    before or after its test; closed afterwards."""
    clear_faults(url)
    client = make()
    try:
        yield client
    finally:
        client.close()
        clear_faults(url)


def declared_connections(urls: dict[str, str]) -> dict[str, str]:
    """``AIRFLOW_CONN_ERPSYNC_<SYSTEM>`` of the system connections airflow_settings.yaml declares
    (their login, password and extras), pointed at the sandbox servers ``urls`` (system -> URL)."""
    from erpsync import paths, settings

    declared = {c.conn_id: c for c in settings.load(paths.settings_file()).airflow.connections}
    env = {}
    for name, url in urls.items():
        conn = declared[f"erpsync_{name}"]
        env[f"AIRFLOW_CONN_ERPSYNC_{name.upper()}"] = sandbox_conn(
            url, login=conn.conn_login, password=conn.conn_password, extra=conn.conn_extra
        )
    return env
