"""The Salesforce client against the sandbox CRM over loopback HTTP: full and incremental reads,
faults, the quota error, re-login, external-id upsert, and secrets kept out of errors and logs.

Connections are ``AIRFLOW_CONN_ERPSYNC_CRM`` JSON set with monkeypatch: Airflow 3.3's
``BaseHook.get_connection`` resolves env connections in a plain process (no task context,
metadata DB or ``unit_test_mode`` needed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import httpx
import pytest

from erpsync.connectors.cursors import BoundaryDedupe, Watermark, salesforce_incremental_soql
from erpsync.connectors.errors import AuthError, ConnectorError, QuotaExhausted, VendorError
from erpsync.connectors.http import RetryPolicy
from erpsync.connectors.salesforce import SalesforceClient, UpdateNotApplied, check_my_domain
from tests.support.connections import crm_conn, fault_free_client

FAST = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05, max_total_wait=20.0)
QUERIES = {
    "Account": "SELECT Id, Name FROM Account",
    "Opportunity": "SELECT Id, Name FROM Opportunity",
}
CANARY_PW = "canary-pw-7f3a9c21e"
CANARY_EXTRA = "canary-extra-5d1b8e44"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=3)
    yield handle
    handle.stop()


_conn = crm_conn


@pytest.fixture
def crm(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_CRM", _conn(sandbox.urls["crm"]))
    with fault_free_client(sandbox.urls["crm"], lambda: SalesforceClient(policy=FAST)) as c:
        yield c


def _ids(pages) -> list[str]:
    return [r["Id"] for page in pages for r in page]


def test_full_read_returns_exactly_the_sandbox_records(crm, sandbox):
    store = sandbox.ctx.stores["crm"]
    for sobject, soql in QUERIES.items():
        ids = _ids(crm.query(soql, batch_size=200))
        assert len(ids) == len(set(ids))
        assert set(ids) == set(store.ids(sobject))
    assert crm.api_usage is not None and crm.api_usage[0] > 0


def test_paging_follows_next_records_url(crm, sandbox, monkeypatch):
    # The Opportunity list is longer than one 200-record batch only on bigger firms; force
    # several pages on Account + Opportunity via SOQL LIMIT-free reads and the smallest batch.
    pages = list(crm.query("SELECT Id FROM Opportunity ORDER BY Id", batch_size=200))
    assert sum(len(p) for p in pages) == len(sandbox.ctx.stores["crm"].ids("Opportunity"))
    assert all(len(p) <= 200 for p in pages)


def test_reads_survive_5xx_429_and_changes_during_paging(crm, sandbox):
    httpx.put(
        f"{sandbox.urls['crm']}/__admin/faults",
        json={
            "seed": 11,
            "error_rate_5xx": 0.4,
            "burst_429": {"count": 2, "retry_after": 1, "start_after": 1},
            "mutate_during_paging_rate": 1.0,
            "mutate_count": 3,
        },
    ).raise_for_status()
    store = sandbox.ctx.stores["crm"]
    for _ in range(4):
        for sobject, soql in QUERIES.items():
            ids = _ids(crm.query(soql, batch_size=200))
            assert sorted(ids) == sorted(store.ids(sobject)), "every record exactly once"
    causes = crm.stats.retry_causes
    assert causes["429"] == 2
    assert sum(n for c, n in causes.items() if c.startswith("5")) >= 1
    injected = httpx.get(f"{sandbox.urls['crm']}/__admin/faults").json()["stats"]["injected"]
    assert crm.stats.retries == injected.get("429", 0) + injected.get("5xx", 0)


def test_quota_exhausted_is_raised_at_once_without_retry(crm, sandbox):
    admin = f"{sandbox.urls['crm']}/__admin/crm"
    list(crm.query("SELECT Id FROM Account"))  # logged in
    httpx.put(admin, json={"daily_limit": 50, "api_usage": 50}).raise_for_status()
    try:
        before = crm.stats.requests
        with pytest.raises(QuotaExhausted) as info:
            list(crm.query("SELECT Id FROM Account"))
        assert crm.stats.requests == before + 1, "a spent 24 h quota is not retried"
        assert crm.stats.retries == 0
        assert info.value.status == 403 and info.value.code == "REQUEST_LIMIT_EXCEEDED"
        assert "not retried" in str(info.value)
    finally:
        httpx.put(admin, json={"daily_limit": 100000, "api_usage": 0}).raise_for_status()


def test_an_expired_session_logs_in_again_once(crm, sandbox):
    list(crm.query("SELECT Id FROM Account"))
    httpx.post(f"{sandbox.urls['crm']}/__admin/crm/revoke-sessions").raise_for_status()
    ids = _ids(crm.query("SELECT Id FROM Account"))
    assert set(ids) == set(sandbox.ctx.stores["crm"].ids("Account"))
    assert crm.stats.reauthentications == 1


def test_incremental_read_returns_exactly_the_changed_records(crm, sandbox):
    fields = ["Name", "IsDeleted"]
    first = BoundaryDedupe(Watermark(), modstamp_field="SystemModstamp", id_field="Id")
    loaded = [
        r
        for page in first.pages(
            crm.query(salesforce_incremental_soql("Account", fields, None), include_deleted=True)
        )
        for r in page
    ]
    assert len(loaded) == len(sandbox.ctx.stores["crm"].ids("Account", include_deleted=True))
    mark = first.next_watermark()

    # Nothing changed: the inclusive re-read brings back the boundary records, all deduped.
    again = BoundaryDedupe(mark, modstamp_field="SystemModstamp", id_field="Id")
    soql = salesforce_incremental_soql("Account", fields, mark)
    assert ">= " in soql and soql.endswith("ORDER BY SystemModstamp, Id")
    assert [r for p in again.pages(crm.query(soql, include_deleted=True)) for r in p] == []

    since = httpx.get(f"{sandbox.urls['crm']}/__admin/changes").json()["last_seq"]
    httpx.post(f"{sandbox.urls['crm']}/__admin/advance", json={"steps": 2, "seed": 5})
    changes = httpx.get(f"{sandbox.urls['crm']}/__admin/changes", params={"since": since}).json()
    expected = {
        c["id"] for c in changes["changes"] if c["system"] == "crm" and c["resource"] == "Account"
    }
    assert expected, "the advance should touch accounts"
    inc = BoundaryDedupe(mark, modstamp_field="SystemModstamp", id_field="Id")
    got = [
        r["Id"]
        for p in inc.pages(crm.query(salesforce_incremental_soql("Account", fields, mark)))
        for r in p
    ]
    assert sorted(got) == sorted(expected)
    assert inc.next_watermark().modstamp > mark.modstamp


def test_upsert_by_external_id_is_idempotent_and_retried(crm, sandbox):
    account = sandbox.ctx.stores["crm"].ids("Account")[0]
    body = {
        "Name": "Connector test deal",
        "AccountId": account,
        "StageName": "Prospecting",
        "CloseDate": "2026-12-31",
    }
    first = crm.upsert_by_external_id("Opportunity", "PSA_Project_Id__c", "ctest-1", body)
    assert first.created and first.id
    httpx.put(
        f"{sandbox.urls['crm']}/__admin/faults", json={"seed": 4, "error_rate_5xx": 0.5}
    ).raise_for_status()
    for _ in range(3):
        again = crm.upsert_by_external_id(
            "Opportunity", "PSA_Project_Id__c", "ctest-1", {**body, "StageName": "Qualification"}
        )
        assert again.id == first.id and not again.created
    httpx.put(f"{sandbox.urls['crm']}/__admin/faults", json={}).raise_for_status()
    record = crm.get("Opportunity", first.id)
    assert record["StageName"] == "Qualification"
    assert crm.get("Opportunity", "006000000000000AAA") is None
    matches = list(
        crm.query("SELECT Id FROM Opportunity WHERE PSA_Project_Id__c = 'ctest-1'", batch_size=200)
    )
    assert _ids(matches) == [first.id]


def _pack_requests(log_path, count: int) -> list[dict]:
    """The contract log's lines once it holds ``count`` (written just after each answer)."""
    import time

    from erpsync_sandbox.contract import is_pack_request, read_log

    deadline = time.monotonic() + 5
    while len(lines := list(read_log(log_path))) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return [rec for rec in lines if is_pack_request(rec)]


