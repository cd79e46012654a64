"""Billing end to end: real ``airflow dags test`` runs of the invoice-batch and milestone-billing
DAGs against the small sandbox firm and a real PostgreSQL warehouse, with the approvals given
through Airflow's own REST API by a logged-in user, as the Required Actions page gives them.

How the approval is given here: ``airflow dags test`` runs the DAG in its own process and parks
the approval task in Airflow's ``awaiting_input`` state; an ``airflow api-server`` on the same
metadata database answers ``PATCH .../taskInstances/approve_batch/-1/hitlDetails`` for the
logged-in user (``POST /auth/token``) and resumes the task; ``dags test`` picks it up. An
``airflow scheduler`` runs next to them only for its ``awaiting_input`` timeout sweep (the
response timeout whose default is Reject); the DAGs stay paused, so it schedules nothing else.
The batch's preparer is the run's triggering user: ``dag_test`` for ``airflow dags test``.
The maker-checker case logs in as a user with that same name, i.e. the preparer answering.
The ``airflow dags test`` commands are parsed and run by the Airflow CLI itself, one after the
other in one long-lived interpreter (``erpsync.runtime.demo.DagsTestDriver``, as ``demo --once``
runs its chain), which saves each run ~20 s of start-up.

The firm's data gets into the warehouse with the real syncs, onboarding and reconciliation
(in-process, as tests/integration/test_reconcile_sandbox.py does); the expected invoice totals
are computed here from the sandbox's own records (CRM contracts and accounts, PSA time entries,
users and expenses) with the documented rules, never by calling the builder.

Scenarios, in order (one module, one firm): a month with nothing to bill; dry run; a critical
data-quality block for all clients stops the run; rejected batch releases its items; the
preparer cannot approve; no answer in time rejects by default; a batch changed after it was
shown is not pushed (hash-bound approval); approved batch posted in the ERP
and billed in the PSA with totals to the minor unit; a credit note through the same path; an
accepted milestone billed by the sensor DAG; the task logs and the audit trail of the runs show
every business action with its run id.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

from erpsync.airflow.billing_api import AirflowApi, content_hash_shown
from erpsync.money import round_money
from erpsync.runtime.demo import DagsTestDriver

PERIOD = "2026-10"
PERIOD_END = dt.date(2026, 10, 31)
AS_OF = dt.date(2026, 11, 2)  # the sandbox business clock
FIRM_COUNTRY = "NL"
NL_STANDARD_RATE = Decimal("21")
PASSWORDS = {"admin": "admin-pw", "approver": "approver-pw", "dag_test": "preparer-pw"}
DAG = "erpsync_invoice_batches"
MILESTONE_DAG = "erpsync_milestone_billing"


# --------------------------------------------------------------------------- the firm


def _q(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_warehouse(sandbox, url: str) -> None:
    """Master data, onboarding, time & expense, reconciliation: the real code, in-process."""
    from erpsync.onboarding import setup
    from erpsync.reconcile import run_reconcile
    from erpsync.sync.spec import RunInfo
    from tests.integration import writeback_harness as h

    h.sync_all(url, RunInfo.local("master"))
    with psycopg.connect(url, autocommit=True) as conn:
        setup.run_project_setup(conn, setup.Systems(), run=RunInfo.local("setup"))
    h.sync_time_expense(url, RunInfo.local("time"))
    with psycopg.connect(url) as conn:
        run_reconcile(conn, RunInfo.local("reconcile"), as_of=AS_OF)


def _dirty(sandbox) -> tuple[set[str], set[str]]:
    """PSA project ids and CRM account ids touched by a planted problem (the manifest)."""
    stores = sandbox.ctx.stores
    projects: set[str] = set()
    accounts: set[str] = set()
    for p in sandbox.ctx.manifest()["problems"]:
        res, pid = p["resource"], str(p["id"])
        if res == "Account":
            accounts.add(pid)
        elif res == "Opportunity":
            accounts.add(str((stores["crm"].get("Opportunity", pid) or {}).get("AccountId")))
        elif res == "projects":
            projects.add(pid)
        elif res in ("time_entries", "expenses", "user_assignments"):
            body = stores["psa"].get(res, pid) or {}
            projects.add(str(body.get("project", {}).get("id")))
    return projects, accounts


def expected_invoices(sandbox) -> dict[str, dict]:
    """Per clean T&M contract: the invoice net, tax and total for the period, computed from the
        sandbox's records with the documented rules (docs: README billing section, erpsync.money):
        a time line per role and rate = round(sum of hours x rate), the contracted rate the one in
    effect on the entry's date (``effective_from``); an expense line =
        round(cost x (1 + markup)); tax per invoice = round(net x rate), the Dutch standard rate for
        a Dutch client that is not exempt, none otherwise (export, reverse charge, exempt)."""
    stores = sandbox.ctx.stores
    crm, psa = stores["crm"], stores["psa"]
    dirty_projects, dirty_accounts = _dirty(sandbox)
    roles = {str(u["id"]): (u.get("roles") or [None])[0] for u in psa.scan("users")}
    emails = {str(u["id"]): u.get("email") for u in psa.scan("users")}
    by_project: dict[str, list] = defaultdict(list)
    for e in psa.scan("time_entries"):
        by_project[str(e["project"]["id"])].append(("time", e))
    for e in psa.scan("expenses"):
        by_project[str(e["project"]["id"])].append(("expense", e))
    out: dict[str, dict] = {}
    for opp in crm.scan("Opportunity"):
        project = str(opp.get("PSA_Project_Id__c") or "")
        if not (
            opp.get("IsWon") and project and opp.get("Billing_Model__c") == "Time and Materials"
        ):
            continue
        account = crm.get("Account", opp["AccountId"])
        if project in dirty_projects or opp["AccountId"] in dirty_accounts:
            continue
        currency = opp["CurrencyIsoCode"]
        start = dt.date.fromisoformat(opp["Contract_Start__c"])
        end = min(dt.date.fromisoformat(opp["Contract_End__c"]), PERIOD_END)
        # contracted rates per person, each from its effective_from (none: from the start)
        overrides: dict[str, list[tuple[str, Decimal]]] = defaultdict(list)
        for o in json.loads(opp.get("Rate_Overrides__c") or "[]"):
            overrides[o["user_email"]].append((o.get("effective_from") or "", Decimal(o["rate"])))
        markup = Decimal(str(opp.get("Expense_Markup_Pct__c") or 0))
        hours: dict[tuple, Decimal] = defaultdict(Decimal)
        expense_lines: list[Decimal] = []
        keys: set[str] = set()
        for kind, e in by_project.get(project, []):
            spent = dt.date.fromisoformat(e["spent_date"])
            if not (
                e.get("billable")
                and e.get("is_closed") is True  # approved (Harvest has no approval status)
                and not e.get("is_billed")
                and start <= spent <= end
            ):
                continue
            if kind == "time":
                user = str(e["user"]["id"])
                in_force = [r for d, r in sorted(overrides[emails[user]]) if d <= e["spent_date"]]
                rate = in_force[-1] if in_force else Decimal(str(e["billable_rate"]))
                hours[(roles[user] or "Professional services", rate)] += Decimal(str(e["hours"]))
                keys.add(f"time:{e['id']}")
            else:
                cost = Decimal(str(e["total_cost"]))
                expense_lines.append(round_money(cost * (1 + markup / 100), currency))
                keys.add(f"expense:{e['id']}")
        if not keys:
            continue
        net = sum(
            (round_money(h * rate, currency) for (_role, rate), h in hours.items()), Decimal(0)
        ) + sum(expense_lines, Decimal(0))
        taxed = account["BillingCountryCode"] == FIRM_COUNTRY and not account.get("Tax_Exempt__c")
        tax = round_money(net * NL_STANDARD_RATE / 100, currency) if taxed else Decimal(0)
        out[opp["Id"]] = {
            "account_id": opp["AccountId"],
            "currency": currency,
            "net": round_money(net, currency),
            "tax": round_money(tax, currency),
            "total": round_money(net + tax, currency),
            "keys": keys,
        }
    return out


# --------------------------------------------------------------------------- Airflow


class Billing:
    """The firm, the warehouse and the Airflow processes shared by the scenarios."""

    def __init__(
        self, runtime, sandbox, warehouse: str, env: dict[str, str], port: int, logs: Path
    ) -> None:
        self.runtime = runtime
        self.sandbox = sandbox
        self.url = warehouse
        self.env = env
        self.port = port
        self.logs = logs
        self.outputs: dict[str, str] = {}  # run label -> its ``dags test`` output (task logs)
        self.run_ids: dict[str, str] = {}
        self.driver: DagsTestDriver | None = None
        self.driver_log = logs / "dags-test.log"
        self._n = 0

    @property
    def api_url(self) -> str:
        return f"http://localhost:{self.port}"

    def api(self, user: str) -> AirflowApi:
        return AirflowApi(self.api_url, user, PASSWORDS[user])

    def start_driver(self) -> None:
        """The ``airflow dags test`` runs, one after another in one Airflow CLI interpreter
        (the demo's driver: the CLI's own parser and command function)."""
        self.driver = DagsTestDriver(self.env, self.driver_log, inherit=False)

    def start(self, label: str, dag_id: str, conf: dict | None = None, **extra_env) -> dict:
        """Ask the driver for ``airflow dags test DAG <logical date> [-c conf]``."""
        self._n += 1
        logical = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=self._n)
        args = [logical.isoformat()]
        if conf is not None:
            args += ["-c", json.dumps(conf)]
        self.driver.start(dag_id, args, label=label, env=extra_env)
        return {"label": label, "dag_id": dag_id, "logical": logical}

    def running(self, handle: dict) -> bool:
        return self.driver.running(handle["label"])

    def finish(self, handle: dict, timeout: float = 240) -> dict[str, str]:
        """Wait for the run; return its task states (and record its output and run id)."""
        finished = self.driver.wait(handle["label"], timeout)
        assert finished, f"{handle['label']}: not finished in {timeout} s"
        self.outputs[handle["label"]], _rc = self.driver.output(handle["label"])
        return self.task_states(handle)

    def task_states(self, handle: dict) -> dict[str, str]:
        run_id = _q(
            self.runtime.airflow_url,
            "SELECT run_id FROM dag_run WHERE dag_id = %s AND logical_date = %s",
            (handle["dag_id"], handle["logical"]),
        )[0][0]
        self.run_ids[handle["label"]] = run_id
        return dict(
            _q(
                self.runtime.airflow_url,
                "SELECT task_id, state FROM task_instance WHERE dag_id = %s AND run_id = %s",
                (handle["dag_id"], run_id),
            )
        )

    def answer(self, handle: dict, user: str, option: str, comment: str | None = None):
        with self.api(user) as api:
            pending = api.wait_for_approval(
                handle["dag_id"], timeout=180, alive=lambda: self.running(handle)
            )
            api.answer(pending, option, comment=comment)
        return pending

    def latest_batch(self) -> tuple:
        return _q(
            self.url,
            """SELECT batch_id, kind, status, prepared_by, decided_by, content_hash, decided_hash
                 FROM billing.invoice_batches ORDER BY batch_id DESC LIMIT 1""",
        )[0]

    def erp_invoices(self) -> list[dict]:
        return list(self.sandbox.ctx.stores["erp"].scan("salesInvoices"))


def _airflow_env(runtime, sandbox, warehouse: str, port: int) -> dict[str, str]:
    """The project's Airflow environment (``erpsync env``) for the runtime's metadata database
    and this module's warehouse, plus the sandbox connections, the test users and a fast
    awaiting-input timeout sweep."""
    from erpsync.runtime import airflow_env, database
    from tests.integration.writeback_harness import connection_env

    mp = pytest.MonkeyPatch()
    try:
        for key, value in {**runtime.env, "ERPSYNC_DATABASE_URL": warehouse}.items():
            mp.setenv(key, value)
        urls = database.DatabaseUrls(warehouse, runtime.airflow_url, embedded=False)
        computed = airflow_env.airflow_environment(urls, home=Path(runtime.env["AIRFLOW_HOME"]))
    finally:
        mp.undo()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(runtime.env)
    env["ERPSYNC_DATABASE_URL"] = warehouse
    env.update(computed)
    conns = connection_env(sandbox, warehouse)
    env.update(conns)
    env.update(
        {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ("admin:admin,approver:user,dag_test:user"),
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "1",
            "ERPSYNC_EXPORT_DIR": str(Path(runtime.tmp_dir) / "exports"),
        }
    )
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).write_text(json.dumps(PASSWORDS))
    return env


def _spawn(env: dict[str, str], args: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def billing(airflow_runtime, pg_server_url, tmp_path_factory):
    from erpsync.runtime import database
    from erpsync.warehouse import migrate
    from erpsync_sandbox.serve import start_sandbox
    from tests.conftest import make_database
    from tests.integration.writeback_harness import connection_env

    tmp = tmp_path_factory.mktemp("billing")
    # its own warehouse: the firm synced here must not meet (or leave behind for) the session
    # warehouse's other sandboxes
    warehouse = make_database(pg_server_url, "erpsync_test_billing")
    migrate.migrate(warehouse)
    sandbox = start_sandbox(tmp / "sandbox", size="small", seed=0)
    procs: list[subprocess.Popen] = []
    mp = pytest.MonkeyPatch()
    state = None
    try:
        httpx.put(
            sandbox.urls["psa"] + "/__admin/psa/rate_limit", json={"spec": "off"}, timeout=10
        ).raise_for_status()
        mp.setenv("ERPSYNC_PSA_RATE_LIMIT", "off")  # and the client's (connectors/throttle.py)
        port = _free_port()
        env = _airflow_env(airflow_runtime, sandbox, warehouse, port)
        state = Billing(airflow_runtime, sandbox, warehouse, env, port, tmp)
        # Airflow's processes warm up while the firm is synced into the warehouse
        procs.append(_spawn(env, ["api-server", "--port", str(port)], tmp / "api-server.log"))
        state.start_driver()
        # a month with nothing to bill, run while the firm is synced: it also warms the driver
        state.empty_month = state.start("empty_month", DAG, {"billing_period": "2025-01"})
        for key, value in connection_env(sandbox, warehouse).items():
            mp.setenv(key, value)
        _prepare_warehouse(sandbox, warehouse)
        state.expected = expected_invoices(sandbox)
        # the scheduler (for the approval timeout sweep) warms up during the first scenarios
        procs.append(_spawn(env, ["scheduler"], tmp / "scheduler.log"))
        state.scheduler = procs[-1]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{state.api_url}/api/v2/monitor/health", timeout=5).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert procs[0].poll() is None, (tmp / "api-server.log").read_text()[-3000:]
            time.sleep(1)
        yield state
    finally:
        mp.undo()
        if state is not None and state.driver is not None:
            try:
                state.driver.proc.stdin.close()
            except OSError:
                pass
            procs.append(state.driver.proc)
        for proc in procs:  # all at once, one shared grace period, then the rest killed
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        grace = time.monotonic() + 3
        while time.monotonic() < grace and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        sandbox.stop()
        database.drop_database(warehouse)


def _ready_clients(billing, n: int, exclude: set[str] = frozenset()) -> list[str]:
    """Accounts with ready items in the period (clean ones first: their totals are checked)."""
    ready = {
        r[0]
        for r in _q(
            billing.url,
            """SELECT DISTINCT account_id FROM recon.items
                WHERE state = 'ready' AND item_date <= %s AND item_type IN ('time', 'expense')""",
            (PERIOD_END,),
        )
    }
    clean = sorted({e["account_id"] for e in billing.expected.values()} & ready - exclude)
    return clean[:n]


# --------------------------------------------------------------------------- the scenarios


def test_a_month_with_nothing_to_bill_asks_nobody(billing):
    states = billing.finish(billing.empty_month)
    assert states["build_batch"] == "success" and states["needs_approval"] == "success"
    for task_id in ("approve_batch", "record_decision", "push_to_erp", "export_files"):
        assert states[task_id] == "skipped", (task_id, states)
    assert states["report"] == "success"
    assert "nothing to invoice in this run: no approval is asked" in billing.outputs["empty_month"]
    assert _q(
        billing.url,
        "SELECT count(*) FROM audit.audit_log WHERE source_run_id = %s "
        "AND action LIKE 'invoice_batch.%%'",
        (billing.run_ids["empty_month"],),
    ) == [(1,)]  # invoice_batch.nothing_to_bill


def test_dry_run_builds_and_reports_without_asking_or_pushing(billing):
    erp_before = len(billing.erp_invoices())
    run = billing.start("dry_run", DAG, {"billing_period": PERIOD, "dry_run": True})
    states = billing.finish(run)
    assert states["build_batch"] == "success"
    assert states["needs_approval"] == "success"
    for task_id in ("approve_batch", "record_decision", "push_to_erp", "export_files"):
        assert states[task_id] == "skipped", (task_id, states)
    assert states["report"] == "success"
    batch_id, kind, status, prepared_by, decided_by, _h, _d = billing.latest_batch()
    assert (kind, status, prepared_by, decided_by) == ("period", "dry_run", "dag_test", None)
    assert _q(billing.url, "SELECT count(*) FROM billing.batch_items WHERE active") == [(0,)]
    assert len(billing.erp_invoices()) == erp_before
    out = billing.outputs["dry_run"]
    assert "dry run: built and reported only" in out
    assert f"billing report for period batch {batch_id}" in out
    assert "dry run: reported only, nothing pushed" in out


def test_a_critical_data_quality_failure_for_all_clients_stops_the_run(billing):
    batches = _q(billing.url, "SELECT count(*) FROM billing.invoice_batches")
    with psycopg.connect(billing.url) as conn:
        conn.execute(
            """INSERT INTO ops.dq_blocks (scope_type, scope_key, suite, expectation, detail,
                   status, first_run_id, last_run_id)
               VALUES ('all', '*', 'core_time_entries', 'expect_rates_present', '{}', 'active',
                       'test', 'test')"""
        )
    try:
        run = billing.start("dq_blocked", DAG, {"billing_period": PERIOD})
        states = billing.finish(run)
    finally:
        with psycopg.connect(billing.url) as conn:
            conn.execute(
                "UPDATE ops.dq_blocks SET status = 'cleared', cleared_at = now() "
                "WHERE first_run_id = 'test'"
            )
    assert states["dq_gate"] == "failed"
    assert states["build_batch"] == "upstream_failed"
    assert _q(billing.url, "SELECT count(*) FROM billing.invoice_batches") == batches
    out = billing.outputs["dq_blocked"]
    assert "invoicing is blocked for every client" in out
    assert "expect_rates_present" in out


def test_rejected_batch_releases_its_items(billing):
    client = _ready_clients(billing, 1)[0]
    billing.reject_client = client
    run = billing.start("reject", DAG, {"billing_period": PERIOD, "clients": [client]})
    pending = billing.answer(run, "approver", "Reject", comment="hours look wrong")
    states = billing.finish(run)
    assert states["approve_batch"] == "success"
    assert states["record_decision"] == "success"
    assert states["push_to_erp"] == "skipped" and states["export_files"] == "skipped"
    assert states["report"] == "success"
    batch_id, _k, status, prepared_by, decided_by, chash, _d = billing.latest_batch()
    assert (status, prepared_by, decided_by) == ("rejected", "dag_test", "approver")
    assert content_hash_shown(pending.body) == chash  # the approver saw the batch's hash
    assert "|" in pending.body and pending.options == ["Approve", "Reject"]  # Markdown table
    released = _q(
        billing.url,
        "SELECT count(*) FILTER (WHERE active), count(*) FROM billing.batch_items "
        "WHERE batch_id = %s",
        (batch_id,),
    )[0]
    assert released[0] == 0 and released[1] > 0
    assert "its items are released for the next run" in billing.outputs["reject"]


def test_the_preparer_cannot_approve_their_own_batch(billing):
    """A refusal followed by an approval by a second person in one run, with no manual
    clearing: the preparer's Approve is refused (maker-checker) and audited, Airflow asks again
    (a new try of the approval task: a new Required Action with the current summary and hash),
    and the second person's approval is pushed."""
    crm = billing.sandbox.ctx.stores["crm"]
    client = sorted(
        {
            r[0]
            for r in _q(
                billing.url,
                "SELECT DISTINCT account_id FROM recon.items WHERE state = 'ready' "
                "AND item_date <= %s",
                (PERIOD_END,),
            )
            if crm.get("Account", r[0])["BillingCountryCode"] != FIRM_COUNTRY
        }
        - {e["account_id"] for e in billing.expected.values()}
    )[0]  # not a contract whose total is checked, not the domestic (taxed) client
    billing.maker_client = client
    run = billing.start("maker_checker", DAG, {"billing_period": PERIOD, "clients": [client]})
    first = billing.answer(run, "dag_test", "Approve")  # the user who triggered the run
    second = billing.answer(run, "approver", "Approve", comment="four eyes")
    states = billing.finish(run)
    assert set(states.values()) == {"success"}, states
    batch_id, _k, status, prepared_by, decided_by, chash, decided_hash = billing.latest_batch()
    assert (status, prepared_by, decided_by) == ("released", "dag_test", "approver")
    assert content_hash_shown(first.body) == content_hash_shown(second.body) == chash
    assert chash == decided_hash
    assert "asked again, 1 answer(s) refused" in second.subject
    assert "cannot also approve it (maker-checker)" in second.body
    out = billing.outputs["maker_checker"]
    assert "dag_test prepared batch" in out and "cannot also approve it (maker-checker)" in out
    trail = _q(
        billing.url,
        "SELECT action, actor, detail FROM audit.audit_log WHERE entity_id = %s "
        "AND source_run_id = %s AND action LIKE 'invoice_batch.approv%%' ORDER BY audit_id",
        (str(batch_id), billing.run_ids["maker_checker"]),
    )
    assert [(a, actor) for a, actor, _d in trail if a != "invoice_batch.approval_requested"] == [
        ("invoice_batch.approval_refused", "dag_test"),
        ("invoice_batch.approved", "approver"),
    ]
    asked = [d for a, _actor, d in trail if a == "invoice_batch.approval_requested"]
    assert [d["ask"] for d in asked] == [1, 2] and {d["content_hash"] for d in asked} == {chash}
    refused = next(d for a, _actor, d in trail if a == "invoice_batch.approval_refused")
    assert refused["reason"] == "maker_checker" and refused["shown_hash"] == chash
    billing.maker_batch = batch_id


