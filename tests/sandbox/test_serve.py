"""Tests of running the sandbox: start_sandbox, restart with state, reset, and the CLI."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from erpsync_sandbox.cli import sandbox
from erpsync_sandbox.serve import default_state_dir, start_sandbox

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_start_health_restart_keeps_state_and_reset_clears(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with start_sandbox(state, "small", 4) as handle:
        assert set(handle.urls) == {"crm", "psa", "erp"}, handle.skipped
        for service, url in handle.urls.items():
            assert url.startswith("http://127.0.0.1:")
            health = httpx.get(f"{url}/__admin/health").json()
            assert health["status"] == "ok" and health["service"] == service
            assert health["generated"] is True and health["seed"] == 4
            assert httpx.get(f"{url}/openapi.json").status_code == 200
        manifest = httpx.get(f"{handle.urls['crm']}/__admin/manifest").json()
        assert manifest["seed"] == 4 and manifest["problems"]
        adv = httpx.post(
            f"{handle.urls['psa']}/__admin/advance", json={"steps": 1, "seed": 1}, timeout=60
        ).json()
        assert adv["count"] > 0 and len(adv["changes"]) == adv["count"]
        since = httpx.get(
            f"{handle.urls['erp']}/__admin/changes", params={"since": adv["changes"][0]["seq"]}
        ).json()
        assert len(since["changes"]) == adv["count"] - 1
        # a record written while running, and the clock position, survive a restart
        handle.ctx.stores["psa"].put("clients", 999, {"id": 999, "name": "Kept"})
        now_before = handle.ctx.clock.now()
        time_entries = handle.ctx.stores["psa"].count("time_entries")
    with start_sandbox(state) as handle:
        ctx = handle.ctx
        assert ctx.size == "small" and ctx.seed == 4
        kept = ctx.stores["psa"].get("clients", 999)
        assert kept is not None and kept["name"] == "Kept" and kept["updated_at"] >= "2026-11-03"
        assert ctx.stores["psa"].count("time_entries") == time_entries
        assert ctx.clock.now() >= now_before
        assert ctx.changes.last_seq() >= adv["count"]
        with pytest.raises(ValueError, match="reset"):
            start_sandbox(state, "small", 5)
        resp = httpx.post(f"{handle.urls['psa']}/__admin/reset", json={}, timeout=60)
        assert resp.json()["generated"] is True
        assert ctx.stores["psa"].get("clients", 999) is None
        assert ctx.changes.last_seq() == 0
        assert ctx.clock.now() < "2026-11-02T09:01:00.000000Z"
        httpx.post(f"{handle.urls['psa']}/__admin/reset", json={"regenerate": False})
        assert ctx.stores["psa"].count("time_entries") == 0
        assert httpx.get(f"{handle.urls['crm']}/__admin/health").json()["generated"] is False


def test_default_state_dir_is_under_the_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    (tmp_path / "sub").mkdir()
    assert default_state_dir(tmp_path / "sub") == tmp_path / ".erpsync" / "sandbox"


def test_cli_generate_advance_reset_offline(tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "cli-state"
    port = str(free_port())  # nothing listens: commands work on the state dir
    res = runner.invoke(
        sandbox, ["generate", "--size", "small", "--seed", "2", "--state-dir", str(state)]
    )
    assert res.exit_code == 0, res.output
    assert "time_entries=" in res.output and "planted:" in res.output
    assert (state / "manifest.json").exists()
    res = runner.invoke(
        sandbox, ["advance", "--steps", "2", "--state-dir", str(state), "--port", port]
    )
    assert res.exit_code == 0, res.output
    assert re.search(r"advanced 2 step\(s\): \d+ changes", res.output)
    res = runner.invoke(sandbox, ["reset", "--state-dir", str(state), "--port", port])
    assert res.exit_code == 0 and not state.exists()


def test_cli_faults_against_a_running_sandbox(tmp_path: Path) -> None:
    with start_sandbox(tmp_path / "state", "small", 0) as handle:
        ports = [f"--{s}-port={handle.ports[s]}" for s in ("crm", "psa", "erp")]
        runner = CliRunner()
        res = runner.invoke(
            sandbox, ["faults", "--service", "erp", "--patch", '{"latency_ms": 15}', *ports]
        )
        assert res.exit_code == 0, res.output
        assert handle.ctx.faults_for("erp").config.latency_ms == 15
        assert handle.ctx.faults_for("crm").config.latency_ms == 0
        res = runner.invoke(sandbox, ["faults", "--clear", *ports])
        assert res.exit_code == 0 and res.output.count('"latency_ms": 0') == 3


def test_cli_serve_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erpsync_sandbox.cli",
            "serve",
            "--state-dir",
            str(tmp_path / "state"),
            "--crm-port",
            "0",
            "--psa-port",
            "0",
            "--erp-port",
            "0",
            "--fault-service",
            "psa",
            "--fault-latency-ms",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r"\s+(crm|psa|erp): (http://\S+)", line)
            if m:
                urls[m.group(1)] = m.group(2)
            if "Ctrl-C" in line:
                break
        assert set(urls) == {"crm", "psa", "erp"}
        for url in urls.values():
            assert httpx.get(f"{url}/__admin/health").json()["status"] == "ok"
        assert httpx.get(f"{urls['psa']}/__admin/faults").json()["latency_ms"] == 1
        assert httpx.get(f"{urls['crm']}/__admin/faults").json()["latency_ms"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
