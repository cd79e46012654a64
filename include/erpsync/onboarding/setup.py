"""Project setup: a valid closed-won contract becomes a PSA project (tasks, user assignments at
the contracted rates; a fixed-fee contract a Harvest fixed-fee project, ``is_fixed_fee`` and
``fee``), an ERP project, a billing schedule and the PSA project id on the CRM opportunity; an
invalid one becomes one exception and nothing else.

A fixed-fee contract's milestones are not copied anywhere: Harvest has no milestone resource
(audit H16-H18). They are the opportunity's ``Contract_Milestone__c`` records in the
CRM, read here with the opportunity (one SOQL query per 200 fixed-fee opportunities) and
written to ``core.contract_milestones`` with their CRM id; the client accepts them in the CRM
(:mod:`erpsync.reconcile.milestones`).

Resumable by construction. Every step (:data:`STEPS`) of a contract version is recorded in
``ops.onboarding_steps`` with its outcome and target id once it has succeeded, and every remote
write is a check-then-create by a stable reference, because neither Harvest nor Business Central
has an idempotency key (docs/reference/vendor-apis.md):

* PSA project: ``code`` = :func:`project_code` (``ES-P`` + the contract's canonical id), looked
  up among the client's projects (``GET /v2/projects?client_id=``), or by the id a previous
  version recorded;
* PSA tasks and task assignments: the task by name, its assignment by task id on the project;
* PSA user assignments: by user id on the project; the contracted rate is PATCHed when it differs;
* ERP project: ``number`` = the project code (``$filter=number eq ...``);
* billing schedule: ``billing.schedules`` unique per (opportunity, version), written in the same
  transaction as its step record;
* CRM: ``PATCH /sobjects/Opportunity/Id/{id}`` (Salesforce upsert keyed on ``Id``): idempotent,
  and unlike an upsert keyed on ``PSA_Project_Id__c`` (an external id the opportunity does not
  hold yet) it can never create a second opportunity.

So when a step fails (or the process dies) after the PSA project exists, the rerun finds the
project, skips the recorded steps and finishes the rest. A change order (``Contract_Version__c``
+ 1) runs the same steps for the new version: they find the existing records and update budget,
cap, fee and rates (milestones are re-read from the CRM); the schedule gets a new version and the
old one is superseded.

Vendor docs: https://help.getharvest.com/api-v2/projects-api/projects/projects/,
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_project,
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from erpsync import audit, exceptions_queue
from erpsync.models.billing_terms import BillingModel
from erpsync.onboarding import schedule
from erpsync.onboarding.contracts import (
    MILESTONE_FIELDS,
    MILESTONE_OBJECT,
    MILESTONES_RELATIONSHIP,
    ONBOARDING_REASONS,
    OPPORTUNITY_FIELDS,
    ClientFacts,
    Contract,
    Problem,
    check,
    parse,
)

if TYPE_CHECKING:
    import psycopg

    from erpsync.connectors.salesforce import SalesforceClient
    from erpsync.sync.spec import RunInfo

__all__ = [
    "STEPS",
    "SetupStats",
    "StepFailed",
    "Systems",
    "project_code",
    "run_project_setup",
]

log = logging.getLogger(__name__)

STEPS = (
    "psa_project",
    "psa_tasks",
    "psa_assignments",
    "erp_project",
    "billing_schedule",
    "crm_writeback",
)
#: The PSA tasks (phases) every new project gets, by billing model (global Harvest tasks).
PROJECT_TASKS = {
    BillingModel.TIME_AND_MATERIALS: ("Advisory", "Implementation", "Project Management"),
    BillingModel.FIXED_FEE: ("Implementation", "Project Management"),
    BillingModel.RETAINER: ("Advisory", "Project Management"),
}
WATERMARK_ENTITY = "onboarding_opportunities"
ENTITY_TYPE = "opportunity"
FINANCE_OPS = "finance ops"
_LOCK_KEY = "erpsync.onboarding"
_ID_BATCH = 200


class StepFailed(RuntimeError):
    """A setup step failed; it is recorded and the next run resumes there."""


@dataclass
class SetupStats:
    read: int = 0
    valid: int = 0
    invalid: int = 0
    completed: int = 0
    adopted: int = 0
    unchanged: int = 0
    new_versions: int = 0
    steps_done: int = 0
    remote_writes: int = 0
    exceptions_raised: int = 0
    exceptions_resolved: int = 0
    failed: list[str] = field(default_factory=list)
    watermark: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One log line: what was read, set up, adopted, invalid, versioned and closed."""
        return (
            f"project setup: {self.read} read, {self.completed} set up, {self.adopted} "
            f"recorded as set up before erpsync, {self.invalid} with an exception, "
            f"{self.new_versions} change orders, {self.exceptions_resolved} exceptions closed"
        )


