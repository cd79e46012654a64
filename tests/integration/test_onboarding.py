"""Client onboarding (project setup) against the sandbox firm (real HTTP through the pack's
connectors) and a real PostgreSQL warehouse.

* every ``contract_missing_field`` contract in the generator's manifest gets exactly one
  exception (the field, the owner, what to fix) and nothing is built for it;
* a valid contract gets exactly one PSA project (tasks, user assignments at the contracted
  rates; a fixed-fee contract a Harvest fixed-fee project with its fee), one ERP project, a
  billing schedule and ``PSA_Project_Id__c`` in the CRM; a fixed-fee contract's milestones come
  from its ``Contract_Milestone__c`` records in the CRM (Harvest has none); a rerun writes
  nothing anywhere;
* fixing a contract in the CRM completes it on the next run and closes its exception;
* a change order (a direct CRM edit, and the sandbox's ``advance``) becomes a new contract
  version: PSA budget, fee and rates and the schedule updated, history kept;
* a crash between every pair of setup steps, and dropped connections after the PSA, ERP and CRM
  committed, followed by reruns, leave no duplicate anywhere.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal

import httpx
import psycopg
import pytest

from erpsync.onboarding import setup
from erpsync.sync import specs
from erpsync.sync.spec import RunInfo
from tests.integration import writeback_harness as h

BUILD_TABLES = ("core.contract_milestones", "billing.schedules", "ops.onboarding_steps")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    from erpsync_sandbox.serve import start_sandbox

    monkeypatch.setenv("ERPSYNC_PSA_RATE_LIMIT", "off")  # the client's limit: throttle.py
    handle = start_sandbox(tmp_path / "sandbox", size="small", seed=0)
    httpx.put(
        handle.urls["psa"] + "/__admin/psa/rate_limit", json={"spec": "off"}, timeout=10
    ).raise_for_status()
    yield handle
    handle.stop()


def prepare_master_data(warehouse_db: str, label: str) -> None:
    """What the nightly master data sync leaves: clients, tax profiles and people in the
    warehouse, every client with a valid tax id in the PSA."""
    run = RunInfo.local(label)
    h.sync_all(warehouse_db, run, only=(specs.CLIENTS, specs.TAX_PROFILES, specs.PEOPLE))
    h.relay_until_done(run, systems=("psa",))


def setup_run(warehouse_db: str, label: str = "onboarding", **kwargs) -> setup.SetupStats:
    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        return setup.run_project_setup(conn, setup.Systems(), run=RunInfo.local(label), **kwargs)


def q(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def opportunities(sandbox) -> dict[str, dict]:
    return {o["Id"]: o for o in sandbox.ctx.stores["crm"].scan("Opportunity")}


def pending_contracts(sandbox) -> dict[str, dict]:
    """Closed-won opportunities not set up yet (no PSA project id in the CRM)."""
    return {
        i: o for i, o in opportunities(sandbox).items() if o["IsWon"] and not o["PSA_Project_Id__c"]
    }


def edit_opportunity(sandbox, opp_id: str, **fields) -> None:
    """A user's edit in the CRM (stamped with the business clock)."""
    store = sandbox.ctx.stores["crm"]
    body = {**store.get("Opportunity", opp_id), **fields}
    store.put("Opportunity", opp_id, body)


def crm_milestones(sandbox, opp_id: str) -> list[dict]:
    """The opportunity's Contract_Milestone__c records, by due date and name."""
    rows = [
        m
        for m in sandbox.ctx.stores["crm"].scan("Contract_Milestone__c")
        if m["Opportunity__c"] == opp_id
    ]
    return sorted(rows, key=lambda m: (m["Due_Date__c"], m["Name"]))


