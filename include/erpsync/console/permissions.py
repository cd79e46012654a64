"""Who may do what in the console, asked of Airflow's own auth manager.

The console adds no users, roles or resources of its own: each console action maps onto a
permission Airflow already has, so the demo's simple auth manager and the FAB roles of the compose
deployment (:mod:`erpsync.deploy.roles`) answer it the same way:

- ``READ``: the Airflow website, and reading the pack's DAGs. FAB: all three roles; simple:
  viewer and up.
- ``ACT_EXCEPTIONS``: edit the HITL details of ``erpsync_reconcile`` (the DAG that raises and
  resolves the reconciliation exceptions). FAB: finance_ops, data_engineer; simple: user and up.
- ``ACT_BATCHES``: edit the HITL details of ``erpsync_invoice_batches``. Same roles.
- ``REQUEUE``: edit the task instances of every sync DAG (clearing a sync task is what a re-read
  amounts to). FAB: data_engineer; simple: user and up.

Auditors (FAB ``auditor``, simple ``viewer``) read everything and change nothing. The simple auth
manager has no role between "user" and "op" that could keep requeueing from finance ops: there a
user may requeue, as they may clear the sync tasks in Airflow itself.

Sources: ``airflow/api_fastapi/auth/managers/base_auth_manager.py`` (``is_authorized_view``,
``is_authorized_dag``) and ``simple/simple_auth_manager.py`` of apache-airflow 3.3.2;
``providers/fab/auth_manager/fab_auth_manager.py`` of apache-airflow-providers-fab 3.10.2.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import (
        BaseAuthManager,
        ResourceMethod,
    )
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

#: The DAG whose runs raise and resolve the exceptions queue.
EXCEPTIONS_DAG = "erpsync_reconcile"
#: The DAG whose runs ask for and act on invoice batch approvals.
BATCHES_DAG = "erpsync_invoice_batches"
#: The DAGs that read records from the CRM, PSA and ERP (and so quarantine them).
SYNC_DAGS = ("erpsync_master_data_sync", "erpsync_time_expense_sync", "erpsync_rates_sync")


class Action(enum.Enum):
    READ = "read"
    ACT_EXCEPTIONS = "act_exceptions"
    ACT_BATCHES = "act_batches"
    REQUEUE = "requeue"


def allowed(action: Action, user: BaseUser, auth_manager: BaseAuthManager[BaseUser]) -> bool:
    """Whether ``user`` may do ``action``, as ``auth_manager`` decides."""
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        AccessView,
        DagAccessEntity,
        DagDetails,
    )

    def dag(method: ResourceMethod, dag_id: str, entity: DagAccessEntity | None = None) -> bool:
        return bool(
            auth_manager.is_authorized_dag(
                method=method, access_entity=entity, details=DagDetails(id=dag_id), user=user
            )
        )

    if action is Action.READ:
        return bool(
            auth_manager.is_authorized_view(access_view=AccessView.WEBSITE, user=user)
        ) and dag("GET", EXCEPTIONS_DAG)
    if action is Action.ACT_EXCEPTIONS:
        return dag("PUT", EXCEPTIONS_DAG, DagAccessEntity.HITL_DETAIL)
    if action is Action.ACT_BATCHES:
        return dag("PUT", BATCHES_DAG, DagAccessEntity.HITL_DETAIL)
    if action is Action.REQUEUE:
        return all(dag("PUT", d, DagAccessEntity.TASK_INSTANCE) for d in SYNC_DAGS)
    raise ValueError(f"unknown console action {action!r}")


def allowed_actions(user: BaseUser, auth_manager: BaseAuthManager[BaseUser]) -> frozenset[Action]:
    return frozenset(a for a in Action if allowed(a, user, auth_manager))
