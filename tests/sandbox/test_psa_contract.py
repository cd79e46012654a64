"""Contract tests of the sandbox PSA (Harvest API v2): real uvicorn on 127.0.0.1, real HTTP.

Each test gets a fresh state directory, a hand-seeded Harvest-shaped store and its own server
on an ephemeral port. What is checked: Harvest's auth failures, ``per_page`` limits, paging
that returns every record exactly once (also while records change during the read, through
direct store writes and through CORE's ``mutate_during_paging`` fault), inclusive
``updated_since``, filters, hard deletes, 429 + ``Retry-After``, the write endpoints erpsync
uses, drop-after-commit and tied timestamps, and the OpenAPI page.
Harvest reference: https://help.getharvest.com/api-v2/
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from erpsync_sandbox import lifecycle
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.contract import CONTRACT_LOG_ENV, read_log
from erpsync_sandbox.psa.app import create_app
from erpsync_sandbox.psa.ratelimit import RATE_LIMIT_ENV, TokenBuckets, parse_rate_limit
from erpsync_sandbox.store import Store
from tests.support.servers import start_server

TOKEN = "sandbox-psa-token"
ACCOUNT = "100200"
HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Harvest-Account-Id": ACCOUNT,
    "User-Agent": "erpsync contract tests (dev@erpsync.test)",
}
N_ENTRIES = 60
#: A client that is not erpsync (the suite-wide contract check ignores it): for the requests
#: that send something undocumented on purpose.
PROBE_AGENT = "contract probe (dev@example.test)"


# --------------------------------------------------------------------------- seeding


def _stamp(n: int) -> str:
    """Distinct, ordered modstamps in October 2026 (minute n)."""
    return f"2026-10-01T{n // 60:02d}:{n % 60:02d}:00.000000Z"


def seed(store: Store) -> None:
    """A small Harvest-shaped firm: 3 users, 3 clients, 3 projects, 60 time entries ..."""
    users = [
        (
            i,
            {
                "id": i,
                "first_name": f"User{i}",
                "last_name": "Test",
                "email": f"u{i}@firm.test",
                "is_active": i != 3,
                "is_contractor": False,
                "is_admin": i == 1,
                "timezone": "Europe/Berlin",
                "weekly_capacity": 144000,
                "default_hourly_rate": 150.0,
                "cost_rate": 80.0,
                "avatar_url": None,
                "created_at": "2026-01-01T00:00:00Z",
            },
            _stamp(1),
            None,
        )
        for i in (1, 2, 3)
    ]
    store.put_many("users", users)
    for uid in (1, 2):
        store.put(
            "billable_rates",
            uid * 10,
            {
                "id": uid * 10,
                "amount": 140.0,
                "start_date": "2026-01-01",
                "end_date": None,
                "created_at": "2026-01-01T00:00:00Z",
            },
            modstamp=_stamp(2),
            parent_id=uid,
        )
        store.put(
            "cost_rates",
            uid * 10,
            {
                "id": uid * 10,
                "amount": 70.0,
                "start_date": "2026-01-01",
                "end_date": None,
                "created_at": "2026-01-01T00:00:00Z",
            },
            modstamp=_stamp(2),
            parent_id=uid,
        )
    clients = [
        (
            i,
            {
                "id": i,
                "name": f"Client {i}",
                "is_active": i != 3,
                "address": None,
                "currency": ("EUR", "USD", "JPY")[i - 1],
                "created_at": "2026-01-01T00:00:00Z",
            },
            _stamp(i),
            None,
        )
        for i in (1, 2, 3)
    ]
    store.put_many("clients", clients)
    store.put_many(
        "contacts",
        [
            (
                1,
                {
                    "id": 1,
                    "client": {"id": 1, "name": "Client 1"},
                    "title": "CFO",
                    "first_name": "Ann",
                    "last_name": "Payer",
                    "email": "ann@client1.test",
                    "phone_office": "",
                    "phone_mobile": "",
                    "fax": "",
                    "created_at": "2026-01-01T00:00:00Z",
                },
                _stamp(3),
                None,
            )
        ],
    )
    projects = []
    for i in (1, 2, 3):
        client = {"id": i, "name": f"Client {i}", "currency": ("EUR", "USD", "JPY")[i - 1]}
        projects.append(
            (
                i,
                {
                    "id": i,
                    "name": f"Project {i}",
                    "code": f"P{i}",
                    "is_active": True,
                    "is_billable": True,
                    "is_fixed_fee": False,
                    "bill_by": "Tasks",
                    "hourly_rate": None,
                    "budget": None,
                    "budget_by": "project",
                    "budget_is_monthly": False,
                    "notify_when_over_budget": False,
                    "over_budget_notification_percentage": 80,
                    "show_budget_to_all": False,
                    "cost_budget": None,
                    "cost_budget_include_expenses": False,
                    "fee": None,
                    "notes": "",
                    "starts_on": "2026-01-01",
                    "ends_on": None,
                    "over_budget_notification_date": None,
                    "client": client,
                    "created_at": "2026-01-01T00:00:00Z",
                },
                _stamp(4),
                None,
            )
        )
    store.put_many("projects", projects)
    store.put_many(
        "tasks",
        [
            (
                i,
                {
                    "id": i,
                    "name": ("Development", "Design")[i - 1],
                    "billable_by_default": True,
                    "default_hourly_rate": 100.0,
                    "is_default": True,
                    "is_active": True,
                    "created_at": "2026-01-01T00:00:00Z",
                },
                _stamp(5),
                None,
            )
            for i in (1, 2)
        ],
    )
    store.put_many(
        "task_assignments",
        [
            (
                p * 10 + t,
                {
                    "id": p * 10 + t,
                    "billable": True,
                    "is_active": True,
                    "hourly_rate": 150.0,
                    "budget": None,
                    "project": {"id": p, "name": f"Project {p}", "code": f"P{p}"},
                    "task": {"id": t, "name": ("Development", "Design")[t - 1]},
                    "created_at": "2026-01-01T00:00:00Z",
                },
                _stamp(6),
                p,
            )
            for p in (1, 2, 3)
            for t in (1, 2)
        ],
    )
    store.put_many(
        "user_assignments",
        [
            (
                p * 10 + u,
                {
                    "id": p * 10 + u,
                    "is_project_manager": u == 1,
                    "is_active": True,
                    "use_default_rates": False,
                    "budget": None,
                    "hourly_rate": 150.0,
                    "project": {"id": p, "name": f"Project {p}", "code": f"P{p}"},
                    "user": {"id": u, "name": f"User{u} Test"},
                    "created_at": "2026-01-01T00:00:00Z",
                },
                _stamp(6),
                p,
            )
            for p in (1, 2, 3)
            for u in (1, 2)
        ],
    )
    entries = []
    for i in range(1, N_ENTRIES + 1):
        p, u, t = 1 + i % 3, 1 + i % 2, 1 + i % 2
        entries.append(
            (
                i,
                {
                    "id": i,
                    "spent_date": f"2026-09-{1 + i % 30:02d}",
                    "user": {"id": u, "name": f"User{u} Test"},
                    "client": {"id": p, "name": f"Client {p}"},
                    "project": {"id": p, "name": f"Project {p}"},
                    "task": {"id": t, "name": ("Development", "Design")[t - 1]},
                    "user_assignment": {
                        "id": p * 10 + u,
                        "is_project_manager": u == 1,
                        "is_active": True,
                        "budget": None,
                        "hourly_rate": 150.0,
                    },
                    "task_assignment": {
                        "id": p * 10 + t,
                        "billable": True,
                        "is_active": True,
                        "hourly_rate": 150.0,
                        "budget": None,
                    },
                    "external_reference": {
                        "id": f"JIRA-{i}",
                        "group_id": "1",
                        "account_id": "1",
                        "permalink": f"https://jira.test/JIRA-{i}",
                    }
                    if i % 10 == 0
                    else None,
                    "invoice": {"id": 1, "number": "1001"} if i % 6 == 0 else None,
                    "hours": 1.5,
                    "rounded_hours": 1.5,
                    "notes": f"entry {i}",
                    "is_locked": i % 6 == 0,
                    "locked_reason": "Item Invoiced" if i % 6 == 0 else None,
                    "is_closed": i % 3 == 2,  # approved via Timesheet Approval
                    "is_billed": i % 6 == 0,
                    "timer_started_at": None,
                    "started_time": None,
                    "ended_time": None,
                    "is_running": i == N_ENTRIES,
                    "billable": True,
                    "budgeted": False,
                    "billable_rate": 150.0,
                    "cost_rate": 70.0,
                    "created_at": "2026-09-30T00:00:00Z",
                },
                _stamp(100 + i),
                None,
            )
        )
    store.put_many("time_entries", entries)
    store.put(
        "expense_categories",
        1,
        {
            "id": 1,
            "name": "Travel",
            "unit_name": None,
            "unit_price": None,
            "is_active": True,
            "created_at": "2026-01-01T00:00:00Z",
        },
        modstamp=_stamp(7),
    )
    store.put_many(
        "expenses",
        [
            (
                i,
                {
                    "id": i,
                    "spent_date": f"2026-09-{i:02d}",
                    "user": {"id": 1, "name": "User1 Test"},
                    "client": {"id": 1, "name": "Client 1"},
                    "project": {"id": 1, "name": "Project 1", "code": "P1"},
                    "expense_category": {"id": 1, "name": "Travel"},
                    "user_assignment": None,
                    "total_cost": 12.5 * i,
                    "units": None,
                    "notes": f"taxi {i}",
                    "billable": True,
                    "is_billed": i == 1,
                    "is_locked": i == 1,
                    "is_closed": False,
                    "locked_reason": None,
                    "invoice": None,
                    "receipt": None
                    if i % 2
                    else {
                        "url": f"https://files.test/r{i}.pdf",
                        "file_name": f"r{i}.pdf",
                        "file_size": 1000,
                        "content_type": "application/pdf",
                    },
                    "created_at": "2026-09-30T00:00:00Z",
                },
                _stamp(200 + i),
                None,
            )
            for i in range(1, 6)
        ],
    )
    store.put(
        "invoices",
        1,
        {
            "id": 1,
            "client_key": "k1",
            "number": "1001",
            "purchase_order": None,
            "amount": 1350.0,
            "due_amount": 0.0,
            "tax": None,
            "tax_amount": 0.0,
            "tax2": None,
            "tax2_amount": 0.0,
            "discount": None,
            "discount_amount": 0.0,
            "subject": "September",
            "notes": None,
            "currency": "EUR",
            "state": "paid",
            "period_start": "2026-09-01",
            "period_end": "2026-09-30",
            "issue_date": "2026-10-01",
            "due_date": "2026-10-31",
            "payment_term": "net 30",
            "sent_at": None,
            "paid_at": None,
            "paid_date": None,
            "closed_at": None,
            "client": {"id": 1, "name": "Client 1"},
            "creator": {"id": 1, "name": "User1 Test"},
            "estimate": None,
            "retainer": None,
            "line_items": [],
            "created_at": "2026-10-01T00:00:00Z",
        },
        modstamp=_stamp(300),
    )


# --------------------------------------------------------------------------- server


@dataclass
class Psa:
    base: str
    ctx: SandboxContext
    client: httpx.Client

    @property
    def store(self) -> Store:
        return self.ctx.stores["psa"]

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.client.get(url, **kw)

    def read_all(self, url: str, between: Any = None) -> tuple[list[int], list[dict[str, Any]]]:
        """Follow links.next from ``url``; returns all ids and the page envelopes."""
        ids: list[int] = []
        pages: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            response = self.client.get(next_url)
            assert response.status_code == 200, response.text
            page = response.json()
            key = next(k for k, v in page.items() if isinstance(v, list))
            ids.extend(r["id"] for r in page[key])
            pages.append(page)
            next_url = page["links"]["next"]
            if between is not None and next_url:
                between(len(pages))
        return ids, pages


@pytest.fixture
def psa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Psa]:
    monkeypatch.setenv(RATE_LIMIT_ENV, "off")
    for var in ("ERPSYNC_SANDBOX_FAULTS", "ERPSYNC_SANDBOX_FAULTS_PSA"):
        monkeypatch.delenv(var, raising=False)
    ctx = SandboxContext.open(tmp_path / "state")
    seed(ctx.stores["psa"])
    app = create_app(ctx)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread, port = start_server(server)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers=HEADERS, timeout=10.0) as client:
        yield Psa(base, ctx, client)
    server.should_exit = True
    thread.join(timeout=10)
    ctx.close()


# --------------------------------------------------------------------------- auth


def test_missing_user_agent_is_400(psa: Psa) -> None:
    request = psa.client.build_request("GET", "/v2/clients")
    del request.headers["User-Agent"]
    response = psa.client.send(request)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_bad_or_missing_token_is_401_with_harvest_body(psa: Psa) -> None:
    expected = {
        "error": "invalid_token",
        "error_description": "The access token provided is expired, revoked, malformed or"
        " invalid for other reasons.",
    }
    bad = psa.get("/v2/time_entries", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    assert bad.json() == expected
    request = psa.client.build_request("GET", "/v2/time_entries")
    del request.headers["Authorization"]
    missing = psa.client.send(request)
    assert (missing.status_code, missing.json()) == (401, expected)


def test_wrong_or_missing_account_is_404(psa: Psa) -> None:
    wrong = psa.get("/v2/clients", headers={"Harvest-Account-Id": "999"})
    assert (wrong.status_code, wrong.json()) == (404, {"status": 404, "error": "Not Found"})
    request = psa.client.build_request("GET", "/v2/clients")
    del request.headers["Harvest-Account-Id"]
    assert psa.client.send(request).status_code == 404


def test_query_string_credentials_are_accepted(psa: Psa) -> None:
    response = httpx.get(
        f"{psa.base}/v2/users/me",
        params={"access_token": TOKEN, "account_id": ACCOUNT},
        headers={"User-Agent": "curl-like (x@y.test)"},
    )
    assert response.status_code == 200
    assert response.json()["id"] == 1


# --------------------------------------------------------------------------- paging


def test_per_page_limits(psa: Psa) -> None:
    too_big = psa.get("/v2/time_entries", params={"per_page": 2001})
    assert too_big.status_code == 422
    assert "per_page" in too_big.json()["message"]
    assert psa.get("/v2/time_entries", params={"per_page": 0}).status_code == 422
    assert psa.get("/v2/time_entries", params={"per_page": "x"}).status_code == 422
    default = psa.get("/v2/time_entries").json()
    assert default["per_page"] == 2000
    assert default["total_entries"] == N_ENTRIES == len(default["time_entries"])
    assert default["links"]["next"] is None
    assert psa.get("/v2/time_entries", params={"per_page": 2000}).status_code == 200


def test_envelope_and_cursor_paging_return_every_record_once(psa: Psa) -> None:
    ids, pages = psa.read_all("/v2/time_entries?per_page=7")
    assert len(ids) == len(set(ids)) == N_ENTRIES
    assert ids == sorted(ids, reverse=True)  # newest (latest created) first
    first, middle, last = pages[0], pages[1], pages[-1]
    assert set(first) == {
        "time_entries",
        "per_page",
        "total_pages",
        "total_entries",
        "next_page",
        "previous_page",
        "page",
        "links",
    }
    assert (first["page"], first["next_page"], first["previous_page"]) == (1, 2, None)
    assert first["total_pages"] == 9 and first["total_entries"] == N_ENTRIES
    assert "cursor=" in first["links"]["next"] and "ref=next_cursor" in first["links"]["next"]
    assert first["links"]["first"].endswith("/v2/time_entries?page=1&per_page=7&ref=first")
    assert first["links"]["last"].endswith("/v2/time_entries?page=9&per_page=7&ref=last")
    # cursor pages: numbers null except on the last page (Harvest's cursor mode)
    assert (middle["page"], middle["next_page"]) == (None, None)
    assert (last["page"], last["previous_page"], last["links"]["next"]) == (9, 8, None)
    # the previous cursor goes back exactly one page
    back = psa.get(middle["links"]["previous"]).json()
    assert [e["id"] for e in back["time_entries"]] == [e["id"] for e in first["time_entries"]]


def test_page_numbers_work_like_harvest(psa: Psa) -> None:
    """tap-harvest style: page=1,2,... until next_page is null; a page walked in order continues
    after the previous page's last record, so records created meanwhile shift nothing."""
    store = psa.store
    ids: list[int] = []
    page: int | None = 1
    while page:
        body = psa.get("/v2/time_entries", params={"page": page, "per_page": 25}).json()
        assert body["page"] == page
        ids.extend(e["id"] for e in body["time_entries"])
        page = body["next_page"]
        if page == 2:  # new entries arrive between page 1 and page 2
            for _ in range(4):
                rid = store.next_int_id("time_entries")
                store.put("time_entries", rid, {**store.get("time_entries", 1), "id": rid})
    assert sorted(ids) == list(range(1, N_ENTRIES + 1))
    # a page asked for out of order is an OFFSET into the current list (newest first)
    third = psa.get("/v2/time_entries", params={"page": 3, "per_page": 10}).json()
    assert [e["id"] for e in third["time_entries"]] == list(range(44, 34, -1))
    assert (third["page"], third["next_page"], third["previous_page"]) == (3, 4, 2)


