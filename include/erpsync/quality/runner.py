"""Run the GX suites against the warehouse, turn critical failures into invoicing blocks.

:func:`run_suites` is what the Airflow tasks call. Great Expectations is imported inside it
(never at DAG parse time). It works on a copy of the committed file context
(``great_expectations/``) in ``ERPSYNC_GX_HOME`` (default ``<state dir>/gx``):

1. the copy gets the committed ``great_expectations.yml`` and the suites from
   ``great_expectations/expectations/*.json``;
2. a Postgres data source is added with ``connection_string: ${ERPSYNC_DQ_WAREHOUSE_URL}``; the
   URL (password included) lives only in this process's environment while GX runs, never in a
   file or a log line;
3. each suite runs on its query asset (erpsync.quality.assets) with ``COMPLETE`` results and the
   scope columns as GX's ``unexpected_index_column_names``, so every failing row comes back with
   the client / contract it belongs to;
4. critical failures open or refresh blocks, passing checks clear them (erpsync.quality.blocks),
   audited, in one warehouse transaction;
5. Data Docs are rebuilt (``<gx home>/uncommitted/data_docs/local_site/index.html``).

Docs: https://docs.greatexpectations.io/docs/core/introduction/ (GX Core 1.x).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erpsync import paths
from erpsync.quality import assets, blocks
from erpsync.quality import suites as suite_files

if TYPE_CHECKING:
    import psycopg

    from erpsync.sync.spec import RunInfo

URL_ENV = "ERPSYNC_DQ_WAREHOUSE_URL"
DATASOURCE = "erpsync_warehouse"
#: a date worked may be at most this far in the future (warning ``*_not_in_future``)
FUTURE_TOLERANCE = timedelta(days=7)
_SAMPLE = 5


def gx_home() -> Path:
    """Working copy of the GX context (validation results and Data Docs live here)."""
    return Path(os.environ.get("ERPSYNC_GX_HOME", paths.state_dir() / "gx")).resolve()


def docs_index() -> Path:
    return gx_home() / "uncommitted" / "data_docs" / "local_site" / "index.html"


@dataclass(frozen=True)
class Check:
    """The outcome of one expectation in one run."""

    suite: str
    expectation: str
    severity: str
    scope: str
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    error: str | None = None
    scopes: dict[str, int] = field(default_factory=dict)  # "client:0011" -> failing rows

    @property
    def label(self) -> str:
        return f"{self.suite}.{self.expectation}"


@dataclass(frozen=True)
class DQResult:
    run_id: str
    suites: tuple[str, ...]
    checks: tuple[Check, ...]
    opened: tuple[blocks.Block, ...]
    cleared: tuple[blocks.Block, ...]
    active: tuple[blocks.Block, ...]
    docs_url: str | None
    seconds: float

    @property
    def critical_failures(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity == "critical"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity == "warning"]

    @property
    def success(self) -> bool:
        """True when no critical expectation failed (warnings do not count)."""
        return not self.critical_failures

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe summary for XCom (no row data, no connection details)."""

        def block(b: blocks.Block) -> dict[str, Any]:
            return {
                "block_id": b.block_id,
                "scope_type": b.scope_type,
                "scope_key": b.scope_key,
                "expectation": f"{b.suite}.{b.expectation}",
            }

        return {
            "run_id": self.run_id,
            "success": self.success,
            "suites": list(self.suites),
            "expectations": len(self.checks),
            "passed": sum(c.success for c in self.checks),
            "critical_failed": [c.label for c in self.critical_failures],
            "warnings": [c.label for c in self.warnings],
            "blocks_opened": [block(b) for b in self.opened],
            "blocks_cleared": [block(b) for b in self.cleared],
            "blocks_active": [block(b) for b in self.active],
            "docs_url": self.docs_url,
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        """The short report for the task log."""
        lines = [
            f"data quality run {self.run_id}: {len(self.suites)} suites, {len(self.checks)} "
            f"expectations: {sum(c.success for c in self.checks)} passed, "
            f"{len(self.critical_failures)} critical failed, {len(self.warnings)} warnings "
            f"({self.seconds:.1f} s)"
        ]
        for c in self.critical_failures:
            where = ", ".join(f"{k} ({n} rows)" for k, n in sorted(c.scopes.items())[:10])
            more = f" and {len(c.scopes) - 10} more" if len(c.scopes) > 10 else ""
            why = c.error or f"{c.unexpected_count} of {c.element_count} rows fail"
            lines.append(f"  CRITICAL {c.label}: {why}; blocks invoicing for {where}{more}")
        for c in self.warnings:
            why = c.error or f"{c.unexpected_count} of {c.element_count} rows fail"
            lines.append(f"  WARNING  {c.label}: {why} (reported, blocks nothing)")
        for b in self.opened:
            lines.append(f"  block opened:  {b.describe()}")
        for b in self.cleared:
            lines.append(f"  block cleared: {b.describe()}")
        if self.active:
            lines.append(f"  invoicing held by {len(self.active)} active block(s):")
            lines.extend(f"    - {b.describe()}" for b in self.active[:20])
        else:
            lines.append("  no active data-quality block: invoicing is not held by data quality")
        if self.docs_url:
            lines.append(f"  Data Docs: {self.docs_url}")
        return "\n".join(lines)


def sqlalchemy_url(conninfo: str | dict[str, Any]) -> tuple[str, str | None]:
    """(SQLAlchemy URL for the psycopg 3 dialect, password) from a libpq conninfo or URL."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    raw = dict(conninfo) if isinstance(conninfo, dict) else conninfo_to_dict(conninfo)
    params = {k: str(v) for k, v in raw.items() if v not in (None, "")}
    user = params.pop("user", None)
    password = params.pop("password", None)
    dbname = params.pop("dbname", None)
    url = URL.create(
        "postgresql+psycopg", username=user, password=password, database=dbname, query=params
    )
    return url.render_as_string(hide_password=False), password


@contextlib.contextmanager
def _gx_session(url: str) -> Iterator[Path]:
    """The working copy, locked against a concurrent run on this machine, with the warehouse
    URL in the environment only for the duration."""
    home = gx_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".erpsync.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous = os.environ.get(URL_ENV)
        os.environ[URL_ENV] = url
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        try:
            _refresh_copy(home)
            yield home
        finally:
            if previous is None:
                os.environ.pop(URL_ENV, None)
            else:
                os.environ[URL_ENV] = previous


def _prune(home: Path) -> None:
    """Drop validation results and their Data Docs pages older than ``ERPSYNC_DQ_KEEP_DAYS``
    (default 30): the hourly reconcile gate would otherwise grow the site without bound."""
    import time

    keep_days = float(os.environ.get("ERPSYNC_DQ_KEEP_DAYS", "30"))
    cutoff = time.time() - keep_days * 86400
    for folder in (
        home / "uncommitted" / "validations",
        home / "uncommitted" / "data_docs" / "local_site" / "validations",
    ):
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith(".") and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)


def _refresh_copy(home: Path) -> None:
    """Committed config in, previous run's suites/data source out; recent results and docs
    kept (older ones pruned)."""
    _prune(home)
    source = suite_files.gx_project_dir()
    for folder in ("expectations", "validation_definitions", "checkpoints"):
        shutil.rmtree(home / folder, ignore_errors=True)
        (home / folder).mkdir()
    (home / "plugins").mkdir(exist_ok=True)
    (home / "uncommitted").mkdir(exist_ok=True)
    variables = home / "uncommitted" / "config_variables.yml"
    if not variables.exists():
        variables.write_text("# erpsync: values come from the environment\n{}\n")
    shutil.copyfile(source / "great_expectations.yml", home / "great_expectations.yml")


def _first_line(text: Any, secret: str | None) -> str:
    from erpsync.writeback.relay import scrub

    lines = str(text).strip().splitlines() or [""]
    return scrub(lines[-1] if lines[-1] else lines[0], (secret,) if secret else ())[:300]


def _exception_info(result: Any) -> dict[str, Any]:
    """GX's exception info, flat (it is sometimes keyed by metric: take the first raised)."""
    info = result.exception_info or {}
    if not isinstance(info, dict):
        return {}
    if "raised_exception" in info:
        return info
    nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return nested[0] if nested else {}


def _check_of(rule: suite_files.Rule, result: Any, secret: str | None) -> Check:
    info = _exception_info(result)
    raised = bool(info.get("raised_exception"))
    payload = result.result or {}
    if raised:
        return Check(
            rule.suite,
            rule.name,
            rule.severity,
            rule.scope,
            False,
            error="could not be evaluated: "
            + _first_line(info.get("exception_message", "error"), secret),
            scopes={"all:*": 0},
        )
    scopes: dict[str, int] = {}
    if not result.success:
        index = payload.get("unexpected_index_list")
        column = assets.SCOPE_COLUMNS.get(rule.scope)
        if column is None or not isinstance(index, list) or not index:
            scopes = {"all:*": int(payload.get("unexpected_count") or 0)}
        else:
            counts: Counter[str] = Counter()
            for row in index:
                key = row.get(column) if isinstance(row, dict) else None
                counts[f"{rule.scope}:{key}" if key not in (None, "") else "all:*"] += 1
            scopes = dict(counts)
    return Check(
        rule.suite,
        rule.name,
        rule.severity,
        rule.scope,
        bool(result.success),
        element_count=payload.get("element_count"),
        unexpected_count=payload.get("unexpected_count"),
        scopes=scopes,
    )


def _findings(
    check: Check, rule: suite_files.Rule, samples: dict[str, list[Any]]
) -> list[blocks.Finding]:
    if check.success or check.severity != "critical":
        return []
    out = []
    for scope, rows in sorted(check.scopes.items()):
        scope_type, _, key = scope.partition(":")
        detail = {
            "severity": "critical",
            "rule_scope": rule.scope,
            "description": rule.description,
            "failing_rows": rows,
            "table_rows": check.element_count,
        }
        if check.error:
            detail["error"] = check.error
        if scope_type == "all" and rule.scope != "all":
            detail["why_all"] = "failing rows that cannot be traced to a client or contract"
        if samples.get(scope):
            detail["sample"] = samples[scope][:_SAMPLE]
        out.append(blocks.Finding(check.suite, check.expectation, scope_type, key, detail))
    return out


def _samples(rule: suite_files.Rule, result: Any) -> dict[str, list[Any]]:
    """A few failing values per scope (for the block's detail), from GX's index list."""
    out: dict[str, list[Any]] = defaultdict(list)
    column = assets.SCOPE_COLUMNS.get(rule.scope)
    for row in (result.result or {}).get("unexpected_index_list") or []:
        if not isinstance(row, dict):
            continue
        key = row.get(column) if column else None
        scope = f"{rule.scope}:{key}" if key not in (None, "") else "all:*"
        if len(out[scope]) < _SAMPLE:
            out[scope].append(
                {k: v for k, v in row.items() if k not in ("scope_client", "scope_contract")}
            )
    return out


def _needs_scopes(rule: suite_files.Rule, result: Any) -> bool:
    raised = bool(_exception_info(result).get("raised_exception"))
    return (
        not result.success
        and not raised
        and rule.severity == "critical"
        and rule.scope in assets.SCOPE_COLUMNS
    )


def _scope_pass(
    batch_definition: Any,
    suite: Any,
    rule: suite_files.Rule,
    parameters: dict[str, str],
    summary: Any,
) -> Any:
    """Every failing row's client / contract for one failed critical expectation: the same
    expectation again on the same batch with COMPLETE results (not stored). On any error the
    summary result is kept, which blocks ``all`` (fail closed)."""
    expectation = next((e for e in suite.expectations if e.meta.get("name") == rule.name), None)
    if expectation is None:
        return summary
    try:
        return batch_definition.get_batch().validate(
            expectation,
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [assets.SCOPE_COLUMNS[rule.scope]],
                "return_unexpected_index_query": False,
            },
            expectation_parameters=parameters,
        )
    except Exception:  # noqa: BLE001 - fail closed (the summary result blocks all)
        logging.getLogger(__name__).warning("scope pass failed for %s", rule.label)
        return summary