def add_milestone(sandbox, opp_id: str, name: str, amount: Decimal, due: str) -> str:
    """A user adds a Contract Milestone record under the opportunity in the CRM."""
    from erpsync_sandbox.crm.schema import salesforce_id

    store = sandbox.ctx.stores["crm"]
    rid = salesforce_id(f"a0M{len(store.ids('Contract_Milestone__c')) + 70000:012d}")
    store.put(
        "Contract_Milestone__c",
        rid,
        {
            "Id": rid,
            "Name": name,
            "Opportunity__c": opp_id,
            "Amount__c": amount,
            "Due_Date__c": due,
            "Status__c": "Planned",
            "Accepted_Date__c": None,
            "Invoice_Number__c": None,
            "IsDeleted": False,
        },
        parent_id=opp_id,
    )
    return rid


def edit_milestone(sandbox, rid: str, **fields) -> None:
    store = sandbox.ctx.stores["crm"]
    row = store.get_row("Contract_Milestone__c", rid)
    store.put("Contract_Milestone__c", rid, {**row.data(), **fields}, parent_id=row.parent_id)


def psa_people(sandbox, n: int) -> list[dict]:
    users = [u for u in sandbox.ctx.stores["psa"].scan("users") if u.get("is_active")]
    return sorted(users, key=lambda u: u["id"])[:n]


def codes(warehouse_db: str) -> dict[str, str]:
    return dict(q(warehouse_db, "SELECT DISTINCT opportunity_id, project_code FROM core.contracts"))


def built(sandbox, code: str) -> dict[str, list]:
    """What the three systems hold for one project code."""
    stores = sandbox.ctx.stores
    projects = [p for p in stores["psa"].scan("projects") if p.get("code") == code]
    ids = {p["id"] for p in projects}
    return {
        "psa_projects": projects,
        "erp_projects": [p for p in stores["erp"].scan("projects") if p.get("number") == code],
        "task_assignments": [
            a for a in stores["psa"].scan("task_assignments") if a["project"]["id"] in ids
        ],
        "user_assignments": [
            a for a in stores["psa"].scan("user_assignments") if a["project"]["id"] in ids
        ],
    }


