"""The worklist queries of the finance console (erpsync.console.exceptions) against a real
PostgreSQL: each filter, each sort in both directions, pagination and the status tab counts,
the CSV rows, the detail of each kind of entity (source record, reconciliation item, client,
outbox row without its payload, history newest first, secrets masked), and the plans: on a
large queue every sort of every tab reads the queue in index order, never a sequential scan."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest

from erpsync import exceptions_queue as eq
from erpsync.console import exceptions as cx
from erpsync.sync.spec import RunInfo
from tests.support.exception_rows import raise_aged


def _client(conn, crm_id: str, name: str, vat: str = "DE136695977") -> None:
    canonical = conn.execute(
        "INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', %s)"
        " RETURNING canonical_id",
        (crm_id,),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_city,
               billing_country, currency, payment_terms_days, source_record_id, row_hash,
               first_run_id, last_run_id)
           VALUES (%s, %s, %s, 'Berlin', 'DE', 'EUR', 30, %s, 'h', 'r', 'r')""",
        (crm_id, canonical, name, crm_id),
    )
    conn.execute(
        """INSERT INTO core.tax_profiles (crm_account_id, country, vat_id, vat_id_valid,
               source_record_id, row_hash, first_run_id, last_run_id)
           VALUES (%s, 'DE', %s, false, %s, 'h', 'r', 'r')""",
        (crm_id, vat, crm_id),
    )


#: (reason, entity_type, key, owner, amount, currency, account, age in days)
SCENARIO = [
    ("missing_rate", "time_entry", "T-100", "resource_manager", "120.50", "EUR", "001A", 40),
    ("missing_rate", "time_entry", "t-101", "resource_manager", "80.00", "EUR", "001B", 3),
    ("over_cap", "project", "P-7", "engagement_manager", "5000.00", "USD", "001A", 12),
    ("invalid_tax_id", "client", "001B", "finance ops", None, None, "001B", 90),
    ("write_back_failed", "client", "erp.customer:001A", "finance ops", None, None, "001A", 1),
    ("erp_totals_differ", "invoice", "INV_1%", "finance ops", "999.99", "GBP", None, 25),
]


@pytest.fixture
def queue(warehouse_db):
    """The scenario's exceptions (ids in SCENARIO order), first seen ``age`` days ago."""
    run = RunInfo.local("checks")
    with psycopg.connect(warehouse_db) as conn:
        _client(conn, "001A", "Alpha Consulting GmbH")
        _client(conn, "001B", "Beta Partners AG")
        ids = raise_aged(conn, SCENARIO, {"api_token": "s3cr3t", "note": "x"}, run)
    return warehouse_db, ids


def _ids(conn, **query) -> list[int]:
    return [r.exception_id for r in cx.worklist(conn, cx.Filters.from_query(query)).rows]


def test_each_filter_narrows_the_open_tab(queue):
    url, ids = queue
    t100, t101, p7, vat, wbf, inv = ids
    with psycopg.connect(url) as conn:
        by_id = {"sort": "id", "dir": "asc"}
        assert _ids(conn, **by_id) == ids
        assert _ids(conn, reason="missing_rate", **by_id) == [t100, t101]
        assert _ids(conn, entity_type="client", **by_id) == [vat, wbf]
        assert _ids(conn, owner="finance ops", **by_id) == [vat, wbf, inv]
        assert _ids(conn, client="alpha", **by_id) == [t100, p7, wbf]  # part of the name
        assert _ids(conn, client="001B", **by_id) == [t101, vat]  # the CRM id
        assert _ids(conn, client="Nobody Ltd", **by_id) == []
        assert _ids(conn, currency="eur", **by_id) == [t100, t101]
        assert _ids(conn, q="T-1", **by_id) == [t100, t101]  # starts with, any case
        assert _ids(conn, q="INV_1%", **by_id) == [inv]  # LIKE wildcards are literal
        assert _ids(conn, q="INV%", **by_id) == []
        assert _ids(conn, reason="missing_rate", client="001B", **by_id) == [t101]


