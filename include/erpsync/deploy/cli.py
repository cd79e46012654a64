"""``erpsync deploy``: the distributed deployment's commands.

``create-roles`` creates the FAB roles of the pack (run by the compose ``airflow-init`` service);
``celery-run`` proves the CeleryExecutor deployment on one machine (Redis, PostgreSQL, every
Airflow component, two Celery workers) by running the pack's main chain on it.

Runnable on its own as ``python -m erpsync.deploy.cli`` as well as mounted under ``erpsync``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group("deploy")
def deploy() -> None:
    """The distributed deployment: FAB roles and the CeleryExecutor stack."""


@deploy.command("create-roles")
@click.option(
    "--dag-id",
    "dag_ids",
    multiple=True,
    help="DAG ids the roles cover (default: every erpsync_* DAG file in dags/).",
)
def create_roles_cmd(dag_ids: tuple[str, ...]) -> None:
    """Create or update the FAB roles finance_ops, data_engineer and auditor (idempotent).
    Needs [core] auth_manager = FabAuthManager and a migrated metadata database."""
    from erpsync.deploy import roles

    try:
        summary = roles.create_roles(list(dag_ids) or None)
    except roles.RolesError as exc:
        raise click.ClickException(str(exc)) from None
    for name, count in summary.items():
        click.echo(f"role {name}: {count} permission(s)")


@deploy.command("apply-settings")
@click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Settings file (default: airflow_settings.yaml in the project).",
)
def apply_settings_cmd(file_: Path | None) -> None:
    """Apply airflow_settings.yaml to the Airflow this process is configured for by its own
    AIRFLOW__* environment (a container's), in one transaction; twice = no change.

    Unlike `erpsync settings apply`, which configures a local erpsync runtime (embedded
    database, the Fernet key in .erpsync/secrets.json), this keeps the deployment's own Fernet
    key and metadata database, so the stored connection passwords stay readable."""
    import os

    from erpsync import paths, settings

    if not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        raise click.ClickException(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not set: this command is for a configured "
            "Airflow deployment; locally use `erpsync settings apply`"
        )
    path = file_ or paths.settings_file()
    try:
        parsed = settings.load(path)
    except settings.SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    report = settings.apply(parsed)
    click.echo(f"{path.name}: {report.summary()}")


@deploy.command("celery-run")
@click.option("--workers", default=2, show_default=True, help="Number of Celery workers.")
@click.option("--concurrency", default=2, show_default=True, help="Task slots per worker.")
@click.option(
    "--dag-id",
    "dag_ids",
    multiple=True,
    help="DAGs to run, in order (default: the main chain's DAGs that exist).",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report (runs, task-to-worker distribution) as JSON here.",
)
@click.option(
    "--setup/--no-setup",
    default=True,
    show_default=True,
    help="Migrate the databases and apply the settings first (as `erpsync setup` does).",
)
def celery_run_cmd(
    workers: int, concurrency: int, dag_ids: tuple[str, ...], json_out: Path | None, setup: bool
) -> None:
    """Start Redis, PostgreSQL, the scheduler, dag-processor, api-server, triggerer and Celery
    workers (w1@host, w2@host, ...), run the main chain through the REST API, print which worker
    ran each task, and stop everything it started."""
    from erpsync.deploy import celery_stack

    code = celery_stack.run(
        dag_ids=list(dag_ids) or None,
        workers=workers,
        concurrency=concurrency,
        echo=click.echo,
        json_out=json_out,
        setup=setup,
    )
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    deploy()
