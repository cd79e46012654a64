"""Third-party client compatibility: ``simple-salesforce`` works against the sandbox CRM unchanged.

simple-salesforce always talks ``https://<instance>``, so the sandbox is served over TLS here
(uvicorn with a throw-away self-signed certificate for 127.0.0.1) and the client gets a
``requests.Session`` that trusts that certificate. Apart from that, the client only receives
what it would get from a real org: the ``instance_url`` and ``access_token`` of the sandbox's
OAuth token endpoint.
"""

# SOQL text is built from test constants here, not from untrusted input.
# ruff: noqa: S608
from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.crm.app import create_app
from erpsync_sandbox.crm.schema import salesforce_id
from erpsync_sandbox.store import format_stamp, to_iso
from tests.sandbox.tls import self_signed
from tests.support.servers import start_server

N_ACCOUNTS = 2300  # more than one 2000-record batch, so query_all has to follow the cursor
BASE = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)


def _seed(ctx: SandboxContext) -> None:
    rows = []
    for i in range(N_ACCOUNTS):
        rid = salesforce_id(f"0015g00000{i:05d}")
        ms = to_iso(BASE + dt.timedelta(minutes=i))
        sf = format_stamp(ms, "salesforce")
        body = {
            "Id": rid,
            "IsDeleted": False,
            "Name": f"Account {i}",
            "BillingCountry": "DE",
            "VAT_Id__c": f"DE{100000000 + i}",
            "Tax_Exempt__c": False,
            "Reverse_Charge__c": False,
            "PO_Required__c": False,
            "CreatedDate": sf,
            "LastModifiedDate": sf,
        }
        rows.append((rid, body, ms, None))
    ctx.stores["crm"].put_many("Account", rows)


class Served:
    def __init__(self, ctx: SandboxContext, url: str, cert: Path) -> None:
        self.ctx = ctx
        self.url = url
        self.cert = cert
        self.sessions: list[requests.Session] = []

    def session(self) -> requests.Session:
        s = requests.Session()
        self.sessions.append(s)
        s.trust_env = False  # REQUESTS_CA_BUNDLE in the env would override ``verify``
        s.verify = str(self.cert)
        return s

    def login(self) -> Salesforce:
        """What a connector does with a real org: OAuth token, then instance_url + session."""
        http = self.session()
        token = http.post(
            f"{self.url}/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "erpsync-sandbox",
                "client_secret": "sandbox-crm-secret",
            },
            timeout=10,
        )
        token.raise_for_status()
        body = token.json()
        return Salesforce(
            instance_url=body["instance_url"],
            session_id=body["access_token"],
            version="60.0",
            session=http,
        )


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.delenv("ERPSYNC_SANDBOX_FAULTS", raising=False)
    monkeypatch.delenv("ERPSYNC_SANDBOX_FAULTS_CRM", raising=False)
    monkeypatch.delenv("ERPSYNC_SANDBOX_CRM_DAILY_LIMIT", raising=False)
    cert, key = self_signed(tmp_path)
    ctx = SandboxContext.open(tmp_path / "state")
    _seed(ctx)
    config = uvicorn.Config(
        create_app(ctx),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread, port = start_server(server)
    served = Served(ctx, f"https://127.0.0.1:{port}", cert)
    try:
        yield served
    finally:
        for session in served.sessions:
            session.close()  # no idle keep-alive connection holds up the server's shutdown
        # responses caught in exception tracebacks (pytest.raises) sit in reference cycles and
        # keep their TLS connection open until collected
        gc.collect()
        server.should_exit = True
        thread.join(timeout=10)
        ctx.close()


def test_simple_salesforce_reads_pages_upserts_and_deletes(served: Served) -> None:
    sf = served.login()

    everything = sf.query_all("SELECT Id, Name, SystemModstamp FROM Account")
    ids = [r["Id"] for r in everything["records"]]
    assert len(ids) == len(set(ids)) == N_ACCOUNTS
    assert sf.api_usage["api-usage"].total == 100000  # parsed from Sforce-Limit-Info

    since = format_stamp(to_iso(BASE + dt.timedelta(minutes=N_ACCOUNTS - 11)), "salesforce")
    recent = sf.query(
        f"SELECT Id FROM Account WHERE SystemModstamp > {since} ORDER BY SystemModstamp"
    )
    assert recent["totalSize"] == 10 and recent["done"] is True

    account = sf.Account.get(ids[0])
    assert account["Id"] == ids[0] and account["attributes"]["type"] == "Account"
    assert account["VAT_Id__c"] == "DE100000000"

    fields = {
        "Name": "Sandbox engagement",
        "StageName": "Closed Won",
        "CloseDate": "2026-11-01",
        "AccountId": ids[0],
    }
    assert sf.Opportunity.upsert("PSA_Project_Id__c/123", fields) == 201
    assert sf.Opportunity.upsert("PSA_Project_Id__c/123", {"Amount": 1200}) == 200
    opp = sf.Opportunity.get_by_custom_id("PSA_Project_Id__c", "123")
    assert opp["Amount"] == 1200 and opp["IsWon"] is True
    created = sf.Opportunity.create(
        {
            "Name": "Dup",
            "StageName": "Prospecting",
            "CloseDate": "2026-12-01",
            "PSA_Project_Id__c": "123",
        }
    )
    assert created["success"] is True
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Opportunity.upsert("PSA_Project_Id__c/123", {"Amount": 1})

    assert sf.Account.delete(ids[1]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get(ids[1])
    with_deleted = sf.query_all(
        f"SELECT Id, IsDeleted FROM Account WHERE Id = '{ids[1]}'", include_deleted=True
    )
    assert with_deleted["records"][0]["IsDeleted"] is True

    # the delete log covers whole minutes: let business time move past this one
    served.ctx.clock.set(served.ctx.clock.now_dt() + dt.timedelta(minutes=2))
    now = served.ctx.clock.now_dt()
    deleted: Any = sf.Account.deleted(now - dt.timedelta(days=1), now)
    assert [d["id"] for d in deleted["deletedRecords"]] == [ids[1]]
    assert deleted["earliestDateAvailable"] < deleted["latestDateCovered"]

    changed: Any = sf.Opportunity.updated(now - dt.timedelta(hours=1), now)
    assert set(changed["ids"]) == {opp["Id"], created["id"]}

    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query("SELECT Id FROM Account WHERE")
    assert err.value.content[0]["errorCode"] == "MALFORMED_QUERY"

    describe = sf.Opportunity.describe()
    assert "PSA_Project_Id__c" in {f["name"] for f in describe["fields"]}


def test_simple_salesforce_sees_expired_sessions(served: Served) -> None:
    sf = served.login()
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == N_ACCOUNTS
    served.session().post(f"{served.url}/__admin/crm/revoke-sessions", timeout=10)
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT COUNT() FROM Account")
