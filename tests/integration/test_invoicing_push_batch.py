"""The invoice push's batched ERP reads (erpsync.invoicing.push_erp_batch): the check-then-create
lookups of a batch go in Business Central ``$batch`` requests and the draft check reads the
lines with the header (``$expand``), with the exactly-once guarantees of the push unchanged:

* a ``$batch`` answered partly (an operation answered 429): that invoice is looked up alone;
* a ``$batch`` refused whole (429s past the client's retries): every invoice is looked up alone;
* a create sent by another push after this push's ``$batch`` read (the other push killed before
  it recorded the document): the prefetched "not in the ERP" is not trusted, the document is
  found and recorded, never created twice.

Same fixtures and end-state check as tests/integration/test_invoicing_push.py (real sandbox ERP
and PSA, real PostgreSQL, SIGKILLed child pushes).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from erpsync_sandbox import contract
from tests.integration.test_invoicing_push import (
    _push_in_child,
    assert_exactly_once,
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
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            fh.seek(self.offset)
            rows = [json.loads(line) for line in fh if line.strip()]
        return [r for r in rows if r["service"] == "erp" and contract.is_pack_request(r)]

    def count(self, method: str, route_end: str) -> int:
        return sum(
            1
            for r in self.erp()
            if r["method"] == method and (r.get("route") or r["path"]).endswith(route_end)
        )


@pytest.fixture
def requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Requests:
    path = os.environ.get(contract.CONTRACT_LOG_ENV)
    if not path:
        path = str(tmp_path / "contract.jsonl")
        monkeypatch.setenv(contract.CONTRACT_LOG_ENV, path)
    return Requests(Path(path))


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
