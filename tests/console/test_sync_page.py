"""The sync health pages through the real console app (Airflow's auth, a real warehouse): the
entities with last run, watermark, counts and a trend chart; the quarantine with filters, CSV
and the payload with its secrets masked; the requeue: allowed to the roles that may clear the
sync tasks, refused to auditors, to the anonymous and to cross-site requests, audited with the
user's name; and the masking rule itself."""

from __future__ import annotations

import csv
import io
import json

import psycopg
import pytest

from erpsync.console import sync_health

SECRET = "s3cr3t-Value-42"
PAYLOAD = {
    "id": 7001,
    "hours": -2,
    "notes": f"call back, password={SECRET}",
    "api_key": SECRET,
    "external_reference": {"access_token": SECRET, "permalink": "https://example.com/x"},
}


def seed(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        for i, (entity, status, read, quarantined) in enumerate(
            [
                ("time_entries", "success", 3000, 0),
                ("time_entries", "success", 12, 1),
                ("time_entries", "failed", 0, 0),
                ("clients", "success", 40, 0),
            ]
        ):
            conn.execute(
                """INSERT INTO ops.run_stats (dag_id, run_id, task_id, entity, status,
                       started_at, finished_at, records_read, records_loaded,
                       records_quarantined, detail)
                   VALUES ('erpsync_time_expense_sync', %s, 'sync', %s, %s,
                           now() - make_interval(mins => %s), now() - make_interval(mins => %s),
                           %s, %s, %s, %s::jsonb)""",
                (
                    f"scheduled__{i}",
                    entity,
                    status,
                    60 - i,
                    59 - i,
                    read,
                    read - quarantined,
                    quarantined,
                    json.dumps({"mode": "incremental", "error": "SyncError"})
                    if status == "failed"
                    else json.dumps({"mode": "full" if i == 0 else "incremental"}),
                ),
            )
        conn.execute(
            """INSERT INTO ops.sync_watermarks (source_system, entity, cursor_ts)
               VALUES ('psa', 'time_entries', '2026-11-02T09:00:06Z')"""
        )

        def quarantine(entity, key, reason, resolved=False):
            return conn.execute(
                """INSERT INTO ops.quarantine (run_id, source_system, entity, record_key,
                       reason_code, reason_detail, payload, resolved_at, resolved_by_run)
                   VALUES ('scheduled__1', 'psa', %s, %s, %s, %s, %s::jsonb, %s, %s)
                   RETURNING quarantine_id""",
                (
                    entity,
                    key,
                    reason,
                    f"hours must be >= 0 (Bearer {SECRET})",
                    json.dumps(PAYLOAD),
                    "2026-11-03" if resolved else None,
                    "scheduled__2" if resolved else None,
                ),
            ).fetchone()[0]

        return {
            "open": quarantine("time_entries", "7001", "negative_value"),
            "other": quarantine("expenses", "8001", "invalid_currency"),
            "resolved": quarantine("time_entries", "7002", "negative_value", resolved=True),
        }


@pytest.mark.parametrize("role", ["auditor", "finance_ops", "data_engineer"])
def test_every_role_reads_the_sync_pages(console, warehouse_db, role):
    ids = seed(warehouse_db)
    client = console(role)
    for url in (
        "/erpsync/sync",
        "/erpsync/sync/quarantine",
        f"/erpsync/sync/quarantine/{ids['open']}",
    ):
        page = client.page(url)
        assert page.status_code == 200, (url, page.text)
    assert client.get("/erpsync/sync.csv").status_code == 200
    assert client.get("/erpsync/sync/quarantine.csv").status_code == 200


def test_the_anonymous_are_refused(console):
    anonymous = console(None)
    for url in ("/erpsync/sync", "/erpsync/sync/quarantine", "/erpsync/sync/quarantine/1"):
        assert anonymous.get(url).status_code == 401
        assert anonymous.page(url).status_code == 303
    for url in ("/erpsync/sync.csv", "/erpsync/sync/quarantine.csv"):
        assert anonymous.get(url).status_code == 401
    answer = anonymous.post_action("/erpsync/sync/quarantine/requeue", {"ids": [1]})
    assert answer.status_code == 401


def test_entities_show_last_run_watermark_counts_and_a_trend(console, warehouse_db):
    seed(warehouse_db)
    client = console("auditor")
    page = client.page("/erpsync/sync").text
    # one row per synced entity, the last run of each (time_entries: the failed one)
    assert page.count("<tr data-entity=") == len(sync_health.entity_specs())
    row = page.split('<tr data-entity="time_entries">')[1].split("</tr>")[0]
    assert "failed" in row and "SyncError" in row
    assert "2026-11-02 09:00:06" in row  # the watermark
    assert 'href="/erpsync/sync/quarantine?entity=time_entries">1</a>' in row
    assert "never run" in page.split('<tr data-entity="expenses">')[1].split("</tr>")[0]
    # the trend of the entity asked for: a chart and its runs
    trend = client.page("/erpsync/sync?entity=time_entries").text
    assert 'role="img"' in trend and "time_entries: last 3 runs" in trend
    assert trend.split('<table class="data" id="trend">')[1].count('<tr><td class="num">') == 3
    runs = list(csv.reader(io.StringIO(client.get("/erpsync/sync.csv?entity=time_entries").text)))
    assert runs[0] == sync_health.RUNS_CSV_HEADER
    assert [r[8] for r in runs[1:]] == ["3000", "12", "0"]


def test_the_quarantine_is_filtered_and_its_payload_secrets_are_masked(console, warehouse_db):
    ids = seed(warehouse_db)
    client = console("auditor")
    page = client.page("/erpsync/sync/quarantine").text
    assert f'data-quarantine="{ids["open"]}"' in page
    assert f'data-quarantine="{ids["other"]}"' in page
    assert f'data-quarantine="{ids["resolved"]}"' not in page  # open rows by default
    resolved = client.page("/erpsync/sync/quarantine?status=resolved").text
    assert f'data-quarantine="{ids["resolved"]}"' in resolved
    assert f'data-quarantine="{ids["open"]}"' not in resolved
    by_entity = client.page("/erpsync/sync/quarantine?status=all&entity=expenses").text
    assert by_entity.count("<tr data-quarantine=") == 1
    by_reason = client.page("/erpsync/sync/quarantine?status=all&reason=negative_value").text
    assert by_reason.count("<tr data-quarantine=") == 2
    assert 'type="checkbox"' not in page  # auditors cannot requeue: no selection

    detail = client.page(f"/erpsync/sync/quarantine/{ids['open']}").text
    assert SECRET not in detail and SECRET not in page
    assert "&#34;api_key&#34;: &#34;***&#34;" in detail or '"api_key": "***"' in detail
    assert "password=***" in detail and "Bearer ***" in detail
    assert "https://example.com/x" in detail  # a location is not a secret
    assert "Requeue this record" not in detail

    exported = client.get("/erpsync/sync/quarantine.csv?status=all").text
    assert SECRET not in exported
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0] == sync_health.QUARANTINE_CSV_HEADER and len(rows) == 4
    assert client.page("/erpsync/sync/quarantine/999999").status_code == 404


