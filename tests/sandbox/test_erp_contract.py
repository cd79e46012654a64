"""Contract tests of the Business Central sandbox (erpsync_sandbox.erp) over real HTTP.

A real uvicorn server on 127.0.0.1 (ephemeral port) serves a hand-seeded ``erp`` store; the tests
speak to it with httpx the way a BC connector would: Entra token, OData paging, $filter, ETags,
draft-then-post invoices, faults and limits. Vendor shapes: docs/reference/vendor-apis.md s. 3.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.erp.app import create_app
from tests.support.servers import serve

COMPANY = "5d115c9c-44e3-ea11-bb43-000d3a2feca1"
SCOPE = "https://api.businesscentral.dynamics.com/.default"
API = f"/v2.0/sandbox/production/api/v2.0/companies({COMPANY})"
N_CUSTOMERS = 60


TERMS_30 = str(uuid.UUID(int=4000))
AREAS = {"DE": str(uuid.UUID(int=4100)), "FR": str(uuid.UUID(int=4101))}
#: G/L accounts: number -> (id, accountType, directPosting, blocked)
ACCOUNTS = {
    "8000": (str(uuid.UUID(int=4200)), "Posting", True, False),
    "8090": (str(uuid.UUID(int=4201)), "Posting", True, True),
    "7999": (str(uuid.UUID(int=4202)), "Heading", False, False),
    "1300": (str(uuid.UUID(int=4203)), "Posting", False, False),
}
HOUR = str(uuid.UUID(int=4300))


def seed(ctx: SandboxContext) -> None:
    store = ctx.stores["erp"]
    store.meta_set("company_id", COMPANY)
    store.meta_set("lcy_code", "EUR")
    store.put(
        "paymentTerms",
        TERMS_30,
        {"id": TERMS_30, "code": "30 DAYS", "displayName": "Net 30", "dueDateCalculation": "30D"},
    )
    for code, aid in AREAS.items():
        store.put("taxAreas", aid, {"id": aid, "code": code, "displayName": code, "taxType": "VAT"})
    for number, (aid, kind, direct, blocked) in ACCOUNTS.items():
        store.put(
            "accounts",
            aid,
            {
                "id": aid,
                "number": number,
                "displayName": f"Account {number}",
                "category": "Income",
                "subCategory": "",
                "blocked": blocked,
                "accountType": kind,
                "directPosting": direct,
                "netChange": 0,
                "consolidationTranslationMethod": "Average Rate (Manual)",
                "consolidationDebitAccount": "",
                "consolidationCreditAccount": "",
                "excludeFromConsolidation": False,
            },
        )
    store.put(
        "unitsOfMeasure",
        HOUR,
        {
            "id": HOUR,
            "code": "HOUR",
            "displayName": "Hour",
            "internationalStandardCode": "HUR",
            "symbol": "h",
        },
    )
    currencies = ["EUR", "USD", "JPY", "KWD", "GBP"]
    for i in range(N_CUSTOMERS):
        cid = str(uuid.UUID(int=i + 1))
        store.put(
            "customers",
            cid,
            {
                "id": cid,
                "number": f"C{i + 1:05d}",
                "displayName": f"Client {i + 1}",
                "type": "Company",
                "addressLine1": "Main St 1",
                "city": "Berlin",
                "postalCode": "10115",
                "country": "DE" if i % 3 else "FR",
                "currencyCode": currencies[i % len(currencies)],
                "paymentTermsId": TERMS_30,
                "taxLiable": i % 7 != 6,
                "taxRegistrationNumber": f"DE{100000000 + i}",
                "taxAreaId": AREAS["DE" if i % 3 else "FR"],
                "taxAreaDisplayName": "DE" if i % 3 else "FR",
                "blocked": "All" if i == 59 else " ",
            },
        )
    store.put(
        "taxGroups",
        str(uuid.UUID(int=1000)),
        {
            "id": str(uuid.UUID(int=1000)),
            "code": "STD",
            "displayName": "Standard",
            "taxType": "VAT",
        },
    )
    for bus, rate in (("DE", 19), ("FR", 20), ("DOMESTIC", 10)):
        store.put(
            "vatPostingSetup",
            f"{bus}|STD",
            {
                "VAT_Bus_Posting_Group": bus,
                "VAT_Prod_Posting_Group": "STD",
                "Description": "",
                "Blocked": False,
                "VAT_Identifier": f"VAT{rate}",
                "VAT_Percent": rate,
                "VAT_Calculation_Type": "Normal VAT",
            },
            stamp_field=None,
        )
    posted = str(uuid.UUID(int=3000))
    store.put(
        "salesInvoices",
        posted,
        {
            "id": posted,
            "number": "PSI-000122",
            "externalDocumentNumber": "OLD-1",
            "customerId": str(uuid.UUID(int=1)),
            "customerNumber": "C00001",
            "status": "Open",
            "currencyCode": "EUR",
            "totalAmountExcludingTax": 100,
            "totalTaxAmount": 19,
            "totalAmountIncludingTax": 119,
            "invoiceDate": "2026-10-01",
        },
    )


class Server:
    """A uvicorn server for one app in a background thread."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __enter__(self) -> str:
        self.server, self.thread, port = serve(self.app)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(5)


@pytest.fixture(scope="module")
def erp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SandboxContext]]:
    ctx = SandboxContext.open(Path(tmp_path_factory.mktemp("erp")))
    seed(ctx)
    app = create_app(ctx)
    with Server(app) as base:
        yield base, ctx
    ctx.close()


@pytest.fixture(scope="module")
def base(erp: tuple[str, SandboxContext]) -> str:
    return erp[0]


