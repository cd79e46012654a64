"""The invoice push's batched ERP reads (erpsync.invoicing.push_erp_batch): the check-then-create
lookups of a batch go in Business Central ``$batch`` requests and the draft check reads the
lines with the header (``$expand``), with the exactly-once guarantees of the push unchanged:

* a ``$batch`` answered partly (an operation answered 429): that invoice is looked up alone;
* a ``$batch`` refused whole (429s past the client's retries): every invoice is looked up alone;
* a create sent by another push after this push's ``$batch`` read (the other push killed before
  it recorded the document): the prefetched "not in the ERP" is not trusted, the document is
  found and recorded, never created twice.

And the Harvest side (erpsync.invoicing.push_psa): the batch's Harvest invoices are listed once
per push instead of one ``GET /v2/invoices?client_id&from&to`` per invoice:

* a previous run's Harvest invoice is found through that list (no second create);
* a Harvest invoice created after that list (by another push killed before recording) is found
  through the items it imported, never created twice;
* Harvest requests per invoice: one fewer than with the per-invoice lookup.

Same fixtures and end-state check as tests/integration/test_invoicing_push.py (real sandbox ERP
and PSA, real PostgreSQL, SIGKILLed child pushes).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from erpsync_sandbox import contract
from tests import contract_log
from tests.integration.test_invoicing_push import (
    _push_in_child,
    assert_exactly_once,
    billed_states,
    exact_items,
    make_batch,
    push,
    push_until_released,
)
from tests.integration.test_invoicing_push import env as env

LOOKUP_ROUTE = "/companies({company_id})/salesInvoices"
LINES_ROUTE = "/salesInvoices({doc_id})/salesInvoiceLines"


class Requests:
    """The ERP requests the pack sent since the mark (the contract recorder's log)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def erp(self) -> list[dict]:
        return self.of("erp")

    def of(self, service: str) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            fh.seek(self.offset)
            rows = [json.loads(line) for line in fh if line.strip()]
        return [r for r in rows if r["service"] == service and contract.is_pack_request(r)]

    def count(self, method: str, route_end: str, service: str = "erp") -> int:
        return sum(
            1
            for r in self.of(service)
            if r["method"] == method and (r.get("route") or r["path"]).endswith(route_end)
        )

    def mark(self) -> None:
        """Count from here on."""
        self.offset = self.path.stat().st_size if self.path.exists() else 0


@pytest.fixture
def requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Requests]:
    """This test's requests in a log of its own (the session's log is shared by the other
    xdist worker, whose pushes would be counted too), checked for undocumented uses here."""
    path = tmp_path / "contract.jsonl"
    monkeypatch.setenv(contract.CONTRACT_LOG_ENV, str(path))
    yield Requests(path)
    report = contract_log.check(path)
    assert report.ok, contract_log.format_report(report)


def test_the_lookups_go_in_one_batch_and_the_lines_come_with_the_draft(env, requests):
    batch = make_batch(env, 3)
    before = len(env.erp_docs())
    result = push(env, batch.batch_id)
    assert result.complete and result.created == 3 and result.already_in_erp == 0
    assert requests.count("POST", "/$batch") == 1
    assert requests.count("GET", LOOKUP_ROUTE) == 0  # no lookup one by one
    assert requests.count("GET", LINES_ROUTE) == 0  # the lines came with the draft ($expand)
    assert requests.count("POST", LOOKUP_ROUTE) == 3  # one deep insert per invoice
    assert_exactly_once(env, batch, before)


def test_a_batch_answered_partly_looks_the_unanswered_invoice_up_alone(env, requests):
    batch = make_batch(env, 3)
    before = len(env.erp_docs())
    # requests of a push: token, companies, the $batch, then its three operations: the second
    # operation is answered 429 inside a 200 batch
    env.faults("erp", burst_429={"count": 1, "start_after": 4, "retry_after": 0})
    try:
        result = push(env, batch.batch_id)
        injected = env.sandbox.ctx.faults_for("erp").snapshot()["stats"]["injected"]
    finally:
        env.quiet()
    assert injected == {"429": 1}
    assert result.complete and result.created == 3
    assert requests.count("POST", "/$batch") == 1
    assert requests.count("GET", LOOKUP_ROUTE) == 1
    assert_exactly_once(env, batch, before)


