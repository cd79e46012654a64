"""The suite-wide vendor-contract check: no request the pack sends may use anything undocumented.

Every sandbox app records each request it serves (``erpsync_sandbox.contract``) to the file named
by ``ERPSYNC_SANDBOX_CONTRACT_LOG``, with what it used outside the vendor's documented contract.
``tests/conftest.py`` wires this module into pytest:

* :func:`start` (``pytest_configure``, xdist controller or a run without xdist) points the
  variable at a fresh file in a session temp dir. The xdist workers, in-process sandbox servers,
  ``airflow dags test`` runs and every other subprocess inherit it.
* :func:`finish` (``pytest_sessionfinish``, controller only) reads the log and fails the session
  (exit status 1) when a request sent by erpsync's connectors (User-Agent naming erpsync) used
  an undocumented method, path, parameter or field, listing each one.
* :func:`summary` (``pytest_terminal_summary``) prints the log path and the counts.

A test that sends an undocumented request on purpose (to prove the sandbox refuses it as the
vendor does) redirects the log for its duration with the ``private_contract_log`` fixture, so
its deliberate call is checked by the test itself and not by the suite.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erpsync_sandbox import contract

__all__ = ["ContractReport", "check", "finish", "format_report", "is_controller", "start"]

_STASH_ATTR = "_erpsync_contract_log"


@dataclass
class ContractReport:
    """What a contract log holds: request counts and the pack's undocumented uses."""

    path: Path
    requests: int = 0
    pack_requests: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check(path: str | Path) -> ContractReport:
    """Read the log at ``path`` (missing file: nothing recorded) into a report."""
    records = list(contract.read_log(path))
    return ContractReport(
        path=Path(path),
        requests=len(records),
        pack_requests=sum(1 for r in records if contract.is_pack_request(r)),
        violations=contract.violations(records),
    )


def format_report(report: ContractReport) -> list[str]:
    """The lines the terminal shows: one summary line, then one per violation."""
    lines = [
        f"vendor contract log {report.path}: {report.pack_requests} pack request(s) recorded "
        f"({report.requests} in all), {len(report.violations)} undocumented use(s)"
    ]
    for v in report.violations:
        lines.append(f"  {v['service']} {v['method']} {v['route']}: {v['undocumented']}")
    return lines


def is_controller(config: Any) -> bool:
    """True in the xdist controller or a run without xdist (not in a worker)."""
    return not hasattr(config, "workerinput")


def start(config: Any) -> Path | None:
    """Point ``ERPSYNC_SANDBOX_CONTRACT_LOG`` at a fresh file (controller only)."""
    if not is_controller(config):
        return None
    directory = Path(tempfile.mkdtemp(prefix="erpsync-contract-"))
    path = directory / "requests.jsonl"
    path.touch()
    os.environ[contract.CONTRACT_LOG_ENV] = str(path)
    setattr(config, _STASH_ATTR, path)
    return path


def _path(config: Any) -> Path | None:
    return getattr(config, _STASH_ATTR, None)


def finish(session: Any) -> ContractReport | None:
    """Fail the session when the pack used anything undocumented (controller only)."""
    path = _path(session.config)
    if path is None:
        return None
    report = check(path)
    session.config._erpsync_contract_report = report
    if not report.ok and session.exitstatus == 0:
        session.exitstatus = 1  # pytest.ExitCode.TESTS_FAILED
    return report


def summary(terminalreporter: Any, config: Any) -> None:
    """Write the log path, counts and any violations to the terminal summary."""
    report = getattr(config, "_erpsync_contract_report", None)
    if report is None:
        return
    title = "vendor contract" if report.ok else "vendor contract: UNDOCUMENTED PACK REQUESTS"
    terminalreporter.section(title, sep="-", red=not report.ok, green=report.ok)
    for line in format_report(report):
        terminalreporter.write_line(line)
