"""``make demo`` and ``make demo-once``: the whole pack on one machine.

``run(once=False)`` prepares everything (database, migrations, settings), starts the sandbox
systems and ``airflow standalone`` (scheduler, dag-processor, api-server, triggerer) and prints
the UI address and login. Every signal that stops the demo (Ctrl-C, SIGTERM from a CI runner,
systemd or ``timeout``, SIGHUP, SIGQUIT) stops every process it started, in both modes,
including the embedded database if the demo started it.

Ports: the sandbox serves where its connections in ``airflow_settings.yaml`` point (CRM 18001,
PSA 18002, ERP 18003), moved with ``ERPSYNC_SANDBOX_CRM_PORT`` / ``_PSA_PORT`` / ``_ERP_PORT``
(the connections follow, :func:`erpsync.settings.load`); Airflow's with ``ERPSYNC_AIRFLOW_PORT``
(8080). A port that is taken stops the demo before it starts anything, naming the port and the
variable that moves it.

``run(once=True)`` prepares the same way, then runs the pack's main chain once as real DAG runs
(``airflow dags test``, one after another in one Airflow CLI process, its output in
``demo-chain.log`` in the Airflow home), prints a summary and returns non-zero if any run failed.

The invoice batch waits for a person's approval (Airflow's human-in-the-loop step). In
``demo --once`` an Airflow api-server runs next to the chain and the approval is given through
Airflow's REST API, logged in as the ``approver`` user (``POST /auth/token``, then ``PATCH
.../taskInstances/approve_batch/-1/hitlDetails``), exactly as the UI's Required Actions page
does; the batch's preparer is the run's triggering user (``dag_test`` for ``airflow dags
test``), so maker-checker holds. In ``demo`` (the UI) the approval waits in Required Actions for
you: trigger *erpsync_invoice_batches* as ``admin`` and approve as ``approver`` (both logins are
printed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import FrameType

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


#: DAGs of the chain that stop for a person's approval (answered through the REST API).
APPROVAL_DAGS = {"erpsync_invoice_batches"}
APPROVAL_WAIT_SECONDS = 1200


@dataclass
class ChainResult:
    dag_id: str
    state: str
    seconds: float
    note: str = ""


#: Where the demo reports progress (``print``, ``click.echo``).
Echo = Callable[[str], object]

#: The signals that stop the demo (and so everything it started). SIGKILL cannot be caught.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class _Stop(BaseException):
    """Raised in the main thread by a stop signal. A BaseException, so that no ``except
    Exception`` on the way (a retry loop, a health poll) can swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class DemoError(RuntimeError):
    """The demo cannot start (a port taken ...): the message says what to do."""


#: Runs ``airflow dags test`` commands one after another in ONE interpreter: the Airflow CLI's
#: own parser and command function, exactly what the ``airflow`` executable calls, fed one JSON
#: request per line on stdin (with environment variables to set for that run only). Every new
#: ``airflow dags test`` process spends ~10 s importing Airflow and building its in-process
#: execution API before its first task; the chain pays it once (warmed while the api-server and
#: the DAG list start).
_DRIVER = r"""
import json, os, sys
from airflow.cli import cli_parser
from airflow.sdk.execution_time.supervisor import in_process_api_server
parser = cli_parser.get_parser()
in_process_api_server().app
for line in sys.stdin:
    req = json.loads(line)
    saved = {k: os.environ.get(k) for k in req.get("env", {})}
    os.environ.update(req.get("env", {}))
    print("@@START " + req["label"], flush=True)
    rc = 0
    try:
        args = parser.parse_args(req["argv"])
        args.func(args)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # the chain reads each run's state from the metadata database
        print(f"@@ERROR {type(exc).__name__}: {exc}", flush=True)
        rc = 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    print(f"@@END {req['label']} rc={rc}", flush=True)
"""


