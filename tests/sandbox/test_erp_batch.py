"""The ERP sandbox's OData JSON ``$batch`` (erpsync_sandbox.erp.batch) over real HTTP.

Documented behaviour (dev-itpro/webservices/use-odata-batch.md, operational-limits-online.md):
one answer per operation with its own status, at most 100 operations, relative inner URLs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from erpsync_sandbox.common import SandboxContext
from erpsync_sandbox.erp.app import create_app
from tests.sandbox.test_erp_contract import (
    COMPANY,
    Server,
    bearer_client,
    new_invoice,
    quiet_sandbox,
    seed,
)
from tests.support.connections import erp_conn

ROOT = "/v2.0/sandbox/production/api/v2.0"
BATCH = f"{ROOT}/$batch"
DOCS = f"companies({COMPANY})/salesInvoices"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ctx = SandboxContext.open(Path(tmp_path_factory.mktemp("erp-batch")))
    seed(ctx)
    with Server(create_app(ctx)) as url:
        yield url
    ctx.close()


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[httpx.Client]:
    yield from bearer_client(base)


@pytest.fixture(autouse=True)
def quiet(base: str) -> Iterator[None]:
    yield from quiet_sandbox(base)


def lookup(ext: str, op_id: str) -> dict:
    return {
        "id": op_id,
        "method": "GET",
        "url": f"{DOCS}?$filter=externalDocumentNumber eq '{ext}'&$top=2",
    }


def test_a_batch_answers_each_operation_with_its_own_status(client: httpx.Client) -> None:
    ext = f"B-{uuid.uuid4().hex[:8]}"
    draft = new_invoice(client, ext=ext).json()
    resp = client.post(
        BATCH,
        json={
            "requests": [
                lookup(ext, "1"),
                lookup("NOT-THERE", "2"),
                {"id": "3", "method": "POST", "url": f"{DOCS}({draft['id']})/Microsoft.NAV.post"},
                {"id": "4", "method": "GET", "url": f"{DOCS}({uuid.uuid4()})"},
                {"id": "5", "method": "GET", "url": f"{DOCS}({draft['id']})"},
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    answers = resp.json()["responses"]
    assert [a["id"] for a in answers] == ["1", "2", "3", "4", "5"]
    assert [a["status"] for a in answers] == [200, 200, 204, 404, 200]
    assert [d["id"] for d in answers[0]["body"]["value"]] == [draft["id"]]
    assert answers[1]["body"]["value"] == []
    assert "body" not in answers[2]
    assert answers[3]["body"]["error"]["code"] == "Internal_RecordNotFound"
    assert answers[4]["body"]["status"] == "Open"  # the post (op 3) ran before op 5


def test_a_batch_of_more_than_100_operations_is_refused_whole(client: httpx.Client) -> None:
    ext = f"B-{uuid.uuid4().hex[:8]}"
    draft = new_invoice(client, ext=ext).json()
    post = {"method": "POST", "url": f"{DOCS}({draft['id']})/Microsoft.NAV.post"}
    ops = [post] + [lookup(ext, str(n)) for n in range(100)]
    resp = client.post(BATCH, json={"requests": ops})
    assert resp.status_code == 400
    assert "maximum is 100" in resp.json()["error"]["message"]
    assert client.get(f"{ROOT}/{DOCS}({draft['id']})").json()["status"] == "Draft"
    ok = client.post(BATCH, json={"requests": ops[1:]})
    assert ok.status_code == 200 and len(ok.json()["responses"]) == 100


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"requests": []},
        {"requests": [{"method": "GET"}]},
        {"requests": [{"method": "MERGE", "url": "x"}]},
    ],
)
def test_a_body_that_is_not_a_json_batch_is_refused(client: httpx.Client, body: dict) -> None:
    resp = client.post(BATCH, json=body)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "BadRequest"


def test_transactional_batches_with_writes_are_not_pretended(client: httpx.Client) -> None:
    draft = new_invoice(client).json()
    post = {"method": "POST", "url": f"{DOCS}({draft['id']})/Microsoft.NAV.post"}
    resp = client.post(BATCH, json={"requests": [post]}, headers={"Isolation": "snapshot"})
    assert resp.status_code == 501
    assert client.get(f"{ROOT}/{DOCS}({draft['id']})").json()["status"] == "Draft"
    reads = client.post(
        BATCH, json={"requests": [lookup("X", "1")]}, headers={"Isolation": "snapshot"}
    )
    assert reads.status_code == 200


def test_a_batch_needs_a_token_and_counts_once_against_the_limits(
    client: httpx.Client, base: str
) -> None:
    assert httpx.post(f"{base}{BATCH}", json={"requests": [lookup("X", "1")]}).status_code == 401
    httpx.put(f"{base}/__admin/limits", json={"rate_per_min": 2, "max_concurrent": 5})
    ops = [lookup("X", str(n)) for n in range(100)]
    assert client.post(BATCH, json={"requests": ops}).status_code == 200
    assert client.post(BATCH, json={"requests": ops}).status_code == 200
    third = client.post(BATCH, json={"requests": ops})
    assert third.status_code == 429


def test_operations_meet_the_faults_so_a_batch_can_be_answered_partly(
    client: httpx.Client, base: str
) -> None:
    # the batch itself is request 0 (let through); its operations 1.. meet a 429 burst of 2
    httpx.put(
        f"{base}/__admin/faults",
        json={"burst_429": {"count": 2, "start_after": 2, "retry_after": 1}},
    )
    ops = [lookup("X", str(n)) for n in range(5)]
    answers = client.post(BATCH, json={"requests": ops}).json()["responses"]
    assert [a["status"] for a in answers] == [200, 429, 429, 200, 200]
    assert answers[1]["headers"]["retry-after"] == "1"


def test_the_contract_log_records_the_batch_with_what_its_operations_used(
    client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from erpsync_sandbox import contract

    log = tmp_path / "contract.jsonl"
    monkeypatch.setenv(contract.CONTRACT_LOG_ENV, str(log))
    ops = [
        {"method": "GET", "url": f"companies({COMPANY})/customers?$top=1"},
        {"method": "GET", "url": f"companies({COMPANY})/customers?$search=x"},
    ]
    assert client.post(BATCH, json={"requests": ops}).status_code == 200
    records = list(contract.read_log(log))
    assert len(records) == 1
    assert records[0]["route"].endswith("/api/v2.0/$batch")
    assert "query option $search" in records[0]["undocumented"]


def test_the_pack_client_sends_batches_and_reads_lines_with_the_header(
    base: str, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BusinessCentralClient.batch: one answer per operation in request order, at most 100
    operations (refused before sending); get(expand=...) returns the lines with the header."""
    from erpsync.connectors.business_central import BusinessCentralClient

    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_ERP", erp_conn(base, company_id=COMPANY))
    ext = f"B-{uuid.uuid4().hex[:8]}"
    draft = new_invoice(client, ext=ext).json()
    erp = BusinessCentralClient()
    try:
        ops = [
            {"method": "GET", "url": erp.batch_url(f"salesInvoices({uuid.uuid4()})")},
            {
                "method": "GET",
                "url": erp.batch_url("salesInvoices")
                + f"?$filter=externalDocumentNumber%20eq%20'{ext}'&$top=2",
            },
        ]
        missing, found = erp.batch(ops)
        assert missing["status"] == 404
        assert found["status"] == 200
        assert [d["id"] for d in found["body"]["value"]] == [draft["id"]]
        with pytest.raises(ValueError, match="at most 100"):
            erp.batch([ops[0]] * 101)
        doc = erp.get("salesInvoices", draft["id"], expand="salesInvoiceLines")
        assert doc is not None and [ln["sequence"] for ln in doc["salesInvoiceLines"]] == [10000]
    finally:
        erp.close()
