"""The environment Airflow runs in for this project: its home, DAG and plugin folders, database,
executor, auth and the per-install secrets.

Airflow reads its configuration from ``AIRFLOW__SECTION__KEY`` variables, so every Airflow
process erpsync starts (standalone, ``dags test``, the CLI, tests) gets the same mapping from
:func:`airflow_environment`. ``erpsync env`` prints it for use in a shell.

Per-install secrets (Fernet key, JWT secret, the UI admin password) are generated once into the
git-ignored ``.erpsync/secrets.json`` (mode 0600); none is in code or in the repository.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from erpsync import paths
from erpsync.runtime.database import DatabaseUrls, connection_parts

WAREHOUSE_CONN_ID = "erpsync_warehouse"
UI_USER = "admin"
# A second person for maker-checker: whoever prepares an invoice batch cannot approve it.
APPROVER_USER = "approver"
# The console's read-only and data-engineering roles: an auditor reads everything and
# changes nothing (SimpleAuthManager role "viewer"), an engineer may requeue quarantined records
# ("op"). Role names: airflow/api_fastapi/auth/managers/simple/simple_auth_manager.py.
AUDITOR_USER = "auditor"
ENGINEER_USER = "engineer"
#: Every demo login: user -> (SimpleAuthManager role, key of its password in secrets.json).
DEMO_USERS = {
    UI_USER: ("admin", "admin_password"),
    APPROVER_USER: ("user", "approver_password"),
    AUDITOR_USER: ("viewer", "auditor_password"),
    ENGINEER_USER: ("op", "engineer_password"),
}
API_PORT = int(os.environ.get("ERPSYNC_AIRFLOW_PORT", "8080"))


def _secrets_file() -> Path:
    return paths.state_dir() / "secrets.json"


def install_secrets() -> dict[str, str]:
    """Load the per-install secrets, generating any that are missing."""
    from cryptography.fernet import Fernet

    path = _secrets_file()
    data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {
        "fernet_key": lambda: Fernet.generate_key().decode(),
        "jwt_secret": lambda: secrets.token_urlsafe(32),
        "admin_password": lambda: secrets.token_urlsafe(12),
        "approver_password": lambda: secrets.token_urlsafe(12),
        "auditor_password": lambda: secrets.token_urlsafe(12),
        "engineer_password": lambda: secrets.token_urlsafe(12),
    }
    changed = False
    for key, make in wanted.items():
        if not data.get(key):
            data[key] = make()
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
    return data


def warehouse_connection_json(urls: DatabaseUrls) -> str:
    """The warehouse Airflow connection as JSON (the form ``AIRFLOW_CONN_*`` accepts)."""
    parts = connection_parts(urls.warehouse)
    conn = {"conn_type": "postgres", **{k: v for k, v in parts.items() if v is not None}}
    return json.dumps(conn)


def airflow_environment(urls: DatabaseUrls, *, home: Path | None = None) -> dict[str, str]:
    """``AIRFLOW__*`` settings for this project's Airflow processes."""
    home = home or paths.airflow_home()
    sec = install_secrets()
    env = {
        "AIRFLOW_HOME": str(home),
        "ERPSYNC_PROJECT_DIR": str(paths.project_dir()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(paths.dags_dir()),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(paths.plugins_dir()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": os.environ.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
        "AIRFLOW__CORE__FERNET_KEY": sec["fernet_key"],
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "utc",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": urls.sqlalchemy_airflow(),
        "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{API_PORT}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{API_PORT}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{user}:{role}" for user, (role, _) in DEMO_USERS.items()
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
            home / "simple_auth_passwords.json"
        ),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get(
            "AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"
        ),
        # an operator's own AIRFLOW_CONN_ERPSYNC_WAREHOUSE wins over the derived one
        f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}": os.environ.get(
            f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}", warehouse_connection_json(urls)
        ),
        "ERPSYNC_WAREHOUSE_CONN_ID": WAREHOUSE_CONN_ID,
        "NO_PROXY": "*",
        # `airflow standalone` starts its components as `airflow ...` from PATH
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    return env


def write_ui_password(home: Path) -> str:
    """Write the simple auth manager's password file so the UI login is known and stable."""
    sec = install_secrets()
    password = sec["admin_password"]
    home.mkdir(parents=True, exist_ok=True)
    path = home / "simple_auth_passwords.json"
    path.write_text(json.dumps({user: sec[key] for user, (_, key) in DEMO_USERS.items()}))
    path.chmod(0o600)
    return password


def apply_to_process(urls: DatabaseUrls) -> dict[str, str]:
    """Set the Airflow environment in this process (before ``airflow`` is imported)."""
    env = airflow_environment(urls)
    os.environ.update(env)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def export_connections(conn_ids: list[str]) -> list[str]:
    """Make Airflow connections kept in the metadata database visible to this process.

    Outside a task, the Task SDK's ``BaseHook.get_connection`` resolves only ``AIRFLOW_CONN_*``
    variables and secrets backends; a command run from a shell (``erpsync check-systems``) must
    also see the connections an operator saved in the UI or with ``erpsync settings apply``. Each
    connection not already resolvable that way is read through Airflow's own lookup (secrets
    backends, then the metadata database) and set as ``AIRFLOW_CONN_<ID>`` in this process's
    environment only (never printed). Returns the ids found nowhere."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    missing = []
    for conn_id in conn_ids:
        key = f"AIRFLOW_CONN_{conn_id.upper()}"
        if os.environ.get(key):
            continue
        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            missing.append(conn_id)
            continue
        os.environ[key] = conn.as_json()
    return missing
