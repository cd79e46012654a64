"""``erpsync check-systems`` against real sandbox servers over HTTP: every requirement passes
against the sandbox, and with one requirement removed per system (a CRM field gone from the
schema, an onboarding task archived in Harvest, the ERP's tax groups missing) the output names
exactly that requirement and what to fix (and the ERP's revenue G/L account blocked, removed or
misconfigured is named by its number). The pack's requests are checked against the vendors'
documented contracts like every other pack request (tests/contract_log.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import httpx
import pytest

from erpsync import paths, tenant_check
from erpsync.connectors.business_central import BusinessCentralClient
from erpsync.connectors.salesforce import SalesforceClient
from tests import contract_log
from tests.support.connections import declared_connections


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=11)
    yield handle
    handle.stop()


@pytest.fixture
def connections(sandbox, monkeypatch):
    env = declared_connections(sandbox.urls)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _lines(systems=tenant_check.SYSTEMS) -> list[str]:
    clients = tenant_check.SystemClients.default()
    return [tenant_check.format_check(c) for c in tenant_check.run_checks(clients, systems)]


def test_every_requirement_passes_against_the_sandbox(connections):
    lines = _lines()
    assert lines and all(line.startswith("OK ") for line in lines), [
        line for line in lines if not line.startswith("OK ")
    ]
    systems = {line.split()[1] for line in lines}
    assert systems == {"salesforce", "harvest", "business_central"}
    # the requirements come from the pack's own lists
    assert "OK salesforce Account.VAT_Id__c readable — string field present" in lines
    assert (
        "OK salesforce Opportunity.PSA_Project_Id__c updateable — the Run-As user may edit it"
        in (lines)
    )
    assert "OK harvest approval_feature — on" in lines
    assert any(line.startswith("OK harvest task 'Implementation' — task ") for line in lines)
    assert any(line.startswith("OK business_central company — 'MERIDIAN' (") for line in lines)
    assert any(ln.startswith("OK business_central taxGroups readable — readable (") for ln in lines)
    # every field the pack's SOQL selects is one requirement line
    wanted = tenant_check.crm_field_requirements()
    read_lines = [ln for ln in lines if ln.startswith("OK salesforce ") and " readable — " in ln]
    assert len(read_lines) == sum(len(fields) for fields in wanted.values())


def test_a_crm_field_missing_from_the_schema_is_named(tmp_path, monkeypatch, private_contract_log):
    from erpsync_sandbox.crm import schema
    from erpsync_sandbox.serve import start_sandbox

    account = schema.SCHEMAS["Account"]
    without = tuple(f for f in account.fields if f.name != "VAT_Id__c")
    monkeypatch.setitem(schema.SCHEMAS, "Account", replace(account, fields=without, _by_lower={}))
    # the strict CRM schema: fields of stored records that the schema lacks are not served
    monkeypatch.setattr(
        schema.SObjectSchema, "with_discovered", lambda self, body: self, raising=False
    )
    with start_sandbox(tmp_path / "crm", size="small", seed=11, services=("crm",)) as crm:
        for key, value in declared_connections(crm.urls).items():
            monkeypatch.setenv(key, value)
        lines = _lines(("salesforce",))
    failed = [line for line in lines if not line.startswith("OK ")]
    assert failed == [
        "FAIL salesforce Account.VAT_Id__c readable — field missing or hidden from the Run-As "
        "user: deploy vendor/salesforce and give the Run-As user's permission set read access "
        "to it"
    ]
    assert contract_log.check(private_contract_log).violations == []


def test_an_archived_onboarding_task_in_harvest_is_named(sandbox, connections):
    psa = sandbox.urls["psa"]
    headers = {
        "Authorization": "Bearer sandbox-psa-token",
        "Harvest-Account-Id": "100200",
        "User-Agent": "sandbox admin (ops@example.com)",
    }
    tasks = httpx.get(f"{psa}/v2/tasks", headers=headers).json()["tasks"]
    task = next(t for t in tasks if t["name"] == "Implementation")
    httpx.patch(
        f"{psa}/v2/tasks/{task['id']}", json={"is_active": False}, headers=headers
    ).raise_for_status()
    try:
        lines = _lines(("harvest",))
    finally:
        httpx.patch(
            f"{psa}/v2/tasks/{task['id']}", json={"is_active": True}, headers=headers
        ).raise_for_status()
    assert [line for line in lines if not line.startswith("OK ")] == [
        f"FAIL harvest task 'Implementation' — task {task['id']} is archived: restore it in "
        "Manage > Tasks (onboarding assigns it to new projects)"
    ]


def test_missing_erp_tax_groups_are_named(sandbox, connections):
    store = sandbox.ctx.stores["erp"]
    ids = store.ids("taxGroups")
    assert ids
    for rid in ids:
        store.delete("taxGroups", rid, soft=True)  # soft, so that undelete restores them
    try:
        lines = _lines(("business_central",))
    finally:
        for rid in ids:
            store.undelete("taxGroups", rid)
    assert [line for line in lines if not line.startswith("OK ")] == [
        "FAIL business_central taxGroups readable — empty: set up VAT Product Posting Groups "
        "(invoice lines carry them as taxCode)"
    ]


def test_bad_credentials_fail_auth_and_say_what_to_fix(sandbox, connections, monkeypatch):
    crm = json.loads(connections["AIRFLOW_CONN_ERPSYNC_CRM"])
    crm["password"] = "wrong"
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_CRM", json.dumps(crm))
    psa = json.loads(connections["AIRFLOW_CONN_ERPSYNC_PSA"])
    psa["extra"]["account_id"] = ""
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_PSA", json.dumps(psa))
    lines = _lines(("salesforce", "harvest"))
    assert len(lines) == 2
    assert lines[0].startswith("FAIL salesforce auth — token request refused (")
    assert "My Domain" in lines[0] and "wrong" not in lines[0]
    # (the connector may refuse a connection without account_id itself: either way it is named)
    assert lines[1].startswith("FAIL harvest ") and "account_id" in lines[1]


def test_a_generic_login_host_is_refused_before_any_request(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_CRM",
        json.dumps(
            {
                "conn_type": "http",
                "host": "login.salesforce.com",
                "schema": "https",
                "login": "key",
                "password": "secret",
            }
        ),
    )
    # refused before any request (by the check or by the connector itself), naming My Domain
    (line,) = _lines(("salesforce",))
    assert line.startswith("FAIL salesforce auth — ") and "My Domain" in line, line


def test_the_cli_prints_one_line_per_requirement_and_exits_by_outcome(
    sandbox, tmp_path, pg_server_url
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(declared_connections(sandbox.urls))
    env.update(
        {
            "ERPSYNC_DATABASE_URL": pg_server_url,
            "AIRFLOW_HOME": str(tmp_path / "airflow_home"),
            "ERPSYNC_STATE_DIR": str(tmp_path / "state"),
        }
    )
    command = [sys.executable, "-m", "erpsync.cli", "check-systems"]
    ok = subprocess.run(
        [*command, "--system", "harvest"], env=env, capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    lines = ok.stdout.splitlines()
    assert lines[0] == "OK harvest auth — token of user 3100001 on account 100200"
    assert all(line.startswith("OK harvest ") for line in lines)

    psa = json.loads(env["AIRFLOW_CONN_ERPSYNC_PSA"])
    psa["password"] = "wrong-token"
    env["AIRFLOW_CONN_ERPSYNC_PSA"] = json.dumps(psa)
    bad = subprocess.run(
        [*command, "--system", "harvest"], env=env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1
    assert bad.stdout.startswith("FAIL harvest auth — GET /v2/users/me refused (HTTP 401")
    assert "wrong-token" not in bad.stdout + bad.stderr
    assert "1 requirement(s) failed" in bad.stderr


def test_fields_shipped_in_vendor_salesforce_are_required_too(connections, tmp_path):
    fields = tmp_path / "vendor/salesforce/force-app/main/default/objects/Account/fields"
    fields.mkdir(parents=True)
    (fields / "Credit_Hold__c.field-meta.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<CustomField xmlns="http://soap.sforce.com/2006/04/metadata">\n'
        "    <fullName>Credit_Hold__c</fullName>\n"
        "    <type>Checkbox</type>\n"
        "</CustomField>\n"
    )
    wanted = tenant_check.crm_field_requirements(tmp_path)
    assert "Credit_Hold__c" in wanted["Account"]
    assert "VAT_Id__c" in wanted["Account"]  # the pack's own SOQL fields stay
    checks = tenant_check.crm_checks(SalesforceClient(), project_dir=tmp_path)
    lines = [tenant_check.format_check(c) for c in checks]
    assert [line for line in lines if not line.startswith("OK ")] == [
        "FAIL salesforce Account.Credit_Hold__c readable — field missing or hidden from the "
        "Run-As user: deploy vendor/salesforce and give the Run-As user's permission set read "
        "access to it"
    ]


def test_erp_requirements_ask_the_documented_urls(connections, private_contract_log):
    """Each ERP requirement is one line, read from its documented URL: an API v2.0 entity set of
    the company (the G/L account and the hour unit by their documented key properties), or the
    OData V4 web service published for the company by name; none uses anything undocumented."""
    from erpsync_sandbox.contract import read_log

    assert tenant_check.ERP_REQUIREMENTS_PENDING == ()
    checks = list(tenant_check.erp_checks(BusinessCentralClient()))
    by_name = {c.requirement: c for c in checks}
    assert [c for c in checks if not c.ok] == []
    assert len(checks) == 2 + len(tenant_check.ERP_REQUIREMENTS)
    assert by_name["G/L account for invoice lines"].detail == "readable (8000)"
    assert by_name["unit of measure for hours"].detail == "readable (HOUR)"
    company = by_name["company"].detail.split("'")[1]
    records = read_log(private_contract_log)
    paths = [r["path"] for r in records]
    assert f"/v2.0/sandbox/production/ODataV4/Company('{company}')/VATPostingSetup" in paths
    company_id = by_name["company"].detail.rsplit("(", 1)[1].rstrip(")")
    base = f"/v2.0/sandbox/production/api/v2.0/companies({company_id})"
    for entity in ("taxGroups", "paymentTerms", "taxAreas", "accounts", "unitsOfMeasure"):
        assert f"{base}/{entity}" in paths
    assert all(r["undocumented"] == [] for r in records), records


def _erp_failures(sandbox) -> list[str]:
    lines = _lines(("business_central",))
    return [line for line in lines if not line.startswith("OK ")]


_ACCOUNT_FIX = (
    "create the revenue G/L account invoice lines post to (Posting, Direct Posting on, not "
    "blocked) or name the tenant's in ERPSYNC_BC_REVENUE_ACCOUNT"
)


def test_a_blocked_or_missing_revenue_account_is_named(sandbox, connections):
    """The G/L account invoice lines post to (ERPSYNC_BC_REVENUE_ACCOUNT, default 8000) must be
    a posting account with Direct Posting that is not blocked, as Business Central checks it
    on every sales line; a blocked or removed account fails the check by its number."""
    store = sandbox.ctx.stores["erp"]
    (account,) = store.scan("accounts", where={"number": "8000"})
    store.put("accounts", account["id"], {**account, "blocked": True})
    try:
        blocked = _erp_failures(sandbox)
        store.put("accounts", account["id"], {**account, "directPosting": False})
        no_direct = _erp_failures(sandbox)
        store.delete("accounts", account["id"])
        removed = _erp_failures(sandbox)
    finally:
        store.put("accounts", account["id"], account)
    assert blocked == [
        f"FAIL business_central G/L account for invoice lines — G/L account 8000 is blocked: "
        f"{_ACCOUNT_FIX}"
    ]
    assert no_direct == [
        "FAIL business_central G/L account for invoice lines — G/L account 8000 has Direct "
        f"Posting off: {_ACCOUNT_FIX}"
    ]
    assert removed == [
        "FAIL business_central G/L account for invoice lines — nothing matches number eq "
        f"'8000': {_ACCOUNT_FIX}"
    ]
    assert _erp_failures(sandbox) == []


def test_the_configured_account_and_unit_are_the_ones_checked(sandbox, connections, monkeypatch):
    monkeypatch.setenv("ERPSYNC_BC_REVENUE_ACCOUNT", "7999")  # the REVENUE heading
    monkeypatch.setenv("ERPSYNC_BC_HOUR_UNIT", "HRS")
    assert _erp_failures(sandbox) == [
        "FAIL business_central G/L account for invoice lines — G/L account 7999 has account "
        f"type Heading, not Posting: {_ACCOUNT_FIX}",
        "FAIL business_central unit of measure for hours — nothing matches code eq 'HRS': "
        "create the unit of measure time lines are invoiced in (Units of Measure page) or name "
        "the tenant's in ERPSYNC_BC_HOUR_UNIT",
    ]
    monkeypatch.setenv("ERPSYNC_BC_REVENUE_ACCOUNT", "8100")
    monkeypatch.setenv("ERPSYNC_BC_HOUR_UNIT", "DAY")
    assert _erp_failures(sandbox) == []


def test_the_cli_finds_connections_saved_in_the_airflow_metadata_database(
    sandbox, airflow_runtime, tmp_path
):
    """An operator who saved the connections in Airflow (UI or ``erpsync settings apply``) and
    sets no AIRFLOW_CONN_* variable gets the same check: outside a task the Task SDK sees only
    variables and secrets backends, so the command reads the metadata database itself."""
    import yaml

    data = yaml.safe_load(paths.settings_file().read_text())
    ports = {"erpsync_crm": "crm", "erpsync_psa": "psa", "erpsync_erp": "erp"}
    for conn in data["airflow"]["connections"]:
        if conn["conn_id"] in ports:
            conn["conn_port"] = sandbox.ports[ports[conn["conn_id"]]]
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump(data))
    airflow_runtime.run("settings", "apply", "--file", str(settings))
    result = airflow_runtime.run("check-systems", check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OK salesforce auth")
    assert {line.split()[1] for line in lines} == {"salesforce", "harvest", "business_central"}
    assert all(line.startswith("OK ") for line in lines)
    assert "sandbox-psa-token" not in result.stdout + result.stderr
