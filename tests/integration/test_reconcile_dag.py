"""The reconcile DAG as a real Airflow DAG run (``airflow dags test``) against the small sandbox
firm synced into a real warehouse: milestones refreshed from the CRM, every item reconciled,
the GX gate run on the core and reconciliation suites (a planted critical problem blocks exactly
its client), Data Docs built, and the task log ending with the finance table."""

from __future__ import annotations

import psycopg
import pytest

from erpsync.sync.spec import RunInfo
from tests.integration import writeback_harness as h
from tests.integration.test_preflight_dag import _task_states
from tests.integration.test_sync_engine import connection_env, lift_psa_rate_limit


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=0)
    lift_psa_rate_limit(handle)
    yield handle
    handle.stop()


def sync_firm(warehouse: str) -> None:
    """What the syncs and project setup leave in the warehouse (master data, rates, contracts,
    time and expenses), run in-process as in the sync and onboarding tests."""
    from erpsync.onboarding import setup
    from erpsync.sync.specs_time import TIME_EXPENSE
    from tests.sync_calls import sync_time

    run = RunInfo.local("dag-test-prep")
    h.sync_all(warehouse, run)
    h.relay_until_done(run, systems=("psa",))
    with psycopg.connect(warehouse, autocommit=True) as conn:
        setup.run_project_setup(conn, setup.Systems(), run=RunInfo.local("dag-test-setup"))
    for spec in TIME_EXPENSE:  # the hourly DAG's page sizes
        sync_time(spec, warehouse, run=run, leaf_size=2000, page_size=2000)


def test_reconcile_dag_gates_on_data_quality_and_ends_with_the_finance_table(
    airflow_runtime, sandbox, tmp_path, monkeypatch
):
    warehouse = airflow_runtime.warehouse_url
    env = connection_env(sandbox, warehouse)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sync_firm(warehouse)
    with psycopg.connect(warehouse) as conn:
        # plant one critical problem: 30 hours on one entry of a client with a contract
        entry, client = conn.execute(
            """SELECT t.psa_id, k.account_id FROM core.time_entries t
                 JOIN core.contracts k ON k.psa_project_id = t.project_psa_id
                WHERE k.status IN ('complete', 'adopted') ORDER BY t.psa_id LIMIT 1"""
        ).fetchone()
        conn.execute("UPDATE core.time_entries SET hours = 30 WHERE psa_id = %s", (entry,))
        clients = conn.execute("SELECT count(*) FROM core.clients").fetchone()[0]

    gx_home = tmp_path / "gx"
    result = airflow_runtime.run(
        "airflow",
        "dags",
        "test",
        "erpsync_reconcile",
        extra_env={**env, "ERPSYNC_GX_HOME": str(gx_home)},
    )
    log_text = result.stdout + result.stderr  # `dags test` runs the tasks in-process

    states = _task_states(airflow_runtime.airflow_url, "erpsync_reconcile")
    run_id = states.pop("__run_id__")[0]
    assert {t: s for t, (s, _n) in states.items()} == {
        "refresh_milestones": "success",
        "reconcile": "success",
        "data_quality_gate": "success",
        "finance_table": "success",
    }
    with psycopg.connect(warehouse) as conn:
        items = conn.execute("SELECT count(*) FROM recon.items").fetchone()[0]
        blocks = conn.execute(
            "SELECT scope_type, scope_key, suite, expectation FROM ops.dq_active_blocks"
        ).fetchall()
        checked = conn.execute(
            "SELECT detail->'suites' FROM audit.audit_log WHERE action = 'data_quality.checked' "
            "AND source_dag_id = 'erpsync_reconcile' AND source_run_id = %s",
            (run_id,),
        ).fetchall()
        from erpsync.reconcile.report import finance_table

        table = finance_table(conn)
    assert items > 3000
    # the gate ran every suite and blocked exactly the planted client, nobody else
    assert len(checked) == 1 and len(checked[0][0]) == 8
    assert blocks == [("client", client, "core_time_entries", "hours_in_range")]
    assert clients > 1
    assert "CRITICAL core_time_entries.hours_in_range" in log_text
    # otherwise the sandbox firm is clean for data quality, except its planted invalid VAT ids:
    # a warning, reported and blocking nothing
    problems = sandbox.ctx.manifest()["problems"]
    invalid_vat = sum(p["kind"] == "invalid_vat_id" for p in problems)
    assert invalid_vat > 0
    warning = f"WARNING  core_tax_profiles.vat_id_valid: {invalid_vat} of {clients} rows fail"
    assert warning in log_text and log_text.count("WARNING  core_") == 1
    assert log_text.count("CRITICAL ") == 1
    assert f"client {client}: core_time_entries.hours_in_range" in log_text
    # Data Docs built on the run
    index = gx_home / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert index.exists() and "recon_items" in index.read_text()
    assert f"Data Docs: file://{index}" in log_text
    # the finance table is in the log, after the data-quality report
    lines = [line.strip() for line in table.splitlines() if line.strip()]
    assert len(lines) > 3 and all(line in log_text for line in lines)
    assert log_text.rindex(lines[0]) > log_text.rindex("data quality run")
    # no secret in the log (the PSA token of the sandbox connection) and no warehouse URL
    assert "sandbox-psa-token" in env["AIRFLOW_CONN_ERPSYNC_PSA"]
    assert "sandbox-psa-token" not in log_text
    assert "postgresql+psycopg://" not in log_text


def test_the_dags_are_scheduled_on_the_sync_assets_and_nightly_in_the_firm_zone():
    from airflow.dag_processing.dagbag import DagBag

    from erpsync import paths
    from erpsync.airflow import sync_dags

    dags = {}
    for name in ("erpsync_reconcile", "erpsync_data_quality"):
        bag = DagBag(dag_folder=str(paths.dags_dir() / f"{name}.py"))
        assert bag.import_errors == {}
        dags[name] = bag.dags[name]
    reconcile = dags["erpsync_reconcile"]
    published = {
        sync_dags.asset_for(t).uri
        for t in (
            "core.time_entries",
            "core.expenses",
            "core.contracts",
            "billing.schedules",
            "core.rate_cards",
            "core.contract_rate_overrides",
        )
    }
    assert {a.uri for a in reconcile.timetable.asset_condition.objects} == published
    tasks = {t.task_id: t for t in reconcile.tasks}
    assert tasks["finance_table"].upstream_task_ids == {"data_quality_gate"}
    assert tasks["data_quality_gate"].upstream_task_ids == {"reconcile"}
    assert tasks["reconcile"].upstream_task_ids == {"refresh_milestones"}
    assert tasks["refresh_milestones"].pool == "crm_api"
    assert {a.uri for a in tasks["data_quality_gate"].outlets} == {
        "erpsync://warehouse/recon/items",
        "erpsync://warehouse/ops/dq_blocks",
    }
    nightly = dags["erpsync_data_quality"]
    zone = nightly.timetable.timezone
    assert getattr(zone, "name", zone) == sync_dags.FIRM_TIMEZONE
    assert nightly.timetable.expression == "30 3 * * *"