#: ``airflow dags test`` of Airflow 3.3.2 runs a DAG with deadline alerts to the end, then fails
#: while marking the run successful (``DagRun.update_state`` looks the alerts up by their
#: serialized form: "can't adapt type 'dict'"; apache/airflow#73428, fix in #73430). Deadlines are
#: the scheduler's business, not a test run's: the driver parses the DAGs with them off.
DAGS_TEST_DEADLINES_OFF = {"ERPSYNC_DEADLINE_SYNC": "off", "ERPSYNC_DEADLINE_BILLING": "off"}


class DagsTestDriver:
    """One long-lived Airflow CLI interpreter that runs ``airflow dags test`` commands in turn.

    ``env`` is the interpreter's environment (added to this process's unless ``inherit`` is
    false); a run's own variables can be given with :meth:`start`. Deadline alerts are off in
    it (:data:`DAGS_TEST_DEADLINES_OFF`)."""

    def __init__(self, env: dict[str, str], log_file: Path, *, inherit: bool = True) -> None:
        self.log_file = log_file
        self._offsets: dict[str, int] = {}
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _DRIVER],
                env={**(os.environ if inherit else {}), **env, **DAGS_TEST_DEADLINES_OFF},
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    def start(
        self,
        dag_id: str,
        args: list[str],
        *,
        label: str | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Ask for ``airflow dags test DAG_ID ARGS...`` (it runs after the ones asked before);
        returns the run's label (``dag_id`` unless given) for :meth:`wait` and :meth:`output`."""
        label = label or dag_id
        self._offsets[label] = self.log_file.stat().st_size
        request = {"label": label, "argv": ["dags", "test", dag_id, *args], "env": env or {}}
        try:
            stdin = self.proc.stdin
            assert stdin is not None  # opened with stdin=PIPE
            stdin.write((json.dumps(request) + "\n").encode())
            stdin.flush()
        except OSError:  # the interpreter is gone: the run's state (from the database) says so
            pass
        return label

    def _text(self, label: str) -> str:
        with open(self.log_file, "rb") as f:
            f.seek(self._offsets.get(label, 0))
            return f.read().decode(errors="replace")

    def running(self, label: str) -> bool:
        if self.proc.poll() is not None:
            return False
        return f"@@END {label} " not in self._text(label)

    def wait(self, label: str, timeout: float | None = None) -> bool:
        """Wait until the run is over; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running(label):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def output(self, label: str) -> tuple[str, int | None]:
        """The run's ``dags test`` output and exit code (None if it never finished)."""
        text = self._text(label)
        begin = text.find(f"@@START {label}\n")
        text = text[begin:] if begin >= 0 else text
        end = text.find(f"@@END {label} rc=")
        if end < 0:
            return text, None
        rc = text[end:].split("rc=", 1)[1].split()[0]
        return text[:end], int(rc)

    def stop(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        processes.stop_group(self.proc)


def sandbox_ports() -> dict[str, int]:
    """Where the demo serves the sandbox: the ports its connections in ``airflow_settings.yaml``
    point at, after ``ERPSYNC_SANDBOX_<SERVICE>_PORT`` (:func:`erpsync.settings.load`)."""
    from erpsync import settings

    return settings.sandbox_ports(settings.load(paths.settings_file()))


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (a bind would succeed)."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(ports: Mapping[str, tuple[int, str]]) -> None:
    """Raise :class:`DemoError` naming each taken port and the variable that moves it;
    ``ports`` maps a label ("sandbox PSA") to (port, environment variable)."""
    taken = [
        f"the {label} port {port} is taken (another demo or sandbox running?); "
        f"set {variable} to a free port"
        for label, (port, variable) in ports.items()
        if not port_free(port)
    ]
    if taken:
        raise DemoError("; ".join(taken))


def _start_sandbox(
    size: str, echo: Echo, ports: Mapping[str, int], children: list[subprocess.Popen[bytes]]
) -> None:
    """Start the sandbox CRM/PSA/ERP on ``ports`` (if the sandbox package is installed) and
    wait for it; the process is added to ``children`` as it starts (the caller stops them)."""
    from importlib.util import find_spec

    from erpsync.settings import sandbox_port_variable

    if find_spec("erpsync_sandbox.cli") is None:
        echo("sandbox: not installed, skipping")
        return
    check_ports({f"sandbox {s.upper()}": (p, sandbox_port_variable(s)) for s, p in ports.items()})
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
            *(arg for s, p in ports.items() for arg in (f"--{s}-port", str(p))),
        ],
        {},
        log_file=log_file,
        into=children,
    )
    ok = all(
        processes.wait_for_http(f"http://127.0.0.1:{port}/__admin/health", timeout=180, proc=proc)
        for port in ports.values()
    )
    if not ok:
        raise DemoError(f"the sandbox did not start; see {log_file}")
    shown = ", ".join(f"{s.upper()} :{p}" for s, p in ports.items())
    echo(f"sandbox: {shown} (log {log_file})")


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


