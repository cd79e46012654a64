"""``erpsync sandbox ...``: command line for the sandbox CRM/PSA/ERP services.

The click group :data:`sandbox` is mounted by the lead under the ``erpsync`` CLI
(``erpsync sandbox serve|generate|advance|reset|faults|pay``); it also runs standalone with
``python -m erpsync_sandbox.cli``. Commands that change a running sandbox (``advance``,
``reset``, ``faults``, ``pay``) talk to its ``/__admin`` endpoints; ``advance`` and ``reset``
fall back to the state directory when no sandbox answers.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import click
import httpx

from erpsync_sandbox import lifecycle
from erpsync_sandbox.context import DEFAULT_PORTS, SERVICES, SandboxConfig, SandboxContext
from erpsync_sandbox.faults import Burst429, FaultConfig, faults_from_env
from erpsync_sandbox.generator.firm import SIZES
from erpsync_sandbox.serve import (
    PortTakenError,
    default_state_dir,
    serve_forever,
    start_sandbox,
)

__all__ = ["sandbox"]

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="ERPSYNC_SANDBOX_STATE_DIR",
    help="Where the sandbox keeps its state (default: .erpsync/sandbox in the project).",
)


def _admin_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/__admin"


def _try_admin(method: str, url: str, **kw: Any) -> httpx.Response | None:
    try:
        return httpx.request(method, url, timeout=kw.pop("timeout", 600.0), **kw)
    except httpx.ConnectError:
        return None


@click.group(name="sandbox")
def sandbox() -> None:
    """Local CRM (Salesforce), PSA (Harvest) and ERP (Business Central) sandboxes."""


@sandbox.command()
@click.option("--size", type=click.Choice(sorted(SIZES)), default=None, help="Firm size.")
@click.option("--seed", type=int, default=None, help="Generator seed.")
@_state_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
# ERPSYNC_SANDBOX_<SERVICE>_PORT moves a service (SandboxConfig.from_env, `make demo`)
@click.option(
    "--crm-port",
    type=int,
    default=DEFAULT_PORTS["crm"],
    envvar="ERPSYNC_SANDBOX_CRM_PORT",
    show_default=True,
)
@click.option(
    "--psa-port",
    type=int,
    default=DEFAULT_PORTS["psa"],
    envvar="ERPSYNC_SANDBOX_PSA_PORT",
    show_default=True,
)
@click.option(
    "--erp-port",
    type=int,
    default=DEFAULT_PORTS["erp"],
    envvar="ERPSYNC_SANDBOX_ERP_PORT",
    show_default=True,
)
@click.option("--reset", is_flag=True, help="Regenerate the firm before serving.")
@click.option(
    "--fault-service",
    "fault_services",
    multiple=True,
    type=click.Choice(SERVICES),
    help="Services the --fault-* options apply to (default: all).",
)
@click.option("--fault-seed", type=int, default=0, show_default=True)
@click.option("--fault-5xx", "error_rate_5xx", type=float, default=0.0, help="5xx rate 0..1.")
@click.option("--fault-429-count", type=int, default=0, help="Length of a 429 burst.")
@click.option("--fault-429-retry-after", type=int, default=1, show_default=True)
@click.option("--fault-429-every", type=int, default=0, help="Repeat a 429 burst every N.")
@click.option("--fault-latency-ms", type=int, default=0)
@click.option("--fault-drop-rate", type=float, default=0.0, help="Drop after commit, 0..1.")
@click.option("--fault-mutate-rate", type=float, default=0.0, help="Mutate during paging.")
@click.option("--fault-tie-timestamps", is_flag=True, help="Writes share whole-second stamps.")
@click.option("--faults-json", default=None, help="Full FaultConfig as JSON (overrides).")
@click.option("--log-level", default="warning", show_default=True)
def serve(
    size: str | None,
    seed: int | None,
    state_dir: Path | None,
    host: str,
    crm_port: int,
    psa_port: int,
    erp_port: int,
    reset: bool,
    fault_services: tuple[str, ...],
    fault_seed: int,
    error_rate_5xx: float,
    fault_429_count: int,
    fault_429_retry_after: int,
    fault_429_every: int,
    fault_latency_ms: int,
    fault_drop_rate: float,
    fault_mutate_rate: float,
    fault_tie_timestamps: bool,
    faults_json: str | None,
    log_level: str,
) -> None:
    """Serve the three sandboxes until Ctrl-C (generates the firm on first start)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    state = state_dir or default_state_dir()
    cli_faults = FaultConfig(
        seed=fault_seed,
        error_rate_5xx=error_rate_5xx,
        burst_429=Burst429(
            count=fault_429_count, retry_after=fault_429_retry_after, every=fault_429_every
        ),
        latency_ms=fault_latency_ms,
        drop_after_commit_rate=fault_drop_rate,
        mutate_during_paging_rate=fault_mutate_rate,
        tie_timestamps=fault_tie_timestamps,
    )
    if faults_json:
        cli_faults = FaultConfig.model_validate(json.loads(faults_json))
    targets = set(fault_services or SERVICES)
    faults = {
        svc: (cli_faults if svc in targets and not cli_faults.is_quiet() else faults_from_env(svc))
        for svc in SERVICES
    }
    config = SandboxConfig.from_env()
    t0 = time.monotonic()
    try:
        handle = start_sandbox(
            state,
            size,
            seed,
            {"crm": crm_port, "psa": psa_port, "erp": erp_port},
            host=host,
            faults=faults,
            config=config,
            reset=reset,
            log_level=log_level,
        )
    except (ValueError, PortTakenError) as exc:
        raise click.ClickException(str(exc)) from exc
    ctx = handle.ctx
    click.echo(
        f"erpsync sandbox: {ctx.size} firm, seed {ctx.seed}, state {state} "
        f"(ready in {time.monotonic() - t0:.1f}s)"
    )
    for svc in SERVICES:
        if svc in handle.urls:
            click.echo(f"  {svc}: {handle.urls[svc]}  (docs: {handle.urls[svc]}/docs)")
        else:
            click.echo(f"  {svc}: not mounted ({handle.skipped.get(svc)})")
    click.echo("Ctrl-C to stop.")
    serve_forever(handle)
    click.echo("erpsync sandbox: stopped.")