@pytest.mark.parametrize(
    ("role", "code"),
    [
        ("auditor", 403),  # reads everything, changes nothing
        # the demo's simple auth manager lets "user" clear the sync tasks, so it may requeue
        # (erpsync.console.permissions); with the FAB roles only data_engineer may
        ("finance_ops", 200),
        ("data_engineer", 200),
    ],
)
def test_requeue_is_allowed_to_the_roles_that_may_clear_sync_tasks(
    console, warehouse_db, role, code
):
    ids = seed(warehouse_db)
    client = console(role)
    answer = client.post_action("/erpsync/sync/quarantine/requeue", {"ids": [ids["open"]]})
    assert answer.status_code == code, answer.text
    with psycopg.connect(warehouse_db) as conn:
        requested_by = conn.execute(
            "SELECT requeue_requested_by FROM ops.quarantine WHERE quarantine_id = %s",
            (ids["open"],),
        ).fetchone()[0]
        trail = conn.execute(
            "SELECT actor, action, entity_id FROM audit.audit_log ORDER BY audit_id"
        ).fetchall()
    if code == 200:
        assert answer.json()["requeued"] == [ids["open"]]
        assert requested_by == client.user_name
        assert trail == [(client.user_name, "quarantine.requeue_requested", str(ids["open"]))]
        page = client.page("/erpsync/sync/quarantine?status=requeued").text
        assert page.count("<tr data-quarantine=") == 1
        detail = client.page(f"/erpsync/sync/quarantine/{ids['open']}").text
        assert f"asked by {client.user_name}" in detail
        assert "waiting for the next run of the time_entries sync" in detail
    else:
        assert requested_by is None and trail == []


