"""The notification settings (the ``erpsync_notifications`` Variable) and the deadline intervals:
what is accepted, what is refused with the reason, and the shipped airflow_settings.yaml value."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from erpsync import paths, settings
from erpsync.notify import alerts, config
from erpsync.notify.config import NotifySettings


def test_shipped_settings_parse_and_send_nothing_until_people_are_named():
    shipped = settings.load(paths.settings_file()).airflow
    raw = next(v for v in shipped.variables if v.variable_name == config.VARIABLE)
    parsed = NotifySettings.from_mapping(json.loads(raw.variable_value))
    assert parsed.approvers == () and parsed.data_engineers == () and parsed.finance_ops == ()
    assert parsed.amount_threshold("JPY") == Decimal("1500000")
    assert parsed.amount_threshold("eur") == Decimal("10000")
    assert parsed.smtp_conn_id in {c.conn_id for c in shipped.connections}


def test_addresses_durations_and_owner_keys():
    s = NotifySettings.from_mapping(
        {
            "approvers": "a@x.example; b@x.example ,",
            "owners": {"Billing_Ops": "billing@x.example"},
            "approval_reminder_after": "90m",
            "approval_escalate_before": 3600,
            "base_url": "https://af.example/",
        }
    )
    assert s.approvers == ("a@x.example", "b@x.example")
    assert s.owner_addresses("billing_ops") == ("billing@x.example",)
    assert s.approval_reminder_after == timedelta(minutes=90)
    assert s.approval_escalate_before == timedelta(hours=1)
    assert s.links_base() == "https://af.example"
    assert config.unique(["A@x.example", "a@x.example", "b@x.example"]) == (
        "A@x.example",
        "b@x.example",
    )


def test_mistakes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"unknown keys \['approver'\]"):
        NotifySettings.from_mapping({"approver": "a@x.example"})
    with pytest.raises(ValueError, match="approval_reminder_after='soon'"):
        NotifySettings.from_mapping({"approval_reminder_after": "soon"})


def test_the_variable_from_the_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_ERPSYNC_NOTIFICATIONS", json.dumps({"escalation": "c@x.ex"}))
    assert config.load().escalation == ("c@x.ex",)
    monkeypatch.delenv("AIRFLOW_VAR_ERPSYNC_NOTIFICATIONS")
    assert config.load() == NotifySettings()


def test_deadline_intervals(monkeypatch):
    monkeypatch.delenv("ERPSYNC_DEADLINE_SYNC", raising=False)
    monkeypatch.delenv("ERPSYNC_DEADLINE_BILLING", raising=False)
    monkeypatch.setenv("ERPSYNC_APPROVAL_TIMEOUT", "48h")
    assert alerts.deadline_interval("sync") == timedelta(hours=4)
    assert alerts.deadline_interval("billing") == timedelta(hours=56)  # approval + 8 h
    monkeypatch.setenv("ERPSYNC_DEADLINE_SYNC", "off")
    assert alerts.deadline_interval("sync") is None
    assert alerts.deadline_alert("sync", "nightly sync") is None
    monkeypatch.setenv("ERPSYNC_DEADLINE_BILLING", "2d")
    alert = alerts.deadline_alert("billing", "monthly billing run")
    assert alert.interval == timedelta(days=2)
    assert alert.callback.path == "erpsync.notify.alerts.deadline_missed"
    monkeypatch.setenv("ERPSYNC_DEADLINE_SYNC", "tomorrow")
    with pytest.raises(ValueError, match="ERPSYNC_DEADLINE_SYNC='tomorrow'"):
        alerts.deadline_interval("sync")