@sandbox.command()
@click.option("--size", type=click.Choice(sorted(SIZES)), default="small", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_state_dir_option
def generate(size: str, seed: int, state_dir: Path | None) -> None:
    """(Re)generate the firm into the state dir (the sandbox must not be running)."""
    state = state_dir or default_state_dir()
    ctx = SandboxContext.open(state, size=size, seed=seed)
    t0 = time.monotonic()
    try:
        manifest = lifecycle.generate(ctx, size=size, seed=seed)
    finally:
        ctx.close()
    click.echo(f"generated {size} firm (seed {seed}) in {time.monotonic() - t0:.1f}s -> {state}")
    for system, counts in manifest["counts"].items():
        click.echo(f"  {system}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    click.echo("  planted: " + ", ".join(f"{k}={v}" for k, v in manifest["problem_counts"].items()))


@sandbox.command()
@click.option("--steps", type=int, default=1, show_default=True, help="Business days.")
@click.option("--seed", type=int, default=None, help="Advance seed (default: firm seed).")
@_state_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORTS["psa"],
    show_default=True,
    help="Admin port of a running sandbox service.",
)
def advance(steps: int, seed: int | None, state_dir: Path | None, host: str, port: int) -> None:
    """Simulate business days passing (via the running sandbox, else on the state dir)."""
    body = {"steps": steps} | ({} if seed is None else {"seed": seed})
    resp = _try_admin("POST", _admin_url(host, port) + "/advance", json=body)
    if resp is not None:
        resp.raise_for_status()
        data = resp.json()
        click.echo(f"advanced {steps} step(s): {data['count']} changes, now {data['now']}")
        return
    state = state_dir or default_state_dir()
    ctx = SandboxContext.open(state)
    try:
        if not ctx.is_generated():
            raise click.ClickException(f"no firm in {state}: run `sandbox generate` first")
        changes = lifecycle.advance(ctx, steps, seed)
        click.echo(f"advanced {steps} step(s): {len(changes)} changes, now {ctx.clock.now()}")
    finally:
        ctx.close()


@sandbox.command()
@_state_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORTS["psa"], show_default=True)
@click.option("--empty", is_flag=True, help="Leave the sandbox empty instead of regenerating.")
def reset(state_dir: Path | None, host: str, port: int, empty: bool) -> None:
    """Reset the firm: via the running sandbox, else delete the state dir."""
    resp = _try_admin("POST", _admin_url(host, port) + "/reset", json={"regenerate": not empty})
    if resp is not None:
        resp.raise_for_status()
        click.echo(f"reset running sandbox: {resp.json()}")
        return
    state = state_dir or default_state_dir()
    if state.exists():
        shutil.rmtree(state)
    click.echo(f"removed {state}; the next `sandbox serve` generates a fresh firm")


