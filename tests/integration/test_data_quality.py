"""Data quality with Great Expectations on a real PostgreSQL warehouse (hand-built rows, three
clients): the suites load from the version-controlled JSON files; a critical failure blocks
invoicing for exactly the client (or contract) of the failing rows and nothing else; a warning
blocks nothing; a rerun does not duplicate a block; the fixed row clears it on the next run;
rows that cannot be traced to a client block everything; every open and clear is audited."""

from __future__ import annotations

import json
import shutil
from datetime import date

import psycopg
import pytest

from erpsync import quality
from erpsync.models.reference import CURRENCY_MINOR_UNITS
from erpsync.quality import suites
from erpsync.sync.spec import RunInfo
from tests.conftest import make_database

TODAY = date(2026, 11, 2)
CLIENTS = {"ACC-1": "EUR", "ACC-2": "USD", "ACC-3": "GBP"}  # CRM account id -> currency


def run_suites(url: str, run: RunInfo, **kwargs) -> quality.DQResult:
    """quality.run_suites on a connection of its own (committed when it returns)."""
    with psycopg.connect(url) as conn:
        return quality.run_suites(conn, run, **kwargs)


def _seed(conn) -> None:
    for n, (acc, cur) in enumerate(CLIENTS.items(), start=1):
        canon = conn.execute(
            "INSERT INTO core.id_map (entity_type, crm_id, psa_id) VALUES ('client', %s, %s) "
            "RETURNING canonical_id",
            (acc, f"PC-{n}"),
        ).fetchone()[0]
        conn.execute(
            """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country,
                    currency, payment_terms_days, source_record_id, row_hash, first_run_id,
                    last_run_id) VALUES (%s, %s, %s, 'DE', %s, 30, %s, 'h', 'seed', 'seed')""",
            (acc, canon, f"Client {n} GmbH", cur, acc),
        )
        conn.execute(
            """INSERT INTO core.tax_profiles (crm_account_id, country, vat_id, vat_id_valid,
                    source_record_id, row_hash, first_run_id, last_run_id)
                VALUES (%s, 'DE', 'DE136695976', true, %s, 'h', 'seed', 'seed')""",
            (acc, acc),
        )
        conn.execute(
            """INSERT INTO core.contracts (opportunity_id, version, account_id, billing_model,
                    currency, amount, starts_on, ends_on, project_code, status, psa_project_id,
                    payload, first_run_id, last_run_id)
                VALUES (%s, 1, %s, 'time_and_materials', %s, 10000, '2026-08-01', '2027-07-31',
                        %s, 'complete', %s, '{}', 'seed', 'seed')""",
            (f"OPP-{n}", acc, cur, f"ES-P{n}", f"PR-{n}"),
        )
    for u in (1, 2):
        canon = conn.execute(
            "INSERT INTO core.id_map (entity_type, psa_id) VALUES ('person', %s) "
            "RETURNING canonical_id",
            (f"U-{u}",),
        ).fetchone()[0]
        conn.execute(
            """INSERT INTO core.people (psa_id, canonical_id, first_name, last_name, email,
                    source_record_id, row_hash, first_run_id, last_run_id)
                VALUES (%s, %s, 'Pat', %s, %s, %s, 'h', 'seed', 'seed')""",
            (f"U-{u}", canon, f"Person{u}", f"p{u}@firm.example", f"U-{u}"),
        )
        conn.execute(
            """INSERT INTO core.rate_cards (kind, psa_rate_id, person_psa_id, amount, currency,
                    valid_from, source_record_id, row_hash, first_run_id, last_run_id)
                VALUES ('billable', %s, %s, 150, 'EUR', '2026-01-01', %s, 'h', 'seed', 'seed')""",
            (f"R-{u}", f"U-{u}", f"R-{u}"),
        )
    for n, cur in enumerate(CLIENTS.values(), start=1):
        for k in range(3):
            conn.execute(
                """INSERT INTO core.time_entries (psa_id, spent_date, hours, billable,
                        approval_status, is_locked, is_billed, billable_rate, currency,
                        user_psa_id, client_psa_id, project_psa_id, source_record_id, row_hash,
                        first_run_id, last_run_id)
                    VALUES (%s, %s, 7.5, true, 'approved', false, false, 150, %s,
                            'U-1', %s, %s, %s, 'h', 'seed', 'seed')""",
                (f"T-{n}{k}", date(2026, 10, k + 1), cur, f"PC-{n}", f"PR-{n}", f"T-{n}{k}"),
            )
        conn.execute(
            """INSERT INTO core.expenses (psa_id, spent_date, total_cost, currency, billable,
                    approval_status, is_locked, is_billed, has_receipt, user_psa_id,
                    client_psa_id, project_psa_id, source_record_id, row_hash, first_run_id,
                    last_run_id)
                VALUES (%s, '2026-10-05', 42.50, %s, true, 'approved', false, false, true,
                        'U-2', %s, %s, %s, 'h', 'seed', 'seed')""",
            (f"E-{n}", cur, f"PC-{n}", f"PR-{n}", f"E-{n}"),
        )


