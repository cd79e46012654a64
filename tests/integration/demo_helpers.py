"""Helpers shared by the demo tests (test_demo.py: --once; test_demo_ui.py: the UI)."""

from __future__ import annotations

import os
import socket

import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sandbox_ports() -> dict[str, int]:
    """Free ports for a demo's sandbox: the demo tests run beside each other (and beside other
    checkouts' demos), and a demo refuses to start on a taken port."""
    return {service: _free_port() for service in ("crm", "psa", "erp")}


def _demo_env(
    airflow_runtime, sandbox_ports: dict[str, int] | None = None, **extra
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(airflow_runtime.env)
    ports = sandbox_ports or _sandbox_ports()
    env.update({f"ERPSYNC_SANDBOX_{s.upper()}_PORT": str(p) for s, p in ports.items()})
    env.update(extra)
    return env


def _processes_mentioning(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.pid != os.getpid() and (
            marker in cmdline or environ.get("AIRFLOW_HOME", "") == marker
        ):
            found.append(proc)
    return found