def get_token(base: str, secret: str = "sandbox-erp-secret") -> httpx.Response:  # noqa: S107
    return httpx.post(
        f"{base}/sandbox/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erpsync-sandbox",
            "client_secret": secret,
            "scope": SCOPE,
        },
    )


def bearer_client(base: str) -> Iterator[httpx.Client]:
    """An HTTP client on the sandbox ERP at ``base`` with a fresh bearer token."""
    token = get_token(base).json()["access_token"]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        yield c


def quiet_sandbox(base: str) -> Iterator[None]:
    """No faults and generous limits on the sandbox ERP at ``base`` during a test."""
    httpx.put(f"{base}/__admin/faults", json={})
    httpx.put(f"{base}/__admin/limits", json={"rate_per_min": 100000, "max_concurrent": 50})
    yield
    httpx.put(f"{base}/__admin/faults", json={})


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[httpx.Client]:
    yield from bearer_client(base)


@pytest.fixture(autouse=True)
def quiet(base: str) -> Iterator[None]:
    """Every test starts without faults and with generous limits."""
    yield from quiet_sandbox(base)


def read_all(
    client: httpx.Client, url: str, page: int, params: dict | None = None, between: Any = None
) -> list[dict]:
    out: list[dict] = []
    resp = client.get(url, params=params, headers={"Prefer": f"odata.maxpagesize={page}"})
    while True:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["value"]) <= page
        out.extend(body["value"])
        link = body.get("@odata.nextLink")
        if not link:
            return out
        assert "$skiptoken=" in link
        if between is not None:
            between(len(out))
        resp = client.get(link, headers={"Prefer": f"odata.maxpagesize={page}"})


def new_invoice(
    client: httpx.Client,
    customer: str = "C00002",
    ext: str | None = None,
    lines: list[dict] | None = None,
) -> httpx.Response:
    return client.post(
        f"{API}/salesInvoices",
        json={
            "customerNumber": customer,
            "externalDocumentNumber": ext or f"PSA-{uuid.uuid4().hex[:10]}",
            "invoiceDate": "2026-11-02",
            "salesInvoiceLines": lines
            if lines is not None
            else [
                {
                    "lineType": "Item",
                    "description": "Consulting",
                    "quantity": 2,
                    "unitPrice": 150.0,
                    "taxCode": "STD",
                }
            ],
        },
    )


# --------------------------------------------------------------------------- auth


def test_token_and_auth_failures_in_vendor_format(base: str) -> None:
    ok = get_token(base)
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] > 0

    bad = get_token(base, secret="wrong")
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_client"
    assert bad.json()["error_description"].startswith("AADSTS7000215")

    scope = httpx.post(
        f"{base}/sandbox/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erpsync-sandbox",
            "client_secret": "sandbox-erp-secret",
            "scope": "https://graph.microsoft.com/x",
        },
    )
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"

    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer " + ok.json()["access_token"][:-4] + "AAAA"},
    ):
        resp = httpx.get(f"{base}{API}/customers", headers=headers)
        assert resp.status_code == 401
        err = resp.json()["error"]
        assert err["code"] == "Authentication_InvalidCredentials"
        assert err["message"].startswith("The server has rejected the client credentials.")
        assert "CorrelationId:" in err["message"]


def test_unknown_company_entity_and_record(client: httpx.Client) -> None:
    other = "/v2.0/sandbox/production/api/v2.0/companies(00000000-0000-0000-0000-000000000009)"
    resp = client.get(f"{other}/customers")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "BadRequest_ResourceNotFound"
    resp = client.get(f"{API}/widgets")
    assert resp.status_code == 404
    assert "'widgets'" in resp.json()["error"]["message"]
    resp = client.get(f"{API}/customers({uuid.uuid4()})")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "Internal_RecordNotFound"
    companies = client.get("/v2.0/sandbox/production/api/v2.0/companies").json()
    assert [c["id"] for c in companies["value"]] == [COMPANY]
    # BC also accepts the tenant-less form /v2.0/{environment}/api/v2.0 (tenant from token).
    assert (
        client.get(f"/v2.0/production/api/v2.0/companies({COMPANY})/customers").status_code == 200
    )


# --------------------------------------------------------------------------- paging


def test_paging_returns_every_record_exactly_once(client: httpx.Client) -> None:
    first = client.get(f"{API}/customers", headers={"Prefer": "odata.maxpagesize=7"})
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=7"
    assert first.json()["@odata.context"].endswith(f"$metadata#companies({COMPANY})/customers")
    rows = read_all(client, f"{API}/customers", 7)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) >= N_CUSTOMERS
    assert all(
        r["@odata.etag"].startswith('W/"JzE') or r["@odata.etag"].startswith('W/"JzI') for r in rows
    )
    # default page: everything in one page, no nextLink
    one = client.get(f"{API}/customers").json()
    assert "@odata.nextLink" not in one and len(one["value"]) == len(ids)


def test_paging_exactly_once_while_records_change(
    client: httpx.Client, base: str, erp: tuple[str, SandboxContext]
) -> None:
    store = erp[1].stores["erp"]
    before = {r["id"] for r in client.get(f"{API}/customers").json()["value"]}
    # the fault touches random records after every page; we also patch and insert between pages
    httpx.put(
        f"{base}/__admin/faults",
        json={"seed": 7, "mutate_during_paging_rate": 1.0, "mutate_count": 5},
    )

    def between(n_read: int) -> None:
        all_ids = sorted(before)
        for rid in (all_ids[0], all_ids[-1], all_ids[n_read % len(all_ids)]):
            store.update(
                "customers",
                rid,
                {"displayName": f"changed at {n_read}"},
                stamp_field="lastModifiedDateTime",
            )

    rows = read_all(client, f"{API}/customers", 9, between=between)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a record was returned twice"
    assert before <= set(ids), "a record was skipped"
    assert httpx.get(f"{base}/__admin/faults").json()["stats"]["injected"].get("mutate", 0) > 0