def _build_docs(ctx: Any, run_name: str, names: list[str]) -> dict[str, Any]:
    """Render this run's validation results and suites, then the index: incremental, so the
    cost does not grow with the history kept in the site."""
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    results = [
        key
        for key in ctx.validation_results_store.list_keys()
        if getattr(getattr(key, "run_id", None), "run_name", None) == run_name
    ]
    suites_ = [ExpectationSuiteIdentifier(name=n) for n in names]
    sites: dict[str, Any] = ctx.build_data_docs(resource_identifiers=results + suites_)
    return sites


@dataclass(frozen=True)
class _Plan:
    """What a run checks: the suites (their JSON documents) and the expectation parameters."""

    run_id: str
    names: list[str]
    docs_by_suite: dict[str, dict[str, Any]]
    parameters: dict[str, str]


@dataclass
class _Outcome:
    """What GX found: one check per expectation, the findings that block, the suites that could
    not run (they keep their blocks and block all) and the Data Docs location."""

    checks: list[Check] = field(default_factory=list)
    findings: list[blocks.Finding] = field(default_factory=list)
    not_run: set[str] = field(default_factory=set)
    docs_url: str | None = None


def warehouse_url(conn: psycopg.Connection[Any]) -> tuple[str, str | None]:
    """(SQLAlchemy URL, password) of the warehouse ``conn`` is connected to, for GX's own
    connections: psycopg's ``ConnectionInfo.get_parameters()`` leaves the password out, so it
    is read from ``ConnectionInfo.password``
    (https://www.psycopg.org/psycopg3/docs/api/objects.html#psycopg.ConnectionInfo)."""
    params: dict[str, str] = dict(conn.info.get_parameters())
    if conn.info.password:
        params["password"] = conn.info.password
    return sqlalchemy_url(params)


