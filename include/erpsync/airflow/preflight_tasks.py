"""The pre-flight DAG's task code (``dags/erpsync_preflight.py`` only wires it).

Each function opens what its check reads (the warehouse through
:func:`erpsync.warehouse.connection.connect`, Airflow's connection and Variable lookups, the
vendor clients on their default connections), calls one :mod:`erpsync.preflight` check and
logs what it found. A check that will not pass on a retry (``preflight.PreflightError``) fails
the task at once (:func:`erpsync.airflow.errors.fail_without_retry`); a system that does not
answer retries.
"""

from __future__ import annotations

from typing import Any

from erpsync.airflow.errors import fail_without_retry


def check_warehouse() -> dict[str, int]:
    """Schema version and audit chain of the warehouse."""
    from erpsync import preflight
    from erpsync.warehouse import connection

    with fail_without_retry(preflight.PreflightError), connection.connect() as conn:
        status = preflight.check_warehouse(conn)
    print(
        f"warehouse schema version {status.schema_version} (needs "
        f"{status.required_version}); audit trail intact, {status.audit_rows} rows"
    )
    return {"schema_version": status.schema_version, "audit_rows": status.audit_rows}


def check_configuration() -> dict[str, str]:
    """The system connections and required Variables are defined; the firm time zone is valid."""
    from airflow.sdk import BaseHook, Variable

    from erpsync import preflight

    with fail_without_retry(preflight.PreflightError):
        values = preflight.check_configuration(BaseHook.get_connection, Variable.get)
    print(f"connections and variables present; firm time zone {values['erpsync_firm_timezone']}")
    return {"firm_timezone": values["erpsync_firm_timezone"]}


def check_systems() -> dict[str, int]:
    """Each system answers at its connection's base URL (HTTP status per system)."""
    from airflow.sdk import BaseHook

    from erpsync import preflight

    return preflight.check_systems(BaseHook.get_connection)


def check_tenants() -> dict[str, int]:
    """Every tenant requirement (as ``erpsync check-systems``), one line each."""
    from erpsync import preflight
    from erpsync.tenant_check import SystemClients

    with fail_without_retry(preflight.PreflightError):
        return preflight.check_tenants(SystemClients.default())


def record_result(context: Any, results: dict[str, Any]) -> int:
    """Audit the pass (who triggered it, every check's summary); returns the audit row id."""
    from erpsync import audit, preflight
    from erpsync.warehouse import connection

    with connection.connect() as conn:
        audit_id = preflight.record_passed(
            conn,
            actor=audit.actor_from_context(context),
            source=audit.Source.from_context(context),
            results=results,
        )
    print(f"pre-flight passed; audit row {audit_id}")
    return audit_id
