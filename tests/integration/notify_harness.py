"""A real SMTP server on loopback (aiosmtpd) for the notification tests, and the Airflow SMTP
connection that points at it (``AIRFLOW_CONN_ERPSYNC_SMTP``, the form the SMTP provider's hook
reads: host, port, extras ``from_email``, ``disable_ssl``, ``disable_tls``, ``retry_limit``,
``timeout``)."""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

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

    async def handle_DATA(self, server, session, envelope):
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


def airflow_env(runtime, port: int, smtp: MailServer, **extra: str) -> dict[str, str]:
    """The project's Airflow environment (``erpsync env``) for the session's Airflow runtime,
    its API server on ``port``, the SMTP connection to ``smtp`` and ``extra``."""
    import pytest

    from erpsync.runtime import airflow_env as project_env
    from erpsync.runtime import database

    mp = pytest.MonkeyPatch()
    try:
        for key, value in runtime.env.items():
            mp.setenv(key, value)
        urls = database.DatabaseUrls(runtime.warehouse_url, runtime.airflow_url, embedded=False)
        computed = project_env.airflow_environment(urls, home=Path(runtime.env["AIRFLOW_HOME"]))
    finally:
        mp.undo()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(runtime.env)
    env.update(computed)
    env.update(
        {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
            "AIRFLOW_CONN_ERPSYNC_SMTP": smtp.connection_json(),
            **extra,
        }
    )
    return env
