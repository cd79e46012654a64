"""The exceptions worklist pages through the real console app, Airflow auth and a real warehouse:
the list (tabs, filters, sorting, pages, action controls only for who may act), one exception's
detail, the CSV, and the actions per role (finance ops act, auditors are refused, anonymous
callers and cross-site requests too), each action leaving an audit row with the Airflow user."""

from __future__ import annotations

import csv
import io
import re

import psycopg
import pytest

from erpsync import exceptions_queue as eq
from erpsync.sync.spec import RunInfo
from tests.support.exception_rows import raise_aged

ACTIONS = "/erpsync/exceptions/actions"

#: (reason, entity_type, key, owner, amount, currency, account, age in days)
SCENARIO = [
    ("missing_rate", "time_entry", "T-100", "resource_manager", "120.50", "EUR", "001A", 40),
    ("over_cap", "project", "P-7", "engagement_manager", "5000.00", "USD", "001A", 12),
    ("invalid_tax_id", "client", "001B", "finance ops", None, None, "001B", 90),
]


@pytest.fixture
def queue(warehouse_db):
    run = RunInfo.local("checks")
    with psycopg.connect(warehouse_db) as conn:
        for crm_id, name, erp_no in (("001A", "Alpha GmbH", "C-1001"), ("001B", "Beta AG", None)):
            canonical = conn.execute(
                "INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', %s)"
                " RETURNING canonical_id",
                (crm_id,),
            ).fetchone()[0]
            conn.execute(
                """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country,
                       currency, erp_customer_no, source_record_id, row_hash, first_run_id,
                       last_run_id)
                   VALUES (%s, %s, %s, 'DE', 'EUR', %s, %s, 'h', 'r', 'r')""",
                (crm_id, canonical, name, erp_no, crm_id),
            )
        ids = raise_aged(conn, SCENARIO, {"secret": "hunter2", "hint": "check the rate card"}, run)
    return warehouse_db, ids


def _row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]


def _audit(url: str, action: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT entity_id, actor, after_state FROM audit.audit_log WHERE action = %s"
            " ORDER BY audit_id",
            (action,),
        ).fetchall()


def _status(url: str, exception_id: int) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT status, owner, waived_by, waive_comment FROM ops.exceptions"
            " WHERE exception_id = %s",
            (exception_id,),
        ).fetchone()


@pytest.mark.parametrize("role", ["auditor", "finance_ops", "data_engineer"])
def test_every_role_reads_the_worklist_and_only_who_may_act_sees_the_actions(console, queue, role):
    _url, ids = queue
    page = console(role).page("/erpsync/exceptions")
    assert page.status_code == 200, page.text
    html = page.text
    assert _row_ids(html) == [ids[2], ids[0], ids[1]]  # oldest first
    assert "Alpha GmbH" in html and "Missing rate" in html
    assert "5,000.00" in html and "120.50" in html
    assert re.search(r'data-tab="open"[^>]*>\s*Open <span class="badge open">3</span>', html)
    assert ('id="bulk"' in html) is (role != "auditor")
    assert ('name="ids[]"' in html) is (role != "auditor")