def assert_built_once(sandbox, warehouse_db: str, opp_id: str, code: str) -> dict[str, list]:
    """Exactly one of everything for a completed contract, matching its (latest) terms."""
    opp = sandbox.ctx.stores["crm"].get("Opportunity", opp_id)
    got = built(sandbox, code)
    assert len(got["psa_projects"]) == 1, (opp_id, got["psa_projects"])
    assert len(got["erp_projects"]) == 1, (opp_id, got["erp_projects"])
    project = got["psa_projects"][0]
    # a Harvest project has no currency: it bills in its client's (audit H13)
    assert "currency" not in project
    assert project["client"]["currency"] == opp["CurrencyIsoCode"]
    assert project["starts_on"] == opp["Contract_Start__c"]
    model = {"Time and Materials": "time_and_materials", "Fixed Fee": "fixed_fee"}.get(
        opp["Billing_Model__c"], "retainer"
    )
    # budget is hours (budget_by project); a money budget is cost_budget (budget_by
    # project_cost), https://help.getharvest.com/api-v2/projects-api/projects/projects/
    if opp.get("Cap_Type__c") == "Hours" and model == "time_and_materials":
        assert (project["budget_by"], project["cost_budget"]) == ("project", None)
        assert Decimal(str(project["budget"])) == Decimal(str(opp["Cap_Value__c"]))
    else:
        capped = model == "time_and_materials" and opp.get("Cap_Type__c") == "Amount"
        money_budget = opp["Cap_Value__c"] if capped else opp["Amount"]
        assert (project["budget_by"], project["budget"]) == ("project_cost", None)
        assert Decimal(str(project["cost_budget"])) == Decimal(str(money_budget))
    tasks = Counter(a["task"]["id"] for a in got["task_assignments"])
    assert len(tasks) == len(setup.PROJECT_TASKS[model]) and max(tasks.values()) == 1
    assert "milestones" not in sandbox.ctx.stores["psa"].resources()  # Harvest has none
    milestones = crm_milestones(sandbox, opp_id) if model == "fixed_fee" else []
    if model == "fixed_fee":  # a Harvest fixed-fee project, as Harvest documents it
        assert project["is_fixed_fee"] is True
        assert Decimal(str(project["fee"])) == Decimal(str(opp["Amount"]))
    version = int(opp["Contract_Version__c"])
    assert q(
        warehouse_db,
        """SELECT name, amount, due_date::text, crm_milestone_id FROM core.contract_milestones
            WHERE opportunity_id = %s AND version = %s ORDER BY seq""",
        (opp_id, version),
    ) == [(m["Name"], Decimal(str(m["Amount__c"])), m["Due_Date__c"], m["Id"]) for m in milestones]
    overrides = json.loads(opp["Rate_Overrides__c"] or "[]")
    emails = {u["id"]: u["email"].lower() for u in sandbox.ctx.stores["psa"].scan("users")}
    assert sorted(
        (emails[a["user"]["id"]], Decimal(str(a["hourly_rate"]))) for a in got["user_assignments"]
    ) == sorted((o["user_email"].lower(), Decimal(o["rate"])) for o in overrides)
    assert opp["PSA_Project_Id__c"] == str(project["id"])
    schedules = q(
        warehouse_db,
        "SELECT version, status FROM billing.schedules WHERE opportunity_id = %s ORDER BY 1",
        (opp_id,),
    )
    assert schedules[-1] == (version, "active")
    assert [s for s in schedules if s[1] == "active"] == [(version, "active")]
    lines = q(
        warehouse_db,
        """SELECT l.kind, l.amount FROM billing.schedule_lines l
             JOIN billing.schedules s USING (schedule_id)
            WHERE s.opportunity_id = %s AND s.version = %s ORDER BY l.seq""",
        (opp_id, version),
    )
    assert lines
    if model == "fixed_fee":
        assert [a for _, a in lines] == [Decimal(str(m["Amount__c"])) for m in milestones]
    elif model == "retainer":
        assert {k for k, _ in lines} == {"retainer"}
        assert {a for _, a in lines} == {Decimal(str(opp["Retainer_Amount__c"]))}
    else:
        assert {k for k, _ in lines} == {"tm_period"}
    status = q(
        warehouse_db,
        "SELECT status FROM core.contracts WHERE opportunity_id = %s AND version = %s",
        (opp_id, version),
    )
    assert status == [("complete",)]
    return got


def fix_for(sandbox, opp: dict, field: str) -> dict:
    """The CRM edit that fixes a contract missing ``field``."""
    account = sandbox.ctx.stores["crm"].get("Account", opp["AccountId"])
    if field == "Billing_Model__c":
        return {"Billing_Model__c": "Time and Materials"}
    if field == "CurrencyIsoCode":
        return {"CurrencyIsoCode": account["CurrencyIsoCode"]}
    if field == "Contract_Start__c":
        return {"Contract_Start__c": "2026-11-16"}
    if field == "PO_Number__c":
        return {"PO_Number__c": "PO-770001"}
    if field == "Contract_Milestone__c":  # the milestone records are added under the opportunity
        amount = Decimal(str(opp["Amount"]))
        first = (amount / 4).quantize(Decimal("0.01"))
        add_milestone(sandbox, opp["Id"], "Kick-off", first, "2026-12-15")
        add_milestone(sandbox, opp["Id"], "Acceptance", amount - first, "2027-03-01")
        return {}  # the opportunity itself is touched (its SystemModstamp moves)
    raise AssertionError(f"no fix for {field}")


