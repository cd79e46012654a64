"""Prints the parse-time report of every DAG file the integrity suite probed."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    from tests.dags import integrity

    if not integrity.PARSE_TIMES:
        return
    terminalreporter.section("DAG parse times (fresh interpreter, DagBag only)")
    for path, seconds in sorted(integrity.PARSE_TIMES.items()):
        flag = "" if seconds <= integrity.PARSE_TIME_BUDGET_SECONDS else "  OVER BUDGET"
        terminalreporter.write_line(f"{seconds:8.3f} s  {path}{flag}")
