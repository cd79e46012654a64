"""Helpers shared by the demo tests (test_demo.py: --once; test_demo_ui.py: the UI)."""

from __future__ import annotations

import os
import socket

import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo_env(airflow_runtime, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(airflow_runtime.env)
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
