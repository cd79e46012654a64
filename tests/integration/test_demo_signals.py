"""`erpsync demo --once` stopped with SIGTERM (as a CI runner, systemd or `timeout` stop it)
stops every process it started: the sandbox, the Airflow api-server and the `airflow dags test`
driver with the task it is running (Airflow's task supervisor puts each task runner in a
process group of its own). The sandbox runs on moved ports (ERPSYNC_SANDBOX_*_PORT), so the
test also shows the demo serving where those variables say, beside any other sandbox."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.integration.demo_helpers import _demo_env, _processes_mentioning, _sandbox_ports


@pytest.mark.slow
def test_sigterm_stops_everything_demo_once_started(airflow_runtime, warehouse_db):
    # the session's `airflow dags test` interpreter shares this Airflow home: stop it, so that
    # every process left with this home afterwards is one the demo left behind
    airflow_runtime.stop()
    home = airflow_runtime.env["AIRFLOW_HOME"]
    assert _processes_mentioning(home) == []
    ports = _sandbox_ports()
    env = _demo_env(
        airflow_runtime,
        ports,
        ERPSYNC_DATABASE_URL=warehouse_db,
        ERPSYNC_SANDBOX_PSA_RATE_LIMIT="off",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "erpsync.cli", "demo", "--once"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        api_url = None
        deadline = time.monotonic() + 600
        while api_url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"api-server: starting on :(\d+)", line)
            if found:
                api_url = f"http://localhost:{found.group(1)}"
        output = "".join(lines)
        assert api_url, output
        assert f"sandbox: CRM :{ports['crm']}, PSA :{ports['psa']}, ERP :{ports['erp']}" in output
        for port in ports.values():  # the sandbox answers where the variables put it
            assert httpx.get(f"http://127.0.0.1:{port}/__admin/health", timeout=10).is_success
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # "as soon as the api-server is up"
            try:
                httpx.get(f"{api_url}/api/v2/monitor/health", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(1)
        running = _processes_mentioning(home)
        assert len(running) >= 3, [p.cmdline() for p in running]  # sandbox, api-server, driver
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM: stopping" in output, output
    deadline = time.monotonic() + 10  # orphans re-parented to init are reaped asynchronously
    left = _processes_mentioning(home)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [p for p in left if p.is_running() and p.status() != "zombie"]
    assert left == [], f"processes left behind: {[p.cmdline() for p in left]}"
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/__admin/health", timeout=5)
