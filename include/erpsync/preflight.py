"""Pre-flight checks run before the pack's chain: is the warehouse at the schema version this
pack needs and is its audit trail intact, are the connections and variables the pack uses
defined, does each external system answer, and does each tenant have everything the pack needs
(the checks of ``erpsync check-systems``, :mod:`erpsync.tenant_check`).

Each check returns a small summary (safe for XCom: no secrets) or raises ``PreflightError``
saying what to fix. The checks take what they read (an open warehouse connection, Airflow's
lookups, the vendor clients) from the caller (:mod:`erpsync.airflow.preflight_tasks`); the
connection ids are the clients' own defaults (``default_conn_id``), named nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from erpsync import audit

if TYPE_CHECKING:
    import psycopg

    from erpsync.tenant_check import SystemClients

REQUIRED_VARIABLES = ("erpsync_firm_timezone",)


class HttpConnection(Protocol):
    """What :func:`base_url` reads of an Airflow connection."""

    host: str | None
    port: int | None
    schema: str | None


def system_connections() -> dict[str, str]:
    """The Airflow connection id of each system (``crm``, ``psa``, ``erp``): its client's
    ``default_conn_id``."""
    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.connectors.harvest import HarvestClient
    from erpsync.connectors.salesforce import SalesforceClient

    return {
        "crm": SalesforceClient.default_conn_id,
        "psa": HarvestClient.default_conn_id,
        "erp": BusinessCentralClient.default_conn_id,
    }


class PreflightError(RuntimeError):
    """A pre-flight check failed; the message says what to fix. Retrying will not help."""


class SystemUnreachable(RuntimeError):
    """A system did not answer; this may be transient, so the task retries."""


@dataclass(frozen=True)
class WarehouseStatus:
    schema_version: int
    required_version: int
    audit_rows: int


def check_warehouse(conn: psycopg.Connection[Any]) -> WarehouseStatus:
    """The warehouse must be at the pack's schema version and its audit chain must verify."""
    from erpsync.warehouse import migrate

    required = migrate.latest_version()
    version = max(migrate.applied(conn), default=0)
    if version < required:
        raise PreflightError(
            f"the warehouse schema is at version {version} but this pack needs {required}: "
            "run `erpsync db migrate` (or the compose init service)"
        )
    broken = conn.execute("SELECT audit_id, problem FROM audit.verify_chain() LIMIT 5").fetchall()
    if broken:
        detail = "; ".join(f"row {a}: {p}" for a, p in broken)
        raise PreflightError(f"the audit trail failed verification: {detail}")
    row = conn.execute("SELECT count(*) FROM audit.audit_log").fetchone()
    return WarehouseStatus(version, required, int(row[0]) if row else 0)


def check_configuration(
    get_connection: Callable[[str], object], get_variable: Callable[[str], object]
) -> dict[str, str]:
    """Every system connection and required variable resolves; the firm time zone is valid.

    ``get_connection(conn_id)`` and ``get_variable(key)`` are Airflow's lookups (passed in so
    this stays testable); they raise when the entry is missing.
    """
    missing = []
    for conn_id in system_connections().values():
        try:
            get_connection(conn_id)
        except Exception:  # noqa: BLE001 - Airflow raises its own not-found type per version
            missing.append(f"connection {conn_id}")
    values: dict[str, str] = {}
    for key in REQUIRED_VARIABLES:
        try:
            values[key] = str(get_variable(key))
        except Exception:  # noqa: BLE001 - as above, for Variables
            missing.append(f"variable {key}")
    if missing:
        raise PreflightError(
            "missing from Airflow: "
            + ", ".join(missing)
            + ". Apply the settings with `erpsync settings apply` or define them in your "
            "secrets backend."
        )
    try:
        ZoneInfo(values["erpsync_firm_timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise PreflightError(
            f"variable erpsync_firm_timezone={values['erpsync_firm_timezone']!r} is not an IANA "
            "time zone such as Europe/London"
        ) from None
    return values


def base_url(conn: HttpConnection) -> str:
    """``scheme://host[:port]`` of an HTTP connection (host may already carry the scheme)."""
    host = (conn.host or "").rstrip("/")
    if "://" in host:
        return host if not conn.port else f"{host}:{conn.port}"
    scheme = conn.schema or "https"
    return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")


def check_reachable(name: str, url: str, timeout: float = 10.0) -> int:
    """GET the system's base URL without credentials; any HTTP answer counts as reachable."""
    import httpx

    try:
        response = httpx.get(url, timeout=httpx.Timeout(timeout, connect=5.0))
    except httpx.HTTPError as exc:
        raise SystemUnreachable(
            f"{name.upper()} at {url} did not answer ({type(exc).__name__}). Check the "
            f"connection {system_connections()[name]} or start the sandbox with "
            "`erpsync sandbox serve`."
        ) from None
    return response.status_code


def check_systems(
    get_connection: Callable[[str], HttpConnection], echo: Callable[[str], object] = print
) -> dict[str, int]:
    """GET each system's base URL (from its Airflow connection, ``get_connection``); echo one
    line each. Returns the HTTP status per system; raises :class:`SystemUnreachable` (the task
    retries) for one that does not answer."""
    answers: dict[str, int] = {}
    for name, conn_id in system_connections().items():
        url = base_url(get_connection(conn_id))
        answers[name] = check_reachable(name, url)
        echo(f"{name.upper()} answered HTTP {answers[name]} at {url}")
    return answers


def check_tenants(clients: SystemClients, echo: Callable[[str], object] = print) -> dict[str, int]:
    """Run every tenant requirement check (as ``erpsync check-systems``) through ``clients``,
    echo one line each, and raise ``PreflightError`` listing the failed ones. Returns OK/FAIL
    counts per system."""
    from erpsync import tenant_check

    counts: dict[str, int] = {}
    failed: list[str] = []
    for check in tenant_check.run_checks(clients):
        line = tenant_check.format_check(check)
        echo(line)
        key = f"{check.system}_{'ok' if check.ok else 'fail'}"
        counts[key] = counts.get(key, 0) + 1
        if not check.ok:
            failed.append(line)
    if failed:
        raise PreflightError(
            f"{len(failed)} tenant requirement(s) failed (run `erpsync check-systems`):\n"
            + "\n".join(failed)
        )
    return counts


def record_passed(
    conn: psycopg.Connection[Any], *, actor: str, source: audit.Source, results: dict[str, Any]
) -> int:
    """Audit that the pre-flight passed (``preflight.passed``, with every check's summary);
    returns the audit row's id."""
    audit_id: int = audit.record(
        conn,
        actor=actor,
        action="preflight.passed",
        entity_type="pack",
        detail=results,
        source=source,
    )
    return audit_id