def _free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there, else an ephemeral port."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port for the Airflow api-server")


def _sandbox_billing_period() -> str | None:
    """``YYYY-MM`` of the month before the sandbox's business clock, if a sandbox answers."""
    import datetime as dt

    import httpx

    psa = sandbox_ports().get("psa")
    if psa is None:
        return None
    try:
        now = httpx.get(f"http://127.0.0.1:{psa}/__admin/clock", timeout=5).json()["now"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    first = dt.date.fromisoformat(str(now)[:10]).replace(day=1)
    return (first - dt.timedelta(days=1)).strftime("%Y-%m")


def _start_api_server(
    env: dict[str, str], echo: Echo, children: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], str]:
    """An Airflow api-server on the chain's metadata database, for answering the approval
    (added to ``children`` as it starts)."""
    home = paths.airflow_home()
    airflow_env.write_ui_password(home)
    log_file = home / "api-server.log"
    port = _free_port(airflow_env.API_PORT)
    proc = processes.spawn(
        processes.airflow_command(["api-server", "--port", str(port)]),
        env,
        log_file=log_file,
        into=children,
    )
    echo(f"api-server: starting on :{port} for the approval (log {log_file})")
    return proc, f"http://localhost:{port}"


def _run_with_approval(
    dag_id: str,
    driver: DagsTestDriver,
    api: tuple[subprocess.Popen[bytes], str],
    echo: Echo,
) -> str:
    """``airflow dags test`` the DAG; approve its batch through the REST API as ``approver``."""
    from erpsync.airflow.billing_api import AirflowApi, content_hash_shown

    api_proc, api_url = api
    args = []
    period = _sandbox_billing_period()
    if period:  # the month before the sandbox's business clock (its unbilled month)
        args += ["-c", json.dumps({"billing_period": period})]
    driver.start(dag_id, args)
    note = ""
    deadline = time.monotonic() + APPROVAL_WAIT_SECONDS
    try:
        if not processes.wait_for_http(
            f"{api_url}/api/v2/monitor/health", timeout=300, proc=api_proc
        ):
            raise RuntimeError("the Airflow api-server did not start; see api-server.log")
        password = airflow_env.install_secrets()["approver_password"]
        with AirflowApi(api_url, airflow_env.APPROVER_USER, password) as client:
            while driver.running(dag_id) and time.monotonic() < deadline:
                try:
                    pending = client.wait_for_approval(
                        dag_id, timeout=5, alive=lambda: driver.running(dag_id)
                    )
                except (TimeoutError, RuntimeError):
                    continue
                shown = content_hash_shown(pending.body) or "?"
                echo(f"  approval asked: {pending.subject}")
                client.answer(
                    pending, "Approve", comment=f"approved in erpsync demo --once (hash {shown})"
                )
                note = f"approved by {airflow_env.APPROVER_USER} via the REST API"
                echo(f"  {note} (content hash {shown[:12]})")
                break
        if not driver.wait(dag_id, timeout=max(deadline - time.monotonic(), 1)):
            raise RuntimeError(f"{dag_id} did not finish in {APPROVAL_WAIT_SECONDS} s")
    except RuntimeError as exc:
        note = f"stopped: {exc}"
        echo(f"  {note}; see {driver.log_file}")
        driver.stop()  # nothing runs after a stopped approval: the chain ends here
    return note


