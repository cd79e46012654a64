"""The master data sync DAG as a real Airflow DAG run (``airflow dags test``) against the
sandbox systems and a real warehouse: every sync and write-back task succeeds, the warehouse
holds the CRM's clients, and each task's run is recorded in ops.run_stats under the DAG run."""

from __future__ import annotations

import re
from decimal import Decimal

import psycopg
import pytest

from erpsync.sync import specs
from tests.entity_lists import sync_task_ids
from tests.integration.test_preflight_dag import _task_states
from tests.integration.test_sync_engine import connection_env


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=0)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def warehouse(pg_server_url):
    """This module's warehouse: the session's holds other files' sandboxes (their ids in
    core.id_map and their contracts), which this sandbox does not have."""
    from erpsync.runtime import database
    from erpsync.warehouse import migrate
    from tests.conftest import make_database

    url = make_database(pg_server_url, "erpsync_test_syncdags")
    migrate.migrate(url)
    yield url
    database.drop_database(url)


def test_master_data_sync_dag_runs_against_the_sandbox(airflow_runtime, sandbox, warehouse):
    env = connection_env(sandbox, warehouse)
    env.pop("AIRFLOW_CONN_ERPSYNC_WAREHOUSE")  # `erpsync airflow` points it at the warehouse
    env["ERPSYNC_DATABASE_URL"] = warehouse
    airflow_runtime.run("settings", "apply")
    result = airflow_runtime.run(
        "airflow", "dags", "test", "erpsync_master_data_sync", extra_env=env
    )
    log_text = result.stdout + result.stderr  # `dags test` runs the tasks in-process
    assert "erpsync sync crm/clients run" in log_text  # the stats table in the task log
    assert "| quarantined  |" in log_text

    states = _task_states(airflow_runtime.airflow_url, "erpsync_master_data_sync")
    run_id = states.pop("__run_id__")[0]
    assert {t: s for t, (s, _n) in states.items()} == {
        t: "success"
        for t in sync_task_ids(specs.MASTER_DATA)
        | {"sync_invoice_payment_status", "write_back_erp", "write_back_psa"}
    }
    accounts = len(sandbox.ctx.stores["crm"].ids("Account"))
    with psycopg.connect(warehouse) as conn:
        clients = conn.execute("SELECT count(*) FROM core.clients").fetchone()[0]
        stats = conn.execute(
            "SELECT entity, task_id, status FROM ops.run_stats WHERE dag_id = %s AND run_id = %s",
            ("erpsync_master_data_sync", run_id),
        ).fetchall()
        counted = conn.execute(  # request budgets (erpsync.request_budget), per task at its end
            "SELECT DISTINCT task_id, system FROM ops.request_counts WHERE run_id = %s", (run_id,)
        ).fetchall()
    assert ("sync_clients", "crm") in counted and ("sync_people", "psa") in counted
    assert clients == accounts
    assert sorted(stats) == sorted(
        [(spec.name, f"sync_{spec.name}", "success") for spec in specs.MASTER_DATA]
        + [("invoice_payment_status", "sync_invoice_payment_status", "success")]
    )


