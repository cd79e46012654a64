"""The audit trail page through the real console app (Airflow's auth, a real warehouse): every
role reads it, the anonymous are refused; search by each filter, keyset pages, the entry's
before/after with the changed fields marked, the CSV of a whole search (more than a page), and
the hash chain's status: pending, verified on request, and BROKEN after tampering."""

from __future__ import annotations

import csv
import io

import psycopg
import pytest

from erpsync import audit
from erpsync.console import audit_trail


def seed(url: str, n: int = 60) -> list[int]:
    ids = []
    with psycopg.connect(url) as conn:
        for i in range(n):
            ids.append(
                audit.record(
                    conn,
                    actor="alice" if i % 2 else "bob",
                    action="exception.waived" if i % 3 else "exception.assigned",
                    entity_type="exception",
                    entity_id=str(i % 7),
                    before={"status": "open", "owner": "finance_ops"},
                    after={"status": "waived", "owner": "finance_ops", "reason": f"r{i}"},
                    source=audit.Source("erpsync_reconcile", f"run-{i % 4}", "classify")
                    if i % 5
                    else None,
                )
            )
    return ids


@pytest.mark.parametrize("role", ["auditor", "finance_ops", "data_engineer"])
def test_every_role_reads_the_trail(console, warehouse_db, role):
    seed(warehouse_db, 5)
    page = console(role).page("/erpsync/audit")
    assert page.status_code == 200, page.text
    assert page.text.count('href="/erpsync/audit/') >= 5
    assert "5 rows pending" in page.text


def test_the_anonymous_are_refused(console):
    anonymous = console(None)
    assert anonymous.get("/erpsync/audit").status_code == 401
    assert anonymous.get("/erpsync/audit.csv").status_code == 401
    assert anonymous.get("/erpsync/audit/1").status_code == 401
    assert anonymous.page("/erpsync/audit").status_code == 303
    assert anonymous.post_action("/erpsync/audit/verify", {}).status_code == 401


def test_search_filters_and_pages(console, warehouse_db):
    ids = seed(warehouse_db)
    client = console("auditor")
    first = client.page("/erpsync/audit")
    assert f'href="/erpsync/audit/{ids[-1]}"' in first.text
    assert f'href="/erpsync/audit/{ids[9]}"' not in first.text  # 50 a page
    assert f"before={ids[10]}" in first.text  # the keyset of the next page
    older = client.page(f"/erpsync/audit?before={ids[10]}")
    assert f'href="/erpsync/audit/{ids[9]}"' in older.text
    assert f'href="/erpsync/audit/{ids[10]}"' not in older.text

    by_actor = client.page("/erpsync/audit?actor=alice&action=exception.assigned")
    with psycopg.connect(warehouse_db) as conn:
        expected = conn.execute(
            "SELECT audit_id FROM audit.audit_log WHERE actor = 'alice' "
            "AND action = 'exception.assigned'"
        ).fetchall()
    assert by_actor.text.count('<td class="num"><a href="/erpsync/audit/') == len(expected)
    by_entity = client.page("/erpsync/audit?entity_type=exception&entity_id=3")
    assert by_entity.text.count('<td class="num"><a href="/erpsync/audit/') == len(
        [i for i in range(60) if i % 7 == 3]
    )
    by_run = client.page("/erpsync/audit?dag_id=erpsync_reconcile&run_id=run-1")
    assert by_run.text.count('<td class="num"><a href="/erpsync/audit/') == len(
        [i for i in range(60) if i % 5 and i % 4 == 1]
    )
    future = client.page("/erpsync/audit?from=2999-01-01")
    assert "No entries match." in future.text
    today = client.page("/erpsync/audit?from=2000-01-01&to=2999-12-31&actor=bob")
    assert today.text.count('<td class="num"><a href="/erpsync/audit/') == 30


def test_an_entry_shows_before_and_after_with_the_changes_marked(console, warehouse_db):
    ids = seed(warehouse_db, 3)
    page = console("auditor").page(f"/erpsync/audit/{ids[1]}")
    assert page.status_code == 200
    assert "<mark>status</mark>" in page.text
    assert "<mark>open</mark>" in page.text and "<mark>waived</mark>" in page.text
    assert "<mark>owner</mark>" not in page.text  # unchanged: not marked
    assert "<mark>reason</mark>" in page.text  # added
    assert console("auditor").page("/erpsync/audit/999999").status_code == 404


def test_the_csv_exports_the_whole_search_not_one_page(console, warehouse_db):
    seed(warehouse_db)
    client = console("auditor")
    every = client.get("/erpsync/audit.csv")
    assert every.status_code == 200
    assert every.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(every.text)))
    assert rows[0] == audit_trail.CSV_HEADER
    assert len(rows) == 61  # header + 60 > one page of 50
    bob = list(csv.reader(io.StringIO(client.get("/erpsync/audit.csv?actor=bob").text)))
    assert len(bob) == 31 and {r[2] for r in bob[1:]} == {"bob"}


def test_the_chain_status_is_shown_verified_on_request_and_broken_after_tampering(
    console, warehouse_db
):
    ids = seed(warehouse_db, 12)
    auditor = console("auditor")
    assert "12 rows pending" in auditor.page("/erpsync/audit").text
    # verifying is a POST (CSRF-checked), allowed to every reader
    refused = auditor.post("/erpsync/audit/verify", json={})
    assert refused.status_code == 403
    done = auditor.post_action("/erpsync/audit/verify", {})
    assert done.status_code == 200, done.text
    assert done.json()["verified_audit_id"] == ids[-1]
    page = auditor.page("/erpsync/audit").text
    assert f"Hash chain verified up to #{ids[-1]} at " in page
    assert ", 0 rows pending" in page

    more = seed(warehouse_db, 4)
    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit.audit_log DISABLE TRIGGER audit_log_no_update_delete")
        conn.execute(
            'UPDATE audit.audit_log SET after_state = \'{"status": "open"}\' WHERE audit_id = %s',
            (more[2],),
        )
        conn.execute("ALTER TABLE audit.audit_log ENABLE TRIGGER audit_log_no_update_delete")
    assert auditor.post_action("/erpsync/audit/verify", {}).json()["broken_audit_id"] == more[2]
    page = auditor.page("/erpsync/audit").text
    assert f"BROKEN at #{more[2]}: row content does not match its hash" in page
    assert 'data-chain="broken"' in page


def test_an_entry_never_shows_a_credential(console, warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        aid = audit.record(
            conn,
            actor="bob",
            action="connection.checked",
            entity_type="system",
            entity_id="psa",
            before={"client_secret": "old-Secret-123"},
            after={"client_secret": "new-Secret-456", "note": "Bearer abc.def.ghi"},
        )
    page = console("auditor").page(f"/erpsync/audit/{aid}").text
    assert "Secret-123" not in page and "Secret-456" not in page and "abc.def" not in page
    assert "<mark>client_secret</mark>" in page  # the change itself is still shown