def run_chain(urls: database.DatabaseUrls, env: dict[str, str], echo: Echo) -> list[ChainResult]:
    """Run each present DAG of the main chain once, in order, stopping at the first failure."""
    log_file = paths.airflow_home() / "demo-chain.log"
    results: list[ChainResult] = []
    api = None
    servers: list[subprocess.Popen[bytes]] = []
    driver: DagsTestDriver | None = None
    try:
        driver = DagsTestDriver(env, log_file)  # warms up while the DAGs are listed
        present = _present_dags(env)
        if APPROVAL_DAGS & present:
            api = _start_api_server(env, echo, servers)
        for dag_id in MAIN_CHAIN:
            if dag_id not in present:
                continue
            echo(f"running {dag_id} ...")
            started = time.monotonic()
            note = ""
            if dag_id in APPROVAL_DAGS and api is not None:
                note = _run_with_approval(dag_id, driver, api, echo)
            else:
                driver.start(dag_id, [])
                driver.wait(dag_id)
            state = _last_run_state(urls, dag_id)
            results.append(ChainResult(dag_id, state, time.monotonic() - started, note))
            if state != "success":
                echo(f"  {dag_id}: {state}; the airflow dags test output is in {log_file}")
                break
    finally:
        if driver is not None:
            driver.stop()
        for proc in servers:
            processes.stop_group(proc)
    return results


def billing_summary(warehouse_url: str) -> list[str]:
    """Invoices per client and currency with totals, and the items held by reason."""
    import psycopg

    from erpsync.money import round_money

    lines: list[str] = []
    try:
        with psycopg.connect(warehouse_url) as conn:
            invoices = conn.execute(
                """SELECT coalesce(i.client_name, i.account_id), i.currency::text,
                          count(*), sum(i.net), sum(i.tax), sum(i.total),
                          count(*) FILTER (WHERE i.erp_number IS NOT NULL)
                     FROM billing.invoices i
                     JOIN billing.invoice_batches b USING (batch_id)
                    WHERE b.status NOT IN ('dry_run', 'rejected')
                    GROUP BY 1, 2 ORDER BY 2, 1"""
            ).fetchall()
            held = conn.execute(
                """SELECT reason_code, currency::text, count(*), sum(amount)
                     FROM recon.items WHERE state = 'on_hold'
                    GROUP BY 1, 2 ORDER BY 1, 2"""
            ).fetchall()
    except psycopg.Error as exc:
        return [f"(no billing summary: {str(exc).splitlines()[0]})"]
    lines.append("")
    lines.append("invoices per client and currency")
    lines.append(
        f"{'client':34} {'cur':3} {'inv':>4} {'posted':>6} {'net':>14} {'tax':>12} {'total':>14}"
    )
    counts: dict[str, int] = {}
    totals: dict[str, Decimal] = {}
    for client, cur, n, net, tax, total, posted in invoices:
        lines.append(
            f"{str(client)[:34]:34} {cur:3} {n:4d} {posted:6d} {round_money(net, cur):>14,} "
            f"{round_money(tax, cur):>12,} {round_money(total, cur):>14,}"
        )
        counts[cur] = counts.get(cur, 0) + n
        totals[cur] = totals.get(cur, Decimal(0)) + total
    for cur, n in sorted(counts.items()):
        total = totals[cur]
        lines.append(
            f"{'TOTAL':34} {cur:3} {n:4d} {'':6} {'':>14} {'':>12} {round_money(total, cur):>14,}"
        )
    if not invoices:
        lines.append("(no invoices)")
    lines.append("")
    lines.append("items held, by reason")
    for reason, cur, n, amount in held:
        shown = f"{round_money(amount, cur):,}" if amount is not None and cur else "-"
        lines.append(f"{str(reason):34} {cur or '-':3} {n:6d} {shown:>14}")
    if not held:
        lines.append("(nothing held)")
    return lines


