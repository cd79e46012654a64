"""`erpsync demo --once` runs the main chain as a user runs it (syncs, onboarding, reconcile,
invoice batches approved through Airflow's REST API) and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.integration.demo_helpers import _demo_env


def test_demo_once_runs_the_main_chain_and_exits_zero(airflow_runtime, warehouse_db):
    # Its own warehouse: the session's is shared with DAG tests that ran other sandboxes, whose
    # PSA/ERP ids in core.id_map the demo's fresh sandbox does not have.
    # Harvest's 100-requests-per-15-s limit is proven by the sandbox and connector tests; here
    # it would only make the chain wait out Retry-After, so the demo's sandbox runs without it.
    result = subprocess.run(
        [sys.executable, "-m", "erpsync.cli", "demo", "--once"],
        env=_demo_env(
            airflow_runtime, ERPSYNC_SANDBOX_PSA_RATE_LIMIT="off", ERPSYNC_DATABASE_URL=warehouse_db
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "erpsync main chain" in result.stdout
    from erpsync.runtime.demo import MAIN_CHAIN

    for dag_id in MAIN_CHAIN:  # the whole chain, billing included
        assert re.search(rf"^{dag_id}\s+success", result.stdout, re.M), result.stdout
    assert "approved by approver via the REST API" in result.stdout
    # the summary: invoices per client and currency with totals, items held by reason
    summary = result.stdout[result.stdout.index("invoices per client and currency") :]
    assert "(no invoices)" not in summary and "items held, by reason" in summary
    assert "all DAG runs succeeded" in result.stdout
