"""Invoice batches on hand-built warehouse rows: golden amounts to the minor unit, holds,
anomalies, maker-checker, hash-bound approval, reject, dry run, rebuild, credit notes,
immutability of posted invoices and the export schema.

One migrated database per module holds the scenario (committed once); every test works in a
transaction that is rolled back, so tests do not see each other's batches.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal as D

import psycopg
import pytest

from erpsync.invoicing import (
    BatchChangedError,
    BatchStateError,
    CreditNoteError,
    MakerCheckerError,
    approval_markdown,
    build_batch,
    create_credit_note,
    current_hash,
    decide,
    export_batch,
    verify_approval,
)
from erpsync.invoicing.export import INVOICE_COLUMNS, LINE_COLUMNS
from erpsync.runtime import database
from erpsync.sync.spec import RunInfo
from erpsync.warehouse import migrate
from tests.conftest import make_database
from tests.support import invoicing_data as dd

PS, PE = dt.date(2026, 10, 1), dt.date(2026, 10, 31)
RUN = RunInfo(dag_id="test", run_id="run-1", task_id="build", actor="alice")
PERIOD = {"period_start": PS, "period_end": PE}


def seed(conn) -> None:
    dd.add_tax_setup(conn)
    dd.add_client(
        conn, "acc-nl", name="Dutch Client BV", country="NL", vat_id="NL001", vat_valid=True
    )
    dd.add_client(
        conn,
        "acc-de",
        name="German Client GmbH",
        country="DE",
        reverse_charge=True,
        vat_id="DE123456789",
    )
    dd.add_client(conn, "acc-jp", name="Tokyo KK", country="JP", currency="JPY")
    dd.add_client(conn, "acc-kw", name="Dutch KWD Client", country="NL", currency="KWD")
    dd.add_client(
        conn,
        "acc-ex",
        name="Clinic",
        country="NL",
        exempt=True,
        exemption_reason="medical services, art. 11 Wet OB",
    )
    dd.add_client(conn, "acc-blk", country="NL")
    dd.add_client(
        conn, "acc-badvat", country="FR", reverse_charge=True, vat_id="FR000", vat_valid=False
    )
    dd.add_contract(conn, "opp-A", "acc-nl", po_number="PO-4711")
    dd.add_contract(conn, "opp-A2", "acc-nl")
    dd.add_contract(conn, "opp-B", "acc-de", billing_model="retainer")
    dd.add_contract(conn, "opp-C", "acc-jp", currency="JPY")
    dd.add_contract(conn, "opp-D", "acc-kw", currency="KWD")
    dd.add_contract(conn, "opp-E", "acc-ex")
    dd.add_contract(conn, "opp-F", "acc-blk")
    dd.add_contract(conn, "opp-G", "acc-badvat")
    dd.add_person(conn, "u1", "u1@firm.example", "Senior Consultant")
    dd.add_rate_override(conn, "opp-A", "u1@firm.example", D("170"), "EUR")

    def item(key, acc, opp, cur, day, **kw):
        dd.add_item(
            conn, key, account_id=acc, opportunity_id=opp, currency=cur, item_date=day, **kw
        )

    # client A (NL, STANDARD 21 %), contract opp-A
    item(
        "time:1",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-05",
        hours="17.5",
        rate="175",
        role="Senior Consultant",
        user_psa_id="u1",
        task_name="Advisory",
    )
    item(
        "time:2",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-06",
        hours="0.25",
        rate="175",
        role="Senior Consultant",
        user_psa_id="u1",
        task_name="Advisory",
    )
    item(
        "time:3",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-07",
        hours="3.3333",
        rate="95.15",
        role="Analyst",
        user_psa_id="u2",
    )
    item(
        "time:4",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-08",
        hours="1",
        rate="95.15",
        role="Analyst",
        user_psa_id="u2",
    )
    item(
        "time:5",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-08",
        hours="0.125",
        rate="100.02",
        role="Consultant",
        user_psa_id="u3",
        task_name="Workshops",
    )
    item(
        "time:6",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-09",
        hours="0.125",
        rate="100.02",
        role="Consultant",
        user_psa_id="u3",
        task_name="Workshops",
    )
    item(
        "expense:10",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-09",
        amount="80.375",
        task_name="Hotel",
        user_psa_id="u1",
    )
    # held by the reconciliation
    item(
        "time:90",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-10",
        hours="3",
        role="Analyst",
        state="on_hold",
        reason_code="missing_rate",
        user_psa_id="u2",
    )
    item(
        "time:91",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-11",
        hours="8",
        rate="175",
        state="on_hold",
        reason_code="over_cap",
        user_psa_id="u1",
    )
    # not in scope: outside the period, already billed (state and ledger), non-billable
    item("time:92", "acc-nl", "opp-A", "EUR", "2026-09-30", hours="1", rate="175", role="Analyst")
    item("time:93", "acc-nl", "opp-A", "EUR", "2026-10-12", hours="1", rate="175", state="billed")
    item("time:94", "acc-nl", "opp-A", "EUR", "2026-10-12", hours="1", rate="175", role="Analyst")
    conn.execute("INSERT INTO billing.billed_items (item_key, run_id) VALUES ('time:94', 'old')")
    item(
        "time:95",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-10-12",
        hours="1",
        rate="175",
        state="non_billable",
    )
    # history: u1 worked 4 h in July (billed) -> this month is a spike
    item(
        "time:80",
        "acc-nl",
        "opp-A",
        "EUR",
        "2026-07-10",
        hours="4",
        rate="175",
        state="billed",
        user_psa_id="u1",
    )
    # client A's second contract is blocked by data quality (contract scope)
    item("time:20", "acc-nl", "opp-A2", "EUR", "2026-10-05", hours="2", rate="150", role="Analyst")
    dd.add_dq_block(conn, "contract", "opp-A2")
    # client B (DE, reverse charge): retainer + time
    item(
        "retainer:77:1",
        "acc-de",
        "opp-B",
        "EUR",
        "2026-10-01",
        amount="2500",
        task_name="Monthly retainer",
    )
    item("time:30", "acc-de", "opp-B", "EUR", "2026-10-14", hours="10", rate="230", role="Manager")
    # client C (JP, JPY, export); history of three billed months around 30,000 JPY
    item(
        "time:40", "acc-jp", "opp-C", "JPY", "2026-10-15", hours="2.5", rate="51841", role="Partner"
    )
    item("expense:41", "acc-jp", "opp-C", "JPY", "2026-10-16", amount="1234.5", task_name="Taxi")
    for month, amount in ((7, "29000"), (8, "30000"), (9, "31000")):
        item(
            f"milestone:hist-{month}",
            "acc-jp",
            "opp-C",
            "JPY",
            f"2026-0{month}-20",
            amount=amount,
            state="billed",
        )
    # client D (NL, KWD: 3 decimals, STANDARD 21 %)
    item(
        "time:50",
        "acc-kw",
        "opp-D",
        "KWD",
        "2026-10-15",
        hours="3",
        rate="44.8215",
        role="Consultant",
    )
    item("expense:51", "acc-kw", "opp-D", "KWD", "2026-10-15", amount="12.3455", task_name="Meals")
    # client E (exempt) with two identical entries (possible duplicate)
    for key in ("time:60", "time:61"):
        item(
            key,
            "acc-ex",
            "opp-E",
            "EUR",
            "2026-10-20",
            hours="1",
            rate="100",
            role="Consultant",
            user_psa_id="u5",
            task_name="Advisory",
        )
    # client F blocked as a client, client G reverse charge without a valid VAT id
    item("time:70", "acc-blk", "opp-F", "EUR", "2026-10-20", hours="5", rate="100", role="Analyst")
    dd.add_dq_block(conn, "client", "acc-blk")
    item(
        "time:71", "acc-badvat", "opp-G", "EUR", "2026-10-20", hours="1", rate="100", role="Analyst"
    )
    # a milestone accepted after the period (billed by a milestone batch on acceptance)
    item(
        "milestone:opp-E:1:1",
        "acc-ex",
        "opp-E",
        "EUR",
        "2026-11-02",
        amount="1000.005",
        task_name="Design accepted",
    )


@pytest.fixture(scope="module")
def db_url(pg_server_url):
    url = make_database(pg_server_url, "erpsync_test_inv")
    migrate.migrate(url)
    with psycopg.connect(url) as conn:
        seed(conn)
    yield url
    database.drop_database(url)


@pytest.fixture
def conn(db_url):
    with psycopg.connect(db_url) as c:
        c.execute("SELECT 1")  # open the test's transaction: the API then nests in it
        yield c
        c.rollback()


def invoice_of(conn, batch_id, account):
    row = conn.execute(
        """SELECT invoice_id, document_number, currency::text, po_number, net, tax, total, status
           FROM billing.invoices WHERE batch_id = %s AND account_id = %s""",
        (batch_id, account),
    ).fetchone()
    assert row is not None, account
    return row


def lines_of(conn, invoice_id):
    return conn.execute(
        """SELECT line_no, kind, description, hours, unit_price, net_amount, tax_code, item_keys
           FROM billing.invoice_lines WHERE invoice_id = %s ORDER BY line_no""",
        (invoice_id,),
    ).fetchall()


def period_batch(conn, **kw):
    return build_batch(conn, RUN, **{**PERIOD, "prepared_by": "alice", **kw})


def release(conn, batch_id):
    """What the push does once the ERP posted every invoice (PUSH owns the real one)."""
    conn.execute(
        "UPDATE billing.invoice_batches SET status = 'pushing' WHERE batch_id = %s", (batch_id,)
    )
    conn.execute(
        """UPDATE billing.invoices SET status = 'posted', erp_invoice_id = 'erp-' || invoice_id,
               erp_number = 'PS-' || invoice_id WHERE batch_id = %s""",
        (batch_id,),
    )
    conn.execute(
        "UPDATE billing.invoice_batches SET status = 'released', released_at = now() "
        "WHERE batch_id = %s",
        (batch_id,),
    )


# ------------------------------------------------------------------------------ golden amounts


def test_golden_period_batch(conn):
    result = period_batch(conn)
    assert result.status == "awaiting_approval"
    assert len(result.invoices) == 5
    b = result.batch_id

    inv_id, doc, cur, po, net, tax, total, status = invoice_of(conn, b, "acc-nl")
    assert (cur, po, status) == ("EUR", "PO-4711", "draft")
    # 17.75 h x 175 = 3106.25; 4.3333 h x 95.15 = 412.313495 -> 412.31;
    # 0.25 h x 100.02 = 25.005 -> 25.01 (tie away from zero; per entry it would be 2 x 12.50);
    # expense 80.375 -> 80.38
    assert [(ln[1], ln[2], ln[3], ln[5]) for ln in lines_of(conn, inv_id)] == [
        ("time", "Analyst (2026-10-01 to 2026-10-31)", D("4.3333"), D("412.31")),
        ("time", "Consultant (2026-10-01 to 2026-10-31)", D("0.250"), D("25.01")),
        ("time", "Senior Consultant (2026-10-01 to 2026-10-31)", D("17.75"), D("3106.25")),
        ("expense", "Expense 2026-10-09: Hotel", None, D("80.38")),
    ]
    assert (net, tax, total) == (
        D("3623.95"),
        D("761.03"),
        D("4384.98"),
    )  # 21 % of 3623.95 = 761.0295
    assert lines_of(conn, inv_id)[2][7] == ["time:1", "time:2"]

    _, _, cur, _, net, tax, total, _ = invoice_of(conn, b, "acc-de")
    assert (cur, net, tax, total) == ("EUR", D("4800.00"), D("0"), D("4800.00"))
    code, note = conn.execute(
        """SELECT t.tax_code, t.legal_note FROM billing.invoice_taxes t
           JOIN billing.invoices i USING (invoice_id)
           WHERE i.batch_id = %s AND i.account_id = 'acc-de'""",
        (b,),
    ).fetchone()
    assert code == "REVERSE" and "Article 196" in note and "DE123456789" in note

    _, _, cur, _, net, tax, total, _ = invoice_of(conn, b, "acc-jp")
    # 2.5 h x 51841 = 129602.5 -> 129603; 1234.5 -> 1235 (JPY has no decimals)
    assert (cur, net, tax, total) == ("JPY", D("130838"), D("0"), D("130838"))

    _, _, cur, _, net, tax, total, _ = invoice_of(conn, b, "acc-kw")
    # 3 h x 44.8215 = 134.4645 -> 134.465; 12.3455 -> 12.346; 21 % of 146.811 = 30.83031 -> 30.830
    assert (cur, net, tax, total) == ("KWD", D("146.811"), D("30.830"), D("177.641"))

    _, _, cur, _, net, tax, total, _ = invoice_of(conn, b, "acc-ex")
    assert (net, tax, total) == (D("200.00"), D("0"), D("200.00"))
    note = conn.execute(
        """SELECT legal_note FROM billing.invoice_taxes t JOIN billing.invoices i USING (invoice_id)
           WHERE i.batch_id = %s AND i.account_id = 'acc-ex'""",
        (b,),
    ).fetchone()[0]
    assert note == "VAT exempt supply: medical services, art. 11 Wet OB"

    assert result.totals == {
        "EUR": {"invoices": 3, "net": "8623.95", "tax": "761.03", "total": "9384.98"},
        "JPY": {"invoices": 1, "net": "130838", "tax": "0", "total": "130838"},
        "KWD": {"invoices": 1, "net": "146.811", "tax": "30.830", "total": "177.641"},
    }
    # lines + tax = total on every invoice
    bad = conn.execute(
        """SELECT i.document_number FROM billing.invoices i
           WHERE i.batch_id = %s AND i.net + i.tax <> i.total
              OR i.net <> (SELECT sum(net_amount) FROM billing.invoice_lines l
                           WHERE l.invoice_id = i.invoice_id)
              OR i.tax <> (SELECT sum(amount) FROM billing.invoice_taxes t
                           WHERE t.invoice_id = i.invoice_id)""",
        (b,),
    ).fetchall()
    assert bad == []
    # reservations: exactly the billed items
    reserved = {
        r[0]
        for r in conn.execute(
            "SELECT item_key FROM billing.batch_items WHERE batch_id = %s AND active", (b,)
        )
    }
    assert reserved == {
        "time:1",
        "time:2",
        "time:3",
        "time:4",
        "time:5",
        "time:6",
        "expense:10",
        "retainer:77:1",
        "time:30",
        "time:40",
        "expense:41",
        "time:50",
        "expense:51",
        "time:60",
        "time:61",
    }
    assert result.items == 15
    as_json = json.loads(json.dumps(result.as_dict()))  # XCom-safe
    assert as_json["totals"]["KWD"]["total"] == "177.641" and as_json["period_end"] == "2026-10-31"


def test_held_items_by_reason_and_dq_scope(conn):
    result = period_batch(conn)
    held = result.held
    assert held["dq_blocked"]["items"] == 2  # opp-A2 (contract block) and acc-blk (client block)
    assert held["dq_blocked"]["amounts"] == {"EUR": "800.00"}  # 2 x 150 + 5 x 100
    assert held["over_cap"] == {
        "items": 1,
        "amounts": {"EUR": "1400.00"},
        "source": "reconciliation",
    }
    assert held["missing_rate"]["items"] == 1
    assert held["invalid_vat_id"]["items"] == 1 and held["invalid_vat_id"]["source"] == "invoicing"
    md = approval_markdown(conn, result.batch_id)
    assert "| dq_blocked | invoicing | EUR | 2 | 800.00 |" in md
    assert "| over_cap | reconciliation | EUR | 1 | 1400.00 |" in md
    assert "contract opp-A2" in md and "client acc-blk" in md
    assert "| EUR | 3 | 8623.95 | 761.03 | 9384.98 |" in md
    assert "Dutch Client BV (acc-nl) | EUR | 1 | 3623.95 | 761.03 | 4384.98 |" in md
    # an 'all' block holds everything and bills nothing
    dd.add_dq_block(conn, "all", "*")
    emptied = period_batch(conn)  # the same scope rebuilt: nothing left, the batch is withdrawn
    assert emptied.batch_id == result.batch_id and emptied.status == "rejected"
    assert emptied.invoices == () and emptied.held["dq_blocked"]["items"] == 18
    assert conn.execute("SELECT count(*) FROM billing.batch_items").fetchone()[0] == 0
    empty = period_batch(conn)
    assert empty.status == "empty" and empty.batch_id is None
    assert empty.held["dq_blocked"]["items"] == 18


def test_anomalies_explain_themselves(conn):
    result = period_batch(conn)
    by_code = {}
    for a in result.anomalies:
        by_code.setdefault(a["code"], []).append(a)
    rate = by_code["rate_off_contract"][0]
    assert (
        rate["numbers"]["billed_rate"] == "175" and rate["numbers"]["contract_rate"] == "170.0000"
    )
    assert rate["numbers"]["hours"] == "17.75" and rate["numbers"]["difference"] == "88.75"
    spike = by_code["hours_spike"][0]["numbers"]
    assert spike["person"] == "u1" and spike["period_hours"] == "25.75"  # 17.75 ready + 8 held
    assert spike["history_hours"] == "4" and spike["history_days"] == 83
    dup = by_code["possible_duplicate"][0]["numbers"]
    assert dup["item_keys"] == ["time:60", "time:61"] and dup["count"] == 2
    hist = by_code["amount_vs_history"][0]
    assert hist["numbers"]["median_month"] == "30000" and hist["numbers"]["history_months"] == 3
    assert hist["numbers"]["this_period"] == "130838"
    md = approval_markdown(conn, result.batch_id)
    assert "`hours_spike`" in md and "`amount_vs_history`" in md and "the contract says 170" in md
    # flags inform only: the batch still awaits approval with every invoice
    assert result.status == "awaiting_approval" and len(result.invoices) == 5


def test_filters_and_milestone_batch(conn):
    only = period_batch(conn, clients=["acc-jp"], billing_types=["time"])
    assert [i["account_id"] for i in only.invoices] == ["acc-jp"]
    assert only.totals["JPY"]["net"] == "129603"
    ms = build_batch(
        conn, RUN, **PERIOD, milestone_keys=["milestone:opp-E:1:1"], prepared_by="alice"
    )
    assert ms.kind == "milestone" and len(ms.invoices) == 1
    inv = ms.invoices[0]
    assert (inv["net"], inv["tax"], inv["total"]) == (
        "1000.01",
        "0.00",
        "1000.01",
    )  # 1000.005 -> .01
    lines = lines_of(conn, inv["invoice_id"])
    assert [(ln[1], ln[2], ln[5]) for ln in lines] == [
        ("milestone", "Milestone: Design accepted", D("1000.01"))
    ]
    # the period batch does not take items another active batch holds
    rest = period_batch(conn)
    keys = {k for inv in rest.invoices for ln in lines_of(conn, inv["invoice_id"]) for k in ln[7]}
    assert "time:40" not in keys and "milestone:opp-E:1:1" not in keys


# ------------------------------------------------------------------------- approval workflow


def test_maker_checker(conn):
    result = period_batch(conn)
    with pytest.raises(MakerCheckerError, match="prepared by alice, so Alice cannot approve"):
        decide(
            conn,
            RUN,
            result.batch_id,
            decision="approve",
            by="Alice ",
            content_hash=result.content_hash,
        )
    audits = conn.execute(
        "SELECT count(*) FROM audit.audit_log WHERE action = 'invoice_batch.approved'"
    ).fetchone()[0]
    assert audits == 0
    d = decide(
        conn, RUN, result.batch_id, decision="approve", by="bob", content_hash=result.content_hash
    )
    assert d.status == "approved"
    row = conn.execute(
        """SELECT actor, after_state->>'content_hash', source_run_id FROM audit.audit_log
           WHERE action = 'invoice_batch.approved' AND entity_id = %s""",
        (str(result.batch_id),),
    ).fetchone()
    assert row == ("bob", result.content_hash, "run-1")
    prepared = conn.execute(
        """SELECT actor, after_state->>'prepared_by' FROM audit.audit_log
           WHERE action = 'invoice_batch.prepared' AND entity_id = %s""",
        (str(result.batch_id),),
    ).fetchone()
    assert prepared == ("alice", "alice")
    assert verify_approval(conn, result.batch_id) == result.content_hash
    # the database refuses it too, whatever the code path
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute(
            "UPDATE billing.invoice_batches SET decided_by = 'ALICE' WHERE batch_id = %s",
            (result.batch_id,),
        )


def test_hash_bound_approval(conn):
    result = period_batch(conn)
    b = result.batch_id
    assert current_hash(conn, b) == result.content_hash
    # a change before approval: the approver's hash is stale
    inv_id = invoice_of(conn, b, "acc-nl")[0]
    conn.execute(
        "UPDATE billing.invoice_lines SET description = description || ' (edited)' "
        "WHERE invoice_id = %s AND line_no = 1",
        (inv_id,),
    )
    with pytest.raises(BatchChangedError, match="approval is void"):
        decide(conn, RUN, b, decision="approve", by="bob", content_hash=result.content_hash)
    conn.execute(
        "UPDATE billing.invoice_lines SET description = replace(description, ' (edited)', '') "
        "WHERE invoice_id = %s",
        (inv_id,),
    )
    assert current_hash(conn, b) == result.content_hash
    decide(conn, RUN, b, decision="approve", by="bob", content_hash=result.content_hash)
    # a change after approval voids it: the pusher's check refuses
    conn.execute(
        "UPDATE billing.invoices SET po_number = 'PO-OTHER' WHERE invoice_id = %s", (inv_id,)
    )
    with pytest.raises(BatchChangedError):
        verify_approval(conn, b)
    conn.execute(
        "UPDATE billing.invoices SET po_number = 'PO-4711' WHERE invoice_id = %s", (inv_id,)
    )
    assert verify_approval(conn, b) == result.content_hash


def test_rebuild_same_scope_reuses_numbers_and_voids_approval(conn):
    first = period_batch(conn)
    numbers = {i["account_id"]: i["document_number"] for i in first.invoices}
    again = period_batch(conn)  # a retried build: nothing changed
    assert again.batch_id == first.batch_id and again.unchanged
    assert again.content_hash == first.content_hash
    decide(conn, RUN, first.batch_id, decision="approve", by="bob", content_hash=first.content_hash)
    # new ready work in scope arrives: the rebuild changes the content, the approval is void
    dd.add_item(
        conn,
        "time:7",
        account_id="acc-nl",
        opportunity_id="opp-A",
        currency="EUR",
        item_date="2026-10-20",
        hours="1",
        rate="95.15",
        role="Analyst",
        user_psa_id="u2",
    )
    rebuilt = period_batch(conn, prepared_by="carol")
    assert rebuilt.batch_id == first.batch_id and rebuilt.rebuilt and not rebuilt.unchanged
    assert rebuilt.status == "awaiting_approval" and rebuilt.content_hash != first.content_hash
    assert {i["account_id"]: i["document_number"] for i in rebuilt.invoices} == numbers
    nl = [i for i in rebuilt.invoices if i["account_id"] == "acc-nl"][0]
    assert nl["net"] == "3719.10"  # Analyst 5.3333 h x 95.15 = 507.463495 -> 507.46
    voided = conn.execute(
        "SELECT count(*) FROM audit.audit_log WHERE action = 'invoice_batch.approval_voided'"
    ).fetchone()[0]
    assert voided == 1
    with pytest.raises(BatchStateError):
        verify_approval(conn, first.batch_id)
    with pytest.raises(BatchChangedError):
        decide(
            conn, RUN, first.batch_id, decision="approve", by="bob", content_hash=first.content_hash
        )


def test_reject_releases_items_for_the_next_run(conn):
    first = period_batch(conn)
    d = decide(
        conn,
        RUN,
        first.batch_id,
        decision="reject",
        by="bob",
        content_hash=first.content_hash,
        comment="wrong rates",
    )
    assert d.status == "rejected" and d.items_released == 15
    statuses = {
        r[0]
        for r in conn.execute(
            "SELECT status FROM billing.invoices WHERE batch_id = %s", (first.batch_id,)
        )
    }
    assert statuses == {"rejected"}
    row = conn.execute(
        "SELECT actor, after_state->>'items_released', detail->>'comment' FROM audit.audit_log "
        "WHERE action = 'invoice_batch.rejected'"
    ).fetchone()
    assert row == ("bob", "15", "wrong rates")
    second = period_batch(conn)
    assert second.batch_id != first.batch_id and second.items == 15
    assert second.totals == first.totals
    old = {i["account_id"]: i["document_number"] for i in first.invoices}
    new = {i["account_id"]: i["document_number"] for i in second.invoices}
    assert all(new[a] != old[a] and new[a].endswith("-2") and old[a].endswith("-1") for a in old)
    with pytest.raises(BatchStateError):
        decide(
            conn, RUN, first.batch_id, decision="approve", by="bob", content_hash=first.content_hash
        )


def test_dry_run_persists_nothing_pushable(conn):
    dry = period_batch(conn, dry_run=True)
    assert dry.status == "dry_run" and dry.dry_run and len(dry.invoices) == 5
    assert all(i["document_number"] is None for i in dry.invoices)
    assert dry.totals["EUR"]["total"] == "9384.98"
    assert conn.execute("SELECT count(*) FROM billing.batch_items").fetchone()[0] == 0
    with pytest.raises(BatchStateError):
        decide(conn, RUN, dry.batch_id, decision="approve", by="bob", content_hash=dry.content_hash)
    with pytest.raises(BatchStateError):
        verify_approval(conn, dry.batch_id)
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute(
            "UPDATE billing.invoice_batches SET status = 'approved', decided_by = 'bob', "
            "decided_hash = 'x' WHERE batch_id = %s",
            (dry.batch_id,),
        )
    assert "Dry run" in approval_markdown(conn, dry.batch_id)
    assert (
        conn.execute(
            "SELECT count(*) FROM audit.audit_log WHERE action = 'invoice_batch.dry_run'"
        ).fetchone()[0]
        == 1
    )
    real = period_batch(conn)  # the dry run reserved nothing: the real run takes every item
    assert real.items == 15 and real.totals == dry.totals


# ------------------------------------------------------------- posted invoices, credit notes


def test_posted_invoices_are_immutable(conn):
    result = period_batch(conn)
    decide(
        conn, RUN, result.batch_id, decision="approve", by="bob", content_hash=result.content_hash
    )
    release(conn, result.batch_id)
    inv_id = invoice_of(conn, result.batch_id, "acc-nl")[0]
    refused = [
        (
            "UPDATE billing.invoices SET net = net + 1, total = total + 1 WHERE invoice_id = %s",
            "immutable",
        ),
        ("UPDATE billing.invoices SET status = 'approved' WHERE invoice_id = %s", "cannot go back"),
        ("UPDATE billing.invoices SET erp_number = 'X' WHERE invoice_id = %s", "immutable"),
        ("DELETE FROM billing.invoices WHERE invoice_id = %s", "cannot be deleted"),
        ("UPDATE billing.invoice_lines SET net_amount = 1 WHERE invoice_id = %s", "immutable"),
        ("DELETE FROM billing.invoice_lines WHERE invoice_id = %s", "immutable"),
        ("DELETE FROM billing.invoice_taxes WHERE invoice_id = %s", "immutable"),
        (
            "INSERT INTO billing.invoice_lines (invoice_id, line_no, kind, description, quantity, "
            "unit_price, net_amount, tax_code, tax_rate) "
            "VALUES (%s, 99, 'time', 'x', 1, 1, 1, 'STANDARD', 21)",
            "immutable",
        ),
    ]
    for sql, message in refused:
        with pytest.raises(psycopg.errors.CheckViolation, match=message), conn.transaction():
            conn.execute(sql, (inv_id,))
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute(
            "UPDATE billing.invoice_batches SET status = 'approved' WHERE batch_id = %s",
            (result.batch_id,),
        )
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute("TRUNCATE billing.invoice_lines CASCADE")
    # the allowed step forward: billed back
    conn.execute(
        "UPDATE billing.invoices SET status = 'billed_back' WHERE invoice_id = %s", (inv_id,)
    )


def test_credit_note(conn):
    result = period_batch(conn)
    with pytest.raises(BatchStateError, match="only a posted invoice"):
        create_credit_note(
            conn, RUN, result.invoices[0]["invoice_id"], reason="x", prepared_by="alice"
        )
    decide(
        conn, RUN, result.batch_id, decision="approve", by="bob", content_hash=result.content_hash
    )
    release(conn, result.batch_id)
    inv_id, doc, *_ = invoice_of(conn, result.batch_id, "acc-nl")
    # a partial credit: 100.00 off the Senior Consultant line, taxed like the original
    part = create_credit_note(
        conn,
        RUN,
        inv_id,
        reason="goodwill",
        prepared_by="carol",
        lines=[{"line_no": 3, "amount": D("100.00")}],
    )
    assert part.kind == "credit_note" and part.status == "awaiting_approval"
    cn = part.invoices[0]
    assert (cn["net"], cn["tax"], cn["total"]) == ("-100.00", "-21.00", "-121.00")
    assert cn["credit_of_invoice_id"] == inv_id and cn["document_number"].startswith("CRN-202610-")
    same = create_credit_note(
        conn,
        RUN,
        inv_id,
        reason="goodwill",
        prepared_by="carol",
        lines=[{"line_no": 3, "amount": D("100.00")}],
    )
    assert same.batch_id == part.batch_id  # a retried request does not create a second one
    with pytest.raises(MakerCheckerError):
        decide(
            conn, RUN, part.batch_id, decision="approve", by="carol", content_hash=part.content_hash
        )
    decide(conn, RUN, part.batch_id, decision="approve", by="bob", content_hash=part.content_hash)
    # the rest: everything left on every line; tax is the exact negative of what remains
    rest = create_credit_note(conn, RUN, inv_id, reason="cancelled engagement", prepared_by="carol")
    cn2 = rest.invoices[0]
    # original 3623.95 net / 761.03 tax; 3523.95 left: tax 21 % of -3523.95 = -740.0295 -> -740.03
    assert (cn2["net"], cn2["tax"], cn2["total"]) == ("-3523.95", "-740.03", "-4263.98")
    assert cn2["document_number"].endswith("-2")
    lines = lines_of(conn, cn2["invoice_id"])
    assert [(ln[1], ln[5]) for ln in lines] == [
        ("time", D("-412.31")),
        ("time", D("-25.01")),
        ("time", D("-3006.25")),
        ("expense", D("-80.38")),
    ]
    with pytest.raises(CreditNoteError, match="already fully credited"):
        create_credit_note(conn, RUN, inv_id, reason="again", prepared_by="carol")
    with pytest.raises(CreditNoteError, match="more decimals"):
        create_credit_note(
            conn,
            RUN,
            inv_id,
            reason="x",
            prepared_by="carol",
            lines=[{"description": "x", "amount": D("0.001")}],
        )
    # a full credit of the KWD invoice: exactly the negative, 3 decimals
    kw_id = invoice_of(conn, result.batch_id, "acc-kw")[0]
    full = create_credit_note(
        conn, RUN, kw_id, reason="wrong currency", prepared_by="carol"
    ).invoices[0]
    assert (full["net"], full["tax"], full["total"]) == ("-146.811", "-30.830", "-177.641")
    assert (
        conn.execute(
            "SELECT count(*) FROM audit.audit_log WHERE action = 'credit_note.prepared'"
        ).fetchone()[0]
        == 3
    )


def test_export_schema(conn, tmp_path):
    result = period_batch(conn)
    with pytest.raises(BatchStateError, match="only released batches"):
        export_batch(conn, result.batch_id, tmp_path)
    decide(
        conn, RUN, result.batch_id, decision="approve", by="bob", content_hash=result.content_hash
    )
    release(conn, result.batch_id)
    files = export_batch(conn, result.batch_id, tmp_path / "out")
    assert [f.name for f in files] == ["invoices.csv", "invoice_lines.csv", "batch.json"]
    with files[0].open(newline="") as fh:
        invoices = list(csv.DictReader(fh))
    assert list(invoices[0].keys()) == INVOICE_COLUMNS
    by_acc = {r["account_id"]: r for r in invoices}
    assert (by_acc["acc-kw"]["net"], by_acc["acc-kw"]["tax"], by_acc["acc-kw"]["total"]) == (
        "146.811",
        "30.830",
        "177.641",
    )
    assert by_acc["acc-jp"]["total"] == "130838" and by_acc["acc-nl"]["po_number"] == "PO-4711"
    assert by_acc["acc-de"]["tax_codes"] == "REVERSE" and by_acc["acc-nl"]["status"] == "posted"
    with files[1].open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert list(lines[0].keys()) == LINE_COLUMNS
    nl_lines = [r for r in lines if r["document_number"] == by_acc["acc-nl"]["document_number"]]
    assert [r["net_amount"] for r in nl_lines] == ["412.31", "25.01", "3106.25", "80.38"]
    assert nl_lines[2]["item_keys"] == "time:1 time:2" and nl_lines[2]["unit_price"] == "175"
    doc = json.loads(files[2].read_text())
    assert doc["schema"] == "erpsync.invoice_batch" and doc["schema_version"] == "1.0"
    assert (
        doc["batch"]["content_hash"] == result.content_hash and doc["batch"]["approved_by"] == "bob"
    )
    jnl = [i for i in doc["invoices"] if i["account_id"] == "acc-nl"][0]
    assert jnl["total"] == "4384.98" and jnl["taxes"][0]["amount"] == "761.03"
    assert jnl["lines"][2]["item_keys"] == ["time:1", "time:2"]
    # the same batch exports to the same bytes
    again = export_batch(conn, result.batch_id, tmp_path / "again")
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in again]


def test_plausibility_holds_and_credits_are_shown_to_the_approver(conn):
    """Issue 14: items held by a plausibility rule are in the approver's summary with their
    reason, its meaning and the amount at stake; a negative expense (a Harvest refund) is
    billed as a credit line and flagged, never silently."""
    for key, reason, hours in (
        ("time:901", "hours_over_entry_limit", "1000000000000"),
        ("time:902", "rate_off_card", "2"),
    ):
        dd.add_item(
            conn,
            key,
            account_id="acc-nl",
            opportunity_id="opp-A",
            currency="EUR",
            item_date="2026-10-06",
            state="on_hold",
            reason_code=reason,
            hours=hours,
            rate="900" if reason == "rate_off_card" else "100",
            user_psa_id="u1",
        )
    dd.add_item(
        conn,
        "expense:903",
        account_id="acc-nl",
        opportunity_id="opp-A",
        currency="EUR",
        item_date="2026-10-07",
        amount="-50.00",
        quantity="1",
    )
    result = period_batch(conn)
    assert result.held["hours_over_entry_limit"] == {
        "items": 1,
        "amounts": {"EUR": "100000000000000.00"},
        "source": "reconciliation",
    }
    assert result.held["rate_off_card"]["amounts"] == {"EUR": "1800.00"}
    md = approval_markdown(conn, result.batch_id)
    assert "| hours_over_entry_limit | reconciliation | EUR | 1 | 100000000000000.00 |" in md
    assert "- `hours_over_entry_limit` (Hours over the entry limit): A time entry with more" in md
    assert "- `rate_off_card` (Rate far from the rate card)" in md
    credit = [a for a in result.anomalies if a["code"] == "expense_credit"]
    assert len(credit) == 1
    assert credit[0]["numbers"]["amount"] == "-50.00"
    assert credit[0]["numbers"]["item_keys"] == ["expense:903"]
    assert "`expense_credit`: 1 negative expense(s) billed as credit lines: -50.00 EUR" in md
    lines = lines_of(conn, invoice_of(conn, result.batch_id, "acc-nl")[0])
    assert any("expense:903" in keys and net < 0 for *_rest, net, _tax, keys in lines)


def test_erp_customer_number_of_a_customer_erpsync_created(conn, tmp_path):
    """The CRM has no ERP customer number for a client erpsync created in the ERP; the write-back
    recorded the number the ERP answered in core.id_map.erp_number: invoices carry it and the
    export shows it (also for an invoice built before the number was known)."""
    for acc, number in (("acc-jp", "CUST-0042"), ("acc-kw", None)):
        conn.execute("UPDATE core.clients SET erp_customer_no = NULL WHERE crm_id = %s", (acc,))
        conn.execute(
            """UPDATE core.id_map SET erp_number = %s
                WHERE canonical_id = (SELECT canonical_id FROM core.clients WHERE crm_id = %s)""",
            (number, acc),
        )
    result = period_batch(conn, clients=["acc-jp", "acc-kw", "acc-nl"])
    numbers = dict(
        conn.execute(
            "SELECT account_id, erp_customer_number FROM billing.invoices WHERE batch_id = %s",
            (result.batch_id,),
        ).fetchall()
    )
    assert numbers == {"acc-jp": "CUST-0042", "acc-kw": None, "acc-nl": "Cacc-nl"}
    # the KWD client's customer is created (and its number recorded) after the batch was built
    conn.execute(
        """UPDATE core.id_map SET erp_number = 'CUST-0043'
            WHERE canonical_id = (SELECT canonical_id FROM core.clients WHERE crm_id = 'acc-kw')"""
    )
    decide(
        conn, RUN, result.batch_id, decision="approve", by="bob", content_hash=result.content_hash
    )
    release(conn, result.batch_id)
    files = export_batch(conn, result.batch_id, tmp_path)
    with files[0].open(newline="") as fh:
        by_acc = {r["account_id"]: r["erp_customer_number"] for r in csv.DictReader(fh)}
    assert by_acc == {"acc-jp": "CUST-0042", "acc-kw": "CUST-0043", "acc-nl": "Cacc-nl"}
    doc = json.loads(files[2].read_text())
    assert {i["account_id"]: i["erp_customer_number"] for i in doc["invoices"]} == by_acc
