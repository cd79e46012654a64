"""The ``erpsync`` command: operator-facing commands for the database, settings, Airflow, the demo
and the sandbox. ``erpsync --help`` and ``erpsync COMMAND --help`` explain each one.

Heavy modules (Airflow, psycopg, the sandbox) are imported inside the commands that need them, so
``erpsync --help`` is instant and Airflow always sees this project's environment first.
"""

from __future__ import annotations

import logging
import shlex
import sys

import click

from erpsync import paths


class _LazyGroup(click.Group):
    """A group whose ``sandbox``, ``bench`` and ``deploy`` subcommands load on first use."""

    lazy = {
        "sandbox": ("erpsync_sandbox.cli", "sandbox"),
        "bench": ("erpsync.bench.cli", "bench"),
        "deploy": ("erpsync.deploy.cli", "deploy"),
    }

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self._available_lazy()})

    def _available_lazy(self):
        from importlib.util import find_spec

        found = []
        for name, (module, _attr) in self.lazy.items():
            try:
                if find_spec(module) is not None:
                    found.append(name)
            except ModuleNotFoundError:
                continue
        return found

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self.lazy:
            return command
        from importlib import import_module

        module, attr = self.lazy[cmd_name]
        try:
            return getattr(import_module(module), attr)
        except ModuleNotFoundError:
            return None