def test_cursor_links_keep_filters(psa: Psa) -> None:
    ids, pages = psa.read_all("/v2/time_entries?per_page=4&project_id=2&is_billed=false")
    expected = [i for i in range(1, N_ENTRIES + 1) if 1 + i % 3 == 2 and i % 6 != 0]
    assert sorted(ids) == expected
    assert all("project_id=2" in p["links"]["next"] for p in pages[:-1])
    assert pages[0]["total_entries"] == len(expected)


def test_paging_is_exact_while_records_change(psa: Psa) -> None:
    """Updates (seen and unseen records), a delete and new records between pages: every record
    that exists for the whole read comes exactly once; the deleted one not at all."""
    store = psa.store
    created: list[int] = []

    def between(pages_read: int) -> None:
        if pages_read == 1:
            store.update("time_entries", 58, {"notes": "changed after it was read"})
            store.update("time_entries", 3, {"notes": "changed before it is read"})
            store.delete("time_entries", 20)
            for _ in range(3):
                rid = store.next_int_id("time_entries")
                store.put("time_entries", rid, {**store.get("time_entries", 1), "id": rid})
                created.append(rid)
        elif pages_read == 4:
            store.update("time_entries", 1, {"hours": 2.0})

    ids, _ = psa.read_all("/v2/time_entries?per_page=10", between=between)
    assert len(ids) == len(set(ids))
    assert set(ids) == set(range(1, N_ENTRIES + 1)) - {20}
    assert not set(created) & set(ids)  # created after the read began: newer than its start
    # a fresh read sees the new records first
    fresh, _ = psa.read_all("/v2/time_entries?per_page=10")
    assert fresh[:3] == sorted(created, reverse=True)
    assert len(fresh) == N_ENTRIES - 1 + 3