def test_each_sort_in_both_directions(queue):
    url, ids = queue
    t100, t101, p7, vat, wbf, inv = ids
    with psycopg.connect(url) as conn:
        expected = {
            "age": [vat, t100, inv, p7, t101, wbf],  # oldest first
            "reason": [inv, vat, t100, t101, p7, wbf],
            "entity": [vat, wbf, inv, p7, t100, t101],
            "client": [t100, p7, wbf, t101, vat, inv],  # no client last
            "owner": [p7, vat, wbf, inv, t100, t101],
            "amount": [t101, t100, inv, p7, vat, wbf],  # no amount last
            "currency": [t100, t101, inv, p7, vat, wbf],  # EUR, GBP, USD, none
            "id": ids,
        }
        for sort, order in expected.items():
            natural = "desc" if sort == "age" else "asc"
            other = "asc" if natural == "desc" else "desc"
            assert _ids(conn, sort=sort, dir=natural) == order, sort
            assert _ids(conn, sort=sort, dir=other) == order[::-1], sort


def test_rows_carry_reason_label_client_amount_and_age(queue):
    url, ids = queue
    with psycopg.connect(url) as conn:
        rows = {r.exception_id: r for r in cx.worklist(conn, cx.Filters()).rows}
    t100 = rows[ids[0]]
    assert (t100.reason_label, t100.client_name, t100.account_id) == (
        "Missing rate",
        "Alpha Consulting GmbH",
        "001A",
    )
    assert (t100.amount_at_stake, t100.currency, t100.age_days) == (Decimal("120.50"), "EUR", 40)
    assert rows[ids[4]].reason_label == "Write back failed"  # not in recon.reasons
    assert rows[ids[4]].client_name == "Alpha Consulting GmbH"  # "<operation>:<crm id>"
    assert rows[ids[5]].client_name is None


def test_tabs_count_each_status_under_the_same_filters_and_age_stops_at_resolution(queue):
    url, ids = queue
    t100, t101, p7, vat, wbf, inv = ids
    with psycopg.connect(url) as conn:
        eq.waive_many(conn, [t100], by="maria", comment="accepted")
        eq.resolve(conn, t101, by="maria", comment="fixed", run=None)
        conn.execute(
            "UPDATE ops.exceptions SET resolved_at = first_seen_at + interval '2 days'"
            " WHERE exception_id = %s",
            (t101,),
        )
        page = cx.worklist(conn, cx.Filters.from_query({"reason": "missing_rate"}))
        resolved = cx.worklist(conn, cx.Filters.from_query({"status": "resolved"}))
        waived = cx.worklist(conn, cx.Filters.from_query({"status": "waived"}))
        everything = cx.worklist(conn, cx.Filters())
    assert page.counts == {"open": 0, "waived": 1, "resolved": 1}
    assert [(r.exception_id, r.age_days) for r in resolved.rows] == [(t101, 2)]
    assert [(r.exception_id, r.waived_by, r.waive_comment) for r in waived.rows] == [
        (t100, "maria", "accepted")
    ]
    assert everything.counts == {"open": 4, "waived": 1, "resolved": 1}


def test_pages_of_fifty_and_capped_counts(warehouse_db, monkeypatch):
    run = RunInfo.local("checks")
    with psycopg.connect(warehouse_db) as conn:
        for i in range(120):
            eq.raise_exception(conn, "missing_rate", "time_entry", f"E{i:03d}", "rm", {}, run)
        first = cx.worklist(conn, cx.Filters.from_query({"sort": "entity"}))
        last = cx.worklist(conn, cx.Filters.from_query({"sort": "entity", "page": "3"}))
        beyond = cx.Filters.from_query({"page": "100000"})
        monkeypatch.setattr(cx, "COUNT_CAP", 100)
        capped = cx.worklist(conn, cx.Filters())
    assert [r.entity_key for r in first.rows] == [f"E{i:03d}" for i in range(50)]
    assert (first.total, first.pages, first.has_next) == (120, 3, True)
    assert [r.entity_key for r in last.rows] == [f"E{i:03d}" for i in range(100, 120)]
    assert not last.has_next
    assert beyond.page == cx.MAX_PAGE
    assert capped.counts["open"] == 101
    assert cx.Worklist.capped(capped.counts["open"]).endswith("+")


