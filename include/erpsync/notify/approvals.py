"""Telling approvers that an invoice batch waits for them: at once, a reminder, an escalation.

* **At once**: :func:`notify_approval_requested`, called by the approval task
  (:class:`erpsync.airflow.approval_task.BatchApprovalOperator`) right after it asked, sends the
  ``approvers`` the batch summary (totals per currency, per client and currency, anomalies), the
  response deadline and the link to the task's Required Actions page. A failing mail server is
  recorded and logged; the approval task waits for its answer all the same.
* **Reminder and escalation**: :func:`send_reminders`, run every 15 minutes by the
  ``erpsync_approval_reminders`` DAG, finds the batches still ``awaiting_approval`` and, from the
  time the current question was asked (the ``invoice_batch.approval_requested`` audit row),
  reminds the ``approvers`` after ``approval_reminder_after`` and tells the ``escalation`` group
  ``approval_escalate_before`` the response timeout rejects the batch. Each reminder and each
  escalation is sent once per question (``ops.notifications_sent`` keys). A request that could
  not be sent when the question was asked (mail server down) is sent by the next watcher run.

Why a separate scheduled DAG and not a task of the billing run: in Airflow 3.3 a HITL task waits
in the ``awaiting_input`` state with no trigger (``HITLOperator.execute`` raises
``TaskAwaitingInput``; the scheduler's sweep applies the timeout default: providers/standard/
operators/hitl.py and jobs/scheduler_job_runner.py of the installed 3.3.2), so nothing runs
while it waits; a watcher task inside the billing run would keep the run (and its
``max_active_runs=1``) open after the answer until its next poke.

Links: Airflow's UI routes ``/dags/{dag}/runs/{run}/tasks/{task}/required_actions`` (the task's
Required Actions tab, the URL ``HITLOperator.generate_link_to_ui`` builds) and
``/required_actions`` (the list of everything waiting), both in the 3.3.2 UI bundle.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from urllib.parse import quote

from erpsync.notify import html
from erpsync.notify.config import NotifySettings, unique
from erpsync.notify.delivery import Message, deliver

log = logging.getLogger(__name__)

MAX_ROWS = 50


@dataclass(frozen=True)
class PendingApproval:
    batch_id: int
    asked_at: dt.datetime
    dag_id: str
    run_id: str
    task_id: str


def required_actions_url(base: str, dag_id: str, run_id: str, task_id: str) -> str:
    return (
        f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/"
        f"{quote(task_id, safe='')}/required_actions"
    )


def pending_approvals(conn) -> list[PendingApproval]:
    """Batches waiting for an answer, with the latest question asked for each."""
    rows = conn.execute(
        """SELECT b.batch_id, a.occurred_at, a.source_dag_id, a.source_run_id, a.source_task_id
             FROM billing.invoice_batches b
             CROSS JOIN LATERAL (
                   SELECT occurred_at, source_dag_id, source_run_id, source_task_id
                     FROM audit.audit_log
                    WHERE entity_type = 'invoice_batch' AND entity_id = b.batch_id::text
                      AND action = 'invoice_batch.approval_requested'
                    ORDER BY audit_id DESC LIMIT 1) a
            WHERE b.status = 'awaiting_approval'
            ORDER BY b.batch_id"""
    ).fetchall()
    return [PendingApproval(*row) for row in rows if all(v is not None for v in row)]


def _summary_html(conn, batch_id: int) -> tuple[str, dict]:
    from erpsync.invoicing.builder import load_result

    result = load_result(conn, batch_id)
    prepared_by = conn.execute(
        "SELECT prepared_by FROM billing.invoice_batches WHERE batch_id = %s", (batch_id,)
    ).fetchone()[0]
    parts = []
    if result.period_start:
        parts.append(f"<p>Period {result.period_start} to {result.period_end}. ")
    else:
        parts.append("<p>")
    parts[-1] += (
        f"{len(result.invoices)} invoice(s), {result.items:,} item(s), prepared by "
        f"{html.text(prepared_by)} (who cannot approve it).</p>"
    )
    parts.append("<h3>Totals per currency</h3>")
    parts.append(
        html.table(
            ["Currency", "Invoices", "Net", "Tax", "Total"],
            [
                [
                    html.text(cur),
                    html.text(t["invoices"]),
                    html.money(Decimal(str(t["net"])), cur),
                    html.money(Decimal(str(t["tax"])), cur),
                    html.money(Decimal(str(t["total"])), cur),
                ]
                for cur, t in sorted(result.totals.items())
            ],
        )
    )
    per_client: dict[tuple[str, str, str], list] = defaultdict(lambda: [0, Decimal(0)])
    for inv in result.invoices:
        agg = per_client[(inv["account_id"], inv["client_name"] or "", inv["currency"])]
        agg[0] += 1
        agg[1] += Decimal(str(inv["total"]))
    ordered = sorted(per_client.items(), key=lambda kv: (kv[0][2], -kv[1][1], kv[0][0]))
    parts.append("<h3>Totals per client and currency</h3>")
    parts.append(
        html.table(
            ["Client", "Currency", "Invoices", "Total"],
            [
                [html.text(name or acc), html.text(cur), html.text(n), html.money(total, cur)]
                for (acc, name, cur), (n, total) in ordered[:MAX_ROWS]
            ],
        )
    )
    if len(ordered) > MAX_ROWS:
        parts.append(f"<p>... and {len(ordered) - MAX_ROWS} more clients (see the task).</p>")
    parts.append("<h3>Anomalies (they inform, they do not block)</h3>")
    if result.anomalies:
        items = "".join(
            f"<li><b>{html.text(a.get('document_number') or a.get('invoice_id'))}</b> "
            f"{html.text(a.get('code'))}: {html.text(a.get('message'))}</li>"
            for a in result.anomalies[:MAX_ROWS]
        )
        more = len(result.anomalies) - MAX_ROWS
        parts.append(f"<ul>{items}</ul>" + (f"<p>... and {more} more.</p>" if more > 0 else ""))
    else:
        parts.append("<p>No anomalies flagged.</p>")
    facts = {
        "invoices": len(result.invoices),
        "totals": {c: str(t["total"]) for c, t in result.totals.items()},
        "anomalies": len(result.anomalies),
    }
    return "".join(parts), facts


def approval_message(
    conn,
    settings: NotifySettings,
    pending: PendingApproval,
    *,
    kind: str,
    timeout: timedelta | None,
) -> Message:
    """The request (``approval_request``), reminder or escalation for one question."""
    base = settings.links_base()
    link = required_actions_url(base, pending.dag_id, pending.run_id, pending.task_id)
    summary, facts = _summary_html(conn, pending.batch_id)
    deadline = pending.asked_at + timeout if timeout else None
    when = f"{deadline:%Y-%m-%d %H:%M} UTC" if deadline else "no deadline"
    lead = {
        "approval_request": "An invoice batch waits for your approval.",
        "approval_reminder": (
            f"Reminder: this invoice batch has waited for an answer since "
            f"{pending.asked_at:%Y-%m-%d %H:%M} UTC."
        ),
        "approval_escalation": (
            "Escalation: nobody has answered for this invoice batch, and it will be rejected "
            f"when its response time runs out at {when}. Please approve or reject it, or ask "
            "an approver to."
        ),
    }[kind]
    subject = {
        "approval_request": f"Approve invoice batch {pending.batch_id}",
        "approval_reminder": f"Reminder: invoice batch {pending.batch_id} waits for approval",
        "approval_escalation": (
            f"Escalation: invoice batch {pending.batch_id} is rejected at {when} unless answered"
        ),
    }[kind]
    everything = html.link(f"{base}/required_actions", "Required Actions")
    body = html.page(
        f"Invoice batch {pending.batch_id}",
        f"<p>{html.text(lead)}</p>",
        f"<p><b>{html.link(link, 'Approve or reject it in Airflow (Required Actions)')}</b>. "
        f"No answer by {html.text(when)} rejects the batch; its items are then billed by a "
        f"later run. Everything waiting: {everything}."
        "</p>",
        summary,
    )
    recipients = {
        "approval_request": settings.approvers,
        "approval_reminder": settings.approvers,
        "approval_escalation": unique((*settings.escalation, *settings.approvers)),
    }[kind]
    return Message(
        kind=kind,
        key=f"{kind}:{pending.batch_id}:{pending.dag_id}:{pending.run_id}:{pending.task_id}",
        recipients=recipients,
        subject=subject,
        html=body,
        detail={"batch_id": pending.batch_id, "link": link, **facts},
        source_dag_id=pending.dag_id,
        source_run_id=pending.run_id,
    )


def notify_approval_requested(
    *,
    batch_id: int,
    dag_id: str,
    run_id: str,
    task_id: str,
    timeout: timedelta | None,
    settings: NotifySettings | None = None,
    connect=None,
    send=None,
) -> str:
    """Tell the approvers now. Never raises: a notification problem must not stop the approval
    (it is logged, and recorded when the warehouse can be reached)."""
    try:
        from erpsync.notify import config

        settings = settings or config.load()
        if connect is None:
            from erpsync.warehouse import connection

            connect = connection.connect
        with connect() as conn:
            asked_at = conn.execute("SELECT now()").fetchone()[0]
            pending = PendingApproval(batch_id, asked_at, dag_id, run_id, task_id)
            message = approval_message(
                conn, settings, pending, kind="approval_request", timeout=timeout
            )
            return deliver(conn, message, settings, send=send)
    except Exception:
        log.exception("approval notification for batch %s could not be sent", batch_id)
        return "failed"


def send_reminders(
    conn,
    settings: NotifySettings,
    *,
    timeout: timedelta | None,
    now: dt.datetime | None = None,
    send=None,
) -> dict[str, int]:
    """Reminders and escalations that are due (each sent once per question), and the request
    itself where it failed when the question was asked."""
    now = now or conn.execute("SELECT now()").fetchone()[0]
    counts: dict[str, int] = defaultdict(int)
    for pending in pending_approvals(conn):
        # the request itself again when it could not be sent when asked (skipped once sent)
        due = ["approval_request"]
        deadline = pending.asked_at + timeout if timeout else None
        if deadline is not None and now >= deadline:
            continue  # the scheduler's timeout sweep rejects it
        if now >= pending.asked_at + settings.approval_reminder_after:
            due.append("approval_reminder")
        if deadline is not None and now >= deadline - settings.approval_escalate_before:
            due.append("approval_escalation")
        for kind in due:
            message = approval_message(conn, settings, pending, kind=kind, timeout=timeout)
            counts[f"{kind}:{deliver(conn, message, settings, send=send)}"] += 1
    log.info("approval reminders: %s", dict(counts))
    return dict(counts)
