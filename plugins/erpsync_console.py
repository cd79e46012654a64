"""The erpsync finance console in the Airflow UI: its pages, mounted on the API server at
``/erpsync``, and a "Finance" menu whose entries show them inside the UI.

Only registration lives here; the console is :mod:`erpsync.console`. The app is built only in
the API server process (the scheduler, DAG processor and workers load plugins too and need none
of it), as the edge3 provider does. Every endpoint authenticates through Airflow and checks the
user's permission with Airflow's auth manager (:mod:`erpsync.console.permissions`).
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/erpsync"


def _running_api_server() -> bool:
    return "api-server" in sys.argv or "api_server" in " ".join(sys.argv)


def _base_path() -> str:
    """The path part of ``[api] base_url``: the UI and the API are served under it."""
    return urlsplit(conf.get("api", "base_url", fallback="/") or "/").path.rstrip("/")


def _external_views() -> list[dict]:
    from erpsync.console import PAGES

    views = []
    for path, title in PAGES:
        views.append(
            {
                "name": title,
                "href": f"{_base_path()}{URL_PREFIX}{path}",
                "destination": "nav",
                "category": "Finance",
                "url_route": f"erpsync-{path.strip('/')}",
            }
        )
    return views


def _fastapi_apps() -> list[dict]:
    if not _running_api_server():
        return []
    from erpsync.console.app import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "erpsync finance console"}]


class ErpsyncConsolePlugin(AirflowPlugin):
    name = "erpsync_console"
    fastapi_apps = _fastapi_apps()
    external_views = _external_views()
