"""
### Reconcile time & expenses against contracts and billing schedules

Runs by itself whenever the warehouse receives new data: time entries or expenses (hourly
sync), contracts and billing schedules (project setup), rates (nightly rates sync).

1. **Refresh milestones**: reads from the CRM which fixed-fee milestones the client has
   accepted (the opportunity's *Contract Milestone* records, Status *Accepted*; the PSA has no
   milestones).
2. **Reconcile**: puts every time entry, expense, milestone and retainer fee into exactly one
   state: *ready* to bill, *billed* already, *non-billable*, or *on hold* with a reason
   (missing rate, rate differs from the contract, over the cap, not approved, outside the
   contract dates, closed or unknown project, duplicate, locked period, expense over policy,
   missing receipt, currency differs...). Each problem opens one item in the exceptions queue
   for its owner; fixing it at the source closes the item on a later run.
3. **Data-quality gate**: checks the warehouse tables and the reconciliation result
   (Great Expectations). A **critical** failure holds invoicing for the client or contract it
   concerns (or for everyone when it cannot be pinned down) until the check passes again; a
   **warning** is only reported. The log lists what failed and what is held; the full report
   is in the Data Docs.
4. **Finance table**: the end of the last task's log shows, per client and in the contract
   currency, what is ready to bill, what is on hold and why, work in progress and leakage
   (approved billable work still unbilled after the threshold).

When it finishes, the invoicing DAGs can use the result (asset *erpsync_recon_items*).
**Trigger with config**: `as_of` (a date) reconciles as of that day instead of today.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from erpsync.airflow.dag_defaults import dag_kwargs, tags
from erpsync.airflow.sync_dags import asset_for

#: what the syncs publish (erpsync.airflow.sync_dags.asset_for): any of them triggers a run
RECONCILE_INPUTS = (
    asset_for("core.time_entries")
    | asset_for("core.expenses")
    | asset_for("core.contracts")
    | asset_for("billing.schedules")
    | asset_for("core.rate_cards")
    | asset_for("core.contract_rate_overrides")
)
RECON_RESULTS = asset_for("recon.items")
DQ_BLOCKS = asset_for("ops.dq_blocks")


@dag(
    dag_id="erpsync_reconcile",
    schedule=RECONCILE_INPUTS,
    tags=tags("reconcile", "data-quality", "billing"),
    doc_md=__doc__,
    params={
        "as_of": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Reconcile as of",
            description="Empty: today. A date: what was ready, held or leaking on that day.",
        )
    },
    **dag_kwargs(),
)
def erpsync_reconcile():
    @task(pool="crm_api")
    def refresh_milestones(**context) -> dict:
        from erpsync.airflow import reconcile_tasks

        return reconcile_tasks.refresh_milestones(context)

    @task
    def reconcile(**context) -> dict:
        from erpsync.airflow import reconcile_tasks

        return reconcile_tasks.reconcile(context)

    @task(outlets=[RECON_RESULTS, DQ_BLOCKS])
    def data_quality_gate(**context) -> dict:
        from erpsync.airflow import reconcile_tasks

        return reconcile_tasks.data_quality(context)

    @task
    def finance_table(**context) -> str:
        from erpsync.airflow import reconcile_tasks

        return reconcile_tasks.finance_report(context)

    refresh_milestones() >> reconcile() >> data_quality_gate() >> finance_table()


dag = erpsync_reconcile()