def test_no_answer_in_time_rejects_by_default(billing):
    client = _ready_clients(billing, 2)[1]
    billing.timeout_client = client
    run = billing.start(
        "timeout",
        DAG,
        {"billing_period": PERIOD, "clients": [client]},
        ERPSYNC_APPROVAL_TIMEOUT="3s",
    )
    states = billing.finish(run, timeout=180)
    assert states["approve_batch"] == "success"
    assert states["record_decision"] == "success"
    assert states["push_to_erp"] == "skipped"
    batch_id, _k, status, _p, decided_by, _h, _d = billing.latest_batch()
    assert (status, decided_by) == ("rejected", "airflow:response_timeout")
    assert _q(
        billing.url,
        "SELECT count(*) FROM billing.batch_items WHERE batch_id = %s AND active",
        (batch_id,),
    ) == [(0,)]
    assert "response timeout, default Reject" in billing.outputs["timeout"]
    _stop(billing.scheduler)  # only its awaiting-input timeout sweep was needed


def test_a_batch_changed_after_it_was_shown_is_not_pushed(billing):
    """An approval for a hash the batch no longer has is refused; the same run asks again with
    the current summary and hash, and the next answer (a rejection here) is recorded."""
    client = _ready_clients(billing, 3)[2]
    billing.changed_client = client
    erp_before = len(billing.erp_invoices())
    run = billing.start("changed", DAG, {"billing_period": PERIOD, "clients": [client]})
    with billing.api("approver") as api:
        pending = api.wait_for_approval(DAG, timeout=180, alive=lambda: billing.running(run))
        batch_id, *_rest, shown_hash, _d = billing.latest_batch()
        assert content_hash_shown(pending.body) == shown_hash
        with psycopg.connect(billing.url) as conn:  # someone edits the draft meanwhile
            conn.execute(
                """UPDATE billing.invoice_lines SET description = description || ' (edited)'
                    WHERE invoice_id IN (SELECT invoice_id FROM billing.invoices
                                          WHERE batch_id = %s)""",
                (batch_id,),
            )
        api.answer(pending, "Approve")
    # asked again, in the same run, with the batch as it is now
    again = billing.answer(run, "approver", "Reject", comment="changed after review")
    states = billing.finish(run)
    assert states["approve_batch"] == "success" and states["record_decision"] == "success"
    assert states["push_to_erp"] == "skipped"
    assert len(billing.erp_invoices()) == erp_before
    assert "changed after it was shown to approver" in billing.outputs["changed"]
    new_hash = content_hash_shown(again.body)
    assert new_hash and new_hash != shown_hash and "asked again" in again.subject
    assert "changed after it was shown to approver" in again.body  # the refused answer
    assert _q(
        billing.url,
        "SELECT status, decided_by, decided_hash FROM billing.invoice_batches WHERE batch_id = %s",
        (batch_id,),
    ) == [("rejected", "approver", new_hash)]
    refused = _q(
        billing.url,
        "SELECT detail ->> 'reason', detail ->> 'shown_hash', detail ->> 'current_hash' "
        "FROM audit.audit_log WHERE action = 'invoice_batch.approval_refused' "
        "AND entity_id = %s",
        (str(batch_id),),
    )
    assert refused == [("batch_changed", shown_hash, new_hash)]


