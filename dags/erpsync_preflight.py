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
        from erpsync.airflow import preflight_tasks

        return preflight_tasks.check_warehouse()

    @task
    def check_configuration() -> dict:
        from erpsync.airflow import preflight_tasks

        return preflight_tasks.check_configuration()

    @task
    def check_systems() -> dict:
        from erpsync.airflow import preflight_tasks

        return preflight_tasks.check_systems()

    @task
    def check_tenants() -> dict:
        from erpsync.airflow import preflight_tasks

        return preflight_tasks.check_tenants()

    @task
    def record_result(
        warehouse: dict, configuration: dict, systems: dict, tenants: dict, **context
    ) -> None:
        from erpsync.airflow import preflight_tasks

        preflight_tasks.record_result(
            context,
            {
                "warehouse": warehouse,
                "configuration": configuration,
                "systems": systems,
                "tenants": tenants,
            },
        )

    systems, tenants = check_systems(), check_tenants()
    systems >> tenants  # what is in each system is checked once each one answers
    record_result(check_warehouse(), check_configuration(), systems, tenants)


dag = erpsync_preflight()
