"""The preflight DAG as a real Airflow DAG run (``airflow dags test``) against the sandbox
systems and a real warehouse: it passes (every tenant requirement of ``erpsync check-systems``
included) and audits who ran it; a warehouse behind the pack's schema version fails at once,
without retries, saying what to fix."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.conftest import make_database
from tests.support.connections import declared_connections


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=7)
    yield handle
    handle.stop()


def _task_states(airflow_url: str, dag_id: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(airflow_url) as conn:
        run_id = conn.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = %s ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = %s "
            "AND run_id = %s",
            (dag_id, run_id),
        ).fetchall()
    return {"__run_id__": (run_id, 0), **{t: (s, n) for t, s, n in rows}}


def _preflight(airflow_runtime, sandbox, *, check: bool = True, **env: str):
    """Apply airflow_settings.yaml, then run the preflight DAG (``airflow dags test``) with the
    system connections pointed at the sandbox (and ``env`` on top)."""
    airflow_runtime.run("settings", "apply")
    return airflow_runtime.run(
        "airflow",
        "dags",
        "test",
        "erpsync_preflight",
        check=check,
        extra_env={**declared_connections(sandbox.urls), **env},
    )


def test_preflight_passes_against_the_sandbox_and_is_audited(airflow_runtime, sandbox):
    _preflight(airflow_runtime, sandbox)
    states = _task_states(airflow_runtime.airflow_url, "erpsync_preflight")
    run_id = states.pop("__run_id__")[0]
    assert {t: s for t, (s, _n) in states.items()} == {
        "check_warehouse": "success",
        "check_configuration": "success",
        "check_systems": "success",
        "check_tenants": "success",
        "record_result": "success",
    }
    with psycopg.connect(airflow_runtime.warehouse_url) as conn:
        row = conn.execute(
            "SELECT action, entity_type, source_dag_id, source_task_id, detail "
            "FROM audit.audit_log WHERE source_run_id = %s",
            (run_id,),
        ).fetchone()
    assert row is not None
    action, entity_type, dag_id, task_id, detail = row
    assert (action, entity_type, dag_id, task_id) == (
        "preflight.passed",
        "pack",
        "erpsync_preflight",
        "record_result",
    )
    assert set(detail["systems"]) == {"crm", "psa", "erp"}
    tenants = detail["tenants"]
    assert not [k for k in tenants if k.endswith("_fail")], tenants
    assert {k for k in tenants if k.endswith("_ok")} == {
        "salesforce_ok",
        "harvest_ok",
        "business_central_ok",
    }


def test_a_warehouse_behind_the_schema_fails_at_once_with_what_to_fix(
    airflow_runtime, sandbox, pg_server_url
):
    empty = make_database(pg_server_url, "erpsync_test_empty")
    try:
        from erpsync.runtime.database import connection_parts

        parts = connection_parts(empty)
        warehouse = json.dumps(
            {
                "conn_type": "postgres",
                "host": parts["host"],
                "port": parts["port"],
                "login": parts["login"],
                "schema": parts["schema"],
            }
        )
        result = _preflight(
            airflow_runtime, sandbox, check=False, AIRFLOW_CONN_ERPSYNC_WAREHOUSE=warehouse
        )
        states = _task_states(airflow_runtime.airflow_url, "erpsync_preflight")
        run_id = states.pop("__run_id__")[0]
        assert states["check_warehouse"] == ("failed", 1), "a schema mismatch must not retry"
        assert states["record_result"][0] == "upstream_failed"
        del run_id
        text = result.stdout + result.stderr  # `dags test` runs tasks in-process and logs here
        assert "the warehouse schema is at version 0 but this pack needs" in text
        assert "erpsync db migrate" in text
    finally:
        from erpsync.runtime import database

        database.drop_database(empty)


def test_a_missing_tenant_requirement_fails_without_retry_naming_it(airflow_runtime, sandbox):
    import httpx

    psa = sandbox.urls["psa"]
    headers = {
        "Authorization": "Bearer sandbox-psa-token",
        "Harvest-Account-Id": "100200",
        "User-Agent": "sandbox admin (ops@example.com)",
    }
    task = next(
        t
        for t in httpx.get(f"{psa}/v2/tasks", headers=headers).json()["tasks"]
        if t["name"] == "Advisory"
    )
    httpx.patch(
        f"{psa}/v2/tasks/{task['id']}", json={"is_active": False}, headers=headers
    ).raise_for_status()
    try:
        result = _preflight(airflow_runtime, sandbox, check=False)
    finally:
        httpx.patch(
            f"{psa}/v2/tasks/{task['id']}", json={"is_active": True}, headers=headers
        ).raise_for_status()
    states = _task_states(airflow_runtime.airflow_url, "erpsync_preflight")
    assert states["check_tenants"] == ("failed", 1), "a missing requirement must not retry"
    assert states["check_systems"][0] == "success"
    assert states["record_result"][0] == "upstream_failed"
    text = result.stdout + result.stderr
    assert "1 tenant requirement(s) failed (run `erpsync check-systems`)" in text
    assert (
        f"FAIL harvest task 'Advisory' — task {task['id']} is archived: restore it in "
        "Manage > Tasks" in text
    )
    assert "OK salesforce Opportunity.PSA_Project_Id__c updateable" in text