def test_the_requeue_page_offers_selection_and_refuses_bad_requests(console, warehouse_db):
    ids = seed(warehouse_db)
    engineer = console("data_engineer")
    page = engineer.page("/erpsync/sync/quarantine").text
    assert f'name="ids[]" value="{ids["open"]}"' in page
    assert 'data-post="/erpsync/sync/quarantine/requeue"' in page
    assert "Requeue this record" in engineer.page(f"/erpsync/sync/quarantine/{ids['open']}").text
    url = "/erpsync/sync/quarantine/requeue"
    # cross-site and header-less requests never reach the route
    forged = engineer.post(url, json={"ids": [ids["open"]]})
    assert forged.status_code == 403
    cross = engineer.post_action(url, {"ids": [ids["open"]]}, headers={"Origin": "https://x.io"})
    assert cross.status_code == 403
    assert engineer.post_action(url, {"ids": []}).status_code == 422
    refused = engineer.post_action(url, {"ids": [ids["resolved"]]})
    assert refused.status_code == 409
    assert refused.json()["refused"] == [{"id": ids["resolved"], "reason": "already resolved"}]
    with psycopg.connect(warehouse_db) as conn:
        stray = conn.execute(
            """INSERT INTO ops.quarantine (run_id, source_system, entity, record_key,
                   reason_code, reason_detail, payload)
               VALUES ('r', 'crm', 'no_such_entity', 'k', 'x', 'y', '{}')
               RETURNING quarantine_id"""
        ).fetchone()[0]
    unserved = engineer.post_action(url, {"ids": [stray]})
    assert unserved.status_code == 409
    assert unserved.json()["refused"] == [
        {"id": stray, "reason": "no sync re-reads crm/no_such_entity"}
    ]
    mixed = engineer.post_action(url, {"ids": [ids["open"], ids["other"], 424242]})
    assert mixed.status_code == 200
    assert mixed.json()["requeued"] == [ids["open"], ids["other"]]
    assert mixed.json()["refused"] == [{"id": 424242, "reason": "no such quarantine row"}]
    with psycopg.connect(warehouse_db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM ops.quarantine WHERE requeue_requested_at IS NOT NULL"
        ).fetchone() == (2,)


def test_the_masking_rule():
    masked = sync_health.mask(
        {
            "Password": "hunter2x",
            "client_secret": "abcd1234",
            "token_url": "https://login.example.com/token",  # where a secret lives: shown
            "nested": [{"Authorization": "Bearer abc.def.ghi"}, "Bearer abc.def.ghi"],
            "amount": 12.5,
            "empty_secret": "",
        }
    )
    assert masked == {
        "Password": "***",
        "client_secret": "***",
        "token_url": "https://login.example.com/token",
        "nested": [{"Authorization": "***"}, "Bearer ***"],
        "amount": 12.5,
        "empty_secret": "",
    }


@pytest.fixture
def sandbox_systems(tmp_path, warehouse_db, monkeypatch):
    """The sandbox firm behind the pack's Airflow connections (as tests/integration do)."""
    from erpsync_sandbox.serve import start_sandbox
    from tests.integration.test_sync_engine import connection_env, lift_psa_rate_limit

    handle = start_sandbox(tmp_path / "sandbox", size="small", seed=0)
    try:
        for key, value in connection_env(handle, warehouse_db).items():
            monkeypatch.setenv(key, value)
        lift_psa_rate_limit(handle)
        yield handle
    finally:
        handle.stop()


def test_requeue_from_the_page_end_to_end_against_the_sandbox(
    console, sandbox_systems, warehouse_db
):
    """A data engineer requeues a fixed record on the page; the next sync run (real sandbox
    HTTP) re-reads it by id and loads it; the page shows the run and the outcome."""
    from tests.integration.test_requeue import fix_quietly, quarantine_row, sync_time

    psa = sandbox_systems.ctx.stores["psa"]
    sync_time(warehouse_db, "initial")
    bad = psa.ids("time_entries")[5]
    stamp = psa.get_row("time_entries", bad).modstamp
    psa.update("time_entries", bad, {"hours": -1})
    sync_time(warehouse_db, "planted")
    fix_quietly(psa, "time_entries", bad, {"hours": 1.25}, stamp)
    qid = quarantine_row(warehouse_db, bad)["quarantine_id"]

    engineer = console("data_engineer")
    answer = engineer.post_action("/erpsync/sync/quarantine/requeue", {"ids": [qid]})
    assert answer.status_code == 200, answer.text
    served = sync_time(warehouse_db, "requeued")
    assert served.requeued == {"loaded": 1}
    detail = engineer.page(f"/erpsync/sync/quarantine/{qid}").text
    assert 'data-state="resolved"' in detail
    assert f"served by run {served.run_id}: <strong>loaded</strong>" in detail
    assert "quarantine.requeue_requested" in detail and "quarantine.requeued" in detail
    assert engineer.user_name in detail
