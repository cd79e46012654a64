"""Applying airflow_settings.yaml to a real Airflow metadata database: twice changes nothing;
a malformed file fails with a precise message and changes nothing."""

from __future__ import annotations

import psycopg
import pytest
import yaml

from erpsync import paths


def _metadata_snapshot(airflow_url: str) -> dict:
    with psycopg.connect(airflow_url) as conn:
        return {
            "connections": conn.execute(
                "SELECT conn_id, conn_type, host, schema, login, password, port, extra "
                "FROM connection ORDER BY conn_id"
            ).fetchall(),
            "pools": conn.execute(
                "SELECT pool, slots, description FROM slot_pool ORDER BY pool"
            ).fetchall(),
            "variables": conn.execute("SELECT key, val FROM variable ORDER BY key").fetchall(),
        }


def _clear(airflow_url: str) -> None:
    with psycopg.connect(airflow_url) as conn:
        conn.execute("DELETE FROM connection")
        conn.execute("DELETE FROM variable")
        conn.execute("DELETE FROM slot_pool WHERE pool <> 'default_pool'")


@pytest.fixture
def clean_airflow(airflow_runtime):
    _clear(airflow_runtime.airflow_url)
    return airflow_runtime


def test_applying_twice_changes_nothing(clean_airflow):
    first = clean_airflow.run("settings", "apply")
    assert "12 created, 0 updated, 0 unchanged" in first.stdout
    after_first = _metadata_snapshot(clean_airflow.airflow_url)
    assert {c[0] for c in after_first["connections"]} >= {
        "erpsync_crm",
        "erpsync_psa",
        "erpsync_erp",
        "erpsync_warehouse",
    }
    # passwords are stored encrypted, never in clear
    stored = {c[0]: c[5] for c in after_first["connections"]}
    assert "sandbox-crm-secret" not in str(stored["erpsync_crm"])

    second = clean_airflow.run("settings", "apply")
    assert "0 created, 0 updated, 12 unchanged" in second.stdout
    assert _metadata_snapshot(clean_airflow.airflow_url) == after_first


def test_a_changed_value_is_updated_and_only_it(clean_airflow, tmp_path):
    clean_airflow.run("settings", "apply")
    data = yaml.safe_load(paths.settings_file().read_text())
    data["airflow"]["pools"][1]["pool_slot"] = 3
    changed = tmp_path / "settings.yaml"
    changed.write_text(yaml.safe_dump(data))
    result = clean_airflow.run("settings", "apply", "--file", str(changed))
    assert "0 created, 1 updated, 11 unchanged (updated: pool psa_api)" in result.stdout


def test_a_malformed_file_fails_precisely_and_changes_nothing(clean_airflow, tmp_path):
    clean_airflow.run("settings", "apply")
    before = _metadata_snapshot(clean_airflow.airflow_url)
    data = yaml.safe_load(paths.settings_file().read_text())
    # valid changes early in the file, a fault later: nothing at all may be applied
    data["airflow"]["connections"][0]["conn_host"] = "crm.example.com"
    data["airflow"]["variables"][1]["variable_value"] = "Renamed Firm"
    data["airflow"]["connections"][3]["conn_port"] = "not-a-port"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))

    result = clean_airflow.run("settings", "apply", "--file", str(bad), check=False)
    assert result.returncode != 0
    assert (
        "airflow.connections[3] (conn_id 'erpsync_warehouse'): conn_port: "
        "must be an integer port number, got 'not-a-port'"
    ) in result.stderr
    assert _metadata_snapshot(clean_airflow.airflow_url) == before
