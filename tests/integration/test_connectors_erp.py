"""The Business Central client against the sandbox ERP over loopback HTTP: company discovery,
full and incremental reads (standard and custom API), faults, a create whose answer is dropped
after the commit (raised, not resent; then found by its number), ETag patches, and secrets kept
out of errors and logs. Connections are ``AIRFLOW_CONN_ERPSYNC_ERP`` JSON (monkeypatch)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from erpsync.connectors.business_central import (
    VAT_POSTING_SETUP_SERVICE,
    BusinessCentralClient,
    odata_quote,
)
from erpsync.connectors.cursors import BoundaryDedupe, Watermark, bc_incremental_filter
from erpsync.connectors.errors import AuthError, VendorError, WriteOutcomeUnknown
from erpsync.connectors.http import RetryPolicy
from tests.support.connections import erp_conn, fault_free_client

FAST = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05, max_total_wait=20.0)
CANARY_PW = "canary-erp-pw-0b7e55"
CANARY_EXTRA = "canary-erp-extra-c3d912"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=3)
    yield handle
    handle.stop()


_conn = erp_conn


@pytest.fixture
def erp(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_ERP", _conn(sandbox.urls["erp"]))
    with fault_free_client(sandbox.urls["erp"], lambda: BusinessCentralClient(policy=FAST)) as c:
        yield c


def _ids(pages) -> list[str]:
    return [r["id"] for page in pages for r in page]


def test_company_is_discovered_and_full_reads_match_the_store(erp, sandbox):
    assert erp.company_id == sandbox.ctx.erp_company_id
    store = sandbox.ctx.stores["erp"]
    for entity in ("customers", "employees", "taxGroups", "projects"):
        ids = _ids(erp.iter_pages(entity, page_size=7))
        assert len(ids) == len(set(ids)), entity
        assert set(ids) == set(store.ids(entity)), entity
    setup = [
        f"{r['VAT_Bus_Posting_Group']}|{r['VAT_Prod_Posting_Group']}"
        for page in erp.iter_web_service(VAT_POSTING_SETUP_SERVICE, page_size=3)
        for r in page
    ]
    assert sorted(setup) == sorted(store.ids("vatPostingSetup"))
    selected = next(erp.iter_pages("customers", select=["id", "number"], page_size=3))
    assert set(selected[0]) <= {"id", "number", "@odata.etag"}


def test_company_id_from_the_connection_extra_skips_discovery(sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_ERP",
        _conn(sandbox.urls["erp"], company_id=sandbox.ctx.erp_company_id),
    )
    client = BusinessCentralClient(policy=FAST)
    assert client.company_id == sandbox.ctx.erp_company_id
    assert client.stats.requests == 0


def test_reads_survive_5xx_429_and_changes_during_paging(erp, sandbox):
    erp.company_id  # noqa: B018 - discover before the faults start
    httpx.put(
        f"{sandbox.urls['erp']}/__admin/faults",
        json={
            "seed": 2,
            "error_rate_5xx": 0.3,
            "burst_429": {"count": 2, "retry_after": 1, "start_after": 1},
            "mutate_during_paging_rate": 1.0,
            "mutate_count": 2,
        },
    ).raise_for_status()
    store = sandbox.ctx.stores["erp"]
    ids = _ids(erp.iter_pages("customers", page_size=4))
    assert sorted(ids) == sorted(store.ids("customers")), "every record exactly once"
    injected = httpx.get(f"{sandbox.urls['erp']}/__admin/faults").json()["stats"]["injected"]
    assert injected.get("mutate", 0) >= 1
    assert erp.stats.retry_causes["429"] == 2
    assert erp.stats.retries == injected.get("429", 0) + injected.get("5xx", 0)
    assert injected.get("5xx", 0) >= 1


def test_incremental_read_returns_exactly_the_changed_records(erp, sandbox):
    entity = "customers"
    first = BoundaryDedupe(Watermark(), modstamp_field="lastModifiedDateTime")
    assert len(_ids(first.pages(erp.iter_pages(entity)))) == len(
        sandbox.ctx.stores["erp"].ids(entity)
    )
    mark = first.next_watermark()
    flt = bc_incremental_filter(mark)
    assert flt.startswith("lastModifiedDateTime ge ")
    quiet = BoundaryDedupe(mark, modstamp_field="lastModifiedDateTime")
    assert _ids(quiet.pages(erp.iter_pages(entity, filter=flt))) == []

    since = httpx.get(f"{sandbox.urls['erp']}/__admin/changes").json()["last_seq"]
    created = erp.create(entity, {"displayName": "Incremental Test Ltd"})
    current = erp.get(entity, created["id"])
    erp.patch(
        entity, created["id"], {"displayName": "Incremental Test Ltd."}, current["@odata.etag"]
    )
    httpx.post(f"{sandbox.urls['erp']}/__admin/advance", json={"steps": 3, "seed": 1})
    changes = httpx.get(f"{sandbox.urls['erp']}/__admin/changes", params={"since": since}).json()
    mine = [c for c in changes["changes"] if c["system"] == "erp" and c["resource"] == entity]
    expected = {c["id"] for c in mine if c["op"] != "delete"}
    assert created["id"] in expected
    inc = BoundaryDedupe(mark, modstamp_field="lastModifiedDateTime")
    got = _ids(inc.pages(erp.iter_pages(entity, filter=bc_incremental_filter(mark))))
    assert sorted(got) == sorted(expected)


def test_a_create_dropped_after_commit_raises_and_is_found_by_its_number(erp, sandbox):
    number = "ERPSYNC-CT-0001"
    erp.company_id  # noqa: B018
    assert erp.find_one("customers", f"number eq {odata_quote(number)}") is None
    httpx.put(
        f"{sandbox.urls['erp']}/__admin/faults",
        json={"drop_after_commit_rate": 1.0, "drop_path_contains": "customers"},
    ).raise_for_status()
    sent = erp.stats.requests
    with pytest.raises(WriteOutcomeUnknown) as info:
        erp.create("customers", {"number": number, "displayName": "Dropped Answer AG"})
    assert erp.stats.requests == sent + 1, "never resent automatically"
    assert "may have committed" in str(info.value)
    drops = httpx.get(f"{sandbox.urls['erp']}/__admin/faults").json()["stats"]["injected"]["drop"]
    assert drops == 1
    httpx.put(f"{sandbox.urls['erp']}/__admin/faults", json={}).raise_for_status()
    found = erp.find_one("customers", f"number eq {odata_quote(number)}")
    assert found is not None and found["displayName"] == "Dropped Answer AG"
    matches = sandbox.ctx.stores["erp"].scan_rows("customers", where={"number": number})
    assert len(matches) == 1, "committed exactly once"


def test_patch_uses_the_etag_is_retried_and_a_stale_etag_is_refused(erp, sandbox):
    customer = next(erp.iter_pages("customers", page_size=1))[0]
    httpx.put(
        f"{sandbox.urls['erp']}/__admin/faults", json={"seed": 3, "error_rate_5xx": 0.5}
    ).raise_for_status()
    updated = erp.patch(
        "customers", customer["id"], {"displayName": "Renamed Co"}, customer["@odata.etag"]
    )
    httpx.put(f"{sandbox.urls['erp']}/__admin/faults", json={}).raise_for_status()
    assert updated["displayName"] == "Renamed Co"
    assert updated["@odata.etag"] != customer["@odata.etag"]
    retries = erp.stats.retries
    with pytest.raises(VendorError) as info:
        erp.patch("customers", customer["id"], {"displayName": "Again"}, customer["@odata.etag"])
    assert info.value.status == 409 and info.value.code == "Request_EntityChanged"
    assert erp.stats.retries == retries
    assert erp.get("customers", "00000000-0000-0000-0000-000000000000") is None


def test_bad_credentials_fail_clearly_without_leaking_them(sandbox, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_ERP",
        _conn(sandbox.urls["erp"], password=CANARY_PW, client_secret_backup=CANARY_EXTRA),
    )
    client = BusinessCentralClient(policy=FAST)
    with pytest.raises(AuthError) as info:
        client.company_id  # noqa: B018
    assert "token request was refused" in str(info.value)
    out = capsys.readouterr()
    for text in (str(info.value), repr(info.value), caplog.text, out.out, out.err):
        assert CANARY_PW not in text and CANARY_EXTRA not in text


def test_token_url_defaults_to_microsoft_entra_id(monkeypatch):
    """B0: without ``token_url``/``token_path`` the token request goes to Entra ID, not to the
    API host (which serves no tokens)."""
    conn = json.loads(_conn("http://api.businesscentral.dynamics.com:443"))
    conn["schema"] = "https"
    del conn["extra"]["token_path"]
    conn["extra"]["tenant"] = "contoso.onmicrosoft.com"
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_ERP", json.dumps(conn))
    client = BusinessCentralClient(policy=FAST)
    client._ensure_session()  # reads the connection; no request
    try:
        assert client.stats.requests == 0
        assert (
            client._token_url()
            == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        )
    finally:
        client.close()
    conn["extra"]["token_url"] = "https://login.example/{tenant}/token"
    monkeypatch.setenv("AIRFLOW_CONN_ERPSYNC_ERP", json.dumps(conn))
    client = BusinessCentralClient(policy=FAST)
    client._ensure_session()
    try:
        assert client._token_url() == "https://login.example/contoso.onmicrosoft.com/token"
    finally:
        client.close()


def test_web_service_url_names_the_company(erp, sandbox):
    """Page 472 is read at /ODataV4/Company('<name>')/VATPostingSetup (name from /companies)."""
    path = erp.web_service_path(VAT_POSTING_SETUP_SERVICE)
    name = sandbox.ctx.stores["erp"].get("companies", sandbox.ctx.erp_company_id)["name"]
    assert path == f"/v2.0/sandbox/production/ODataV4/Company('{name}')/VATPostingSetup"