def test_update_is_the_documented_patch_by_record_id_and_reads_back(
    crm, sandbox, tmp_path, monkeypatch
):
    # S6: the write-back used PATCH .../Opportunity/Id/{id} (undocumented); update() sends
    # PATCH .../Opportunity/{id} (204) and GET ...?fields= to check the value took
    from erpsync_sandbox.contract import CONTRACT_LOG_ENV

    store = sandbox.ctx.stores["crm"]
    opp = store.ids("Opportunity")[0]
    crm.get("Opportunity", opp)  # log in before the log starts
    log = tmp_path / "contract.jsonl"
    monkeypatch.setenv(CONTRACT_LOG_ENV, str(log))
    got = crm.update("Opportunity", opp, {"PSA_Project_Id__c": "ctest-77", "Cap_Value__c": 12.5})
    assert got == {"PSA_Project_Id__c": "ctest-77", "Cap_Value__c": 12.5}
    assert store.get("Opportunity", opp)["PSA_Project_Id__c"] == "ctest-77"
    sent = _pack_requests(log, 2)
    assert [(r["method"], r["route"], r["status"]) for r in sent] == [
        ("PATCH", "/services/data/{version}/sobjects/{sobject}/{record_id}", 204),
        ("GET", "/services/data/{version}/sobjects/{sobject}/{record_id}", 200),
    ]
    assert [n for r in sent for n in r["undocumented"]] == []