def project_code(canonical_id: int) -> str:
    """The stable PSA project code / ERP project number of a contract (all its versions)."""
    return f"ES-P{int(canonical_id):06d}"


# ---------------------------------------------------------------------- systems


class Systems:
    """The three vendor clients (built lazily, each on its default Airflow connection) and
    per-run caches. The caller builds it (``Systems()``) and hands it to
    :func:`run_project_setup`."""

    def __init__(self) -> None:
        from erpsync.writeback.relay import TargetClients

        self.targets = TargetClients()
        self._crm: SalesforceClient | None = None
        self._tasks: dict[str, dict] | None = None

    @property
    def crm(self) -> SalesforceClient:
        if self._crm is None:
            from erpsync.connectors.salesforce import SalesforceClient

            self._crm = SalesforceClient()
        return self._crm

    @property
    def psa(self):
        return self.targets.psa

    @property
    def erp(self):
        return self.targets.erp

    def tasks_by_name(self, *, refresh: bool = False) -> dict[str, dict]:
        if self._tasks is None or refresh:
            self._tasks = {}
            for page in self.psa.iter_pages("tasks"):
                for item in page:
                    self._tasks.setdefault(_key(item.get("name")), item)
        return self._tasks

    def secrets(self) -> tuple[str, ...]:
        return self.targets.secrets()