def test_a_batch_refused_whole_by_429s_looks_every_invoice_up_alone(env, requests):
    batch = make_batch(env, 2)
    before = len(env.erp_docs())
    # the $batch and every retry of it (3 attempts) are answered 429
    env.faults("erp", burst_429={"count": 3, "start_after": 2, "retry_after": 0})
    try:
        result = push(env, batch.batch_id)
    finally:
        env.quiet()
    assert result.complete and result.created == 2
    assert requests.count("POST", "/$batch") == 3
    assert requests.count("GET", LOOKUP_ROUTE) == 2
    assert_exactly_once(env, batch, before)


def test_a_create_sent_after_the_batch_read_is_found_not_sent_again(env, requests):
    """Push A reads every lookup in one $batch (nothing in the ERP yet). While A holds the
    first invoice, push B creates the second in the ERP and is killed before recording it. A
    must not trust its earlier "not in the ERP" for the second invoice: it looks it up, finds
    B's draft and records it."""
    batch = make_batch(env, 2)
    before = len(env.erp_docs())
    killed: list[int] = []

    def on_step(step: str, invoice_id: int) -> None:
        if step == "created" and not killed:
            killed.append(_push_in_child(env, batch.batch_id, "erp_created", 1))

    result = push(env, batch.batch_id, on_step=on_step)
    assert killed == [signal.SIGKILL]
    assert result.created == 1 and result.already_in_erp == 1, result
    assert result.complete
    assert requests.count("GET", LOOKUP_ROUTE) >= 1  # A looked the second invoice up alone
    push_until_released(env, batch.batch_id)
    assert_exactly_once(env, batch, before)


# ---------------------------------------------------------------------------- Harvest read-ahead

HARVEST_INVOICES = "/v2/invoices"  # the list: the read-ahead, or one lookup per invoice
HARVEST_INVOICE = "/v2/invoices/{id}"


