"""The hourly time & expense sync against the small sandbox firm (real HTTP, the pack's Harvest
connector) and a real PostgreSQL warehouse: a full sync holds exactly the PSA's time entries
and expenses (ids, hours, rates, states, amounts to the cent), a second run changes nothing
and costs one count request per entity, an incremental run after a clock advance touches
exactly the change log (creates, updates and hard deletes), hard deletes are found with a
fraction of a full re-read's requests, and with faults on the end state equals the PSA's."""

from __future__ import annotations

import math
from decimal import Decimal

import httpx
import psycopg

from erpsync.connectors.harvest import HarvestClient
from erpsync.sync import specs
from erpsync.sync.spec import RunInfo
from erpsync.sync.specs_time import EXPENSES, TIME_ENTRIES, TIME_EXPENSE
from erpsync.sync.time_expense import DeleteCheck
from tests.integration.test_sync_engine import connection_env
from tests.sync_calls import sync_time

#: small windows and pages so the small firm (~3,000 entries) behaves like a large one
#: (a full re-read at this page size is ~120 requests; the DAG uses 2,000 / 2,000)
LEAF, PAGE = 25, 25


def sync(warehouse_db: str, label: str, **kwargs) -> dict:
    """Both specs as the DAG runs them; returns {name: (stats, delete check, client)}."""
    run = RunInfo.local(label)
    out = {}
    for spec in TIME_EXPENSE:
        client = HarvestClient()
        check = DeleteCheck(spec.name)
        stats = sync_time(
            spec,
            warehouse_db,
            client,
            run=run,
            report=check,
            leaf_size=LEAF,
            page_size=PAGE,
            **kwargs,
        )
        out[spec.name] = (stats, check, client)
    return out