def test_approved_batch_is_posted_in_the_erp_and_billed_in_the_psa(billing):
    erp_before = {i["id"] for i in billing.erp_invoices()}
    run = billing.start("approve", DAG, {"billing_period": PERIOD})
    pending = billing.answer(run, "approver", "Approve", comment="checked")
    states = billing.finish(run)
    assert set(states.values()) == {"success"}, states
    batch_id, _k, status, prepared_by, decided_by, chash, decided_hash = billing.latest_batch()
    assert (status, prepared_by, decided_by) == ("released", "dag_test", "approver")
    assert content_hash_shown(pending.body) == chash == decided_hash
    billing.e2e_batch = batch_id

    invoices = _q(
        billing.url,
        """SELECT invoice_id, document_number, account_id, opportunity_id, currency::text, net,
                  tax, total, status, erp_invoice_id, erp_number
             FROM billing.invoices WHERE batch_id = %s""",
        (batch_id,),
    )
    assert invoices and {r[8] for r in invoices} == {"billed_back"}
    erp = {i["externalDocumentNumber"]: i for i in billing.erp_invoices()}
    new_docs = [i for i in billing.erp_invoices() if i["id"] not in erp_before]
    assert len(new_docs) == len(invoices)  # each invoice in the ERP exactly once
    for _iid, doc, _acc, _opp, cur, net, tax, total, _s, erp_id, erp_number in invoices:
        e = erp[doc]
        assert (e["id"], e["number"]) == (erp_id, erp_number)
        assert e["currencyCode"] == cur and e["status"] != "Draft"
        assert Decimal(str(e["totalAmountExcludingTax"])) == round_money(net, cur)
        assert Decimal(str(e["totalTaxAmount"])) == round_money(tax, cur)
        assert Decimal(str(e["totalAmountIncludingTax"])) == round_money(total, cur)

    # hand-computed from the sandbox's records, to the minor unit, per contract
    by_opp = {r[3]: r for r in invoices}
    checked = 0
    for opp_id, want in billing.expected.items():
        if want["account_id"] == billing.maker_client:
            continue  # reserved by the batch its preparer could not approve
        assert opp_id in by_opp, f"contract {opp_id} ({want}) was not invoiced"
        e = erp[by_opp[opp_id][1]]
        got = (
            Decimal(str(e["totalAmountExcludingTax"])),
            Decimal(str(e["totalTaxAmount"])),
            Decimal(str(e["totalAmountIncludingTax"])),
        )
        assert got == (want["net"], want["tax"], want["total"]), (opp_id, want, e)
        checked += 1
    assert checked >= 5
    # tax of every invoice from the client's CRM tax profile: Dutch standard rate for a Dutch
    # client that is not exempt, none for export, reverse charge (EU B2B) and exempt clients
    crm = billing.sandbox.ctx.stores["crm"]
    taxed = 0
    for _iid, doc, account_id, _opp, cur, net, *_rest in invoices:
        account = crm.get("Account", account_id)
        domestic = account["BillingCountryCode"] == FIRM_COUNTRY and not account["Tax_Exempt__c"]
        want_tax = round_money(net * NL_STANDARD_RATE / 100, cur) if domestic else Decimal(0)
        assert Decimal(str(erp[doc]["totalTaxAmount"])) == want_tax, (doc, account_id)
        taxed += want_tax > 0
    assert taxed >= 1
    # the rejected and timed-out clients' items were released and are billed now
    assert {billing.reject_client, billing.timeout_client, billing.changed_client} <= {
        r[2] for r in invoices
    }

    # every item of the posted invoices is in erpsync's billed ledger; Harvest shows the billed
    # state as Harvest documents it: a Harvest invoice (numbered as the ERP invoice) that
    # imported exactly the invoice's items (harvest_invoiced), or no Harvest write (ledger_only)
    billed = {
        r[0]
        for r in _q(
            billing.url,
            "SELECT item_key FROM billing.billed_items WHERE run_id = %s",
            (billing.run_ids["approve"],),
        )
    }
    states = _q(
        billing.url,
        """SELECT s.invoice_id, s.status, s.harvest_invoice_id, s.erp_number, s.erpsync_items
             FROM billing.psa_billed_state s WHERE s.invoice_id = ANY(%s)""",
        ([r[0] for r in invoices],),
    )
    assert {r[0] for r in states} == {r[0] for r in invoices}
    assert {r[1] for r in states} <= {"harvest_invoiced", "ledger_only"}, states
    # the seeded firm has both: contracts whose period holds exactly the billed items, and
    # contracts with other uninvoiced items in the window (Harvest is then left alone)
    assert {r[1] for r in states} == {"harvest_invoiced", "ledger_only"}, states
    psa = billing.sandbox.ctx.stores["psa"]
    for _iid, status, harvest_id, number, items in states:
        assert set(items) <= billed
        for key in items:
            kind, _, pid = key.partition(":")
            body = psa.get("time_entries" if kind == "time" else "expenses", pid)
            if status == "harvest_invoiced":
                assert body["is_billed"] and body["invoice"] == {
                    "id": int(harvest_id),
                    "number": number,
                }, key
            else:
                assert (body.get("invoice") or {}).get("number") != number, key
    numbers = {r[3]: r for r in states}
    harvest = [i for i in psa.scan("invoices") if i["number"] in numbers]
    assert sorted(str(i["id"]) for i in harvest) == sorted(
        r[2] for r in states if r[1] == "harvest_invoiced"
    )
    for want in billing.expected.values():
        if want["account_id"] != billing.maker_client:
            assert want["keys"] <= billed
    exported = _q(
        billing.url, "SELECT count(*) FROM billing.invoices WHERE batch_id = %s", (batch_id,)
    )[0][0]
    files = list((Path(billing.env["ERPSYNC_EXPORT_DIR"]) / str(batch_id)).iterdir())
    assert {f.suffix for f in files} >= {".csv", ".json"} and exported > 0