def test_exceptions_setup_rerun_fix_and_change_orders(sandbox, warehouse_db):
    manifest = [
        p for p in sandbox.ctx.manifest()["problems"] if p["kind"] == "contract_missing_field"
    ]
    assert manifest, "the small firm plants contract_missing_field problems"
    broken = {p["id"]: p["refs"]["field"] for p in manifest}
    pending = pending_contracts(sandbox)
    valid = sorted(set(pending) - set(broken))
    assert valid
    tm = next(i for i in valid if pending[i]["Billing_Model__c"] == "Time and Materials")
    ff = next(i for i in valid if pending[i]["Billing_Model__c"] == "Fixed Fee")
    people = psa_people(sandbox, 3)
    overrides = [
        {"user_email": people[0]["email"], "role": "Manager", "rate": "185.00"},
        {"user_email": people[1]["email"], "role": "Consultant", "rate": "142.50"},
    ]
    edit_opportunity(sandbox, tm, Rate_Overrides__c=json.dumps(overrides))

    with h.connections(sandbox, warehouse_db):
        prepare_master_data(warehouse_db, "master")
        first = setup_run(warehouse_db)
        assert first.failed == []
        assert first.invalid == len(broken) and first.completed == len(valid)

        # one exception per invalid contract, naming the field, the owner and the fix
        rows = q(
            warehouse_db,
            """SELECT entity_key, reason_code, detail ->> 'field', owner, detail ->> 'fix', status
                 FROM ops.exceptions WHERE entity_type = 'opportunity'""",
        )
        assert sorted(r[0] for r in rows) == sorted(broken)
        for key, reason, field, owner, fix, status in rows:
            assert (reason, field, status) == ("contract_missing_field", broken[key], "open")
            assert pending[key]["OwnerId"] in owner and fix
        # ... and nothing built for them
        code_of = codes(warehouse_db)
        for opp_id in broken:
            got = built(sandbox, code_of[opp_id])
            assert not any(got.values()), (opp_id, got)
            assert sandbox.ctx.stores["crm"].get("Opportunity", opp_id)["PSA_Project_Id__c"] is None
        assert q(
            warehouse_db,
            "SELECT count(*) FROM ops.onboarding_steps WHERE opportunity_id = ANY(%s)",
            (list(broken),),
        ) == [(0,)]
        assert q(
            warehouse_db,
            "SELECT count(*) FROM billing.schedules WHERE opportunity_id = ANY(%s)",
            (list(broken),),
        ) == [(0,)]

        # every valid contract: exactly one of everything at the contracted terms
        for opp_id in valid:
            assert_built_once(sandbox, warehouse_db, opp_id, code_of[opp_id])
        rates = built(sandbox, code_of[tm])["user_assignments"]
        assert {Decimal(str(a["hourly_rate"])) for a in rates} == {
            Decimal("185.00"),
            Decimal("142.50"),
        }
        actions = dict(
            q(
                warehouse_db,
                """SELECT action, count(*) FROM audit.audit_log
                    WHERE action LIKE 'onboarding.%%' OR action LIKE 'contract.%%'
                       OR action = 'exception.raised' GROUP BY 1""",
            )
        )
        assert actions["onboarding.psa_project.created"] == len(valid)
        assert actions["onboarding.erp_project.created"] == len(valid)
        assert actions["contract.setup_completed"] == len(valid)
        assert actions["exception.raised"] >= len(broken)

        # a rerun writes nothing to any system and changes nothing in the warehouse
        seq = h.last_seq(sandbox)
        before = {t: q(warehouse_db, f"SELECT count(*) FROM {t}") for t in BUILD_TABLES}  # noqa: S608
        again = setup_run(warehouse_db)
        assert again.remote_writes == 0 and again.completed == 0 and again.failed == []
        assert h.api_writes(sandbox, seq) == []
        assert {t: q(warehouse_db, f"SELECT count(*) FROM {t}") for t in BUILD_TABLES} == before  # noqa: S608

        # fixed in the CRM: the next run completes each one and closes its exception
        for opp_id, field in broken.items():
            edit_opportunity(sandbox, opp_id, **fix_for(sandbox, pending[opp_id], field))
        # (a contract of a client whose VAT id is invalid now shows that problem instead: the
        # same single exception per contract, with the new reason, and still nothing built)
        blocked = blocked_by_tax_id(sandbox, broken)
        fixed = setup_run(warehouse_db)
        assert fixed.failed == [] and fixed.completed == len(broken) - len(blocked)
        assert fixed.exceptions_resolved == len(broken)
        assert q(
            warehouse_db,
            """SELECT entity_key, reason_code, detail ->> 'field' FROM ops.exceptions
                WHERE entity_type = 'opportunity' AND status = 'open' ORDER BY 1""",
        ) == [(o, "contract_client_not_ready", "Account.VAT_Id__c") for o in sorted(blocked)]
        for opp_id in broken:
            if opp_id in blocked:
                assert not any(built(sandbox, code_of[opp_id]).values())
            else:
                assert_built_once(sandbox, warehouse_db, opp_id, code_of[opp_id])

        # change orders: T&M gets a cap and new rates, fixed fee new milestone amounts
        tm_opp = sandbox.ctx.stores["crm"].get("Opportunity", tm)
        new_rates = [{**overrides[0], "rate": "199.00"}, overrides[1]]
        edit_opportunity(
            sandbox,
            tm,
            Contract_Version__c=2,
            Change_Effective_Date__c="2026-11-16",
            Amount=float(Decimal(str(tm_opp["Amount"])) * 2),
            Cap_Type__c="Hours",
            Cap_Value__c=640,
            Rate_Overrides__c=json.dumps(new_rates),
        )
        ff_opp = sandbox.ctx.stores["crm"].get("Opportunity", ff)
        last = crm_milestones(sandbox, ff)[-1]
        edit_milestone(
            sandbox, last["Id"], Amount__c=Decimal(str(last["Amount__c"])) + Decimal("5000")
        )
        edit_opportunity(
            sandbox,
            ff,
            Contract_Version__c=2,
            Change_Effective_Date__c="2026-11-16",
            Amount=float(Decimal(str(ff_opp["Amount"])) + 5000),
        )
        changed = setup_run(warehouse_db)
        assert changed.failed == [] and changed.new_versions == 2 and changed.completed == 2

        got = assert_built_once(sandbox, warehouse_db, tm, code_of[tm])
        project = got["psa_projects"][0]
        assert (project["budget_by"], Decimal(str(project["budget"]))) == ("project", Decimal(640))
        assert {Decimal(str(a["hourly_rate"])) for a in got["user_assignments"]} == {
            Decimal("199.00"),
            Decimal("142.50"),
        }
        got = assert_built_once(sandbox, warehouse_db, ff, code_of[ff])
        assert Decimal(str(got["psa_projects"][0]["fee"])) == Decimal(str(ff_opp["Amount"])) + 5000
        for opp_id in (tm, ff):  # history kept: version 1 superseded, its schedule too
            assert q(
                warehouse_db,
                """SELECT c.version, c.status, s.status FROM core.contracts c
                     JOIN billing.schedules s USING (opportunity_id, version)
                    WHERE c.opportunity_id = %s ORDER BY 1""",
                (opp_id,),
            ) == [(1, "superseded", "superseded"), (2, "complete", "active")]
        assert q(
            warehouse_db,
            "SELECT count(*) FROM audit.audit_log WHERE action = 'contract.version_applied'",
        ) == [(2,)]

        # the sandbox's own business day: an amendment of a contract set up before erpsync and
        # a new client with a closed-won deal (not in the warehouse until master data runs)
        before_adv = opportunities(sandbox)
        httpx.post(
            sandbox.urls["crm"] + "/__admin/advance", json={"steps": 1, "seed": 3}, timeout=60
        ).raise_for_status()
        after_adv = opportunities(sandbox)
        amended = [
            i
            for i, o in after_adv.items()
            if i in before_adv and o["Contract_Version__c"] > before_adv[i]["Contract_Version__c"]
        ]
        new_won = [i for i, o in after_adv.items() if i not in before_adv and o["IsWon"]]
        assert amended and new_won
        setup_run(warehouse_db)
        for opp_id in amended:
            version = int(after_adv[opp_id]["Contract_Version__c"])
            status = q(
                warehouse_db,
                "SELECT status FROM core.contracts WHERE opportunity_id = %s AND version = %s",
                (opp_id, version),
            )
            assert status in ([("complete",)], [("invalid",)]), (opp_id, status)
            if status == [("complete",)]:
                project = sandbox.ctx.stores["psa"].get(
                    "projects", int(after_adv[opp_id]["PSA_Project_Id__c"])
                )
                if after_adv[opp_id]["Billing_Model__c"] == "Fixed Fee":
                    assert Decimal(str(project["fee"])) == Decimal(str(after_adv[opp_id]["Amount"]))
        for opp_id in new_won:
            assert q(
                warehouse_db,
                """SELECT reason_code, status FROM ops.exceptions
                    WHERE entity_type = 'opportunity' AND entity_key = %s""",
                (opp_id,),
            ) == [("contract_client_not_ready", "open")]
        prepare_master_data(warehouse_db, "master-2")
        done = setup_run(warehouse_db)
        assert done.failed == []
        for opp_id in new_won:
            assert q(
                warehouse_db,
                "SELECT status FROM ops.exceptions WHERE entity_key = %s",
                (opp_id,),
            ) == [("resolved",)]
            assert_built_once(sandbox, warehouse_db, opp_id, codes(warehouse_db)[opp_id])