def _state_requests(env, batch) -> dict[str, int]:
    """document number -> the Harvest requests on its billed-state row."""
    with psycopg.connect(env.db) as conn:
        rows = conn.execute(
            """SELECT s.document_number, s.psa_requests FROM billing.psa_billed_state s
                 JOIN billing.invoices i USING (invoice_id) WHERE i.batch_id = %s""",
            (batch.batch_id,),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def test_harvest_requests_per_invoice_drop_by_one_with_the_read_ahead(env, requests):
    """Three invoices Harvest mirrors exactly (one project each: 2 snapshot lists, the create,
    2 read-back lists = 5 requests each); the lookups by number read one list for the push
    (one ``GET /v2/invoices?client_id&from&to`` per invoice before: 6 each)."""
    batch = make_batch(env, items=[exact_items(env) for _ in range(3)])
    before = len(env.erp_docs())
    result = push(env, batch.batch_id)
    assert result.complete and result.harvest_invoiced == 3 and result.psa_writes == 3
    assert requests.count("GET", HARVEST_INVOICES, "psa") == 1  # the read-ahead only
    assert requests.count("GET", HARVEST_INVOICE, "psa") == 0
    assert _state_requests(env, batch) == dict.fromkeys(batch.invoices, 5)
    assert result.psa_requests == 3 * 5 + 1
    assert_exactly_once(env, batch, before)


def test_a_previous_runs_harvest_invoice_is_found_through_the_read_ahead(env, requests):
    """A push killed right after the Harvest create: the rerun's read-ahead lists that Harvest
    invoice, finds it by number, client and issue date, and only reads it back."""
    batch = make_batch(env, 1, items=exact_items(env))
    before = len(env.erp_docs())
    assert _push_in_child(env, batch.batch_id, "harvest_invoice_created", 1) == signal.SIGKILL
    requests.mark()
    result = push(env, batch.batch_id)
    assert result.complete and result.harvest_invoiced == 1 and result.psa_writes == 0
    assert requests.count("GET", HARVEST_INVOICES, "psa") == 1  # the read-ahead
    assert requests.count("GET", HARVEST_INVOICE, "psa") == 0  # not through the items
    assert requests.count("POST", HARVEST_INVOICES, "psa") == 0
    assert _state_requests(env, batch) == dict.fromkeys(batch.invoices, 4)  # snapshot + read-back
    assert_exactly_once(env, batch, before)


def test_a_harvest_invoice_created_after_the_read_ahead_is_found_not_created_twice(env, requests):
    """The push reads the batch's Harvest invoices ahead at the first invoice's bill-back.
    Then, before it settles the second invoice, another push (simulated through the sandbox:
    it died before recording) creates the second invoice's Harvest invoice, importing its
    items. The read-ahead does not list it; the fresh snapshot shows the items invoiced by it:
    found, read back, never created twice."""
    from erpsync_sandbox.psa.writes import PsaWriter

    batch = make_batch(env, items=[exact_items(env) for _ in range(2)])
    before = len(env.erp_docs())
    (_, first), (second_doc, second) = batch.invoices.items()
    made: list[dict] = []

    def on_step(step: str, invoice_id: int) -> None:
        if step != "posted" or invoice_id != second["invoice_id"]:
            return
        assert requests.count("GET", HARVEST_INVOICES, "psa") == 1  # read ahead already
        with psycopg.connect(env.db) as conn:
            number = conn.execute(
                "SELECT erp_number FROM billing.invoice_push WHERE invoice_id = %s",
                (invoice_id,),
            ).fetchone()[0]
        entry = env.psa("time_entries", second["items"][0].partition(":")[2])
        window = {"summary_type": "detailed", "from": "2026-10-05", "to": "2026-10-06"}
        made.append(
            PsaWriter(env.sandbox.ctx.stores["psa"]).create_invoice(
                {
                    "client_id": entry["client"]["id"],
                    "number": number,
                    "issue_date": "2026-11-02",
                    "currency": second["currency"],
                    "line_items_import": {
                        "project_ids": [entry["project"]["id"]],
                        "time": window,
                        "expenses": window,
                    },
                },
                None,
            )
        )

    result = push(env, batch.batch_id, on_step=on_step)
    assert len(made) == 1
    assert result.complete and result.harvest_invoiced == 2
    assert result.psa_writes == 1  # the first invoice's create only
    assert requests.count("POST", HARVEST_INVOICES, "psa") == 1
    assert requests.count("GET", HARVEST_INVOICE, "psa") == 1  # found through its items
    assert billed_states(env, batch)[second_doc][1] == str(made[0]["id"])
    assert_exactly_once(env, batch, before)


def test_a_read_ahead_refused_by_429s_looks_each_harvest_invoice_up_alone(env, requests):
    """The read-ahead (the push's first Harvest request) is answered 429 past the client's
    retries: the push goes on, each invoice's Harvest invoice is looked up alone, as before."""
    batch = make_batch(env, 1, items=exact_items(env))
    before = len(env.erp_docs())
    env.faults("psa", burst_429={"count": 3, "start_after": 0, "retry_after": 0})
    try:
        result = push(env, batch.batch_id)
        injected = env.sandbox.ctx.faults_for("psa").snapshot()["stats"]["injected"]
    finally:
        env.quiet()
    assert injected == {"429": 3}
    assert result.complete and result.harvest_invoiced == 1 and result.psa_writes == 1
    assert requests.count("GET", HARVEST_INVOICES, "psa") == 3 + 1  # refused, then the lookup
    assert _state_requests(env, batch) == dict.fromkeys(batch.invoices, 6)
    assert_exactly_once(env, batch, before)