def test_credit_note_goes_through_the_same_approval_and_push(billing):
    doc, erp_number, total, cur = _q(
        billing.url,
        """SELECT document_number, erp_number, total, currency::text FROM billing.invoices
            WHERE batch_id = %s AND status = 'billed_back' ORDER BY invoice_id LIMIT 1""",
        (billing.e2e_batch,),
    )[0]
    run = billing.start(
        "credit_note",
        DAG,
        {"credit_note_for": erp_number, "credit_note_reason": "Rate agreed lower after review"},
    )
    billing.answer(run, "approver", "Approve")
    states = billing.finish(run)
    assert set(states.values()) == {"success"}, states
    batch_id, kind, status, _p, decided_by, _h, _d = billing.latest_batch()
    assert (kind, status, decided_by) == ("credit_note", "released", "approver")
    credit = _q(
        billing.url,
        """SELECT c.total, c.erp_number, o.document_number FROM billing.invoices c
             JOIN billing.invoices o ON o.invoice_id = c.credit_of_invoice_id
            WHERE c.batch_id = %s""",
        (batch_id,),
    )
    assert len(credit) == 1 and credit[0][2] == doc and credit[0][1]
    assert abs(Decimal(credit[0][0])) == Decimal(total)
    billing.credit_batch = batch_id


