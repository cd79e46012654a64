"""The project-setup DAG's task code (``dags/erpsync_project_setup.py`` only wires it).

Opens the warehouse in autocommit mode (each onboarding step commits on its own) and the vendor
clients on their default Airflow connections, runs one onboarding pass
(:func:`erpsync.onboarding.setup.run_project_setup`) and logs its summary.
"""

from __future__ import annotations

from typing import Any


def set_up_projects(context: Any) -> dict[str, Any]:
    """Closed-won opportunities changed since the last run (all with the ``full`` param), plus
    every unfinished setup, set up; fails (so Airflow retries) when a step failed: the retry,
    or the next run, resumes where each one stopped."""
    from erpsync.onboarding import setup
    from erpsync.sync.spec import RunInfo
    from erpsync.warehouse import connection

    full = bool((context.get("params") or {}).get("full"))
    with connection.connect(autocommit=True) as conn:
        stats = setup.run_project_setup(
            conn, setup.Systems(), run=RunInfo.from_context(context), full=full
        )
    print(stats.summary())
    if stats.failed:
        # recorded per step; the retry (or the next run) resumes where each one stopped
        raise RuntimeError(f"setup steps failed, will resume: {stats.failed}")
    return stats.as_dict()
