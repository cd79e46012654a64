"""Starting and stopping the processes erpsync runs for an operator: Airflow commands, the
sandbox, ``airflow standalone``. Each long-running child gets its own process group, and
stopping it stops its group and every process below it (:func:`stop_group`), so nothing is
left behind after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil


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
) -> subprocess.CompletedProcess[str]:
    """Run one Airflow CLI command to completion with the project's Airflow environment."""
    full_env = {**os.environ, **env}
    return subprocess.run(
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
    into: list[subprocess.Popen[bytes]] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running child in its own process group (stdout to ``log_file`` if given).

    ``into``: the caller's list of children to stop, appended to at once, so that a stop signal
    arriving while the caller still waits for the child (or prints) cannot leave it unlisted."""
    out = open(log_file, "ab") if log_file else None
    try:
        proc = subprocess.Popen(
            list(cmd),
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            cwd=cwd,
            start_new_session=True,
        )
        if into is not None:
            into.append(proc)
        return proc
    finally:
        if out:
            out.close()


def stop_group(proc: subprocess.Popen[bytes], *, grace: float = 30.0) -> None:
    """SIGTERM the child, its process group and every process below it, then SIGKILL whatever
    outlives ``grace``.

    The process group alone is not enough: Airflow's task supervisor puts each task runner in a
    process group of its own (``airflow/sdk/execution_time/supervisor.py``, ``os.setpgid(0, 0)``
    after the fork), so ``killpg`` on ``airflow dags test`` or ``airflow standalone`` misses the
    running task, which is re-parented to init and keeps running. The tree is read before the
    first signal (an orphan leaves it) and re-read while waiting (late children join it)."""
    tree = _descendants([proc.pid]) if proc.poll() is None else []
    if proc.poll() is not None and not _group_alive(proc.pid) and not tree:
        return
    _signal_tree(proc.pid, tree, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        tree = _alive(tree)
        tree += [p for p in _descendants([p.pid for p in tree]) if p not in tree]
        if not _group_alive(proc.pid) and not tree:
            return
        time.sleep(0.2)
    _signal_tree(proc.pid, _alive(tree), signal.SIGKILL)
    proc.wait(timeout=10)


def _descendants(pids: Sequence[int]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for pid in pids:
        try:
            found += psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
    return found


def _alive(procs: Sequence[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


def _signal_tree(pgid: int, tree: Sequence[psutil.Process], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in tree:
        try:
            p.send_signal(sig)  # psutil checks the pid was not reused since the snapshot
        except psutil.Error:
            continue


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_http(url: str, *, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
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