def test_a_partial_credit_note_end_to_end(billing):
    """A partial credit note from the form (one whole line, part of another) through the same
    approval and push: its own ERP credit memo with its own lines referencing the posted
    invoice, the ledger and PSA billed state of the credited items, the audit trail and the
    export."""
    from erpsync.money import quantum

    inv_id, doc, erp_id, erp_number, cur = _q(
        billing.url,
        """SELECT i.invoice_id, i.document_number, i.erp_invoice_id, i.erp_number,
                  i.currency::text
             FROM billing.invoices i
            WHERE i.batch_id = %s AND i.status = 'billed_back'
              AND NOT EXISTS (SELECT 1 FROM billing.invoices c
                               WHERE c.credit_of_invoice_id = i.invoice_id)
              AND (SELECT count(*) FROM billing.invoice_lines l
                    WHERE l.invoice_id = i.invoice_id) >= 2
            ORDER BY i.tax = 0 DESC, i.invoice_id LIMIT 1""",
        (billing.e2e_batch,),
    )[0]
    lines = _q(
        billing.url,
        "SELECT line_no, net_amount, item_keys FROM billing.invoice_lines WHERE invoice_id = %s "
        "ORDER BY line_no",
        (inv_id,),
    )
    (whole_no, whole_net, whole_keys), (part_no, _net, _keys) = lines[0], lines[1]
    part = quantum(cur) * 3
    psa = billing.sandbox.ctx.stores["psa"]

    def psa_state(key: str):
        kind, _, pid = key.partition(":")
        body = psa.get("time_entries" if kind == "time" else "expenses", pid) or {}
        return body.get("is_billed"), body.get("invoice")

    before = {k: psa_state(k) for k in whole_keys}
    run = billing.start(
        "partial_credit",
        DAG,
        {
            "credit_note_for": erp_number,
            "credit_note_reason": "Travel not rebillable; rate corrected",
            "credit_note_lines": [str(whole_no), f"{part_no}:{part}"],
        },
    )
    pending = billing.answer(run, "approver", "Approve")
    states = billing.finish(run)
    assert set(states.values()) == {"success"}, states
    batch_id, kind, status, _p, decided_by, chash, _d = billing.latest_batch()
    assert (kind, status, decided_by) == ("credit_note", "released", "approver")
    assert content_hash_shown(pending.body) == chash
    credit_id, credit_doc, net, total, credit_erp_number = _q(
        billing.url,
        """SELECT invoice_id, document_number, net, total, erp_number FROM billing.invoices
            WHERE batch_id = %s AND credit_of_invoice_id = %s""",
        (batch_id, inv_id),
    )[0]
    assert net == -(whole_net + part)

    # the ERP: its own credit memo, its own lines, referencing the posted invoice
    memos = [
        m
        for m in billing.sandbox.ctx.stores["erp"].scan("salesCreditMemos")
        if m["externalDocumentNumber"] == credit_doc
    ]
    assert len(memos) == 1
    memo = memos[0]
    assert (memo["invoiceId"], memo["invoiceNumber"]) == (erp_id, erp_number)
    assert memo["status"] == "Open" and memo["number"] == credit_erp_number
    assert Decimal(str(memo["totalAmountExcludingTax"])) == -net
    memo_lines = billing.sandbox.ctx.stores["erp"].scan(
        "salesCreditMemoLines", where={"parent_id": memo["id"]}
    )
    assert sorted(Decimal(str(m["amountExcludingTax"])) for m in memo_lines) == sorted(
        [whole_net, part]
    )
    invoice = billing.sandbox.ctx.stores["erp"].get("salesInvoices", erp_id)
    assert invoice["status"] != "Corrective"  # partly credited

    # the ledger and the PSA: the items stay billed by the invoice; the wholly credited line's
    # items are credited by the credit note; Harvest is not written
    assert _q(
        billing.url,
        "SELECT DISTINCT invoice_id FROM billing.billed_items WHERE item_key = ANY(%s)",
        (list(whole_keys),),
    ) == [(inv_id,)]
    assert sorted(
        r[0]
        for r in _q(
            billing.url,
            "SELECT item_key FROM billing.credited_items WHERE credit_invoice_id = %s",
            (credit_id,),
        )
    ) == sorted(whole_keys)
    assert _q(
        billing.url,
        "SELECT status, erpsync_items FROM billing.psa_billed_state WHERE invoice_id = %s",
        (credit_id,),
    ) == [("credit_note", sorted(whole_keys))]
    assert {k: psa_state(k) for k in whole_keys} == before

    # the audit trail of the run, and the export
    actions = {
        r[0]
        for r in _q(
            billing.url,
            "SELECT action FROM audit.audit_log WHERE source_run_id = %s",
            (billing.run_ids["partial_credit"],),
        )
    }
    assert {"credit_note.prepared", "invoice_batch.approved", "invoice.posted"} <= actions
    out = Path(billing.env["ERPSYNC_EXPORT_DIR"]) / str(batch_id)
    exported = json.loads((out / "batch.json").read_text())
    [row] = exported["invoices"]
    assert (row["kind"], row["credit_of_document_number"], row["erp_number"]) == (
        "credit_note",
        doc,
        credit_erp_number,
    )
    assert Decimal(row["net"]) == net and Decimal(row["total"]) == total
    assert [ln["credit_of_line_no"] for ln in row["lines"]] == [whole_no, part_no]


