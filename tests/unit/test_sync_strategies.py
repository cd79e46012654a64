"""Sync specs are typed: each spec's source is a vendor listing that opens the client of its
own system, each delete strategy reports its kind and changes the read plan only the way its
kind says (the behaviour against real systems is in tests/integration/test_sync_engine.py and
test_time_expense_sync.py)."""

from __future__ import annotations

import datetime as dt

from erpsync.sync import deletes, sources, specs, specs_time
from erpsync.sync.spec import DeleteMode, ReadPlan
from erpsync.sync.time_expense import WindowedCount

CLIENT_OF = {
    "crm": "SalesforceClient",
    "psa": "HarvestClient",
    "erp": "BusinessCentralClient",
}


def all_specs():
    return [*specs.ALL.values(), *specs_time.TIME_EXPENSE]


def plan(spec, *, incremental: bool = True) -> ReadPlan:
    since = dt.datetime(2026, 11, 1, tzinfo=dt.UTC) if incremental else None
    return ReadPlan(spec=spec, client=None, state={}, incremental=incremental, since=since)


def test_every_source_opens_the_client_of_its_spec_system_on_the_default_connection():
    for spec in all_specs():
        client = spec.source.client()
        try:
            assert type(client).__name__ == CLIENT_OF[spec.system], spec.name
            assert client.conn_id == client.default_conn_id, spec.name
        finally:
            client.close()


def test_delete_kinds_per_system():
    for spec in all_specs():
        kind = spec.deletes.mode
        if isinstance(spec.source, sources.SalesforceQuery):
            assert kind == DeleteMode.SALESFORCE_DELETED_FEED and spec.deleted_flag, spec.name
        elif spec in specs_time.TIME_EXPENSE:
            assert isinstance(spec.deletes, WindowedCount), spec.name
            assert spec.deleted_flag == specs_time.TOMBSTONE_FLAG, spec.name
        else:
            assert kind == DeleteMode.ID_SET_COMPARE and not spec.incremental, spec.name
    assert specs_time.TIME_ENTRIES.codec is not None and specs_time.EXPENSES.codec is None
    assert specs.BILLABLE_RATES.scope == {"kind": "billable"}
    assert specs.TAX_RATES.after_merge is not None


def test_id_set_comparison_always_reads_in_full_and_tombstones_nothing_itself():
    p = plan(specs.PEOPLE)
    specs.PEOPLE.deletes.before_read(p)
    assert (p.incremental, p.since, p.read.mode) == (False, None, "full")
    assert specs.PEOPLE.deletes.after_read(p) == [] and p.gone == []


def test_no_deletes_leaves_the_plan_as_it_is():
    p = plan(specs.PEOPLE)
    deletes.NO_DELETES.before_read(p)
    assert p.read.mode == "incremental" and deletes.NO_DELETES.after_read(p) == []


def test_the_windowed_check_only_runs_on_incremental_reads_with_a_side_connection():
    full = plan(specs_time.TIME_ENTRIES, incremental=False)
    specs_time.TIME_ENTRIES.deletes.before_read(full)
    assert full.observer is None and specs_time.TIME_ENTRIES.deletes.after_read(full) == []
    # no side connection (pages replayed from files): nothing to count against
    blind = plan(specs_time.TIME_ENTRIES)
    specs_time.TIME_ENTRIES.deletes.before_read(blind)
    assert blind.side_conn is None and specs_time.TIME_ENTRIES.deletes.after_read(blind) == []
