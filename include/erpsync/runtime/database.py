"""The PostgreSQL server erpsync uses for the Airflow metadata database and the warehouse.

With ``ERPSYNC_DATABASE_URL`` set, that server is used as given and nothing is started: the URL
names the warehouse database, and the Airflow metadata database is ``ERPSYNC_AIRFLOW_DATABASE_URL``
or, if unset, a database called ``airflow`` on the same server (created when missing).

Without it, erpsync starts an embedded PostgreSQL server from the ``pgserver`` package in the
project's git-ignored ``.erpsync/pgdata`` folder. The embedded server listens on a Unix socket
only (no TCP port to collide with another server) and keeps running until ``erpsync db stop``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from erpsync import paths

log = logging.getLogger(__name__)

WAREHOUSE_DB = "erpsync"
AIRFLOW_DB = "airflow"


@dataclass(frozen=True)
class DatabaseUrls:
    """libpq URLs (``postgresql://...``) of the two databases erpsync uses."""

    warehouse: str
    airflow: str
    embedded: bool

    def sqlalchemy_airflow(self) -> str:
        """The Airflow metadata URL in SQLAlchemy form (psycopg2 driver, as Airflow documents)."""
        return to_sqlalchemy(self.airflow)


def to_sqlalchemy(url: str) -> str:
    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        return url
    return f"postgresql+psycopg2://{rest}"


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, ""))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


def socket_dir(url: str) -> str | None:
    """The Unix socket folder of a URL like ``postgresql://u@/db?host=/path``, else None."""
    host = parse_qs(urlsplit(url).query).get("host", [None])[0]
    return host if host and host.startswith("/") else None


def connection_parts(url: str) -> dict[str, str | int | None]:
    """Host, port, login, password and database of a URL (host may be a socket folder)."""
    parts = urlsplit(url)
    return {
        "host": socket_dir(url) or parts.hostname,
        "port": parts.port or 5432,
        "login": parts.username,
        "password": parts.password,
        "schema": database_name(url),
    }


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _external_urls() -> DatabaseUrls | None:
    url = os.environ.get("ERPSYNC_DATABASE_URL")
    if not url:
        return None
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    airflow_url = os.environ.get("ERPSYNC_AIRFLOW_DATABASE_URL") or with_database(url, AIRFLOW_DB)
    return DatabaseUrls(warehouse=url, airflow=airflow_url, embedded=False)


def _pgserver_module():
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then uses /tmp
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver  # imported lazily: it pulls psutil and platformdirs

    logging.getLogger("pgserver").setLevel(logging.WARNING)

    return pgserver


def _embedded_server_url(start: bool) -> str | None:
    """The embedded server's admin URL, starting the server when ``start`` is true."""
    pgdata = paths.pgdata_dir()
    if not start and not embedded_running():
        return None
    pgdata.mkdir(parents=True, exist_ok=True)
    server = _pgserver_module().get_server(pgdata, cleanup_mode=None)
    _ensure_capacity(server.get_uri())
    return server.get_uri()


# Airflow's components each keep a connection pool; a standalone Airflow plus a Celery stack and
# the tests' own connections outgrow PostgreSQL's default of 100.
EMBEDDED_MAX_CONNECTIONS = 300

#: The embedded server's settings (persisted with ALTER SYSTEM; a change needs one restart).
#: It is a single-node warehouse for the demo, the tests and the benchmarks, never replicated
#: or archived: ``wal_level = minimal`` lets a table created and filled in one transaction skip
#: the write-ahead log (the reconciliation's first run builds its partitions that way; they are
#: fsynced at commit instead), and the large firm's warehouse (~1 GB) works in shared buffers
#: rather than copying every page from the OS cache. A real deployment's server keeps its own
#: settings (README: "Point it at real systems").
EMBEDDED_SETTINGS = {
    "max_connections": str(EMBEDDED_MAX_CONNECTIONS),
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "512MB",
}


def _ensure_capacity(admin_url: str) -> None:
    """Apply the embedded server's settings once (persisted; needs one restart)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        current = {
            name: conn.execute(
                "SELECT setting, unit FROM pg_settings WHERE name = %s", (name,)
            ).fetchone()
            for name in EMBEDDED_SETTINGS
        }
        changed = [
            name
            for name, wanted in EMBEDDED_SETTINGS.items()
            if _setting_text(*current[name]) != wanted
        ]
        if not changed:
            return
        for name in changed:
            # names and values are this module's constants
            conn.execute(f"ALTER SYSTEM SET {name} = '{EMBEDDED_SETTINGS[name]}'")
    from pgserver import _commands

    user = "pgserver" if os.geteuid() == 0 else None
    _commands.pg_ctl(["-w", "restart", "-m", "fast"], pgdata=Path(paths.pgdata_dir()), user=user)
    log.info("embedded PostgreSQL restarted with %s", {n: EMBEDDED_SETTINGS[n] for n in changed})


def _setting_text(setting: str, unit: str | None) -> str:
    """A pg_settings value as EMBEDDED_SETTINGS writes it (shared_buffers in 8kB pages -> MB)."""
    if unit == "8kB":
        return f"{int(setting) * 8 // 1024}MB"
    return setting


def embedded_running() -> bool:
    pid_file = paths.pgdata_dir() / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return False
    return True


def resolve(start: bool = True) -> DatabaseUrls:
    """The database URLs to use, starting the embedded server if needed and allowed."""
    external = _external_urls()
    if external is not None:
        ensure_database(external.warehouse)
        ensure_database(external.airflow)
        return external
    admin = _embedded_server_url(start=start)
    if admin is None:
        raise RuntimeError(
            "The embedded PostgreSQL server is not running. Start it with `erpsync db start` "
            "or set ERPSYNC_DATABASE_URL to use an existing server."
        )
    urls = DatabaseUrls(
        warehouse=with_database(admin, WAREHOUSE_DB),
        airflow=with_database(admin, AIRFLOW_DB),
        embedded=True,
    )
    ensure_database(urls.warehouse)
    ensure_database(urls.airflow)
    return urls


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist. Returns True if created."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    admin = with_database(url, "postgres")
    try:
        with psycopg.connect(url, connect_timeout=10):
            return False
    except psycopg.OperationalError as exc:
        if f'database "{name}" does not exist' not in str(exc):
            raise RuntimeError(f"Cannot connect to {redact(url)}: {exc}") from None
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log.info("created database %s", name)
    return True


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (used by tests for their throwaway databases)."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def stop_embedded() -> bool:
    """Stop the embedded server if it runs. Returns True if it was running."""
    if not embedded_running():
        return False
    _pgserver_module()
    from pgserver import _commands

    user = "pgserver" if os.geteuid() == 0 else None
    _commands.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=Path(paths.pgdata_dir()), user=user)
    return True


def url_with_params(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    query.update({k: [v] for k, v in params.items()})
    return urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urlencode(query, doseq=True), parts.fragment)
    )
