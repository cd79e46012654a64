"""
### Invoice batches: monthly, and on demand with a form

Turns the reconciled, ready-to-bill work of a billing period into invoices in the ERP, after a
person has approved them.

1. **Data-quality gate.** A critical data-quality failure that concerns every client stops the
   run and says why. A failure for one client or contract only holds that client's or
   contract's items (reason *dq_blocked*); everything else is billed.
2. **Build the batch.** Ready items are grouped per client, contract and currency into invoice
   drafts: time by role or task (hours x rate), expenses, milestones, retainer fees; the
   client's PO number; tax from the client's tax profile (standard, exempt, reverse charge with
   its legal note). Anomalies (amount far from the client's history, hours spikes, rates off the
   contract, possible duplicates) are flagged with their numbers; they inform, they do not
   block. Whoever triggered the run is the batch's **preparer** (`scheduler` for the monthly run).
3. **Approve.** The batch waits in **Required Actions** (or the task's *Required Actions* tab):
   the summary shows totals per client and currency, items held and why, and the anomalies.
   Choose **Approve** or **Reject**. The preparer cannot approve their own batch; the approval is
   for exactly the content shown (its hash), so a batch that changed is not pushed. **No answer
   within the response timeout (72 hours by default) rejects the batch.** A rejected batch
   releases its items for the next run.
4. **Push, post, bill back.** Each invoice is created in the ERP once (looked up by its document
   number first) and posted (the ERP assigns the invoice number); its items go to erpsync's
   billed ledger, and Harvest shows them invoiced through a Harvest invoice only where that is
   exact (docs/billed-state.md). Retries and reruns never invoice anything twice.
5. **Export** the released batch as CSV and JSON files, and **report** what was read, changed,
   held and pushed, with totals.

**Trigger with config** (the form): *Billing period* (YYYY-MM; empty = the month before today in
the firm's time zone), *Clients* (CRM account ids; empty = all), *Billing types* (time, expense,
milestone, retainer; empty = all), *Dry run* (build and report only: no approval, nothing sent).
To correct a posted invoice, fill *Credit note for* (its document or ERP number) and *Credit note
reason*, and for a partial credit *Credit note lines* (`2` = all of line 2, `1:150.00` = 150.00 of
line 1): the credit note goes through the same approval and push, and never credits more than
was invoiced.

Scheduled monthly at 06:00 on the 2nd, in the firm's time zone.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from erpsync.airflow import billing_tasks
from erpsync.airflow.dag_defaults import FIRM_TIMEZONE, dag_kwargs, deadline, tags


@dag(
    dag_id="erpsync_invoice_batches",
    schedule=CronTriggerTimetable("0 6 2 * *", timezone=FIRM_TIMEZONE),
    tags=tags("billing", "erp", "psa"),
    doc_md=__doc__,
    deadline=deadline("billing", "monthly billing run"),
    params={
        "billing_period": Param(
            None,
            type=["null", "string"],
            pattern=r"^$|^\d{4}-(0[1-9]|1[0-2])$",
            title="Billing period",
            description="Month to bill, YYYY-MM. Empty: the month before today (firm time zone).",
        ),
        # Optional fields allow "null" (Airflow's Params docs: a typed field is required unless
        # its type permits null; https://airflow.apache.org/docs/apache-airflow/stable/
        # core-concepts/params.html and example_params_ui_tutorial.py): empty means "all".
        "clients": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            title="Clients",
            description="CRM account ids to bill, one per line. Empty: every client.",
        ),
        "billing_types": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "enum": list(billing_tasks.BILLING_TYPES)},
            title="Billing types",
            description="time, expense, milestone, retainer. Empty: all of them.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Build the batch and report it; ask no approval and send nothing.",
        ),
        "credit_note_for": Param(
            None,
            type=["null", "string"],
            title="Credit note for",
            description="Document or ERP number of a posted invoice to correct (optional).",
            section="Corrections",
        ),
        "credit_note_lines": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "pattern": r"^\s*\d+\s*(:\s*\d+(\.\d+)?\s*)?$"},
            title="Credit note lines",
            description=(
                "Optional, for a partial credit note: one invoice line per entry, '<line no>' "
                "(the whole line) or '<line no>:<amount>' (part of it, in the invoice currency). "
                "Empty: the whole invoice."
            ),
            section="Corrections",
        ),
        "credit_note_reason": Param(
            None,
            type=["null", "string"],
            title="Credit note reason",
            description="Why the invoice is credited (required with a credit note).",
            section="Corrections",
        ),
    },
    **dag_kwargs(),
)
def erpsync_invoice_batches():
    @task
    def plan_billing_run(**context) -> dict:
        request = billing_tasks.plan_period_run(context, FIRM_TIMEZONE)
        return billing_tasks.check_references(request)  # typed ids resolve, or no run

    request = plan_billing_run()
    first, _last = billing_tasks.billing_tasks(request)
    request >> first


dag = erpsync_invoice_batches()