@sandbox.command()
@click.option(
    "--service",
    "services",
    multiple=True,
    type=click.Choice(SERVICES),
    help="Service(s) to show or change (default: all).",
)
@click.option("--set", "set_json", default=None, help="Replace the FaultConfig (JSON).")
@click.option("--patch", "patch_json", default=None, help="Merge into the FaultConfig (JSON).")
@click.option("--clear", is_flag=True, help="Turn all faults off.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--crm-port", type=int, default=DEFAULT_PORTS["crm"], show_default=True)
@click.option("--psa-port", type=int, default=DEFAULT_PORTS["psa"], show_default=True)
@click.option("--erp-port", type=int, default=DEFAULT_PORTS["erp"], show_default=True)
def faults(
    services: tuple[str, ...],
    set_json: str | None,
    patch_json: str | None,
    clear: bool,
    host: str,
    crm_port: int,
    psa_port: int,
    erp_port: int,
) -> None:
    """Show or change the fault injection of a running sandbox."""
    ports = {"crm": crm_port, "psa": psa_port, "erp": erp_port}
    for svc in services or SERVICES:
        url = _admin_url(host, ports[svc]) + "/faults"
        if clear:
            resp = _try_admin("PUT", url, json={})
        elif set_json:
            resp = _try_admin("PUT", url, json=json.loads(set_json))
        elif patch_json:
            resp = _try_admin("PATCH", url, json=json.loads(patch_json))
        else:
            resp = _try_admin("GET", url)
        if resp is None:
            raise click.ClickException(f"no sandbox {svc} service at {url}")
        if resp.status_code >= 400:
            raise click.ClickException(f"{svc}: {resp.status_code} {resp.text}")
        click.echo(f"{svc}: {json.dumps(resp.json(), sort_keys=True)}")


@sandbox.command()
@click.argument("invoice")
@click.argument("amount")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORTS["erp"], show_default=True)
def pay(invoice: str, amount: str, host: str, port: int) -> None:
    """The client pays AMOUNT of the posted ERP sales INVOICE (its number, e.g. PSI-000123, or
    its id) in a running sandbox: remainingAmount drops, status Paid when nothing remains.
    A sandbox control (Business Central's API cannot post a customer payment)."""
    key = "invoiceId" if len(invoice) == 36 and invoice.count("-") == 4 else "number"
    resp = _try_admin(
        "POST", _admin_url(host, port) + "/payments", json={key: invoice, "amount": amount}
    )
    if resp is None:
        raise click.ClickException(f"no sandbox ERP at {_admin_url(host, port)}")
    if resp.status_code >= 400:
        raise click.ClickException(f"{resp.status_code} {resp.text}")
    data = resp.json()
    click.echo(
        f"{data['number']}: paid {data['amount']}, remaining {data['remainingAmount']},"
        f" status {data['status']}"
    )


if __name__ == "__main__":  # pragma: no cover
    sandbox()