def test_paging_is_exact_under_the_mutate_during_paging_fault(psa: Psa) -> None:
    faults = psa.client.patch(
        "/__admin/faults", json={"seed": 7, "mutate_during_paging_rate": 1.0, "mutate_count": 5}
    )
    assert faults.status_code == 200
    before = {r.id: r.modstamp for r in psa.store.scan_rows("time_entries")}
    ids, _ = psa.read_all("/v2/time_entries?per_page=6")
    after = {r.id: r.modstamp for r in psa.store.scan_rows("time_entries")}
    assert sum(before[k] != after[k] for k in before) >= 5  # the fault really moved records
    assert sorted(ids) == list(range(1, N_ENTRIES + 1))


def test_invalid_cursor_is_422_and_harvest_style_cursors_work(psa: Psa) -> None:
    response = psa.get("/v2/time_entries", params={"cursor": "not-a-cursor"})
    assert response.status_code == 422
    assert "cursor" in response.json()["message"]
    # a cursor in Harvest's documented shape {"after": {"id": N}} (no sandbox extras)
    harvest = base64.b64encode(b'{"after":{"id":50}}').decode()
    page = psa.get("/v2/time_entries", params={"cursor": harvest, "per_page": 5}).json()
    assert [e["id"] for e in page["time_entries"]] == [49, 48, 47, 46, 45]


# --------------------------------------------------------------------------- filters


def test_updated_since_is_inclusive(psa: Psa) -> None:
    # entry i has updated_at 2026-10-01T(100+i minutes); entry 40 -> 02:20:00
    at = psa.get("/v2/time_entries/40").json()["updated_at"]
    assert at == "2026-10-01T02:20:00Z"
    body = psa.get("/v2/time_entries", params={"updated_since": at}).json()
    assert sorted(e["id"] for e in body["time_entries"]) == list(range(40, N_ENTRIES + 1))
    later = psa.get("/v2/time_entries", params={"updated_since": "2026-10-01T02:20:01Z"}).json()
    assert min(e["id"] for e in later["time_entries"]) == 41
    offset = psa.get(
        "/v2/time_entries", params={"updated_since": "2026-10-01T04:20:00+02:00"}
    ).json()
    assert offset["total_entries"] == body["total_entries"]
    assert psa.get("/v2/clients", params={"updated_since": "yesterday"}).status_code == 422


def test_writes_bump_updated_at_and_show_in_updated_since(psa: Psa) -> None:
    old = psa.get("/v2/time_entries/5").json()["updated_at"]
    patched = psa.client.patch("/v2/time_entries/5", json={"notes": "fixed typo"})
    assert patched.status_code == 200
    new = patched.json()["updated_at"]
    assert new > old
    since = psa.get("/v2/time_entries", params={"updated_since": new}).json()
    assert [e["id"] for e in since["time_entries"]] == [5]


def test_time_entry_filters(psa: Psa) -> None:
    def ids(**params: Any) -> list[int]:
        response = psa.get("/v2/time_entries", params=params)
        assert response.status_code == 200, response.text
        return sorted(e["id"] for e in response.json()["time_entries"])

    every = range(1, N_ENTRIES + 1)
    assert ids(**{"from": "2026-09-05", "to": "2026-09-06"}) == [
        i for i in every if "2026-09-05" <= f"2026-09-{1 + i % 30:02d}" <= "2026-09-06"
    ]
    assert ids(user_id=2) == [i for i in every if 1 + i % 2 == 2]
    assert ids(client_id=3) == [i for i in every if 1 + i % 3 == 3]
    assert ids(is_billed="true") == [i for i in every if i % 6 == 0]
    assert ids(is_running="true") == [N_ENTRIES]
    # Harvest's time entries have no approval_status: the filter is ignored (every entry) and
    # noted as undocumented; approval is is_closed
    probe = {"User-Agent": PROBE_AGENT}
    every_id = psa.get("/v2/time_entries", params={"approval_status": "approved"}, headers=probe)
    assert sorted(e["id"] for e in every_id.json()["time_entries"]) == list(every)
    closed = psa.get("/v2/time_entries").json()["time_entries"]
    assert sorted(e["id"] for e in closed if e["is_closed"]) == [i for i in every if i % 3 == 2]
    assert all("approval_status" not in e for e in closed)
    assert ids(external_reference_id="JIRA-30") == [30]
    assert ids(project_id=1, task_id=2) == [i for i in every if 1 + i % 3 == 1 and i % 2 == 1]
    assert psa.get("/v2/time_entries", params={"project_id": "abc"}).status_code == 422
    assert psa.get("/v2/time_entries", params={"from": "09/05/2026"}).status_code == 422


def test_other_lists_and_nested_lists(psa: Psa) -> None:
    active = psa.get("/v2/clients", params={"is_active": "true"}).json()
    assert [c["id"] for c in active["clients"]] == [2, 1]
    ta = psa.get("/v2/projects/2/task_assignments").json()
    assert sorted(a["id"] for a in ta["task_assignments"]) == [21, 22]
    assert psa.get("/v2/task_assignments").json()["total_entries"] == 6
    ua = psa.get("/v2/user_assignments", params={"user_id": 1}).json()
    assert sorted(a["id"] for a in ua["user_assignments"]) == [11, 21, 31]
    rates = psa.get("/v2/users/1/billable_rates").json()
    assert [r["amount"] for r in rates["billable_rates"]] == [140.0]
    assert psa.get("/v2/users/2/cost_rates").json()["cost_rates"][0]["id"] == 20
    expenses = psa.get("/v2/expenses", params={"is_billed": "false", "to": "2026-09-03"}).json()
    assert sorted(e["id"] for e in expenses["expenses"]) == [2, 3]
    for name in (
        "contacts",
        "projects",
        "tasks",
        "users",
        "expense_categories",
        "invoices",
    ):
        body = psa.get(f"/v2/{name}").json()
        assert body["total_entries"] == psa.store.count(name) == len(body[name]), name
    assert psa.get("/v2/projects/99/task_assignments").status_code == 404
    assert psa.get("/v2/users/99/billable_rates").status_code == 404


