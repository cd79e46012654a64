"""airflow_settings.yaml validation: the shipped file is valid, and a malformed file is
rejected whole with the entry and field at fault named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from erpsync import paths, settings


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "airflow_settings.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _shipped() -> dict:
    return yaml.safe_load(paths.settings_file().read_text())


def test_the_shipped_settings_file_is_valid_and_holds_what_the_pack_uses():
    parsed = settings.load(paths.settings_file())
    conn_ids = {c.conn_id for c in parsed.airflow.connections}
    assert {"erpsync_crm", "erpsync_psa", "erpsync_erp", "erpsync_warehouse"} <= conn_ids
    assert {p.pool_name for p in parsed.airflow.pools} == {"crm_api", "psa_api", "erp_api"}
    assert "erpsync_firm_timezone" in {v.variable_name for v in parsed.airflow.variables}
    http = [c for c in parsed.airflow.connections if c.conn_type == "http"]
    assert all(c.conn_extra is not None for c in http)


def test_a_bad_port_is_reported_with_entry_id_and_field(tmp_path):
    data = _shipped()
    data["airflow"]["connections"][1]["conn_port"] = "eighteen"
    with pytest.raises(settings.SettingsError) as err:
        settings.load(_write(tmp_path, data))
    message = str(err.value)
    assert "airflow.connections[1] (conn_id 'erpsync_psa'): conn_port" in message
    assert "must be an integer" in message
    assert "nothing applied" in message


def test_every_fault_in_the_file_is_listed(tmp_path):
    data = _shipped()
    data["airflow"]["pools"][2]["pool_slot"] = "four"
    data["airflow"]["variables"][0]["variable_value"] = 42
    data["airflow"]["connections"][0]["conn_passwd"] = "typo"
    with pytest.raises(settings.SettingsError) as err:
        settings.load(_write(tmp_path, data))
    message = str(err.value)
    assert "airflow.pools[2] (pool_name 'erp_api'): pool_slot" in message
    assert "airflow.variables[0] (variable_name 'erpsync_firm_timezone'): variable_value" in message
    assert "airflow.connections[0] (conn_id 'erpsync_crm'): conn_passwd" in message


def test_a_missing_required_field_is_named(tmp_path):
    data = _shipped()
    del data["airflow"]["connections"][2]["conn_type"]
    with pytest.raises(
        settings.SettingsError, match=r"connections\[2\] \(conn_id 'erpsync_erp'\): conn_type"
    ):
        settings.load(_write(tmp_path, data))


def test_duplicate_ids_are_rejected(tmp_path):
    data = _shipped()
    data["airflow"]["pools"].append(dict(data["airflow"]["pools"][0]))
    with pytest.raises(
        settings.SettingsError, match=r"pools\[3\] \(pool_name 'crm_api'\).*duplicates"
    ):
        settings.load(_write(tmp_path, data))


def test_extra_must_be_a_mapping_or_json_object(tmp_path):
    data = _shipped()
    data["airflow"]["connections"][0]["conn_extra"] = "{not json"
    with pytest.raises(settings.SettingsError, match=r"connections\[0\].*conn_extra"):
        settings.load(_write(tmp_path, data))


def test_yaml_syntax_errors_and_wrong_top_level_are_explained(tmp_path):
    with pytest.raises(settings.SettingsError, match="not valid YAML"):
        settings.load(_write(tmp_path, "airflow: [unclosed"))
    with pytest.raises(settings.SettingsError, match="'airflow' key"):
        settings.load(_write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(settings.SettingsError, match="file not found"):
        settings.load(tmp_path / "missing.yaml")


def test_harvest_invoice_mirror_switch_defaults_on_and_refuses_other_words():
    assert settings.harvest_invoice_mirror(None) is True
    assert settings.harvest_invoice_mirror(" Off ") is False
    assert settings.harvest_invoice_mirror("on") is True
    with pytest.raises(settings.SettingsError, match="erpsync_harvest_invoice_mirror"):
        settings.harvest_invoice_mirror("sometimes")
    parsed = settings.load(paths.settings_file())
    values = {v.variable_name: v.variable_value for v in parsed.airflow.variables}
    assert settings.harvest_invoice_mirror(values[settings.HARVEST_INVOICE_MIRROR]) is True
