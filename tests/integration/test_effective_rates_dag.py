"""A change order effective mid-month, end to end with real Airflow DAG runs (``airflow dags
test``) against the small sandbox firm and a real warehouse (issue 15): the entries dated
before the change keep the old contract version and rate, the ones from its day on get the new
ones, to the minor unit, in recon.items and on the invoice lines of the month.

The story, as it happens in a firm: a consultant logs time in early November at the contracted
rate; the client signs a change order in the CRM (``Contract_Version__c`` + 1, a higher rate in
``Rate_Overrides__c``, ``Change_Effective_Date__c`` = 16 November); the project-setup DAG
applies it (the Harvest user assignment gets the new rate, so time logged from then on is
stamped with it, as Harvest stamps the assignment's rate on each entry); the consultant logs
more time after the 16th; the reconcile DAG prices every entry by the version in effect on its
date, and the invoice-batch DAG (dry run) bills the month with one line per rate.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import psycopg
import pytest

from erpsync.money import round_money
from tests.integration.test_billing_e2e import _dirty
from tests.integration.test_reconcile_dag import sync_firm
from tests.integration.test_sync_engine import connection_env, lift_psa_rate_limit

EFFECTIVE = dt.date(2026, 11, 16)
BEFORE = [(dt.date(2026, 11, 3), "7.25"), (dt.date(2026, 11, 13), "3.33")]
AFTER = [(dt.date(2026, 11, 16), "0.75"), (dt.date(2026, 11, 24), "2.35")]
NEW_ID = 2_099_000_001


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=0)
    lift_psa_rate_limit(handle)
    yield handle
    handle.stop()


def _q(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def _pick_contract(sandbox, url: str) -> tuple[dict, dict, dict]:
    """A clean, set-up T&M contract running through November with a contracted rate for a
    person assigned to its PSA project: (opportunity, that override, the user assignment)."""
    stores = sandbox.ctx.stores
    crm, psa = stores["crm"], stores["psa"]
    dirty_projects, dirty_accounts = _dirty(sandbox)
    live = {
        r[0]
        for r in _q(
            url, "SELECT opportunity_id FROM core.contracts WHERE status IN ('complete', 'adopted')"
        )
    }
    users = {u["email"]: u for u in psa.scan("users")}
    for opp in sorted(crm.scan("Opportunity"), key=lambda o: o["Id"]):
        project = str(opp.get("PSA_Project_Id__c") or "")
        if (
            opp["Id"] not in live
            or opp.get("Billing_Model__c") != "Time and Materials"
            or not opp.get("Rate_Overrides__c")
            or "effective_from" in opp["Rate_Overrides__c"]
            or project in dirty_projects
            or opp["AccountId"] in dirty_accounts
            or opp.get("Cap_Type__c")
            or dt.date.fromisoformat(opp["Contract_End__c"]) < dt.date(2026, 11, 30)
        ):
            continue
        for ov in json.loads(opp["Rate_Overrides__c"]):
            user = users.get(ov["user_email"])
            ua = next(
                (
                    a
                    for a in psa.scan("user_assignments")
                    if str(a["project"]["id"]) == project
                    and user is not None
                    and a["user"]["id"] == user["id"]
                    and a.get("is_active", True)
                ),
                None,
            )
            if ua is not None and Decimal(str(ua["hourly_rate"])) == Decimal(ov["rate"]):
                return opp, ov, ua
    raise AssertionError("the small firm has no clean T&M contract with a contracted rate")


def _log_time(sandbox, ua: dict, entries: list[tuple[dt.date, str]], first_id: int) -> list[str]:
    """Time logged in Harvest and approved: each entry stamped with the user assignment's
    hourly_rate as it is now (Harvest stamps the rate in force when the entry is logged,
    https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/)."""
    psa = sandbox.ctx.stores["psa"]
    project = str(ua["project"]["id"])
    rate = psa.get("user_assignments", ua["id"])["hourly_rate"]
    template = next(
        e
        for e in psa.scan("time_entries")
        if str(e["project"]["id"]) == project
        and e["user"]["id"] == ua["user"]["id"]
        and e["billable"]
    )
    ids = []
    for n, (day, hours) in enumerate(entries):
        tid = first_id + n
        body = {
            **template,
            "id": tid,
            "spent_date": day.isoformat(),
            "hours": float(hours),
            "hours_without_timer": float(hours),
            "rounded_hours": float(hours),
            "notes": f"change order test {tid}",
            "billable_rate": rate,
            "is_closed": True,  # approved (Timesheet Approval)
            "is_locked": True,
            "locked_reason": "Approved timesheet",
            "is_billed": False,
            "invoice": None,
        }
        psa.put("time_entries", tid, body)
        ids.append(str(tid))
    return ids


def _sync_time(url: str) -> None:
    from erpsync.sync.spec import RunInfo
    from erpsync.sync.specs_time import TIME_EXPENSE
    from tests.sync_calls import sync_time

    for spec in TIME_EXPENSE:
        sync_time(spec, url, run=RunInfo.local("time-co"), leaf_size=2000, page_size=2000)


def _assert_the_firms_rate_step(sandbox, url: str) -> None:
    """The sandbox firm's contracted rate that steps up mid-October (a dated Rate_Overrides__c
    element): each of the person's entries on the project is priced at the rate in effect on
    its date, whatever else holds it."""
    opp = next(
        o
        for o in sandbox.ctx.stores["crm"].scan("Opportunity")
        if "effective_from" in (o.get("Rate_Overrides__c") or "")
    )
    elements = json.loads(opp["Rate_Overrides__c"])
    step = next(e for e in elements if e.get("effective_from"))
    old = next(e for e in elements if e["user_email"] == step["user_email"] and e is not step)
    since = dt.date.fromisoformat(step["effective_from"])
    priced = _q(
        url,
        """SELECT i.item_date, i.rate, i.reason_code FROM recon.items i
             JOIN core.people p ON p.psa_id = i.user_psa_id
            WHERE i.item_type = 'time' AND i.opportunity_id = %s AND lower(p.email) = %s
              AND i.rate IS NOT NULL""",
        (opp["Id"], step["user_email"]),
    )
    assert {d < since for d, _r, _c in priced} == {True, False}  # work on both sides
    for day, rate, reason in priced:
        assert rate == Decimal(old["rate"] if day < since else step["rate"]), day
        assert reason != "rate_differs_from_contract", day


def test_a_change_order_effective_mid_month_prices_before_old_and_after_new(
    airflow_runtime, sandbox, monkeypatch
):
    url = airflow_runtime.warehouse_url
    env = connection_env(sandbox, url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sync_firm(url)
    opp, override, ua = _pick_contract(sandbox, url)
    old_rate = Decimal(override["rate"])
    new_rate = old_rate + Decimal("17.35")
    before = _log_time(sandbox, ua, BEFORE, NEW_ID)

    # the change order, signed in the CRM
    crm = sandbox.ctx.stores["crm"]
    body = crm.get("Opportunity", opp["Id"])
    version = int(body.get("Contract_Version__c") or 1)
    rates = [
        {**o, "rate": str(new_rate)} if o["user_email"] == override["user_email"] else o
        for o in json.loads(body["Rate_Overrides__c"])
    ]
    change = {**body, "Contract_Version__c": version + 1, "Rate_Overrides__c": json.dumps(rates)}
    # first without its effective date: refused with one exception, nothing re-priced or built
    crm.put("Opportunity", opp["Id"], dict(change))
    from erpsync.onboarding import setup
    from erpsync.sync.spec import RunInfo

    with psycopg.connect(url, autocommit=True) as conn:
        setup.run_project_setup(conn, setup.Systems(), run=RunInfo.local("co-undated"))
    assert _q(
        url,
        "SELECT version, status FROM core.contracts WHERE opportunity_id = %s ORDER BY 1",
        (opp["Id"],),
    )[-2:] == [(version, "adopted"), (version + 1, "invalid")]
    assert _q(
        url,
        """SELECT reason_code, detail ->> 'field' FROM ops.exceptions
            WHERE entity_type = 'opportunity' AND entity_key = %s AND status = 'open'""",
        (opp["Id"],),
    ) == [("contract_missing_field", "Change_Effective_Date__c")]
    psa = sandbox.ctx.stores["psa"]
    assert Decimal(str(psa.get("user_assignments", ua["id"])["hourly_rate"])) == old_rate
    # then with it (the CRM user fixes the record)
    crm.put("Opportunity", opp["Id"], {**change, "Change_Effective_Date__c": EFFECTIVE.isoformat()})
    airflow_runtime.run(
        "airflow", "dags", "test", "erpsync_project_setup", "-c", '{"full": true}', extra_env=env
    )
    assert _q(
        url,
        "SELECT version, status, effective_from FROM core.contracts"
        " WHERE opportunity_id = %s ORDER BY 1",
        (opp["Id"],),
    )[-2:] == [(version, "superseded", None), (version + 1, "complete", EFFECTIVE)]
    assert _q(
        url,
        "SELECT status FROM ops.exceptions WHERE entity_type = 'opportunity' AND entity_key = %s",
        (opp["Id"],),
    ) == [("resolved",)]
    # Harvest's assignment now carries the new rate: time logged from here on is stamped with it
    assert Decimal(str(psa.get("user_assignments", ua["id"])["hourly_rate"])) == new_rate
    after = _log_time(sandbox, ua, AFTER, NEW_ID + len(BEFORE))
    _sync_time(url)

    airflow_runtime.run(
        "airflow",
        "dags",
        "test",
        "erpsync_reconcile",
        "-c",
        '{"as_of": "2026-12-01"}',
        extra_env=env,
    )
    items = {
        k: (v, r, a, s)
        for k, v, r, a, s in _q(
            url,
            "SELECT source_id, contract_version, rate, amount, state FROM recon.items"
            " WHERE item_type = 'time' AND source_id = ANY(%s)",
            (before + after,),
        )
    }
    for tid, (_day, hours) in zip(before, BEFORE, strict=True):
        assert items[tid] == (version, old_rate, Decimal(hours) * old_rate, "ready"), tid
    for tid, (_day, hours) in zip(after, AFTER, strict=True):
        assert items[tid] == (version + 1, new_rate, Decimal(hours) * new_rate, "ready"), tid
    # the work before the change order was not re-priced by it
    assert all(items[t][1] == old_rate for t in before)
    _assert_the_firms_rate_step(sandbox, url)

    # the month billed (dry run): one line per rate, hours summed then priced, rounded once
    airflow_runtime.run(
        "airflow",
        "dags",
        "test",
        "erpsync_invoice_batches",
        "-c",
        json.dumps({"billing_period": "2026-11", "clients": [opp["AccountId"]], "dry_run": True}),
        extra_env=env,
    )
    lines = _q(
        url,
        """SELECT l.hours, l.unit_price, l.net_amount, l.item_keys, i.currency
             FROM billing.invoice_lines l
             JOIN billing.invoices i USING (invoice_id)
             JOIN billing.invoice_batches b USING (batch_id)
            WHERE b.status = 'dry_run' AND i.opportunity_id = %s AND l.kind = 'time'""",
        (opp["Id"],),
    )
    for keys, rate in (
        ([f"time:{t}" for t in before], old_rate),
        ([f"time:{t}" for t in after], new_rate),
    ):
        line = next(ln for ln in lines if set(keys) <= set(ln[3]))
        hours, unit_price, net, line_keys, currency = line
        assert Decimal(unit_price) == rate
        line_hours = _q(
            url,
            "SELECT sum(hours) FROM recon.items WHERE item_key = ANY(%s)",
            (list(line_keys),),
        )[0][0]
        assert Decimal(hours) == line_hours
        assert Decimal(net) == round_money(line_hours * rate, currency.strip())
    # which version priced which entry stays queryable, with the days each version covers
    periods = _q(
        url,
        "SELECT version, applies_from, applies_to FROM core.contract_version_periods"
        " WHERE opportunity_id = %s ORDER BY 1",
        (opp["Id"],),
    )
    assert periods[-2:] == [
        (version, None, EFFECTIVE - dt.timedelta(days=1)),
        (version + 1, EFFECTIVE, None),
    ]


@pytest.fixture(scope="module")
def invoicing_url(pg_server_url):
    from erpsync.runtime import database
    from erpsync.warehouse import migrate
    from tests.conftest import make_database
    from tests.integration.test_invoicing_batches import seed

    url = make_database(pg_server_url, "erpsync_test_inv_effective")
    migrate.migrate(url)
    with psycopg.connect(url) as conn:
        seed(conn)
    yield url
    database.drop_database(url)


def test_rate_off_contract_compares_only_from_the_day_the_contracted_rate_applies(invoicing_url):
    """The approval's rate_off_contract flag: time billed at 175 against a contracted 170 is
    flagged; once the contracted 170 applies only from a later day (a dated rate or a change
    order), the work before it was billed at the rate in force then and is not flagged."""
    from tests.integration.test_invoicing_batches import period_batch

    def flagged(conn) -> list[dict]:
        conn.execute("SELECT 1")  # the test's transaction: the build nests in it, rolled back
        result = period_batch(conn)
        return [a for a in result.anomalies if a["code"] == "rate_off_contract"]

    with psycopg.connect(invoicing_url) as conn:
        assert [a["numbers"]["contract_rate"] for a in flagged(conn)] == ["170.0000"]
        conn.rollback()
        conn.execute(
            "UPDATE core.contract_rate_overrides SET effective_from = '2026-11-01'"
            " WHERE opportunity_id = 'opp-A'"
        )
        assert flagged(conn) == []
        conn.rollback()
