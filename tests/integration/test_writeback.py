"""Write-back end to end: the real engine and connectors sync the small sandbox firm into a real
PostgreSQL, the outbox relay writes ERP customers, PSA clients, ERP employees and contracted
assignment rates, exactly once; invalid VAT ids block their client with one exception each,
until the id is fixed in the CRM."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from erpsync.sync.spec import RunInfo
from erpsync.writeback import relay
from tests.integration import writeback_harness as h


@pytest.fixture
def sandbox(tmp_path):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path / "sandbox", size="small", seed=0)
    yield handle
    handle.stop()


def _accounts(sandbox) -> list[dict]:
    return sandbox.ctx.stores["crm"].scan("Account")


def test_sync_and_relay_write_exactly_the_expected_records_and_a_rerun_writes_nothing(
    sandbox, warehouse_db
):
    store = sandbox.ctx.stores
    blocked = h.manifest_ids(sandbox, "invalid_vat_id")
    accounts = _accounts(sandbox)
    customers_before = {c["number"]: c for c in store["erp"].scan("customers")}
    psa_clients_before = {c["name"] for c in store["psa"].scan("clients")}
    employees_before = len(store["erp"].scan("employees"))
    seq0 = h.last_seq(sandbox)
    run = RunInfo.local("writeback")

    with h.connections(sandbox, warehouse_db):
        h.sync_all(warehouse_db, run)
        totals = h.relay_until_done(run)

        # every client with a valid (or no) VAT id has exactly one ERP customer and PSA client
        customers = store["erp"].scan("customers")
        by_name: dict[str, list[dict]] = {}
        for c in customers:
            by_name.setdefault(c["displayName"], []).append(c)
        psa_names = [c["name"] for c in store["psa"].scan("clients")]
        with psycopg.connect(warehouse_db) as conn:
            canonical = dict(
                conn.execute("SELECT crm_id, canonical_id FROM core.clients").fetchall()
            )
            id_map = {
                r[0]: (r[1], r[2])
                for r in conn.execute(
                    "SELECT canonical_id, erp_id, psa_id FROM core.id_map "
                    "WHERE entity_type = 'client'"
                ).fetchall()
            }
            erp_numbers = dict(
                conn.execute(
                    "SELECT canonical_id, erp_number FROM core.id_map WHERE entity_type = 'client'"
                ).fetchall()
            )
        new_customers = 0
        for account in accounts:
            if account["Id"] in blocked:
                continue
            matches = by_name.get(account["Name"], [])
            assert len(matches) == 1, account["Name"]
            expected_no = account["ERP_Customer_No__c"] or f"ES-C{canonical[account['Id']]:06d}"
            assert matches[0]["number"] == expected_no
            assert matches[0]["currencyCode"] == account["CurrencyIsoCode"]
            new_customers += account["ERP_Customer_No__c"] is None
            assert psa_names.count(account["Name"]) == 1, account["Name"]
            erp_id, psa_id = id_map[canonical[account["Id"]]]
            assert erp_id == matches[0]["id"] and psa_id is not None
            # the ERP's own number, from its answer, also for customers erpsync created
            assert erp_numbers[canonical[account["Id"]]] == matches[0]["number"]
        assert new_customers > 0
        assert len(customers) == len(customers_before) + new_customers
        # blocked clients: nothing created, existing ERP customers left as they were
        for account in accounts:
            if account["Id"] in blocked:
                existed = account["Name"] in psa_clients_before
                assert psa_names.count(account["Name"]) == (1 if existed else 0)
                if account["ERP_Customer_No__c"] is None:
                    assert account["Name"] not in by_name
                else:
                    number = account["ERP_Customer_No__c"]
                    now = next(c for c in customers if c["number"] == number)
                    assert now == customers_before[number]
        # ERP employees: one per PSA user, matched by number, none created twice
        employees = store["erp"].scan("employees")
        numbers = [e["number"] for e in employees]
        assert len(numbers) == len(set(numbers)) == employees_before
        # contracted rates are on the PSA assignments
        with psycopg.connect(warehouse_db) as conn:
            overrides = conn.execute(
                """SELECT o.psa_project_id, p.psa_id, o.rate
                     FROM core.contract_rate_overrides o
                     JOIN core.people p ON lower(p.email) = lower(o.user_email)
                    WHERE o.psa_project_id IS NOT NULL AND o.deleted_at IS NULL"""
            ).fetchall()
        assert overrides
        assignments = {
            (str(a["project"]["id"]), str(a["user"]["id"])): a
            for a in store["psa"].scan("user_assignments")
        }
        for project_id, user_id, rate in overrides:
            assert Decimal(str(assignments[(project_id, user_id)]["hourly_rate"])) == rate
            # ... and applied: Harvest uses it only with use_default_rates false (audit H10)
            assert assignments[(project_id, user_id)]["use_default_rates"] is False
        # every write went through the API once, and the audit trail has one row per write
        first_writes = h.api_writes(sandbox, seq0)
        writes = totals["erp"]["writes"] + totals["psa"]["writes"]
        assert len(first_writes) == writes > 0
        with psycopg.connect(warehouse_db) as conn:
            audited = conn.execute(
                "SELECT count(*) FROM audit.audit_log WHERE action LIKE 'writeback.%%'"
            ).fetchone()[0]
            outbox_rows = conn.execute("SELECT count(*) FROM ops.outbox").fetchone()[0]
        assert audited == writes

        # a second sync and relay: nothing changes, nothing is written
        seq1 = h.last_seq(sandbox)
        rerun = RunInfo.local("writeback-again")
        stats = h.sync_all(warehouse_db, rerun)
        again = h.relay_until_done(rerun)
        # (psa_clients reads back the clients the relay wrote to the PSA after the first sync)
        assert all(
            s.changed == 0 and s.written_back == 0 for n, s in stats.items() if n != "psa_clients"
        )
        assert stats["psa_clients"].written_back == 0
        assert again == {s: dict.fromkeys(again[s], 0) for s in again}
        assert h.api_writes(sandbox, seq1) == []
        with psycopg.connect(warehouse_db) as conn:
            assert conn.execute("SELECT count(*) FROM ops.outbox").fetchone()[0] == outbox_rows


def test_invalid_vat_ids_block_their_client_once_until_fixed_in_the_crm(sandbox, warehouse_db):
    import random

    from stdnum.eu import vat as eu_vat

    from erpsync_sandbox.generator.ids import valid_vat

    store = sandbox.ctx.stores
    blocked = h.manifest_ids(sandbox, "invalid_vat_id")
    assert blocked
    run = RunInfo.local("vat")
    only = h.client_specs()
    with h.connections(sandbox, warehouse_db):
        h.sync_all(warehouse_db, run, only=only)
        h.relay_until_done(run)
        h.sync_all(warehouse_db, RunInfo.local("vat-rerun"), full=True, only=only)
        h.relay_until_done(run)
        with psycopg.connect(warehouse_db) as conn:
            exceptions = conn.execute(
                """SELECT entity_key, owner, detail->>'reason', status FROM ops.exceptions
                    WHERE reason_code = 'invalid_tax_id'"""
            ).fetchall()
            outbox_blocked = conn.execute(
                "SELECT operation, entity_key FROM ops.outbox WHERE status = 'blocked'"
            ).fetchall()
            sent_for_blocked = conn.execute(
                "SELECT count(*) FROM ops.outbox WHERE status = 'sent' AND entity_key = ANY(%s)",
                (sorted(blocked),),
            ).fetchone()[0]
        assert sorted(e[0] for e in exceptions) == sorted(blocked)  # one each, rerun included
        assert all(e[3] == "open" and "failed validation" in e[2] for e in exceptions), exceptions
        assert all(e[1].startswith("finance ops") for e in exceptions)
        assert sorted(outbox_blocked) == sorted(
            (op, key) for key in blocked for op in ("erp.customer", "psa.client")
        )
        assert sent_for_blocked == 0

        # finance fixes one VAT id in the CRM; the next sync resolves it and releases the client
        fixed = sorted(blocked)[0]
        account = store["crm"].get("Account", fixed)
        account["VAT_Id__c"] = valid_vat(account["BillingCountryCode"], random.Random(1))
        assert eu_vat.is_valid(account["VAT_Id__c"])
        store["crm"].put("Account", fixed, account)
        fix_run = RunInfo.local("vat-fixed")
        h.sync_all(warehouse_db, fix_run, only=only)
        totals = h.relay_until_done(fix_run)
        with psycopg.connect(warehouse_db) as conn:
            states = dict(
                conn.execute(
                    "SELECT entity_key, status FROM ops.exceptions "
                    "WHERE reason_code = 'invalid_tax_id'"
                ).fetchall()
            )
            sent = conn.execute(
                "SELECT operation FROM ops.outbox WHERE entity_key = %s AND status = 'sent'",
                (fixed,),
            ).fetchall()
        assert states[fixed] == "resolved"
        assert all(s == "open" for k, s in states.items() if k != fixed)
        assert sorted(sent) == [("erp.customer",), ("psa.client",)]
        assert totals["erp"]["writes"] == 1
        customers = [
            c for c in store["erp"].scan("customers") if c["displayName"] == account["Name"]
        ]
        assert len(customers) == 1
        assert customers[0]["taxRegistrationNumber"] == account["VAT_Id__c"]


def test_a_failing_write_stays_pending_with_a_scrubbed_error_and_succeeds_later(
    sandbox, warehouse_db
):
    run = RunInfo.local("failing")
    with h.connections(sandbox, warehouse_db, h.fast_retry_credentials()):
        h.sync_all(warehouse_db, run, only=h.client_specs())
        faults = sandbox.ctx.faults_for("erp")
        faults.patch({"error_rate_5xx": 1.0})
        try:
            stats = h.run_outbox("erp", run=run, limit=3)
        finally:
            faults.patch({"error_rate_5xx": 0.0})
        with psycopg.connect(warehouse_db) as conn:
            failed = conn.execute(
                "SELECT status, attempts, last_error FROM ops.outbox "
                "WHERE target_system = 'erp' AND attempts > 0"
            ).fetchall()
        assert stats.failed == 3 and stats.sent == 0
        assert stats.left_pending == 3  # the write-back task fails on these so Airflow retries
        assert len(failed) == 3
        assert all(s == "pending" and a == 1 and "HTTP 5" in e for s, a, e in failed), failed
        assert not any("sandbox-erp-secret" in e for _s, _a, e in failed)
        after = h.relay_until_done(run, systems=("erp",))
        assert after["erp"]["failed"] == 0
        with psycopg.connect(warehouse_db) as conn:
            left = conn.execute(
                "SELECT count(*) FROM ops.outbox WHERE target_system = 'erp' AND status = 'pending'"
            ).fetchone()[0]
        assert left == 0


def test_the_write_back_task_fails_for_airflow_to_retry_while_writes_are_left_pending(
    sandbox, warehouse_db
):
    """The DAG's write_back_erp task raises while rows stay pending (so Airflow's retries with
    backoff send them), and succeeds once the ERP answers again."""
    from types import SimpleNamespace

    from erpsync.airflow.sync_dags import _write_back_task

    task_fn = _write_back_task("erp").function
    context = {
        "ti": SimpleNamespace(
            dag_id="erpsync_master_data_sync",
            run_id="manual__wb",
            task_id="write_back_erp",
            try_number=1,
        ),
        "dag_run": SimpleNamespace(triggering_user_name="ops@example.com", run_type="manual"),
    }
    run = RunInfo.local("task")
    with h.connections(sandbox, warehouse_db, h.fast_retry_credentials()):
        h.sync_all(warehouse_db, run, only=h.client_specs())
        faults = sandbox.ctx.faults_for("erp")
        faults.patch({"error_rate_5xx": 1.0})
        try:
            with pytest.raises(
                RuntimeError, match=r"write\(s\) to the ERP failed and stay pending"
            ):
                task_fn(**context)
        finally:
            faults.patch({"error_rate_5xx": 0.0})
        result = task_fn(**context)
    assert result["left_pending"] == 0 and result["failed"] == 0 and result["sent"] > 0


def test_a_write_that_cannot_succeed_fails_at_once_with_an_exception_for_a_person(
    sandbox, warehouse_db
):
    from erpsync.sync import specs

    store = sandbox.ctx.stores["psa"]
    run = RunInfo.local("unassigned")
    with h.connections(sandbox, warehouse_db, h.fast_retry_credentials()):
        h.sync_all(warehouse_db, run, only=(specs.PEOPLE, specs.CONTRACT_RATE_OVERRIDES))
        with psycopg.connect(warehouse_db) as conn:
            key, project_id, user_id = conn.execute(
                """SELECT entity_key, payload->>'project_id', payload->>'user_id'
                     FROM ops.outbox WHERE operation = 'psa.assignment_rate'
                    ORDER BY outbox_id LIMIT 1"""
            ).fetchone()
        # someone removed the person from the PSA project: the contracted rate has nowhere to go
        gone = store.scan(
            "user_assignments", where={"parent_id": project_id, "user.id": int(user_id)}
        )
        assert len(gone) == 1
        store.delete("user_assignments", gone[0]["id"])
        stats = h.run_outbox("psa", run=run)
        with psycopg.connect(warehouse_db) as conn:
            row = conn.execute(
                "SELECT status, attempts, last_error FROM ops.outbox WHERE entity_key = %s",
                (key,),
            ).fetchone()
            exception = conn.execute(
                "SELECT reason_code, entity_key, status FROM ops.exceptions"
            ).fetchall()
        assert stats.failed == 1 and stats.sent == stats.attempted - 1
        assert stats.left_pending == 0  # a person's job now, not a reason to retry the task
        assert row[0] == "failed" and row[1] == 1
        assert f"PSA user {user_id}" in row[2] and "not assigned" in row[2]
        assert exception == [("write_back_failed", f"psa.assignment_rate:{key}", "open")]
        # a failed row is not retried blindly by the next relay run
        assert h.run_outbox("psa", run=run).attempted == 0


def test_a_stale_etag_is_re_read_and_the_patch_retried_once(sandbox, warehouse_db):
    """Someone edits an ERP customer between our read and our PATCH: Business Central answers
    409 Request_EntityChanged; the relay re-reads, patches again, and keeps their edit."""
    from erpsync.connectors.business_central import BusinessCentralClient

    erp_store = sandbox.ctx.stores["erp"]

    class RacingBusinessCentral:
        """The real client; before its first PATCH another user edits the same record."""

        def __init__(self, real):
            self.real, self.raced = real, []

        def __getattr__(self, name):
            return getattr(self.real, name)

        def patch(self, entity, entity_id, body, etag):
            if not self.raced:
                theirs = erp_store.get(entity, entity_id)
                theirs["phoneNumber"] = "+31 20 555 0100"
                erp_store.put(entity, entity_id, theirs)
                self.raced.append(entity_id)
            return self.real.patch(entity, entity_id, body, etag)

    run = RunInfo.local("etag")
    with h.connections(sandbox, warehouse_db):
        h.sync_all(warehouse_db, run, only=h.client_specs())
        clients = relay.TargetClients()
        racing = RacingBusinessCentral(BusinessCentralClient(conn_id="erpsync_erp"))
        clients._erp = racing
        stats = h.run_outbox("erp", run=run, clients=clients)
    assert racing.raced and stats.failed == 0 and stats.updated > 0
    customer = erp_store.get("customers", racing.raced[0])
    assert customer["phoneNumber"] == "+31 20 555 0100"  # their edit kept
    with psycopg.connect(warehouse_db) as conn:
        payload = conn.execute(
            "SELECT payload FROM ops.outbox WHERE target_id = %s AND status = 'sent'",
            (racing.raced[0],),
        ).fetchone()[0]
    codes = {k: payload.pop(k) for k in ("_paymentTerms", "_taxArea") if k in payload}
    assert {k: customer[k] for k in payload} == payload  # ours applied on the second try
    area = erp_store.get("taxAreas", customer["taxAreaId"])
    assert area["code"] == codes["_taxArea"]  # the code resolved to the tenant's taxAreas id


def test_a_client_deleted_in_the_crm_is_blocked_in_the_erp_and_archived_in_the_psa(
    sandbox, warehouse_db
):
    """Deleted in the CRM: the ERP customer is blocked ("All") and the PSA client archived, never
    deleted or re-created; restored in the CRM: both open again. Each once."""
    stores = sandbox.ctx.stores
    blocked = set(h.manifest_ids(sandbox, "invalid_vat_id"))
    run = RunInfo.local("delete")
    with h.connections(sandbox, warehouse_db, h.fast_retry_credentials()):
        h.sync_all(warehouse_db, run, only=h.client_specs())
        h.relay_until_done(run)
        with psycopg.connect(warehouse_db) as conn:
            crm_id, number, psa_id = conn.execute(
                """SELECT c.crm_id, o.external_ref, m.psa_id
                     FROM core.clients c JOIN core.id_map m USING (canonical_id)
                     JOIN ops.outbox o ON o.entity_key = c.crm_id AND o.operation = 'erp.customer'
                    WHERE m.erp_id IS NOT NULL AND m.psa_id IS NOT NULL AND NOT c.crm_id = ANY(%s)
                    ORDER BY c.canonical_id LIMIT 1""",
                (sorted(blocked),),
            ).fetchone()
        customers = len(stores["erp"].scan("customers"))
        psa_clients = len(stores["psa"].scan("clients"))
        assert stores["crm"].delete("Account", crm_id, soft=True, set_fields={"IsDeleted": True})
        h.sync_all(warehouse_db, run, only=h.client_specs())
        done = h.relay_until_done(run)
        [customer] = stores["erp"].scan("customers", where={"number": number})
        psa_client = stores["psa"].get("clients", int(psa_id))
        assert customer["blocked"] == "All" and psa_client["is_active"] is False
        assert len(stores["erp"].scan("customers")) == customers  # nothing created or deleted
        assert len(stores["psa"].scan("clients")) == psa_clients
        assert done["erp"]["writes"] == 1 and done["psa"]["writes"] == 1
        # a second run writes nothing
        h.sync_all(warehouse_db, run, only=h.client_specs())
        assert h.relay_until_done(run)["erp"]["writes"] == 0
        # restored in the CRM (Salesforce undelete): open again, once
        row = stores["crm"].get_row("Account", crm_id, include_deleted=True)
        stores["crm"].put(
            "Account", crm_id, {**row.data(), "IsDeleted": False}, parent_id=row.parent_id
        )
        h.sync_all(warehouse_db, run, only=h.client_specs())
        done = h.relay_until_done(run)
        [customer] = stores["erp"].scan("customers", where={"number": number})
        assert (
            customer["blocked"].strip() == ""
            and stores["psa"].get("clients", int(psa_id))["is_active"]
        )
        assert done["erp"]["writes"] == 1 and done["psa"]["writes"] == 1
        assert len(stores["erp"].scan("customers")) == customers


def test_customers_get_payment_terms_and_tax_area_ids_and_employees_no_display_name(
    sandbox, warehouse_db
):
    """B5: the customer's payment terms go as ``paymentTermsId`` (looked up by code), never the
    ``paymentTermsCode`` BC refuses; tax area: reverse-charge clients get the EU area, exempt ones
    their country's, so BC taxes lines with the VAT Posting Setup row billing used. B6: employees
    are written without the read-only ``displayName``."""
    from erpsync.invoicing import tax

    store = sandbox.ctx.stores
    terms = {t["id"]: t["code"] for t in store["erp"].scan("paymentTerms")}
    areas = {a["id"]: a["code"] for a in store["erp"].scan("taxAreas")}
    seq0 = h.last_seq(sandbox)
    run = RunInfo.local("codes")
    with h.connections(sandbox, warehouse_db):
        h.sync_all(warehouse_db, run)
        totals = h.relay_until_done(run)
    assert totals["erp"]["failed"] == 0
    accounts = {a["Name"]: a for a in _accounts(sandbox)}
    blocked = h.manifest_ids(sandbox, "invalid_vat_id")
    checked = set()
    for customer in store["erp"].scan("customers"):
        account = accounts.get(customer["displayName"])
        if account is None or account["Id"] in blocked:
            continue
        days = account["Payment_Terms__c"].split()[-1]
        assert terms[customer["paymentTermsId"]] == f"{days} DAYS", account["Name"]
        want = tax.tax_area_for(
            account["BillingCountryCode"],
            exempt=bool(account["Tax_Exempt__c"]),
            reverse_charge=bool(account["Reverse_Charge__c"]),
        )
        assert areas[customer["taxAreaId"]] == want, account["Name"]
        checked.add(want)
    assert {"DOMESTIC", "EU", "EXPORT"} <= checked
    # the sandbox refuses paymentTermsCode and an employee displayName with BC's 400: every
    # customer and employee write above went through
    writes = [w for w in h.api_writes(sandbox, seq0) if w["system"] == "erp"]
    assert {w["resource"] for w in writes} >= {"customers"}
    for employee in store["erp"].scan("employees"):
        assert employee["displayName"] == f"{employee['givenName']} {employee['surname']}"


def test_a_payment_term_missing_in_the_erp_fails_into_the_exceptions_queue(sandbox, warehouse_db):
    """A code the tenant lacks is a person's job (set it up in BC), not a 400 retried forever."""
    erp = sandbox.ctx.stores["erp"]
    gone = next(t for t in erp.scan("paymentTerms") if t["code"] == "45 DAYS")
    erp.delete("paymentTerms", gone["id"])
    run = RunInfo.local("no-terms")
    with h.connections(sandbox, warehouse_db, h.fast_retry_credentials()):
        h.sync_all(warehouse_db, run, only=h.client_specs())
        stats = h.run_outbox("erp", run=run)
        again = h.run_outbox("erp", run=run)
    assert stats.failed > 0 and stats.left_pending == 0
    assert again.attempted == 0  # failed rows are not retried blindly
    with psycopg.connect(warehouse_db) as conn:
        failed = conn.execute(
            "SELECT last_error FROM ops.outbox WHERE operation = 'erp.customer'"
            " AND status = 'failed'"
        ).fetchall()
        exceptions = conn.execute(
            "SELECT count(*) FROM ops.exceptions WHERE reason_code = 'write_back_failed'"
        ).fetchone()[0]
    assert failed and exceptions == len(failed) == stats.failed
    assert all("Payment Terms '45 DAYS'" in e and "Payment Terms page" in e for (e,) in failed)


