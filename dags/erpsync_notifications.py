"""
### Exception digests (daily)

Every morning at 07:00 in the firm's time zone each owner of open exceptions gets one e-mail
with the exceptions that are **new** to them, **open for 7 days or more**, or with an **amount at
stake above the threshold** (10,000 by default), grouped by reason with the amounts and a link
to each exception in the finance console. Owners without an address of their own are covered
by the finance-ops address. **Nothing is sent when there is nothing new**: what each person was
told is remembered, so a rerun or a retry never sends the same digest twice.

If the mail server is down the task fails after recording what it could not send, and Airflow's
retries send those (and only those) later.

Recipients and thresholds: the `erpsync_notifications` Variable; the mail server: the
`erpsync_smtp` connection (README, section *Notifications*).
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag, task

from erpsync.airflow.dag_defaults import FIRM_TIMEZONE, dag_kwargs, tags

REMINDERS_DOC = """
### Approval reminders and escalation (every 15 minutes)

Looks at the invoice batches still waiting for approval in **Required Actions**. When a batch
has waited longer than the reminder time (24 hours by default) the approvers get a reminder with
the batch summary and the link; when the response timeout (72 hours by default, after which the
batch is **rejected**) is less than the escalation lead (12 hours by default) away, the
escalation group is told too. Each reminder and escalation is sent once per question.

The approvers were already told at once when the batch was asked for (by the billing run).
Settings: the `erpsync_notifications` Variable (README, section *Notifications*).
"""


@dag(
    dag_id="erpsync_notifications",
    schedule=CronTriggerTimetable("0 7 * * *", timezone=FIRM_TIMEZONE),
    tags=tags("ops"),
    doc_md=__doc__,
    **dag_kwargs(),
)
def erpsync_notifications():
    @task
    def send_exception_digests(**context) -> dict:
        from erpsync.notify import tasks

        return tasks.send_exception_digests(context)

    send_exception_digests()


@dag(
    dag_id="erpsync_approval_reminders",
    schedule=CronTriggerTimetable("*/15 * * * *", timezone=FIRM_TIMEZONE),
    tags=tags("billing", "ops"),
    doc_md=REMINDERS_DOC,
    **dag_kwargs(),
)
def erpsync_approval_reminders():
    @task
    def send_approval_reminders(**context) -> dict:
        from erpsync.notify import tasks

        return tasks.send_approval_reminders(context)

    send_approval_reminders()


digests = erpsync_notifications()
reminders = erpsync_approval_reminders()
