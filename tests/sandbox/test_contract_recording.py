"""The request-recording contract check (tests/contract_log.py) end to end: the pack's own
connectors call a real sandbox over HTTP with the contract log pointed at a file of the test's
own; the checker reports exactly the undocumented uses of the pack's requests, nothing for a
documented call or for a third-party client, and fails the session when there is one."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from erpsync.connectors.harvest import HarvestClient
from erpsync.connectors.http import RetryPolicy
from erpsync.connectors.salesforce import SalesforceClient
from tests import contract_log

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, max_total_wait=5.0)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), size="small", seed=5)
    yield handle
    handle.stop()


def _conn(url: str, **fields) -> str:
    host, port = url.removeprefix("http://").split(":")
    return json.dumps(
        {"conn_type": "http", "host": host, "port": int(port), "schema": "http", **fields}
    )


@pytest.fixture
def crm(sandbox, monkeypatch, private_contract_log):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_CRM",
        _conn(
            sandbox.urls["crm"],
            login="erpsync-sandbox",
            password="sandbox-crm-secret",
            extra={"token_path": "/services/oauth2/token"},
        ),
    )
    client = SalesforceClient(policy=FAST)
    yield client
    client.close()


@pytest.fixture
def psa(sandbox, monkeypatch, private_contract_log):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERPSYNC_PSA",
        _conn(
            sandbox.urls["psa"],
            password="sandbox-psa-token",
            extra={"account_id": "100200", "user_agent": "erpsync tests (t@example.com)"},
        ),
    )
    client = HarvestClient(policy=FAST)
    yield client
    client.close()


def _summary(report: contract_log.ContractReport) -> list[tuple[str, str, str, str]]:
    return [(v["service"], v["method"], v["route"], v["undocumented"]) for v in report.violations]


def test_an_undocumented_parameter_sent_by_the_pack_is_reported_exactly(crm, private_contract_log):
    # Salesforce takes the query batch size in the Sforce-Query-Options header; as a query
    # parameter it is silently ignored, so a client relying on it would page wrongly unnoticed.
    crm.request_json(
        "GET",
        "/services/data/v60.0/query",
        params={"q": "SELECT Id FROM Account", "batchSize": "200"},
    )
    report = contract_log.check(private_contract_log)
    assert _summary(report) == [
        ("crm", "GET", "/services/data/{version}/query", "query parameter 'batchSize'")
    ]
    assert report.pack_requests == 2  # the token request and the query
    assert not report.ok


def test_a_field_salesforce_lacks_is_refused_and_reported(crm, private_contract_log):
    """A refusal is recorded too: a pack query of a field the org does not have fails with
    Salesforce's INVALID_FIELD, and the contract log names it (a query of the shipped fields of
    a vendor that lacks one would otherwise only show as a failed sync)."""
    from erpsync.connectors.errors import VendorError

    with pytest.raises(VendorError):
        list(crm.query("SELECT Id, Approval_Status__c FROM Account"))
    report = contract_log.check(private_contract_log)
    ((service, method, route, what),) = _summary(report)
    assert (service, method, route) == ("crm", "GET", "/services/data/{version}/query")
    assert what.startswith("INVALID_FIELD:") and "Approval_Status__c" in what


def test_documented_calls_of_the_pack_report_nothing(crm, psa, private_contract_log):
    pages = list(crm.query("SELECT Id, Name FROM Account"))
    assert pages and pages[0]
    assert psa.get("company") is not None
    assert list(psa.iter_pages("tasks"))
    report = contract_log.check(private_contract_log)
    assert report.violations == []
    assert report.pack_requests >= 4
    assert report.ok


def test_a_third_party_client_is_recorded_but_not_counted(sandbox, crm, private_contract_log):
    url = sandbox.urls["crm"]
    token = httpx.post(
        f"{url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erpsync-sandbox",
            "client_secret": "sandbox-crm-secret",
        },
        headers={"User-Agent": "simple-salesforce/1.12"},
    ).json()["access_token"]
    answer = httpx.get(
        f"{url}/services/data/v60.0/query",
        params={"q": "SELECT Id FROM Account", "batchSize": "200"},
        headers={"Authorization": f"Bearer {token}", "User-Agent": "simple-salesforce/1.12"},
    )
    assert answer.status_code == 200
    records = list(contract_log.contract.read_log(private_contract_log))
    assert [r["undocumented"] for r in records if r["route"].endswith("/query")] == [
        ["query parameter 'batchSize'"]
    ]
    report = contract_log.check(private_contract_log)
    assert (report.requests, report.pack_requests, report.violations) == (2, 0, [])


def test_a_request_to_no_route_is_reported(psa, private_contract_log):
    # Harvest API v2 has no milestones resource at all (audit H16-H18): any call is a 404.
    assert psa.get("milestone_plans/1") is None
    report = contract_log.check(private_contract_log)
    assert _summary(report) == [
        ("psa", "GET", "/v2/milestone_plans/1", "no such route: GET /v2/milestone_plans/1")
    ]


def test_the_session_fails_and_lists_what_was_undocumented(crm, private_contract_log):
    crm.request_json(
        "GET",
        "/services/data/v60.0/query",
        params={"q": "SELECT Id FROM Account", "batchSize": "200"},
    )
    config = SimpleNamespace()
    setattr(config, contract_log._STASH_ATTR, private_contract_log)
    session = SimpleNamespace(config=config, exitstatus=0)
    report = contract_log.finish(session)
    assert session.exitstatus == 1
    lines = contract_log.format_report(report)
    assert lines[0].endswith("2 pack request(s) recorded (2 in all), 1 undocumented use(s)")
    assert lines[1:] == ["  crm GET /services/data/{version}/query: query parameter 'batchSize'"]


def test_a_clean_log_leaves_the_session_status_alone(psa, private_contract_log):
    assert psa.get("users/me") is not None
    config = SimpleNamespace()
    setattr(config, contract_log._STASH_ATTR, private_contract_log)
    session = SimpleNamespace(config=config, exitstatus=0)
    report = contract_log.finish(session)
    assert (session.exitstatus, report.pack_requests, report.violations) == (0, 1, [])


def test_only_the_controller_starts_the_log(monkeypatch):
    from erpsync_sandbox import contract

    worker = SimpleNamespace(workerinput={"workerid": "gw0"})
    monkeypatch.setenv(contract.CONTRACT_LOG_ENV, "/inherited/from/controller.jsonl")
    assert contract_log.start(worker) is None
    assert contract_log.os.environ[contract.CONTRACT_LOG_ENV] == "/inherited/from/controller.jsonl"
    controller = SimpleNamespace()
    path = contract_log.start(controller)
    assert path is not None and path.exists() and path.read_text() == ""
    assert contract_log.os.environ[contract.CONTRACT_LOG_ENV] == str(path)


def test_state_dependencies_keep_the_undeclared_query_check(tmp_path):
    """The routers reach their service state through a dependency that takes the raw Request
    (contract.state_dependency); a route whose handler reads no raw Request still has its
    query parameters checked, exactly as when the handlers were closures."""
    from erpsync_sandbox.context import SandboxContext
    from erpsync_sandbox.contract import declared_query_params
    from erpsync_sandbox.erp.app import create_app as erp_app
    from erpsync_sandbox.psa.app import create_app as psa_app

    ctx = SandboxContext.open(tmp_path / "state")
    try:
        routes = {
            (route.name, method): route
            for app in (erp_app(ctx), psa_app(ctx))
            for route in app.router.routes
            for method in getattr(route, "methods", None) or ()
        }
        # no raw Request in the handler: only the declared parameters are documented
        assert declared_query_params(routes[("delete_entity", "DELETE")]) == frozenset()
        assert declared_query_params(routes[("post_invoice", "POST")]) == frozenset()
        assert declared_query_params(routes[("accounts", "GET")]) == frozenset()
        assert declared_query_params(routes[("get_changes", "GET")]) == {
            "since",
            "limit",
            "source",
        }
        # a handler that takes the raw Request may read any parameter itself
        assert declared_query_params(routes[("list_entities", "GET")]) is None
    finally:
        ctx.close()
