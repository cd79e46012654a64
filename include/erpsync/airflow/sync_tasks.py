"""The task code of the sync DAGs (:func:`erpsync.airflow.sync_dags.build_sync_dag`): each
function turns the Airflow context into arguments, opens what the library needs (the
warehouse connection of the Airflow connection ``erpsync_warehouse``, the vendor client on its
default connection), calls one library function and logs its typed result's summary.

Imported inside the tasks, so parsing a DAG file stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from erpsync.sync.spec import RunInfo

if TYPE_CHECKING:
    import psycopg

__all__ = ["invoice_payment_status", "sync_entity", "write_back"]


def _side_connection() -> psycopg.Connection[Any]:
    """The second (autocommit) warehouse connection a delete strategy may ask for."""
    from erpsync.warehouse import connection

    conn: psycopg.Connection[Any] = connection.connect(autocommit=True)
    return conn


def sync_entity(name: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """``sync_<entity>``: :func:`erpsync.sync.engine.run_entity_sync` of the spec ``name``."""
    from erpsync.sync import engine, specs
    from erpsync.warehouse import connection

    spec = specs.get(name)
    run = RunInfo.from_context(context)
    with connection.connect() as conn, spec.source.client() as client:
        stats = engine.run_entity_sync(conn, spec, run=run, client=client, side=_side_connection)
    print(stats.summary())
    return stats.as_dict()


def write_back(target: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """``write_back_<target>``: :func:`erpsync.writeback.relay.run_outbox` for one system.

    Transient failures fail the task so Airflow retries it with backoff; the rows stay pending
    and the retry sends them (check-then-create, so never twice). Permanent failures are in
    the exceptions queue for a person, not retried here."""
    from erpsync.warehouse import connection
    from erpsync.writeback import relay

    with connection.connect(autocommit=True) as conn:
        result = relay.run_outbox(conn, target, run=RunInfo.from_context(context))
    print(f"write-back to {target.upper()}: {result}")
    if result.left_pending:
        raise RuntimeError(
            f"{result.left_pending} write(s) to the {target.upper()} failed and stay "
            f"pending for the retry: {'; '.join(result.errors[:5])}"
        )
    summary: dict[str, Any] = result.as_dict()
    return summary


def invoice_payment_status(context: Mapping[str, Any], timezone: str) -> dict[str, Any]:
    """``sync_invoice_payment_status``:
    :func:`erpsync.invoicing.payment_status.sync_payment_status` in one warehouse
    transaction; ``timezone`` is the firm's (the day the ERP was read dates a changed
    remaining amount)."""
    import pendulum

    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.invoicing.payment_status import sync_payment_status
    from erpsync.warehouse import connection

    run = RunInfo.from_context(context)
    day = pendulum.now(timezone).date()
    with BusinessCentralClient() as erp, connection.connect() as conn:
        stats = sync_payment_status(conn, erp, run, day=day)
    print(f"invoice payment status as of {day}: {stats.as_dict()}")
    summary: dict[str, Any] = stats.as_dict()
    return summary
