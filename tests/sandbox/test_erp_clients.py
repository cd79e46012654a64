"""Third-party Business Central clients against the ERP sandbox, unchanged but for URL and creds.

* ``msal`` (Microsoft's auth library) gets the Entra ID client-credentials token, with the
  sandbox as its authority. MSAL only accepts ``https`` authorities and validates unknown hosts
  against Microsoft's instance discovery, so this test serves the sandbox over TLS with a
  throw-away self-signed certificate (``verify=<cert>``) and passes ``instance_discovery=False``:
  the two settings any private or sovereign-cloud authority needs, not code changes.
* ``pybusinesscentral`` (a client generated from Microsoft's Business Central v2.0 OpenAPI spec)
  then lists companies and customers with ``$filter``/``$top``, creates a sales invoice with
  deep-inserted lines, reads it back and posts it with ``Microsoft.NAV.post``; its pydantic
  models validate every response body (types, max lengths, dates).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msal
import pytest
import uvicorn
from pybusinesscentral import ApiClient, Configuration
from pybusinesscentral.api.company_api import CompanyApi
from pybusinesscentral.api.customer_api import CustomerApi
from pybusinesscentral.api.sales_invoice_api import SalesInvoiceApi
from pybusinesscentral.exceptions import ApiException
from pybusinesscentral.models import PostSalesInvoiceRequest, SalesInvoiceLine

from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.erp.app import create_app
from tests.sandbox.tls import self_signed
from tests.support.servers import start_server

COMPANY = "5d115c9c-44e3-ea11-bb43-000d3a2feca1"
SCOPE = "https://api.businesscentral.dynamics.com/.default"


def seed(ctx: SandboxContext) -> None:
    """Three customers in Germany, a VAT group with 19 %, one posted invoice PSI-000122."""
    store = ctx.stores["erp"]
    store.meta_set("company_id", COMPANY)
    for n in (1, 2, 3):
        cid = str(uuid.UUID(int=n))
        store.put(
            "customers",
            cid,
            {
                "id": cid,
                "number": f"C{n:05d}",
                "displayName": f"Client {n}",
                "type": "Company",
                "country": "DE",
                "currencyCode": "EUR",
                "taxLiable": True,
                "blocked": " ",
            },
        )
    store.put(
        "taxGroups",
        "tg",
        {"id": str(uuid.UUID(int=99)), "code": "STD", "displayName": "VAT", "taxType": "VAT"},
    )
    store.put(  # customers without a VAT Bus. Posting Group: the blank row of VAT Posting Setup
        "vatPostingSetup",
        "|STD",
        {
            "VAT_Bus_Posting_Group": "",
            "VAT_Prod_Posting_Group": "STD",
            "Description": "",
            "Blocked": False,
            "VAT_Identifier": "VAT19",
            "VAT_Percent": 19,
            "VAT_Calculation_Type": "Normal VAT",
        },
        stamp_field=None,
    )
    posted = str(uuid.UUID(int=97))
    store.put(
        "salesInvoices",
        posted,
        {"id": posted, "number": "PSI-000122", "status": "Open", "customerNumber": "C00001"},
    )


@pytest.fixture(scope="module")
def tls_erp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = Path(tmp_path_factory.mktemp("erp-tls"))
    ctx = SandboxContext.open(tmp / "state")
    seed(ctx)
    cert, key = self_signed(tmp)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ctx),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    thread, port = start_server(server)
    yield f"https://127.0.0.1:{port}", str(cert)
    server.should_exit = True
    server.force_exit = True
    thread.join(5)
    ctx.close()


@pytest.fixture(autouse=True)
def no_env_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's ``verify``; this
    machine sets both, so drop them for the test and let ``verify=<cert>`` apply."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def msal_app(base: str, cert: str, secret: str = "sandbox-erp-secret") -> Any:  # noqa: S107
    return msal.ConfidentialClientApplication(
        "erpsync-sandbox",
        client_credential=secret,
        authority=f"{base}/sandbox",
        verify=cert,
        instance_discovery=False,
    )


def test_msal_client_credentials(tls_erp: tuple[str, str]) -> None:
    base, cert = tls_erp
    result = msal_app(base, cert).acquire_token_for_client(scopes=[SCOPE])
    assert result.get("token_type") == "Bearer", result
    assert result["access_token"].count(".") == 2
    bad = msal_app(base, cert, secret="wrong").acquire_token_for_client(scopes=[SCOPE])
    assert bad["error"] == "invalid_client"
    assert 7000215 in bad["error_codes"]


def test_pybusinesscentral_reads_creates_and_posts(tls_erp: tuple[str, str]) -> None:
    base, cert = tls_erp
    token = msal_app(base, cert).acquire_token_for_client(scopes=[SCOPE])["access_token"]
    conf = Configuration(
        host=f"{base}/v2.0/sandbox/production/api/v2.0", access_token=token, ssl_ca_cert=cert
    )
    with ApiClient(conf) as api:
        companies = CompanyApi(api).list_companies()
        assert [c.id for c in companies.value] == [COMPANY]

        customers = CustomerApi(api).list_customers(
            COMPANY, filter="number eq 'C00002' or number eq 'C00003'", top=10
        )
        assert sorted(c.number for c in customers.value) == ["C00002", "C00003"]
        assert all(isinstance(c.last_modified_date_time, dt.datetime) for c in customers.value)

        invoices = SalesInvoiceApi(api)
        created = invoices.post_sales_invoice(
            COMPANY,
            "application/json",
            PostSalesInvoiceRequest(
                customer_number="C00002",
                external_document_number="PYBC-1",
                invoice_date=dt.date(2026, 11, 2),
                sales_invoice_lines=[
                    SalesInvoiceLine(
                        description="Consulting", quantity=2, unit_price=150.0, tax_code="STD"
                    )
                ],
            ),
        )
        assert created.status == "Draft" and created.total_amount_including_tax == 357.0
        assert created.sales_invoice_lines and created.sales_invoice_lines[0].tax_percent == 19

        invoices.post_action_sales_invoices(COMPANY, created.id)
        posted = invoices.get_sales_invoice(COMPANY, created.id)
        assert posted.status == "Open" and posted.number == "PSI-000123"

        listed = invoices.list_sales_invoices(
            COMPANY, filter="externalDocumentNumber eq 'PYBC-1'", expand=["salesInvoiceLines"]
        )
        assert [i.id for i in listed.value] == [created.id]
        assert listed.value[0].sales_invoice_lines[0].amount_excluding_tax == 300

        with pytest.raises(ApiException) as err:
            CustomerApi(api).get_customer(COMPANY, "00000000-0000-0000-0000-00000000ffff")
        assert err.value.status == 404 and "Internal_RecordNotFound" in str(err.value.body)
