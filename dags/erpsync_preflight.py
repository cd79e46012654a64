"""
### Pre-flight check

Runs before the rest of the pack (and whenever you trigger it) to confirm that erpsync can do
its job safely:

1. **Warehouse**: the warehouse database is at the schema version this version of erpsync
   needs, and the audit trail verifies (no audit row was changed or removed).
2. **Configuration**: the CRM, PSA and ERP connections and the firm's time zone are defined.
3. **Systems**: the CRM, PSA and ERP each answer over the network.
4. **Tenants**: each system has everything the pack needs, and the pack's credentials may use
   it (the same checks as `erpsync check-systems`: Salesforce objects and fields, Harvest
   account, modules and tasks, Business Central company and setup tables). The log has one
   `OK|FAIL` line per requirement, saying what to fix.

If a check fails, the task log says exactly what to fix. A successful check is recorded in the
audit trail with who triggered it.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from erpsync.airflow.dag_defaults import dag_kwargs, tags
from erpsync.airflow.errors import fail_without_retry


@dag(
    dag_id="erpsync_preflight",
    schedule=None,
    tags=tags("ops"),
    doc_md=__doc__,
    **dag_kwargs(),
)
def erpsync_preflight():
    @task
    def check_warehouse() -> dict:
        from erpsync import preflight
        from erpsync.warehouse import connection

        with fail_without_retry(preflight.PreflightError), connection.connect() as conn:
            status = preflight.check_warehouse(conn)
        print(
            f"warehouse schema version {status.schema_version} (needs "
            f"{status.required_version}); audit trail intact, {status.audit_rows} rows"
        )
        return {"schema_version": status.schema_version, "audit_rows": status.audit_rows}

    @task
    def check_configuration() -> dict:
        from airflow.sdk import BaseHook, Variable

        from erpsync import preflight

        with fail_without_retry(preflight.PreflightError):
            values = preflight.check_configuration(BaseHook.get_connection, Variable.get)
        print(
            f"connections and variables present; firm time zone {values['erpsync_firm_timezone']}"
        )
        return {"firm_timezone": values["erpsync_firm_timezone"]}

    @task
    def check_systems() -> dict:
        from airflow.sdk import BaseHook

        from erpsync import preflight

        answers = {}
        for name, conn_id in preflight.SYSTEM_CONNECTIONS.items():
            url = preflight.base_url(BaseHook.get_connection(conn_id))
            answers[name] = preflight.check_reachable(name, url)
            print(f"{name.upper()} answered HTTP {answers[name]} at {url}")
        return answers

    @task
    def check_tenants() -> dict:
        from erpsync import preflight

        with fail_without_retry(preflight.PreflightError):
            return preflight.check_tenants()

    @task
    def record_result(warehouse: dict, configuration: dict, systems: dict, tenants: dict) -> None:
        from airflow.sdk import get_current_context

        from erpsync import audit
        from erpsync.warehouse import connection

        context = get_current_context()
        with connection.connect() as conn:
            audit_id = audit.record(
                conn,
                actor=audit.actor_from_context(context),
                action="preflight.passed",
                entity_type="pack",
                detail={
                    "warehouse": warehouse,
                    "configuration": configuration,
                    "systems": systems,
                    "tenants": tenants,
                },
                source=audit.Source.from_context(context),
            )
        print(f"pre-flight passed; audit row {audit_id}")

    systems, tenants = check_systems(), check_tenants()
    systems >> tenants  # what is in each system is checked once each one answers
    record_result(check_warehouse(), check_configuration(), systems, tenants)


dag = erpsync_preflight()
