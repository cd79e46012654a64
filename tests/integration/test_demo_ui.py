"""`erpsync demo` serves the Airflow UI with every component healthy on the embedded-style
PostgreSQL setup, and Ctrl-C leaves no process behind. (Its own file, so the suite's two
workers run it beside the long --once test.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.integration.demo_helpers import _demo_env, _free_port, _processes_mentioning


@pytest.mark.slow
def test_demo_serves_a_healthy_ui_and_ctrl_c_stops_everything(airflow_runtime):
    # the session's `airflow dags test` interpreter shares this Airflow home: stop it, so that
    # every process left with this home afterwards is one the demo left behind
    airflow_runtime.stop()
    before = _processes_mentioning(airflow_runtime.env["AIRFLOW_HOME"])
    assert before == [], f"running before the demo: {[p.cmdline() for p in before]}"
    port = _free_port()
    env = _demo_env(airflow_runtime, ERPSYNC_AIRFLOW_PORT=str(port))
    home = env["AIRFLOW_HOME"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "erpsync.cli", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("login:"):
                break
        output = "".join(lines)
        assert f"Airflow UI: http://localhost:{port}" in output, output
        assert "login:      admin / " in output

        health = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            health = httpx.get(f"http://localhost:{port}/api/v2/monitor/health", timeout=10).json()
            statuses = {k: (v or {}).get("status") for k, v in health.items()}
            if set(statuses.values()) == {"healthy"}:
                break
            time.sleep(3)
        assert {k: (v or {}).get("status") for k, v in health.items()} == {
            "metadatabase": "healthy",
            "scheduler": "healthy",
            "triggerer": "healthy",
            "dag_processor": "healthy",
        }
        # the printed login works: a token from the auth manager reads the pack's DAGs
        password = output.split("login:      admin / ", 1)[1].split()[0]
        token = httpx.post(
            f"http://localhost:{port}/auth/token",
            json={"username": "admin", "password": password},
            timeout=10,
        )
        assert token.status_code == 201, token.text
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        dag_ids: set[str] = set()
        deadline = time.monotonic() + 180
        while "erpsync_preflight" not in dag_ids and time.monotonic() < deadline:
            dags = httpx.get(f"http://localhost:{port}/api/v2/dags", headers=bearer, timeout=10)
            assert dags.status_code == 200
            dag_ids = {d["dag_id"] for d in dags.json()["dags"]}
            time.sleep(2)
        assert "erpsync_preflight" in dag_ids
        # the UI itself answers, and the API refuses an anonymous caller
        assert httpx.get(f"http://localhost:{port}/", timeout=10).status_code == 200
        assert httpx.get(f"http://localhost:{port}/api/v2/dags", timeout=10).status_code in (
            401,
            403,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    left = _processes_mentioning(home)
    assert left == [], f"processes left behind: {[p.cmdline() for p in left]}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://localhost:{port}/api/v2/monitor/health", timeout=5)
