"""Airflow connections for a sandbox served in this process: ``AIRFLOW_CONN_ERPSYNC_*``.

The benchmarks and the integration tests run the pack's own clients against a sandbox started
on free loopback ports; the clients find their systems through the same Airflow connections
the DAGs use, given here as environment variables (Airflow reads ``AIRFLOW_CONN_<ID>`` as a
JSON connection). The credentials are the sandbox's public defaults
(:class:`erpsync_sandbox.context.SandboxConfig`), never a tenant's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["SandboxCredentials", "connection_env", "environ", "sandbox_credentials"]

Credentials = Mapping[str, Mapping[str, Any]]


class SandboxCredentials(Protocol):
    """The sandbox's public credentials (``erpsync_sandbox.context.SandboxConfig``)."""

    crm_client_id: str
    crm_client_secret: str
    psa_token: str
    psa_account_id: str
    erp_client_id: str
    erp_client_secret: str
    erp_tenant: str
    erp_environment: str


def sandbox_credentials(config: SandboxCredentials, *, user_agent: str) -> dict[str, Any]:
    """Login, password and extras of the three system connections for ``config``'s sandbox;
    ``user_agent`` names the caller to Harvest (its API requires one)."""
    return {
        "crm": {
            "login": config.crm_client_id,
            "password": config.crm_client_secret,
            "extra": {
                "api_version": "v60.0",
                "token_path": "/services/oauth2/token",
                "grant_type": "client_credentials",
            },
        },
        "psa": {
            "password": config.psa_token,
            "extra": {"account_id": config.psa_account_id, "user_agent": user_agent},
        },
        "erp": {
            "login": config.erp_client_id,
            "password": config.erp_client_secret,
            "extra": {
                "tenant": config.erp_tenant,
                "environment": config.erp_environment,
                "token_path": f"/{config.erp_tenant}/oauth2/v2.0/token",
                "scope": "https://api.businesscentral.dynamics.com/.default",
            },
        },
    }


def connection_env(
    urls: Mapping[str, str], credentials: Credentials, warehouse_url: str
) -> dict[str, str]:
    """``AIRFLOW_CONN_ERPSYNC_{CRM,PSA,ERP,WAREHOUSE}``: each sandbox service at its URL
    (``http://host:port``) with its ``credentials``, and the warehouse at ``warehouse_url``."""
    from erpsync.runtime.database import connection_parts

    env: dict[str, str] = {}
    for name, url in urls.items():
        host, port = url.removeprefix("http://").split(":")
        conn = {"conn_type": "http", "host": host, "port": int(port), "schema": "http"}
        env[f"AIRFLOW_CONN_ERPSYNC_{name.upper()}"] = json.dumps({**conn, **credentials[name]})
    parts = connection_parts(warehouse_url)
    env["AIRFLOW_CONN_ERPSYNC_WAREHOUSE"] = json.dumps(
        {"conn_type": "postgres", **{k: v for k, v in parts.items() if v is not None}}
    )
    return env


@contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block; restore what was there after it."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
