"""Opening the warehouse from a task: the Airflow connection ``erpsync_warehouse`` (or the id in
``ERPSYNC_WAREHOUSE_CONN_ID``) turned into a psycopg 3 connection.

psycopg 3 rather than the provider's psycopg2 hook because later load paths use its COPY API;
the connection itself still comes from Airflow, so secrets backends and ``AIRFLOW_CONN_*`` work.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

DEFAULT_CONN_ID = "erpsync_warehouse"


def conn_id() -> str:
    return os.environ.get("ERPSYNC_WAREHOUSE_CONN_ID", DEFAULT_CONN_ID)


def libpq_params(conn: Any) -> dict[str, Any]:
    """libpq keyword arguments from an Airflow connection (password included: never log)."""
    params = {
        "host": conn.host,
        "port": conn.port or 5432,
        "user": conn.login,
        "password": conn.password or None,
        "dbname": conn.schema,
        "connect_timeout": 10,
        "application_name": "erpsync",
    }
    return {k: v for k, v in params.items() if v not in (None, "")}


def conninfo(airflow_conn_id: str | None = None) -> dict[str, Any]:
    """libpq keyword arguments for the warehouse connection, resolved as a task resolves
    connections (password included: never log)."""
    from airflow.sdk import BaseHook

    return libpq_params(BaseHook.get_connection(airflow_conn_id or conn_id()))


def connect(airflow_conn_id: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    """A new psycopg connection to the warehouse (caller closes it; use as a context manager)."""
    import psycopg

    return psycopg.connect(**conninfo(airflow_conn_id), **kwargs)
