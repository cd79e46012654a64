"""Reconciliation: every billable (or not) item, classified once, with the reason it waits.

The public API (``dags/erpsync_reconcile.py`` and the billing DAGs call these through
:mod:`erpsync.airflow.reconcile_tasks`):

* :func:`run_reconcile` -> :class:`ReconcileResult` (run.py: the engine - shards, workers,
  snapshot, swap; its docstring states the billing rules and the precedence of reasons)
* the statements it runs: sql.py (rendered into ``tests/golden/reconcile_classify.sql``)
* :mod:`~erpsync.reconcile.milestones` (fixed-fee milestones), :mod:`~erpsync.reconcile.policy`
  (the audited settings), :mod:`~erpsync.reconcile.report`, :mod:`~erpsync.reconcile.rows`
"""

from __future__ import annotations

from erpsync.reconcile.run import (
    ENTRY_REASONS,
    GROUP_REASONS,
    PARALLEL_MIN_ENTRIES,
    STATES,
    ReconcileResult,
    run_reconcile,
)

__all__ = [
    "ENTRY_REASONS",
    "GROUP_REASONS",
    "PARALLEL_MIN_ENTRIES",
    "STATES",
    "ReconcileResult",
    "run_reconcile",
]
