"""``erpsync bench``: the time-entry sync benchmark (the engine vs dlt vs pandas)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.option("--size", default="large", show_default=True, help="sandbox firm size")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--regenerate", is_flag=True, help="generate the firm even if it is there")
@click.option(
    "--loaders",
    default="erpsync,dlt,pandas",
    show_default=True,
    help="comma-separated subset of erpsync,dlt,pandas",
)
@click.option("--change", default=0.01, show_default=True, type=float, help="fraction changed")
@click.option("--dlt-disposition", default="merge", type=click.Choice(["merge", "append"]))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="result JSON path")
@click.option("--keep-db", is_flag=True, help="keep the bench database for inspection")
@click.option(
    "--pandas-max-seconds",
    default=300.0,
    show_default=True,
    type=float,
    help="stop pandas after this many seconds and report its rate over the rows it loaded"
    " (0: no cap)",
)
def bench(
    size, seed, regenerate, loaders, change, dlt_disposition, out, keep_db, pandas_max_seconds
) -> None:
    """Sync every time entry of the sandbox firm (large: 1,000,000+) with the pack's engine,
    with dlt's rest_api source and with pandas to_sql, on the same sandbox and PostgreSQL;
    then an incremental run after a 1% change. Writes benchmarks/results/sync_throughput.json."""
    from erpsync.bench.runner import run_bench

    chosen = tuple(x.strip() for x in loaders.split(",") if x.strip())
    unknown = set(chosen) - {"erpsync", "dlt", "pandas"}
    if unknown:
        raise click.BadParameter(f"unknown loaders {sorted(unknown)}", param_hint="--loaders")
    report = run_bench(
        size=size,
        seed=seed,
        reuse=not regenerate,
        loaders=chosen,
        fraction=change,
        out=out,
        keep_db=keep_db,
        dlt_disposition=dlt_disposition,
        pandas_max_seconds=pandas_max_seconds or None,
    )
    bad = [n for n, r in report["loaders"].items() if not r["exactly_once"]]
    bad += [f"{n} (failed)" for n in report["errors"]]
    if report["incremental"] and not report["incremental"]["exactly_once"]:
        bad.append("incremental")
    if bad:
        raise click.ClickException(f"counts did not match the sandbox for: {', '.join(bad)}")