def _plan(run: RunInfo, suites: list[str] | None, today: date | None) -> _Plan:
    names = list(suites or suite_files.ALL_SUITES)
    today = today or datetime.now(UTC).date()
    return _Plan(
        run_id=run.run_id,
        names=names,
        docs_by_suite={n: suite_files.load_suite(n) for n in names},
        parameters={"latest_allowed_date": (today + FUTURE_TOLERANCE).isoformat()},
    )


def _failed_whole(name: str, rule: suite_files.Rule, error: str) -> Check:
    return Check(
        name, rule.name, rule.severity, rule.scope, False, error=error, scopes={"all:*": 0}
    )


def _validate(url: str, password: str | None, plan: _Plan, *, docs: bool) -> _Outcome:
    """Run every suite of ``plan`` with GX against ``url`` (see the module doc, steps 1-3 and
    5); nothing is written to the warehouse."""
    outcome = _Outcome()
    with _gx_session(url):
        # GX logs its API-docs registration at INFO on import: keep task logs to what matters
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        try:
            from great_expectations.core.run_identifier import RunIdentifier

            import great_expectations as gx

            ctx = gx.get_context(mode="file", context_root_dir=str(gx_home()))
            source = ctx.data_sources.add_postgres(
                DATASOURCE, connection_string="${" + URL_ENV + "}"
            )
        except Exception as exc:  # noqa: BLE001 - re-raised scrubbed (GX errors may echo the URL)
            raise RuntimeError(
                f"data quality: could not open the warehouse for GX: {_first_line(exc, password)}"
            ) from None
        gx_run = RunIdentifier(run_name=plan.run_id, run_time=datetime.now(UTC))
        # stored (validation results, Data Docs): a summary with a sample of failing rows, so
        # what is kept per run stays small however many rows fail
        stored_format = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": 20,
            "unexpected_index_column_names": ["scope_client", "scope_contract"],
        }
        for name in plan.names:
            doc = plan.docs_by_suite[name]
            rules = {r.name: r for r in suite_files.rules(name, doc)}
            asset = source.add_query_asset(
                name=name, query=assets.ASSET_SQL[doc["meta"]["erpsync_asset"]]
            )
            batch = asset.add_batch_definition_whole_table("whole_table")
            suite = ctx.suites.add(gx.ExpectationSuite(**doc))
            definition = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"erpsync_{name}", data=batch, suite=suite)
            )
            try:
                validated = definition.run(
                    expectation_parameters=plan.parameters,
                    result_format=stored_format,
                    run_id=gx_run,
                )
                results = {r.expectation_config.meta.get("name"): r for r in validated.results}
            except Exception as exc:  # noqa: BLE001 - a suite that cannot run fails closed
                error = _first_line(exc, password)
                outcome.not_run.add(name)
                for rule in rules.values():
                    check = _failed_whole(name, rule, f"suite could not run: {error}")
                    outcome.checks.append(check)
                    outcome.findings.extend(_findings(check, rule, {}))
                continue
            for rule in rules.values():
                result = results.get(rule.name)
                if result is None:
                    check = _failed_whole(name, rule, "no result returned")
                    samples: dict[str, list[Any]] = {}
                else:
                    if _needs_scopes(rule, result):
                        result = _scope_pass(batch, suite, rule, plan.parameters, result)
                    check = _check_of(rule, result, password)
                    samples = _samples(rule, result)
                outcome.checks.append(check)
                outcome.findings.extend(_findings(check, rule, samples))
        with contextlib.suppress(Exception):  # close GX's pooled warehouse connections
            source.get_engine().dispose()
        if docs:
            try:
                sites = _build_docs(ctx, gx_run.run_name, plan.names)
                outcome.docs_url = sites.get("local_site") if isinstance(sites, dict) else None
            except Exception as exc:  # noqa: BLE001 - docs are a report; the checks stand
                outcome.docs_url = f"(Data Docs not built: {_first_line(exc, password)})"
    return outcome