@pytest.fixture(scope="module")
def wh(pg_server_url, tmp_path_factory):
    from erpsync.runtime import database
    from erpsync.warehouse import migrate

    url = make_database(pg_server_url, "erpsync_test_dq")
    migrate.migrate(url)
    with psycopg.connect(url) as conn:
        _seed(conn)
    mp = pytest.MonkeyPatch()
    mp.setenv("ERPSYNC_GX_HOME", str(tmp_path_factory.mktemp("gx_home")))
    yield url
    mp.undo()
    database.drop_database(url)


def _tree(folder) -> dict[str, bytes]:
    """The committed files of a GX folder (uncommitted/ excluded)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "uncommitted" not in p.parts
    }


def q(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def execute(url: str, sql: str, params=()) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(sql, params)


def active(url: str) -> set[tuple]:
    return set(q(url, "SELECT scope_type, scope_key, suite, expectation FROM ops.dq_active_blocks"))


def blocked(url: str, account: str | None, contract: str | None = None) -> bool:
    return q(url, "SELECT ops.dq_blocked(%s, %s)", (account, contract))[0][0]


def test_suites_load_from_the_version_controlled_json_files():
    for name in suites.ALL_SUITES:
        path = suites.suite_path(name)
        doc = json.loads(path.read_text())
        rules = suites.rules(name, doc)
        assert [r.name for r in rules] == [e["meta"]["name"] for e in doc["expectations"]]
        for exp in doc["expectations"]:
            assert exp["severity"] == exp["meta"]["severity"] in ("critical", "warning")
            assert exp["meta"]["scope"] in ("client", "contract", "all")
            if exp["kwargs"].get("value_set") and "currency" in exp["kwargs"]["column"]:
                assert set(exp["kwargs"]["value_set"]) == set(CURRENCY_MINOR_UNITS)
        assert suites.asset_of(name, doc) in quality.assets.ASSET_SQL
    # GX itself reads them (severity is GX's own field, meta carries the scope)
    import great_expectations as gx

    suite = gx.ExpectationSuite(**suites.load_suite("core_time_entries"))
    hours = next(e for e in suite.expectations if e.meta["name"] == "hours_in_range")
    assert hours.severity.value == "critical" and hours.meta["scope"] == "client"
    assert (hours.min_value, hours.max_value) == (0, 24)


def test_the_invoicing_predicate_takes_column_references_only():
    assert "dq_b.scope_key = i.account_id" in quality.blocked_scope_sql()
    with pytest.raises(ValueError, match="not a column reference"):
        quality.blocked_scope_sql("i.account_id; DROP TABLE ops.dq_blocks", "i.opportunity_id")


def _edit(copy, suite: str, name: str, **kwargs) -> None:
    path = copy / "expectations" / f"{suite}.json"
    doc = json.loads(path.read_text())
    for exp in doc["expectations"]:
        if exp["meta"]["name"] == name:
            exp["kwargs"].update(kwargs)
    path.write_text(json.dumps(doc))


def test_an_edited_suite_file_changes_what_is_checked(wh, tmp_path, monkeypatch):
    """run_suites reads the JSON at run time: tightening a bound in a copy of the files makes
    the same data fail (scoped to each client), without any code change; a critical check that
    cannot be evaluated (a column that does not exist) fails closed and holds everyone."""
    copy = tmp_path / "gx_project"
    shutil.copytree(suites.gx_project_dir(), copy, ignore=shutil.ignore_patterns("uncommitted"))
    _edit(copy, "core_time_entries", "hours_in_range", max_value=4)
    _edit(copy, "core_clients", "crm_id_unique", column="no_such_column")
    monkeypatch.setenv("ERPSYNC_GX_PROJECT_DIR", str(copy))
    planted = ["core_time_entries", "core_clients"]
    result = run_suites(wh, RunInfo.local("dq-edited"), suites=planted, docs=False, today=TODAY)
    failed = {c.label: c for c in result.critical_failures}
    assert set(failed) == {"core_time_entries.hours_in_range", "core_clients.crm_id_unique"}
    assert failed["core_time_entries.hours_in_range"].scopes == {f"client:{a}": 3 for a in CLIENTS}
    assert "could not be evaluated" in failed["core_clients.crm_id_unique"].error
    assert ("all", "*", "core_clients", "crm_id_unique") in active(wh)
    # back to the committed suites: the same data passes and every block clears
    monkeypatch.delenv("ERPSYNC_GX_PROJECT_DIR")
    again = run_suites(wh, RunInfo.local("dq-committed"), suites=planted, docs=False, today=TODAY)
    assert again.success
    assert {b.scope_key for b in again.cleared} == {*CLIENTS, "*"}
    assert active(wh) == set()


def test_critical_blocks_its_scope_only_warning_blocks_nothing_fix_clears(wh):
    committed = _tree(suites.gx_project_dir())
    clean = run_suites(wh, RunInfo.local("dq-clean"), today=TODAY)
    # the version-controlled context is read, never written; the working copy holds the data
    # source as a ${VARIABLE}, no connection string
    assert _tree(suites.gx_project_dir()) == committed
    copy = (quality.runner.gx_home() / "great_expectations.yml").read_text()
    assert "${ERPSYNC_DQ_WAREHOUSE_URL}" in copy and "postgresql" not in copy
    assert clean.success and clean.warnings == [] and active(wh) == set()
    assert {c.suite for c in clean.checks} == set(suites.ALL_SUITES)
    docs_index = quality.runner.docs_index()
    assert clean.docs_url and docs_index.exists()
    assert "core_time_entries" in docs_index.read_text()

    # plant: 30 hours on one entry of ACC-2 (critical, client scope); contract OPP-3 ends
    # before it starts (critical, contract scope); ACC-1's VAT id invalid (warning only)
    execute(wh, "UPDATE core.time_entries SET hours = 30 WHERE psa_id = 'T-20'")
    execute(wh, "UPDATE core.contracts SET ends_on = '2026-01-31' WHERE opportunity_id = 'OPP-3'")
    execute(wh, "UPDATE core.tax_profiles SET vat_id_valid = false WHERE crm_account_id = 'ACC-1'")
    run = RunInfo.local("dq-bad")
    planted = ["core_time_entries", "core_contracts", "core_tax_profiles"]
    bad = run_suites(wh, run, suites=planted, docs=False, today=TODAY)

    assert {c.label for c in bad.critical_failures} == {
        "core_time_entries.hours_in_range",
        "core_contracts.dates_ordered",
    }
    assert [c.label for c in bad.warnings] == ["core_tax_profiles.vat_id_valid"]
    assert active(wh) == {
        ("client", "ACC-2", "core_time_entries", "hours_in_range"),
        ("contract", "OPP-3", "core_contracts", "dates_ordered"),
    }
    # exactly that client / that contract: the others (and ACC-1 with its warning) are free
    assert blocked(wh, "ACC-2", "OPP-2") and blocked(wh, "ACC-2", None)
    assert blocked(wh, "ACC-3", "OPP-3") and not blocked(wh, "ACC-3", "OPP-other")
    assert not blocked(wh, "ACC-1", "OPP-1")
    with psycopg.connect(wh) as conn:
        assert quality.is_blocked(conn, "ACC-2") is True
        assert sorted(b.describe() for b in quality.active_blocks(conn)) == [
            "client ACC-2: core_time_entries.hours_in_range",
            "contract OPP-3: core_contracts.dates_ordered",
        ]
    # the set-based predicate INVOICE uses agrees with the function
    predicate = quality.blocked_scope_sql("c.account_id", "c.opportunity_id")
    held = q(
        wh,
        f"SELECT c.opportunity_id FROM core.contracts c WHERE {predicate} ORDER BY 1",  # noqa: S608
    )
    assert held == [("OPP-2",), ("OPP-3",)]
    detail = q(
        wh,
        "SELECT detail FROM ops.dq_blocks WHERE scope_key = 'ACC-2' AND status = 'active'",
    )[0][0]
    assert detail["failing_rows"] == 1 and detail["sample"][0]["hours"] in (30, "30")
    opened = q(
        wh,
        "SELECT entity_id, after_state->>'scope_key', source_run_id FROM audit.audit_log "
        "WHERE action = 'dq_block.opened' ORDER BY audit_id DESC LIMIT 2",
    )
    assert {r[1] for r in opened} == {"ACC-2", "OPP-3"} and {r[2] for r in opened} == {run.run_id}
    assert "CRITICAL core_time_entries.hours_in_range" in bad.summary()
    assert "WARNING  core_tax_profiles.vat_id_valid" in bad.summary()

    # a rerun with the problem still there refreshes the block, never a second one
    rerun = run_suites(wh, RunInfo.local("dq-again"), suites=planted, docs=False, today=TODAY)
    assert rerun.opened == () and rerun.cleared == ()
    assert q(
        wh,
        "SELECT scope_key, first_run_id, last_run_id FROM ops.dq_blocks "
        "WHERE status = 'active' ORDER BY 1",
    ) == [("ACC-2", run.run_id, rerun.run_id), ("OPP-3", run.run_id, rerun.run_id)]

    # fix the time entry at the source: the next run clears ACC-2's block, OPP-3 stays
    execute(wh, "UPDATE core.time_entries SET hours = 3 WHERE psa_id = 'T-20'")
    fixed = run_suites(wh, RunInfo.local("dq-fixed"), suites=planted, docs=False, today=TODAY)
    assert [(b.scope_type, b.scope_key) for b in fixed.cleared] == [("client", "ACC-2")]
    assert not blocked(wh, "ACC-2", "OPP-2") and blocked(wh, "ACC-3", "OPP-3")
    assert q(
        wh,
        "SELECT status, cleared_run_id FROM ops.dq_blocks WHERE first_run_id = %s "
        "ORDER BY scope_key",
        (run.run_id,),
    ) == [("cleared", fixed.run_id), ("active", None)]
    assert (
        q(wh, "SELECT count(*) FROM audit.audit_log WHERE action = 'dq_block.cleared'")[0][0] >= 1
    )
    execute(wh, "UPDATE core.contracts SET ends_on = '2027-07-31' WHERE opportunity_id = 'OPP-3'")
    execute(wh, "UPDATE core.tax_profiles SET vat_id_valid = true WHERE crm_account_id = 'ACC-1'")


def test_untraceable_failing_rows_block_all_and_recon_output_is_checked(wh):
    # an expense nobody can trace to a client (unknown project, unmapped PSA client), with a
    # date no real expense has (a negative amount is a credit since issue 14: not critical)
    execute(
        wh,
        """INSERT INTO core.expenses (psa_id, spent_date, total_cost, currency, billable,
               approval_status, is_locked, is_billed, has_receipt, user_psa_id, client_psa_id,
               project_psa_id, source_record_id, row_hash, first_run_id, last_run_id)
           VALUES ('E-X', '1999-12-31', 10, 'EUR', true, 'approved', false, false, true,
                   'U-1', 'PC-unknown', 'PR-unknown', 'E-X', 'h', 'seed', 'seed')""",
    )
    # a recon item ready to bill with a negative amount, for ACC-1
    has_recon = q(wh, "SELECT to_regclass('recon.items') IS NOT NULL")[0][0]
    if has_recon:
        execute(
            wh,
            """INSERT INTO recon.items (item_key, item_type, source_id, account_id,
                   opportunity_id, item_date, period_start, hours, rate, currency, amount,
                   approved, state, first_run_id, last_run_id)
               VALUES ('time:T-10', 'time', 'T-10', 'ACC-1', 'OPP-1', '2026-10-01',
                       '2026-10-01', 7.5, 150, 'EUR', -1125, true, 'ready', 'seed', 'seed')""",
        )
    # (core_contracts too: the OPP-3 dates fixed at the end of the previous test clear now)
    result = run_suites(
        wh,
        RunInfo.local("dq-untraceable"),
        suites=["core_contracts", "core_expenses", "recon_items"],
        docs=False,
        today=TODAY,
    )
    expected = {("all", "*", "core_expenses", "spent_date_sane")}
    if has_recon:
        expected.add(("client", "ACC-1", "recon_items", "amount_non_negative"))
    assert active(wh) == expected
    assert {(b.scope_type, b.scope_key) for b in result.opened} == {(t, k) for t, k, *_ in expected}
    assert blocked(wh, "ACC-3", "OPP-3")  # everyone is held while the cause is unknown
    why = q(wh, "SELECT detail->>'why_all' FROM ops.dq_active_blocks WHERE scope_type = 'all'")
    assert why == [("failing rows that cannot be traced to a client or contract",)]

    execute(wh, "DELETE FROM core.expenses WHERE psa_id = 'E-X'")
    if has_recon:
        execute(wh, "DELETE FROM recon.items WHERE item_key = 'time:T-10'")
    cleared = run_suites(
        wh,
        RunInfo.local("dq-cleared"),
        suites=["core_expenses", "recon_items"],
        docs=False,
        today=TODAY,
    )
    assert cleared.success and active(wh) == set()
    assert {(b.scope_type, b.suite) for b in cleared.cleared} == {
        (t, s) for t, _k, s, _e in expected
    }


def test_a_negative_expense_is_a_credit_reported_not_blocking(wh):
    """Issue 14: Harvest's expense total_cost has no sign rule; a negative expense is a credit
    (billed as a negative line, shown to the approver): the gate reports it as a warning and
    blocks nothing, in the warehouse and in the reconciliation output."""
    execute(wh, "UPDATE core.expenses SET total_cost = -50.00 WHERE psa_id = 'E-1'")
    has_recon = q(wh, "SELECT to_regclass('recon.items') IS NOT NULL")[0][0]
    if has_recon:
        execute(
            wh,
            """INSERT INTO recon.items (item_key, item_type, source_id, account_id,
                   opportunity_id, item_date, period_start, quantity, rate, currency, amount,
                   approved, state, first_run_id, last_run_id)
               VALUES ('expense:E-1', 'expense', 'E-1', 'ACC-1', 'OPP-1', '2026-10-05',
                       '2026-10-01', 1, 1, 'EUR', -50.00, true, 'ready', 'seed', 'seed')""",
        )
    try:
        result = run_suites(
            wh,
            RunInfo.local("dq-credit"),
            suites=["core_expenses", "recon_items"],
            docs=False,
            today=TODAY,
        )
        assert result.success and active(wh) == set()
        assert [c.label for c in result.warnings] == ["core_expenses.amount_non_negative"]
    finally:
        execute(wh, "UPDATE core.expenses SET total_cost = 42.50 WHERE psa_id = 'E-1'")
        if has_recon:
            execute(wh, "DELETE FROM recon.items WHERE item_key = 'expense:E-1'")
