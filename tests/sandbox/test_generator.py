"""Tests of the sandbox firm generator: determinism, planted problems, integrity, VAT ids."""

from __future__ import annotations

import collections
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from stdnum.eu import vat as eu_vat
from stdnum.gb import vat as gb_vat

from erpsync_sandbox import lifecycle
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.generator import PROBLEM_KINDS
from erpsync_sandbox.generator.firm import NO_ID


def vat_ok(vat_id: str) -> bool:
    return bool(gb_vat.is_valid(vat_id) if vat_id.startswith("GB") else eu_vat.is_valid(vat_id))


def build(path: Path, seed: int) -> tuple[SandboxContext, dict[str, Any], float]:
    ctx = SandboxContext.open(path, size="small", seed=seed)
    t0 = time.monotonic()
    manifest = lifecycle.generate(ctx)
    return ctx, manifest, time.monotonic() - t0


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ctx, manifest, secs = build(tmp_path_factory.mktemp("firm") / "state", 11)
    yield ctx, manifest, secs
    ctx.close()


def hashes(ctx: SandboxContext) -> dict[str, str]:
    return {name: store.content_hash() for name, store in ctx.stores.items()}


def test_small_generates_fast_and_has_the_right_shape(firm: Any) -> None:
    ctx, manifest, secs = firm
    assert secs < 5
    counts = manifest["counts"]
    assert counts["crm"]["Account"] == 30
    assert 2000 <= counts["psa"]["time_entries"] <= 6000
    assert counts["psa"]["expenses"] > 50
    for resource in (
        "customers",
        "projects",
        "employees",
        "taxGroups",
        "taxAreas",
        "paymentTerms",
        "vatPostingSetup",
        "accounts",
        "unitsOfMeasure",
    ):
        assert counts["erp"][resource] > 0
    assert set(manifest["problem_counts"]) == set(PROBLEM_KINDS)
    on_disk = json.loads((ctx.state_dir / "manifest.json").read_text())
    assert on_disk == manifest
    assert ctx.erp_company_id == manifest["firm"]["erp_company_id"]
    assert ctx.is_generated() and ctx.info["seed"] == 11


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path, firm: Any) -> None:
    ctx1, _, _ = firm
    ctx2, _, _ = build(tmp_path / "again", 11)
    ctx3, _, _ = build(tmp_path / "other", 12)
    try:
        assert hashes(ctx1) == hashes(ctx2)
        text1 = (ctx1.state_dir / "manifest.json").read_bytes()
        assert text1 == (ctx2.state_dir / "manifest.json").read_bytes()
        assert hashes(ctx1)["psa"] != hashes(ctx3)["psa"]
        assert text1 != (ctx3.state_dir / "manifest.json").read_bytes()
    finally:
        ctx2.close()
        ctx3.close()


def test_every_manifest_entry_exists_in_its_store(firm: Any) -> None:
    ctx, manifest, _ = firm
    for entry in manifest["problems"]:
        assert set(entry) >= {"kind", "system", "resource", "id", "detail"}
        body = ctx.stores[entry["system"]].get(entry["resource"], entry["id"])
        assert body is not None, entry