def test_filter_sort_and_paginate(console, queue, warehouse_db):
    _url, ids = queue
    client = console("auditor")

    def ids_of(query: str) -> list[int]:
        answer = client.page(f"/erpsync/exceptions?{query}")
        assert answer.status_code == 200, answer.text
        return _row_ids(answer.text)

    assert ids_of("client=alpha&sort=amount&dir=desc") == [ids[1], ids[0]]
    assert ids_of("reason=missing_rate") == [ids[0]]
    assert ids_of("entity_type=client") == [ids[2]]
    assert ids_of("owner=engagement_manager") == [ids[1]]
    assert ids_of("currency=USD") == [ids[1]]
    assert ids_of("q=t-1") == [ids[0]]
    assert ids_of("sort=client&dir=asc") == [ids[0], ids[1], ids[2]]
    assert ids_of("sort=client&dir=desc") == [ids[2], ids[1], ids[0]]
    assert ids_of("status=waived") == []
    assert ids_of("sort=nonsense&status=bogus&page=x") == [ids[2], ids[0], ids[1]]
    # a sortable header links to the other direction, keeping the filters
    html = client.page("/erpsync/exceptions?sort=amount&dir=desc&client=alpha").text
    assert (
        'href="/erpsync/exceptions?status=open&amp;client=alpha&amp;sort=amount&amp;dir=asc"'
        in html
    )
    # pages of 50
    run = RunInfo.local("many")
    with psycopg.connect(warehouse_db) as conn:
        for i in range(60):
            eq.raise_exception(conn, "missing_rate", "time_entry", f"E{i:03d}", "rm", {}, run)
    first = client.page("/erpsync/exceptions?reason=missing_rate&sort=entity&dir=asc").text
    second = client.page("/erpsync/exceptions?reason=missing_rate&sort=entity&dir=asc&page=2")
    assert len(_row_ids(first)) == 50 and 'rel="next"' in first
    assert len(_row_ids(second.text)) == 11 and 'rel="next"' not in second.text
    assert "Page 2 of 2" in second.text


def test_the_detail_shows_the_source_record_history_and_links_without_secrets(console, queue):
    url, ids = queue
    with psycopg.connect(url) as conn:
        eq.comment(conn, [ids[2]], text="called Beta's accountant", by="fiona.finance")
    page = console("auditor").page(f"/erpsync/exceptions/{ids[2]}")
    assert page.status_code == 200, page.text
    html = page.text
    assert "Invalid tax id" in html and "Beta AG" in html
    assert "check the rate card" in html
    assert "hunter2" not in html
    history = re.findall(r'<tr data-action="([a-z.]+)">', html)
    assert history == ["exception.commented", "exception.raised"]
    assert "called Beta" in html
    assert 'href="https://acme.my.salesforce.com/lightning/r/Account/001B/view"' in html
    assert 'id="single"' not in html  # an auditor gets no action form
    alpha = console("finance_ops").page(f"/erpsync/exceptions/{ids[0]}").text
    assert 'id="single"' in alpha
    assert "page=21" in alpha and "C-1001" in alpha  # the BC customer card of the client
    assert console("auditor").page("/erpsync/exceptions/999999").status_code == 404


def test_the_csv_is_the_filtered_list(console, queue):
    _url, ids = queue
    answer = console("auditor").get("/erpsync/exceptions.csv?client=alpha&sort=id&dir=asc")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="exceptions-open.csv"' in answer.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0][:4] == ["exception_id", "status", "reason_code", "reason"]
    assert [int(r[0]) for r in rows[1:]] == [ids[0], ids[1]]
    assert rows[1][9:11] == ["120.5000", "EUR"]