def test_filter_options_are_the_values_of_the_tab(queue):
    url, _ids = queue
    with psycopg.connect(url) as conn:
        options = cx.filter_options(conn, "open")
        none_waived = cx.filter_options(conn, "waived")
    assert options["reason_code"] == [
        ("erp_totals_differ", "Erp totals differ"),
        ("invalid_tax_id", "Invalid tax id"),
        ("missing_rate", "Missing rate"),
        ("over_cap", "Over cap"),
        ("write_back_failed", "Write back failed"),
    ]
    assert options["entity_type"] == ["client", "invoice", "project", "time_entry"]
    assert options["currency"] == ["EUR", "GBP", "USD"]
    assert options["owner"] == [
        "engagement_manager",
        "finance ops",
        "resource_manager",
    ]
    assert none_waived == {"reason_code": [], "entity_type": [], "owner": [], "currency": []}


def test_csv_rows_are_the_whole_filtered_list(queue):
    url, ids = queue
    with psycopg.connect(url) as conn:
        rows = cx.export_rows(
            conn, cx.Filters.from_query({"client": "alpha", "sort": "id", "dir": "asc"})
        )
        cut = cx.export_rows(conn, cx.Filters(), cap=2)
    assert [r[0] for r in rows] == [ids[0], ids[2], ids[4]]
    assert all(len(r) == len(cx.CSV_HEADER) for r in rows)
    assert rows[0][2:12] == [
        "missing_rate",
        "Missing rate",
        "time_entry",
        "T-100",
        "001A",
        "Alpha Consulting GmbH",
        "resource_manager",
        "120.5000",
        "EUR",
        rows[0][11],
    ]
    assert len(cut) == 3 and cut[-1][0] == "(cut at 2 rows: narrow the filters)"


