"""The notification DAGs' tasks (dags/erpsync_notifications.py), thin wrappers over the library."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class DigestsNotSent(RuntimeError):
    """Some digests could not be sent: Airflow retries the task, which sends only those."""


def send_exception_digests(context: Any) -> dict:
    from erpsync.notify import config, digest
    from erpsync.sync.spec import RunInfo
    from erpsync.warehouse import connection

    settings = config.load()
    with connection.connect() as conn:
        counts = digest.send_digests(conn, settings, run=RunInfo.from_context(context))
    print(f"exception digests: {counts}")
    if counts["failed"]:
        raise DigestsNotSent(
            f"{counts['failed']} digest(s) could not be sent (recorded in "
            "ops.notifications_sent); the retry sends them, and only them"
        )
    return counts


def send_approval_reminders(context: Any) -> dict:
    from erpsync.airflow.billing_tasks import approval_timeout
    from erpsync.notify import approvals, config
    from erpsync.warehouse import connection

    settings = config.load()
    with connection.connect() as conn:
        counts = approvals.send_reminders(conn, settings, timeout=approval_timeout())
    print(f"approval reminders and escalations: {counts or 'none due'}")
    # a failed one is recorded and sent by the next run, 15 minutes later
    return counts