def test_update_of_a_deleted_record_fails_and_never_creates(tmp_path, monkeypatch):
    from erpsync_sandbox.serve import start_sandbox

    # its own sandbox: the shared one's delete log is asserted by the deleted-feed test
    own = start_sandbox(tmp_path / "sandbox", size="small", seed=5, services=("crm",))
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_CRM", _conn(own.urls["crm"]))
    crm = SalesforceClient(policy=FAST)
    store = own.ctx.stores["crm"]
    opp = store.ids("Opportunity")[1]
    store.delete("Opportunity", opp, soft=True, set_fields={"IsDeleted": True})
    try:
        _update_deleted(crm, opp)
    finally:
        crm.close()
        own.stop()


def _update_deleted(crm: SalesforceClient, opp: str) -> None:
    with pytest.raises(VendorError) as err:
        crm.update("Opportunity", opp, {"PSA_Project_Id__c": "ctest-gone"})
    assert (err.value.status, err.value.code) == (404, "ENTITY_IS_DELETED")
    with pytest.raises(VendorError) as err:
        crm.update("Opportunity", "006000000000000AAA", {"PSA_Project_Id__c": "x"})
    assert (err.value.status, err.value.code) == (404, "NOT_FOUND")
    query = "SELECT COUNT() FROM Opportunity WHERE PSA_Project_Id__c = 'ctest-gone'"
    assert next(iter(crm.query(query)), []) == []


def test_update_that_reads_back_other_values_is_not_reported_done(crm, sandbox, monkeypatch):
    opp = sandbox.ctx.stores["crm"].ids("Opportunity")[2]
    real_get = crm.get

    def rewritten(sobject, record_id, fields=None):  # a trigger that rewrites the value
        record = real_get(sobject, record_id, fields)
        return {**record, "PSA_Project_Id__c": "something-else"}

    monkeypatch.setattr(crm, "get", rewritten)
    with pytest.raises(UpdateNotApplied) as err:
        crm.update("Opportunity", opp, {"PSA_Project_Id__c": "ctest-88"})
    assert err.value.differences == {
        "PSA_Project_Id__c": {"sent": "ctest-88", "read": "something-else"}
    }


