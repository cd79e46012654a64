"""The console under test: its real FastAPI app, mounted at ``/erpsync`` as the Airflow API server
mounts it, on a real warehouse, authenticated by Airflow's real simple auth manager with real
JWTs and a real Airflow metadata database (PostgreSQL) behind the token checks.

``console("finance_ops")`` is a client logged in as a user of that role (the demo's simple auth
manager roles: auditor = viewer, finance_ops = user, data_engineer = op); ``console(None)`` is
anonymous. ``client.post_action(url, body)`` sends what the console's own script sends (JSON and
the ``X-Erpsync-Request`` header).
"""

from __future__ import annotations

import secrets

import pytest

from erpsync.runtime import database
from tests.conftest import make_database

#: console role -> (user name, simple auth manager role)
ROLES = {
    "auditor": ("ann.auditor", "viewer"),
    "finance_ops": ("fiona.finance", "user"),
    "data_engineer": ("dan.engineer", "op"),
    "admin": ("ada.admin", "admin"),
}
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@pytest.fixture(scope="session")
def console_airflow(pg_server_url, tmp_path_factory):
    """Configure this test process's Airflow for the console (auth manager, JWT secret, metadata
    database) and restore the previous configuration afterwards."""
    from airflow import settings
    from airflow.configuration import conf

    tmp = tmp_path_factory.mktemp("console_airflow")
    metadata = make_database(pg_server_url, "erpsync_test_console_af")
    values = {
        ("core", "auth_manager"): SIMPLE_AUTH,
        ("core", "simple_auth_manager_users"): ",".join(f"{n}:{r}" for n, r in ROLES.values()),
        ("core", "simple_auth_manager_passwords_file"): str(tmp / "passwords.json"),
        ("core", "simple_auth_manager_all_admins"): "False",
        ("api_auth", "jwt_secret"): secrets.token_urlsafe(64),
        ("api", "base_url"): "http://testserver",
        ("database", "sql_alchemy_conn"): database.to_sqlalchemy(metadata),
    }
    saved = {key: conf.get(*key, fallback=None) for key in values}
    for (section, key), value in values.items():
        conf.set(section, key, value)
    settings.reconfigure_orm()
    from airflow.models import import_all_models
    from airflow.models.base import Base

    import_all_models()
    Base.metadata.create_all(settings.engine)

    from airflow.api_fastapi.app import create_auth_manager, purge_cached_app

    purge_cached_app()
    manager = create_auth_manager()
    manager.init()
    yield manager
    purge_cached_app()
    settings.dispose_orm(do_log=False)
    for (section, key), value in saved.items():
        if value is None:
            conf.remove_option(section, key)
        else:
            conf.set(section, key, value)
    settings.reconfigure_orm()
    database.drop_database(metadata)


def token_for(manager, role: str) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    name, simple_role = ROLES[role]
    return manager.generate_jwt(SimpleAuthManagerUser(username=name, role=simple_role))


class ConsoleClient:
    """A TestClient on the API-server-like root app, as one user (or anonymous)."""

    def __init__(self, client, user_name: str | None) -> None:
        self.http = client
        self.user_name = user_name

    def get(self, url: str, **kwargs):
        return self.http.get(url, **kwargs)

    def page(self, url: str, **kwargs):
        """GET as a browser does (asks for HTML, so an anonymous caller is sent to the login)."""
        headers = {"Accept": "text/html", **kwargs.pop("headers", {})}
        return self.http.get(url, headers=headers, follow_redirects=False, **kwargs)

    def post_action(self, url: str, body, **kwargs):
        headers = {"X-Erpsync-Request": "1", "Origin": "http://testserver"}
        headers.update(kwargs.pop("headers", {}))
        return self.http.post(url, json=body, headers=headers, **kwargs)

    def post(self, url: str, **kwargs):
        return self.http.post(url, **kwargs)


@pytest.fixture
def console_app(console_airflow, warehouse_db):
    """The root app (console mounted at /erpsync) on this test's warehouse."""
    from fastapi import FastAPI

    from erpsync.console.app import create_app
    from erpsync.console.web import ConsoleSettings, SourceLinks

    root = FastAPI()
    links = SourceLinks(
        crm_base="https://acme.my.salesforce.com",
        psa_base="https://acme.harvestapp.com",
        erp_base="https://businesscentral.dynamics.com/tenant-1/production",
        erp_company="Acme",
    )
    root.mount("/erpsync", create_app(ConsoleSettings(warehouse_url=warehouse_db, links=links)))
    return root


@pytest.fixture
def console(console_app, console_airflow):
    from fastapi.testclient import TestClient

    clients = []

    def make(role: str | None) -> ConsoleClient:
        client = TestClient(console_app, base_url="http://testserver")
        if role is not None:
            client.cookies.set("_token", token_for(console_airflow, role))
        clients.append(client)
        return ConsoleClient(client, None if role is None else ROLES[role][0])

    yield make
    for client in clients:
        client.close()
