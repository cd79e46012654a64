"""
### Milestone billing: invoice a fixed-fee milestone the day the client accepts it

Every hour a **sensor** looks at the contract milestones in the **CRM** (the opportunity's
*Contract Milestone* records: the client's acceptance is Status *Accepted* with an Accepted
Date; the PSA has no milestones). Each look reads only the records changed since the last one.
While nothing new is accepted it gives its worker slot back between looks (reschedule mode),
so waiting costs nothing. When a client has accepted a milestone that is not billed yet:

1. the milestone's acceptance is recorded in the warehouse and the reconciliation classifies it
   (ready to bill, or on hold with a reason, e.g. a data-quality block for that contract);
2. the milestone invoice goes through **exactly the same steps as the monthly invoice batches**
   (same code): data-quality gate, build with tax and PO number, **approval in Required
   Actions** by someone other than the preparer (no answer within the response timeout = Reject,
   the milestone is then billed by the next run), push to the ERP, post, then the CRM milestone
   is set to Status *Invoiced* with the ERP invoice number (read back to confirm), export files
   and a report.

If no milestone is accepted within the hour the run ends as *skipped*: nothing to do.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, dag, task

from erpsync.airflow import billing_tasks
from erpsync.airflow.dag_defaults import FIRM_TIMEZONE, dag_kwargs, tags


@dag(
    dag_id="erpsync_milestone_billing",
    schedule=CronTriggerTimetable("0 * * * *", timezone=FIRM_TIMEZONE),
    tags=tags("billing", "milestones", "crm", "erp"),
    doc_md=__doc__,
    **dag_kwargs(),
)
def erpsync_milestone_billing():
    @task.sensor(
        task_id="wait_for_accepted_milestones",
        mode="reschedule",
        poke_interval=timedelta(minutes=5),
        timeout=timedelta(minutes=55),
        soft_fail=True,
        pool="crm_api",
    )
    def wait_for_accepted_milestones(**context):
        return billing_tasks.poke_milestones(context)

    @task
    def plan_milestone_billing(keys: list[str], **context) -> dict:
        return billing_tasks.plan_milestone_run(context, keys, FIRM_TIMEZONE)

    request = plan_milestone_billing(wait_for_accepted_milestones())
    first, _last = billing_tasks.billing_tasks(request)
    request >> first


dag = erpsync_milestone_billing()
