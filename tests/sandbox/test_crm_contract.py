"""Contract tests of the sandbox CRM against Salesforce REST behaviour (real uvicorn, real HTTP).

Each test gets a fresh state dir, a hand-seeded CRM store (accounts and opportunities with
spread-out SystemModstamps) and a uvicorn server on an ephemeral loopback port.
"""

# SOQL text is built from test constants here, not from untrusted input.
# ruff: noqa: S608
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from erpsync_sandbox import lifecycle
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.crm.app import create_app
from erpsync_sandbox.crm.schema import salesforce_id
from erpsync_sandbox.store import format_stamp, to_iso
from tests.support.servers import serve

V = "/services/data/v60.0"
N_ACCOUNTS = 4500
N_OPPS = 300
BASE = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
CLIENT = {
    "grant_type": "client_credentials",
    "client_id": "erpsync-sandbox",
    "client_secret": "sandbox-crm-secret",
}


def account_id(i: int) -> str:
    return salesforce_id(f"0015g00000{i:05d}")


def opp_id(i: int) -> str:
    return salesforce_id(f"0065g00000{i:05d}")


def _stamp(i: int) -> str:
    # every 10th pair shares a timestamp, so ORDER BY SystemModstamp has ties to break by Id
    return to_iso(BASE + dt.timedelta(seconds=(i - i % 2 * (i % 10 == 1)) * 60))


def seed(ctx: SandboxContext) -> None:
    store = ctx.stores["crm"]
    accounts = []
    for i in range(N_ACCOUNTS):
        ms = _stamp(i)
        sf = format_stamp(ms, "salesforce")
        accounts.append(
            (
                account_id(i),
                {
                    "Id": account_id(i),
                    "IsDeleted": False,
                    "Name": f"Account {i:05d}",
                    "AccountNumber": f"A{i:06d}",
                    "Type": "Customer",
                    "Industry": "Consulting",
                    "BillingStreet": f"{i} Main St",
                    "BillingCity": "Berlin",
                    "BillingPostalCode": "10115",
                    "BillingCountry": ["DE", "FR", "US", "JP"][i % 4],
                    "OwnerId": salesforce_id("0055g00000OWNER"),
                    "CurrencyIsoCode": ["EUR", "EUR", "USD", "JPY"][i % 4],
                    "Payment_Terms__c": "Net 30",
                    "VAT_Id__c": None if i % 4 >= 2 else f"DE{100000000 + i}",
                    "Tax_Exempt__c": i % 7 == 0,
                    "Tax_Exemption_Reason__c": "Charity" if i % 7 == 0 else None,
                    "Reverse_Charge__c": i % 4 == 1,
                    "PO_Required__c": i % 3 == 0,
                    "ERP_Customer_No__c": f"C{i:05d}",
                    "CreatedDate": sf,
                    "CreatedById": salesforce_id("0055g00000OWNER"),
                    "LastModifiedDate": sf,
                    "LastModifiedById": salesforce_id("0055g00000OWNER"),
                },
                ms,
                None,
            )
        )
    store.put_many("Account", accounts)
    opps = []
    for i in range(N_OPPS):
        ms = _stamp(i)
        sf = format_stamp(ms, "salesforce")
        opps.append(
            (
                opp_id(i),
                {
                    "Id": opp_id(i),
                    "IsDeleted": False,
                    "AccountId": account_id(i),
                    "Name": f"Engagement {i}",
                    "StageName": "Closed Won" if i % 2 == 0 else "Negotiation",
                    "Amount": 10000 + i,
                    "CloseDate": "2026-10-15",
                    "Probability": 100 if i % 2 == 0 else 60,
                    "IsClosed": i % 2 == 0,
                    "IsWon": i % 2 == 0,
                    "CurrencyIsoCode": "EUR",
                    "Billing_Model__c": "Time and Materials",
                    "Contract_Start__c": "2026-11-01",
                    "Contract_End__c": "2027-10-31",
                    "PO_Number__c": None,
                    "Cap_Type__c": None,
                    "Cap_Value__c": None,
                    "Rate_Overrides__c": "[]",
                    "Contract_Version__c": 1,
                    # two opportunities share PSA project id "DUP-1" (for the 300 case)
                    "PSA_Project_Id__c": "DUP-1" if i in (10, 11) else None,
                    "CreatedDate": sf,
                    "LastModifiedDate": sf,
                },
                ms,
                None,
            )
        )
    store.put_many("Opportunity", opps)


@dataclass
class Crm:
    ctx: SandboxContext
    url: str
    http: httpx.Client
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.auth, **kw.pop("headers", {})}
        return self.http.get(path, headers=headers, **kw)

    def query(self, q: str, *, batch: int | None = None, all_rows: bool = False) -> dict:
        headers = {"Sforce-Query-Options": f"batchSize={batch}"} if batch else {}
        r = self.get(f"{V}/{'queryAll' if all_rows else 'query'}", params={"q": q}, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    def follow(self, first: dict) -> list[dict]:
        pages = [first]
        while not pages[-1]["done"]:
            r = self.get(pages[-1]["nextRecordsUrl"])
            assert r.status_code == 200, r.text
            pages.append(r.json())
        return pages

    def admin(self, **changes: Any) -> dict:
        r = self.http.put("/__admin/crm", json=changes)
        assert r.status_code == 200, r.text
        return r.json()


_serve = serve


@pytest.fixture
def crm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Crm]:
    for name in ("DAILY_LIMIT", "DELETED_RETENTION_DAYS", "EARLIEST_DELETED"):
        monkeypatch.delenv(f"ERPSYNC_SANDBOX_CRM_{name}", raising=False)
    monkeypatch.delenv("ERPSYNC_SANDBOX_FAULTS", raising=False)
    monkeypatch.delenv("ERPSYNC_SANDBOX_FAULTS_CRM", raising=False)
    ctx = SandboxContext.open(tmp_path / "state")
    seed(ctx)
    server, thread, port = _serve(create_app(ctx))
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=30)
    token = http.post("/services/oauth2/token", data=CLIENT).json()["access_token"]
    try:
        yield Crm(ctx, url, http, token)
    finally:
        http.close()
        server.should_exit = True
        thread.join(timeout=10)
        ctx.close()