@pytest.mark.parametrize(
    "host", ["https://login.salesforce.com", "https://test.salesforce.com", "login.salesforce.com"]
)
def test_generic_login_hosts_are_refused_with_the_my_domain_hint(host):
    # S1: the client-credentials flow is served on the org's My Domain host only
    with pytest.raises(ConnectorError, match=r"https://<MyDomain>\.my\.salesforce\.com"):
        check_my_domain(host + "/services/oauth2/token")
    check_my_domain("https://acme.my.salesforce.com/services/oauth2/token")
    check_my_domain("https://acme--uat.sandbox.my.salesforce.com/services/oauth2/token")


def test_a_connection_on_login_salesforce_com_fails_at_configure_time(monkeypatch):
    conn = json.loads(_conn("http://127.0.0.1:9"))
    conn.update({"host": "login.salesforce.com", "schema": "https", "port": None})
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_CRM", json.dumps(conn))
    client = SalesforceClient(policy=FAST)
    with pytest.raises(ConnectorError, match="My Domain"):
        list(client.query("SELECT Id FROM Account"))
    with pytest.raises(ConnectorError, match="My Domain"):  # refused again, never half-open
        client.get("Account", "001000000000000AAA")
    conn.update({"host": "127.0.0.1", "schema": "http", "port": 9})
    conn["extra"]["token_url"] = "https://test.salesforce.com/services/oauth2/token"
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_CRM", json.dumps(conn))
    with pytest.raises(ConnectorError, match="My Domain"):
        SalesforceClient(policy=FAST).token_url()


def test_incremental_soql_literal_is_a_documented_form():
    # S2a: 2026-11-02T09:00:00.123+0000 (milliseconds, colon-less offset) is not documented
    from erpsync.sync.sources import sf_datetime

    moment = dt.datetime(2026, 11, 2, 10, 0, 0, 987654, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert sf_datetime(moment) == "2026-11-02T09:00:00Z"


# --------------------------------------------------------------------------- secrets


def _assert_clean(texts, *canaries):
    for text in texts:
        for canary in canaries:
            assert canary not in text


def test_wrong_credentials_fail_clearly_without_leaking_them(sandbox, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_CRM",
        _conn(sandbox.urls["crm"], password="", client_secret=CANARY_EXTRA + "x" + CANARY_PW),
    )
    client = SalesforceClient(policy=FAST)
    with pytest.raises(AuthError) as info:
        list(client.query("SELECT Id FROM Account"))
    assert "token request was refused" in str(info.value)
    assert "invalid_client" in str(info.value)
    out = capsys.readouterr()
    _assert_clean([str(info.value), repr(info.value), caplog.text, out.out, out.err], CANARY_PW)
    _assert_clean([str(info.value), caplog.text, out.out, out.err], CANARY_EXTRA)


def test_deleted_feed_lists_the_soft_deletes_of_an_advance(crm, sandbox):
    admin = sandbox.urls["crm"]
    start = dt.datetime.fromisoformat(
        httpx.get(f"{admin}/__admin/clock").json()["now"].replace("Z", "+00:00")
    ).replace(second=0, microsecond=0)
    since = httpx.get(f"{admin}/__admin/changes").json()["last_seq"]
    httpx.post(f"{admin}/__admin/advance", json={"steps": 3, "seed": 8}).raise_for_status()
    changes = httpx.get(f"{admin}/__admin/changes", params={"since": since}).json()["changes"]
    expected = {
        c["id"]
        for c in changes
        if c["system"] == "crm" and c["resource"] == "Opportunity" and c["op"] == "delete"
    }
    assert expected, "an advance soft-deletes open opportunities"
    end = start + dt.timedelta(days=30)
    feed = crm.deleted("Opportunity", start, end)
    assert set(feed.ids) == expected
    assert feed.covers(start) and feed.latest_covered is not None
    assert all(r.deleted_date >= start for r in feed.records)
    # queryAll shows the same records with IsDeleted = true
    soql = "SELECT Id, IsDeleted FROM Opportunity WHERE IsDeleted = true"
    rows = [r for page in crm.query(soql, include_deleted=True) for r in page]
    assert expected <= {r["Id"] for r in rows}