def test_top_skip_select_orderby(client: httpx.Client) -> None:
    top = client.get(f"{API}/customers", params={"$top": "5"}).json()
    assert len(top["value"]) == 5 and "@odata.nextLink" not in top
    paged = read_all(client, f"{API}/customers", 4, params={"$top": "10"})
    assert len(paged) == 10 and len({r["id"] for r in paged}) == 10
    skipped = client.get(f"{API}/customers", params={"$skip": "55"}).json()["value"]
    assert len(skipped) == len(client.get(f"{API}/customers").json()["value"]) - 55
    sel = client.get(f"{API}/customers", params={"$select": "number,displayName", "$top": "2"})
    assert set(sel.json()["value"][0]) == {"@odata.etag", "number", "displayName"}
    ordered = read_all(client, f"{API}/customers", 8, params={"$orderby": "number desc"})
    numbers = [r["number"] for r in ordered]
    assert numbers == sorted(numbers, reverse=True) and len(numbers) == len(set(numbers))
    bad = client.get(f"{API}/customers", params={"$select": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadRequest"


# --------------------------------------------------------------------------- $filter


def test_filter_semantics(client: httpx.Client, erp: tuple[str, SandboxContext]) -> None:
    store = erp[1].stores["erp"]
    everything = client.get(f"{API}/customers").json()["value"]
    watermark = max(r["lastModifiedDateTime"] for r in everything)
    changed = everything[3]["id"]
    time.sleep(0.002)
    store.update("customers", changed, {"city": "Paris"}, stamp_field="lastModifiedDateTime")
    gt = client.get(f"{API}/customers", params={"$filter": f"lastModifiedDateTime gt {watermark}"})
    assert gt.status_code == 200, gt.text
    assert [r["id"] for r in gt.json()["value"]] == [changed]
    ge = client.get(f"{API}/customers", params={"$filter": f"lastModifiedDateTime ge {watermark}"})
    assert len(ge.json()["value"]) == 2  # the record stamped exactly at the watermark too
    lt = client.get(f"{API}/customers", params={"$filter": f"lastModifiedDateTime lt {watermark}"})
    assert len(lt.json()["value"]) == len(everything) - 2

    by_number = client.get(f"{API}/customers", params={"$filter": "number eq 'C00010'"})
    assert [r["number"] for r in by_number.json()["value"]] == ["C00010"]
    combo = client.get(
        f"{API}/customers",
        params={"$filter": "(number eq 'C00010' or number eq 'C00011') and country ne 'XX'"},
    )
    assert sorted(r["number"] for r in combo.json()["value"]) == ["C00010", "C00011"]
    guid = client.get(f"{API}/customers", params={"$filter": f"id eq {uuid.UUID(int=5)}"})
    assert [r["number"] for r in guid.json()["value"]] == ["C00005"]
    boolean = client.get(f"{API}/customers", params={"$filter": "taxLiable eq false"})
    assert {r["taxLiable"] for r in boolean.json()["value"]} == {False}
    quote = client.get(f"{API}/customers", params={"$filter": "displayName eq 'O''Brien'"})
    assert quote.status_code == 200 and quote.json()["value"] == []

    ext = f"EXT-{uuid.uuid4().hex[:8]}"
    assert new_invoice(client, ext=ext).status_code == 201
    found = client.get(
        f"{API}/salesInvoices", params={"$filter": f"externalDocumentNumber eq '{ext}'"}
    ).json()
    assert len(found["value"]) == 1 and found["value"][0]["externalDocumentNumber"] == ext

    for bad in ("number eq", "number eq 5", "nope eq 'x'", "number eq 'x' and", "(number eq 'x'"):
        resp = client.get(f"{API}/customers", params={"$filter": bad})
        assert resp.status_code == 400, bad
        assert resp.json()["error"]["code"] == "BadRequest"


# --------------------------------------------------------------------------- writes and ETags


def test_etag_if_match_and_conflict(client: httpx.Client) -> None:
    created = client.post(f"{API}/customers", json={"displayName": "Etag GmbH", "country": "DE"})
    assert created.status_code == 201, created.text
    cust = created.json()
    assert cust["number"].startswith("C") and cust["blocked"] == " "
    assert created.headers["ETag"] == cust["@odata.etag"]
    url = f"{API}/customers({cust['id']})"

    missing = client.patch(url, json={"city": "Hamburg"})
    assert missing.status_code == 428

    ok = client.patch(url, json={"city": "Hamburg"}, headers={"If-Match": cust["@odata.etag"]})
    assert ok.status_code == 200 and ok.json()["city"] == "Hamburg"
    assert ok.json()["@odata.etag"] != cust["@odata.etag"]
    assert ok.json()["lastModifiedDateTime"] > cust["lastModifiedDateTime"]

    stale = client.patch(url, json={"city": "Bremen"}, headers={"If-Match": cust["@odata.etag"]})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "Request_EntityChanged"
    assert stale.json()["error"]["message"].startswith("Could not save the changes because")

    stale_delete = client.delete(url, headers={"If-Match": cust["@odata.etag"]})
    assert stale_delete.status_code == 409
    gone = client.delete(url, headers={"If-Match": ok.json()["@odata.etag"]})
    assert gone.status_code == 204
    assert client.get(url).status_code == 404

    unknown = client.post(f"{API}/customers", json={"displayName": "x", "colour": "red"})
    assert unknown.status_code == 400 and "colour" in unknown.json()["error"]["message"]


def test_invoice_draft_then_post(client: httpx.Client) -> None:
    # C00002 is EUR in DE (19 %): 2 x 150.00 = 300.00, tax 57.00
    created = new_invoice(
        client,
        lines=[
            {"description": "Consulting", "quantity": 2, "unitPrice": 150.0, "taxCode": "STD"},
            {"description": "Travel", "quantity": 1.5, "unitPrice": 33.33, "taxCode": "STD"},
        ],
    )
    assert created.status_code == 201, created.text
    inv = created.json()
    assert inv["status"] == "Draft" and inv["number"].startswith("S-INV-")
    # line 2: 1.5 x 33.33 = 49.995 -> 50.00 (HALF_UP); tax 9.50
    assert Decimal(str(inv["totalAmountExcludingTax"])) == Decimal("350.00")
    assert Decimal(str(inv["totalTaxAmount"])) == Decimal("66.50")
    assert Decimal(str(inv["totalAmountIncludingTax"])) == Decimal("416.50")
    assert [ln["sequence"] for ln in inv["salesInvoiceLines"]] == [10000, 20000]
    url = f"{API}/salesInvoices({inv['id']})"

    added = client.post(
        f"{url}/salesInvoiceLines",
        json={"description": "Extra", "quantity": 1, "unitPrice": 10, "taxCode": "STD"},
    )
    assert added.status_code == 201 and added.json()["sequence"] == 30000
    draft = client.get(url, params={"$expand": "salesInvoiceLines"}).json()
    assert len(draft["salesInvoiceLines"]) == 3
    assert Decimal(str(draft["totalAmountIncludingTax"])) == Decimal("428.40")

    posted = client.post(f"{url}/Microsoft.NAV.post")
    assert posted.status_code == 204 and posted.content == b""
    after = client.get(url).json()
    assert after["status"] == "Open"
    assert after["number"] == "PSI-000123"  # continues the generated posted series
    assert after["lastModifiedDateTime"] > draft["lastModifiedDateTime"]
    assert Decimal(str(after["remainingAmount"])) == Decimal("428.40")

    patch = client.patch(
        url, json={"externalDocumentNumber": "X"}, headers={"If-Match": after["@odata.etag"]}
    )
    assert patch.status_code == 400
    assert patch.json()["error"]["code"] == "Application_DialogException"
    again = client.post(f"{url}/Microsoft.NAV.post")
    assert again.status_code == 400

    memo = client.post(f"{url}/Microsoft.NAV.cancel")
    assert memo.status_code == 204
    assert client.get(url).json()["status"] == "Canceled"
    memos = client.get(
        f"{API}/salesCreditMemos", params={"$filter": f"invoiceId eq {inv['id']}"}
    ).json()["value"]
    assert len(memos) == 1 and memos[0]["status"] == "Open"


def test_a_credit_memo_with_its_own_lines_references_a_posted_invoice(
    client: httpx.Client,
) -> None:
    """POST salesCreditMemos + POST salesCreditMemos({id})/salesCreditMemoLines, as documented
    (api/dynamics_salescreditmemo_create, dynamics_salescreditmemoline_create); ``invoiceId``
    must be a posted invoice and ``invoiceNumber`` must match it (APIV2SalesCreditMemos.Page.al
    InvoiceIdDoesNotMatchAnInvoiceErr / InvoiceValuesDontMatchErr)."""
    draft = new_invoice(
        client,
        lines=[{"description": "Consulting", "quantity": 2, "unitPrice": 150.0, "taxCode": "STD"}],
    ).json()
    header = {"customerNumber": "C00002", "externalDocumentNumber": "CRN-1"}
    refused = client.post(f"{API}/salesCreditMemos", json={**header, "invoiceId": draft["id"]})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith(
        'The "invoiceId" does not match to an Invoice.'
    )
    url = f"{API}/salesInvoices({draft['id']})"
    assert client.post(f"{url}/Microsoft.NAV.post").status_code == 204
    posted = client.get(url).json()
    mismatch = client.post(
        f"{API}/salesCreditMemos",
        json={**header, "invoiceId": posted["id"], "invoiceNumber": "PSI-1"},
    )
    assert mismatch.status_code == 400 and "do not match" in mismatch.json()["error"]["message"]

    created = client.post(
        f"{API}/salesCreditMemos",
        json={**header, "invoiceId": posted["id"], "creditMemoDate": "2026-11-20"},
    )
    assert created.status_code == 201, created.text
    memo = created.json()
    assert memo["status"] == "Draft" and memo["invoiceNumber"] == posted["number"]
    line = client.post(
        f"{API}/salesCreditMemos({memo['id']})/salesCreditMemoLines",
        json={
            "sequence": 10000,
            "lineType": "Account",
            "lineObjectNumber": "8000",
            "description": "Credit: part of Consulting",
            "quantity": 1,
            "unitPrice": 100.0,
            "taxCode": "STD",
        },
    )
    assert line.status_code == 201, line.text
    memo_url = f"{API}/salesCreditMemos({memo['id']})"
    again = client.get(memo_url).json()
    assert Decimal(str(again["totalAmountExcludingTax"])) == Decimal("100.00")
    assert Decimal(str(again["totalTaxAmount"])) == Decimal("19.00")
    assert client.post(f"{memo_url}/Microsoft.NAV.post").status_code == 204
    assert client.get(memo_url).json()["status"] == "Open"
    invoice = client.get(url).json()
    assert invoice["status"] == "Open"  # partly credited
    assert Decimal(str(invoice["remainingAmount"])) == Decimal("357.00") - Decimal("119.00")


@pytest.mark.parametrize(
    ("customer", "qty", "price", "excl", "tax"),
    [
        ("C00003", 3, 333.5, "1001", "190"),  # JPY, DE 19 %: 1000.5 -> 1001; tax 190.19 -> 190
        ("C00004", 1, 12.3456, "12.346", "2.469"),  # KWD (3 decimals), FR 20 %
        ("C00007", 2, 10.005, "20.01", "4.00"),  # USD, FR 20 %: tax 4.002 -> 4.00
    ],
)
def test_invoice_rounding_per_currency(
    client: httpx.Client, customer: str, qty: float, price: float, excl: str, tax: str
) -> None:
    resp = new_invoice(
        client,
        customer,
        lines=[{"description": "x", "quantity": qty, "unitPrice": price, "taxCode": "STD"}],
    )
    assert resp.status_code == 201, resp.text
    inv = resp.json()
    assert Decimal(str(inv["totalAmountExcludingTax"])) == Decimal(excl)
    assert Decimal(str(inv["totalTaxAmount"])) == Decimal(tax)


def test_invoice_validation(client: httpx.Client) -> None:
    resp = client.post(f"{API}/salesInvoices", json={"externalDocumentNumber": "NOCUST"})
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "code": "Application_DialogException",
        "message": resp.json()["error"]["message"],
    }
    assert resp.json()["error"]["message"].startswith(
        "A customerNumber or a customerID must be provided."
    )
    blocked = new_invoice(client, "C00060")
    assert blocked.status_code == 400 and "blocked" in blocked.json()["error"]["message"]
    bad_tax = new_invoice(client, lines=[{"quantity": 1, "unitPrice": 1, "taxCode": "NOPE"}])
    assert bad_tax.status_code == 400
    assert bad_tax.json()["error"]["code"] == "Internal_InvalidTableRelation"
    empty = new_invoice(client, lines=[]).json()
    nothing = client.post(f"{API}/salesInvoices({empty['id']})/Microsoft.NAV.post")
    assert nothing.status_code == 400 and "nothing to post" in nothing.json()["error"]["message"]


def test_no_idempotency_double_post_creates_two(client: httpx.Client) -> None:
    ext = f"DUP-{uuid.uuid4().hex[:8]}"
    first, second = new_invoice(client, ext=ext), new_invoice(client, ext=ext)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    found = client.get(
        f"{API}/salesInvoices", params={"$filter": f"externalDocumentNumber eq '{ext}'"}
    ).json()["value"]
    assert len(found) == 2


def test_drop_after_commit_leaves_invoice_created(client: httpx.Client, base: str) -> None:
    httpx.put(
        f"{base}/__admin/faults",
        json={"drop_after_commit_rate": 1.0, "drop_path_contains": "salesInvoices"},
    )
    ext = f"DROP-{uuid.uuid4().hex[:8]}"
    with pytest.raises(httpx.TransportError):
        new_invoice(client, ext=ext)
    httpx.put(f"{base}/__admin/faults", json={})
    found = client.get(
        f"{API}/salesInvoices", params={"$filter": f"externalDocumentNumber eq '{ext}'"}
    ).json()["value"]
    assert len(found) == 1 and found[0]["status"] == "Draft"


# --------------------------------------------------------------------------- limits


def test_429_from_rate_limit(client: httpx.Client, base: str) -> None:
    httpx.put(
        f"{base}/__admin/limits", json={"rate_per_min": 5, "max_concurrent": 5, "retry_after": 7}
    )
    statuses = [client.get(f"{API}/taxGroups") for _ in range(7)]
    assert [r.status_code for r in statuses[:5]] == [200] * 5
    limited = statuses[5]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "Application_TooManyRequests"
    assert limited.headers["Retry-After"] == "7"
    # admin and token endpoints are not throttled
    assert httpx.get(f"{base}/__admin/health").status_code == 200


def test_429_from_concurrency_limit(client: httpx.Client, base: str) -> None:
    httpx.put(
        f"{base}/__admin/limits", json={"rate_per_min": 1000, "max_concurrent": 2, "queue": 1}
    )
    httpx.put(f"{base}/__admin/faults", json={"latency_ms": 400})
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: client.get(f"{API}/taxGroups"), range(6)))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 3  # 2 executing + 1 queued
    assert codes.count(429) == 3
    rejected = next(r for r in results if r.status_code == 429)
    assert rejected.json()["error"]["code"] == "Application_TooManyRequests"
    assert "Retry-After" not in rejected.headers


