"""Every DAG file in dags/ is held to the pack's rules, one test per rule per file, so each new
DAG is checked without anyone adding a test: it imports cleanly; owner, tags from the
vocabulary, retries with backoff and doc_md; no database query, connection or variable lookup
or network call at parse time; no heavy module imported by parsing; parse time reported (see
the summary at the end of the run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from erpsync import paths
from tests.dags import integrity

DAG_FILES = sorted(
    str(p) for p in Path(paths.dags_dir()).glob("*.py") if not p.name.startswith("_")
)


def test_the_pack_has_dag_files():
    assert DAG_FILES, "dags/ holds no DAG file"


@pytest.fixture(params=DAG_FILES, ids=[Path(f).name for f in DAG_FILES])
def report(request) -> dict:
    return integrity.probe(request.param)


def test_imports_without_errors(report, record_property):
    # reported at the end of the run (tests/dags/conftest.py), also from xdist workers
    record_property("dag_parse_seconds", [Path(report["file"]).name, report["parse_seconds"]])
    assert integrity.import_problems(report) == []


def test_follows_house_rules(report):
    assert integrity.house_rule_problems(report) == []


def test_no_database_connection_or_network_at_parse_time(report):
    assert integrity.parse_time_side_effects(report) == []


def test_no_heavy_module_imported_by_parsing(report):
    assert integrity.heavy_import_problems(report) == []


def test_dag_ids_are_unique_across_files():
    seen: dict[str, str] = {}
    for dag_file in DAG_FILES:
        for dag_id in integrity.probe(dag_file)["dags"]:
            assert dag_id not in seen, f"{dag_id} defined in {seen.get(dag_id)} and {dag_file}"
            seen[dag_id] = dag_file
