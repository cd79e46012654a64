"""Tests of the business clock and "advance": the change log must match the stores."""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from erpsync_sandbox import lifecycle
from erpsync_sandbox.clock import CLOCK_START, BusinessClock
from erpsync_sandbox.context import SandboxContext


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    context = SandboxContext.open(tmp_path / "state", size="small", seed=3)
    lifecycle.generate(context)
    yield context
    context.close()


def test_clock_flows_persists_and_never_goes_back(tmp_path: Path) -> None:
    clock = BusinessClock(tmp_path / "clock.json")
    first = clock.now()
    assert first >= CLOCK_START and clock.now() > first
    clock.set("2026-12-01T10:00:00Z")
    assert clock.now() >= "2026-12-01T10:00:00.000000Z"
    clock.set("2026-01-01T00:00:00Z")  # ignored: never backwards
    assert clock.now() >= "2026-12-01T10:00:00.000000Z"
    clock.freeze()
    frozen = clock.now()
    assert clock.now() == frozen
    again = BusinessClock(tmp_path / "clock.json")
    assert again.now() == frozen and again.frozen


def test_advance_change_log_matches_the_stores(ctx: SandboxContext) -> None:
    start_seq = ctx.changes.last_seq()
    changes = lifecycle.advance(ctx, 3, 99)
    assert changes and all(c["source"] == "advance" for c in changes)
    assert [c["seq"] for c in changes] == list(range(start_seq + 1, start_seq + 1 + len(changes)))
    assert ctx.clock.now() >= "2026-11-05T18:00:00.000000Z"
    kinds = collections.Counter((c["system"], c["resource"], c["op"]) for c in changes)
    for key in [
        ("psa", "time_entries", "create"),
        ("psa", "time_entries", "update"),
        ("psa", "time_entries", "delete"),
        ("psa", "expenses", "create"),
        ("crm", "Contract_Milestone__c", "update"),
        ("crm", "Account", "create"),
        ("crm", "Opportunity", "create"),
        ("crm", "Opportunity", "update"),
        ("crm", "Opportunity", "delete"),
        ("erp", "vatPostingSetup", "update"),
    ]:
        assert kinds[key] >= 1, key
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    for c in changes:
        last[(c["system"], c["resource"], c["id"])] = c
    for (system, resource, rid), c in last.items():
        store = ctx.stores[system]
        row = store.get_row(resource, rid, include_deleted=True)
        if c["op"] == "delete" and system == "crm":  # Salesforce soft delete
            assert row is not None and row.deleted and row.data()["IsDeleted"] is True
            feed = store.deleted_since(resource, c["at"], c["at"])
            assert rid in {d["id"] for d in feed}
        elif c["op"] == "delete":  # Harvest: hard delete, gone
            assert row is None
        else:
            assert row is not None and not row.deleted
            assert row.modstamp == c["at"]


def test_advance_business_effects(ctx: SandboxContext) -> None:
    changes = lifecycle.advance(ctx, 2, 5)
    psa, crm, erp = ctx.stores["psa"], ctx.stores["crm"], ctx.stores["erp"]
    accepted = [
        crm.get("Contract_Milestone__c", c["id"])
        for c in changes
        if c["resource"] == "Contract_Milestone__c"
    ]
    assert accepted and all(
        m["Status__c"] == "Accepted" and m["Accepted_Date__c"] for m in accepted
    )
    assert "milestones" not in psa.resources()
    amended = [
        crm.get("Opportunity", c["id"])
        for c in changes
        if c["resource"] == "Opportunity" and c["op"] == "update"
    ]
    assert amended and all(o["Contract_Version__c"] >= 2 for o in amended)
    # a change order takes effect the day after the amendment (the day's own work keeps the
    # old rates), with no element of its rates dated on its own
    for c in changes:
        if c["resource"] == "Opportunity" and c["op"] == "update":
            o = crm.get("Opportunity", c["id"])
            effective = dt.date.fromisoformat(o["Change_Effective_Date__c"])
            assert effective - dt.date.fromisoformat(c["at"][:10]) == dt.timedelta(days=1)
            assert "effective_from" not in (o.get("Rate_Overrides__c") or "")
    new_opps = [
        crm.get("Opportunity", c["id"])
        for c in changes
        if c["resource"] == "Opportunity" and c["op"] == "create"
    ]
    assert all(o["IsWon"] and o["PSA_Project_Id__c"] is None for o in new_opps)
    reduced = erp.get("vatPostingSetup", "DOMESTIC|REDUCED")
    assert reduced["VAT_Percent"] == 10  # VAT Posting Setup changed in place: no history
    approved = [
        psa.get("time_entries", c["id"])
        for c in changes
        if c["resource"] == "time_entries" and c["op"] == "update"
    ]
    # approval is is_closed (Harvest has no approval status)
    assert any(te and te["is_closed"] and te["is_locked"] for te in approved)
    assert not any(te and "approval_status" in te for te in approved)
    created = [
        psa.get_row("time_entries", c["id"])
        for c in changes
        if c["resource"] == "time_entries" and c["op"] == "create"
    ]
    assert all(r is not None and r.data()["updated_at"] == r.modstamp[:19] + "Z" for r in created)


def test_advance_is_deterministic(tmp_path: Path) -> None:
    logs = []
    for name in ("a", "b"):
        context = SandboxContext.open(tmp_path / name, size="small", seed=3)
        lifecycle.generate(context)
        context.clock.freeze()  # same starting "now" for both firms
        logs.append(
            [
                (c["at"], c["system"], c["resource"], c["op"], c["id"])
                for c in lifecycle.advance(context, 2, 8)
            ]
        )
        context.close()
    assert logs[0] == logs[1]