def test_fault_5xx_in_bc_format(client: httpx.Client, base: str) -> None:
    httpx.put(f"{base}/__admin/faults", json={"error_rate_5xx": 1.0, "error_statuses": [503]})
    resp = client.get(f"{API}/taxGroups")
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "Internal_ServiceUnavailable"


# --------------------------------------------------------------------------- documentation


def test_openapi_and_metadata(client: httpx.Client, base: str) -> None:
    spec = httpx.get(f"{base}/openapi.json").json()
    paths = spec["paths"]
    assert "/{tenant}/oauth2/v2.0/token" in paths
    inv = paths["/v2.0/{tenant}/{environment}/api/v2.0/companies({company_id})/salesInvoices"]
    assert inv["post"]["tags"] == ["salesInvoices"] and inv["post"]["summary"]
    assert not [p for p in paths if "erpsync/finance" in p], "no invented custom API"
    assert "/v2.0/{tenant}/{environment}/ODataV4/Company({company})/VATPostingSetup" in paths
    assert httpx.get(f"{base}/docs").status_code == 200
    meta = client.get("/v2.0/sandbox/production/api/v2.0/$metadata")
    assert meta.status_code == 200 and b'EntityType Name="salesInvoice"' in meta.content
    assert b'EntitySet Name="paymentTerms"' in meta.content
    assert b'EntitySet Name="taxAreas"' in meta.content
    assert b'EntitySet Name="accounts"' in meta.content
    assert b'EntitySet Name="unitsOfMeasure"' in meta.content


