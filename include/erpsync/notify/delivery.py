"""Sending one message through Airflow's notifier interface, exactly once, never failing the work.

The channel is the SMTP provider's :class:`~airflow.providers.smtp.notifications.smtp.SmtpNotifier`
(a :class:`airflow.sdk.BaseNotifier`; apache-airflow-providers-smtp, its ``SmtpHook`` reads the
connection's host, port, login, password and the extras ``from_email``, ``disable_ssl``,
``disable_tls``, ``timeout``, ``retry_limit``: providers/smtp/hooks/smtp.py in the installed
3.2.0 provider). The notifier's ``notify`` is called directly with every field filled, so no
Jinja rendering runs over the message (exception details and client names are data, never
templates).

:func:`deliver` keeps the ledger ``ops.notifications_sent`` (migration 0030): the message's row
is created or locked (``SELECT ... FOR UPDATE``) in the same transaction that sends it, so

* a message already ``sent`` is never sent again (a task retry, a second run, a second worker),
* a failed send is recorded (``failed``, attempts, the error scrubbed of secrets) and logged, and
  the caller carries on: the next run or retry sends it.

A process killed between the SMTP server's acceptance and the commit sends that one message
again on the next run (at least once, never lost).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from erpsync.notify.config import NotifySettings

log = logging.getLogger(__name__)

SENT, SKIPPED, FAILED, NO_RECIPIENTS = "sent", "skipped", "failed", "no_recipients"


@dataclass(frozen=True)
class Message:
    kind: str
    key: str  # what the message is about: one key is sent at most once
    recipients: tuple[str, ...]
    subject: str
    html: str
    detail: dict[str, Any] = field(default_factory=dict)
    source_dag_id: str | None = None
    source_run_id: str | None = None


def smtp_sender(settings: NotifySettings) -> Callable[[Message], None]:
    """Send through Airflow's SMTP notifier on the ``smtp_conn_id`` connection."""

    def send(message: Message) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifier = SmtpNotifier(
            to=list(message.recipients),
            subject=message.subject,
            html_content=message.html,
            smtp_conn_id=settings.smtp_conn_id,
            custom_headers={"X-Erpsync-Notification": message.kind},
        )
        notifier.notify({})

    return send


def _scrub(error: BaseException) -> str:
    from erpsync.redaction import scrub

    return scrub(f"{type(error).__name__}: {error}")


def deliver(
    conn,
    message: Message,
    settings: NotifySettings,
    *,
    send: Callable[[Message], None] | None = None,
    on_sent: Callable[[Any, int], None] | None = None,
) -> str:
    """Send ``message`` unless it was sent before; record the outcome. Never raises for a
    delivery failure (returns ``failed``). ``on_sent(conn, notification_id)`` runs in the same
    transaction after a successful send (the digest records which exceptions it told about).

    Commits on ``conn``: call it outside the caller's own business transaction."""
    if not message.recipients:
        log.warning("notification %s: no recipients configured, nothing sent", message.key)
        return NO_RECIPIENTS
    send = send or smtp_sender(settings)
    conn.commit()  # the ledger row is ours alone: nothing of the caller's rides along
    with conn.transaction():
        row = conn.execute(
            """SELECT notification_id, status FROM ops.notifications_sent
                WHERE notification_key = %s FOR UPDATE""",
            (message.key,),
        ).fetchone()
        if row is not None and row[1] == SENT:
            log.info("notification %s was sent before: not sent again", message.key)
            return SKIPPED
        try:
            send(message)
            error = None
        except Exception as exc:  # noqa: BLE001 - any delivery failure is recorded, not raised
            error = _scrub(exc)
            log.error("notification %s to %s failed: %s", message.key, message.recipients, error)
        status = FAILED if error else SENT
        params = (
            message.kind,
            list(message.recipients),
            message.subject,
            status,
            error,
            json.dumps(message.detail, default=str, sort_keys=True),
            message.source_dag_id,
            message.source_run_id,
        )
        if row is None:
            notification_id = conn.execute(
                """INSERT INTO ops.notifications_sent
                       (kind, recipients, subject, status, last_error, detail, source_dag_id,
                        source_run_id, notification_key, sent_at)
                   VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s,
                           CASE WHEN %s = 'sent' THEN now() END)
                   RETURNING notification_id""",
                (*params, message.key, status),
            ).fetchone()[0]
        else:
            notification_id = row[0]
            conn.execute(
                """UPDATE ops.notifications_sent
                      SET kind = %s, recipients = %s, subject = %s, status = %s, last_error = %s,
                          detail = %s::jsonb, source_dag_id = %s, source_run_id = %s,
                          attempts = attempts + 1, updated_at = now(),
                          sent_at = CASE WHEN %s = 'sent' THEN now() END
                    WHERE notification_id = %s""",
                (*params, status, notification_id),
            )
        if status == SENT and on_sent is not None:
            on_sent(conn, notification_id)
    if status == SENT:
        log.info("notification %s sent to %s", message.key, ", ".join(message.recipients))
    return status


def deliver_all(
    conn,
    messages: Sequence[Message],
    settings: NotifySettings,
    *,
    send: Callable[[Message], None] | None = None,
) -> dict[str, int]:
    """:func:`deliver` each message; counts per outcome."""
    counts = {SENT: 0, SKIPPED: 0, FAILED: 0, NO_RECIPIENTS: 0}
    for message in messages:
        counts[deliver(conn, message, settings, send=send)] += 1
    return counts