def test_accepted_milestone_is_billed_through_the_same_path(billing):
    """The client accepts a fixed-fee milestone in the CRM (Contract_Milestone__c; Harvest has
    no milestones): the milestone DAG's sensor pulls it, the batch is approved and pushed, and
    the CRM record ends Invoiced with the posted ERP number."""
    crm = billing.sandbox.ctx.stores["crm"]
    ours = {
        str(r[0]): r[1:]
        for r in _q(
            billing.url,
            """SELECT m.crm_milestone_id, m.opportunity_id, m.version, m.seq, m.amount,
                      m.currency::text
                 FROM core.contract_milestones m
                 JOIN core.contracts c USING (opportunity_id, version)
                WHERE c.status = 'complete' AND m.crm_milestone_id IS NOT NULL""",
        )
    }
    row = next(
        r
        for r in crm.scan_rows("Contract_Milestone__c")
        if r.id in ours and r.data()["Status__c"] == "Planned"
    )
    opp_id, version, seq, amount, cur = ours[row.id]
    # the client accepts the milestone in the CRM
    accepted = {**row.data(), "Status__c": "Accepted", "Accepted_Date__c": "2026-11-02"}
    crm.put("Contract_Milestone__c", row.id, accepted, parent_id=row.parent_id)
    run = billing.start("milestone", MILESTONE_DAG)
    billing.answer(run, "approver", "Approve")
    states = billing.finish(run)
    assert set(states.values()) == {"success"}, states
    batch_id, kind, status, _p, decided_by, _h, _d = billing.latest_batch()
    assert (kind, status, decided_by) == ("milestone", "released", "approver")
    key = f"milestone:{opp_id}:{version}:{seq}"
    assert _q(
        billing.url, "SELECT count(*) FROM billing.billed_items WHERE item_key = %s", (key,)
    ) == [(1,)]
    ((net, erp_number),) = _q(
        billing.url,
        "SELECT net, erp_number FROM billing.invoices WHERE batch_id = %s",
        (batch_id,),
    )
    assert round_money(Decimal(net), cur) == round_money(Decimal(amount), cur) and erp_number
    assert key in billing.outputs["milestone"]
    billed = crm.get("Contract_Milestone__c", row.id)
    assert (billed["Status__c"], billed["Invoice_Number__c"]) == ("Invoiced", erp_number)
    assert _q(
        billing.url, "SELECT outcome FROM billing.push_crm_marks WHERE item_key = %s", (key,)
    ) == [("marked",)]


