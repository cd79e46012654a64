"""Prints the parse time of every DAG file the integrity suite probed, at the end of the run.

Parse times travel as the tests' recorded properties, so the report also works when the suite
runs on several xdist workers.
"""

from __future__ import annotations

_PARSE_TIMES: dict[str, float] = {}


def pytest_runtest_logreport(report):
    for name, value in getattr(report, "user_properties", []):
        if name == "dag_parse_seconds":
            _PARSE_TIMES[value[0]] = value[1]


def pytest_terminal_summary(terminalreporter):
    from tests.dags import integrity

    if not _PARSE_TIMES:
        return
    terminalreporter.section("DAG parse times (fresh interpreter, DagBag only)")
    for path, seconds in sorted(_PARSE_TIMES.items()):
        flag = "" if seconds <= integrity.PARSE_TIME_BUDGET_SECONDS else "  OVER BUDGET"
        terminalreporter.write_line(f"{seconds:8.3f} s  {path}{flag}")
