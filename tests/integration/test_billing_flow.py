"""The billing DAGs' shape and the flow's small rules, without a database or a DAG run (the runs
are in test_billing_e2e.py):

* the invoice-batch DAG runs monthly in the firm's time zone and on demand with a form; the run
  bills the month before its date *in the firm's zone*;
* the approval is Airflow's human-in-the-loop task: Approve / Reject, default Reject after the
  response timeout (72 h unless ``ERPSYNC_APPROVAL_TIMEOUT`` says otherwise);
* the milestone DAG waits with a reschedule-mode sensor (no worker slot held) and bills through
  the very same task code as the invoice-batch DAG (one factory, not a copy).
"""

from __future__ import annotations

import importlib.util
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest

from erpsync.airflow import billing_tasks
from erpsync.airflow.billing_api import content_hash_shown
from erpsync.airflow.sync_dags import FIRM_TIMEZONE

DAGS = Path(__file__).resolve().parents[2] / "dags"
SHARED = [
    "dq_gate",
    "build_batch",
    "needs_approval",
    "approve_batch",  # the first ask; a refused answer is asked again by the next ones
    "approve_batch_2",
    "approve_batch_3",
    "record_decision",
    "push_to_erp",
    "export_files",
    "report",
]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_billing_{name}", DAGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture(scope="module")
def invoice_dag():
    return _load("erpsync_invoice_batches")


@pytest.fixture(scope="module")
def milestone_dag():
    return _load("erpsync_milestone_billing")


def _context(params=None, user=None, when="2026-11-25T10:00:00+00:00"):
    return {
        "params": params or {},
        "dag_run": SimpleNamespace(triggering_user_name=user, run_after=None),
        "logical_date": pendulum.parse(when),
    }


