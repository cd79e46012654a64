"""Parse one DAG file in a fresh interpreter and report what parsing did.

Run as ``python parse_probe.py DAG_FILE``; prints one JSON object: the DAGs found with the
attributes the integrity suite checks, import errors, and everything the file did at parse
time that it must not: database queries (SQLAlchemy engine events, psycopg/psycopg2 connects),
connection and variable lookups, network connections (any ``socket.connect``), and heavy
modules newly imported (pandas, great_expectations, the sandbox...). A fresh interpreter per
file makes the module check deterministic, as in apache/airflow's ``test_example_dags.py``.

The metadata database points at a file that does not exist, so a parse-time query is recorded
(and fails) instead of touching any real database.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

HEAVY_MODULES = ("pandas", "great_expectations", "erpsync_sandbox", "polars", "sklearn", "dlt")


def _install_sentinels(events: dict[str, list]) -> None:
    import socket

    import sqlalchemy
    from sqlalchemy import event

    def _on_execute(conn, cursor, statement, parameters, context, executemany):
        events["db_queries"].append(str(statement)[:200])

    event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", _on_execute)

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self, address):
        events["network_connects"].append(str(address))
        return real_connect(self, address)

    def connect_ex(self, address):
        events["network_connects"].append(str(address))
        return real_connect_ex(self, address)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex

    def _refuse(kind: str, what: str):
        def refuse(*args, **kwargs):
            key = args[-1] if args else kwargs
            events[kind].append(f"{what}({key!r})")
            raise RuntimeError(f"{what} called while parsing a DAG file")

        return refuse

    for module_name in ("psycopg2", "psycopg"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        module.connect = _refuse("db_queries", f"{module_name}.connect")

    from airflow.models.connection import Connection as CoreConnection
    from airflow.models.variable import Variable as CoreVariable
    from airflow.sdk import BaseHook, Connection, Variable

    BaseHook.get_connection = classmethod(_refuse("connection_lookups", "BaseHook.get_connection"))
    Connection.get = classmethod(_refuse("connection_lookups", "Connection.get"))
    CoreConnection.get_connection_from_secrets = classmethod(
        _refuse("connection_lookups", "Connection.get_connection_from_secrets")
    )
    Variable.get = staticmethod(_refuse("variable_lookups", "Variable.get"))
    CoreVariable.get = classmethod(_refuse("variable_lookups", "Variable.get"))


def _describe_dag(dag) -> dict:
    default_args = dict(dag.default_args or {})
    tasks = []
    for task in dag.tasks:
        tasks.append(
            {
                "task_id": task.task_id,
                "owner": task.owner,
                "retries": task.retries,
                "retry_exponential_backoff": bool(task.retry_exponential_backoff),
            }
        )
    return {
        "owner": default_args.get("owner"),
        "tags": sorted(dag.tags or []),
        "retries": default_args.get("retries"),
        "retry_exponential_backoff": bool(default_args.get("retry_exponential_backoff")),
        "doc_md": dag.doc_md or "",
        "tasks": tasks,
    }


def probe(dag_file: Path) -> dict:
    tmp = tempfile.mkdtemp(prefix="erpsync-parse-")
    os.environ["AIRFLOW_HOME"] = tmp
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp}/no-such-metadata.db"
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
    events: dict[str, list] = {
        "db_queries": [],
        "connection_lookups": [],
        "variable_lookups": [],
        "network_connects": [],
    }
    from airflow.dag_processing.dagbag import DagBag

    _install_sentinels(events)
    before = set(sys.modules)
    started = time.perf_counter()
    bag = DagBag(dag_folder=str(dag_file), bundle_name="dags-folder")
    seconds = time.perf_counter() - started
    new_modules = set(sys.modules) - before
    heavy = sorted(m for m in new_modules if m.split(".")[0] in HEAVY_MODULES and "." not in m)
    return {
        "file": str(dag_file),
        "parse_seconds": round(seconds, 4),
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dags": {dag_id: _describe_dag(dag) for dag_id, dag in bag.dags.items()},
        "heavy_modules": heavy,
        **events,
    }


if __name__ == "__main__":
    print(json.dumps(probe(Path(sys.argv[1]).resolve())))