def _apply(
    conn: psycopg.Connection[Any], run: RunInfo, plan: _Plan, outcome: _Outcome
) -> tuple[list[blocks.Block], list[blocks.Block], list[blocks.Block]]:
    """Open, refresh and clear the blocks the outcome calls for and audit the run, in one
    transaction (module doc, step 4). Returns (opened, cleared, active)."""
    from erpsync import audit

    checks = outcome.checks
    with conn.transaction():
        evaluated = [n for n in plan.names if n not in outcome.not_run]
        opened, cleared = blocks.apply(conn, run, evaluated, outcome.findings)
        active = blocks.active_blocks(conn)
        audit.record(
            conn,
            actor=run.actor or "unknown",
            action="data_quality.checked",
            entity_type="dq_run",
            entity_id=run.run_id,
            source=run.audit_source(),
            detail={
                "suites": plan.names,
                "expectations": len(checks),
                "critical_failed": [
                    c.label for c in checks if not c.success and c.severity == "critical"
                ],
                "warnings": [c.label for c in checks if not c.success and c.severity == "warning"],
                "blocks_opened": len(opened),
                "blocks_cleared": len(cleared),
            },
        )
    return list(opened), list(cleared), list(active)


def run_suites(
    conn: psycopg.Connection[Any],
    run: RunInfo,
    *,
    suites: list[str] | None = None,
    docs: bool = True,
    today: date | None = None,
) -> DQResult:
    """Run ``suites`` (default: all) against the warehouse ``conn`` is connected to, apply the
    blocks, build Data Docs; returns the outcome (see :meth:`DQResult.summary` for the log).

    ``conn``: an open warehouse connection (the caller opens and closes it); GX reads through
    its own connections to the same database (:func:`warehouse_url`). The blocks and the audit
    row are written in one transaction on ``conn`` (committed here unless the caller has one
    open, which it then commits)."""
    import time

    started = time.monotonic()
    plan = _plan(run, suites, today)
    url, password = warehouse_url(conn)
    outcome = _validate(url, password, plan, docs=docs)
    opened, cleared, active = _apply(conn, run, plan, outcome)
    return DQResult(
        run_id=plan.run_id,
        suites=tuple(plan.names),
        checks=tuple(outcome.checks),
        opened=tuple(opened),
        cleared=tuple(cleared),
        active=tuple(active),
        docs_url=outcome.docs_url,
        seconds=time.monotonic() - started,
    )


__all__ = [
    "Check",
    "DQResult",
    "docs_index",
    "gx_home",
    "run_suites",
    "sqlalchemy_url",
    "warehouse_url",
]