def test_detail_of_a_time_entry_shows_the_entry_its_recon_item_client_and_history(queue):
    url, ids = queue
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO core.time_entries (psa_id, spent_date, hours, billable,
                   approval_status, is_locked, is_billed, user_psa_id, project_psa_id,
                   source_record_id, row_hash, first_run_id, last_run_id, notes)
               VALUES ('T-100', '2026-11-02', 3.5, true, 'approved', false, false, 'U1', 'P-7',
                       'T-100', 'h', 'r', 'r', 'workshop')"""
        )
        conn.execute(
            """INSERT INTO recon.items (item_date, period_start, approved, item_key, state,
                   reason_code, problems, item_type, source_id, account_id, opportunity_id,
                   first_run_id, last_run_id)
               VALUES ('2026-11-02', '2026-11-01', true, 'time:T-100', 'on_hold',
                       'missing_rate', '{missing_rate}', 'time', 'T-100', '001A', '006X',
                       'r', 'r')"""
        )
        eq.comment(conn, [ids[0]], text="asked the PM", by="lena")
        detail = cx.exception_detail(conn, ids[0])
        assert cx.exception_detail(conn, 999999) is None
    assert detail.reason_label == "Missing rate"
    assert detail.exception["detail"] == {"api_token": cx.MASK, "note": "x"}
    assert [(s.title, s.fields["hours"]) for s in detail.source] == [
        ("Time entry (Harvest)", Decimal("3.5"))
    ]
    assert detail.recon_item.fields["state"] == "on_hold"
    assert detail.client.fields["legal_name"] == "Alpha Consulting GmbH"
    assert detail.client.fields["vat_id"] == "DE136695977"
    assert [h["action"] for h in detail.history] == ["exception.commented", "exception.raised"]
    assert all(h["detail"].get("api_token") in (None, cx.MASK) for h in detail.history)
    assert [(r.system, r.kind, r.record_id) for r in detail.refs] == [
        ("crm", "Opportunity", "006X"),
        ("psa", "project", "P-7"),  # Harvest has no web address of a time entry
        ("crm", "Account", "001A"),
    ]


def test_detail_of_a_failed_write_shows_its_outbox_row_without_the_payload(queue):
    url, ids = queue
    with psycopg.connect(url) as conn:
        outbox_id = conn.execute(
            """INSERT INTO ops.outbox (target_system, operation, entity_type, entity_key,
                   idempotency_key, payload, payload_hash, status, attempts, last_error)
               VALUES ('erp', 'erp.customer', 'client', '001A', 'k1', %s, 'h', 'failed', 5,
                       'HTTPError: 400 Bad Request')
               RETURNING outbox_id""",
            (json.dumps({"displayName": "Alpha", "password": "never"}),),
        ).fetchone()[0]
        detail = cx.exception_detail(conn, ids[4])
        vat = cx.exception_detail(conn, ids[3])
    (outbox_row,) = detail.source
    assert outbox_row.title == "Outbox row (payload not shown)"
    assert outbox_row.fields["outbox_id"] == outbox_id
    assert outbox_row.fields["last_error"] == "HTTPError: 400 Bad Request"
    assert "payload" not in outbox_row.fields
    assert [(r.system, r.kind, r.record_id) for r in detail.refs] == [("crm", "Account", "001A")]
    assert vat.client.fields["crm_id"] == "001B"
    assert [(r.system, r.kind, r.record_id) for r in vat.refs] == [("crm", "Account", "001B")]


def test_detail_of_an_invoice_and_a_project(queue):
    url, ids = queue
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO core.contracts (opportunity_id, version, account_id, name,
                   project_code, status, payload, first_run_id, last_run_id, psa_project_id)
               VALUES ('006X', 1, '001A', 'Alpha rollout', 'P-X', 'complete', '{}', 'r', 'r',
                       'P-7')"""
        )
        conn.execute(
            """UPDATE ops.exceptions SET detail = '{"opportunity_id": "006X"}'
                WHERE exception_id = %s""",
            (ids[2],),
        )
        project = cx.exception_detail(conn, ids[2])
        missing_invoice = cx.exception_detail(conn, ids[5])
        batch = conn.execute(
            """INSERT INTO billing.invoice_batches (kind, scope_key, status, content_hash,
                   prepared_by, prepared_run_id)
               VALUES ('period', 's', 'draft', 'h', 'maria', 'r') RETURNING batch_id"""
        ).fetchone()[0]
        conn.execute(
            """INSERT INTO billing.invoices (invoice_id, batch_id, document_number, invoice_scope,
                   account_id, currency, invoice_date, net, tax, total, opportunity_id)
               VALUES (7, %s, 'INV_1%%', 's', '001A', 'GBP', '2026-11-30', 840.33, 159.66,
                       999.99, '006X')""",
            (batch,),
        )
        conn.execute(
            """INSERT INTO billing.invoice_push (invoice_id, batch_id, document_number,
                   erp_entity, step, erp_invoice_id, erp_draft_number, failures, last_error,
                   first_run_id, last_run_id)
               VALUES (7, %s, 'INV_1%%', 'salesInvoices', 'created', 'bc-guid-1', 'S-INV-1001',
                       1, 'totals differ', 'r', 'r')""",
            (batch,),
        )
        invoice = cx.exception_detail(conn, ids[5])
    assert [s.title for s in project.source] == ["Contract (Salesforce opportunity)"]
    assert project.source[0].fields["name"] == "Alpha rollout"
    assert ("psa", "project", "P-7") in [(r.system, r.kind, r.record_id) for r in project.refs]
    assert missing_invoice.source == [] and missing_invoice.refs == []
    assert [s.title for s in invoice.source] == ["Invoice (erpsync)", "Push to Business Central"]
    assert invoice.source[1].fields["last_error"] == "totals differ"
    assert [(r.system, r.kind, r.record_id) for r in invoice.refs] == [
        ("erp", "sales_invoice", "S-INV-1001"),
        ("crm", "Opportunity", "006X"),
    ]