def problems(manifest: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [p for p in manifest["problems"] if p["kind"] == kind]


def test_vat_ids_valid_except_the_planted_ones(firm: Any) -> None:
    ctx, manifest, _ = firm
    planted = {p["id"] for p in problems(manifest, "invalid_vat_id")}
    accounts = ctx.stores["crm"].scan("Account")
    with_vat = [a for a in accounts if a["VAT_Id__c"]]
    assert len(with_vat) > 10
    for acc in with_vat:
        assert vat_ok(acc["VAT_Id__c"]) == (acc["Id"] not in planted), acc
    assert any(a["Tax_Exempt__c"] for a in accounts)
    assert any(a["Reverse_Charge__c"] for a in accounts)
    assert any(a["PO_Required__c"] for a in accounts)
    assert {a["CurrencyIsoCode"] for a in accounts} >= {"USD", "EUR", "GBP", "JPY", "KWD"}


def test_referential_integrity(firm: Any) -> None:
    ctx, _, _ = firm
    crm, psa, erp = ctx.stores["crm"], ctx.stores["psa"], ctx.stores["erp"]
    accounts = set(crm.ids("Account"))
    users, projects = set(psa.ids("users")), set(psa.ids("projects"))
    tasks, clients = set(psa.ids("tasks")), set(psa.ids("clients"))
    for opp in crm.scan("Opportunity"):
        assert opp["AccountId"] in accounts
        if opp["PSA_Project_Id__c"]:
            assert opp["PSA_Project_Id__c"] in projects
    for contact in crm.scan("Contact"):
        assert contact["AccountId"] in accounts
    customer_numbers = {c["number"] for c in erp.scan("customers")}
    for acc in crm.scan("Account"):
        if acc["ERP_Customer_No__c"]:
            assert acc["ERP_Customer_No__c"] in customer_numbers
    psa_codes = {p["code"] for p in psa.scan("projects")}
    assert {p["number"] for p in erp.scan("projects")} <= psa_codes
    employees = {e["email"] for e in erp.scan("employees")}
    assert {u["email"] for u in psa.scan("users")} == employees
    for te in psa.iter_rows("time_entries"):
        body = te.data()
        assert str(body["user"]["id"]) in users
        assert str(body["project"]["id"]) in projects
        assert str(body["task"]["id"]) in tasks
        assert str(body["client"]["id"]) in clients or body["client"]["id"] == 5100000
    for resource in ("user_assignments", "task_assignments"):
        for row in psa.scan_rows(resource):
            assert row.parent_id in projects
    assert "milestones" not in psa.resources()  # Harvest has no milestones: they live in the CRM
    crm = ctx.stores["crm"]
    opportunities = {o["Id"]: o for o in crm.scan("Opportunity")}
    for row in crm.scan_rows("Contract_Milestone__c"):
        body = row.data()
        assert row.parent_id == body["Opportunity__c"] and body["Opportunity__c"] in opportunities
        assert opportunities[body["Opportunity__c"]]["Billing_Model__c"] == "Fixed Fee"
    for resource in ("billable_rates", "cost_rates"):
        for row in psa.scan_rows(resource):
            assert row.parent_id in users
    invoices = set(erp.ids("salesInvoices"))
    for line in erp.scan_rows("salesInvoiceLines"):
        assert line.parent_id in invoices and line.data()["documentId"] == line.parent_id
    psa_invoices = set(psa.ids("invoices"))
    billed = [te for te in psa.scan("time_entries", where={"is_billed": True})]
    assert billed and all(str(te["invoice"]["id"]) in psa_invoices for te in billed)
    assert all(te["is_locked"] for te in billed)


def test_currencies_and_rate_changes(firm: Any) -> None:
    ctx, _, _ = firm
    psa = ctx.stores["psa"]
    raw_jpy = [r.body for r in psa.scan_rows("user_assignments") if '"hourly_rate":' in r.body]
    assert raw_jpy
    projects = {p["id"]: p for p in psa.scan("projects")}
    for ua in psa.scan("user_assignments"):
        rate = ua["hourly_rate"]
        if rate is None:
            continue
        cur = projects[ua["project"]["id"]]["client"]["currency"]
        if cur == "JPY":
            assert float(rate) == int(rate)
    kwd = [r for r in psa.scan_rows("expenses") if '"currency":"KWD"' in r.body]
    assert kwd and all(
        len(r.body.split('"total_cost":')[1].split(",")[0].split(".")[1]) == 3 for r in kwd
    )
    per_user = collections.Counter(r.parent_id for r in psa.scan_rows("billable_rates"))
    assert any(n >= 2 for n in per_user.values())  # rate changes mid-period
    # Harvest has no approval status: approval is is_closed, and the firm has both
    entries = psa.scan("time_entries")
    assert {te["is_closed"] for te in entries} == {True, False}
    assert not any("approval_status" in te for te in entries)
    assert {e["is_closed"] for e in psa.scan("expenses")} == {True, False}
    erp = ctx.stores["erp"]
    assert "taxRates" not in erp.resources()  # no invented custom API
    setup = {
        r["VAT_Bus_Posting_Group"] + "|" + r["VAT_Prod_Posting_Group"]
        for r in erp.scan("vatPostingSetup")
    }
    assert {"DOMESTIC|STANDARD", "EU|REVERSE", "EXPORT|EXPORT"} <= setup
    areas = {a["id"] for a in erp.scan("taxAreas")}
    terms = {t["id"] for t in erp.scan("paymentTerms")}
    assert all(
        c["taxAreaId"] in areas and c["paymentTermsId"] in terms for c in erp.scan("customers")
    )
    # invoice lines post to existing posting accounts in existing units, ids resolved as BC does
    accounts = {a["number"]: a for a in erp.scan("accounts")}
    units = {u["code"]: u for u in erp.scan("unitsOfMeasure")}
    revenue = accounts["8000"]
    assert revenue["accountType"] == "Posting" and revenue["directPosting"]
    assert not revenue["blocked"] and revenue["category"] == "Income"
    assert {"HOUR", "DAY", "PCS"} <= set(units)
    lines = erp.scan("salesInvoiceLines")
    assert lines and {ln["lineObjectNumber"] for ln in lines} <= {"8000", "8100"}
    for ln in lines:
        acc = accounts[ln["lineObjectNumber"]]
        assert ln["accountId"] == acc["id"] and not acc["blocked"] and acc["directPosting"]
        code = ln["unitOfMeasureCode"]
        assert ln["unitOfMeasureId"] == (units[code]["id"] if code else NO_ID)
    milestones = ctx.stores["crm"].scan("Contract_Milestone__c")
    assert {m["Status__c"] for m in milestones} == {"Planned", "Accepted"}
    assert all(
        (m["Status__c"] == "Accepted") == (m["Accepted_Date__c"] is not None) for m in milestones
    )
    # a set-up fixed-fee contract's milestones add up to its amount
    by_opp: dict[str, Any] = collections.defaultdict(Decimal)
    for m in milestones:
        by_opp[m["Opportunity__c"]] += Decimal(str(m["Amount__c"]))
    for opp in ctx.stores["crm"].scan("Opportunity"):
        if opp["Billing_Model__c"] == "Fixed Fee" and opp["Id"] in by_opp:
            assert by_opp[opp["Id"]] == Decimal(str(opp["Amount"])), opp["Id"]


def test_planted_problems_are_real_and_the_rest_is_clean(firm: Any) -> None:
    ctx, manifest, _ = firm
    psa, crm = ctx.stores["psa"], ctx.stores["crm"]
    entries = psa.scan("time_entries")
    by_id = {str(te["id"]): te for te in entries}

    missing = {p["id"] for p in problems(manifest, "missing_rate")}
    no_rate = {str(te["id"]) for te in entries if te["billable"] and te["billable_rate"] is None}
    assert missing and no_rate == missing

    dups = problems(manifest, "duplicate_time_entry")
    key = collections.Counter(
        (
            te["user"]["id"],
            te["spent_date"],
            te["project"]["id"],
            te["task"]["id"],
            te["hours"],
            te["notes"],
        )
        for te in entries
    )
    assert sum(n - 1 for n in key.values()) == len(dups) > 0
    for p in dups:
        orig, dup = by_id[p["refs"]["original"]], by_id[p["id"]]
        assert (orig["user"], orig["spent_date"], orig["hours"]) == (
            dup["user"],
            dup["spent_date"],
            dup["hours"],
        )

    projects = {str(p["id"]): p for p in psa.scan("projects")}
    closed = {p["id"] for p in problems(manifest, "time_on_closed_project")}
    late = {
        str(te["id"])
        for te in entries
        if projects[str(te["project"]["id"])]["ends_on"]
        and te["spent_date"] > projects[str(te["project"]["id"])]["ends_on"]
    }
    assert closed and late == closed

    threshold = {k: Decimal(v) for k, v in manifest["policy"]["receipt_threshold"].items()}
    expenses = psa.scan_rows("expenses")
    no_receipt = set()
    for row in expenses:
        body = row.data()
        amount = Decimal(row.body.split('"total_cost":')[1].split(",")[0])
        if body["receipt"] is None and amount > threshold[body["client"]["currency"]]:
            no_receipt.add(row.id)
    assert no_receipt == {p["id"] for p in problems(manifest, "expense_missing_receipt")}
    assert problems(manifest, "expense_over_policy")

    opps = {o["Id"]: o for o in crm.scan("Opportunity")}
    children = {m["Opportunity__c"] for m in crm.scan("Contract_Milestone__c")}
    for p in problems(manifest, "contract_missing_field"):
        if p["refs"]["field"] == "Contract_Milestone__c":  # no milestone records under it
            assert opps[p["id"]]["Billing_Model__c"] == "Fixed Fee" and p["id"] not in children
        else:
            assert opps[p["id"]][p["refs"]["field"]] is None
        assert opps[p["id"]]["IsWon"] and not opps[p["id"]]["PSA_Project_Id__c"]
    not_setup = [o for o in opps.values() if o["IsWon"] and not o["PSA_Project_Id__c"]]
    assert len(not_setup) > len(problems(manifest, "contract_missing_field"))

    for p in problems(manifest, "over_cap_hours"):
        opp = opps[p["refs"]["opportunity"]]
        hours = sum(
            Decimal(str(te["hours"]))
            for te in entries
            if str(te["project"]["id"]) == p["id"] and te["billable"] and te["is_closed"]
        )
        assert opp["Cap_Type__c"] == "Hours" and hours > Decimal(str(opp["Cap_Value__c"]))
    for opp in opps.values():  # the other hour caps hold
        if opp["Cap_Type__c"] == "Hours" and opp["PSA_Project_Id__c"] not in {
            p["id"] for p in problems(manifest, "over_cap_hours")
        }:
            pid = opp["PSA_Project_Id__c"]
            hours = sum(
                Decimal(str(te["hours"]))
                for te in entries
                if str(te["project"]["id"]) == pid and te["billable"]
            )
            assert hours <= Decimal(str(opp["Cap_Value__c"]))

    for p in problems(manifest, "rate_differs_from_contract"):
        ua = psa.get("user_assignments", p["id"])
        opp = opps[p["refs"]["opportunity"]]
        contract = {
            o["user_email"]: Decimal(o["rate"]) for o in json.loads(opp["Rate_Overrides__c"])
        }
        user = psa.get("users", ua["user"]["id"])
        assert Decimal(str(ua["hourly_rate"])) != contract[user["email"]]
    for p in problems(manifest, "currency_differs_from_contract"):
        opp = opps[p["refs"]["opportunity"]]
        assert projects[p["id"]]["client"]["currency"] != opp["CurrencyIsoCode"]


def test_crm_records_hold_only_schema_fields_and_picklist_countries(firm: Any) -> None:
    """The strict CRM schema serves only declared fields, so the generator may store no other
    (they would be invisible to every client); accounts are those of a State and
    Country/Territory Picklists org: ISO code in BillingCountryCode, its label in
    BillingCountry (issue 13, S2)."""
    from erpsync_sandbox.crm import countries
    from erpsync_sandbox.crm.schema import SCHEMAS

    ctx, _, _ = firm
    store = ctx.stores["crm"]
    for name, schema in SCHEMAS.items():
        declared = set(schema.names)
        for row in store.iter_rows(name):
            extra = set(row.data()) - declared
            assert not extra, (name, row.id, extra)
    accounts = [r.data() for r in store.iter_rows("Account")]
    assert accounts
    for a in accounts:
        assert countries.is_code(a["BillingCountryCode"]), a
        assert a["BillingCountry"] == countries.label_for(a["BillingCountryCode"])
        assert a["BillingCountry"] != a["BillingCountryCode"]


#: https://help.getharvest.com/api-v2/users-api/users/users/#the-user-object
USER_FIELDS = {
    "id",
    "first_name",
    "last_name",
    "email",
    "telephone",
    "timezone",
    "has_access_to_all_future_projects",
    "is_contractor",
    "is_active",
    "weekly_capacity",
    "default_hourly_rate",
    "cost_rate",
    "roles",
    "access_roles",
    "avatar_url",
    "created_at",
    "updated_at",
}
#: https://help.getharvest.com/api-v2/projects-api/projects/projects/#the-project-object
PROJECT_FIELDS = {
    "id",
    "client",
    "name",
    "code",
    "is_active",
    "is_billable",
    "is_fixed_fee",
    "bill_by",
    "hourly_rate",
    "budget",
    "budget_by",
    "budget_is_monthly",
    "notify_when_over_budget",
    "over_budget_notification_percentage",
    "over_budget_notification_date",
    "show_budget_to_all",
    "cost_budget",
    "cost_budget_include_expenses",
    "fee",
    "notes",
    "starts_on",
    "ends_on",
    "created_at",
    "updated_at",
}


def test_psa_records_have_exactly_harvests_documented_attributes(firm: Any) -> None:
    """Audit H1-H4, H13: what the generated Harvest serves is what Harvest documents - no
    approval_status, no rate or project currency, no employee_number; a time entry's client
    and project are {id, name} (https://help.getharvest.com/api-v2/)."""
    ctx, _, _ = firm
    psa = ctx.stores["psa"]
    for resource in ("billable_rates", "cost_rates"):
        for rate in psa.scan(resource):
            assert set(rate) == {"id", "amount", "start_date", "end_date"} | {
                "created_at",
                "updated_at",
            }
    assert not any("employee_number" in u for u in psa.scan("users"))
    for user in psa.scan("users"):
        assert set(user) <= USER_FIELDS, set(user) - USER_FIELDS
    for project in psa.scan("projects"):
        assert set(project) <= PROJECT_FIELDS, set(project) - PROJECT_FIELDS
        assert "currency" not in project and set(project["client"]) == {"id", "name", "currency"}
    for te in psa.scan("time_entries"):
        assert set(te["client"]) == {"id", "name"} and set(te["project"]) == {"id", "name"}
        assert "approval_status" not in te
    for e in psa.scan("expenses"):
        assert "approval_status" not in e and "currency" not in e
        assert set(e["client"]) == {"id", "name", "currency"}
        assert set(e["expense_category"]) == {"id", "name", "unit_price", "unit_name"}
