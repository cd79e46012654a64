"""The Airflow task that brings invoice payment status back from the ERP (cash).

Runs in the nightly master data sync (the DAG whose other ERP reads are the tax codes and
rates), in the ERP's pool: :func:`erpsync.airflow.sync_tasks.invoice_payment_status`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def payment_status_task() -> Callable[..., Any]:
    """``sync_invoice_payment_status``: a task factory for :func:`build_sync_dag`."""

    @task(
        task_id="sync_invoice_payment_status",
        pool=POOLS["erp"],
        outlets=[asset_for("billing.erp_invoice_status")],
        doc_md=TASK_DOC,
    )
    def sync_invoice_payment_status(**context: Any) -> dict[str, Any]:
        from erpsync.airflow import sync_tasks

        return sync_tasks.invoice_payment_status(context, FIRM_TIMEZONE)

    return sync_invoice_payment_status