def test_drop_after_commit_on_the_post_action_leaves_the_invoice_posted(
    client: httpx.Client, base: str
) -> None:
    ext = f"DROPPOST-{uuid.uuid4().hex[:8]}"
    invoice = new_invoice(client, ext=ext).json()
    httpx.put(
        f"{base}/__admin/faults",
        json={"drop_after_commit_rate": 1.0, "drop_path_contains": "Microsoft.NAV.post"},
    )
    # the post commits, but its bodiless 204 never arrives complete: the client sees a drop
    with pytest.raises(httpx.TransportError):
        client.post(f"{API}/salesInvoices({invoice['id']})/Microsoft.NAV.post")
    httpx.put(f"{base}/__admin/faults", json={})
    found = client.get(
        f"{API}/salesInvoices", params={"$filter": f"externalDocumentNumber eq '{ext}'"}
    ).json()["value"]
    assert len(found) == 1 and found[0]["status"] == "Open"


# --------------------------------------------------------------------------- strict contract
# Business Central refuses what the entity type lacks and what the API page marks read-only:
# https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/dynamics-error-codes


def test_customer_has_no_payment_terms_code_only_payment_terms_id(client: httpx.Client) -> None:
    """B5: ``paymentTermsCode`` is not a customer property; ``paymentTermsId`` is."""
    resp = client.post(
        f"{API}/customers", json={"displayName": "Terms Ltd", "paymentTermsCode": "30 DAYS"}
    )
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "BadRequest"
    assert err["message"].startswith(
        "The property 'paymentTermsCode' does not exist on type 'Microsoft.NAV.customer'."
        " Make sure to only use property names that are defined by the type."
    )
    terms = client.get(f"{API}/paymentTerms", params={"$filter": "code eq '30 DAYS'"}).json()
    assert [t["id"] for t in terms["value"]] == [TERMS_30]
    ok = client.post(
        f"{API}/customers",
        json={"displayName": "Terms Ltd", "paymentTermsId": TERMS_30, "taxAreaId": AREAS["FR"]},
    )
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert body["paymentTermsId"] == TERMS_30
    assert body["taxAreaId"] == AREAS["FR"] and body["taxAreaDisplayName"] == "FR"
    assert "paymentTermsCode" not in body
    unknown = client.post(
        f"{API}/customers", json={"displayName": "X", "paymentTermsId": str(uuid.UUID(int=9))}
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "Internal_RecordNotFound"


def test_read_only_properties_are_refused(client: httpx.Client) -> None:
    """B6: employee ``displayName`` is computed (Editable = false on APIV2Employees)."""
    resp = client.post(
        f"{API}/employees",
        json={"givenName": "Ada", "surname": "Lovelace", "displayName": "Ada Lovelace"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "BadRequest_InvalidOperation"
    assert "'displayName' is read-only" in resp.json()["error"]["message"]
    made = client.post(f"{API}/employees", json={"givenName": "Ada", "surname": "Lovelace"})
    assert made.status_code == 201 and made.json()["displayName"] == "Ada Lovelace"
    row = made.json()
    renamed = client.patch(
        f"{API}/employees({row['id']})",
        json={"surname": "King"},
        headers={"If-Match": row["@odata.etag"]},
    )
    assert renamed.status_code == 200 and renamed.json()["displayName"] == "Ada King"
    cust = client.get(f"{API}/customers", params={"$top": 1}).json()["value"][0]
    balance = client.patch(
        f"{API}/customers({cust['id']})",
        json={"balanceDue": 0},
        headers={"If-Match": cust["@odata.etag"]},
    )
    assert balance.status_code == 400
    assert balance.json()["error"]["code"] == "BadRequest_InvalidOperation"


def test_unknown_query_options_and_filter_properties_are_refused(client: httpx.Client) -> None:
    bad_option = client.get(f"{API}/customers", params={"$search": "x"})
    assert bad_option.status_code == 400
    assert bad_option.json()["error"]["code"] == "BadRequest"
    bad_filter = client.get(f"{API}/customers", params={"$filter": "paymentTermsCode eq '30'"})
    assert bad_filter.status_code == 400
    gone = client.get(
        f"/v2.0/sandbox/production/api/erpsync/finance/v1.0/companies({COMPANY})/taxRates"
    )
    assert gone.status_code == 404, "the invented taxRates custom API does not exist"


def test_tax_areas_set_the_vat_business_posting_group(client: httpx.Client) -> None:
    """taxAreaId selects the VAT Posting Setup row an invoice line is taxed with."""
    areas = client.get(f"{API}/taxAreas").json()["value"]
    assert {a["code"] for a in areas} == {"DE", "FR"}
    cust = client.get(f"{API}/customers", params={"$filter": "number eq 'C00005'"}).json()
    row = cust["value"][0]
    assert row["taxAreaId"] == AREAS["DE"]  # 19 %
    moved = client.patch(
        f"{API}/customers({row['id']})",
        json={"taxAreaId": AREAS["FR"]},
        headers={"If-Match": row["@odata.etag"]},
    )
    assert moved.status_code == 200 and moved.json()["taxAreaDisplayName"] == "FR"
    inv = new_invoice(
        client,
        "C00005",
        lines=[{"description": "x", "quantity": 1, "unitPrice": 100, "taxCode": "STD"}],
    ).json()
    assert Decimal(str(inv["totalTaxAmount"])) == Decimal("20.00")


def test_vat_posting_setup_odata_web_service(client: httpx.Client) -> None:
    """Page 472 published as web service VATPostingSetup, addressed by company name."""
    url = "/v2.0/sandbox/production/ODataV4/Company('erpsync Sandbox Firm')/VATPostingSetup"
    rows = client.get(url).json()
    assert rows["@odata.context"].endswith("/VATPostingSetup")
    got = {
        (r["VAT_Bus_Posting_Group"], r["VAT_Prod_Posting_Group"]): r["VAT_Percent"]
        for r in rows["value"]
    }
    assert got == {("DE", "STD"): 19, ("FR", "STD"): 20, ("DOMESTIC", "STD"): 10}
    one = client.get(url, params={"$filter": "VAT_Bus_Posting_Group eq 'FR'"}).json()["value"]
    assert [r["VAT_Percent"] for r in one] == [20]
    assert client.get(url, params={"$filter": "ratePercent eq 1"}).status_code == 400
    other = client.get("/v2.0/sandbox/production/ODataV4/Company('Nope')/VATPostingSetup")
    assert other.status_code == 404


def test_undocumented_uses_are_noted_in_the_contract_log(
    client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refusal above (and an ignored custom query option) is recorded for the suite-wide
    contract check, as is a request to the retired custom API."""
    from erpsync_sandbox import contract

    log = tmp_path / "contract.jsonl"
    monkeypatch.setenv(contract.CONTRACT_LOG_ENV, str(log))
    client.post(f"{API}/customers", json={"displayName": "X", "paymentTermsCode": "30 DAYS"})
    client.post(f"{API}/employees", json={"givenName": "A", "displayName": "A"})
    client.get(f"{API}/customers", params={"$search": "x"})
    client.get(f"{API}/customers", params={"$filter": "paymentTermsCode eq '30'"})
    client.get(f"{API}/taxGroups", params={"updated_since": "2026-01-01"})
    client.get(f"/v2.0/sandbox/production/api/erpsync/finance/v1.0/companies({COMPANY})/taxRates")
    client.get(f"{API}/customers", params={"$top": 1})  # documented: no note
    notes = [r["undocumented"] for r in contract.read_log(log)]
    assert len(notes) == 7 and notes[-1] == []
    flat = [n for ns in notes[:-1] for n in ns]
    assert len(flat) == 6, flat
    assert "customers: unknown property paymentTermsCode" in flat
    assert "employees: read-only property displayName" in flat
    assert "query option $search" in flat
    assert "query parameter updated_since (ignored)" in flat
    assert flat[3].startswith("customers: ") and "paymentTermsCode" in flat[3]
    assert any(n.startswith("no such route: GET ") and "taxRates" in n for n in flat)


# --------------------------------------------------------------------------- accounts, units
# https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_account
# https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_unitofmeasure

ACCOUNT_PROPERTIES = {
    "id",
    "number",
    "displayName",
    "category",
    "subCategory",
    "blocked",
    "accountType",
    "directPosting",
    "netChange",
    "consolidationTranslationMethod",
    "consolidationDebitAccount",
    "consolidationCreditAccount",
    "excludeFromConsolidation",
    "lastModifiedDateTime",
}


def test_accounts_are_read_only_with_the_documented_properties(client: httpx.Client) -> None:
    found = client.get(f"{API}/accounts", params={"$filter": "number eq '8000'"}).json()["value"]
    assert len(found) == 1
    account = found[0]
    assert set(account) - {"@odata.etag"} == ACCOUNT_PROPERTIES
    assert (account["accountType"], account["directPosting"], account["blocked"]) == (
        "Posting",
        True,
        False,
    )
    one = client.get(f"{API}/accounts({account['id']})")
    assert one.status_code == 200 and one.json()["number"] == "8000"
    blocked = client.get(f"{API}/accounts", params={"$filter": "blocked eq true"}).json()
    assert [a["number"] for a in blocked["value"]] == ["8090"]
    # APIV2Accounts.Page.al: InsertAllowed/ModifyAllowed/DeleteAllowed = false
    created = client.post(f"{API}/accounts", json={"number": "8001", "displayName": "New"})
    assert created.status_code == 405
    assert created.json()["error"]["code"] == "BadRequest_MethodNotAllowed"
    changed = client.patch(
        f"{API}/accounts({account['id']})", json={"blocked": True}, headers={"If-Match": "*"}
    )
    assert changed.status_code == 405
    assert client.get(f"{API}/accounts", params={"$filter": "code eq '8000'"}).status_code == 400


def test_units_of_measure_as_documented(client: httpx.Client) -> None:
    units = client.get(f"{API}/unitsOfMeasure").json()["value"]
    assert [u["code"] for u in units] == ["HOUR"]
    assert set(units[0]) - {"@odata.etag"} == {
        "id",
        "code",
        "displayName",
        "internationalStandardCode",
        "symbol",
        "lastModifiedDateTime",
    }
    # dynamics_unitofmeasure_create/update/delete; Code[10] is stored in upper case
    made = client.post(
        f"{API}/unitsOfMeasure", json={"code": "day", "displayName": "Day", "symbol": "d"}
    )
    assert made.status_code == 201, made.text
    day = made.json()
    assert day["code"] == "DAY" and day["displayName"] == "Day"
    again = client.post(f"{API}/unitsOfMeasure", json={"code": "DAY"})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "Internal_EntityWithSameKeyExists"
    assert "Code='DAY'" in again.json()["error"]["message"]
    too_long = client.post(f"{API}/unitsOfMeasure", json={"code": "ELEVENCHARS"})
    assert too_long.json()["error"]["code"] == "Application_StringExceededLength"
    renamed = client.patch(
        f"{API}/unitsOfMeasure({day['id']})",
        json={"displayName": "Working day", "internationalStandardCode": "day"},
        headers={"If-Match": day["@odata.etag"]},
    )
    assert renamed.status_code == 200
    assert renamed.json()["internationalStandardCode"] == "DAY"
    read_only = client.post(f"{API}/unitsOfMeasure", json={"code": "X", "id": HOUR})
    assert read_only.json()["error"]["code"] == "BadRequest_InvalidOperation"
    gone = client.delete(
        f"{API}/unitsOfMeasure({day['id']})", headers={"If-Match": renamed.json()["@odata.etag"]}
    )
    assert gone.status_code == 204
    assert [u["code"] for u in client.get(f"{API}/unitsOfMeasure").json()["value"]] == ["HOUR"]


def account_line(number: str = "8000", **more: Any) -> dict[str, Any]:
    return {
        "lineType": "Account",
        "lineObjectNumber": number,
        "description": "Consulting",
        "quantity": 2,
        "unitPrice": 100,
        "taxCode": "STD",
        **more,
    }


def test_account_lines_resolve_the_account_and_the_unit(client: httpx.Client) -> None:
    inv = new_invoice(client, lines=[account_line(unitOfMeasureCode="hour")])
    assert inv.status_code == 201, inv.text
    (line,) = inv.json()["salesInvoiceLines"]
    assert line["lineObjectNumber"] == "8000" and line["accountId"] == ACCOUNTS["8000"][0]
    assert line["unitOfMeasureCode"] == "HOUR" and line["unitOfMeasureId"] == HOUR
    by_id = new_invoice(
        client,
        lines=[
            {
                "accountId": ACCOUNTS["8000"][0],
                "unitOfMeasureId": HOUR,
                "quantity": 1,
                "unitPrice": 5,
                "taxCode": "STD",
            }
        ],
    )
    assert by_id.status_code == 201, by_id.text
    (line,) = by_id.json()["salesInvoiceLines"]
    assert (line["lineType"], line["lineObjectNumber"], line["unitOfMeasureCode"]) == (
        "Account",
        "8000",
        "HOUR",
    )
    plain = new_invoice(client, lines=[account_line()]).json()["salesInvoiceLines"][0]
    assert plain["unitOfMeasureCode"] == "" and plain["unitOfMeasureId"] == ZERO


ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("line", "code", "message"),
    [
        (account_line("9999"), "Application_DialogException", "Account does not exist."),
        (
            account_line("8090"),
            "Application_FieldValidationException",
            "Blocked must be equal to 'No'  in G/L Account: No.=8090. Current value is 'Yes'.",
        ),
        (
            account_line("7999"),
            "Application_FieldValidationException",
            "Account Type must be equal to 'Posting'  in G/L Account: No.=7999. Current value"
            " is 'Heading'.",
        ),
        (
            account_line("1300"),
            "Application_FieldValidationException",
            "Direct Posting must be equal to 'Yes'  in G/L Account: No.=1300. Current value is"
            " 'No'.",
        ),
        (
            account_line(unitOfMeasureCode="HOURS"),
            "Internal_InvalidTableRelation",
            "The field Unit of Measure Code of table Sales Invoice Line Aggregate contains a"
            " value (HOURS) that cannot be found in the related table (Unit of Measure).",
        ),
        (
            {"accountId": str(uuid.UUID(int=99)), "quantity": 1, "unitPrice": 1},
            "Internal_InvalidTableRelation",
            "The field Account Id of table Sales Invoice Line Aggregate contains a value"
            f" ({uuid.UUID(int=99)}) that cannot be found in the related table (G/L Account).",
        ),
    ],
)
def test_lines_naming_a_missing_or_unusable_account_or_unit_are_refused(
    client: httpx.Client, line: dict[str, Any], code: str, message: str
) -> None:
    """APIV2SalesInvoiceLines.Page.al (AccountDoesNotExistErr), the Sales Line's
    CopyFromGLAccount (GLAccount.CheckGLAcc, TestField Direct Posting) and the line table's
    Unit of Measure relation; nothing is created."""
    ext = f"BADLINE-{uuid.uuid4().hex[:8]}"
    resp = new_invoice(client, ext=ext, lines=[line])
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert error["message"].split("  CorrelationId:")[0] == message
    found = client.get(
        f"{API}/salesInvoices", params={"$filter": f"externalDocumentNumber eq '{ext}'"}
    ).json()["value"]
    assert found == []
    draft = new_invoice(client).json()
    added = client.post(f"{API}/salesInvoices({draft['id']})/salesInvoiceLines", json=line)
    assert added.status_code == 400 and added.json()["error"]["code"] == code


def test_an_account_line_keeps_its_account_and_posting_rechecks_it(
    client: httpx.Client, erp: tuple[str, SandboxContext]
) -> None:
    inv = new_invoice(client, lines=[account_line()]).json()
    line = inv["salesInvoiceLines"][0]
    url = f"{API}/salesInvoices({inv['id']})"
    moved = client.patch(
        f"{url}/salesInvoiceLines({line['id']})",
        json={"lineObjectNumber": "8090"},
        headers={"If-Match": line["@odata.etag"]},
    )
    assert moved.status_code == 400
    assert moved.json()["error"]["message"].startswith(
        'The value for "lineObjectNumber" cannot be modified.'
    )
    unit = client.patch(
        f"{url}/salesInvoiceLines({line['id']})",
        json={"unitOfMeasureCode": "DAYS"},
        headers={"If-Match": line["@odata.etag"]},
    )
    assert unit.json()["error"]["code"] == "Internal_InvalidTableRelation"
    store = erp[1].stores["erp"]
    aid = ACCOUNTS["8000"][0]
    account = store.get("accounts", aid)
    store.put("accounts", aid, {**account, "blocked": True})
    try:
        posted = client.post(f"{url}/Microsoft.NAV.post")
    finally:
        store.put("accounts", aid, account)
    assert posted.status_code == 400
    assert posted.json()["error"]["message"].startswith(
        "Blocked must be equal to 'No'  in G/L Account: No.=8000."
    )
    assert client.get(url).json()["status"] == "Draft"
    assert client.post(f"{url}/Microsoft.NAV.post").status_code == 204
