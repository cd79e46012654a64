"""The console's framework: Airflow authenticates every request, the auth manager decides what
each role may do, cross-site state changes are refused, and what the pages share (security
headers, CSV, charts) behaves."""

from __future__ import annotations

import concurrent.futures
import csv
import io
from decimal import Decimal

import pytest

from erpsync import exceptions_queue
from erpsync.console import charts
from erpsync.console.permissions import Action, allowed_actions
from erpsync.console.web import csv_response


def test_an_anonymous_caller_is_refused_and_a_browser_is_sent_to_airflows_login(console):
    anonymous = console(None)
    api = anonymous.get("/erpsync/")
    assert api.status_code == 401
    page = anonymous.page("/erpsync/?from=mail")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/auth/login?next=")
    assert "%2Ferpsync%2F%3Ffrom%3Dmail" in page.headers["location"]


def test_a_forged_token_is_refused(console):
    forged = console(None)
    forged.http.cookies.set("_token", "not-a-jwt")
    assert forged.get("/erpsync/").status_code == 403


def test_a_user_without_a_role_may_not_read_the_console(console, console_airflow):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    nobody = console(None)
    token = console_airflow.generate_jwt(SimpleAuthManagerUser(username="nobody", role=None))
    nobody.http.cookies.set("_token", token)
    answer = nobody.get("/erpsync/")
    assert answer.status_code == 403
    assert "may not read erpsync" in answer.json()["detail"]


@pytest.mark.parametrize("role", ["auditor", "finance_ops", "data_engineer"])
def test_every_role_reads_the_landing_page_with_its_name_shown(console, role, warehouse_db):
    import psycopg

    with psycopg.connect(warehouse_db) as conn:
        exceptions_queue.raise_exception(
            conn,
            exceptions_queue.INVALID_TAX_ID,
            "client",
            "001A",
            "finance_ops",
            {"vat_id": "DE123"},
            "run-1",
            amount_at_stake=Decimal("1200.50"),
            currency="EUR",
        )
    client = console(role)
    page = client.page("/erpsync/")
    assert page.status_code == 200, page.text
    assert client.user_name in page.text
    assert 'data-kpi="exceptions"' in page.text
    assert "1,200.50 EUR" in page.text
    assert ("read only" in page.text) is (role == "auditor")


def test_a_bearer_token_works_as_the_cookie_does(console, console_airflow):
    from tests.console.conftest import token_for

    client = console(None)
    answer = client.get(
        "/erpsync/", headers={"Authorization": f"Bearer {token_for(console_airflow, 'auditor')}"}
    )
    assert answer.status_code == 200


def test_what_each_demo_role_may_do(console_airflow):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    def actions(role):
        return allowed_actions(SimpleAuthManagerUser(username="x", role=role), console_airflow)

    assert actions("viewer") == {Action.READ}
    assert actions("user") == set(Action)
    assert actions("op") == set(Action)
    assert actions(None) == set()


@pytest.mark.parametrize(
    ("headers", "content", "why"),
    [
        ({}, '{"a": 1}', "missing X-Erpsync-Request header"),
        ({"X-Erpsync-Request": "1"}, "a=1", "the body must be JSON"),
        (
            {"X-Erpsync-Request": "1", "Origin": "https://evil.example"},
            '{"a": 1}',
            "cross-site request",
        ),
        ({"X-Erpsync-Request": "1", "Origin": "null"}, '{"a": 1}', "cross-site request"),
        ({"X-Erpsync-Request": "1", "Sec-Fetch-Site": "cross-site"}, '{"a": 1}', "cross-site"),
    ],
)
def test_a_state_change_from_another_site_is_refused(console, headers, content, why):
    client = console("finance_ops")
    ctype = "application/json" if content.startswith("{") else "application/x-www-form-urlencoded"
    answer = client.post("/erpsync/", content=content, headers={"Content-Type": ctype, **headers})
    assert answer.status_code == 403
    assert why in answer.json()["detail"]


def test_a_same_origin_json_request_passes_the_guard(console):
    # the landing page has no POST route: passing the guard shows as 405, not 403
    answer = console("finance_ops").post_action("/erpsync/", {"a": 1})
    assert answer.status_code == 405


def test_pages_may_be_framed_only_by_airflow_and_run_only_the_consoles_script(console):
    page = console("auditor").page("/erpsync/")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in policy
    assert "script-src 'self'" in policy
    assert page.headers["cache-control"] == "no-store"
    script = console("auditor").get("/erpsync/static/console.js")
    assert script.status_code == 200
    assert "X-Erpsync-Request" in script.text
    assert "<script>" not in page.text  # no inline script: the policy would block it


def test_a_csv_keeps_money_exact_and_defuses_formulas():
    import asyncio

    response = csv_response(
        "open exceptions", ["who", "amount"], [["=HYPERLINK(1)", Decimal("1234.5600")], ["x", None]]
    )
    assert response.headers["content-disposition"] == 'attachment; filename="open_exceptions.csv"'

    async def body():
        return "".join([chunk async for chunk in response.body_iterator])

    # a fresh event loop in its own thread: another test in this worker may have left one running
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        text = pool.submit(asyncio.run, body()).result()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["who", "amount"], ["'=HYPERLINK(1)", "1234.5600"], ["x", ""]]


def test_a_line_chart_is_an_accessible_svg_with_exact_labels():
    svg = str(
        charts.line_chart(
            {
                "median": [
                    ("2026-10", Decimal("3")),
                    ("2026-11", None),
                    ("2026-12", Decimal("4.5")),
                ],
                "p90": [("2026-10", Decimal("10")), ("2026-12", Decimal("12.25"))],
            },
            title="Time to invoice <days>",
            unit="d",
        )
    )
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert 'aria-label="Time to invoice &lt;days&gt;"' in svg
    assert "median 2026-12: 4.50 d" in svg and "p90 2026-12: 12.25 d" in svg
    assert svg.count("<circle") == 4  # the missing month is a gap, not a zero
    assert "2026-11" in svg


def test_a_bar_chart_draws_negative_values_below_zero_and_says_when_empty():
    svg = str(charts.bar_chart([("a", Decimal("5")), ("b", Decimal("-2"))], title="Net"))
    assert svg.count('class="bar"') == 2 and "b: -2" in svg
    assert "no data yet" in str(charts.bar_chart([], title="Nothing"))