def blocked_by_tax_id(sandbox, opp_ids) -> set[str]:
    """Contracts whose client has an invalid VAT id (manifest ``invalid_vat_id``)."""
    bad = h.manifest_ids(sandbox, "invalid_vat_id")
    opps = opportunities(sandbox)
    return {o for o in opp_ids if opps[o]["AccountId"] in bad}


class InjectedCrash(RuntimeError):
    pass


def test_a_failure_between_any_two_steps_or_after_a_commit_leaves_no_duplicates(
    sandbox, warehouse_db
):
    broken = {
        p["id"]: p["refs"]["field"]
        for p in sandbox.ctx.manifest()["problems"]
        if p["kind"] == "contract_missing_field"
    }
    pending = pending_contracts(sandbox)
    valid = sorted(set(pending) - set(broken))
    people = psa_people(sandbox, 2)
    for opp_id in valid:
        if pending[opp_id]["Billing_Model__c"] == "Time and Materials":
            edit_opportunity(
                sandbox,
                opp_id,
                Rate_Overrides__c=json.dumps(
                    [{"user_email": p["email"], "rate": "150"} for p in people]
                ),
            )
    # one crash after each step but the last, spread over the valid contracts (each boundary
    # between two steps is hit, several contracts crash at more than one)
    plan = {(valid[i % len(valid)], step) for i, step in enumerate(setup.STEPS[:-1])}
    plan |= {(valid[-1], step) for step in setup.STEPS[:-1]}
    crashed: list[tuple[str, str]] = []

    def crash(opp_id: str, step: str) -> None:
        if (opp_id, step) in plan and (opp_id, step) not in crashed:
            crashed.append((opp_id, step))
            raise InjectedCrash(f"killed after {step} of {opp_id}")

    with h.connections(sandbox, warehouse_db, h.fast_retry_credentials()):
        prepare_master_data(warehouse_db, "master")
        for _ in range(len(plan) + 2):
            try:
                stats = setup_run(warehouse_db, after_step=crash)
            except InjectedCrash:
                continue
            break
        assert sorted(crashed) == sorted(plan)
        assert stats.failed == []
        code_of = codes(warehouse_db)
        for opp_id in valid:
            assert_built_once(sandbox, warehouse_db, opp_id, code_of[opp_id])

        # connections dropped after the PSA, ERP and CRM committed every write: each rerun
        # finds what landed by its stable reference and goes on; nothing is created twice
        for service, path in (("psa", "/v2/"), ("erp", "projects"), ("crm", "Opportunity")):
            httpx.patch(
                sandbox.urls[service] + "/__admin/faults",
                json={"seed": 1, "drop_after_commit_rate": 1.0, "drop_path_contains": path},
                timeout=10,
            ).raise_for_status()
        for opp_id, field in broken.items():
            edit_opportunity(sandbox, opp_id, **fix_for(sandbox, pending[opp_id], field))
        failures = 0
        for _ in range(25):
            stats = setup_run(warehouse_db)
            failures += len(stats.failed)
            if not stats.failed and not q(
                warehouse_db, "SELECT 1 FROM core.contracts WHERE status = 'pending'"
            ):
                break
        assert failures > 0, "the dropped connections were felt"
        for service in ("psa", "erp", "crm"):
            httpx.put(sandbox.urls[service] + "/__admin/faults", json={}, timeout=10)
        blocked = blocked_by_tax_id(sandbox, broken)
        for opp_id in [*valid, *broken]:
            if opp_id in blocked:
                assert not any(built(sandbox, code_of[opp_id]).values())
            else:
                assert_built_once(sandbox, warehouse_db, opp_id, code_of[opp_id])
        failed_steps = q(
            warehouse_db, "SELECT count(*) FROM ops.onboarding_steps WHERE status = 'failed'"
        )
        assert failed_steps == [(0,)]
        seq = h.last_seq(sandbox)
        assert setup_run(warehouse_db).remote_writes == 0
        assert h.api_writes(sandbox, seq) == []


