"""Sync and write-back under faults: 5xx, 429 with Retry-After, connections dropped after the
write committed (ERP and PSA), records changing during paging, equal timestamps at page
boundaries. The end state of the warehouse and of all three sandbox systems equals a fault-free
run's: nothing duplicated, nothing lost. Two relays running at once send each row once."""

from __future__ import annotations

import threading

import psycopg
import pytest

from erpsync.sync.spec import RunInfo
from erpsync.writeback import relay
from tests.conftest import make_database
from tests.integration import writeback_harness as h


def _faults(seed: int, **more) -> dict:
    return {
        "seed": seed,
        "error_rate_5xx": 0.05,
        "burst_429": {"count": 2, "retry_after": 1, "start_after": 5, "every": 60},
        "mutate_during_paging_rate": 0.5,
        "mutate_count": 2,
        "tie_timestamps": True,
        **more,
    }


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, pg_server_url):
    """A fault-free sync and relay of the small firm: the reference end state."""
    from erpsync.runtime import database
    from erpsync.warehouse import migrate
    from erpsync_sandbox.serve import start_sandbox

    url = make_database(pg_server_url, "erpsync_test_faults_ref")
    migrate.migrate(url)
    handle = start_sandbox(tmp_path_factory.mktemp("ref"), size="small", seed=0)
    try:
        run = RunInfo.local("reference")
        with h.connections(handle, url):
            h.sync_all(url, run)
            h.relay_until_done(run)
        yield {
            "stores": h.store_snapshot(handle),
            "warehouse": h.warehouse_snapshot(url),
            "writes": len(h.api_writes(handle)),
        }
    finally:
        handle.stop()
        database.drop_database(url)


def test_end_state_under_faults_equals_the_fault_free_run(baseline, tmp_path, warehouse_db):
    from erpsync_sandbox.faults import FaultConfig
    from erpsync_sandbox.serve import start_sandbox

    faults = {
        "crm": FaultConfig.model_validate(_faults(1)),
        "psa": FaultConfig.model_validate(_faults(2, drop_after_commit_rate=0.3)),
        "erp": FaultConfig.model_validate(_faults(3, drop_after_commit_rate=0.3)),
    }
    with start_sandbox(tmp_path / "faulty", size="small", seed=0, faults=faults) as sandbox:
        run = RunInfo.local("faulty")
        with h.connections(sandbox, warehouse_db):
            h.sync_all(warehouse_db, run, attempts=4)
            h.relay_until_done(run, passes=20)
        counters = {s: dict(sandbox.ctx.faults_for(s).injected) for s in ("crm", "psa", "erp")}
        stores = h.store_snapshot(sandbox)
        with psycopg.connect(warehouse_db) as conn:
            left = conn.execute(
                "SELECT count(*) FROM ops.outbox WHERE status IN ('pending', 'failed')"
            ).fetchone()[0]
            retried = conn.execute(
                "SELECT count(*) FROM ops.outbox WHERE status = 'sent' AND attempts > 1"
            ).fetchone()[0]
    # the faults really happened
    assert counters["erp"].get("drop", 0) > 0 and counters["psa"].get("drop", 0) > 0, counters
    assert sum(c.get("5xx", 0) for c in counters.values()) > 0, counters
    assert sum(c.get("mutate", 0) for c in counters.values()) > 0, counters
    assert retried > 0
    assert left == 0
    assert stores == baseline["stores"]
    assert h.warehouse_snapshot(warehouse_db) == baseline["warehouse"]


def test_two_relays_at_once_send_each_row_once(baseline, tmp_path, warehouse_db):
    from erpsync_sandbox.serve import start_sandbox

    with start_sandbox(tmp_path / "twins", size="small", seed=0) as sandbox:
        run = RunInfo.local("twins")
        with h.connections(sandbox, warehouse_db):
            h.sync_all(warehouse_db, run)
            seq = h.last_seq(sandbox)
            results: list[relay.RelayStats] = []
            errors: list[BaseException] = []

            def relay_all() -> None:
                try:
                    for system in ("erp", "psa"):
                        results.append(h.run_outbox(system, run=run))
                except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                    errors.append(exc)

            twins = [threading.Thread(target=relay_all) for _ in range(2)]
            for t in twins:
                t.start()
            for t in twins:
                t.join(timeout=300)
            assert not errors, errors
            with psycopg.connect(warehouse_db) as conn:
                rows = conn.execute(
                    "SELECT count(*) FROM ops.outbox WHERE status IN ('sent', 'pending')"
                ).fetchone()[0]
                pending = conn.execute(
                    "SELECT count(*) FROM ops.outbox WHERE status = 'pending'"
                ).fetchone()[0]
        writes = h.api_writes(sandbox, seq)
        assert pending == 0
        assert sum(r.attempted for r in results) == rows  # each row claimed by one relay only
        assert len(writes) == sum(r.writes for r in results) == baseline["writes"]
        creates = [(w["resource"], w["id"]) for w in writes if w["op"] == "create"]
        assert len(creates) == len(set(creates))
        assert h.store_snapshot(sandbox) == baseline["stores"]