def test_get_one_and_404(psa: Psa, private_contract_log) -> None:
    one = psa.get("/v2/projects/2")
    assert one.status_code == 200 and one.json()["code"] == "P2"
    for url in ("/v2/projects/99", "/v2/projects/abc", "/v2/nothing_here"):
        missing = psa.get(url)
        assert (missing.status_code, missing.json()) == (404, {"status": 404, "error": "Not Found"})
    assert psa.get("/v2/projects/1/task_assignments/11").json()["task"]["id"] == 1
    assert psa.get("/v2/projects/2/task_assignments/11").status_code == 404  # other project


# --------------------------------------------------------------------------- deletes


def test_hard_delete_disappears(psa: Psa) -> None:
    assert psa.client.delete("/v2/time_entries/7").status_code == 200
    assert psa.get("/v2/time_entries/7").status_code == 404
    ids, pages = psa.read_all("/v2/time_entries?per_page=9")
    assert 7 not in ids and len(ids) == N_ENTRIES - 1 == pages[0]["total_entries"]
    assert psa.client.delete("/v2/time_entries/7").status_code == 404
    assert psa.store.get("time_entries", 7, include_deleted=True) is None  # no tombstone
    assert psa.client.delete("/v2/expenses/2").status_code == 200
    assert psa.get("/v2/expenses/2").status_code == 404


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_429_with_retry_after(psa: Psa) -> None:
    # a long window keeps the test exact however slow the machine is: 1 request per 120 s
    set_limit = psa.client.put("/__admin/psa/rate_limit", json={"spec": "5/600"})
    assert set_limit.json()["spec"] == "5/600"
    statuses = [psa.get("/v2/clients").status_code for _ in range(5)]
    assert statuses == [200] * 5
    limited = psa.get("/v2/clients")
    assert limited.status_code == 429
    assert 100 <= int(limited.headers["Retry-After"]) <= 120
    assert "message" in limited.json()
    # the limit is per token: a wrong token is still answered 401, not 429
    assert psa.get("/v2/clients", headers={"Authorization": "Bearer x"}).status_code == 401
    psa.client.put("/__admin/psa/rate_limit", json={"spec": "off"})
    assert all(psa.get("/v2/tasks").status_code == 200 for _ in range(10))
    assert psa.client.put("/__admin/psa/rate_limit", json={"spec": "1/0"}).status_code == 422


def test_token_bucket_refills_at_harvest_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(parse_rate_limit("100/15"), clock=lambda: now[0])
    assert all(buckets.acquire("t") is None for _ in range(100))
    assert buckets.acquire("t") == 1  # 0.15 s until one request's worth is back
    assert buckets.acquire("other-token") is None  # buckets are per token
    now[0] += 0.151
    assert buckets.acquire("t") is None
    assert buckets.acquire("t") == 1
    now[0] += 15.0
    assert buckets.remaining("t") == 100
    slow = TokenBuckets(parse_rate_limit("2/10"), clock=lambda: now[0])
    assert [slow.acquire("t") for _ in range(3)] == [None, None, 5]
    now[0] += 5.001  # (float refill: a hair past the 5 s)
    assert slow.acquire("t") is None
    assert parse_rate_limit("off") is None and parse_rate_limit("0") is None
    with pytest.raises(ValueError):
        parse_rate_limit("fast")


def test_rate_limit_default_comes_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RATE_LIMIT_ENV, raising=False)
    ctx = SandboxContext.open(tmp_path / "default")
    try:
        create_app(ctx)
        limiter = ctx.extras["psa_rate_limiter"]
        assert isinstance(limiter, TokenBuckets)
        assert limiter.limit is not None
        assert (limiter.limit.requests, limiter.limit.window_seconds) == (100, 15)
    finally:
        ctx.close()
    monkeypatch.setenv(RATE_LIMIT_ENV, "3/9")
    ctx = SandboxContext.open(tmp_path / "env")
    try:
        create_app(ctx)
        limit = ctx.extras["psa_rate_limiter"].limit
        assert (limit.requests, limit.window_seconds) == (3, 9)
    finally:
        ctx.close()


# --------------------------------------------------------------------------- writes


def test_project_setup_writes(psa: Psa) -> None:
    """What erpsync's project setup creates: client, contact, project, task, assignments with
    hourly_rate; then updates and deletes."""
    client = psa.client.post("/v2/clients", json={"name": "Newco AG", "currency": "CHF"})
    assert client.status_code == 201
    cid = client.json()["id"]
    assert client.json()["currency"] == "CHF" and client.json()["id"] == 4
    contact = psa.client.post(
        "/v2/contacts", json={"client_id": cid, "first_name": "Nina", "email": "n@newco.test"}
    )
    assert contact.status_code == 201 and contact.json()["client"] == {
        "id": cid,
        "name": "Newco AG",
    }
    project = psa.client.post(
        "/v2/projects",
        json={
            "client_id": cid,
            "name": "Newco rollout",
            "code": "NEW-1",
            "is_billable": True,
            "bill_by": "Tasks",
            "budget_by": "project",
            "starts_on": "2026-11-01",
        },
    )
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    # Harvest: a project has no currency of its own; its client carries it
    assert project.json()["client"] == {"id": cid, "name": "Newco AG", "currency": "CHF"}
    assert "currency" not in project.json()
    task = psa.client.post("/v2/tasks", json={"name": "Consulting", "default_hourly_rate": 175})
    assert task.status_code == 201
    tid = task.json()["id"]
    ta = psa.client.post(
        f"/v2/projects/{pid}/task_assignments", json={"task_id": tid, "hourly_rate": 190.5}
    )
    assert ta.status_code == 201 and ta.json()["hourly_rate"] == 190.5
    dup = psa.client.post(f"/v2/projects/{pid}/task_assignments", json={"task_id": tid})
    assert dup.status_code == 422
    ua = psa.client.post(
        f"/v2/projects/{pid}/user_assignments",
        json={"user_id": 2, "hourly_rate": 210, "use_default_rates": False},
    )
    assert ua.status_code == 201
    assert ua.json()["use_default_rates"] is False and ua.json()["user"]["id"] == 2
    patched = psa.client.patch(
        f"/v2/projects/{pid}/user_assignments/{ua.json()['id']}", json={"hourly_rate": 220}
    )
    assert patched.json()["hourly_rate"] == 220
    assert patched.json()["updated_at"] >= ua.json()["updated_at"]
    listed = psa.get(f"/v2/projects/{pid}/task_assignments").json()["task_assignments"]
    assert [a["hourly_rate"] for a in listed] == [190.5]
    renamed = psa.client.patch(f"/v2/clients/{cid}", json={"name": "Newco Group AG"})
    assert renamed.json()["name"] == "Newco Group AG"
    # Harvest: a client with projects cannot be deleted
    assert psa.client.delete(f"/v2/clients/{cid}").status_code == 422
    assert (
        psa.client.delete(f"/v2/projects/{pid}/task_assignments/{ta.json()['id']}").status_code
        == 200
    )
    assert psa.get(f"/v2/projects/{pid}/task_assignments").json()["total_entries"] == 0
    assert psa.client.delete(f"/v2/projects/{pid}").status_code == 200
    assert psa.get(f"/v2/projects/{pid}").status_code == 404
    assert psa.client.delete(f"/v2/clients/{cid}").status_code == 200


