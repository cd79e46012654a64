"""A real SMTP server on loopback (aiosmtpd) for the notification tests, and the Airflow SMTP
connection that points at it (``AIRFLOW_CONN_ERPSYNC_SMTP``, the form the SMTP provider's hook
reads: host, port, extras ``from_email``, ``disable_ssl``, ``disable_tls``, ``retry_limit``,
``timeout``)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import time
from dataclasses import dataclass

from aiosmtpd.controller import Controller

FROM = "erpsync@firm.example"


@dataclass
class Mail:
    sender: str
    to: list[str]
    subject: str
    html: str
    headers: dict[str, str]


class _Collect:
    def __init__(self) -> None:
        self.mails: list[Mail] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("html", "plain"))
        self.mails.append(
            Mail(
                sender=envelope.mail_from,
                to=sorted(envelope.rcpt_tos),
                subject=str(msg["Subject"]),
                html=body.get_content() if body is not None else "",
                headers={k: str(v) for k, v in msg.items()},
            )
        )
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MailServer:
    """Start/stop a loopback SMTP server; ``mails`` is what it received."""

    def __init__(self) -> None:
        self.port = free_port()
        self._handler = _Collect()
        self._controller: Controller | None = None

    @property
    def mails(self) -> list[Mail]:
        return self._handler.mails

    def start(self) -> MailServer:
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, n: int, timeout: float = 60) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while len(self.mails) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.mails

    def connection_json(self) -> str:
        return smtp_connection_json(self.port)


def smtp_connection_json(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {
                "from_email": FROM,
                "disable_ssl": True,
                "disable_tls": True,
                "retry_limit": 0,
                "timeout": 5,
            },
        }
    )