@click.group(cls=_LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def main(verbose: bool) -> None:
    """erpsync: keep a services firm's CRM, PSA and ERP in step, on Apache Airflow 3.

    With no ERPSYNC_DATABASE_URL set, erpsync runs an embedded PostgreSQL server in the
    project's .erpsync/ folder for both the Airflow metadata database and the warehouse.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# --------------------------------------------------------------------------- database
@main.group()
def db() -> None:
    """The PostgreSQL server and the warehouse schema."""


@db.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL server (or check ERPSYNC_DATABASE_URL) and create the
    `erpsync` (warehouse) and `airflow` (metadata) databases if missing."""
    from erpsync.runtime import database

    urls = database.resolve(start=True)
    if urls.embedded:
        click.echo(f"embedded PostgreSQL running in {paths.pgdata_dir()}")
    click.echo(f"warehouse: {database.redact(urls.warehouse)}")
    click.echo(f"airflow:   {database.redact(urls.airflow)}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server (does nothing with ERPSYNC_DATABASE_URL)."""
    from erpsync.runtime import database

    click.echo("stopped" if database.stop_embedded() else "embedded PostgreSQL was not running")


@db.command("status")
def db_status() -> None:
    """Say which server is in use and the warehouse schema version."""
    from erpsync.runtime import database
    from erpsync.warehouse import migrate

    try:
        urls = database.resolve(start=False)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    version = migrate.current_version(urls.warehouse)
    click.echo(
        f"warehouse: {database.redact(urls.warehouse)} (schema version {version}, "
        f"pack needs {migrate.latest_version()})"
    )


@db.command("url")
@click.option("--airflow", "which", flag_value="airflow", help="The Airflow metadata database.")
@click.option(
    "--warehouse",
    "which",
    flag_value="warehouse",
    default=True,
    help="The warehouse database (default).",
)
def db_url(which: str) -> None:
    """Print the libpq URL of a database (for psql, scripts)."""
    from erpsync.runtime import database

    urls = database.resolve(start=True)
    click.echo(urls.airflow if which == "airflow" else urls.warehouse)


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending warehouse migrations (idempotent: a second run applies nothing)."""
    from erpsync.runtime import database
    from erpsync.warehouse import migrate

    urls = database.resolve(start=True)
    try:
        applied = migrate.migrate(urls.warehouse)
    except migrate.MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    for m in applied:
        click.echo(f"applied {m.version:04d}_{m.name}")
    click.echo(
        f"warehouse schema at version {migrate.latest_version()} "
        f"({len(applied)} migration(s) applied)"
    )


@db.command("verify-audit")
def db_verify_audit() -> None:
    """Verify the audit trail's hash chain from its checkpoint to the newest row (the console
    shows the status; this catches up a long trail). Exits 1 if the chain is broken."""
    from erpsync.console import audit_trail
    from erpsync.runtime import database

    urls = database.resolve(start=True)
    status = audit_trail.verify_all(urls.warehouse, report=lambda s: click.echo(s.summary()))
    if status.broken:
        raise click.ClickException(status.summary())


# --------------------------------------------------------------------------- settings
@main.group("settings")
def settings_group() -> None:
    """airflow_settings.yaml: connections, pools and variables (Astro CLI schema)."""


#: ``--file`` of the settings commands
_SETTINGS_FILE = click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False),
    default=None,
    help="Settings file (default: airflow_settings.yaml in the project).",
)


@settings_group.command("validate")
@_SETTINGS_FILE
def settings_validate(file_: str | None) -> None:
    """Check the settings file without touching Airflow."""
    from pathlib import Path

    from erpsync import settings

    path = Path(file_) if file_ else paths.settings_file()
    try:
        parsed = settings.load(path)
    except settings.SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    a = parsed.airflow
    click.echo(
        f"{path}: valid ({len(a.connections)} connections, {len(a.pools)} pools, "
        f"{len(a.variables)} variables)"
    )


@settings_group.command("apply")
@_SETTINGS_FILE
def settings_apply(file_: str | None) -> None:
    """Apply the settings file to the local Airflow in one transaction (twice = no change).
    A malformed file is rejected whole, naming the entry and field at fault."""
    from pathlib import Path

    from erpsync import settings
    from erpsync.runtime import airflow_env, database

    path = Path(file_) if file_ else paths.settings_file()
    try:
        parsed = settings.load(path)
    except settings.SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    airflow_env.apply_to_process(database.resolve(start=True))
    report = settings.apply(parsed)
    click.echo(f"{path.name}: {report.summary()}")


# --------------------------------------------------------------------------- systems
@main.command("check-systems")
@click.option(
    "--system",
    "systems",
    multiple=True,
    type=click.Choice(["salesforce", "harvest", "business_central"]),
    help="Check only this system (repeatable; default: all three).",
)
def check_systems_cmd(systems: tuple[str, ...]) -> None:
    """Connect to the CRM, PSA and ERP on the Airflow connections erpsync_crm, erpsync_psa and
    erpsync_erp and check that everything the pack needs is there and permitted: one line per
    requirement, `OK|FAIL <system> <requirement> — <what to fix>`. Exits 1 on any FAIL.
    Writes nothing to any system."""
    from erpsync import tenant_check
    from erpsync.runtime import airflow_env, database

    # Connections resolve as in the pack's tasks: AIRFLOW_CONN_* variables, a secrets backend,
    # or the local Airflow metadata database (`erpsync settings apply`).
    airflow_env.apply_to_process(database.resolve(start=True))
    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.connectors.harvest import HarvestClient
    from erpsync.connectors.salesforce import SalesforceClient

    clients = (SalesforceClient, HarvestClient, BusinessCentralClient)
    missing = airflow_env.export_connections([c.default_conn_id for c in clients])
    for conn_id in missing:
        click.echo(
            f"no Airflow connection {conn_id}: set AIRFLOW_CONN_{conn_id.upper()}, a secrets "
            "backend entry, or run `erpsync settings apply` (README: Pointing at real systems)",
            err=True,
        )
    failed = 0
    checks = tenant_check.run_checks(
        tenant_check.SystemClients.default(), systems or tenant_check.SYSTEMS
    )
    for check in checks:
        failed += not check.ok
        click.echo(tenant_check.format_check(check))
    if failed:
        click.echo(f"{failed} requirement(s) failed", err=True)
        sys.exit(1)


# --------------------------------------------------------------------------- airflow
@main.command("setup")
def setup_cmd() -> None:
    """Start the database, migrate the warehouse and Airflow, apply the settings (idempotent)."""
    from erpsync.runtime.setup import prepare

    prepare(echo=click.echo)


@main.command("env")
def env_cmd() -> None:
    """Print the Airflow environment as shell exports: `eval "$(erpsync env)"` then use the
    plain `airflow` CLI against this project."""
    from erpsync.runtime import airflow_env, database

    env = airflow_env.airflow_environment(database.resolve(start=True))
    for key, value in sorted(env.items()):
        click.echo(f"export {key}={shlex.quote(value)}")


@main.command(
    "airflow", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def airflow_cmd(args: tuple[str, ...]) -> None:
    """Run an Airflow CLI command in this project's environment, e.g.
    `erpsync airflow dags list`."""
    from erpsync.runtime import airflow_env, database, processes

    env = airflow_env.airflow_environment(database.resolve(start=True))
    result = processes.run_airflow(list(args), env, check=False)
    sys.exit(result.returncode)


# --------------------------------------------------------------------------- demo
@main.command("demo")
@click.option(
    "--once",
    is_flag=True,
    help="Run the pack's main chain once without the UI, print a summary and exit "
    "non-zero if anything failed.",
)
@click.option(
    "--sandbox-size",
    default="small",
    show_default=True,
    help="Size of the sandbox firm the demo starts.",
)
def demo_cmd(once: bool, sandbox_size: str) -> None:
    """Set everything up and run the pack: the Airflow UI on http://localhost:8080 (Ctrl-C stops
    everything it started), or with --once the main chain end to end."""
    from erpsync.runtime import demo

    code = demo.run(once=once, sandbox_size=sandbox_size, echo=click.echo)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