def test_harvest_has_no_milestones(psa: Psa, private_contract_log) -> None:
    """Harvest API v2 has no milestone resource (audit H16-H18): every milestone path is a 404,
    as on a real account (fixed fee is the project's ``is_fixed_fee``/``fee``; milestones live
    in the CRM as ``Contract_Milestone__c``). Resource list:
    https://help.getharvest.com/api-v2/"""
    assert psa.get("/v2/milestones").status_code == 404
    assert psa.get("/v2/milestones", params={"project_id": 1}).status_code == 404
    assert psa.get("/v2/milestones/1").status_code == 404
    created = psa.client.post(
        "/v2/milestones",
        json={"project_id": 1, "name": "m", "amount": "10", "due_date": "2026-12-01"},
    )
    assert created.status_code == 404
    assert psa.client.patch("/v2/milestones/1", json={"status": "invoiced"}).status_code == 404
    assert "milestones" not in psa.store.resources()


def test_validation_errors_are_422_with_message(psa: Psa) -> None:
    cases = [
        ("/v2/clients", {"currency": "EUR"}),
        ("/v2/projects", {"client_id": 1, "name": "x"}),
        (
            "/v2/projects",
            {
                "client_id": 999,
                "name": "x",
                "is_billable": True,
                "bill_by": "Tasks",
                "budget_by": "none",
            },
        ),
        ("/v2/time_entries", {"project_id": 1, "task_id": 1}),
        ("/v2/projects/1/task_assignments", {"hourly_rate": 10}),
    ]
    for path, body in cases:
        response = psa.client.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert isinstance(response.json()["message"], str) and response.json()["message"]
    bad_json = psa.client.post(
        "/v2/clients", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 422


def test_time_entry_lifecycle_and_read_only_billed_state(
    psa: Psa, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``is_billed``/``invoice`` cannot be written (Harvest documents neither as an update
    parameter: ignored, and noted as undocumented); a locked entry refuses edits with 422;
    there is no ``mark_as_billed`` action (404)."""
    from erpsync_sandbox.contract import CONTRACT_LOG_ENV

    log = tmp_path / "contract.jsonl"
    monkeypatch.setenv(CONTRACT_LOG_ENV, str(log))
    created = psa.client.post(
        "/v2/time_entries",
        json={
            "project_id": 1,
            "task_id": 1,
            "user_id": 2,
            "spent_date": "2026-11-02",
            "hours": 3.5,
            "notes": "workshop",
        },
    )
    assert created.status_code == 201, created.text
    entry = created.json()
    assert entry["billable_rate"] == 150.0  # from the project's task assignment (bill_by Tasks)
    assert entry["cost_rate"] == 70.0  # the user's cost rate in force on spent_date
    assert entry["task_assignment"]["id"] == 11 and entry["user_assignment"]["id"] == 12
    assert (entry["is_billed"], entry["is_locked"], entry["invoice"]) == (False, False, None)
    eid = entry["id"]
    ref = {"id": "ERP-2026-0077", "group_id": "erpsync", "account_id": "1", "permalink": None}
    answer = psa.client.patch(
        f"/v2/time_entries/{eid}",
        json={
            "is_billed": True,
            "invoice": {"id": 77, "number": "ERP-2026-0077"},
            "external_reference": ref,
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert (body["is_billed"], body["is_locked"], body["invoice"]) == (False, False, None)
    assert body["external_reference"] == ref  # documented, so written
    assert psa.client.patch(f"/v2/time_entries/{eid}", json={"hours": 4}).json()["hours"] == 4
    expense = psa.client.patch("/v2/expenses/3", json={"is_billed": True, "notes": "cab"})
    assert expense.status_code == 200
    assert (expense.json()["is_billed"], expense.json()["notes"]) == (False, "cab")
    # entry 6 is invoiced (locked): any documented edit is refused, the entry is unchanged
    locked_edit = psa.client.patch("/v2/time_entries/6", json={"hours": 9})
    assert locked_edit.status_code == 422 and "locked" in locked_edit.json()["message"]
    assert psa.get("/v2/time_entries/6").json()["hours"] == 1.5
    assert psa.client.patch("/v2/expenses/1", json={"notes": "x"}).status_code == 422
    # no action endpoint marks billed
    assert psa.client.patch(f"/v2/time_entries/{eid}/mark_as_billed").status_code == 404
    assert psa.client.patch("/v2/expenses/4/mark_as_billed").status_code == 404
    notes = _notes(log, 9)
    assert any("'is_billed'" in n and "time_entries" in n for n in notes), notes
    assert any("'invoice'" in n for n in notes) and any("expenses" in n for n in notes)
    assert any("no such route" in n and "mark_as_billed" in n for n in notes)
    assert not any("external_reference" in n or "'hours'" in n for n in notes)
    assert psa.client.delete(f"/v2/time_entries/{eid}").status_code == 200
    assert psa.get(f"/v2/time_entries/{eid}").status_code == 404


def _notes(log: Path, requests: int) -> list[str]:
    """The undocumented notes of a contract log once ``requests`` records are in it (the
    recorder writes a request's line after its answer went out)."""
    from erpsync_sandbox.contract import read_log

    deadline = time.monotonic() + 5
    while len(list(read_log(log))) < requests and time.monotonic() < deadline:
        time.sleep(0.01)
    return [n for rec in read_log(log) for n in rec["undocumented"]]


def _billed_state(psa: Psa, resource: str) -> dict[int, tuple]:
    return {
        b["id"]: (b["is_billed"], (b["invoice"] or {}).get("id"), b["is_locked"])
        for b in psa.store.scan(resource)
    }


def test_invoice_line_items_import_bills_exactly_the_window_and_delete_releases(
    psa: Psa, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /v2/invoices with ``line_items_import`` imports the client's uninvoiced billable
    time and expenses of the projects in the spent_date window, sets ``is_billed``, ``invoice``
    and the lock on exactly those, and DELETE releases them again."""
    from erpsync_sandbox.contract import CONTRACT_LOG_ENV

    log = tmp_path / "contract.jsonl"
    monkeypatch.setenv(CONTRACT_LOG_ENV, str(log))
    window = {"from": "2026-09-04", "to": "2026-09-10"}
    before_time = _billed_state(psa, "time_entries")
    before_expenses = _billed_state(psa, "expenses")
    body = {
        "client_id": 1,
        "number": "PSI-2026-0001",
        "issue_date": "2026-10-01",
        "line_items_import": {
            "project_ids": [1],
            "time": {"summary_type": "detailed", **window},
            "expenses": {"summary_type": "category", **window},
        },
    }
    created = psa.client.post("/v2/invoices", json=body)
    assert created.status_code == 201, created.text
    invoice = created.json()
    assert invoice["number"] == "PSI-2026-0001" and invoice["state"] == "draft"
    assert (invoice["period_start"], invoice["period_end"]) == ("2026-09-04", "2026-09-10")
    # project 1 = entries i % 3 == 0; spent 09-04/07/10 = i in 3, 33, 6, 36, 9, 39; 6 and 36 are
    # already invoiced; expenses 4 and 5 (09-04, 09-05) of project 1
    time_ids, expense_ids = {3, 9, 33, 39}, {4, 5}
    lines = invoice["line_items"]
    assert [li["kind"] for li in lines] == ["Service"] * 4 + ["Product"]
    assert all(li["quantity"] == 1.5 and li["unit_price"] == 150.0 for li in lines[:4])
    assert lines[4]["amount"] == 12.5 * 4 + 12.5 * 5 and lines[4]["quantity"] == 1
    assert invoice["amount"] == 4 * 225.0 + 112.5
    after_time = _billed_state(psa, "time_entries")
    after_expenses = _billed_state(psa, "expenses")
    assert {i for i, v in after_time.items() if v != before_time[i]} == time_ids
    assert {i for i, v in after_expenses.items() if v != before_expenses[i]} == expense_ids
    assert all(after_time[i] == (True, invoice["id"], True) for i in time_ids)
    assert all(after_expenses[i] == (True, invoice["id"], True) for i in expense_ids)
    entry = psa.get("/v2/time_entries/3").json()
    assert entry["invoice"] == {"id": invoice["id"], "number": "PSI-2026-0001"}
    assert entry["locked_reason"] == "Item Invoiced"
    assert psa.get("/v2/expenses/4").json()["locked_reason"] == "Expense is invoiced."
    billed = psa.get("/v2/time_entries", params={"project_id": 1, "is_billed": "true", **window})
    assert {e["id"] for e in billed.json()["time_entries"]} == time_ids | {6, 36}
    # an invoiced entry is locked; a second import of the same window finds nothing left
    assert psa.client.patch("/v2/time_entries/3", json={"notes": "x"}).status_code == 422
    again = psa.client.post("/v2/invoices", json={**body, "number": "PSI-2026-0002"})
    assert again.status_code == 201 and again.json()["line_items"] == []
    # deleting the invoice releases exactly its items
    assert psa.client.delete(f"/v2/invoices/{invoice['id']}").status_code == 200
    assert psa.get(f"/v2/invoices/{invoice['id']}").status_code == 404
    assert _billed_state(psa, "time_entries") == before_time
    assert _billed_state(psa, "expenses") == before_expenses
    assert psa.client.delete(f"/v2/invoices/{invoice['id']}").status_code == 404
    # what Harvest refuses
    refused = [
        {**body, "line_items_import": {"project_ids": [2], "time": {"summary_type": "task"}}},
        {**body, "line_items_import": {"project_ids": [1], "time": {"summary_type": "weekly"}}},
        {
            **body,
            "line_items_import": {
                "project_ids": [1],
                "expenses": {"summary_type": "task"},  # task is a time summary only
            },
        },
        {
            **body,
            "line_items_import": {
                "project_ids": [1],
                "time": {"summary_type": "project", "from": "2026-09-01"},
            },
        },
        {**body, "line_items_import": {"project_ids": []}},
    ]
    for bad in refused:
        response = psa.client.post("/v2/invoices", json=bad)
        assert response.status_code == 422, (bad, response.text)
    assert _billed_state(psa, "time_entries") == before_time
    # undocumented body keys are ignored and noted
    odd = psa.client.post(
        "/v2/invoices",
        json={
            "client_id": 3,
            "period_start": "2026-09-01",
            "line_items_import": {"project_ids": [3], "time": {"summary_type": "project"}},
        },
    )
    assert odd.status_code == 201 and odd.json()["period_start"] is None
    notes = _notes(log, 15)
    assert notes == ["POST /v2/invoices: body parameter 'period_start' is not documented"]


def test_expense_create_and_rates(psa: Psa) -> None:
    expense = psa.client.post(
        "/v2/expenses",
        json={
            "project_id": 2,
            "expense_category_id": 1,
            "spent_date": "2026-11-02",
            "total_cost": 42.10,
            "notes": "train",
        },
    )
    assert expense.status_code == 201, expense.text
    assert expense.json()["client"]["id"] == 2 and expense.json()["receipt"] is None
    assert expense.json()["user"]["id"] == 1  # defaults to the authenticated user
    rate = psa.client.post(
        "/v2/users/1/billable_rates", json={"amount": 160, "start_date": "2026-07-01"}
    )
    assert rate.status_code == 201 and rate.json()["end_date"] is None
    rates = psa.get("/v2/users/1/billable_rates").json()["billable_rates"]
    previous = next(r for r in rates if r["id"] == 10)
    assert previous["end_date"] == "2026-06-30"
    assert psa.client.post("/v2/users/99/billable_rates", json={"amount": 1}).status_code == 404
    cost = psa.client.post(
        "/v2/users/2/cost_rates", json={"amount": 90, "start_date": "2026-08-01"}
    )
    assert cost.status_code == 201


def test_invoices_are_never_deduplicated(psa: Psa) -> None:
    body = {
        "client_id": 1,
        "subject": "October",
        "currency": "EUR",
        "issue_date": "2026-11-01",
        "payment_term": "net 30",
        "tax": 19.0,
        "line_items": [
            {
                "kind": "Service",
                "description": "Consulting",
                "quantity": 10,
                "unit_price": 150,
                "project_id": 1,
                "taxed": True,
            },
            {"kind": "Service", "description": "Travel", "quantity": 1, "unit_price": 80.5},
        ],
    }
    first = psa.client.post("/v2/invoices", json=body)
    second = psa.client.post("/v2/invoices", json=body)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert (first.json()["number"], second.json()["number"]) == ("1002", "1003")  # after 1001
    invoice = first.json()
    assert invoice["amount"] == 1580.5 + 285.0  # 1580.50 net + 19 % of the taxed 1500
    assert invoice["due_date"] == "2026-12-01" and invoice["state"] == "draft"
    assert [li["amount"] for li in invoice["line_items"]] == [1500, 80.5]
    assert psa.get("/v2/invoices").json()["total_entries"] == 3


# --------------------------------------------------------------------------- faults


def test_drop_after_commit_on_invoice_post(psa: Psa) -> None:
    psa.client.put(
        "/__admin/faults", json={"drop_after_commit_rate": 1.0, "drop_path_contains": "invoices"}
    )
    with pytest.raises(httpx.HTTPError):
        psa.client.post("/v2/invoices", json={"client_id": 2, "subject": "lost response"})
    psa.client.put("/__admin/faults", json={})
    subjects = [i["subject"] for i in psa.get("/v2/invoices").json()["invoices"]]
    assert "lost response" in subjects  # committed although the client saw no response


def test_tied_timestamps_still_page_exactly_once(psa: Psa) -> None:
    psa.client.put("/__admin/faults", json={"tie_timestamps": True})
    psa.ctx.clock.freeze()
    made = [psa.client.post("/v2/tasks", json={"name": f"T{i}"}).json() for i in range(5)]
    stamps = {t["updated_at"] for t in made}
    assert len(stamps) == 1  # the burst shares one timestamp
    (stamp,) = stamps
    ids, _ = psa.read_all(f"/v2/tasks?per_page=2&updated_since={stamp}")
    assert sorted(ids) == sorted(t["id"] for t in made)  # >= keeps every tied record


def test_injected_429_burst_carries_retry_after(psa: Psa) -> None:
    psa.client.put("/__admin/faults", json={"burst_429": {"count": 2, "retry_after": 4}})
    first = psa.get("/v2/clients")
    assert first.status_code == 429 and first.headers["Retry-After"] == "4"
    assert psa.get("/v2/clients").status_code == 429
    assert psa.get("/v2/clients").status_code == 200


# --------------------------------------------------------------------------- docs, ID service


def test_openapi_has_tags_and_summaries(psa: Psa) -> None:
    spec = psa.get("/openapi.json").json()
    op = spec["paths"]["/v2/time_entries"]["get"]
    assert op["tags"] == ["Time entries"] and op["summary"] == "List time entries"
    assert "/v2/projects/{parent_id}/task_assignments" in spec["paths"]
    assert spec["paths"]["/v2/invoices"]["post"]["summary"].startswith("Create")
    update = spec["paths"]["/v2/time_entries/{id}"]["patch"]["requestBody"]["content"]
    assert "is_billed" not in update["application/json"]["example"]  # read-only in Harvest
    assert "/v2/time_entries/{id}/mark_as_billed" not in spec["paths"]
    imported = spec["paths"]["/v2/invoices"]["post"]["requestBody"]["content"]
    assert "line_items_import" in imported["application/json"]["example"]
    assert "delete" in spec["paths"]["/v2/invoices/{id}"]
    headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
    assert {"Harvest-Account-Id", "User-Agent"} <= headers
    assert psa.get("/docs").status_code == 200


def test_harvest_id_service_endpoints(psa: Psa) -> None:
    token = httpx.post(
        f"{psa.base}/api/v2/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": TOKEN,
            "client_id": "x",
            "client_secret": "y",
        },
    )
    assert token.status_code == 200 and token.json()["access_token"] == TOKEN
    bad = httpx.post(
        f"{psa.base}/api/v2/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "nope",
        },
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    accounts = httpx.get(
        f"{psa.base}/api/v2/accounts", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert accounts.json()["accounts"][0]["id"] == int(ACCOUNT)


# --------------------------------------------------------------------------- third-party client

TAP_VERSION = "3.1.1"
REPO = Path(__file__).resolve().parents[2]
TAP_VENV = REPO / ".erpsync" / "venvs" / "tap-harvest"

# tap-harvest has no config key for its hosts: it hard-codes Client.base_url
# ("https://api.harvestapp.com/v2", set in __init__) and REFRESH_URL ("https://id.getharvest.com
# /api/v2"). This runner sets exactly those two to the sandbox and changes nothing else.
TAP_RUNNER = """
import sys

import tap_harvest
from tap_harvest import client as harvest_client

BASE = sys.argv.pop(1).rstrip("/")
harvest_client.REFRESH_URL = BASE + "/api/v2"
_init = harvest_client.Client.__init__


def _init_with_sandbox_base(self, config):
    _init(self, config)
    self.base_url = BASE + "/v2"


harvest_client.Client.__init__ = _init_with_sandbox_base
sys.exit(tap_harvest.main())
"""


def _tap_python() -> Path:
    """tap-harvest in its own venv (singer-python pins jsonschema 2.x, which Airflow's
    jsonschema 4 excludes); created on first use from PyPI."""
    python = TAP_VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('tap-harvest'))"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == TAP_VERSION:
            return python
    TAP_VENV.parent.mkdir(parents=True, exist_ok=True)
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(TAP_VENV)], check=True)
        install = [uv, "pip", "install", "-q", "--python", str(python)]
    else:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(TAP_VENV)], check=True)
        install = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*install, f"tap-harvest=={TAP_VERSION}"], check=True, timeout=300)
    return python


def _run_tap(python: Path, runner: Path, base: str, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(python), str(runner), base, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if "--discover" in args:
        return [json.loads(done.stdout)]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_tap_harvest_syncs_unchanged_apart_from_base_url(psa: Psa, tmp_path: Path) -> None:
    """Singer's tap-harvest (maintained, Harvest v2, OAuth refresh flow, page/next_page paging,
    updated_since bookmarks, schema validation) syncs the sandbox like a real account."""
    python = _tap_python()
    psa.client.put("/__admin/psa/rate_limit", json={"spec": "100/15"})  # Harvest's real limit
    runner = tmp_path / "run_tap_harvest.py"
    runner.write_text(TAP_RUNNER)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "client_id": "erpsync-sandbox",
                "client_secret": "sandbox-secret",
                "refresh_token": TOKEN,
                "start_date": "2020-01-01T00:00:00Z",
                "user_agent": "erpsync tests (dev@erpsync.test)",
            }
        )
    )
    (catalog,) = _run_tap(python, runner, psa.base, "--config", str(config), "--discover")
    streams = {
        "clients": "clients",
        "contacts": "contacts",
        "projects": "projects",
        "tasks": "tasks",
        "users": "users",
        "time_entries": "time_entries",
        "expenses": "expenses",
        "expense_categories": "expense_categories",
        "invoices": "invoices",
        "project_tasks": "task_assignments",
        "project_users": "user_assignments",
    }
    for stream in catalog["streams"]:
        if stream["tap_stream_id"] in streams:
            for entry in stream["metadata"]:
                if entry["breadcrumb"] == []:
                    entry["metadata"]["selected"] = True
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(catalog))

    messages = _run_tap(
        python, runner, psa.base, "--config", str(config), "--catalog", str(catalog_path)
    )
    records: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        if message["type"] == "RECORD":
            records.setdefault(message["stream"], []).append(message["record"])
    for stream, resource in streams.items():
        got = sorted(r["id"] for r in records.get(stream, []))
        assert got == sorted(int(i) for i in psa.store.ids(resource)), stream
    entry = next(r for r in records["time_entries"] if r["id"] == 30)
    assert (entry["project_id"], entry["user_id"], entry["external_reference_id"]) == (
        1,
        1,
        "JIRA-30",
    )
    state = [m for m in messages if m["type"] == "STATE"][-1]["value"]
    assert state["bookmarks"]["time_entries"]["updated_at"].startswith("2026-10-01T02:40:00")

    # incremental: change one entry, delete another, run again from the saved state
    assert psa.client.patch("/v2/time_entries/5", json={"notes": "re-synced"}).status_code == 200
    assert psa.client.delete("/v2/time_entries/7").status_code == 200
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps(state))
    again = _run_tap(
        python,
        runner,
        psa.base,
        "--config",
        str(config),
        "--catalog",
        str(catalog_path),
        "--state",
        str(state_path),
    )
    changed = sorted(
        m["record"]["id"] for m in again if m["type"] == "RECORD" and m["stream"] == "time_entries"
    )
    # updated_since is inclusive, so the bookmark's own record (60) comes again with entry 5;
    # the hard-deleted entry 7 never shows up: deletes need a full id comparison (no tombstones)
    assert changed == [5, N_ENTRIES]


# --------------------------------------------------------------------------- CORE's small firm


@pytest.fixture
def small_firm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Psa]:
    """The PSA serving CORE's generated ``small`` firm (seed 1)."""
    monkeypatch.setenv(RATE_LIMIT_ENV, "off")
    for var in ("ERPSYNC_SANDBOX_FAULTS", "ERPSYNC_SANDBOX_FAULTS_PSA"):
        monkeypatch.delenv(var, raising=False)
    ctx = SandboxContext.open(tmp_path / "small", size="small", seed=1)
    lifecycle.generate(ctx, size="small", seed=1)
    app = create_app(ctx)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread, port = start_server(server)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers=HEADERS, timeout=30.0) as client:
        yield Psa(base, ctx, client)
    server.should_exit = True
    thread.join(timeout=10)
    ctx.close()


def test_small_firm_pages_exactly_once_while_it_changes(small_firm: Psa) -> None:
    store = small_firm.store
    expected = {int(i) for i in store.ids("time_entries")}
    assert len(expected) > 1000
    small_firm.client.patch(
        "/__admin/faults", json={"seed": 3, "mutate_during_paging_rate": 1.0, "mutate_count": 20}
    )
    ids, pages = small_firm.read_all("/v2/time_entries?per_page=250")
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert pages[0]["total_entries"] == len(expected)
    small_firm.client.put("/__admin/faults", json={})
    # incremental read from the newest updated_at seen: inclusive, so nothing is lost
    newest = max(e["updated_at"] for p in pages for e in p["time_entries"])
    since, _ = small_firm.read_all(f"/v2/time_entries?per_page=100&updated_since={newest}")
    assert since  # at least the record(s) carrying the newest stamp
    for project in small_firm.get("/v2/projects?per_page=5").json()["projects"]:
        nested = small_firm.get(f"/v2/projects/{project['id']}/task_assignments").json()
        assert all(a["project"]["id"] == project["id"] for a in nested["task_assignments"])


def test_tap_harvest_full_sync_of_the_small_firm(small_firm: Psa, tmp_path: Path) -> None:
    python = _tap_python()
    runner = tmp_path / "run_tap_harvest.py"
    runner.write_text(TAP_RUNNER)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "client_id": "erpsync-sandbox",
                "client_secret": "sandbox-secret",
                "refresh_token": TOKEN,
                "start_date": "2020-01-01T00:00:00Z",
                "user_agent": "erpsync tests (dev@erpsync.test)",
            }
        )
    )
    (catalog,) = _run_tap(python, runner, small_firm.base, "--config", str(config), "--discover")
    streams = {
        "time_entries": "time_entries",
        "expenses": "expenses",
        "projects": "projects",
        "invoices": "invoices",
        "users": "users",
    }
    for stream in catalog["streams"]:
        if stream["tap_stream_id"] in streams:
            for entry in stream["metadata"]:
                if entry["breadcrumb"] == []:
                    entry["metadata"]["selected"] = True
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(catalog))
    messages = _run_tap(
        python, runner, small_firm.base, "--config", str(config), "--catalog", str(catalog_path)
    )
    for stream, resource in streams.items():
        got = [
            m["record"]["id"]
            for m in messages
            if m.get("stream") == stream and m["type"] == "RECORD"
        ]
        assert len(got) == len(set(got)) == small_firm.store.count(resource), stream