def test_logs_and_audit_trail_show_every_business_action(billing):
    def actions(label: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for action, actor in _q(
            billing.url,
            "SELECT action, actor FROM audit.audit_log WHERE source_run_id = %s",
            (billing.run_ids[label],),
        ):
            found[action].add(actor)
        return found

    approve = actions("approve")
    assert approve["invoice_batch.prepared"]
    assert approve["invoice_batch.approved"] == {"approver"}
    for action in (
        "invoice.pushed",
        "invoice.posted",
        "invoice.billed_back",
        "invoice_batch.released",
    ):
        assert approve[action], action
    assert actions("reject")["invoice_batch.rejected"] == {"approver"}
    assert actions("timeout")["invoice_batch.rejected"] == {"airflow:response_timeout"}
    assert actions("maker_checker")["invoice_batch.approval_refused"] == {"dag_test"}
    credit = actions("credit_note")
    assert credit["credit_note.prepared"] and credit["invoice.posted"]
    assert actions("milestone")["invoice_batch.approved"] == {"approver"}

    log = billing.outputs["approve"]
    run_id = billing.run_ids["approve"]
    assert run_id in log
    for needle in (
        "build_batch: period batch",
        "prepared by dag_test",
        "record_decision: batch",
        "approved by approver",
        "push_to_erp: batch",
        "posted",
        "billed_back",
        "export_files: batch",
        "billing report for period batch",
        "  read:",
        "  changed:",
        "  held:",
        "  pushed:",
    ):
        assert needle in log, needle
    assert "rejected by approver" in billing.outputs["reject"]

    # the summary `erpsync demo --once` prints after the chain
    from erpsync.runtime.demo import billing_summary

    summary = "\n".join(billing_summary(billing.url))
    assert "invoices per client and currency" in summary and "items held, by reason" in summary
    assert "TOTAL" in summary and "not_approved" in summary
    assert "credit_note batch" in billing.outputs["credit_note"]