def test_the_sync_dags_declare_tasks_pools_assets_and_the_firm_schedule():
    import importlib.util
    from pathlib import Path

    from erpsync.airflow import sync_dags

    dags = {}
    for name in ("erpsync_master_data_sync", "erpsync_rates_sync"):
        path = Path(__file__).resolve().parents[2] / "dags" / f"{name}.py"
        module_spec = importlib.util.spec_from_file_location(f"_dag_{name}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        dags[name] = module.dag

    rates = dags["erpsync_rates_sync"]
    tasks = {t.task_id: t for t in rates.tasks}
    # psa_clients: the currency Harvest prices a client's time in
    assert {"sync_billable_rates", "sync_psa_clients"} <= sync_task_ids(specs.RATES)
    assert set(tasks) == sync_task_ids(specs.RATES) | {"write_back_psa"}
    assert tasks["sync_billable_rates"].pool == "psa_api"
    assert tasks["sync_contract_rate_overrides"].pool == "crm_api"
    assert tasks["write_back_psa"].upstream_task_ids == sync_task_ids(specs.RATES)
    assert [a.uri for a in tasks["sync_cost_rates"].outlets] == [
        "erpsync://warehouse/core/rate_cards"
    ]
    master = {t.task_id: t for t in dags["erpsync_master_data_sync"].tasks}
    assert master["sync_tax_rates"].pool == "erp_api"
    assert [a.uri for a in master["sync_clients"].outlets] == ["erpsync://warehouse/core/clients"]
    assert master["write_back_erp"].upstream_task_ids == sync_task_ids(specs.MASTER_DATA)
    # the ERP read of invoice payment status (cash), beside the syncs, in the ERP's pool
    payments = master["sync_invoice_payment_status"]
    assert payments.pool == "erp_api" and payments.upstream_task_ids == set()
    assert [a.uri for a in payments.outlets] == ["erpsync://warehouse/billing/erp_invoice_status"]
    for dag, entity_specs in (
        (dags["erpsync_master_data_sync"], specs.MASTER_DATA),
        (rates, specs.RATES),
    ):
        zone = dag.timetable.timezone
        assert getattr(zone, "name", zone) == sync_dags.FIRM_TIMEZONE
        # every entity: its task in its system's pool, publishing its core table, in the docs
        for spec in entity_specs:
            task = dag.get_task(f"sync_{spec.name}")
            assert task.pool == sync_dags.POOLS[spec.system]
            assert [a.uri for a in task.outlets] == [spec.asset_uri]
            assert f"`sync_{spec.name}`" in dag.doc_md


def test_rates_sync_dag_runs_against_the_sandbox(airflow_runtime, sandbox, warehouse):
    env = connection_env(sandbox, warehouse)
    env.pop("AIRFLOW_CONN_ERPSYNC_WAREHOUSE")
    env["ERPSYNC_DATABASE_URL"] = warehouse
    airflow_runtime.run("settings", "apply")
    airflow_runtime.run("airflow", "dags", "test", "erpsync_rates_sync", extra_env=env)

    states = _task_states(airflow_runtime.airflow_url, "erpsync_rates_sync")
    run_id = states.pop("__run_id__")[0]
    assert {t: s for t, (s, _n) in states.items()} == {
        t: "success" for t in sync_task_ids(specs.RATES) | {"write_back_psa"}
    }
    psa = sandbox.ctx.stores["psa"]
    rate_rows = len(psa.ids("billable_rates")) + len(psa.ids("cost_rates"))
    with psycopg.connect(warehouse) as conn:
        live_rate_cards = conn.execute(
            "SELECT count(*) FROM core.rate_cards WHERE deleted_at IS NULL"
        ).fetchone()[0]
        entities = conn.execute(
            "SELECT entity FROM ops.run_stats WHERE dag_id = %s AND run_id = %s "
            "AND status = 'success'",
            ("erpsync_rates_sync", run_id),
        ).fetchall()
    assert live_rate_cards == rate_rows
    assert sorted(e for (e,) in entities) == sorted(spec.name for spec in specs.RATES)
    # the planted assignments whose rate differs from the contract now carry the contract rate
    manifest = sandbox.ctx.manifest()
    drifted = [p for p in manifest["problems"] if p["kind"] == "rate_differs_from_contract"]
    assert drifted
    for problem in drifted:
        contract_rate = re.search(r"contract rate ([0-9.]+)", problem["detail"]).group(1)
        assignment = psa.get("user_assignments", str(problem["id"]))
        assert Decimal(str(assignment["hourly_rate"])) == Decimal(contract_rate), problem
        assert assignment["use_default_rates"] is False, problem  # applied, not just stored