def _key(name: Any) -> str:
    return " ".join(str(name or "").split()).casefold()


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _money_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _differs(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(current, bool) or wanted is None or current is None:
        return current != wanted
    if isinstance(wanted, Decimal) or isinstance(current, int | float | Decimal):
        try:
            return _money(current) != _money(wanted)
        except (ArithmeticError, ValueError):
            return True
    return current != wanted


# ---------------------------------------------------------------------- warehouse reads


def _client_facts(conn, account_id: str | None, systems: Systems) -> ClientFacts | None:
    if not account_id:
        return None
    row = conn.execute(
        """SELECT c.legal_name, c.po_required, m.psa_id,
                  t.crm_account_id IS NOT NULL, t.vat_id_valid, t.vat_id_reason
             FROM core.clients c
             JOIN core.id_map m ON m.canonical_id = c.canonical_id
             LEFT JOIN core.tax_profiles t
                    ON t.crm_account_id = c.crm_id AND t.deleted_at IS NULL
            WHERE c.crm_id = %s AND c.deleted_at IS NULL""",
        (account_id,),
    ).fetchone()
    if row is None:
        return ClientFacts(False, False, False, None, None, None, None)
    name, po_required, psa_id, has_tax, vat_valid, vat_reason = row
    found: dict[str, Any] | None = None
    if psa_id is None:  # not in the id map yet: Harvest has no lookup by name, so list once
        found = systems.targets.psa_client_by_name(name)
        psa_id = None if found is None else str(found["id"])
    elif systems.psa is not None:
        # a Harvest project has no currency of its own: it bills in its client's currency
        # (https://help.getharvest.com/api-v2/clients-api/clients/clients/), so the client's
        # currency is what the contract's must match
        found = systems.psa.get(f"clients/{psa_id}")
    psa_currency = None if not found else (found.get("currency") or None)
    return ClientFacts(
        True,
        bool(po_required),
        bool(has_tax),
        vat_valid,
        vat_reason,
        psa_id,
        name,
        psa_currency=psa_currency,
    )


def _people_by_email(conn) -> dict[str, str]:
    rows = conn.execute(
        "SELECT lower(email), psa_id FROM core.people WHERE deleted_at IS NULL AND is_active"
    ).fetchall()
    return {str(e): str(p) for e, p in rows}


def _canonical_id(conn, opportunity_id: str) -> int:
    row = conn.execute(
        """INSERT INTO core.id_map (entity_type, crm_id) VALUES ('contract', %s)
           ON CONFLICT (entity_type, crm_id) WHERE crm_id IS NOT NULL
           DO UPDATE SET updated_at = core.id_map.updated_at
           RETURNING canonical_id""",
        (opportunity_id,),
    ).fetchone()
    return int(row[0])


def _versions(conn, opportunity_id: str) -> dict[int, dict[str, Any]]:
    cur = conn.execute(
        """SELECT version, status, psa_project_id, erp_project_id, project_code
             FROM core.contracts WHERE opportunity_id = %s""",
        (opportunity_id,),
    )
    return {
        int(r[0]): {"status": r[1], "psa_project_id": r[2], "erp_project_id": r[3], "code": r[4]}
        for r in cur.fetchall()
    }


def _done_steps(conn, opportunity_id: str, version: int) -> dict[str, dict[str, Any]]:
    cur = conn.execute(
        """SELECT step, outcome, target_id, detail FROM ops.onboarding_steps
            WHERE opportunity_id = %s AND version = %s AND status = 'done'""",
        (opportunity_id, version),
    )
    return {r[0]: {"outcome": r[1], "target_id": r[2], "detail": r[3]} for r in cur.fetchall()}


# ---------------------------------------------------------------------- contract rows


def _upsert_contract(
    conn, c: Contract, status: str, code: str, problems: list[Problem], run, psa_id=None
) -> None:
    conn.execute(
        """INSERT INTO core.contracts
               (opportunity_id, version, account_id, name, owner_id, billing_model, currency,
                amount, starts_on, ends_on, po_number, cap_type, cap_value, retainer_amount,
                retainer_period, rate_overrides, project_code, status, problems, psa_project_id,
                source_modstamp, payload, first_run_id, last_run_id, effective_from)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s,
                   %s::jsonb, %s, %s, %s::jsonb, %s, %s, %s)
           ON CONFLICT (opportunity_id, version) DO UPDATE SET
               account_id = EXCLUDED.account_id, name = EXCLUDED.name,
               owner_id = EXCLUDED.owner_id, billing_model = EXCLUDED.billing_model,
               currency = EXCLUDED.currency, amount = EXCLUDED.amount,
               starts_on = EXCLUDED.starts_on, ends_on = EXCLUDED.ends_on,
               po_number = EXCLUDED.po_number, cap_type = EXCLUDED.cap_type,
               cap_value = EXCLUDED.cap_value, retainer_amount = EXCLUDED.retainer_amount,
               retainer_period = EXCLUDED.retainer_period,
               rate_overrides = EXCLUDED.rate_overrides, status = EXCLUDED.status,
               effective_from = EXCLUDED.effective_from,
               problems = EXCLUDED.problems,
               psa_project_id = COALESCE(EXCLUDED.psa_project_id, core.contracts.psa_project_id),
               source_modstamp = EXCLUDED.source_modstamp, payload = EXCLUDED.payload,
               last_run_id = EXCLUDED.last_run_id, updated_at = now()""",
        (
            c.opportunity_id,
            c.version,
            c.account_id,
            c.name,
            c.owner_id,
            c.billing_model,
            c.currency,
            c.amount,
            c.starts_on,
            c.ends_on,
            c.po_number,
            c.cap_type,
            c.cap_value,
            c.retainer_amount,
            c.retainer_period,
            json.dumps(c.rate_overrides),
            code,
            status,
            json.dumps([p.as_dict() for p in problems]),
            psa_id,
            c.modstamp,
            json.dumps(c.payload, default=str),
            run.run_id,
            run.run_id,
            c.effective_from,
        ),
    )
    if status == "pending":
        conn.execute(
            "DELETE FROM core.contract_milestones WHERE opportunity_id = %s AND version = %s",
            (c.opportunity_id, c.version),
        )
        for seq, m in enumerate(c.milestones, 1):
            conn.execute(
                """INSERT INTO core.contract_milestones
                       (opportunity_id, version, seq, name, amount, currency, due_date,
                        crm_milestone_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    c.opportunity_id,
                    c.version,
                    seq,
                    m["name"],
                    Decimal(m["amount"]),
                    c.currency,
                    m["due_date"],
                    m.get("crm_id"),
                ),
            )


# ---------------------------------------------------------------------- steps


@dataclass
class StepContext:
    contract: Contract
    code: str
    client: ClientFacts
    people: dict[str, str]
    adopted_psa_id: str | None  # set up outside erpsync: the PSA project the CRM names
    known_psa_id: str | None  # the PSA project a previous version (or step) recorded
    done: dict[str, dict[str, Any]]
    systems: Systems

    @property
    def psa_project_id(self) -> str:
        target = (self.done.get("psa_project") or {}).get("target_id")
        if not target:
            raise StepFailed("the PSA project step has not run")
        return str(target)


@dataclass(frozen=True)
class StepResult:
    outcome: str  # created | updated | unchanged | not_applicable | skipped
    target_id: str | None
    writes: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def _project_body(ctx: StepContext) -> dict[str, Any]:
    """The project's billing and budget set-up, in Harvest's parameters
    (https://help.getharvest.com/api-v2/projects-api/projects/projects/#create-a-project):
    ``budget`` is the budget in *hours* (``budget_by: project``); a money budget ("Total Project
    Fees", ``budget_by: project_cost``) goes in ``cost_budget``. There is no ``currency``
    parameter: a project is in its client's currency (checked before setup, see
    :func:`_client_facts`)."""
    c = ctx.contract
    body: dict[str, Any] = {
        "starts_on": c.starts_on.isoformat() if c.starts_on else None,
        "ends_on": c.ends_on.isoformat() if c.ends_on else None,
    }
    if c.billing_model == BillingModel.FIXED_FEE:
        body.update(
            is_fixed_fee=True,
            fee=c.amount,
            bill_by="none",
            budget_by="project_cost",
            cost_budget=c.amount,
        )
    elif c.billing_model == BillingModel.RETAINER:
        body.update(
            is_fixed_fee=False, bill_by="none", budget_by="project_cost", cost_budget=c.amount
        )
    elif c.cap_type == "hours":
        body.update(
            is_fixed_fee=False,
            bill_by="People",
            budget_by="project",
            budget=c.cap_value,
            cost_budget=None,
        )
    elif c.cap_type == "amount":
        body.update(
            is_fixed_fee=False, bill_by="People", budget_by="project_cost", cost_budget=c.cap_value
        )
    else:
        body.update(
            is_fixed_fee=False, bill_by="People", budget_by="project_cost", cost_budget=c.amount
        )
    if body["budget_by"] == "project_cost":
        body["budget"] = None  # no hours budget next to a money budget (a change order)
    return body


def _wire(body: dict[str, Any]) -> dict[str, Any]:
    """Money as exact decimal strings (``requests`` cannot encode Decimal; Harvest parses them)."""
    return {k: _money_text(v) if isinstance(v, Decimal) else v for k, v in body.items()}


def _find_psa_project(ctx: StepContext) -> dict[str, Any] | None:
    psa = ctx.systems.psa
    for known in (ctx.known_psa_id, ctx.adopted_psa_id):
        if known:
            found = psa.get(f"projects/{known}")
            if found:
                return found
    for page in psa.iter_pages("projects", {"client_id": ctx.client.psa_client_id}):
        for item in page:
            if (item.get("code") or "") == ctx.code:
                return item
    return None


def step_psa_project(ctx: StepContext) -> StepResult:
    c = ctx.contract
    wanted = _project_body(ctx)
    current = _find_psa_project(ctx)
    if current is None:
        body = {
            "client_id": int(ctx.client.psa_client_id),
            "name": c.name or f"Contract {c.opportunity_id}",
            "code": ctx.code,
            "is_billable": True,
            "notes": f"Contract {c.opportunity_id} (erpsync onboarding)",
            **wanted,
        }
        created = ctx.systems.psa.create("projects", _wire(body))
        return StepResult("created", str(created["id"]), 1, {"code": ctx.code})
    if ctx.adopted_psa_id and str(current["id"]) == str(ctx.adopted_psa_id):
        # set up outside erpsync: keep its billing set-up, apply the contract's budget and dates
        kept = ("budget", "cost_budget", "fee", "starts_on", "ends_on")
        # (its own other budget stays: only the contract's budget is applied)
        wanted = {
            k: wanted[k]
            for k in kept
            if k in wanted and not (k in ("budget", "cost_budget") and wanted[k] is None)
        }
    changes = {k: v for k, v in wanted.items() if _differs(current.get(k), v)}
    if not changes:
        return StepResult("unchanged", str(current["id"]), 0, {"code": current.get("code")})
    ctx.systems.psa.update(f"projects/{current['id']}", _wire(changes))
    return StepResult(
        "updated",
        str(current["id"]),
        1,
        {"fields": sorted(changes), "before": {k: current.get(k) for k in changes}},
    )


def step_psa_tasks(ctx: StepContext) -> StepResult:
    psa, pid = ctx.systems.psa, ctx.psa_project_id
    names = PROJECT_TASKS[ctx.contract.billing_model or BillingModel.TIME_AND_MATERIALS]
    assigned: dict[str, dict] = {}
    for page in psa.iter_pages(f"projects/{pid}/task_assignments"):
        for item in page:
            assigned[str((item.get("task") or {}).get("id"))] = item
    writes, ids = 0, []
    for name in names:
        task = ctx.systems.tasks_by_name().get(_key(name))
        if task is None:
            task = ctx.systems.tasks_by_name(refresh=True).get(_key(name))
        if task is None:
            task = psa.create("tasks", {"name": name, "billable_by_default": True})
            ctx.systems.tasks_by_name()[_key(name)] = task
            writes += 1
        existing = assigned.get(str(task["id"]))
        if existing is None:
            existing = psa.create(
                f"projects/{pid}/task_assignments",
                {
                    "task_id": int(task["id"]),
                    "billable": ctx.contract.billing_model != BillingModel.RETAINER,
                },
            )
            writes += 1
        ids.append(str(existing["id"]))
    return StepResult(
        "created" if writes else "unchanged", ",".join(ids), writes, {"tasks": list(names)}
    )


def _check_rate_applied(answer: dict[str, Any] | None, rate: Decimal) -> None:
    """The PSA's answer must show the contracted rate in force (rate and use_default_rates
    false, https://help.getharvest.com/api-v2/projects-api/projects/user-assignments/)."""
    if (
        not answer
        or answer.get("use_default_rates") is not False
        or _differs(answer.get("hourly_rate"), rate)
    ):
        raise StepFailed(
            f"the PSA user assignment did not take the contracted rate {rate} (answer:"
            f" hourly_rate {None if not answer else answer.get('hourly_rate')}, use_default_rates"
            f" {None if not answer else answer.get('use_default_rates')})"
        )


def step_psa_assignments(ctx: StepContext) -> StepResult:
    psa, pid = ctx.systems.psa, ctx.psa_project_id
    current: dict[str, dict] = {}
    for page in psa.iter_pages(f"projects/{pid}/user_assignments"):
        for item in page:
            current[str((item.get("user") or {}).get("id"))] = item
    writes, ids, rates = 0, [], {}
    # Harvest has one hourly_rate per user assignment, no dated rates
    # (https://help.getharvest.com/api-v2/projects-api/projects/user-assignments/): the
    # assignment gets each person's latest rate (the last effective_from); the reconciliation
    # prices every entry by the element in effect on its date
    latest: dict[str, dict[str, Any]] = {}
    for item in sorted(ctx.contract.rate_overrides, key=lambda i: i.get("effective_from") or ""):
        latest[item["user_email"]] = item
    for item in latest.values():
        user_id = ctx.people[item["user_email"]]
        rate = Decimal(item["rate"])
        rates[item["user_email"]] = item["rate"]
        found = current.get(str(user_id))
        if found is None:
            found = psa.create(
                f"projects/{pid}/user_assignments",
                {
                    "user_id": int(user_id),
                    "hourly_rate": _money_text(rate),
                    "use_default_rates": False,
                },
            )
            writes += 1
            _check_rate_applied(found, rate)
        elif (
            _differs(found.get("hourly_rate"), rate) or found.get("use_default_rates") is not False
        ):
            # Harvest applies hourly_rate only with use_default_rates false
            answer = psa.update(
                f"projects/{pid}/user_assignments/{found['id']}",
                {"hourly_rate": _money_text(rate), "use_default_rates": False},
            )
            writes += 1
            _check_rate_applied(answer, rate)
        ids.append(str(found["id"]))
    if not ctx.contract.rate_overrides:
        return StepResult("not_applicable", None, 0, {"rates": {}})
    return StepResult("updated" if writes else "unchanged", ",".join(ids), writes, {"rates": rates})


def step_erp_project(ctx: StepContext) -> StepResult:
    if ctx.adopted_psa_id:
        return StepResult("skipped", None, 0, {"why": "contract set up outside erpsync"})
    from erpsync.writeback.targets import _deliver_bc_by_number

    payload = {"number": ctx.code, "displayName": (ctx.contract.name or ctx.code)[:100]}
    delivery = _deliver_bc_by_number("projects", {"payload": payload}, ctx.systems.targets)
    return StepResult(delivery.action, delivery.target_id, delivery.writes, {"number": ctx.code})


def _write_schedule(conn, ctx: StepContext, run) -> StepResult:
    c = ctx.contract
    existing = conn.execute(
        "SELECT schedule_id FROM billing.schedules WHERE opportunity_id = %s AND version = %s",
        (c.opportunity_id, c.version),
    ).fetchone()
    if existing:
        return StepResult("unchanged", str(existing[0]))
    superseded = conn.execute(
        """UPDATE billing.schedules SET status = 'superseded', superseded_at = now()
            WHERE opportunity_id = %s AND status = 'active' RETURNING schedule_id""",
        (c.opportunity_id,),
    ).fetchall()
    schedule_id = conn.execute(
        """INSERT INTO billing.schedules
               (opportunity_id, version, billing_model, currency, cap_type, cap_value, status,
                created_run_id)
           VALUES (%s, %s, %s, %s, %s, %s, 'active', %s) RETURNING schedule_id""",
        (
            c.opportunity_id,
            c.version,
            c.billing_model,
            c.currency,
            c.cap_type,
            c.cap_value,
            run.run_id,
        ),
    ).fetchone()[0]
    lines = schedule.build_lines(c)
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO billing.schedule_lines
                   (schedule_id, seq, kind, description, period_start, period_end, due_date,
                    amount, currency)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [
                (
                    schedule_id,
                    ln.seq,
                    ln.kind,
                    ln.description,
                    ln.period_start,
                    ln.period_end,
                    ln.due_date,
                    ln.amount,
                    ln.currency,
                )
                for ln in lines
            ],
        )
    return StepResult(
        "created",
        str(schedule_id),
        0,
        {"lines": len(lines), "superseded": [int(r[0]) for r in superseded]},
    )


def step_crm_writeback(ctx: StepContext) -> StepResult:
    pid = ctx.psa_project_id
    if ctx.contract.psa_project_id_in_crm == pid:
        return StepResult("unchanged", ctx.contract.opportunity_id)
    # PATCH /sobjects/Opportunity/{id} (204), then read back that the value took; a deleted
    # opportunity answers 404 and the step fails (it is never re-created)
    ctx.systems.crm.update(
        "Opportunity", ctx.contract.opportunity_id, {"PSA_Project_Id__c": str(pid)}
    )
    return StepResult("updated", ctx.contract.opportunity_id, 1, {"PSA_Project_Id__c": pid})


REMOTE_STEPS: dict[str, Callable[[StepContext], StepResult]] = {
    "psa_project": step_psa_project,
    "psa_tasks": step_psa_tasks,
    "psa_assignments": step_psa_assignments,
    "erp_project": step_erp_project,
    "crm_writeback": step_crm_writeback,
}


def _record_step(conn, ctx: StepContext, step: str, result: StepResult, run) -> None:
    c = ctx.contract
    conn.execute(
        """INSERT INTO ops.onboarding_steps
               (opportunity_id, version, step, status, outcome, target_id, detail, run_id)
           VALUES (%s, %s, %s, 'done', %s, %s, %s::jsonb, %s)
           ON CONFLICT (opportunity_id, version, step) DO UPDATE SET
               status = 'done', outcome = EXCLUDED.outcome, target_id = EXCLUDED.target_id,
               detail = EXCLUDED.detail, error = NULL,
               attempts = ops.onboarding_steps.attempts + 1, run_id = EXCLUDED.run_id,
               updated_at = now()""",
        (
            c.opportunity_id,
            c.version,
            step,
            result.outcome,
            result.target_id,
            json.dumps(result.detail, default=str),
            run.run_id,
        ),
    )
    audit.record(
        conn,
        actor=run.actor,
        action=f"onboarding.{step}.{result.outcome}",
        entity_type="contract",
        entity_id=f"{c.opportunity_id}/v{c.version}",
        before=None,
        after={"target_id": result.target_id, "project_code": ctx.code},
        source=run.audit_source(),
        detail=result.detail,
    )


def _record_failure(conn, ctx: StepContext, step: str, error: str, run) -> None:
    c = ctx.contract
    conn.execute(
        """INSERT INTO ops.onboarding_steps
               (opportunity_id, version, step, status, error, run_id)
           VALUES (%s, %s, %s, 'failed', %s, %s)
           ON CONFLICT (opportunity_id, version, step) DO UPDATE SET
               status = 'failed', error = EXCLUDED.error,
               attempts = ops.onboarding_steps.attempts + 1, run_id = EXCLUDED.run_id,
               updated_at = now()""",
        (c.opportunity_id, c.version, step, error, run.run_id),
    )


# ---------------------------------------------------------------------- one contract


def _raise(conn, c: Contract, problems: list[Problem], run) -> bool:
    first = problems[0]
    owner = f"opportunity owner {c.owner_id}" if c.owner_id else FINANCE_OPS
    outcome = exceptions_queue.raise_exception(
        conn,
        first.reason_code,
        ENTITY_TYPE,
        c.opportunity_id,
        owner,
        {
            "field": first.field,
            "message": first.message,
            "fix": first.fix,
            "contract_version": c.version,
            "opportunity_name": c.name,
            "problems": [p.as_dict() for p in problems],
            "escalate_to": FINANCE_OPS,
        },
        run,
        amount_at_stake=c.amount,
        currency=c.currency,
    )
    return outcome.created


def _process(
    conn,
    record: dict[str, Any],
    systems: Systems,
    people: dict[str, str],
    run,
    stats: SetupStats,
    failing: dict[str, str],
    after_step: Callable[[str, str], None] | None,
) -> None:
    c = parse(record)
    versions = _versions(conn, c.opportunity_id)
    latest = max(versions, default=0)
    if c.version < latest:
        stats.unchanged += 1  # an older version read late: the newer one stands
        return
    state = versions.get(c.version, {}).get("status")
    if state in ("complete", "adopted", "superseded"):
        stats.unchanged += 1
        return
    adopted_psa = None
    adopted_versions = [v for v, info in versions.items() if info["status"] == "adopted"]
    if adopted_versions:
        adopted_psa = versions[max(adopted_versions)]["psa_project_id"]
    with conn.transaction():
        canonical = _canonical_id(conn, c.opportunity_id)
        code = project_code(canonical)
        if not versions and c.psa_project_id_in_crm:
            # set up before erpsync (the CRM already names its PSA project): record, don't build
            _upsert_contract(conn, c, "adopted", code, [], run, psa_id=c.psa_project_id_in_crm)
            audit.record(
                conn,
                actor=run.actor,
                action="contract.adopted",
                entity_type="contract",
                entity_id=f"{c.opportunity_id}/v{c.version}",
                after={"psa_project_id": c.psa_project_id_in_crm},
                source=run.audit_source(),
            )
            stats.adopted += 1
            return
        client = _client_facts(conn, c.account_id, systems)
        # a change order: an earlier version is in the warehouse (it must say when it applies)
        problems = check(c, client, people, change_order=any(v < c.version for v in versions))
        if problems:
            _upsert_contract(conn, c, "invalid", code, problems, run)
            if _raise(conn, c, problems, run):
                stats.exceptions_raised += 1
            failing[c.opportunity_id] = problems[0].reason_code
            stats.invalid += 1
            return
        if latest and c.version > latest:
            stats.new_versions += 1
        _upsert_contract(conn, c, "pending", code, [], run)
        known = next(
            (
                versions[v]["psa_project_id"]
                for v in sorted(versions, reverse=True)
                if versions[v]["psa_project_id"]
            ),
            None,
        )
        if state != "pending":  # a retry of an unfinished setup is not a new validation
            audit.record(
                conn,
                actor=run.actor,
                action="contract.validated",
                entity_type="contract",
                entity_id=f"{c.opportunity_id}/v{c.version}",
                before=None if c.version not in versions else {"status": state},
                after={"status": "pending", "terms": c.fingerprint()},
                source=run.audit_source(),
            )
    stats.valid += 1
    assert client is not None
    ctx = StepContext(
        c,
        code,
        client,
        people,
        adopted_psa,
        known,
        _done_steps(conn, c.opportunity_id, c.version),
        systems,
    )
    for step in STEPS:
        if step in ctx.done:
            continue
        try:
            if step == "billing_schedule":
                with conn.transaction():
                    result = _write_schedule(conn, ctx, run)
                    _record_step(conn, ctx, step, result, run)
            else:
                result = REMOTE_STEPS[step](ctx)
                with conn.transaction():
                    _record_step(conn, ctx, step, result, run)
        except Exception as exc:  # noqa: BLE001 - any failure of a step is recorded, scrubbed, for a person
            from erpsync.writeback.relay import scrub

            error = scrub(f"{type(exc).__name__}: {exc}", systems.secrets())
            with conn.transaction():
                _record_failure(conn, ctx, step, error, run)
            log.warning(
                "onboarding %s v%s: step %s failed: %s", c.opportunity_id, c.version, step, error
            )
            stats.failed.append(f"{c.opportunity_id}/v{c.version}:{step}")
            return
        ctx.done[step] = {"outcome": result.outcome, "target_id": result.target_id}
        stats.steps_done += 1
        stats.remote_writes += result.writes
        if after_step is not None:
            after_step(c.opportunity_id, step)  # test hook: a crash between two steps
    had_live_version = any(
        info["status"] in ("complete", "adopted") for v, info in versions.items() if v < c.version
    )
    with conn.transaction():
        psa_id = ctx.done["psa_project"]["target_id"]
        erp_id = (ctx.done.get("erp_project") or {}).get("target_id")
        conn.execute(
            """UPDATE core.contracts
                  SET status = 'complete', completed_at = now(), psa_project_id = %s,
                      erp_project_id = %s, last_run_id = %s, updated_at = now()
                WHERE opportunity_id = %s AND version = %s""",
            (psa_id, erp_id, run.run_id, c.opportunity_id, c.version),
        )
        conn.execute(
            """UPDATE core.contracts SET status = 'superseded', superseded_at = now()
                WHERE opportunity_id = %s AND version < %s AND status <> 'superseded'""",
            (c.opportunity_id, c.version),
        )
        audit.record(
            conn,
            actor=run.actor,
            action="contract.version_applied" if had_live_version else "contract.setup_completed",
            entity_type="contract",
            entity_id=f"{c.opportunity_id}/v{c.version}",
            after={"psa_project_id": psa_id, "erp_project_id": erp_id, "project_code": code},
            source=run.audit_source(),
        )
    stats.completed += 1


# ---------------------------------------------------------------------- the run


def _soql(where: str) -> str:
    # SOQL, not SQL: constant field names; values are formatted timestamps and quoted CRM ids
    return f"SELECT {', '.join(OPPORTUNITY_FIELDS)} FROM Opportunity WHERE {where}"  # noqa: S608


def _read_opportunities(systems: Systems, since: dt.datetime | None, retry_ids: list[str]):
    seen: dict[str, dict[str, Any]] = {}
    where = "IsWon = true"
    if since is not None:
        from erpsync.connectors.salesforce import _sf_datetime

        where += f" AND SystemModstamp >= {_sf_datetime(since)}"
    for page in systems.crm.query(_soql(where) + " ORDER BY SystemModstamp, Id"):
        for rec in page:
            seen[str(rec["Id"])] = rec
    todo = [i for i in retry_ids if i not in seen]
    for start in range(0, len(todo), _ID_BATCH):
        ids = _id_list(todo[start : start + _ID_BATCH])
        for page in systems.crm.query(_soql(f"Id IN ({ids}) AND IsWon = true")):
            for rec in page:
                seen[str(rec["Id"])] = rec
    _attach_milestones(systems, seen)
    return list(seen.values())


def _id_list(ids: list[str]) -> str:
    # SOQL, not SQL: Salesforce ids are alphanumeric; anything else is dropped
    return ", ".join("'" + "".join(ch for ch in i if ch.isalnum()) + "'" for i in ids)


def _attach_milestones(systems: Systems, records: dict[str, dict[str, Any]]) -> None:
    """Each fixed-fee opportunity's Contract_Milestone__c records, in the shape of a SOQL
    relationship subquery (``Contract_Milestones__r: {totalSize, done, records}``)."""
    fixed = [i for i, r in records.items() if r.get("Billing_Model__c") == "Fixed Fee"]
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in fixed}
    for start in range(0, len(fixed), _ID_BATCH):
        soql = (
            f"SELECT {', '.join(MILESTONE_FIELDS)} FROM {MILESTONE_OBJECT}"  # noqa: S608 - SOQL
            f" WHERE Opportunity__c IN ({_id_list(fixed[start : start + _ID_BATCH])})"
        )
        for page in systems.crm.query(soql):
            for rec in page:
                found.setdefault(str(rec.get("Opportunity__c")), []).append(rec)
    for opp_id in fixed:
        children = found.get(opp_id, [])
        records[opp_id][MILESTONES_RELATIONSHIP] = {
            "totalSize": len(children),
            "done": True,
            "records": children,
        }


def run_project_setup(
    conn: psycopg.Connection[Any],
    systems: Systems,
    *,
    run: RunInfo,
    full: bool = False,
    after_step: Callable[[str, str], None] | None = None,
) -> SetupStats:
    """One onboarding pass: closed-won opportunities changed since the watermark, plus every
    contract whose setup is unfinished or blocked, validated and set up (see module doc).

    ``conn``: an open warehouse connection in autocommit mode (each step commits on its own, in
    its own transaction, so a crash resumes after the last recorded step); the caller opens and
    closes it. ``systems``: the vendor clients (:class:`Systems`).

    ``after_step(opportunity_id, step)`` is called after each recorded step (tests inject
    crashes there). Raises nothing for a failed step: it is recorded, listed in ``failed`` and
    resumed next run (the DAG task fails on a non-empty ``failed`` so Airflow retries it).
    """
    if not conn.autocommit:
        raise ValueError("run_project_setup needs an autocommit connection (each step commits)")
    stats = SetupStats()
    got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_LOCK_KEY,)).fetchone()
    if not got[0]:
        raise RuntimeError("another project setup run holds the onboarding lock")
    try:
        wm = conn.execute(
            """SELECT cursor_ts FROM ops.sync_watermarks
                WHERE source_system = 'crm' AND entity = %s""",
            (WATERMARK_ENTITY,),
        ).fetchone()
        since = None if full or wm is None else wm[0] - dt.timedelta(seconds=1)
        retry = [
            r[0]
            for r in conn.execute(
                """SELECT DISTINCT opportunity_id FROM core.contracts
                    WHERE status IN ('pending', 'invalid')"""
            ).fetchall()
        ]
        records = _read_opportunities(systems, since, retry)
        stats.read = len(records)
        people = _people_by_email(conn)
        failing: dict[str, str] = {}
        checked: list[str] = []
        newest = None if wm is None else wm[0]
        for record in records:
            checked.append(str(record["Id"]))
            _process(conn, record, systems, people, run, stats, failing, after_step)
            stamp = record.get("SystemModstamp")
            if stamp:
                from erpsync.connectors.salesforce import parse_sf_datetime

                moment = parse_sf_datetime(stamp)
                if moment and (newest is None or moment > newest):
                    newest = moment
        with conn.transaction():
            for reason in ONBOARDING_REASONS:
                resolved = exceptions_queue.resolve_missing(
                    conn,
                    reason,
                    ENTITY_TYPE,
                    [k for k, r in failing.items() if r == reason],
                    run,
                    checked_keys=checked,
                )
                stats.exceptions_resolved += len(resolved)
            if newest is not None:
                conn.execute(
                    """INSERT INTO ops.sync_watermarks
                           (source_system, entity, cursor_ts, updated_by_run)
                       VALUES ('crm', %s, %s, %s)
                       ON CONFLICT (source_system, entity) DO UPDATE SET
                           cursor_ts = EXCLUDED.cursor_ts, updated_at = now(),
                           updated_by_run = EXCLUDED.updated_by_run""",
                    (WATERMARK_ENTITY, newest, run.run_id),
                )
                stats.watermark = newest.isoformat()
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOCK_KEY,))
    return stats
