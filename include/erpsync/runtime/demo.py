"""``make demo`` and ``make demo-once``: the whole pack on one machine.

``run(once=False)`` prepares everything (database, migrations, settings), starts the sandbox
systems and ``airflow standalone`` (scheduler, dag-processor, api-server, triggerer) and prints
the UI address and login; Ctrl-C (or SIGTERM) stops every process it started, including the
embedded database if the demo started it.

``run(once=True)`` prepares the same way, then runs the pack's main chain once as real DAG runs
(``airflow dags test``), prints a summary and returns non-zero if any run failed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from erpsync import paths
from erpsync.runtime import airflow_env, database, processes

# The pack's main chain, in order. DAGs not present yet are skipped, so later issues extend the
# demo by adding their DAG ids here.
MAIN_CHAIN = [
    "erpsync_preflight",
    "erpsync_master_data_sync",
    "erpsync_rates_sync",
    "erpsync_project_setup",
    "erpsync_time_expense_sync",
    "erpsync_reconcile",
    "erpsync_invoice_batches",
]


@dataclass
class ChainResult:
    dag_id: str
    state: str
    seconds: float


class _Stop(Exception):
    pass


def _start_sandbox(size: str, echo) -> subprocess.Popen | None:
    """Start the sandbox CRM/PSA/ERP (if the sandbox package is installed) and wait for it."""
    from importlib.util import find_spec

    if find_spec("erpsync_sandbox.cli") is None:
        echo("sandbox: not installed, skipping")
        return None
    log_file = paths.state_dir() / "sandbox.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    proc = processes.spawn(
        [
            sys.executable,
            "-m",
            "erpsync.cli",
            "sandbox",
            "serve",
            "--size",
            size,
            "--state-dir",
            str(paths.state_dir() / "sandbox"),
        ],
        {},
        log_file=log_file,
    )
    ok = all(
        processes.wait_for_http(f"http://127.0.0.1:{port}/__admin/health", timeout=180, proc=proc)
        for port in (18001, 18002, 18003)
    )
    if not ok:
        processes.stop_group(proc)
        raise RuntimeError(f"the sandbox did not start; see {log_file}")
    echo(f"sandbox: CRM :18001, PSA :18002, ERP :18003 (log {log_file})")
    return proc


def _present_dags(env: dict[str, str]) -> set[str]:
    result = processes.run_airflow(
        ["dags", "list", "--local", "--output", "json"], env, capture=True
    )
    for line in result.stdout.splitlines():  # log lines may precede the JSON list
        if line.startswith("[{") or line.strip() == "[]":
            return {d["dag_id"] for d in json.loads(line)}
    raise RuntimeError(f"could not read the DAG list from Airflow:\n{result.stdout[-2000:]}")


def _last_run_state(urls: database.DatabaseUrls, dag_id: str) -> str:
    import psycopg

    with psycopg.connect(urls.airflow) as conn:
        row = conn.execute(
            "SELECT state FROM dag_run WHERE dag_id = %s ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
    return row[0] if row else "not run"


def run_chain(urls: database.DatabaseUrls, env: dict[str, str], echo) -> list[ChainResult]:
    """Run each present DAG of the main chain once, in order, stopping at the first failure."""
    present = _present_dags(env)
    results: list[ChainResult] = []
    for dag_id in MAIN_CHAIN:
        if dag_id not in present:
            continue
        echo(f"running {dag_id} ...")
        started = time.monotonic()
        processes.run_airflow(["dags", "test", dag_id], env, check=False, capture=True)
        state = _last_run_state(urls, dag_id)
        results.append(ChainResult(dag_id, state, time.monotonic() - started))
        if state != "success":
            break
    return results


def _print_summary(results: list[ChainResult], echo) -> None:
    echo("")
    echo("erpsync main chain")
    echo(f"{'DAG':32} {'state':10} {'seconds':>8}")
    for r in results:
        echo(f"{r.dag_id:32} {r.state:10} {r.seconds:8.1f}")
    if not results:
        echo("(no DAG of the main chain is present)")


def run(*, once: bool, sandbox_size: str = "small", echo=print) -> int:
    from erpsync.runtime.setup import prepare

    db_was_running = database.embedded_running()
    children: list[subprocess.Popen] = []

    def _on_signal(signum, _frame):
        raise _Stop()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        prepared = prepare(echo=echo)
        sandbox = _start_sandbox(sandbox_size, echo)
        if sandbox:
            children.append(sandbox)
        if once:
            results = run_chain(prepared.urls, prepared.env, echo)
            _print_summary(results, echo)
            failed = [r for r in results if r.state != "success"]
            if failed or not results:
                echo(
                    f"FAILED: {', '.join(r.dag_id for r in failed) or 'nothing ran'}; "
                    f"see the task logs under {paths.airflow_home() / 'logs'}"
                )
                return 1
            echo("all DAG runs succeeded")
            return 0
        return _serve_ui(prepared.env, children, echo)
    except _Stop:
        echo("\nstopping ...")
        return 130
    finally:
        for proc in reversed(children):
            processes.stop_group(proc)
        if prepared_db_started(db_was_running):
            database.stop_embedded()
            echo("stopped embedded PostgreSQL")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepared_db_started(db_was_running: bool) -> bool:
    return not db_was_running and database.embedded_running()


def _serve_ui(env: dict[str, str], children: list[subprocess.Popen], echo) -> int:
    home = paths.airflow_home()
    password = airflow_env.write_ui_password(home)
    log_file = home / "standalone.log"
    proc = processes.spawn(processes.airflow_command(["standalone"]), env, log_file=log_file)
    children.append(proc)
    url = f"http://localhost:{airflow_env.API_PORT}"
    if not processes.wait_for_http(f"{url}/api/v2/monitor/health", timeout=300, proc=proc):
        echo(f"Airflow did not come up; see {log_file}")
        return 1
    echo("")
    echo(f"Airflow UI: {url}")
    echo(f"login:      {airflow_env.UI_USER} / {password}")
    echo(f"logs:       {log_file}")
    echo("Press Ctrl-C to stop everything the demo started.")
    while proc.poll() is None:
        time.sleep(1)
    echo(f"airflow standalone exited with code {proc.returncode}; see {log_file}")
    return proc.returncode or 1