def test_project_setup_dag_runs_against_the_sandbox(airflow_runtime, sandbox, warehouse_db):
    """One real ``airflow dags test erpsync_project_setup`` run (the task in-process, the
    connections from ``AIRFLOW_CONN_*``) sets up every valid contract and raises the rest."""
    from tests.integration.test_preflight_dag import _task_states

    # its own warehouse: the session's holds ids from other tests' sandboxes (core.id_map)
    warehouse = warehouse_db
    broken = h.manifest_ids(sandbox, "contract_missing_field")
    valid = sorted(set(pending_contracts(sandbox)) - broken)
    with h.connections(sandbox, warehouse):
        prepare_master_data(warehouse, "master-dag")
    env = h.connection_env(sandbox, warehouse)
    env["ERPSYNC_DATABASE_URL"] = warehouse
    airflow_runtime.run("settings", "apply")
    result = airflow_runtime.run("airflow", "dags", "test", "erpsync_project_setup", extra_env=env)
    assert "project setup:" in result.stdout + result.stderr
    states = _task_states(airflow_runtime.airflow_url, "erpsync_project_setup")
    run_id = states.pop("__run_id__")[0]
    assert {t: s for t, (s, _n) in states.items()} == {"set_up_projects": "success"}

    code_of = codes(warehouse)
    for opp_id in valid:
        assert_built_once(sandbox, warehouse, opp_id, code_of[opp_id])
    assert sorted(
        r[0]
        for r in q(
            warehouse,
            """SELECT entity_key FROM ops.exceptions
                WHERE entity_type = 'opportunity' AND status = 'open'""",
        )
    ) == sorted(broken)
    # audited with the Airflow run that did it
    assert q(
        warehouse,
        """SELECT count(*) FROM audit.audit_log
            WHERE action = 'contract.setup_completed' AND source_dag_id = %s
              AND source_run_id = %s""",
        ("erpsync_project_setup", run_id),
    ) == [(len(valid),)]