def rows(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _dec(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def psa_time(sandbox) -> dict[str, tuple]:
    return {
        str(e["id"]): (
            e["spent_date"],
            _dec(e["hours"]),
            # Harvest has no approval status: the warehouse's comes from is_closed
            "approved" if e["is_closed"] else "unapproved",
            e["is_locked"],
            e["is_billed"],
            e["billable"],
            _dec(e.get("billable_rate")),
            _dec(e.get("cost_rate")),
            str(e["project"]["id"]),
            str(e["user"]["id"]),
            str(e["task"]["id"]) if e.get("task") else None,
        )
        for e in (r.data() for r in sandbox.ctx.stores["psa"].iter_rows("time_entries"))
    }


def warehouse_time(url: str) -> dict[str, tuple]:
    return {
        r[0]: (r[1].isoformat(), *r[2:])
        for r in rows(
            url,
            """SELECT psa_id, spent_date, hours, approval_status, is_locked, is_billed, billable,
                      billable_rate, cost_rate, project_psa_id, user_psa_id, task_psa_id
               FROM core.time_entries WHERE deleted_at IS NULL""",
        )
    }


def psa_expenses(sandbox) -> dict[str, tuple]:
    return {
        str(e["id"]): (
            e["spent_date"],
            _dec(e["total_cost"]),
            e["client"]["currency"],  # Harvest's expense: the client carries the currency
            "approved" if e["is_closed"] else "unapproved",
            e["is_locked"],
            e["is_billed"],
            e["receipt"] is not None,
            str(e["project"]["id"]),
        )
        for e in (r.data() for r in sandbox.ctx.stores["psa"].iter_rows("expenses"))
    }


def warehouse_expenses(url: str) -> dict[str, tuple]:
    return {
        r[0]: (r[1].isoformat(), *r[2:])
        for r in rows(
            url,
            """SELECT psa_id, spent_date, total_cost, currency, approval_status, is_locked,
                      is_billed, has_receipt, project_psa_id
               FROM core.expenses WHERE deleted_at IS NULL""",
        )
    }


def assert_matches_psa(sandbox, url: str) -> None:
    expected_time, loaded_time = psa_time(sandbox), warehouse_time(url)
    assert set(loaded_time) == set(expected_time)
    assert loaded_time == expected_time
    expected_exp, loaded_exp = psa_expenses(sandbox), warehouse_expenses(url)
    assert loaded_exp == expected_exp
    # money to the cent, per currency
    totals = dict(
        rows(
            url,
            "SELECT currency, sum(total_cost) FROM core.expenses WHERE deleted_at IS NULL "
            "GROUP BY 1",
        )
    )
    psa_totals: dict[str, Decimal] = {}
    for _, cost, currency, *_ in expected_exp.values():
        psa_totals[currency] = psa_totals.get(currency, Decimal(0)) + cost
    assert totals == psa_totals


def test_specs_are_registered_and_lean():
    assert specs.get("time_entries") is TIME_ENTRIES and specs.get("expenses") is EXPENSES
    assert TIME_ENTRIES.incremental and EXPENSES.incremental
    assert "time_entries" not in specs.ALL  # the nightly DAGs do not pick them up
    # no Python validator runs per time entry (the 1,000,000-entry path)
    from erpsync.models.canonical import adapter_for

    schema = str(adapter_for(TIME_ENTRIES.model).core_schema)
    assert "function-before" not in schema and "function-after" not in schema


def test_full_sync_matches_the_psa_and_a_second_run_changes_nothing(systems, warehouse_db):
    sandbox = systems
    first = sync(warehouse_db, "full")
    for stats, check, _ in first.values():
        assert stats.mode == "full" and not check.ran
    assert first["time_entries"][0].inserted == len(psa_time(sandbox)) > 2000
    assert first["expenses"][0].inserted == len(psa_expenses(sandbox)) > 100
    assert_matches_psa(sandbox, warehouse_db)
    # planted business problems load as they are (reconciliation reports them)
    assert rows(warehouse_db, "SELECT count(*) FROM ops.quarantine") == [(0,)]
    missing_receipt = {
        p["id"]
        for p in sandbox.ctx.manifest()["problems"]
        if p["kind"] == "expense_missing_receipt"
    }
    assert missing_receipt
    assert {
        r[0] for r in rows(warehouse_db, "SELECT psa_id FROM core.expenses WHERE NOT has_receipt")
    } >= {str(i) for i in missing_receipt}

    before = rows(warehouse_db, "SELECT * FROM core.time_entries ORDER BY 1") + rows(
        warehouse_db, "SELECT * FROM core.expenses ORDER BY 1"
    )
    second = sync(warehouse_db, "again")
    for name, (stats, check, _) in second.items():
        assert stats.mode == "incremental", name
        assert (stats.inserted, stats.updated, stats.deleted) == (0, 0, 0), name
        # nothing deleted: the delete check is one count request
        assert check.ran and check.requests == 1 and check.count_requests == 1, name
    after = rows(warehouse_db, "SELECT * FROM core.time_entries ORDER BY 1") + rows(
        warehouse_db, "SELECT * FROM core.expenses ORDER BY 1"
    )
    assert after == before


def changed_ids(changes: list[dict], resource: str) -> tuple[set[str], set[str]]:
    """(ids created or updated, ids deleted) of ``resource`` in the change log."""
    touched = {str(c["id"]) for c in changes if c["system"] == "psa" and c["resource"] == resource}
    gone = {
        str(c["id"])
        for c in changes
        if c["system"] == "psa" and c["resource"] == resource and c["op"] == "delete"
    }
    return touched, gone


def test_incremental_run_touches_exactly_the_change_log_and_finds_hard_deletes(
    systems, warehouse_db
):
    sandbox = systems
    sync(warehouse_db, "initial")
    loaded = {"time_entries": set(warehouse_time(warehouse_db))}
    loaded["expenses"] = set(warehouse_expenses(warehouse_db))
    admin = httpx.Client(base_url=sandbox.urls["psa"], timeout=30)
    seq = admin.get("/__admin/changes").json()["last_seq"]
    admin.post("/__admin/advance", json={"steps": 2, "seed": 5}).raise_for_status()
    # plus hard deletes of our own, in different months, old and recent
    psa = sandbox.ctx.stores["psa"]
    entries = sorted(psa.iter_rows("time_entries"), key=lambda r: r.data()["spent_date"])
    for row in (entries[10], entries[len(entries) // 2]):
        assert psa.delete("time_entries", row.data()["id"])
    assert psa.delete("expenses", psa.ids("expenses")[7])
    changes = admin.get("/__admin/changes", params={"since": seq}).json()["changes"]

    stats = sync(warehouse_db, "incremental")
    for spec in TIME_EXPENSE:
        st, check, _ = stats[spec.name]
        loaded_before = loaded[spec.name]
        touched, gone = changed_ids(changes, spec.name)
        assert gone, f"the scenario deletes {spec.name}"
        # created-and-deleted within the advance never reached the warehouse
        expected = {i for i in touched if i not in gone or i in loaded_before}
        assert st.mode == "incremental"
        assert set(st.changed_keys) == expected, spec.name
        assert st.deleted == len(gone & loaded_before), spec.name
        assert set(check.deleted) == gone & loaded_before
        # hard deletes found with far fewer list requests than re-reading every id
        full_reread = math.ceil(len(loaded_before) / PAGE)
        list_requests = check.count_requests + check.id_pages
        if spec is TIME_ENTRIES:
            assert list_requests <= full_reread // 3, (check.summary(), full_reread)
            assert check.ids_listed <= len(loaded_before) // 4, check.summary()
    assert_matches_psa(sandbox, warehouse_db)
    # deletes are soft: the row stays with deleted_at
    gone_time = changed_ids(changes, "time_entries")[1] & loaded["time_entries"]
    assert rows(
        warehouse_db,
        "SELECT count(*) FROM core.time_entries WHERE deleted_at IS NOT NULL",
    ) == [(len(gone_time),)]

    settled = sync(warehouse_db, "settled")
    for name, (st, check, _) in settled.items():
        assert st.changed == 0, name
        assert check.requests == 1, (name, check.summary())


def test_with_faults_on_the_end_state_equals_the_psa(systems, warehouse_db):
    sandbox = systems
    admin = httpx.Client(base_url=sandbox.urls["psa"], timeout=30)
    faults = {
        "seed": 11,
        "error_rate_5xx": 0.08,
        "burst_429": {"count": 2, "retry_after": 1, "start_after": 3, "every": 0},
        "mutate_during_paging_rate": 0.5,
        "mutate_count": 3,
        "tie_timestamps": True,
    }
    admin.put("/__admin/faults", json=faults).raise_for_status()
    seq = admin.get("/__admin/changes").json()["last_seq"]
    first = sync(warehouse_db, "faulty-full")
    admin.post("/__admin/advance", json={"steps": 2, "seed": 9}).raise_for_status()
    psa = sandbox.ctx.stores["psa"]
    assert psa.delete("time_entries", psa.ids("time_entries")[25])
    second = sync(warehouse_db, "faulty-incremental")
    retries = sum(c.stats.retries for run in (first, second) for _, _, c in run.values())
    assert retries > 0, "the faults were exercised"
    mutated = [
        c
        for c in admin.get("/__admin/changes", params={"since": seq}).json()["changes"]
        if c["source"] == "fault"
    ]
    assert mutated, "records were mutated while paging"
    # records the fault changed after a read paged past them arrive with the next run
    admin.put("/__admin/faults", json={"seed": 0}).raise_for_status()
    sync(warehouse_db, "after-faults")
    assert_matches_psa(sandbox, warehouse_db)
    quiet = sync(warehouse_db, "quiet")
    assert all(st.changed == 0 for st, _, _ in quiet.values())


def _load_dag():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "dags" / "erpsync_time_expense_sync.py"
    module_spec = importlib.util.spec_from_file_location("_dag_time_expense", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.dag


def test_the_dag_is_hourly_in_the_firm_zone_with_pools_and_assets():
    from erpsync.airflow import sync_dags

    dag = _load_dag()
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"sync_time_entries", "sync_expenses"}
    assert {t.pool for t in tasks.values()} == {"psa_api"}
    assert [a.uri for a in tasks["sync_time_entries"].outlets] == [
        "erpsync://warehouse/core/time_entries"
    ]
    assert [a.uri for a in tasks["sync_expenses"].outlets] == ["erpsync://warehouse/core/expenses"]
    assert dag.timetable.expression == "0 * * * *"
    zone = dag.timetable.timezone
    assert getattr(zone, "name", zone) == sync_dags.FIRM_TIMEZONE
    assert "approval" in dag.doc_md and "receipt" in dag.doc_md


def test_time_expense_dag_runs_against_the_sandbox(airflow_runtime, sandbox, warehouse_db):
    from tests.integration.test_preflight_dag import _task_states

    # its own warehouse: the session's holds other files' sandboxes (their time entries)
    warehouse = warehouse_db
    env = connection_env(sandbox, warehouse)
    env.pop("AIRFLOW_CONN_ERPSYNC_WAREHOUSE")  # `erpsync airflow` points it at the warehouse
    env["ERPSYNC_DATABASE_URL"] = warehouse
    airflow_runtime.run("settings", "apply")
    result = airflow_runtime.run(
        "airflow", "dags", "test", "erpsync_time_expense_sync", extra_env=env
    )
    assert "erpsync sync psa/time_entries run" in result.stdout + result.stderr

    states = _task_states(airflow_runtime.airflow_url, "erpsync_time_expense_sync")
    run_id = states.pop("__run_id__")[0]
    assert {t: s for t, (s, _n) in states.items()} == {
        "sync_time_entries": "success",
        "sync_expenses": "success",
    }
    assert_matches_psa(sandbox, warehouse)
    entities = rows(
        warehouse,
        "SELECT entity, task_id FROM ops.run_stats WHERE dag_id = %s AND run_id = %s "
        "AND status = 'success'",
        ("erpsync_time_expense_sync", run_id),
    )
    assert sorted(entities) == [
        ("expenses", "sync_expenses"),
        ("time_entries", "sync_time_entries"),
    ]
