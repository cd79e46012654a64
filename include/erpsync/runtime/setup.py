"""Bringing a local erpsync up: database, warehouse migrations, Airflow metadata, settings.

Every step is idempotent, so ``erpsync setup`` (and the demo, which calls it) can run any number
of times: a second run starts nothing new, applies no migration and changes no setting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from erpsync import paths
from erpsync.runtime import airflow_env, database, processes

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    urls: database.DatabaseUrls
    env: dict[str, str]
    migrations_applied: list[str]
    settings_summary: str


def prepare(*, apply_settings: bool = True, echo=print) -> Prepared:
    """Start (or reuse) the database, migrate both databases and apply the settings file."""
    from erpsync.warehouse import migrate

    urls = database.resolve(start=True)
    where = (
        "embedded PostgreSQL in " + str(paths.pgdata_dir())
        if urls.embedded
        else (database.redact(urls.warehouse))
    )
    echo(f"database: {where}")
    applied = migrate.migrate(urls.warehouse)
    echo(f"warehouse migrations: {len(applied)} applied, now at version {migrate.latest_version()}")
    env = airflow_env.apply_to_process(urls)
    processes.run_airflow(["db", "migrate"], env, capture=True)
    echo("airflow metadata database: migrated")
    summary = ""
    if apply_settings:
        from erpsync import settings

        report = settings.apply(settings.load(paths.settings_file()))
        summary = report.summary()
        echo(f"settings ({paths.settings_file().name}): {summary}")
    return Prepared(urls, env, [f"{m.version:04d}_{m.name}" for m in applied], summary)
