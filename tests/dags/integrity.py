"""The rules every erpsync DAG file is held to, as functions over a parse report
(``parse_probe.py``). ``test_dag_integrity.py`` applies them to ``dags/``;
``test_integrity_suite_catches.py`` proves each one fails on a file that breaks it."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

from erpsync.airflow.dag_defaults import MIN_RETRIES, OWNER, TAG_VOCABULARY

PROBE = Path(__file__).with_name("parse_probe.py")
PARSE_TIME_BUDGET_SECONDS = 2.0
PARSE_TIMES: dict[str, float] = {}


@functools.cache
def probe(dag_file: str) -> dict:
    """Parse ``dag_file`` in a fresh interpreter and return the probe's report."""
    result = subprocess.run(
        [sys.executable, str(PROBE), dag_file],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(f"parse probe crashed on {dag_file}:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    PARSE_TIMES[Path(dag_file).name] = report["parse_seconds"]
    return report


def import_problems(report: dict) -> list[str]:
    problems = [
        f"import error: {err.strip().splitlines()[-1]}" for err in report["import_errors"].values()
    ]
    if not report["dags"] and not problems:
        problems.append("defines no DAG")
    return problems


def house_rule_problems(report: dict) -> list[str]:
    problems = []
    for dag_id, dag in report["dags"].items():
        if dag["owner"] != OWNER:
            problems.append(f"{dag_id}: owner is {dag['owner']!r}, not {OWNER!r}")
        if not dag["tags"]:
            problems.append(f"{dag_id}: has no tags")
        unknown = sorted(set(dag["tags"]) - TAG_VOCABULARY)
        if unknown:
            problems.append(f"{dag_id}: tags outside the vocabulary: {unknown}")
        if not dag["doc_md"].strip():
            problems.append(f"{dag_id}: has no doc_md for finance users")
        for task in dag["tasks"]:
            if (task["retries"] or 0) < MIN_RETRIES:
                problems.append(
                    f"{dag_id}.{task['task_id']}: retries {task['retries']} < {MIN_RETRIES}"
                )
            if not task["retry_exponential_backoff"]:
                problems.append(f"{dag_id}.{task['task_id']}: no exponential retry backoff")
    return problems


def parse_time_side_effects(report: dict) -> list[str]:
    problems = []
    for kind in ("db_queries", "connection_lookups", "variable_lookups", "network_connects"):
        for event in report[kind]:
            problems.append(f"{kind.replace('_', ' ')} at parse time: {event}")
    return problems


def heavy_import_problems(report: dict) -> list[str]:
    return [
        f"imports {m} at module level (import it inside the task)" for m in report["heavy_modules"]
    ]