def test_crm_writeback_is_the_documented_patch_and_a_deleted_opportunity_fails_it(
    sandbox, warehouse_db, tmp_path, monkeypatch
):
    """S6: the write-back is ``PATCH /sobjects/Opportunity/{id}`` (never ``.../Opportunity/Id/
    {id}``), read back; an opportunity deleted before it fails the step (404) and is never
    re-created."""
    from erpsync_sandbox.contract import CONTRACT_LOG_ENV, read_log

    with h.connections(sandbox, warehouse_db):
        prepare_master_data(warehouse_db, "writeback-master")
        log = tmp_path / "contract.jsonl"
        monkeypatch.setenv(CONTRACT_LOG_ENV, str(log))
        store = sandbox.ctx.stores["crm"]
        before_writeback = setup.STEPS[setup.STEPS.index("crm_writeback") - 1]
        doomed: list[str] = []

        def delete_one(opportunity_id: str, step: str) -> None:
            if step == before_writeback and not doomed:
                doomed.append(opportunity_id)
                gone = {"IsDeleted": True}
                store.delete("Opportunity", opportunity_id, soft=True, set_fields=gone)

        n_opportunities = len(store.scan_rows("Opportunity", order="seq", include_deleted=True))
        stats = setup_run(warehouse_db, "writeback", after_step=delete_one)
        assert doomed and stats.failed == [f"{doomed[0]}/v1:crm_writeback"]
        assert stats.completed > 0
        failed = q(
            warehouse_db,
            "SELECT step, error FROM ops.onboarding_steps WHERE opportunity_id = %s AND "
            "status = 'failed'",
            (doomed[0],),
        )
        assert [s for s, _ in failed] == ["crm_writeback"] and "ENTITY_IS_DELETED" in failed[0][1]
        assert store.get_row("Opportunity", doomed[0], include_deleted=True).deleted
        everything = store.scan_rows("Opportunity", order="seq", include_deleted=True)
        assert len(everything) == n_opportunities  # the failed write-back created nothing

        done = [
            o
            for o in opportunities(sandbox).values()
            if o["PSA_Project_Id__c"] and o["Id"] not in doomed
        ]
        assert done
    time.sleep(0.2)  # the recorder writes each line just after the answer
    crm_writes = [
        r
        for r in read_log(log)
        if r["service"] == "crm" and r["method"] == "PATCH" and "erpsync" in r["user_agent"]
    ]
    assert {r["route"] for r in crm_writes} == {
        "/services/data/{version}/sobjects/{sobject}/{record_id}"
    }
    assert sum(r["status"] == 204 for r in crm_writes) == stats.completed
    assert [n for r in read_log(log) if r["service"] == "crm" for n in r["undocumented"]] == []