def test_mask_secrets_masks_nested_secret_keys_only():
    value = {"a": {"client_secret": "x", "items": [{"Authorization": "Bearer y"}]}, "key": 1}
    assert cx.mask_secrets(value) == {
        "a": {"client_secret": cx.MASK, "items": [{"Authorization": cx.MASK}]},
        "key": 1,
    }


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_every_sort_of_every_tab_reads_a_large_queue_in_index_order(warehouse_db):
    n = 40_000
    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO ops.exceptions (reason_code, entity_type, entity_key, owner, status,
                   amount_at_stake, currency, first_seen_run, last_seen_run, first_seen_at,
                   resolved_at, resolved_by, waived_by, waived_at, waive_comment, account_id,
                   client_name)
               SELECT (ARRAY['missing_rate','over_cap','invalid_tax_id'])[1 + i %% 3],
                      (ARRAY['time_entry','project','client'])[1 + i %% 3], 'K' || i,
                      'owner ' || (i %% 40), s, (i %% 997) * 1.5,
                      (ARRAY['EUR','USD','GBP'])[1 + i %% 3], 'r', 'r',
                      now() - (i %% 700) * interval '1 day',
                      CASE WHEN s = 'resolved' THEN now() END,
                      CASE WHEN s = 'resolved' THEN 'x' END,
                      CASE WHEN s = 'waived' THEN 'w' END,
                      CASE WHEN s = 'waived' THEN now() END,
                      CASE WHEN s = 'waived' THEN 'c' END,
                      '001C' || (i %% 3000), 'Client ' || (i %% 3000)
                 FROM generate_series(1, %s) i,
                      LATERAL (SELECT CASE WHEN i %% 10 < 4 THEN 'open'
                                           WHEN i %% 10 = 4 THEN 'waived'
                                           ELSE 'resolved' END) st(s)""",
            (n,),
        )
        conn.execute("VACUUM ANALYZE ops.exceptions")
        seq_scans = []
        for status in cx.STATUSES:
            for sort in cx.SORTS:
                for direction in ("asc", "desc"):
                    f = cx.Filters(status=status, sort=sort, dir=direction)
                    where, params = cx._where(conn, f, with_status=True)
                    query = psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + cx._select(f, where)
                    plan = conn.execute(query, {**params, "limit": 51, "offset": 0}).fetchone()
                    for node in _plan_nodes(plan[0][0]["Plan"]):
                        if node.get("Relation Name") == "exceptions" and (
                            node["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")
                        ):
                            seq_scans.append((status, sort, direction, node["Node Type"]))
    assert seq_scans == []


def test_the_benchmark_seeds_a_queue_and_times_every_page_call(warehouse_db):
    from erpsync.bench import exceptions as bench

    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        seeded = bench.seed_exceptions(conn, rows=3000, clients=40)
        timings = bench.time_worklist(conn, repeat=1)
        clients = conn.execute(
            "SELECT count(*) FROM ops.exceptions WHERE client_name IS NULL"
        ).fetchone()[0]
    assert seeded["exceptions"] == 3000
    assert set(seeded["per_status"]) == set(cx.STATUSES)
    assert clients == 0
    assert {"open_default", "detail", "search_rare_prefix", "worst_page"} <= set(timings)
    assert all(ms >= 0 for ms in timings.values())
