"""Stopping a child stops everything below it, including a grandchild that moved to a process
group of its own, as Airflow's task supervisor moves each task runner (os.setpgid after the
fork): killpg on the child's group alone leaves such a process running. Every signal that
stops the demo (SIGINT, SIGTERM, SIGHUP, SIGQUIT) stops what it started (the real demo with
SIGTERM: tests/integration/test_demo_signals.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from erpsync.runtime import demo, processes

# A child that starts a grandchild in its own process group, prints its pid, and waits.
_PARENT = r"""
import os, subprocess, sys, time
grandchild = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"], process_group=0
)
print(grandchild.pid, flush=True)
time.sleep(600)
"""


def test_stop_group_stops_a_grandchild_in_its_own_process_group(tmp_path):
    log = tmp_path / "child.log"
    child = processes.spawn([sys.executable, "-c", _PARENT], {}, log_file=log)
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = psutil.Process(int(log.read_text().split()[0]))
    try:
        assert os.getpgid(grandchild.pid) != os.getpgid(child.pid)  # its own group
        processes.stop_group(child, grace=10)
        assert child.poll() is not None
        grandchild.wait(timeout=10)  # gone (re-parented to init and reaped)
        assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
    finally:
        for proc in (grandchild,):
            if proc.is_running():
                proc.kill()
        if child.poll() is None:
            child.kill()


# `erpsync demo --once` with its set-up and chain stubbed: it starts one long-running child the
# way it starts the sandbox, then "runs the chain" until a signal arrives.
_DEMO = r"""
import signal, sys, time, types
from erpsync.runtime import demo, processes, setup

for sig in demo.STOP_SIGNALS:  # as from a terminal, even if this test runs with some ignored
    signal.signal(sig, signal.SIG_DFL)

setup.prepare = lambda echo: types.SimpleNamespace(urls=None, env={})
demo.sandbox_ports = lambda: {}
def start(size, echo, ports, children):
    cmd = [sys.executable, "-c", "import time; time.sleep(600)"]
    print(processes.spawn(cmd, {}, into=children).pid, flush=True)
demo._start_sandbox = start
def chain(urls, env, echo):
    time.sleep(600)
    return []
demo.run_chain = chain
sys.exit(demo.run(once=True))
"""


@pytest.mark.parametrize("sig", demo.STOP_SIGNALS, ids=lambda s: s.name)
def test_every_stop_signal_stops_what_the_demo_started(sig, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _DEMO],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "ERPSYNC_STATE_DIR": str(tmp_path)},
    )
    try:
        child = psutil.Process(int(proc.stdout.readline()))
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, out
        assert f"{sig.name}: stopping" in out
        child.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