def ids_of(pages: list[dict]) -> list[str]:
    return [r["Id"] for p in pages for r in p["records"]]


# ------------------------------------------------------------------------------------ auth


def test_token_endpoint_and_auth_failures_use_salesforce_format(crm: Crm) -> None:
    ok = crm.http.post("/services/oauth2/token", data=CLIENT)
    assert ok.status_code == 200
    body = ok.json()
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == crm.url
    assert {"access_token", "issued_at", "signature", "id"} <= set(body)

    bad = crm.http.post("/services/oauth2/token", data={**CLIENT, "client_secret": "nope"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_client"
    assert bad.json()["error_description"]

    grant = crm.http.post("/services/oauth2/token", data={**CLIENT, "grant_type": "magic"})
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"

    password = {**CLIENT, "grant_type": "password", "username": "integration@erpsync.sandbox"}
    wrong = crm.http.post("/services/oauth2/token", data={**password, "password": "x"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    right = crm.http.post(
        "/services/oauth2/token", data={**password, "password": "sandbox-crm-password"}
    )
    assert right.status_code == 200 and right.json()["access_token"]

    expected = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    none = crm.http.get(f"{V}/query", params={"q": "SELECT Id FROM Account"})
    assert none.status_code == 401 and none.json() == expected
    forged = crm.http.get(
        f"{V}/sobjects/Account/{account_id(1)}",
        headers={"Authorization": "Bearer 00D5g00000ERPSY!forged"},
    )
    assert forged.status_code == 401 and forged.json() == expected

    # the versions list is public, like Salesforce's
    versions = crm.http.get("/services/data/")
    assert versions.status_code == 200
    assert {"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"} in (
        versions.json()
    )

    # revoking sessions makes live tokens fail until the client logs in again
    assert crm.get(f"{V}/limits").status_code == 200
    crm.http.post("/__admin/crm/revoke-sessions")
    assert crm.get(f"{V}/limits").status_code == 401
    fresh = crm.http.post("/services/oauth2/token", data=CLIENT).json()["access_token"]
    assert crm.http.get(f"{V}/limits", headers={"Authorization": f"Bearer {fresh}"}).is_success


def test_sforce_limit_info_on_every_response_and_resources(crm: Crm) -> None:
    responses = [
        crm.get(f"{V}/"),
        crm.get(f"{V}/limits"),
        crm.get(f"{V}/sobjects/Account/{account_id(3)}"),
        crm.get(f"{V}/sobjects/Account/001000000000000AAA"),
        crm.get(f"{V}/query", params={"q": "SELECT Nope FROM Account"}),
        crm.http.get(f"{V}/limits"),
        crm.http.get("/services/data/"),
    ]
    usages = []
    for r in responses:
        header = r.headers["Sforce-Limit-Info"]
        assert header.startswith("api-usage=") and header.endswith("/100000"), header
        usages.append(int(header.split("=")[1].split("/")[0]))
    assert usages[:5] == [1, 2, 3, 4, 5]  # authenticated calls count, failures included
    assert usages[5] == 5  # a 401 is not counted
    assert responses[0].json()["query"] == f"{V}/query"
    assert responses[1].json()["DailyApiRequests"]["Max"] == 100000
    assert crm.get("/services/data/v99.0/limits").status_code == 404


# ------------------------------------------------------------------------------------ paging


@pytest.mark.parametrize("batch", [200, 2000])
def test_paging_returns_every_record_exactly_once(crm: Crm, batch: int) -> None:
    first = crm.query("SELECT Id, Name, SystemModstamp FROM Account", batch=batch)
    assert first["totalSize"] == N_ACCOUNTS and first["done"] is False
    assert first["nextRecordsUrl"].startswith(f"{V}/query/01g")
    assert first["nextRecordsUrl"].endswith(f"-{batch}")
    pages = crm.follow(first)
    assert [len(p["records"]) for p in pages[:-1]] == [batch] * (len(pages) - 1)
    ids = ids_of(pages)
    assert len(ids) == N_ACCOUNTS and set(ids) == {account_id(i) for i in range(N_ACCOUNTS)}
    assert all(p["totalSize"] == N_ACCOUNTS for p in pages)
    assert "nextRecordsUrl" not in pages[-1]
    record = pages[0]["records"][0]
    assert list(record) == ["attributes", "Id", "Name", "SystemModstamp"]
    assert record["attributes"] == {
        "type": "Account",
        "url": f"{V}/sobjects/Account/{record['Id']}",
    }


def test_paging_is_stable_while_records_change(crm: Crm) -> None:
    # the fault hook also moves 5 random records after every page
    faults = crm.http.patch(
        "/__admin/faults", json={"mutate_during_paging_rate": 1.0, "mutate_count": 5}
    )
    assert faults.status_code == 200
    q = "SELECT Id, Name, SystemModstamp FROM Account ORDER BY SystemModstamp, Id"
    first = crm.query(q, batch=200)
    read_ids = [r["Id"] for r in first["records"]]
    snapshot = set(read_ids)
    # change records already read and not yet read; this moves them to the end of the
    # SystemModstamp order, which must not make a live cursor skip or repeat them
    unread = account_id(4000)
    for rid in (read_ids[0], read_ids[50], account_id(1000), unread):
        r = crm.http.patch(
            f"{V}/sobjects/Account/{rid}", json={"Name": f"renamed {rid}"}, headers=crm.auth
        )
        assert r.status_code == 204
    assert (
        crm.http.delete(f"{V}/sobjects/Account/{account_id(3000)}", headers=crm.auth).status_code
        == 204
    )
    created = crm.http.post(f"{V}/sobjects/Account", json={"Name": "New Co"}, headers=crm.auth)
    assert created.status_code == 201
    pages = crm.follow(first)
    ids = ids_of(pages)
    assert len(ids) == len(set(ids)) == N_ACCOUNTS
    snapshot = {account_id(i) for i in range(N_ACCOUNTS)}
    assert set(ids) == snapshot  # the record created mid-read is not part of this cursor
    by_id = {r["Id"]: r for p in pages for r in p["records"]}
    assert by_id[unread]["Name"] == f"renamed {unread}"  # current values are served
    stats = crm.http.get("/__admin/faults").json()["stats"]
    assert stats["injected"].get("mutate", 0) >= len(pages)


def test_where_systemmodstamp_incremental_filter(crm: Crm) -> None:
    cutoff_index = 4000
    cutoff = format_stamp(_stamp(cutoff_index), "salesforce")
    q = (
        "SELECT Id, SystemModstamp FROM Account WHERE SystemModstamp > {c} "
        "ORDER BY SystemModstamp, Id"
    )
    pages = crm.follow(crm.query(q.format(c=cutoff), batch=200))
    got = [(r["SystemModstamp"], r["Id"]) for p in pages for r in p["records"]]
    expected = sorted(
        (format_stamp(_stamp(i), "salesforce"), account_id(i))
        for i in range(N_ACCOUNTS)
        if _stamp(i) > _stamp(cutoff_index)
    )
    assert got == expected and got
    assert all(stamp > cutoff for stamp, _ in got)  # strictly greater
    ge = crm.query(f"SELECT Id FROM Account WHERE SystemModstamp >= {cutoff}", batch=2000)[
        "totalSize"
    ]
    assert ge == len(expected) + sum(1 for i in range(N_ACCOUNTS) if _stamp(i) == _stamp(4000))

    # an update moves SystemModstamp and LastModifiedDate past every cursor the client saw
    high = got[-1][0]
    r = crm.http.patch(
        f"{V}/sobjects/Account/{account_id(5)}", json={"Industry": "Legal"}, headers=crm.auth
    )
    assert r.status_code == 204
    alt = high.replace("+0000", "Z")  # the other datetime literal spelling
    nxt = crm.query(
        f"SELECT Id, Industry, SystemModstamp, LastModifiedDate FROM Account "
        f"WHERE SystemModstamp > {alt}"
    )
    assert [r["Id"] for r in nxt["records"]] == [account_id(5)]
    rec = nxt["records"][0]
    assert rec["Industry"] == "Legal" and rec["SystemModstamp"] > high
    assert rec["LastModifiedDate"] == rec["SystemModstamp"]


def test_soql_filters_order_limit_and_count(crm: Crm) -> None:
    res = crm.query(
        "select id, name, BillingCountry from account where (BillingCountry = 'de' or "
        "BillingCountry IN ('JP')) AND Tax_Exempt__c = true ORDER BY Name DESC LIMIT 5"
    )
    names = [r["Name"] for r in res["records"]]
    assert names == sorted(names, reverse=True) and len(names) == 5
    assert all(r["BillingCountry"] in ("DE", "JP") for r in res["records"])
    assert list(res["records"][0]) == ["attributes", "Id", "Name", "BillingCountry"]
    count = crm.query("SELECT COUNT() FROM Account WHERE VAT_Id__c = null")
    assert count == {"totalSize": N_ACCOUNTS // 2, "done": True, "records": []}
    like = crm.query("SELECT Id FROM Opportunity WHERE Name LIKE 'engagement 1%'")
    assert like["totalSize"] == 111  # 1, 10-19, 100-199
    opp = crm.query(
        "SELECT Id, Amount, CloseDate FROM Opportunity WHERE Amount >= 10290 AND "
        "CloseDate = 2026-10-15 AND IsWon = false"
    )
    assert sorted(r["Amount"] for r in opp["records"]) == [10291, 10293, 10295, 10297, 10299]


def test_soql_errors(crm: Crm) -> None:
    def error(q: str) -> dict:
        r = crm.get(f"{V}/query", params={"q": q})
        assert r.status_code == 400, r.text
        body = r.json()
        assert isinstance(body, list) and len(body) == 1
        return body[0]

    e = error("SELECT Id FROM Account WHERE")
    assert e["errorCode"] == "MALFORMED_QUERY" and "unexpected token: <EOF>" in e["message"]
    assert "ERROR at Row:1:Column:29" in e["message"]
    e = error("SELECT Id, Bogus__c FROM Account")
    assert e["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Bogus__c' on entity 'Account'" in e["message"]
    e = error("SELECT Id FROM Lead__x")
    assert e["errorCode"] == "INVALID_TYPE"
    e = error("SELECT Id FROM Account WHERE SystemModstamp > '2026-01-01T00:00:00Z'")
    assert e["errorCode"] == "INVALID_FIELD" and "must be of type dateTime" in e["message"]
    e = error("SELECT Id FROM Account WHERE Name = 'a' AND Type = 'b' OR Type = 'c'")
    assert e["errorCode"] == "MALFORMED_QUERY"
    e = error("SELECT Id FROM Account WHERE Id = '42'")
    assert e["errorCode"] == "INVALID_QUERY_FILTER_OPERATOR"
    missing = crm.get(f"{V}/query")
    assert missing.status_code == 400 and missing.json()[0]["errorCode"] == "MALFORMED_QUERY"
    bad_locator = crm.get(f"{V}/query/01gXXXXXXXXXXXXXXX-2000")
    assert bad_locator.status_code == 400
    assert bad_locator.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_query_locator_expires(crm: Crm) -> None:
    crm.admin(locator_ttl_seconds=0.3)
    first = crm.query("SELECT Id FROM Account", batch=200)
    assert crm.get(first["nextRecordsUrl"]).status_code == 200  # still live
    time.sleep(0.5)
    r = crm.get(first["nextRecordsUrl"])
    assert r.status_code == 400
    assert r.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


# ------------------------------------------------------------------------------------ deletes


def test_query_all_and_deleted_feed_with_retention_window(crm: Crm) -> None:
    now = crm.ctx.clock.now_dt()
    gone = [account_id(7), account_id(8)]
    for rid in gone:
        assert crm.http.delete(f"{V}/sobjects/Account/{rid}", headers=crm.auth).status_code == 204
    again = crm.http.delete(f"{V}/sobjects/Account/{gone[0]}", headers=crm.auth)
    assert again.status_code == 404 and again.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
    assert crm.get(f"{V}/sobjects/Account/{gone[0]}").status_code == 404

    q = "SELECT Id, IsDeleted FROM Account WHERE Id IN ('{}', '{}', '{}')".format(
        *gone, account_id(9)
    )
    live = crm.query(q)
    assert [r["Id"] for r in live["records"]] == [account_id(9)]
    every = crm.query(q, all_rows=True)
    flags = {r["Id"]: r["IsDeleted"] for r in every["records"]}
    assert flags == {gone[0]: True, gone[1]: True, account_id(9): False}
    assert crm.query("SELECT COUNT() FROM Account", all_rows=True)["totalSize"] == N_ACCOUNTS
    assert crm.query("SELECT COUNT() FROM Account")["totalSize"] == N_ACCOUNTS - 2

    # the feed covers whole minutes up to now: let business time pass the deletion minute
    now = dt.datetime.fromisoformat(crm.ctx.clock.set(now + dt.timedelta(minutes=2)))
    start = (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    end = (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    feed = crm.get(f"{V}/sobjects/Account/deleted/", params={"start": start, "end": end}).json()
    assert [d["id"] for d in feed["deletedRecords"]] == gone
    assert all(d["deletedDate"].endswith("+0000") for d in feed["deletedRecords"])
    earliest = dt.datetime.strptime(feed["earliestDateAvailable"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert dt.timedelta(days=15) <= now - earliest < dt.timedelta(days=15, minutes=1)
    # latestDateCovered is capped at now; the next call starts there and repeats nothing
    covered = feed["latestDateCovered"]
    assert covered <= format_stamp(to_iso(now + dt.timedelta(minutes=1)), "salesforce")

    # start before the retention window: still answered, earliestDateAvailable tells the client
    old = (now - dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    feed = crm.get(f"{V}/sobjects/Account/deleted/", params={"start": old, "end": end}).json()
    assert feed["earliestDateAvailable"] > old.replace("Z", ".000+0000")
    assert [d["id"] for d in feed["deletedRecords"]] == gone

    # the log gets purged (earliest moves past the deletions): feed empty, queryAll drops them
    purge = to_iso(crm.ctx.clock.now_dt() + dt.timedelta(minutes=2))
    state = crm.admin(earliest_deleted=purge)
    assert state["earliest_date_available"] >= format_stamp(purge, "salesforce")[:16]
    feed = crm.get(f"{V}/sobjects/Account/deleted/", params={"start": start, "end": end}).json()
    assert feed["deletedRecords"] == []
    assert feed["earliestDateAvailable"] > start.replace("+00:00", ".000+0000")
    assert [r["Id"] for r in crm.query(q, all_rows=True)["records"]] == [account_id(9)]

    # retention in days is configurable as well
    crm.admin(earliest_deleted=None, deleted_retention_days=1)
    feed = crm.get(f"{V}/sobjects/Account/deleted/", params={"start": old, "end": end}).json()
    earliest = dt.datetime.strptime(feed["earliestDateAvailable"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert dt.timedelta(days=1) <= now - earliest < dt.timedelta(days=1, minutes=1)

    bad = crm.get(f"{V}/sobjects/Account/deleted/", params={"start": end, "end": start})
    assert bad.status_code == 400
    assert bad.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"


# ------------------------------------------------------------------------------------ quota


def test_daily_quota_gives_403_request_limit_exceeded(crm: Crm) -> None:
    crm.admin(daily_limit=5, api_usage=0)
    for _ in range(5):
        assert crm.get(f"{V}/limits").status_code == 200
    r = crm.get(f"{V}/query", params={"q": "SELECT Id FROM Account LIMIT 1"})
    assert r.status_code == 403
    assert r.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert "retry-after" not in r.headers
    assert r.headers["Sforce-Limit-Info"] == "api-usage=5/5"
    assert crm.http.post("/__admin/crm/quota/reset").status_code == 200
    again = crm.get(f"{V}/limits")
    assert again.status_code == 200
    assert again.headers["Sforce-Limit-Info"] == "api-usage=1/5"
    assert again.json()["DailyApiRequests"] == {"Max": 5, "Remaining": 4}


# ------------------------------------------------------------------------------------ writes


def test_external_id_upsert_status_codes(crm: Crm) -> None:
    url = f"{V}/sobjects/Opportunity/PSA_Project_Id__c"
    fields = {"Name": "Upserted deal", "StageName": "Closed Won", "CloseDate": "2026-11-01"}
    created = crm.http.patch(f"{url}/P-123", json=fields, headers=crm.auth)
    assert created.status_code == 201
    body = created.json()
    assert body["success"] is True and body["errors"] == [] and body["created"] is True
    new_id = body["id"]
    assert new_id.startswith("006") and len(new_id) == 18
    record = crm.get(f"{V}/sobjects/Opportunity/{new_id}").json()
    assert record["PSA_Project_Id__c"] == "P-123" and record["IsWon"] is True

    updated = crm.http.patch(f"{url}/p-123", json={"Amount": 5000.5}, headers=crm.auth)
    assert updated.status_code == 200  # external ids match case-insensitively
    assert updated.json() == {"id": new_id, "success": True, "errors": [], "created": False}
    record = crm.get(f"{V}/sobjects/Opportunity/{new_id}").json()
    assert record["Amount"] == 5000.5
    assert record["SystemModstamp"] > record["CreatedDate"]

    old_api = crm.http.patch(
        "/services/data/v45.0/sobjects/Opportunity/PSA_Project_Id__c/P-123",
        json={"Amount": 6000},
        headers=crm.auth,
    )
    assert old_api.status_code == 204 and old_api.content == b""

    ambiguous = crm.http.patch(f"{url}/DUP-1", json={"Amount": 1}, headers=crm.auth)
    assert ambiguous.status_code == 300
    assert sorted(ambiguous.json()) == sorted(
        f"{V}/sobjects/Opportunity/{opp_id(i)}" for i in (10, 11)
    )

    only = crm.http.patch(
        f"{url}/P-999", params={"updateOnly": "true"}, json=fields, headers=crm.auth
    )
    assert only.status_code == 404 and only.json()[0]["errorCode"] == "NOT_FOUND"
    assert (
        crm.query("SELECT COUNT() FROM Opportunity WHERE PSA_Project_Id__c = 'P-999'")["totalSize"]
        == 0
    )

    not_ext = crm.http.patch(f"{V}/sobjects/Opportunity/Name/x", json={}, headers=crm.auth)
    assert not_ext.status_code == 404
    missing = crm.http.patch(f"{url}/P-555", json={"Name": "no stage"}, headers=crm.auth)
    assert missing.status_code == 400
    assert missing.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert set(missing.json()[0]["fields"]) == {"StageName", "CloseDate"}


def test_upsert_retried_after_a_dropped_connection_does_not_duplicate(crm: Crm) -> None:
    crm.http.put(
        "/__admin/faults",
        json={"drop_after_commit_rate": 1.0, "drop_path_contains": "PSA_Project_Id__c"},
    )
    url = f"{V}/sobjects/Opportunity/PSA_Project_Id__c/P-777"
    fields = {"Name": "Dropped", "StageName": "Closed Won", "CloseDate": "2026-11-01"}
    with pytest.raises(httpx.TransportError):
        crm.http.patch(url, json=fields, headers=crm.auth)  # committed, answer lost
    crm.http.put("/__admin/faults", json={})
    retry = crm.http.patch(url, json=fields, headers=crm.auth)
    assert retry.status_code == 200 and retry.json()["created"] is False
    q = "SELECT COUNT() FROM Opportunity WHERE PSA_Project_Id__c = 'P-777'"
    assert crm.query(q)["totalSize"] == 1


def test_sobject_crud_describe_and_errors(crm: Crm) -> None:
    missing = crm.get(f"{V}/sobjects/Account/001000000000000AAA")
    assert missing.status_code == 404
    assert missing.json() == [
        # Salesforce's body names no fields for NOT_FOUND
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]
    got = crm.get(f"{V}/sobjects/Account/{account_id(12)}")
    assert got.status_code == 200 and got.json()["Name"] == "Account 00012"
    some = crm.get(f"{V}/sobjects/Account/{account_id(12)}", params={"fields": "Name,VAT_Id__c"})
    assert list(some.json()) == ["attributes", "Name", "VAT_Id__c"]

    created = crm.http.post(
        f"{V}/sobjects/Account",
        json={"Name": "Fresh GmbH", "Tax_Exempt__c": True},
        headers=crm.auth,
    )
    assert created.status_code == 201
    new_id = created.json()["id"]
    assert created.json() == {"id": new_id, "success": True, "errors": []}
    record = crm.get(f"{V}/sobjects/Account/{new_id}").json()
    assert record["IsDeleted"] is False and record["Tax_Exempt__c"] is True
    assert record["CreatedDate"] == record["SystemModstamp"] == record["LastModifiedDate"]

    read_only = crm.http.patch(
        f"{V}/sobjects/Account/{new_id}",
        json={"SystemModstamp": "2020-01-01T00:00:00Z"},
        headers=crm.auth,
    )
    assert read_only.status_code == 400
    assert read_only.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    unknown = crm.http.patch(f"{V}/sobjects/Account/{new_id}", json={"Nope": 1}, headers=crm.auth)
    assert unknown.status_code == 400 and unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    no_name = crm.http.post(f"{V}/sobjects/Account", json={}, headers=crm.auth)
    assert no_name.status_code == 400
    assert no_name.json()[0] == {
        "message": "Required fields are missing: [Name]",
        "errorCode": "REQUIRED_FIELD_MISSING",
        "fields": ["Name"],
    }
    broken = crm.http.post(
        f"{V}/sobjects/Account",
        content=b"{not json",
        headers={**crm.auth, "Content-Type": "application/json"},
    )
    assert broken.status_code == 400 and broken.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    assert crm.get(f"{V}/sobjects/Widget__c/describe").status_code == 404

    describe = crm.get(f"{V}/sobjects/Opportunity/describe").json()
    fields = {f["name"]: f for f in describe["fields"]}
    assert fields["PSA_Project_Id__c"]["externalId"] is True
    assert fields["SystemModstamp"]["type"] == "datetime"
    assert fields["Billing_Model__c"]["custom"] is True
    assert describe["keyPrefix"] == "006"


def test_contract_milestone_custom_object(crm: Crm) -> None:
    """``Contract_Milestone__c``: a custom master-detail child of Opportunity (where a contract's
    milestones and their acceptance live; Harvest has none). Created, queried with /query and
    /queryAll, updated with the documented ``PATCH /sobjects/Contract_Milestone__c/{id}`` (204),
    refused as Salesforce refuses (restricted picklist, text too long, master not
    reparentable, unknown field), deleted into the deleted feed; describe matches the metadata
    shipped in vendor/salesforce. https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm"""
    describe = crm.get(f"{V}/sobjects/Contract_Milestone__c/describe").json()
    assert describe["custom"] is True and describe["name"] == "Contract_Milestone__c"
    fields = {f["name"]: f for f in describe["fields"]}
    assert {
        "Id",
        "Name",
        "IsDeleted",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
        "Opportunity__c",
        "Amount__c",
        "Due_Date__c",
        "Status__c",
        "Accepted_Date__c",
        "Invoice_Number__c",
    } <= set(fields)
    assert "OwnerId" not in fields  # a master-detail child has no owner of its own
    master = fields["Opportunity__c"]
    assert master["referenceTo"] == ["Opportunity"] and master["relationshipName"] == (
        "Opportunity__r"
    )
    assert master["updateable"] is False and master["nillable"] is False
    assert [v["value"] for v in fields["Status__c"]["picklistValues"]] == [
        "Planned",
        "Accepted",
        "Invoiced",
    ]
    assert fields["Status__c"]["restrictedPicklist"] is True
    assert fields["Invoice_Number__c"]["length"] == 35
    assert fields["Amount__c"]["type"] == "currency"

    created = crm.http.post(
        f"{V}/sobjects/Contract_Milestone__c",
        json={
            "Name": "Go-live",
            "Opportunity__c": opp_id(2),
            "Amount__c": "12000.50",
            "Due_Date__c": "2026-12-15",
        },
        headers=crm.auth,
    )
    assert created.status_code == 201, created.text
    mid = created.json()["id"]
    assert mid.startswith(describe["keyPrefix"])
    soql = (
        "SELECT Id, Name, Opportunity__c, Amount__c, Status__c, Accepted_Date__c, "
        f"Invoice_Number__c FROM Contract_Milestone__c WHERE Opportunity__c = '{opp_id(2)}'"
    )
    (rec,) = crm.query(soql)["records"]
    assert rec["Status__c"] == "Planned" and rec["Accepted_Date__c"] is None  # the default
    assert rec["attributes"]["type"] == "Contract_Milestone__c"

    accept = crm.http.patch(
        f"{V}/sobjects/Contract_Milestone__c/{mid}",
        json={"Status__c": "Accepted", "Accepted_Date__c": "2026-11-03"},
        headers=crm.auth,
    )
    assert accept.status_code == 204 and accept.content == b""
    accepted = crm.query(
        "SELECT Id FROM Contract_Milestone__c WHERE Status__c = 'Accepted' "
        "AND SystemModstamp >= 2026-01-01T00:00:00Z"
    )["records"]
    assert [r["Id"] for r in accepted] == [mid]

    def refused(body: dict) -> dict:
        r = crm.http.patch(f"{V}/sobjects/Contract_Milestone__c/{mid}", json=body, headers=crm.auth)
        assert r.status_code == 400, r.text
        return r.json()[0]

    bad = refused({"Status__c": "accepted"})  # picklist values are exact
    assert bad["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert bad["fields"] == ["Status__c"]
    assert refused({"Invoice_Number__c": "X" * 36})["errorCode"] == "STRING_TOO_LONG"
    moved = refused({"Opportunity__c": opp_id(4)})
    assert moved["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert refused({"Invoiced__c": True})["errorCode"] == "INVALID_FIELD"
    no_master = crm.http.post(
        f"{V}/sobjects/Contract_Milestone__c", json={"Name": "x"}, headers=crm.auth
    )
    assert no_master.status_code == 400
    assert no_master.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"

    invoiced = crm.http.patch(
        f"{V}/sobjects/Contract_Milestone__c/{mid}",
        json={"Status__c": "Invoiced", "Invoice_Number__c": "PSI-103001"},
        headers=crm.auth,
    )
    assert invoiced.status_code == 204
    got = crm.get(
        f"{V}/sobjects/Contract_Milestone__c/{mid}",
        params={"fields": "Status__c,Invoice_Number__c"},
    ).json()
    assert (got["Status__c"], got["Invoice_Number__c"]) == ("Invoiced", "PSI-103001")

    now = crm.ctx.clock.now_dt()
    gone = crm.http.delete(f"{V}/sobjects/Contract_Milestone__c/{mid}", headers=crm.auth)
    assert gone.status_code == 204
    assert crm.query(soql)["records"] == []
    assert [r["Id"] for r in crm.query(soql, all_rows=True)["records"]] == [mid]
    now = dt.datetime.fromisoformat(crm.ctx.clock.set(now + dt.timedelta(minutes=2)))
    feed = crm.get(
        f"{V}/sobjects/Contract_Milestone__c/deleted/",
        params={
            "start": (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    ).json()
    assert [d["id"] for d in feed["deletedRecords"]] == [mid]
    opp_describe = crm.get(f"{V}/sobjects/Opportunity/describe").json()
    assert {
        "childSObject": "Contract_Milestone__c",
        "field": "Opportunity__c",
        "relationshipName": "Contract_Milestones__r",
        "cascadeDelete": True,
        "restrictedDelete": False,
    } in opp_describe["childRelationships"]
    # deleting the master deletes its milestones (master-detail cascade)
    child = crm.http.post(
        f"{V}/sobjects/Contract_Milestone__c",
        json={"Name": "Kick-off", "Opportunity__c": opp_id(6)},
        headers=crm.auth,
    ).json()["id"]
    master = crm.http.delete(f"{V}/sobjects/Opportunity/{opp_id(6)}", headers=crm.auth)
    assert master.status_code == 204
    assert crm.get(f"{V}/sobjects/Contract_Milestone__c/{child}").status_code == 404
    # Opportunity no longer carries an invented JSON milestones field
    opp_fields = {f["name"] for f in crm.get(f"{V}/sobjects/Opportunity/describe").json()["fields"]}
    assert "Milestones__c" not in opp_fields


def test_contract_milestone_schema_equals_the_shipped_metadata() -> None:
    """The sandbox's Contract_Milestone__c is what vendor/salesforce deploys (Salesforce DX
    source format: objects/<Object>/fields/<Field>.field-meta.xml): same custom fields, types,
    lengths, required flags and restricted picklist values, both directions."""
    import xml.etree.ElementTree as ET

    from erpsync_sandbox.crm.schema import SCHEMAS

    ns = {"m": "http://soap.sforce.com/2006/04/metadata"}
    root = Path(__file__).resolve().parents[2] / "vendor/salesforce/force-app/main/default"
    folder = root / "objects/Contract_Milestone__c"
    obj = ET.parse(folder / "Contract_Milestone__c.object-meta.xml").getroot()  # noqa: S314 - our own files
    assert obj.findtext("m:sharingModel", namespaces=ns) == "ControlledByParent"
    schema = SCHEMAS["Contract_Milestone__c"]
    assert obj.findtext("m:label", namespaces=ns) == schema.label
    kinds = {
        "MasterDetail": "reference",
        "Currency": "currency",
        "Date": "date",
        "Picklist": "picklist",
        "Text": "string",
    }
    shipped = {}
    for path in sorted((folder / "fields").glob("*.field-meta.xml")):
        el = ET.parse(path).getroot()  # noqa: S314 - our own files
        name = el.findtext("m:fullName", namespaces=ns)
        assert path.name == f"{name}.field-meta.xml"
        values = tuple(
            v.findtext("m:fullName", namespaces=ns)
            for v in el.findall("m:valueSet/m:valueSetDefinition/m:value", ns)
        )
        shipped[name] = (
            kinds[el.findtext("m:type", namespaces=ns)],
            int(el.findtext("m:length", "0", namespaces=ns)),
            values,
            el.findtext("m:referenceTo", namespaces=ns),
        )
    ours = {
        f.name: (
            f.type,
            f.length if f.type == "string" else 0,
            f.picklist,
            f.reference_to[0] if f.reference_to else None,
        )
        for f in schema.fields
        if f.custom
    }
    assert shipped == ours


def test_injected_faults_keep_salesforce_shapes(crm: Crm) -> None:
    crm.http.put("/__admin/faults", json={"error_rate_5xx": 1.0, "error_statuses": [503]})
    r = crm.get(f"{V}/limits")
    assert r.status_code == 503
    assert r.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert r.headers["Sforce-Limit-Info"].startswith("api-usage=")
    crm.http.put("/__admin/faults", json={})
    assert crm.get(f"{V}/limits").status_code == 200


def test_openapi_page_lists_tagged_routes(crm: Crm) -> None:
    spec = crm.http.get("/openapi.json").json()
    query = spec["paths"]["/services/data/{version}/query"]["get"]
    assert query["tags"] == ["Query"] and query["summary"]
    upsert = spec["paths"]["/services/data/{version}/sobjects/{sobject}/{field}/{value}"]
    assert set(upsert["patch"]["responses"]) >= {"200", "201", "300", "404"}
    assert crm.http.get("/docs").status_code == 200


def test_query_throughput(crm: Crm) -> None:
    """Serving speed of paged SOQL over HTTP (brief: >= 20k records/s on this machine)."""
    q = (
        "SELECT Id, Name, AccountNumber, BillingCountry, CurrencyIsoCode, VAT_Id__c, "
        "Tax_Exempt__c, Reverse_Charge__c, ERP_Customer_No__c, SystemModstamp FROM Account "
        "WHERE SystemModstamp > 2026-01-01T00:00:00Z ORDER BY SystemModstamp, Id"
    )
    crm.query("SELECT Id FROM Account LIMIT 1")  # warm up
    started = time.perf_counter()
    rounds = 2
    for _ in range(rounds):
        assert len(ids_of(crm.follow(crm.query(q)))) == N_ACCOUNTS
    rate = rounds * N_ACCOUNTS / (time.perf_counter() - started)
    print(f"sandbox CRM query throughput: {rate:,.0f} records/s")
    assert rate > 5_000  # loose floor: a shared 2-core box; see the report for measured rates


# ------------------------------------------------------------------------------------ small firm


def test_small_firm_incremental_sync_follows_the_change_log(tmp_path: Path) -> None:
    """Generated firm + clock advance: SystemModstamp incremental reads, queryAll and the
    deleted feed report exactly what the change log says changed."""
    ctx = SandboxContext.open(tmp_path / "state")
    lifecycle.generate(ctx, size="small", seed=3)
    store = ctx.stores["crm"]
    server, thread, port = _serve(create_app(ctx))
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        token = http.post("/services/oauth2/token", data=CLIENT).json()["access_token"]
        crm = Crm(ctx, f"http://127.0.0.1:{port}", http, token)
        cursors: dict[str, str] = {}
        for sobject in ("Account", "Opportunity", "Contact", "User"):
            pages = crm.follow(
                crm.query(
                    f"SELECT Id, SystemModstamp FROM {sobject} ORDER BY SystemModstamp, Id",
                    batch=200,
                )
            )
            records = [r for p in pages for r in p["records"]]
            assert [r["Id"] for r in records] != [] or sobject == "User"
            assert len(records) == store.count(sobject)
            cursors[sobject] = max(r["SystemModstamp"] for r in records)
        planted = [
            p["id"]
            for p in ctx.manifest()["problems"]
            if p.get("resource") == "Account" and p.get("kind") == "invalid_vat_id"
        ]
        assert planted
        q = "SELECT Id, VAT_Id__c FROM Account WHERE Id IN ({})".format(
            ", ".join(f"'{i}'" for i in planted)
        )
        assert {r["Id"] for r in crm.query(q)["records"]} == set(planted)

        changes = [c for c in lifecycle.advance(ctx, 3, seed=11) if c["system"] == "crm"]
        assert changes, "advance made no CRM changes"
        ctx.clock.set(ctx.clock.now_dt() + dt.timedelta(minutes=2))
        now = ctx.clock.now_dt()
        for sobject in ("Account", "Opportunity"):
            last_op: dict[str, str] = {}
            for c in changes:
                if c["resource"] == sobject:
                    last_op[c["id"]] = c["op"]
            live = {i for i, op in last_op.items() if op != "delete"}
            gone = {i for i, op in last_op.items() if op == "delete"}
            since = cursors[sobject]
            inc = crm.follow(crm.query(f"SELECT Id FROM {sobject} WHERE SystemModstamp > {since}"))
            assert set(ids_of(inc)) == live
            every = crm.follow(
                crm.query(
                    f"SELECT Id, IsDeleted FROM {sobject} WHERE SystemModstamp > {since}",
                    all_rows=True,
                )
            )
            flags = {r["Id"]: r["IsDeleted"] for p in every for r in p["records"]}
            assert flags == {**dict.fromkeys(live, False), **dict.fromkeys(gone, True)}
            feed = crm.get(
                f"{V}/sobjects/{sobject}/deleted/",
                params={
                    "start": (now - dt.timedelta(days=5)).isoformat(),
                    "end": now.isoformat(),
                },
            ).json()
            assert {d["id"] for d in feed["deletedRecords"]} == gone
    finally:
        http.close()
        server.should_exit = True
        thread.join(timeout=10)
        ctx.close()


# ----------------------------------------------------------------- strict contract (issue 13)


@pytest.fixture
def contract_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from erpsync_sandbox.contract import CONTRACT_LOG_ENV

    path = tmp_path / "contract.jsonl"
    monkeypatch.setenv(CONTRACT_LOG_ENV, str(path))
    return path


def _notes(path: Path, requests: int) -> list[str]:
    """The undocumented notes of the log once it holds ``requests`` lines (the recorder writes
    a line just after the answer is sent)."""
    from erpsync_sandbox.contract import read_log

    deadline = time.monotonic() + 5
    while len(records := list(read_log(path))) < requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(records) == requests
    return [note for rec in records for note in rec["undocumented"]]


def test_a_field_only_a_stored_record_has_is_not_queryable(crm: Crm) -> None:
    # the sandbox used to add such fields to the schema on the fly (with_discovered), so a
    # client could rely on a field no org has; Salesforce answers INVALID_FIELD
    store = crm.ctx.stores["crm"]
    body = store.get("Account", account_id(3))
    store.put("Account", account_id(3), {**body, "Legacy_Code__c": "X1"}, modstamp=to_iso(BASE))
    r = crm.get(f"{V}/query", params={"q": "SELECT Id, Legacy_Code__c FROM Account"})
    assert r.status_code == 400
    assert r.json() == [
        {
            "message": "\nSELECT Id, Legacy_Code__c FROM Account\n           ^\n"
            "ERROR at Row:1:Column:12\n"
            "No such column 'Legacy_Code__c' on entity 'Account'. If you are attempting to use a"
            " custom field, be sure to append the '__c' after the custom field name. Please"
            " reference your WSDL or the describe call for the appropriate names.",
            "errorCode": "INVALID_FIELD",
        }
    ]
    assert "Legacy_Code__c" not in crm.get(f"{V}/sobjects/Account/{account_id(3)}").json()
    names = {f["name"] for f in crm.get(f"{V}/sobjects/Account/describe").json()["fields"]}
    assert "Legacy_Code__c" not in names


def test_writes_refuse_unknown_and_read_only_fields_as_salesforce(crm: Crm) -> None:
    url = f"{V}/sobjects/Opportunity/{opp_id(4)}"
    unknown = crm.http.patch(url, json={"PSA_Project__c": "1"}, headers=crm.auth)
    assert unknown.status_code == 400
    assert unknown.json() == [
        {
            "message": "No such column 'PSA_Project__c' on sobject of type Opportunity",
            "errorCode": "INVALID_FIELD",
        }
    ]
    created = crm.http.post(
        f"{V}/sobjects/Account", json={"Name": "X", "Region__c": "EU"}, headers=crm.auth
    )
    assert created.status_code == 400 and created.json()[0]["errorCode"] == "INVALID_FIELD"
    read_only = crm.http.patch(url, json={"IsWon": True}, headers=crm.auth)
    assert read_only.status_code == 400
    assert read_only.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert read_only.json()[0]["fields"] == ["IsWon"]
    malformed = crm.get(f"{V}/query", params={"q": "SELECT Id FROM Account WHERE"})
    assert malformed.status_code == 400 and malformed.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_update_by_record_id_is_the_documented_patch_and_id_is_no_external_id(
    crm: Crm, contract_log: Path
) -> None:
    # S6: PATCH .../Opportunity/Id/{id} is not a documented update ("In REST API, upsert uses
    # external ids, not record ids"): refused and noted; PATCH .../Opportunity/{id} is 204
    by_id_field = crm.http.patch(
        f"{V}/sobjects/Opportunity/Id/{opp_id(5)}",
        json={"PSA_Project_Id__c": "P-5"},
        headers=crm.auth,
    )
    assert by_id_field.status_code == 404
    assert by_id_field.json()[0]["errorCode"] == "NOT_FOUND"
    assert crm.ctx.stores["crm"].get("Opportunity", opp_id(5))["PSA_Project_Id__c"] is None
    assert _notes(contract_log, 1) == ["record Id used as external ID field (PATCH)"]

    contract_log.unlink()
    plain = crm.http.patch(
        f"{V}/sobjects/Opportunity/{opp_id(5)}",
        json={"PSA_Project_Id__c": "P-5"},
        headers=crm.auth,
    )
    assert plain.status_code == 204 and plain.content == b""
    assert crm.ctx.stores["crm"].get("Opportunity", opp_id(5))["PSA_Project_Id__c"] == "P-5"
    assert _notes(contract_log, 1) == []

    assert crm.http.delete(f"{V}/sobjects/Opportunity/{opp_id(6)}", headers=crm.auth).status_code
    gone = crm.http.patch(
        f"{V}/sobjects/Opportunity/{opp_id(6)}", json={"PO_Number__c": "1"}, headers=crm.auth
    )
    assert gone.status_code == 404
    assert gone.json() == [{"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED"}]


def test_soql_datetime_literals_outside_the_documented_forms_are_noted(
    crm: Crm, contract_log: Path
) -> None:
    # S2a: SOQL documents YYYY-MM-DDThh:mm:ss with Z or +hh:mm/-hh:mm only
    for literal in ("2026-10-01T10:00:00Z", "2026-10-01T12:00:00+02:00"):
        crm.query(f"SELECT Id FROM Account WHERE SystemModstamp >= {literal}")
    assert _notes(contract_log, 2) == []
    crm.query("SELECT Id FROM Account WHERE SystemModstamp >= 2026-10-01T10:00:00.000+0000")
    assert _notes(contract_log, 3) == [
        "SOQL dateTime literal '2026-10-01T10:00:00.000+0000' is not a documented form"
        " (YYYY-MM-DDThh:mm:ss+hh:mm, -hh:mm or Z)"
    ]


def test_billing_country_code_and_label_stay_in_step_as_in_a_picklist_org(crm: Crm) -> None:
    # S2: with State and Country/Territory Picklists the code is BillingCountryCode and
    # BillingCountry holds the label
    created = crm.http.post(
        f"{V}/sobjects/Account",
        json={"Name": "Seoul Co", "BillingCountryCode": "KR"},
        headers=crm.auth,
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    fields = {"fields": "BillingCountry,BillingCountryCode"}
    got = crm.get(f"{V}/sobjects/Account/{rid}", params=fields).json()
    assert (got["BillingCountryCode"], got["BillingCountry"]) == ("KR", "Korea, Republic of")
    by_label = crm.http.patch(
        f"{V}/sobjects/Account/{rid}", json={"BillingCountry": "Germany"}, headers=crm.auth
    )
    assert by_label.status_code == 204
    got = crm.get(f"{V}/sobjects/Account/{rid}", params=fields).json()
    assert (got["BillingCountryCode"], got["BillingCountry"]) == ("DE", "Germany")
    bad = crm.http.patch(
        f"{V}/sobjects/Account/{rid}", json={"BillingCountryCode": "XX"}, headers=crm.auth
    )
    assert bad.status_code == 400
    assert bad.json()[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert bad.json()[0]["fields"] == ["BillingCountryCode"]
    q = crm.query(f"SELECT BillingCountryCode FROM Account WHERE Id = '{rid}'")
    assert q["records"][0]["BillingCountryCode"] == "DE"
