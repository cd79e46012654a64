"""The demo's ports: the sandbox's move with ERPSYNC_SANDBOX_<SERVICE>_PORT and its Airflow
connections follow; a taken port stops the demo (and the sandbox) before anything starts, with
a message naming the port and the variable that moves it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from erpsync import paths, settings
from erpsync.runtime import airflow_env, demo


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _ports(env: dict[str, str]) -> dict[str, int]:
    return settings.sandbox_ports(settings.load(paths.settings_file(), env=env))


def test_the_sandbox_connections_follow_the_port_variables():
    from erpsync_sandbox.common import DEFAULT_PORTS

    # by default the connections point where `erpsync sandbox serve` listens
    assert _ports({}) == DEFAULT_PORTS == {"crm": 18001, "psa": 18002, "erp": 18003}
    moved = settings.load(paths.settings_file(), env={"ERPSYNC_SANDBOX_PSA_PORT": "28002"})
    assert settings.sandbox_ports(moved) == {"crm": 18001, "psa": 28002, "erp": 18003}
    psa = next(c for c in moved.airflow.connections if c.conn_id == "erpsync_psa")
    assert (psa.conn_host, psa.conn_port) == ("127.0.0.1", 28002)
    # the warehouse connection is not a sandbox connection: untouched
    assert {c.conn_id: c.conn_port for c in moved.airflow.connections}["erpsync_warehouse"] == 5432


def test_a_bad_port_variable_is_refused_naming_it():
    with pytest.raises(settings.SettingsError, match="ERPSYNC_SANDBOX_ERP_PORT='x18003'"):
        _ports({"ERPSYNC_SANDBOX_ERP_PORT": "x18003"})
    with pytest.raises(settings.SettingsError, match="ERPSYNC_SANDBOX_CRM_PORT='70000'"):
        _ports({"ERPSYNC_SANDBOX_CRM_PORT": "70000"})


def test_a_taken_sandbox_port_stops_the_demo_before_it_starts_the_sandbox(taken_port):
    lines: list[str] = []
    ports = {"crm": taken_port}
    with pytest.raises(demo.DemoError) as caught:
        demo._start_sandbox("small", lines.append, ports, [])
    assert str(caught.value) == (
        f"the sandbox CRM port {taken_port} is taken (another demo or sandbox running?); "
        "set ERPSYNC_SANDBOX_CRM_PORT to a free port"
    )
    assert lines == []  # nothing started


def test_a_taken_airflow_port_stops_the_demo_with_its_message(taken_port, monkeypatch):
    monkeypatch.setattr(airflow_env, "API_PORT", taken_port)
    lines: list[str] = []
    assert demo.run(once=False, echo=lines.append) == 1
    assert lines == [
        f"erpsync demo: the Airflow port {taken_port} is taken (another demo or sandbox "
        "running?); set ERPSYNC_AIRFLOW_PORT to a free port"
    ]


def test_the_sandbox_names_its_taken_port(taken_port, tmp_path):
    from erpsync_sandbox.serve import PortTakenError, start_sandbox

    with pytest.raises(PortTakenError, match=f"sandbox PSA: port {taken_port} on 127.0.0.1"):
        start_sandbox(tmp_path, size="small", seed=0, ports={"psa": taken_port})