def _print_summary(
    results: list[ChainResult], echo: Echo, warehouse_url: str | None = None
) -> None:
    echo("")
    echo("erpsync main chain")
    echo(f"{'DAG':32} {'state':10} {'seconds':>8}")
    for r in results:
        echo(f"{r.dag_id:32} {r.state:10} {r.seconds:8.1f}" + (f"  {r.note}" if r.note else ""))
    if not results:
        echo("(no DAG of the main chain is present)")
    if warehouse_url and any(r.dag_id in APPROVAL_DAGS for r in results):
        for line in billing_summary(warehouse_url):
            echo(line)


def run(*, once: bool, sandbox_size: str = "small", echo: Echo = print) -> int:
    """The demo; returns the exit code (128 + the signal's number when a signal stopped it)."""
    from erpsync.runtime.setup import prepare

    db_was_running = database.embedded_running()
    children: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping:  # a second signal while stopping: let the clean-up finish
            return
        stopping.append(signum)
        raise _Stop(signum)

    previous = {  # a signal ignored on purpose (nohup: SIGHUP) stays ignored
        s: signal.signal(s, _on_signal)
        for s in STOP_SIGNALS
        if signal.getsignal(s) is not signal.SIG_IGN
    }
    try:
        if not once:
            check_ports({"Airflow": (airflow_env.API_PORT, "ERPSYNC_AIRFLOW_PORT")})
        ports = sandbox_ports()
        prepared = prepare(echo=echo)
        _start_sandbox(sandbox_size, echo, ports, children)
        if once:
            results = run_chain(prepared.urls, prepared.env, echo)
            _print_summary(results, echo, prepared.urls.warehouse)
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
    except _Stop as stop:
        echo(f"\n{signal.Signals(stop.signum).name}: stopping ...")
        return 128 + stop.signum
    except DemoError as exc:
        echo(f"erpsync demo: {exc}")
        return 1
    finally:
        stopping.append(0)  # from here on a signal does not interrupt the clean-up
        for proc in reversed(children):
            processes.stop_group(proc)
        if prepared_db_started(db_was_running):
            database.stop_embedded()
            echo("stopped embedded PostgreSQL")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepared_db_started(db_was_running: bool) -> bool:
    return not db_was_running and database.embedded_running()


def _serve_ui(env: dict[str, str], children: list[subprocess.Popen[bytes]], echo: Echo) -> int:
    home = paths.airflow_home()
    password = airflow_env.write_ui_password(home)
    log_file = home / "standalone.log"
    proc = processes.spawn(
        processes.airflow_command(["standalone"]), env, log_file=log_file, into=children
    )
    url = f"http://localhost:{airflow_env.API_PORT}"
    if not processes.wait_for_http(f"{url}/api/v2/monitor/health", timeout=300, proc=proc):
        echo(f"Airflow did not come up; see {log_file}")
        return 1
    echo("")
    echo(f"Airflow UI: {url}")
    echo(f"login:      {airflow_env.UI_USER} / {password}")
    approver = airflow_env.install_secrets()["approver_password"]
    echo(f"approver:   {airflow_env.APPROVER_USER} / {approver}  (approves invoice batches)")
    sec = airflow_env.install_secrets()
    for label, user, key, note in (
        ("auditor", airflow_env.AUDITOR_USER, "auditor_password", "reads the console, no actions"),
        ("engineer", airflow_env.ENGINEER_USER, "engineer_password", "requeues quarantined rows"),
    ):
        echo(f"{label + ':':<12}{user} / {sec[key]}  ({note})")
    echo(f"console:    {url}/erpsync/  (in the UI: Plugins > Finance)")
    echo(f"logs:       {log_file}")
    echo("Press Ctrl-C to stop everything the demo started.")
    while proc.poll() is None:
        time.sleep(1)
    echo(f"airflow standalone exited with code {proc.returncode}; see {log_file}")
    return int(proc.returncode or 1)