def test_serving_benchmark_runs_on_the_small_firm(tmp_path: Path) -> None:
    """benchmarks/sandbox_serving.py end to end on the small firm (the large run is manual)."""
    out = tmp_path / "sandbox_serving.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "sandbox_serving.py"),
            "--size",
            "small",
            "--state-dir",
            str(tmp_path / "state"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["every_record_exactly_once"] is True
    assert [f"{r['mode']}:{r['decoder']}" for r in report["runs"]] == [
        "sequential:msgspec",
        "prefetch:msgspec",
        "sequential:orjson",
    ]
    assert report["runs"][0]["records"] == report["prepare"]["time_entries"] > 1000


# --------------------------------------------------------------------------- Harvest's contract
# (issue 13, audit H2-H4, H10, H13): what Harvest documents, what it ignores, what is noted


@pytest.fixture
def contract_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "contract.jsonl"
    monkeypatch.setenv(CONTRACT_LOG_ENV, str(log))
    return log


def _all_notes(log: Path, requests: int) -> list[str]:
    """What the first ``requests`` recorded requests used outside the contract. The recorder
    writes a request's line once the answer is sent, so wait (briefly) until it is there."""
    deadline = time.monotonic() + 5
    records = list(read_log(log))
    while len(records) < requests and time.monotonic() < deadline:
        time.sleep(0.02)
        records = list(read_log(log))
    assert len(records) >= requests, records
    return [what for rec in records for what in rec["undocumented"]]


TIME_ENTRY_FIELDS = {
    # https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/
    "id",
    "spent_date",
    "user",
    "user_assignment",
    "client",
    "project",
    "task",
    "task_assignment",
    "external_reference",
    "invoice",
    "hours",
    "hours_without_timer",
    "rounded_hours",
    "notes",
    "is_locked",
    "locked_reason",
    "is_closed",
    "is_billed",
    "timer_started_at",
    "started_time",
    "ended_time",
    "is_running",
    "billable",
    "budgeted",
    "billable_rate",
    "cost_rate",
    "created_at",
    "updated_at",
}
RATE_FIELDS = {"id", "amount", "start_date", "end_date", "created_at", "updated_at"}
EXPENSE_FIELDS = {
    # https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/
    "id",
    "client",
    "project",
    "expense_category",
    "user",
    "user_assignment",
    "receipt",
    "invoice",
    "notes",
    "units",
    "total_cost",
    "billable",
    "is_closed",
    "is_locked",
    "is_billed",
    "locked_reason",
    "spent_date",
    "created_at",
    "updated_at",
}


def test_time_entry_and_expense_are_harvests_shape(psa: Psa, contract_log: Path) -> None:
    """H3/H4: no approval_status (approval is is_closed); a time entry's client and project
    are {id, name}; an expense's client carries the currency. An approval_status sent on create
    is ignored and noted."""
    created = psa.client.post(
        "/v2/time_entries",
        json={"project_id": 1, "task_id": 1, "spent_date": "2026-11-02", "hours": 1},
    )
    assert created.status_code == 201, created.text
    entry = created.json()
    assert set(entry) == TIME_ENTRY_FIELDS, set(entry) ^ TIME_ENTRY_FIELDS
    assert entry["is_closed"] is False and "approval_status" not in entry
    assert entry["client"] == {"id": 1, "name": "Client 1"}
    assert entry["project"] == {"id": 1, "name": "Project 1"}
    assert _all_notes(contract_log, 1) == []
    ignored = psa.client.post(
        "/v2/time_entries",
        json={
            "project_id": 1,
            "task_id": 1,
            "spent_date": "2026-11-02",
            "approval_status": "approved",
        },
        headers={"User-Agent": PROBE_AGENT},
    )
    assert ignored.status_code == 201 and "approval_status" not in ignored.json()
    assert ignored.json()["is_closed"] is False
    assert _all_notes(contract_log, 2) == ["create_time_entry: body parameter 'approval_status'"]
    expense = psa.client.post(
        "/v2/expenses",
        json={"project_id": 2, "expense_category_id": 1, "spent_date": "2026-11-02", "units": 1},
    ).json()
    assert set(expense) == EXPENSE_FIELDS, set(expense) ^ EXPENSE_FIELDS
    assert expense["is_closed"] is False
    assert expense["client"] == {"id": 2, "name": "Client 2", "currency": "USD"}
    assert expense["project"] == {"id": 2, "name": "Project 2", "code": "P2"}
    assert set(expense["expense_category"]) == {"id", "name", "unit_price", "unit_name"}


def test_rates_have_no_currency_and_ignore_updated_since(psa: Psa, contract_log: Path) -> None:
    """H2: a rate is {id, amount, start_date, end_date, created_at, updated_at}; the rate lists
    document only page/per_page, so updated_since returns every rate and is noted."""
    rate = psa.client.post("/v2/users/1/billable_rates", json={"amount": 160, "currency": "EUR"})
    assert rate.status_code == 201 and set(rate.json()) == RATE_FIELDS
    assert _all_notes(contract_log, 1) == ["create_billable_rates: body parameter 'currency'"]
    every = psa.get("/v2/users/1/billable_rates").json()["billable_rates"]
    assert len(every) == 2 and all(set(r) == RATE_FIELDS for r in every)
    future = psa.get(
        "/v2/users/1/billable_rates",
        params={"updated_since": "2099-01-01T00:00:00Z"},
        headers={"User-Agent": PROBE_AGENT},
    )
    assert [r["id"] for r in future.json()["billable_rates"]] == [r["id"] for r in every]
    assert _all_notes(contract_log, 3)[-1] == "list billable_rates: query parameter 'updated_since'"
    documented = psa.get("/v2/users/2/cost_rates", params={"per_page": 100, "page": 1})
    assert documented.status_code == 200
    assert len(_all_notes(contract_log, 4)) == 2


def test_project_has_no_currency_and_budgets_as_documented(psa: Psa, contract_log: Path) -> None:
    """H13: currency is not a project parameter (ignored, noted; the client's currency
    applies); budget is hours, a money budget is cost_budget with budget_by project_cost."""
    made = psa.client.post(
        "/v2/projects",
        json={
            "client_id": 2,
            "name": "Fees",
            "is_billable": True,
            "bill_by": "People",
            "budget_by": "project_cost",
            "cost_budget": 50000,
            "currency": "EUR",
        },
        headers={"User-Agent": PROBE_AGENT},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert "currency" not in body and body["client"]["currency"] == "USD"
    assert body["cost_budget"] == 50000 and body["budget"] is None
    assert _all_notes(contract_log, 1) == ["create_projects: body parameter 'currency'"]
    bad = psa.client.post(
        "/v2/projects",
        json={
            "client_id": 2,
            "name": "Bad",
            "is_billable": True,
            "bill_by": "People",
            "budget_by": "money",
        },
    )
    assert bad.status_code == 422


def test_assignment_rate_applies_only_without_default_rates(psa: Psa) -> None:
    """H10: an assignment's hourly_rate is used "when the project's bill_by is People and
    use_default_rates is false"; use_default_rates defaults to true and a PATCH of hourly_rate
    alone leaves it as it is."""
    pid = psa.client.post(
        "/v2/projects",
        json={
            "client_id": 1,
            "name": "People billed",
            "is_billable": True,
            "bill_by": "People",
            "budget_by": "none",
        },
    ).json()["id"]
    psa.client.post(f"/v2/projects/{pid}/task_assignments", json={"task_id": 1, "billable": True})
    ua = psa.client.post(
        f"/v2/projects/{pid}/user_assignments", json={"user_id": 1, "hourly_rate": 210}
    ).json()
    assert ua["use_default_rates"] is True
    entry = {"project_id": pid, "task_id": 1, "user_id": 1, "spent_date": "2026-11-02"}
    default = psa.client.post("/v2/time_entries", json={**entry, "hours": 1}).json()
    assert default["billable_rate"] == 140.0  # the person's billable rate, not 210
    patched = psa.client.patch(
        f"/v2/projects/{pid}/user_assignments/{ua['id']}", json={"hourly_rate": 220}
    ).json()
    assert patched["use_default_rates"] is True
    applied = psa.client.patch(
        f"/v2/projects/{pid}/user_assignments/{ua['id']}",
        json={"hourly_rate": 220, "use_default_rates": False},
    ).json()
    assert applied["use_default_rates"] is False
    contracted = psa.client.post("/v2/time_entries", json={**entry, "hours": 2}).json()
    assert contracted["billable_rate"] == 220.0
