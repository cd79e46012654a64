"""Browser tests of console pages not on main yet (not collected: no test_ prefix). Each moves
into test_console_browser.py when its page is merged."""
# ruff: noqa: F401, F811

from __future__ import annotations

import re

import httpx
import pytest

from tests.browser import scenario
from tests.browser.conftest import ROLE_USERS
from tests.browser.test_console_browser import (
    PAGE_TITLES,
    as_user,
    open_console_page,
    post_from_page,
    shoot,
    signed_in,
)

pytestmark = pytest.mark.slow


def test_an_unauthenticated_visitor_is_refused(console_server, page):
    base = f"{console_server.url}/erpsync"
    # a browser asking for a page is sent to Airflow's login, and comes back after it
    page.goto(f"{base}/exceptions")
    page.wait_for_url("**/auth/login**")
    assert "next=" in page.url and "exceptions" in page.url
    # an API client without a token gets 401, for pages, CSV downloads and actions alike
    for path in ("/exceptions", "/exceptions.csv", "/audit.csv", "/sync", "/billing"):
        assert httpx.get(f"{base}{path}", timeout=30).status_code == 401, path
    refused = httpx.post(
        f"{base}/exceptions/actions",
        json={"action": "waive", "ids": [1], "comment": "no"},
        headers={"X-Erpsync-Request": "1"},
        timeout=30,
    )
    assert refused.status_code == 401
    # and a forged token is no token
    forged = httpx.get(f"{base}/exceptions", cookies={"_token": "forged.jwt.value"}, timeout=30)
    assert forged.status_code in (401, 403)


# --------------------------------------------------------------------------- every page, every role


@pytest.mark.parametrize("role", list(ROLE_USERS))
def test_each_role_opens_every_console_page_from_the_airflow_menu(console_server, as_user, role):
    user = ROLE_USERS[role]
    page = as_user(user)
    for title in PAGE_TITLES:
        frame = open_console_page(page, console_server, title)
        # the console's own top bar names the signed-in Airflow user, and says read only
        # to whoever may not act
        who = frame.locator(".who").inner_text()
        assert user in who, (title, who)
        assert ("read only" in who) is (role == "auditor"), (title, who)
        assert frame.locator("main .error").count() == 0, title


# --------------------------------------------------------------------------- acting and auditing


def test_finance_ops_waive_an_exception_and_find_it_in_the_audit_trail(console_server, as_user):
    exception_id = console_server.scenario.exceptions["over_cap"]
    page = as_user("approver")
    frame = open_console_page(page, console_server, "Exceptions")
    row = frame.locator("table.data tbody tr", has_text=scenario.CAPPED_PROJECT)
    row.wait_for()
    assert re.search("over.?cap", row.inner_text(), re.I)
    shoot(page, "Exceptions", "exceptions")
    # the detail view: source record, history, and the actions finance ops may take
    row.get_by_role("link", name=re.compile(str(exception_id))).first.click()
    frame.locator("main h1", has_text=str(exception_id)).wait_for()
    reason = frame.get_by_label(re.compile("reason|comment", re.I)).first
    reason.fill("Agreed with the client: the cap was raised verbally, CR to follow")
    # (a handle, not a locator: arming the button changes its name to the question)
    waive = frame.get_by_role("button", name=re.compile("^waive", re.I)).first.element_handle()
    waive.click()  # first click arms the in-page confirmation (the iframe forbids confirm())
    assert waive.get_attribute("data-armed") == "1"
    waive.click()  # second click acts
    frame.get_by_text(re.compile("waived", re.I)).first.wait_for()
    shoot(page, "Exceptions", "exception_detail")

    # the audit trail, searched by entity as an auditor would
    frame = open_console_page(page, console_server, "Audit trail")
    frame.get_by_label("Entity type").fill("exception")
    frame.get_by_label("Entity id").fill(str(exception_id))
    frame.get_by_role("button", name="Search").click()
    entry = frame.locator("table.data tbody tr", has_text="exception.waived")
    entry.wait_for()
    assert "approver" in entry.inner_text()
    assert frame.locator('[data-chain="ok"]').count() == 1  # the hash chain holds
    shoot(page, "Audit trail", "audit")


