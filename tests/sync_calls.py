"""How tests call the sync library: they open what an Airflow task opens (the warehouse
connection, the spec's vendor client on its default Airflow connection, the side connection
factory) and hand it to :func:`erpsync.sync.engine.run_entity_sync` or
:func:`erpsync.sync.time_expense.sync_entity`, as :mod:`erpsync.airflow.sync_tasks` does."""

from __future__ import annotations

from typing import Any

import psycopg

from erpsync.connectors.harvest import HarvestClient
from erpsync.sync import engine, time_expense
from erpsync.sync.spec import EntitySpec, SyncStats


def _connect(url: str | None, **kwargs: Any) -> psycopg.Connection[Any]:
    if url is not None:
        return psycopg.connect(url, **kwargs)
    from erpsync.warehouse import connection

    return connection.connect(**kwargs)


def run_sync(spec: EntitySpec, url: str | None = None, **kwargs: Any) -> SyncStats:
    """One entity run on the warehouse at ``url`` (default: the Airflow connection
    ``erpsync_warehouse``) with the spec's client on its default connection."""
    with _connect(url) as conn, spec.source.client() as vendor:
        return engine.run_entity_sync(
            conn, spec, client=vendor, side=lambda: _connect(url, autocommit=True), **kwargs
        )


def sync_time(
    spec: EntitySpec, url: str | None = None, client: HarvestClient | None = None, **kwargs: Any
) -> SyncStats:
    """:func:`erpsync.sync.time_expense.sync_entity` the same way (``leaf_size``,
    ``page_size``, ``report`` and ``full`` pass through); a ``client`` given stays open."""
    own = client is None
    psa = client if client is not None else HarvestClient()
    try:
        with _connect(url) as conn:
            return time_expense.sync_entity(
                conn,
                spec,
                client=psa,
                side=lambda: _connect(url, autocommit=True),
                **kwargs,
            )
    finally:
        if own:
            psa.close()
