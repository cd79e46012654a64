"""Smoke test of ``erpsync bench`` on the small sandbox firm (~3,000 time entries).

Runs the pack's engine (full sync, 1% change, incremental sync) and the pandas ``to_sql``
baseline only: dlt lives in a benchmark-only venv (``.erpsync/venvs/dlt``) that ``make bench``
creates on first use, so the smoke test does not install it. It asserts the shape of the result
JSON and exactly-once counts against the sandbox, never timings (the targets are checked by the
benchmark itself, on the large firm).
"""

from __future__ import annotations

import json

import pytest

from erpsync.bench.runner import run_bench

pytestmark = pytest.mark.timeout(300)


def test_bench_small_firm_counts_every_entry_exactly_once(tmp_path, pg_server_url):
    out = tmp_path / "sync_throughput.json"
    report = run_bench(
        size="small",
        seed=3,
        loaders=("erpsync", "pandas"),
        out=out,
        state_dir=tmp_path / "psa-small",
        server_url=pg_server_url,
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))

    total = report["sandbox_time_entries"]
    assert total > 1000
    assert set(report) >= {
        "loaders",
        "ratios",
        "incremental",
        "targets",
        "machine",
        "command",
        "errors",
    }
    assert set(report["loaders"]) == {"erpsync", "pandas"}
    assert report["errors"] == {}
    assert set(report["ratios"]) == {
        "erpsync_vs_pandas",
        "erpsync_vs_pandas_per_client_cpu_second",
    }

    mine = report["loaders"]["erpsync"]
    assert mine["exactly_once"] is True
    assert mine["records"] == total
    assert mine["stats"]["read"] == mine["stats"]["loaded"] == mine["stats"]["inserted"] == total
    assert mine["stats"]["quarantined"] == 0
    assert mine["core"] == {"rows": total, "distinct_ids": total, "live": total}
    assert set(mine["stages_seconds"]) >= {"extract", "validate", "stage", "merge", "commit"}
    assert mine["peak_rss_mb"] > 0

    pandas_run = report["loaders"]["pandas"]
    assert pandas_run["exactly_once"] is True
    assert pandas_run["records"] == total

    inc = report["incremental"]
    assert inc["changed"] == -(-total // 100)  # every 100th entry by id
    assert inc["stats"]["mode"] == "incremental"
    assert inc["stats"]["updated"] == inc["changed"]
    assert inc["stats"]["inserted"] == 0
    assert inc["exactly_once"] is True
    assert 0 < inc["fraction_of_full"]

    for target in report["targets"].values():
        assert set(target) == {"target", "measured", "met"}
    assert report["targets"]["min_ratio_vs_dlt"]["measured"] is None  # dlt not run here


def test_reconcile_bench_parallel_equals_its_serial_baseline(pg_server_url):
    """The reconciliation benchmark on a small generated firm: every run reported with its steps;
    after 1 % of the entries changed, the two workers' merged result is what the one-connection
    baseline classifies from scratch (per state, in items); a rerun with no change is skipped."""
    from erpsync.bench.reconcile import run_reconcile_bench

    report = run_reconcile_bench(entries=20_000, server_url=pg_server_url, workers=2)
    runs = report["runs"]
    assert set(runs) == {
        "first",
        "rerun_no_change",
        "recompute_no_change",
        "after_change",
        "first_serial",
    }
    assert (runs["first"]["workers"], runs["first_serial"]["workers"]) == (2, 1)
    # the baseline runs last, on the data as changed: the parallel merge reached the same result
    assert runs["after_change"]["by_state"] == runs["first_serial"]["by_state"]
    assert runs["first"]["inserted"] == runs["first"]["items"] >= 20_000
    assert runs["rerun_no_change"]["skipped"] is True
    assert runs["recompute_no_change"]["inserted"] + runs["recompute_no_change"]["updated"] == 0
    assert runs["after_change"]["updated"] > 0
    assert set(runs["first"]["steps"]) == {"inputs", "classify", "apply", "exceptions", "summary"}
    assert report["parallel_speedup"] > 0 and isinstance(report["meets_target"], bool)
