"""The reconcile and data-quality DAGs' task code (the DAG files only wire it).

Each function turns the Airflow context into arguments, opens the warehouse through the
``erpsync_warehouse`` connection (:func:`erpsync.warehouse.connection.connect`), calls the
library and logs its typed result's summary; it returns a small JSON-safe dict for XCom. Heavy
imports (GX, the reconciliation) happen inside.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from erpsync.sync.spec import RunInfo


def _run(context: Any) -> RunInfo:
    from erpsync.sync.spec import RunInfo

    return RunInfo.from_context(context)


def _as_of(context: Any) -> dt.date | None:
    value = (context.get("params") or {}).get("as_of")
    return dt.date.fromisoformat(str(value)) if value else None


def refresh_milestones(context: Any) -> dict[str, int]:
    """Milestone acceptance from the CRM (Contract_Milestone__c, synced incrementally into
    core.crm_milestones) onto core.contract_milestones."""
    from contextlib import closing

    from erpsync.connectors.salesforce import SalesforceClient
    from erpsync.reconcile import milestones
    from erpsync.warehouse import connection

    run = _run(context)
    with connection.connect() as conn, closing(SalesforceClient()) as crm:
        pulled = milestones.pull_crm_milestones(conn, crm, run=run)
    with connection.connect() as conn:
        outcome = milestones.refresh_milestones(conn, run)
    print(
        f"milestones from the CRM: {pulled.read} record(s) read ({pulled.mode}); "
        f"acceptance refreshed: {outcome}"
    )
    return outcome


def reconcile(context: Any) -> dict[str, Any]:
    """Classify every item (recon.items) in one transaction; log the counts per state."""
    from erpsync.console import insights
    from erpsync.reconcile import run_reconcile
    from erpsync.warehouse import connection

    with connection.connect() as conn:
        result = run_reconcile(conn, _run(context), as_of=_as_of(context))
        conn.commit()
        # the process-intelligence summaries (migration 0029) follow the reconciliation
        refreshed = insights.refresh_summaries(conn, if_stale=True)
    print(f"insights summaries rebuilt: {refreshed}")
    print(result.summary())
    return result.as_dict()


def data_quality(context: Any, suites: list[str] | None = None) -> dict[str, Any]:
    """Run the GX suites (default all), apply the invoicing blocks, build Data Docs."""
    from erpsync import quality
    from erpsync.warehouse import connection

    with connection.connect() as conn:
        result = quality.run_suites(conn, _run(context), suites=suites, docs=True)
    print(result.summary())
    return result.as_dict()


def finance_report(context: Any) -> str:
    """The per-client finance table, at the very end of the log (after any DQ block notice)."""
    from erpsync import quality
    from erpsync.reconcile.report import finance_table
    from erpsync.warehouse import connection

    with connection.connect() as conn:
        active = quality.active_blocks(conn)
        table = finance_table(conn, as_of=_as_of(context))
    if active:
        print(
            "Held by data quality (not invoiced until the check passes again):\n"
            + "\n".join(f"  - {b.describe()}" for b in active)
        )
    print(table)
    return f"{len(active)} data-quality blocks active"
