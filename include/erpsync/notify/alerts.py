"""Alerts for the data engineers: a run not finished by its deadline, a task failed for good.

* **Deadlines** use Airflow 3.3's deadline alerts (airflow/sdk/definitions/deadline.py of the
  installed 3.3.2; https://airflow.apache.org/docs/apache-airflow/3.3.2/howto/deadline-alerts.html,
  where the feature is still marked experimental): :func:`deadline_alert` builds a
  ``DeadlineAlert`` measured from the time the run was queued (``DAGRUN_QUEUED_AT``: a
  scheduled nightly sync or monthly billing run is queued at its scheduled time; a manual run,
  which has no logical date in Airflow 3, when triggered), with a
  :class:`~airflow.sdk.definitions.callback.SyncCallback` to
  :func:`deadline_missed`. The scheduler finds deadlines that passed before their run ended
  (``Deadline.handle_miss``, jobs/scheduler_job_runner.py) and hands the callback to the executor,
  which imports and calls it with ``context={"dag_run": {...}, "deadline": {...}}``
  (sdk/execution_time/callback_supervisor.py). A run that ends before its deadline deletes it.
  The intervals are read when the DAG file is parsed, from ``ERPSYNC_DEADLINE_SYNC`` (nightly
  syncs, default 4h) and ``ERPSYNC_DEADLINE_BILLING`` (monthly billing, default the approval
  response timeout + 8h, since the run waits for its approval), e.g. ``90s``, ``30m``, ``4h``;
  ``off`` turns the alert off.
* **Task failures after the last retry**: :class:`TaskFailureNotifier`, a
  :class:`airflow.sdk.BaseNotifier` set as every erpsync task's ``on_failure_callback``
  (dag_defaults); Airflow calls it only when a task fails for good (``on_retry_callback`` is the
  one for retries: sdk/execution_time/task_runner.py). The message has the task's log link
  (``ti.log_url``) and the error's first line, scrubbed.

Both go to ``data_engineers`` (the ``erpsync_notifications`` Variable) through
:func:`erpsync.notify.delivery.deliver`: sent once per deadline / failed try, recorded in the
warehouse, and a failing mail server is logged, never raised.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

DEFAULT_SYNC_DEADLINE = timedelta(hours=4)
#: the billing run waits for its approval (up to the response timeout) before it pushes
BILLING_AFTER_APPROVAL = timedelta(hours=8)


def deadline_interval(kind: str) -> timedelta | None:
    """The deadline of a ``sync`` or ``billing`` run after it was queued (None: off).
    Defaults: 4 h for a nightly sync; the approval response timeout + 8 h for the billing run
    (it waits for a person's approval first)."""
    from erpsync.notify.config import parse_duration

    name = f"ERPSYNC_DEADLINE_{kind.upper()}"
    raw = (os.environ.get(name) or "").strip()
    if raw.lower() in ("off", "none", "0"):
        return None
    if raw:
        return parse_duration(raw, name=name)
    if kind == "billing":
        from erpsync.airflow.billing_tasks import approval_timeout

        return approval_timeout() + BILLING_AFTER_APPROVAL
    return DEFAULT_SYNC_DEADLINE


def deadline_alert(kind: str, what: str):
    """A ``DeadlineAlert`` for a DAG (``deadline=``), or None when turned off. Parse-time cheap:
    no database, no Variable."""
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    interval = deadline_interval(kind)
    if interval is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=SyncCallback(deadline_missed, kwargs={"what": what, "interval": str(interval)}),
        name=f"erpsync {kind} deadline",
    )


def _record(message, settings) -> str:
    """Deliver with the warehouse ledger; without it (warehouse down), send and log."""
    from erpsync.notify.delivery import NO_RECIPIENTS, deliver

    if not message.recipients:
        log.warning("%s: no data_engineers configured, nothing sent", message.key)
        return NO_RECIPIENTS

    try:
        from erpsync.warehouse import connection

        conn = connection.connect()
    except Exception:
        log.exception("warehouse unreachable: alert %s sent without the ledger", message.key)
        from erpsync.notify.delivery import smtp_sender

        try:
            smtp_sender(settings)(message)
            return "sent"
        except Exception:
            log.exception("alert %s could not be sent", message.key)
            return "failed"
    with conn:
        return deliver(conn, message, settings)


def deadline_missed(context: dict | None = None, what: str = "run", interval: str = "") -> str:
    """The deadline callback (runs in the executor): tell the data engineers."""
    from erpsync.notify import config, html
    from erpsync.notify.delivery import Message

    context = context or {}
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id, run_id = str(run.get("dag_id")), str(run.get("dag_run_id") or run.get("run_id"))
    settings = config.load()
    base = settings.links_base()
    run_url = f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    subject = f"Late: {what} {dag_id} has not finished by its deadline"
    body = html.page(
        subject,
        f"<p>The {html.text(what)} run {html.text(run_id)} of {html.text(dag_id)} "
        f"(queued at {html.text(run.get('queued_at'))}) was still "
        f"{html.text(run.get('state'))} at its deadline {html.text(deadline.get('deadline_time'))}"
        f" ({html.text(interval)} after it was queued).</p>",
        f"<p>{html.link(run_url, 'Open the run in Airflow')} to see which task holds it.</p>",
    )
    message = Message(
        kind="deadline_missed",
        key=f"deadline_missed:{deadline.get('id') or f'{dag_id}:{run_id}'}",
        recipients=settings.data_engineers,
        subject=subject,
        html=body,
        detail={"dag_id": dag_id, "run_id": run_id, "link": run_url},
        source_dag_id=dag_id,
        source_run_id=run_id,
    )
    outcome = _record(message, settings)
    log.info("deadline alert for %s %s: %s", dag_id, run_id, outcome)
    return outcome


class TaskFailureNotifier(BaseNotifier):
    """``on_failure_callback``: a task failed after its last retry -> the data engineers."""

    def notify(self, context: Any) -> None:
        try:
            self._notify(context)
        except Exception:
            log.exception("task failure alert could not be sent")

    def _notify(self, context: Any) -> None:
        from erpsync.notify import config, html
        from erpsync.notify.delivery import Message
        from erpsync.redaction import scrub

        ti = context["ti"]
        error = context.get("exception")
        first_line = scrub(str(error)).strip().splitlines()[0][:300] if error else "unknown"
        settings = config.load()
        log_url = ti.log_url
        subject = f"Failed: {ti.dag_id}.{ti.task_id} after its last retry"
        body = html.page(
            subject,
            f"<p>Task {html.text(ti.task_id)} of {html.text(ti.dag_id)}, run "
            f"{html.text(ti.run_id)}, failed on try {html.text(ti.try_number)} (its last).</p>",
            f"<p>Error: {html.text(type(error).__name__ if error else '')} "
            f"{html.text(first_line)}</p>",
            f"<p>{html.link(log_url, 'Open the task log')}</p>",
        )
        map_index = getattr(ti, "map_index", -1)
        message = Message(
            kind="task_failed",
            key=f"task_failed:{ti.dag_id}:{ti.run_id}:{ti.task_id}:{map_index}:{ti.try_number}",
            recipients=settings.data_engineers,
            subject=subject,
            html=body,
            detail={"dag_id": ti.dag_id, "task_id": ti.task_id, "log_url": log_url},
            source_dag_id=ti.dag_id,
            source_run_id=ti.run_id,
        )
        log.info("task failure alert: %s", _record(message, settings))
