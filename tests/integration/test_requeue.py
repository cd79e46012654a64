"""Requeue of quarantined records, end to end against the sandbox (real HTTP, the pack's
connectors) and a real warehouse: a bad record is quarantined; it is fixed in the source in a
way the incremental read cannot see (its modification stamp stays where it was, behind the
watermark), so the next run leaves it quarantined; a data engineer requeues it; the next run
re-reads exactly that record by id, loads it through the normal path, and marks the
quarantine row resolved and requeued with the run; a record still bad is quarantined again.
Audit rows name the user who asked and the run that served it."""

from __future__ import annotations

import psycopg

from erpsync.connectors.harvest import HarvestClient
from erpsync.sync import requeue, specs
from erpsync.sync.spec import RunInfo
from erpsync.sync.specs_time import TIME_ENTRIES
from tests import sync_calls
from tests.sync_calls import run_sync


def rows(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def sync_time(url: str, label: str):
    client = HarvestClient()
    try:
        return sync_calls.sync_time(
            TIME_ENTRIES, url, client, run=RunInfo.local(label), leaf_size=25
        )
    finally:
        client.close()


def quarantine_row(url: str, key: str) -> dict:
    cols = (
        "quarantine_id",
        "reason_code",
        "resolved_at",
        "resolved_by_run",
        "requeue_requested_by",
        "requeued_by_run",
        "requeue_outcome",
    )
    found = rows(
        url,
        f"SELECT {', '.join(cols)} FROM ops.quarantine WHERE record_key = %s "  # noqa: S608
        "ORDER BY quarantine_id",
        (key,),
    )
    assert found, f"no quarantine row for {key}"
    return dict(zip(cols, found[-1], strict=True))


def fix_quietly(store, resource: str, rid: str, changes: dict, stamp: str) -> None:
    """Change a record in the source with a modification stamp from before the last runs (a
    fix the stamp does not show, e.g. a correction imported by the vendor, or a reason fixed
    outside the record): the incremental read (``updated_since`` / ``SystemModstamp >=`` the
    watermark minus its lookback) cannot see it."""
    store.update(resource, rid, changes, modstamp=stamp, log=False)


def request(url: str, ids: list[int], user: str = "dana.engineer") -> list:
    with psycopg.connect(url) as conn:
        return requeue.request(conn, ids, user=user)


def test_a_requeued_time_entry_is_reread_by_id_and_loaded(systems, warehouse_db):
    psa = systems.ctx.stores["psa"]
    sync_time(warehouse_db, "initial")
    bad, still_bad = psa.ids("time_entries")[10], psa.ids("time_entries")[11]
    stamp = psa.get_row("time_entries", bad).modstamp
    psa.update("time_entries", bad, {"hours": -2})
    psa.update("time_entries", still_bad, {"hours": -3})
    planted = sync_time(warehouse_db, "planted")
    assert planted.quarantined == 2
    q = quarantine_row(warehouse_db, bad)
    assert q["reason_code"] and q["resolved_at"] is None

    # fixed in the PSA without a new updated_at: the incremental read does not bring it
    fix_quietly(psa, "time_entries", bad, {"hours": 2.5}, stamp)
    watermark = rows(
        warehouse_db, "SELECT cursor_ts FROM ops.sync_watermarks WHERE entity = 'time_entries'"
    )
    blind = sync_time(warehouse_db, "blind")
    assert blind.read < 10
    assert quarantine_row(warehouse_db, bad)["resolved_at"] is None

    results = request(
        warehouse_db, [q["quarantine_id"], quarantine_row(warehouse_db, still_bad)["quarantine_id"]]
    )
    assert [r.accepted for r in results] == [True, True]
    served = sync_time(warehouse_db, "requeued")
    assert served.requeued == {"loaded": 1, "quarantined": 1}

    # loaded through the normal path, with this run's id on the core row and the quarantine row
    hours = rows(
        warehouse_db,
        "SELECT hours, last_run_id FROM core.time_entries WHERE psa_id = %s",
        (bad,),
    )
    assert [(float(h), r) for h, r in hours] == [(2.5, served.run_id)]
    done = quarantine_row(warehouse_db, bad)
    assert done["resolved_at"] is not None
    assert done["resolved_by_run"] == served.run_id
    assert done["requeued_by_run"] == served.run_id
    assert done["requeue_outcome"] == "loaded"
    assert done["requeue_requested_by"] == "dana.engineer"
    # the record still bad stays quarantined, with this run
    again = quarantine_row(warehouse_db, still_bad)
    assert again["resolved_at"] is None
    assert (again["requeued_by_run"], again["requeue_outcome"]) == (served.run_id, "quarantined")
    # a record read by id never moves the watermark (nothing else changed)
    assert (
        rows(
            warehouse_db,
            "SELECT cursor_ts FROM ops.sync_watermarks WHERE entity = 'time_entries'",
        )
        == watermark
    )
    # the request and its service are in the audit trail, with the user and the run
    trail = rows(
        warehouse_db,
        "SELECT actor, action, entity_id, source_run_id, after_state->>'requeue_outcome' "
        "FROM audit.audit_log WHERE entity_type = 'quarantine' ORDER BY audit_id",
    )
    assert trail[:2] == [
        ("dana.engineer", "quarantine.requeue_requested", str(q["quarantine_id"]), None, None),
        (
            "dana.engineer",
            "quarantine.requeue_requested",
            str(again["quarantine_id"]),
            None,
            None,
        ),
    ]
    assert {(t[1], t[2], t[3], t[4]) for t in trail[2:]} == {
        ("quarantine.requeued", str(q["quarantine_id"]), served.run_id, "loaded"),
        ("quarantine.requeued", str(again["quarantine_id"]), served.run_id, "quarantined"),
    }
    # served requests are not served twice
    next_run = sync_time(warehouse_db, "after")
    assert next_run.requeued == {}


def test_a_requeued_crm_account_is_read_with_the_sobject_rows_resource(systems, warehouse_db):
    crm = systems.ctx.stores["crm"]
    run = run_sync(specs.CLIENTS, warehouse_db, run=RunInfo.local("initial"))
    assert run.quarantined == 0
    account = crm.ids("Account")[2]
    stamp = crm.get_row("Account", account).modstamp
    crm.update("Account", account, {"CurrencyIsoCode": "XYZ"})
    run_sync(specs.CLIENTS, warehouse_db, run=RunInfo.local("planted"))
    q = quarantine_row(warehouse_db, account)
    assert q["resolved_at"] is None
    fix_quietly(crm, "Account", account, {"CurrencyIsoCode": "EUR"}, stamp)
    run_sync(specs.CLIENTS, warehouse_db, run=RunInfo.local("blind"))
    assert quarantine_row(warehouse_db, account)["resolved_at"] is None

    assert [r.accepted for r in request(warehouse_db, [q["quarantine_id"]])] == [True]
    served = run_sync(specs.CLIENTS, warehouse_db, run=RunInfo.local("requeued"))
    assert served.requeued == {"loaded": 1}
    assert rows(
        warehouse_db, "SELECT currency, last_run_id FROM core.clients WHERE crm_id = %s", (account,)
    ) == [("EUR", served.run_id)]
    done = quarantine_row(warehouse_db, account)
    assert (done["resolved_by_run"], done["requeue_outcome"]) == (served.run_id, "loaded")


def test_requests_for_resolved_or_unknown_rows_are_refused(warehouse_db):
    with psycopg.connect(warehouse_db) as conn:
        qid = conn.execute(
            """INSERT INTO ops.quarantine (run_id, source_system, entity, record_key,
                   reason_code, reason_detail, payload, resolved_at, resolved_by_run)
               VALUES ('r1', 'psa', 'time_entries', '7', 'x', 'y', '{}', now(), 'r2')
               RETURNING quarantine_id"""
        ).fetchone()[0]
        results = requeue.request(conn, [qid, 999999], user="dana")
    assert [(r.accepted, r.reason) for r in results] == [
        (False, "already resolved"),
        (False, "no such quarantine row"),
    ]
    assert rows(warehouse_db, "SELECT count(*) FROM audit.audit_log") == [(0,)]


def test_a_request_renewed_while_a_run_serves_it_stays_pending(warehouse_db):
    """The run serves the requests it saw when it started; one renewed meanwhile (a newer
    ``requeue_requested_at``) is left for the next run."""
    with psycopg.connect(warehouse_db) as conn:
        qid = conn.execute(
            """INSERT INTO ops.quarantine (run_id, source_system, entity, record_key,
                   reason_code, reason_detail, payload)
               VALUES ('r1', 'psa', 'time_entries', '7', 'x', 'y', '{}')
               RETURNING quarantine_id"""
        ).fetchone()[0]
        requeue.request(conn, [qid], user="dana")
        seen = requeue.pending(conn, "psa", "time_entries")
        assert [p.quarantine_id for p in seen] == [qid]
        requeue.request(conn, [qid], user="erin")  # renewed while the run reads
        conn.execute("CREATE TEMP TABLE _sync_seen (source_record_id text, valid boolean)")
        conn.execute("CREATE TEMP TABLE _sync_gone (source_record_id text)")
        served = requeue.finish(conn, TIME_ENTRIES, RunInfo.local("run"), seen)
        assert served == {}
        assert [p.quarantine_id for p in requeue.pending(conn, "psa", "time_entries")] == [qid]


class _Erp:
    """Business Central's salesInvoices as the payment status sync reads them, honouring the
    incremental filter (``lastModifiedDateTime ge ...``) and the open filter; it can answer a
    status Business Central does not document (the sandbox, being faithful, never does)."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        self.got: list[str] = []

    def iter_pages(self, entity, *, filter=None, select=None, page_size=None):
        rows = self.records
        if filter and "lastModifiedDateTime ge " in filter:
            since = filter.split("lastModifiedDateTime ge ")[1].split()[0]
            rows = [r for r in rows if r["lastModifiedDateTime"] >= since]
        if filter and "status eq 'Open'" in filter:
            rows = [r for r in rows if r["status"] == "Open"]
        yield [{k: r.get(k) for k in select} for r in rows]

    def get(self, entity, rid):
        self.got.append(rid)
        return next((dict(r) for r in self.records if r["id"] == rid), None)


def test_a_requeued_payment_status_record_is_read_by_id(warehouse_db):
    """The payment status sync (outside the engine) serves requeues the same way: a known
    invoice whose status became undocumented is quarantined; fixed in a way no read sees,
    it stays quarantined until requeued; the next run GETs it by id and loads it."""
    import datetime as dt

    from erpsync.invoicing.payment_status import ENTITY, sync_payment_status

    erp_id = "00000000-0000-0000-0000-0000000000c1"
    with psycopg.connect(warehouse_db) as conn:
        batch = conn.execute(
            """INSERT INTO billing.invoice_batches
                   (kind, scope_key, status, content_hash, prepared_by, prepared_run_id)
               VALUES ('period', 'q', 'draft', '', 'm', 't') RETURNING batch_id"""
        ).fetchone()[0]
        conn.execute(
            """INSERT INTO billing.invoices
                   (batch_id, document_number, invoice_scope, account_id, currency,
                    invoice_date, net, tax, total, status, erp_invoice_id, erp_number)
               VALUES (%s, 'ES-Q-0', 'q-0', 'acct', 'EUR', '2026-11-02', 100, 0, 100,
                       'posted', %s, 'PSI-0')""",
            (batch, erp_id),
        )
    good = {
        "id": erp_id,
        "number": "PSI-0",
        "status": "Paid",
        "postingDate": "2026-11-02",
        "dueDate": "2026-12-02",
        "totalAmountIncludingTax": 100,
        "remainingAmount": 0,
        "lastModifiedDateTime": "2026-11-02T10:00:00Z",
    }
    erp = _Erp([dict(good)])

    def sync(label: str, day: int):
        with psycopg.connect(warehouse_db) as conn:
            run = RunInfo.local(label)
            stats = sync_payment_status(conn, erp, run, day=dt.date(2026, 11, day))
        return run, stats

    assert sync("first", 3)[1].new == 1
    erp.records[0].update(status="Disputed", lastModifiedDateTime="2026-11-04T10:00:00Z")
    assert sync("bad", 5)[1].quarantined == 1
    q = quarantine_row(warehouse_db, erp_id)
    # fixed with a stamp no read reaches (and paid: not in the open-invoice read)
    erp.records[0].update(status="Paid", lastModifiedDateTime="2026-11-02T10:00:00Z")
    sync("blind", 6)
    assert quarantine_row(warehouse_db, erp_id)["resolved_at"] is None
    assert erp.got == []

    assert [r.accepted for r in request(warehouse_db, [q["quarantine_id"]])] == [True]
    run, _stats = sync("requeued", 7)
    assert erp.got == [erp_id]
    done = quarantine_row(warehouse_db, erp_id)
    assert done["resolved_by_run"] == run.run_id
    assert (done["requeued_by_run"], done["requeue_outcome"]) == (run.run_id, "loaded")
    assert rows(
        warehouse_db,
        "SELECT entity FROM ops.quarantine WHERE quarantine_id = %s",
        (q["quarantine_id"],),
    ) == [(ENTITY,)]
