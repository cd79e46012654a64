"""The integrity rules fail on DAG files that break them (fixtures/), so a green suite means
something: a parse-time database query, a parse-time connection or variable lookup, a
module-level pandas import, missing house rules and an import error are each caught."""

from __future__ import annotations

from pathlib import Path

from tests.dags import integrity

FIXTURES = Path(__file__).with_name("fixtures")


def _probe(name: str) -> dict:
    return integrity.probe(str(FIXTURES / name))


def test_a_parse_time_database_query_is_caught():
    problems = integrity.parse_time_side_effects(_probe("dag_queries_db_at_parse.py"))
    assert any("db queries at parse time" in p and "dag_run" in p for p in problems), problems


def test_parse_time_connection_and_variable_lookups_are_caught():
    report = _probe("dag_looks_up_connection_at_parse.py")
    problems = integrity.parse_time_side_effects(report)
    assert any("connection lookups" in p and "erpsync_crm" in p for p in problems), problems
    # the lookup raised, so the file also fails to import
    assert integrity.import_problems(report)


def test_a_module_level_pandas_import_is_caught():
    report = _probe("dag_imports_pandas.py")
    assert integrity.import_problems(report) == []
    assert integrity.heavy_import_problems(report) == [
        "imports pandas at module level (import it inside the task)"
    ]


def test_missing_house_rules_are_caught():
    problems = integrity.house_rule_problems(_probe("dag_without_house_rules.py"))
    text = "\n".join(problems)
    assert "owner is 'airflow'" in text
    assert "tags outside the vocabulary: ['random-tag']" in text
    assert "no doc_md" in text
    assert "retries 0 < 2" in text
    assert "no exponential retry backoff" in text


def test_an_import_error_is_caught():
    problems = integrity.import_problems(_probe("dag_with_import_error.py"))
    assert problems and "no_such_thing" in problems[0]


def test_the_shipped_dags_pass_every_rule():
    dag_file = str(Path(integrity.__file__).parents[2] / "dags" / "erpsync_preflight.py")
    report = integrity.probe(dag_file)
    assert not (
        integrity.import_problems(report)
        + integrity.house_rule_problems(report)
        + integrity.parse_time_side_effects(report)
        + integrity.heavy_import_problems(report)
    )
