"""The entity spec registry and its helpers: every spec is consistent with its model and the
write-back operations it names, row hashes ignore how a number is written, the stats table is
readable, and the DAGs' firm time zone matches airflow_settings.yaml."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import yaml

from erpsync.sync import specs
from erpsync.sync.engine import row_hash
from erpsync.sync.spec import DeleteMode, RunInfo, SyncStats

REPO = Path(__file__).resolve().parents[2]


def test_every_spec_is_consistent_with_its_model_and_write_back_targets():
    from erpsync.writeback import targets

    assert len({s.name for s in specs.ALL.values()}) == len(specs.ALL)
    for spec in specs.ALL.values():
        fields = set(spec.model.model_fields)
        assert set(spec.natural_key) <= fields, spec.name
        assert spec.mapper is not None, spec.name
        assert spec.core_table.startswith("core."), spec.name
        assert set(spec.write_back) <= set(targets.OPERATIONS), spec.name
        if spec.id_map:
            assert spec.id_map[2] in fields, spec.name
        # id-set deletes need the whole id set: those specs never read incrementally
        if spec.deletes.mode == DeleteMode.ID_SET_COMPARE:
            assert not spec.incremental, spec.name
    assert specs.CLIENTS.incremental and specs.CONTRACT_RATE_OVERRIDES.incremental
    assert specs.CONTRACT_MILESTONES.incremental  # SOQL on SystemModstamp + the deleted feed
    assert {s.name for s in (*specs.MASTER_DATA, *specs.RATES, *specs.MILESTONES)} == set(specs.ALL)


def test_row_hash_ignores_number_spelling_but_not_values():
    assert row_hash({"amount": Decimal("160")}) == row_hash({"amount": Decimal("160.00")})
    assert row_hash({"amount": Decimal("160")}) != row_hash({"amount": Decimal("160.01")})
    assert row_hash({"a": 1, "b": 2}) == row_hash({"b": 2, "a": 1})


def test_stats_table_lists_every_count():
    stats = SyncStats(entity="clients", system="crm", run_id="r", read=30, inserted=2)
    table = stats.table()
    for label in ("read", "inserted", "updated", "unchanged", "quarantined", "deleted"):
        assert f"| {label}" in table
    assert re.search(r"^\| read +\| +30 \|$", table, re.MULTILINE)
    assert re.search(r"^\| inserted +\| +2 \|$", table, re.MULTILINE)


def test_local_run_info_is_unique_and_labelled():
    a, b = RunInfo.local("cli"), RunInfo.local("cli")
    assert a.run_id != b.run_id
    assert a.dag_id == "local:cli" and a.actor.startswith("local:")


def test_dag_time_zone_default_matches_airflow_settings():
    from erpsync.airflow import sync_dags

    settings = yaml.safe_load((REPO / "airflow_settings.yaml").read_text())
    zone = {v["variable_name"]: v["variable_value"] for v in settings["airflow"]["variables"]}[
        "erpsync_firm_timezone"
    ]
    assert sync_dags.DEFAULT_FIRM_TIMEZONE == zone