def test_months_and_durations():
    assert billing_tasks.month_bounds("2026-10") == (date(2026, 10, 1), date(2026, 10, 31))
    assert billing_tasks.month_bounds("2028-02") == (date(2028, 2, 1), date(2028, 2, 29))
    assert billing_tasks.month_bounds("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
    for bad in ("2026-13", "10-2026", "2026/10", ""):
        with pytest.raises(ValueError):
            billing_tasks.month_bounds(bad)
    assert billing_tasks.previous_month(date(2026, 1, 15)) == (
        date(2025, 12, 1),
        date(2025, 12, 31),
    )


def test_approval_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("ERPSYNC_APPROVAL_TIMEOUT", raising=False)
    assert billing_tasks.approval_timeout() == timedelta(hours=72)
    for raw, want in (("90", 90), ("90s", 90), ("30m", 1800), ("72h", 259200), ("5d", 432000)):
        monkeypatch.setenv("ERPSYNC_APPROVAL_TIMEOUT", raw)
        assert billing_tasks.approval_timeout() == timedelta(seconds=want)
    monkeypatch.setenv("ERPSYNC_APPROVAL_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="ERPSYNC_APPROVAL_TIMEOUT"):
        billing_tasks.approval_timeout()


def test_a_run_bills_the_month_before_its_date_in_the_firm_time_zone():
    # 03:00 UTC on 1 December is still 30 November in New York: the run bills October
    ctx = _context(when="2026-12-01T03:00:00+00:00")
    assert FIRM_TIMEZONE == "America/New_York"
    request = billing_tasks.plan_period_run(ctx, FIRM_TIMEZONE)
    assert (request["period_start"], request["period_end"]) == ("2026-10-01", "2026-10-31")
    assert request["kind"] == "period" and request["dry_run"] is False
    assert billing_tasks.prepared_by(ctx) == "scheduler"
    # the form: period, clients, billing types, dry run; the triggering user prepares
    ctx = _context(
        {
            "billing_period": "2026-09",
            "clients": [" 001A ", "", "001B"],
            "billing_types": ["time", "expense"],
            "dry_run": True,
        },
        user="finance.ops",
    )
    request = billing_tasks.plan_period_run(ctx, FIRM_TIMEZONE)
    assert request == {
        "kind": "period",
        "period_start": "2026-09-01",
        "period_end": "2026-09-30",
        "clients": ["001A", "001B"],
        "billing_types": ["time", "expense"],
        "dry_run": True,
    }
    assert billing_tasks.prepared_by(ctx) == "finance.ops"


def test_form_mistakes_are_refused_with_the_reason():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=r"^Billing types \(billing_types\): unknown"):
        billing_tasks.plan_period_run(_context({"billing_types": ["hours"]}), FIRM_TIMEZONE)
    with pytest.raises(AirflowFailException, match=r"^Billing period \(billing_period\).*01\.\.12"):
        billing_tasks.plan_period_run(_context({"billing_period": "2026-13"}), FIRM_TIMEZONE)
    with pytest.raises(AirflowFailException, match=r"^Billing period \(billing_period\).*YYYY-MM"):
        billing_tasks.plan_period_run(_context({"billing_period": "13/2026"}), FIRM_TIMEZONE)
    with pytest.raises(AirflowFailException, match=r"^Clients \(clients\): expected a list"):
        billing_tasks.plan_period_run(_context({"clients": 42}), FIRM_TIMEZONE)
    with pytest.raises(AirflowFailException, match="needs a reason"):
        billing_tasks.plan_period_run(_context({"credit_note_for": "INV-1"}), FIRM_TIMEZONE)
    request = billing_tasks.plan_period_run(
        _context({"credit_note_for": "PSI-1", "credit_note_reason": "wrong rate"}), FIRM_TIMEZONE
    )
    assert request["kind"] == "credit_note" and request["credit_note_for"] == "PSI-1"
    assert "credit_note_lines" not in request  # the whole invoice
    request = billing_tasks.plan_period_run(
        _context(
            {
                "credit_note_for": "PSI-1",
                "credit_note_reason": "rate",
                "credit_note_lines": ["2", " 1 : 150.50 "],
            }
        ),
        FIRM_TIMEZONE,
    )
    assert request["credit_note_lines"] == [{"line_no": 2}, {"line_no": 1, "amount": "150.50"}]
    for bad in (["x"], ["0"], ["1:0"]):
        with pytest.raises(AirflowFailException, match=r"^Credit note lines \(credit_note_lines\)"):
            billing_tasks.plan_period_run(
                _context(
                    {
                        "credit_note_for": "PSI-1",
                        "credit_note_reason": "r",
                        "credit_note_lines": bad,
                    }
                ),
                FIRM_TIMEZONE,
            )
    with pytest.raises(AirflowFailException, match="fill 'Credit note for'"):
        billing_tasks.plan_period_run(_context({"credit_note_lines": ["2"]}), FIRM_TIMEZONE)


def test_dry_runs_and_empty_batches_ask_nobody():
    assert billing_tasks.needs_approval({"dry_run": True, "invoices": 4}) is False
    assert billing_tasks.needs_approval({"dry_run": False, "invoices": 0}) is False
    assert billing_tasks.needs_approval({"dry_run": False, "invoices": 3}) is True


def test_report_lines_show_totals_and_holds_per_currency():
    totals = {"USD": {"total": "1200.5"}, "EUR": {"total": "10"}}
    assert billing_tasks.totals_line(totals) == "EUR 10; USD 1,200.5"
    held = {"over_cap": {"items": 3, "amounts": {"EUR": "12.30"}}, "missing_rate": {"items": 1}}
    assert billing_tasks.held_line(held) == "missing_rate 1, over_cap 3 (EUR 12.30)"
    assert billing_tasks.held_line({}) == "none"
    body = "... Content hash `0123456789abcdef0123`: approving ..."
    assert content_hash_shown(body) == "0123456789abcdef0123"


def test_invoice_dag_is_monthly_in_the_firm_zone_with_a_form(invoice_dag):
    assert invoice_dag.timetable.expression == "0 6 2 * *"
    zone = invoice_dag.timetable.timezone
    assert getattr(zone, "name", zone) == FIRM_TIMEZONE
    params = invoice_dag.params
    assert {"billing_period", "clients", "billing_types", "dry_run"} <= set(params.keys())
    assert params["dry_run"] is False
    assert params["clients"] is None and params["billing_types"] is None


def test_form_optional_fields_are_optional_and_bad_values_are_refused(invoice_dag):
    """Empty Clients / Billing types mean "all": their Params allow null, which is what makes a
    typed field optional in Airflow's form (Params docs; example_params_ui_tutorial.py). A bad
    period or billing type is refused by the form's schema, naming the field, before any run."""
    import copy

    from airflow.sdk.definitions.param import ParamValidationError

    for name in ("billing_period", "clients", "billing_types", "credit_note_for"):
        schema = invoice_dag.params.get_param(name).schema
        assert "null" in schema["type"], name
    params = copy.deepcopy(invoice_dag.params)
    assert params.validate()["clients"] is None  # a scheduled run: every client and type
    for conf, field in (
        ({"billing_period": "2026-13"}, "billing_period"),
        ({"billing_types": ["time", "hours"]}, "billing_types"),
        ({"clients": "001A"}, "clients"),
    ):
        params = copy.deepcopy(invoice_dag.params)
        with pytest.raises(ParamValidationError, match=f"param {field}"):
            params.update(conf)  # a form value is validated as it is set
            params.validate()
    params = copy.deepcopy(invoice_dag.params)
    params.update({"billing_period": "2026-12", "clients": [], "billing_types": ["time"]})
    assert params.validate()["billing_types"] == ["time"]
    # the planner treats null like empty: all clients, all types
    request = billing_tasks.plan_period_run(
        _context({"billing_period": "2026-12", "clients": None, "billing_types": None}),
        FIRM_TIMEZONE,
    )
    assert request["clients"] == [] and request["billing_types"] == []
    assert "Required Actions" in invoice_dag.doc_md and "Dry run" in invoice_dag.doc_md
    assert set(invoice_dag.task_dict) == {"plan_billing_run", *SHARED}


def test_the_approval_defaults_to_reject_after_the_timeout(invoice_dag):
    from airflow.providers.standard.operators.hitl import HITLOperator

    for task_id in ("approve_batch", "approve_batch_2", "approve_batch_3"):
        approve = invoice_dag.task_dict[task_id]
        assert isinstance(approve, HITLOperator)
        assert approve.options == ["Approve", "Reject"] and approve.defaults == ["Reject"]
        assert approve.response_timeout == timedelta(hours=72)
        assert "content_hash" in approve.body and "markdown" in approve.body
    assert invoice_dag.task_dict["approve_batch_3"].previous_task_ids == [
        "approve_batch",
        "approve_batch_2",
    ]
    assert invoice_dag.task_dict["report"].trigger_rule == "none_failed"
    # wiring: gate -> build -> approval -> decision -> push -> export -> report
    down = {t: set(invoice_dag.task_dict[t].downstream_task_ids) for t in invoice_dag.task_dict}
    assert down["plan_billing_run"] == {"dq_gate", "build_batch"}
    assert down["dq_gate"] == {"build_batch"}
    assert down["needs_approval"] == {"approve_batch"}
    assert down["approve_batch"] == {"approve_batch_2"}
    assert down["approve_batch_2"] == {"approve_batch_3"}
    assert down["approve_batch_3"] == {"record_decision"}
    assert down["record_decision"] == {"push_to_erp", "export_files"}
    assert down["push_to_erp"] == {"export_files"}
    assert down["export_files"] == {"report"}


def test_milestone_sensor_holds_no_slot_and_shares_the_billing_code(invoice_dag, milestone_dag):
    sensor = milestone_dag.task_dict["wait_for_accepted_milestones"]
    assert sensor.mode == "reschedule" and sensor.soft_fail
    assert sensor.pool == "crm_api"  # milestones and their acceptance live in the CRM
    assert sensor.poke_interval == 300 and sensor.timeout == 3300
    assert set(milestone_dag.task_dict) == {
        "wait_for_accepted_milestones",
        "plan_milestone_billing",
        *SHARED,
    }
    assert "milestones" in milestone_dag.tags and "billing" in milestone_dag.tags
    assert "crm" in milestone_dag.tags and "psa" not in milestone_dag.tags
    assert "CRM" in milestone_dag.doc_md and "PSA's milestones" not in milestone_dag.doc_md
    for task_id in SHARED:  # one factory: the same code objects in both DAGs, not a copy
        a, b = invoice_dag.task_dict[task_id], milestone_dag.task_dict[task_id]
        assert type(a) is type(b)
        if hasattr(a, "python_callable"):
            assert a.python_callable.__code__ is b.python_callable.__code__, task_id
        else:
            assert (a.body, a.options, a.defaults) == (b.body, b.options, b.defaults)
