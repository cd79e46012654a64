"""Shared setup of the write-back integration tests: a sandbox firm, a migrated warehouse, the
Airflow connections pointing at both (``AIRFLOW_CONN_*``), a full sync through the real engine
and connectors, relay passes, and normalized snapshots of what the three systems hold."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from erpsync.runtime import sandbox_connections

SANDBOX_CREDENTIALS: dict[str, dict[str, Any]] = {
    "crm": {
        "login": "erpsync-sandbox",
        "password": "sandbox-crm-secret",
        "extra": {
            "api_version": "v60.0",
            "token_path": "/services/oauth2/token",
            "grant_type": "client_credentials",
        },
    },
    "psa": {
        "password": "sandbox-psa-token",
        "extra": {"account_id": "100200", "user_agent": "erpsync tests (finance-ops@example.com)"},
    },
    "erp": {
        "login": "erpsync-sandbox",
        "password": "sandbox-erp-secret",
        "extra": {
            "tenant": "sandbox",
            "environment": "production",
            "token_path": "/sandbox/oauth2/v2.0/token",
            "scope": "https://api.businesscentral.dynamics.com/.default",
        },
    },
}


FAST_RETRIES = {"retry_max_attempts": 2, "retry_base_delay": 0.05, "retry_max_delay": 0.2}


def fast_retry_credentials() -> dict[str, dict[str, Any]]:
    """The sandbox credentials with the connectors' retry waits shrunk (error-path tests)."""
    return {
        name: {**cred, "extra": {**cred["extra"], **FAST_RETRIES}}
        for name, cred in SANDBOX_CREDENTIALS.items()
    }


def connection_env(sandbox, warehouse_url: str, credentials: dict | None = None) -> dict[str, str]:
    """``AIRFLOW_CONN_ERPSYNC_{CRM,PSA,ERP,WAREHOUSE}`` for a running sandbox and a warehouse."""
    return sandbox_connections.connection_env(
        sandbox.urls, credentials or SANDBOX_CREDENTIALS, warehouse_url
    )


@contextmanager
def connections(sandbox, warehouse_url: str, credentials: dict | None = None) -> Iterator[None]:
    with sandbox_connections.environ(connection_env(sandbox, warehouse_url, credentials)):
        yield


def all_specs():
    from tests.entity_lists import nightly_specs

    return nightly_specs()


def client_specs():
    from erpsync.sync import specs

    return (specs.CLIENTS, specs.TAX_PROFILES)


def sync_time_expense(warehouse_url: str, run) -> None:
    """The time & expense syncs from the PSA (the hourly DAG's page sizes), in-process."""
    from erpsync.sync.specs_time import TIME_EXPENSE
    from erpsync.sync.time_expense import DeleteCheck
    from tests.sync_calls import sync_time

    for spec in TIME_EXPENSE:
        sync_time(
            spec,
            warehouse_url,
            run=run,
            report=DeleteCheck(spec.name),
            leaf_size=2000,
            page_size=2000,
        )


def sync_all(
    warehouse_url: str, run, *, attempts: int = 1, full: bool | None = None, only=None
) -> dict:
    """Run every master data and rates spec (the order the DAGs use), or ``only`` those; a spec
    that fails is rerun up to ``attempts`` times, as Airflow task retries would."""
    from tests.sync_calls import run_sync

    stats = {}
    for spec in only or all_specs():
        for attempt in range(1, attempts + 1):
            try:
                stats[spec.name] = run_sync(spec, warehouse_url, run=run, full=full)
                break
            except Exception:
                if attempt == attempts:
                    raise
    return stats


def run_outbox(target: str, **kwargs):
    """The relay as the write-back task calls it: on its own autocommit warehouse connection."""
    from erpsync.warehouse import connection
    from erpsync.writeback import relay

    with connection.connect(autocommit=True) as conn:
        return relay.run_outbox(conn, target, **kwargs)


def relay_until_done(run, *, systems: Iterable[str] = ("erp", "psa"), passes: int = 12) -> dict:
    """Relay passes until no row is pending (a failed delivery waits for the next pass)."""
    totals = {s: {"writes": 0, "created": 0, "updated": 0, "failed": 0} for s in systems}
    for _ in range(passes):
        pending = 0
        for system in systems:
            st = run_outbox(system, run=run)
            for key in totals[system]:
                totals[system][key] += getattr(st, key)
            pending += st.failed
        if pending == 0:
            break
    return totals


def api_writes(sandbox, since_seq: int = 0) -> list[dict]:
    """Writes made through the services' APIs (the sandbox change log, ``source=api``)."""
    return sandbox.ctx.changes.since(since_seq, source="api")


def last_seq(sandbox) -> int:
    return sandbox.ctx.changes.last_seq()


_VOLATILE = {
    "id",
    "created_at",
    "updated_at",
    "lastModifiedDateTime",
    "SystemModstamp",
    "LastModifiedDate",
    "statement_key",
}


def _normalize(body: dict) -> dict:
    out = {k: v for k, v in body.items() if k not in _VOLATILE}
    number = out.get("number")
    if isinstance(number, str) and number.startswith("ES-"):
        out["number"] = number[:4] + "*"  # derived from the canonical id: order-dependent
    return out


def store_snapshot(sandbox) -> dict[str, list[str]]:
    """What the write-back targets hold, as sorted JSON texts without ids and stamps."""
    stores = sandbox.ctx.stores
    wanted = {
        "erp": ("customers", "employees"),
        "psa": ("clients", "user_assignments"),
        "crm": ("Account",),
    }
    snap = {}
    for system, resources in wanted.items():
        for resource in resources:
            bodies = stores[system].scan(resource)
            snap[f"{system}.{resource}"] = sorted(
                json.dumps(_normalize(b), sort_keys=True, default=str) for b in bodies
            )
    return snap


_CORE_VOLATILE = {
    "canonical_id",
    "source_modstamp",
    "first_run_id",
    "last_run_id",
    "updated_at",
}


def warehouse_snapshot(url: str) -> dict[str, list]:
    """Core tables without run ids, stamps and canonical ids; outbox rows by entity and outcome;
    exceptions by cause."""
    from tests.entity_lists import core_tables

    snap: dict[str, list] = {}
    with psycopg.connect(url) as conn:
        for table in core_tables(all_specs()):  # the nightly specs' tables
            cur = conn.execute(f"SELECT * FROM {table}")  # noqa: S608 - the specs' table names
            names = [c.name for c in cur.description]
            rows = [
                json.dumps(
                    {n: v for n, v in zip(names, r, strict=True) if n not in _CORE_VOLATILE},
                    sort_keys=True,
                    default=str,
                )
                for r in cur.fetchall()
            ]
            snap[table] = sorted(rows)
        snap["outbox"] = sorted(
            conn.execute(
                """SELECT operation, entity_key, status, payload - 'number'
                     FROM ops.outbox WHERE status IN ('sent', 'blocked', 'pending', 'failed')"""
            ).fetchall(),
            key=str,
        )
        snap["exceptions"] = sorted(
            conn.execute(
                "SELECT reason_code, entity_type, entity_key, status FROM ops.exceptions"
            ).fetchall()
        )
    return snap


def manifest_ids(sandbox, kind: str) -> set[str]:
    return {p["id"] for p in sandbox.ctx.manifest()["problems"] if p["kind"] == kind}
