"""
### Project setup (client onboarding), every 15 minutes

Turns each **closed-won opportunity** in the CRM into a project that is ready to bill, without
anyone retyping the contract:

1. **Checks the contract** for what billing needs: billing model, currency, contract dates,
   amount, the client's tax profile (a valid VAT / tax id), a PO number when the client requires
   one, contracted rates (Rate Overrides), milestones for fixed fee (the opportunity's *Contract
   Milestone* records, adding up to the amount), the cap for not-to-exceed.
2. **If something is missing**, it opens **one** item in the exceptions queue for that contract
   (reason, which field, the opportunity owner, what to fix) and builds nothing. Fix it in the
   CRM: the next run completes the set-up and closes the item.
3. **If the contract is complete**, it creates: the PSA project (code `ES-P...`, budget or cap,
   dates; a fixed-fee contract becomes a fixed-fee project with its fee) with its tasks and
   people at the contracted hourly rates; the ERP project (same number); the billing schedule
   (monthly T&M periods, fixed-fee milestones or retainer periods); and writes the PSA project
   id back on the opportunity. Milestones stay in the CRM, where the client accepts them.
4. **Change orders** (Contract Version raised in the CRM) become a new contract version: budget,
   cap, milestones, rates and schedule are updated; earlier versions are kept as history. A
   change order needs its *Change Effective Date*: work dated before it keeps the earlier
   version's rates (it is never re-priced), work from that day on gets the new ones.

Every step is recorded, so a run that stops half-way (a system down, a dropped connection) is
finished by the next run without creating anything twice. Every action is in the audit trail.

**Trigger with config**: `full` = true re-reads every closed-won opportunity (not only those
changed since the last run).
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from erpsync.airflow.dag_defaults import FIRM_TIMEZONE, dag_kwargs, tags
from erpsync.airflow.sync_dags import asset_for


@dag(
    dag_id="erpsync_project_setup",
    schedule=CronTriggerTimetable("*/15 * * * *", timezone=FIRM_TIMEZONE),
    tags=tags("onboarding", "crm", "psa", "erp"),
    doc_md=__doc__,
    params={
        "full": Param(
            False,
            type="boolean",
            title="Re-read all closed-won opportunities",
            description="Off: only opportunities changed since the last run (plus unfinished).",
        )
    },
    **dag_kwargs(),
)
def erpsync_project_setup():
    @task(
        pool="psa_api",
        outlets=[asset_for("core.contracts"), asset_for("billing.schedules")],
    )
    def set_up_projects(**context) -> dict:
        from erpsync.airflow import project_setup_tasks

        return project_setup_tasks.set_up_projects(context)

    set_up_projects()


dag = erpsync_project_setup()
