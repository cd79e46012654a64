"""Stopping a child stops everything below it, including a grandchild that moved to a process
group of its own, as Airflow's task supervisor moves each task runner (os.setpgid after the
fork): killpg on the child's group alone leaves such a process running."""

from __future__ import annotations

import os
import sys
import time

import psutil

from erpsync.runtime import processes

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
