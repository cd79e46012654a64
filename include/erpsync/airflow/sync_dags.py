"""One factory for the sync DAGs: a list of entity specs plus write-back targets -> a DAG.

Each spec becomes a task ``sync_<entity>`` (in the pool of its system, publishing the Asset of
the core table it changes); each write-back target becomes a task ``write_back_<system>`` that
runs after every sync and sends that system's outbox. The task code is
:mod:`erpsync.airflow.sync_tasks` (around :func:`erpsync.sync.engine.run_entity_sync` and
:func:`erpsync.writeback.relay.run_outbox`), imported inside the tasks so parsing a DAG file
stays cheap.

Time zone: the schedule uses :data:`erpsync.airflow.dag_defaults.FIRM_TIMEZONE` (its docstring
says where it comes from).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, CronTriggerTimetable, task
from airflow.sdk.definitions.deadline import DeadlineAlert

from erpsync.airflow.dag_defaults import DEFAULT_FIRM_TIMEZONE as DEFAULT_FIRM_TIMEZONE
from erpsync.airflow.dag_defaults import FIRM_TIMEZONE as FIRM_TIMEZONE
from erpsync.airflow.dag_defaults import default_args
from erpsync.request_budget import counted_requests
from erpsync.sync.spec import EntitySpec

#: Airflow pool per system (airflow_settings.yaml): caps how many tasks wait on each vendor's
#: budget at once; the requests themselves are paced by the client-side limiter, shared
#: across processes through the warehouse (erpsync.connectors.throttle).
POOLS = {"crm": "crm_api", "psa": "psa_api", "erp": "erp_api"}

ID_MAP_ASSET = Asset(name="erpsync_core_id_map", uri="erpsync://warehouse/core/id_map")


def asset_for(core_table: str) -> Asset:
    """The Airflow Asset of a warehouse table (``core.clients`` -> erpsync://warehouse/core/clients)."""
    schema, _, table = core_table.partition(".")
    return Asset(name=f"erpsync_{schema}_{table}", uri=f"erpsync://warehouse/{schema}/{table}")


def _sync_task(spec: EntitySpec) -> Any:
    @task(
        task_id=f"sync_{spec.name}",
        pool=POOLS[spec.system],
        outlets=[asset_for(spec.core_table)],
        doc_md=spec.description or None,
    )
    @counted_requests
    def sync(**context: Any) -> dict[str, Any]:
        from erpsync.airflow import sync_tasks

        return sync_tasks.sync_entity(spec.name, context)

    return sync


def _write_back_task(target: str) -> Any:
    @task(task_id=f"write_back_{target}", pool=POOLS[target], outlets=[ID_MAP_ASSET])
    @counted_requests
    def write_back(**context: Any) -> dict[str, Any]:
        from erpsync.airflow import sync_tasks

        return sync_tasks.write_back(target, context)

    return write_back


def entities_doc(specs: Sequence[EntitySpec]) -> str:
    """The "Entities" section of a sync DAG's docs: one line per spec (task, system, core
    table, the spec's description)."""
    lines = ["#### Entities", ""]
    for spec in specs:
        about = f": {spec.description}" if spec.description else ""
        lines.append(f"- `sync_{spec.name}` ({spec.system.upper()} to `{spec.core_table}`){about}")
    return "\n".join(lines) + "\n"


def build_sync_dag(
    *,
    dag_id: str,
    specs: Sequence[EntitySpec],
    write_back: Sequence[str] = (),
    also: Sequence[Callable[[], Callable[..., Any]]] = (),
    cron: str,
    doc_md: str,
    tags: list[str],
    timezone: str | None = None,
    deadline: DeadlineAlert | None = None,
) -> DAG:
    """A sync DAG on ``cron`` (nightly, hourly ...): ``sync_<entity>`` per spec, then
    ``write_back_<system>`` per target.
    ``also``: factories of further tasks that read a system but are no entity spec (the invoice
    payment status); they run alongside the syncs.

    ``deadline``: a DeadlineAlert (dag_defaults.deadline) for the nightly syncs.

    The DAG's docs are ``doc_md`` followed by its entities, listed from the specs
    (:func:`entities_doc`), so a new spec shows up in the UI without a docs edit."""
    unknown = sorted(set(write_back) - set(POOLS))
    if unknown:
        raise ValueError(f"{dag_id}: unknown write-back targets {unknown}")
    zone = timezone or FIRM_TIMEZONE
    with DAG(
        dag_id=dag_id,
        schedule=CronTriggerTimetable(cron, timezone=zone),
        start_date=pendulum.datetime(2026, 1, 1, tz=zone),
        catchup=False,
        default_args=default_args(),
        tags=tags,
        doc_md=doc_md.rstrip() + "\n\n" + entities_doc(specs),
        max_active_runs=1,
        deadline=deadline,
    ) as dag:
        syncs = [_sync_task(spec)() for spec in specs]
        for factory in also:
            factory()()
        for target in write_back:
            _write_back_task(target)().set_upstream(syncs)
    return dag