def test_the_contracted_rate_is_applied_not_just_stored(sandbox, warehouse_db):
    """Audit H10: Harvest bills an assignment's hourly_rate only "when the project's bill_by is
    People and use_default_rates is false". An assignment that has the contracted number but
    uses the default rates is corrected (and the PSA then bills the contracted rate); a project
    billed otherwise cannot take the rate: the write fails at once with an exception."""
    from erpsync.sync import specs

    store = sandbox.ctx.stores["psa"]
    run = RunInfo.local("rates-applied")
    with h.connections(sandbox, warehouse_db, h.fast_retry_credentials()):
        h.sync_all(warehouse_db, run, only=(specs.PEOPLE, specs.CONTRACT_RATE_OVERRIDES))
        with psycopg.connect(warehouse_db) as conn:
            rows = conn.execute(
                """SELECT entity_key, payload->>'project_id', payload->>'user_id',
                          payload->>'hourly_rate'
                     FROM ops.outbox WHERE operation = 'psa.assignment_rate'
                    ORDER BY outbox_id"""
            ).fetchall()
        (key, project_id, user_id, rate) = rows[0]
        other = next(r for r in rows if r[1] != project_id)
        # the contracted number is stored, but the assignment uses the person's default rates
        (ua,) = store.scan(
            "user_assignments", where={"parent_id": project_id, "user.id": int(user_id)}
        )
        store.put(
            "user_assignments",
            ua["id"],
            {**ua, "hourly_rate": Decimal(rate), "use_default_rates": True},
            parent_id=project_id,
        )
        # another project is billed by task: no person rate applies there
        project = store.get("projects", int(other[1]))
        store.put("projects", project["id"], {**project, "bill_by": "Tasks"})
        h.run_outbox("psa", run=run)
        fixed = store.get("user_assignments", ua["id"])
        assert fixed["use_default_rates"] is False
        assert Decimal(str(fixed["hourly_rate"])) == Decimal(rate)
        with psycopg.connect(warehouse_db) as conn:
            status = dict(
                conn.execute(
                    "SELECT entity_key, status FROM ops.outbox WHERE entity_key = ANY(%s)",
                    ([key, other[0]],),
                ).fetchall()
            )
            error = conn.execute(
                "SELECT last_error FROM ops.outbox WHERE entity_key = %s", (other[0],)
            ).fetchone()[0]
            exceptions = conn.execute(
                "SELECT reason_code, entity_key FROM ops.exceptions WHERE status = 'open'"
            ).fetchall()
        assert status == {key: "sent", other[0]: "failed"}
        assert "bills by 'Tasks'" in error and "People" in error
        # one exception per contracted rate of the project billed by task
        tasks_billed = sorted(r[0] for r in rows if r[1] == other[1])
        assert sorted(exceptions) == [
            ("write_back_failed", f"psa.assignment_rate:{k}") for k in tasks_billed
        ]
