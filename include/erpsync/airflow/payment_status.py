"""The Airflow task that brings invoice payment status back from the ERP (cash).

Runs in the nightly master data sync (the DAG whose other ERP reads are the tax codes and
rates): :func:`erpsync.invoicing.payment_status.sync_payment_status` in one warehouse
transaction, in the ERP's pool. Imports happen inside the task so parsing the DAG stays cheap.
"""

from __future__ import annotations

from airflow.sdk import task

from erpsync.airflow.sync_dags import FIRM_TIMEZONE, POOLS, asset_for

__all__ = ["TASK_DOC", "payment_status_task"]

TASK_DOC = """
**Invoice payment status (from the ERP).** For every invoice erpsync pushed, reads from Business
Central whether it is open, partly paid, paid, canceled or corrective, what remains to be paid
and its due date. Finance sees the result on the console's *Insights* page: days sales
outstanding by month and overdue receivables per client (1-30, 31-60, 61-90, over 90 days).
A payment counts from the night this task first sees it. Nothing is written to the ERP.
"""


def payment_status_task():
    """``sync_invoice_payment_status``: a task factory for :func:`build_sync_dag`."""

    @task(
        task_id="sync_invoice_payment_status",
        pool=POOLS["erp"],
        outlets=[asset_for("billing.erp_invoice_status")],
        doc_md=TASK_DOC,
    )
    def sync_invoice_payment_status(**context) -> dict:
        import pendulum

        from erpsync.connectors.business_central import BusinessCentralClient
        from erpsync.invoicing.payment_status import sync_payment_status
        from erpsync.sync.sources import ERP_CONN_ID
        from erpsync.sync.spec import RunInfo
        from erpsync.warehouse import connection

        run = RunInfo.from_context(context)
        # the day the ERP was read, in the firm's zone: it dates a changed remaining amount
        day = pendulum.now(FIRM_TIMEZONE).date()
        erp = BusinessCentralClient(conn_id=ERP_CONN_ID)
        try:
            with connection.connect() as conn:
                stats = sync_payment_status(conn, erp, run, day=day)
        finally:
            erp.close()
        print(f"invoice payment status as of {day}: {stats.as_dict()}")
        return stats.as_dict()

    return sync_invoice_payment_status
