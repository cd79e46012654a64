"""A real Airflow api-server with the erpsync console plugin, and Debian's chromium driving it.

``console_server`` (session): its own warehouse (migrated, with the known scenario of
:mod:`tests.browser.scenario`) and Airflow metadata database, its own AIRFLOW_HOME and state
folder, and ``airflow api-server`` started as a subprocess on a free port with exactly the
environment ``erpsync env`` gives Airflow (plugins folder, SimpleAuthManager and the demo's users:
admin, approver, auditor, engineer; passwords written by ``airflow_env.write_ui_password``).

``browser`` (session): Playwright driving Debian's chromium (``make browser``) through
``executable_path``; Playwright never downloads a browser here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from erpsync.runtime import database, processes
from tests.browser import chromium, scenario
from tests.conftest import make_database

#: Where the tests put their screenshots: the git-ignored .erpsync/screenshots/ on every run (so
#: `make test` leaves the work tree clean), docs/screenshots/ (the README's pictures) when
#: ERPSYNC_SCREENSHOTS names it, as `make screenshots` does.
SCREENSHOTS = Path(
    os.environ.get("ERPSYNC_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / ".erpsync" / "screenshots"
)

#: The demo's logins by console role (SimpleAuthManager roles: admin, user, viewer, op).
ROLE_USERS = {
    "admin": "admin",
    "finance_ops": "approver",
    "auditor": "auditor",
    "data_engineer": "engineer",
}


@dataclass
class ConsoleServer:
    url: str  # http://localhost:<port>
    passwords: dict[str, str]  # user -> password (the demo's users)
    warehouse_url: str
    airflow_url: str
    log_file: Path
    scenario: scenario.Scenario

    def password(self, user: str) -> str:
        return self.passwords[user]

    def token(self, user: str) -> str:
        """A JWT for ``user`` from the auth manager's token endpoint (as the REST API clients
        get it): POST /auth/token (simple auth manager routes/login.py)."""
        response = httpx.post(
            f"{self.url}/auth/token",
            json={"username": user, "password": self.passwords[user]},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return response.json()["access_token"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _erpsync(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "erpsync.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"erpsync {' '.join(args)} exited {result.returncode}\n{result.stderr[-4000:]}"
    )
    return result.stdout


def _airflow_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` plus what ``erpsync env`` exports for Airflow."""
    env = dict(base)
    for line in _erpsync(["env"], base, timeout=120).splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="session")
def console_server(pg_server_url, tmp_path_factory):
    with running_console_server(pg_server_url, tmp_path_factory.mktemp("console_browser")) as s:
        yield s


@pytest.fixture(scope="session")
def fab_console_server(pg_server_url, tmp_path_factory):
    """The same with the FAB auth manager of the compose deployment and its roles."""
    tmp = tmp_path_factory.mktemp("console_browser_fab")
    with running_console_server(pg_server_url, tmp, auth="fab") as s:
        yield s


#: FAB users the FAB server gets: user -> role (the pack's roles, and FAB's own "User").
FAB_USERS = {
    "fiona": "finance_ops",
    "audrey": "auditor",
    "dan": "data_engineer",
    "uma": "User",
}
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# The pack's roles (erpsync.deploy.roles, what `erpsync deploy create-roles` runs) and one user
# per role, in one interpreter (FAB's `airflow users create` would start one per user).
_FAB_SETUP = r"""
import json, sys
from erpsync.deploy import roles
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

roles.create_roles()
users = json.loads(sys.argv[1])
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    for name, (role, password) in users.items():
        email = f"{name}@example.invalid"
        sm.add_user(name, name, "erpsync", email, [sm.find_role(role)], password)
"""


@contextlib.contextmanager
def running_console_server(pg_server_url: str, tmp: Path, *, auth: str = "simple"):
    """The api-server with the console on a fresh scenario warehouse (stopped and dropped after):
    ``auth`` "simple" (the demo's SimpleAuthManager and users) or "fab" (FAB_USERS)."""
    import os
    import secrets

    from erpsync.runtime import airflow_env
    from erpsync.warehouse import migrate

    warehouse = make_database(pg_server_url, "erpsync_test_wh")
    airflow_db = make_database(pg_server_url, "erpsync_test_af")
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base.update(
        {
            "ERPSYNC_DATABASE_URL": warehouse,
            "ERPSYNC_AIRFLOW_DATABASE_URL": airflow_db,
            "AIRFLOW_HOME": str(tmp / "airflow_home"),
            "ERPSYNC_STATE_DIR": str(tmp / "state"),
            "ERPSYNC_AIRFLOW_PORT": str(port),
        }
    )
    proc = None
    try:
        migrate.migrate(warehouse)
        loaded = scenario.load(warehouse)
        env = _airflow_env(base)
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
        if auth == "fab":
            env["AIRFLOW__CORE__AUTH_MANAGER"] = FAB_AUTH_MANAGER
            env["AIRFLOW__API__SECRET_KEY"] = secrets.token_urlsafe(32)  # FAB's session cookie
        processes.run_airflow(["db", "migrate"], env, capture=True, timeout=600)
        home = Path(env["AIRFLOW_HOME"])
        if auth == "fab":
            passwords = {user: secrets.token_urlsafe(12) for user in FAB_USERS}
            users = {user: (role, passwords[user]) for user, role in FAB_USERS.items()}
            subprocess.run(
                [sys.executable, "-c", _FAB_SETUP, json.dumps(users)],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
                timeout=600,
            )
        else:
            with pytest.MonkeyPatch.context() as patch:  # the demo's own password writer
                for key in ("AIRFLOW_HOME", "ERPSYNC_STATE_DIR"):
                    patch.setenv(key, env[key])
                airflow_env.write_ui_password(home)
            passwords = json.loads((home / "simple_auth_passwords.json").read_text())
        log_file = tmp / "api-server.log"
        # one worker: two cores are shared by the whole suite
        proc = processes.spawn(
            processes.airflow_command(["api-server", "--port", str(port), "--workers", "1"]),
            env,
            log_file=log_file,
        )
        url = f"http://localhost:{port}"
        if not processes.wait_for_http(f"{url}/api/v2/monitor/health", timeout=300, proc=proc):
            raise AssertionError(
                f"the Airflow api-server did not start:\n{log_file.read_text()[-4000:]}"
            )
        yield ConsoleServer(url, passwords, warehouse, airflow_db, log_file, loaded)
    finally:
        if proc is not None:
            processes.stop_group(proc, grace=30)
        database.drop_database(warehouse)
        database.drop_database(airflow_db)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium.chromium_executable()
    assert executable, "no `chromium` on PATH: run `make browser` (installs Debian's chromium)"
    with sync_playwright() as p:
        # chromium_sandbox defaults to False, so Playwright passes --no-sandbox (runs as root);
        # a small /dev/shm in containers crashes the renderer without --disable-dev-shm-usage
        instance = p.chromium.launch(
            executable_path=executable, headless=True, args=["--disable-dev-shm-usage"]
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def wait_until(check, *, timeout: float = 20.0, interval: float = 0.3):
    """Poll ``check()`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