def test_the_auditor_sees_no_action_and_a_forced_one_is_refused(console_server, as_user):
    exception_id = console_server.scenario.exceptions["tax_id"]
    page = as_user("auditor")
    frame = open_console_page(page, console_server, "Exceptions")
    frame.locator("table.data tbody tr").first.wait_for()
    for name in ("waive", "assign", "reopen", "comment"):
        assert frame.get_by_role("button", name=re.compile(name, re.I)).count() == 0, name
    assert frame.locator('input[type="checkbox"][name="ids[]"]').count() == 0
    # forcing it from the page the way the console's own script posts (same origin, JSON, the
    # X-Erpsync-Request header, the auditor's cookie): the server says no
    base = f"{console_server.url}/erpsync"
    waive = {"action": "waive", "ids": [exception_id], "comment": "forced"}
    status = post_from_page(page, f"{base}/exceptions/actions", waive)
    assert status == 403


def test_a_state_change_without_the_consoles_header_is_refused(console_server, as_user):
    """A cross-site form cannot add the header: a POST with finance ops' own cookie but
    without it is refused before any route runs."""
    page = as_user("approver")
    open_console_page(page, console_server, "Exceptions")
    status = post_from_page(
        page,
        f"{console_server.url}/erpsync/exceptions/actions",
        "action=waive&ids=1&comment=x",
        content_type="application/x-www-form-urlencoded",
        console_header=False,
    )
    assert status == 403


# --------------------------------------------------------------------------- charts and masking


def test_charts_are_drawn_in_the_browser(console_server, as_user):
    page = as_user("auditor")
    for title, shot in (("Insights", "insights"), ("Sync health", "sync"), ("Billing", "billing")):
        frame = open_console_page(page, console_server, title)
        chart = frame.locator('svg[role="img"]').first
        chart.wait_for()
        assert chart.get_attribute("aria-label")
        box = chart.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, (title, box)
        shoot(page, title, shot)


def test_a_data_engineer_requeues_a_quarantined_record_whose_secret_stays_masked(
    console_server, as_user
):
    page = as_user("engineer")
    frame = open_console_page(page, console_server, "Sync health")
    frame.get_by_role("link", name="quarantine", exact=True).first.click()
    row = frame.locator("table.data tbody tr", has_text="001BRWSR0000000002")
    row.get_by_role("link", name=str(console_server.scenario.quarantine_id), exact=True).click()
    frame.get_by_text("Atlantis Partners").first.wait_for()
    html = frame.locator("body").inner_html()
    assert scenario.PLANTED_SECRET not in html
    assert '"api_key": "***"' in frame.locator("main").inner_text()  # the key shown, masked
    shoot(page, "Sync health", "quarantine_detail")
    requeue = frame.get_by_role("button", name="Requeue this record").element_handle()
    requeue.click()  # arms the in-page confirmation
    assert requeue.get_attribute("data-armed") == "1"
    requeue.click()
    frame.locator('[data-state="requeued"]').wait_for()  # the page reloads with the new state
    assert "asked by engineer" in frame.locator("main").inner_text()


def test_the_auditor_cannot_requeue(console_server, as_user):
    page = as_user("auditor")
    frame = open_console_page(page, console_server, "Sync health")
    frame.get_by_role("link", name="quarantine", exact=True).first.click()
    frame.locator("table.data tbody tr", has_text="001BRWSR0000000002").wait_for()
    assert frame.get_by_role("button", name=re.compile("requeue", re.I)).count() == 0
    assert frame.locator('input[type="checkbox"]').count() == 0
    requeue = {"ids": [console_server.scenario.quarantine_id]}
    base = f"{console_server.url}/erpsync"
    assert post_from_page(page, f"{base}/sync/quarantine/requeue", requeue) == 403