def test_a_client_billing_in_another_currency_is_an_exception_not_a_project(sandbox, warehouse_db):
    """Audit H13: Harvest has no project currency (a project bills in its client's), so the
    setup checks the PSA client's currency against the contract's and raises the contract as
    an exception, building nothing, when they differ; the project body never carries a
    currency (the sandbox would note it as undocumented)."""
    broken = {
        p["id"] for p in sandbox.ctx.manifest()["problems"] if p["kind"] == "contract_missing_field"
    }
    pending = pending_contracts(sandbox)
    valid = sorted(set(pending) - broken - blocked_by_tax_id(sandbox, pending))
    target = next(i for i in valid if pending[i]["Billing_Model__c"] == "Time and Materials")
    psa = sandbox.ctx.stores["psa"]
    with h.connections(sandbox, warehouse_db):
        prepare_master_data(warehouse_db, "master")
        ((psa_client,),) = q(
            warehouse_db,
            """SELECT m.psa_id FROM core.clients c JOIN core.id_map m USING (canonical_id)
                WHERE c.crm_id = %s""",
            (pending[target]["AccountId"],),
        )
        client = psa.get("clients", int(psa_client))
        other = "CHF" if pending[target]["CurrencyIsoCode"] != "CHF" else "GBP"
        psa.put("clients", client["id"], {**client, "currency": other})
        stats = setup_run(warehouse_db)
        assert stats.failed == []
        rows = q(
            warehouse_db,
            """SELECT reason_code, detail ->> 'field', status FROM ops.exceptions
                WHERE entity_type = 'opportunity' AND entity_key = %s""",
            (target,),
        )
        assert rows == [("contract_invalid_field", "CurrencyIsoCode", "open")]
        assert not any(built(sandbox, codes(warehouse_db)[target]).values())
        # the client fixed in the PSA: the next run builds it and resolves the exception
        psa.put("clients", client["id"], {**client})
        setup_run(warehouse_db)
        assert_built_once(sandbox, warehouse_db, target, codes(warehouse_db)[target])
