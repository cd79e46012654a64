"""One client per vendor system, built on the Airflow connection (apache-airflow-providers-http).

* :class:`~erpsync.connectors.salesforce.SalesforceClient` (CRM, connection ``erpsync_crm``)
* :class:`~erpsync.connectors.harvest.HarvestClient` (PSA, ``erpsync_psa``)
* :class:`~erpsync.connectors.business_central.BusinessCentralClient` (ERP, ``erpsync_erp``)

Shared request loop, retry rules and secret handling: :mod:`erpsync.connectors.http`; errors:
:mod:`erpsync.connectors.errors`; incremental cursors: :mod:`erpsync.connectors.cursors`.
Submodules are imported on use (and import Airflow only when a client first sends a request),
so importing them at DAG parse time costs nothing and touches no connection.

A client does no I/O when constructed; the connection is resolved on the first request. Inside a
task that goes through the Task SDK. Outside a task (tests, scripts) Airflow 3.3 resolves
``AIRFLOW_CONN_<CONN_ID>`` environment variables (JSON or URI) through
``BaseHook.get_connection`` in a plain process: no metadata database, task context or
``[core] unit_test_mode`` is needed (verified with apache-airflow 3.3.2 / task-sdk 1.3.2).

A client keeps per-instance state (session, token, stats) and is meant for one thread; create
one per task (or per thread).
"""
