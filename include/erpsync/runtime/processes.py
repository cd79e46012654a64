"""Starting and stopping the processes erpsync runs for an operator: Airflow commands, the
sandbox, ``airflow standalone``. Each long-running child gets its own process group so that
stopping it stops everything it spawned, and nothing is left behind after Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def airflow_command(args: Sequence[str]) -> list[str]:
    """The command line that runs the Airflow CLI of this environment."""
    return [sys.executable, "-m", "airflow", *args]


def run_airflow(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    check: bool = True,
    capture: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run one Airflow CLI command to completion with the project's Airflow environment."""
    full_env = {**os.environ, **env}
    return subprocess.run(  # noqa: S603 - fixed executable, arguments are ours
        airflow_command(args),
        env=full_env,
        check=check,
        text=True,
        capture_output=capture,
        timeout=timeout,
    )


def spawn(
    cmd: Sequence[str],
    env: Mapping[str, str],
    *,
    log_file: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start a long-running child in its own process group (stdout to ``log_file`` if given)."""
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(  # noqa: S603
            list(cmd),
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()


def stop_group(proc: subprocess.Popen, *, grace: float = 30.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL whatever outlives ``grace``."""
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if not _group_alive(proc.pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_http(url: str, *, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``url`` until it answers with any HTTP status (True) or ``timeout`` passes (False)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            httpx.get(url, timeout=2.0)
            return True
        except httpx.HTTPError:
            time.sleep(0.5)
    return False