@pytest.mark.parametrize("role", ["finance_ops", "data_engineer"])
def test_who_may_act_waives_and_the_audit_trail_names_them(console, queue, role):
    # data_engineer: the demo's simple auth manager "op" may do what "user" may, and the FAB
    # data_engineer role edits HITL details too (erpsync.console.permissions)
    url, ids = queue
    client = console(role)
    answer = client.post_action(
        ACTIONS, {"action": "waive", "ids": [ids[0], ids[2]], "comment": "charity client"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"] == [
        {"id": ids[0], "outcome": "done", "why": None},
        {"id": ids[2], "outcome": "done", "why": None},
    ]
    assert _status(url, ids[0])[2:] == (client.user_name, "charity client")
    assert _audit(url, "exception.waived") == [
        (str(ids[0]), client.user_name, {"status": "waived", "comment": "charity client"}),
        (str(ids[2]), client.user_name, {"status": "waived", "comment": "charity client"}),
    ]
    waived_tab = client.page("/erpsync/exceptions?status=waived").text
    assert sorted(_row_ids(waived_tab)) == sorted([ids[0], ids[2]])


def test_assign_comment_and_reopen_through_the_page(console, queue):
    url, ids = queue
    client = console("finance_ops")
    assigned = client.post_action(ACTIONS, {"action": "assign", "ids": [ids[1]], "owner": "jonas"})
    commented = client.post_action(
        ACTIONS, {"action": "comment", "ids": [ids[1], 999999], "comment": "cap raised?"}
    )
    client.post_action(ACTIONS, {"action": "waive", "ids": [ids[1]], "comment": "accepted"})
    reopened = client.post_action(ACTIONS, {"action": "reopen", "ids": [ids[1]], "comment": ""})
    assert assigned.json()["results"] == [{"id": ids[1], "outcome": "done", "why": None}]
    assert commented.json()["results"][1] == {
        "id": 999999,
        "outcome": "skipped",
        "why": "no such exception",
    }
    assert reopened.json()["results"] == [{"id": ids[1], "outcome": "done", "why": None}]
    assert _status(url, ids[1]) == ("open", "jonas", None, None)
    assert _audit(url, "exception.assigned") == [(str(ids[1]), "fiona.finance", {"owner": "jonas"})]
    assert _audit(url, "exception.commented") == [
        (str(ids[1]), "fiona.finance", {"comment": "cap raised?"})
    ]
    assert [a[1] for a in _audit(url, "exception.reopened")] == ["fiona.finance"]
    history = re.findall(
        r'<tr data-action="([a-z.]+)">', client.page(f"/erpsync/exceptions/{ids[1]}").text
    )
    assert history == [
        "exception.reopened",
        "exception.waived",
        "exception.commented",
        "exception.assigned",
        "exception.raised",
    ]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"action": "waive", "ids": [1], "comment": "  "}, "Waive needs a reason."),
        ({"action": "waive", "ids": [1]}, "Waive needs a reason."),
        ({"action": "assign", "ids": [1], "owner": ""}, "Assign needs the owner to assign to."),
        ({"action": "comment", "ids": [1]}, "A comment needs text."),
    ],
)
def test_a_waive_without_reason_or_an_assign_without_owner_is_refused(console, queue, body, why):
    url, _ids = queue
    answer = console("finance_ops").post_action(ACTIONS, body)
    assert answer.status_code == 422
    assert answer.json()["detail"] == why
    assert _audit(url, "exception.waived") == []


@pytest.mark.parametrize(
    "body",
    [
        {"action": "delete", "ids": [1]},
        {"action": "waive", "ids": [], "comment": "x"},
        {"action": "waive", "ids": ["one"], "comment": "x"},
    ],
)
def test_a_malformed_action_is_refused(console, queue, body):
    assert console("finance_ops").post_action(ACTIONS, body).status_code == 422


def test_an_auditor_may_not_act(console, queue):
    url, ids = queue
    answer = console("auditor").post_action(
        ACTIONS, {"action": "waive", "ids": [ids[0]], "comment": "x"}
    )
    assert answer.status_code == 403
    assert "act_exceptions" in answer.json()["detail"]
    assert _status(url, ids[0])[0] == "open"


def test_an_anonymous_caller_may_not_act_or_read(console, queue):
    url, ids = queue
    anonymous = console(None)
    answer = anonymous.post_action(ACTIONS, {"action": "waive", "ids": [ids[0]], "comment": "x"})
    assert answer.status_code == 401
    assert anonymous.get("/erpsync/exceptions").status_code == 401
    assert anonymous.get("/erpsync/exceptions.csv").status_code == 401
    assert anonymous.page(f"/erpsync/exceptions/{ids[0]}").status_code == 303  # to the login
    assert _status(url, ids[0])[0] == "open"


def test_an_action_without_the_console_header_is_refused_as_cross_site(console, queue):
    url, ids = queue
    client = console("finance_ops")
    body = {"action": "waive", "ids": [ids[0]], "comment": "x"}
    no_header = client.post(ACTIONS, json=body)
    form = client.post(
        ACTIONS,
        data={"action": "waive", "ids": str(ids[0]), "comment": "x"},
        headers={"X-Erpsync-Request": "1"},
    )
    other_site = client.post_action(ACTIONS, body, headers={"Origin": "https://evil.example"})
    assert [r.status_code for r in (no_header, form, other_site)] == [403, 403, 403]
    assert _status(url, ids[0])[0] == "open"
    assert _audit(url, "exception.waived") == []
