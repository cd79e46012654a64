"""The finance console in a real browser (issue 16): Debian's chromium, driven by Playwright,
against a real Airflow api-server with the erpsync console plugin (tests/browser/conftest.py).

Each role logs in through Airflow's own login page (the SimpleAuthManager form) with the demo's
users, opens the console pages through the Airflow UI's navigation (Plugins > Finance > page: a
plugin page with a ``url_route`` is an iframe titled by its view name) and does what its role may,
or is refused what it may not. The main pages are photographed (``make screenshots`` puts
them in docs/screenshots/).
"""

from __future__ import annotations

import re

import httpx
import pytest

from erpsync.console import PAGES
from tests.browser import scenario
from tests.browser.conftest import ROLE_USERS, SCREENSHOTS

pytestmark = pytest.mark.slow

#: The console's pages as the Airflow navigation names them (erpsync.console.PAGES).
PAGE_TITLES = [title for _path, title in PAGES]


def login(page, server, user: str) -> None:
    """Sign in through Airflow's login page (it redirects any UI URL there first)."""
    page.goto(f"{server.url}/")
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(server.password(user))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/")
    page.get_by_role("button", name="User").wait_for()


@pytest.fixture(scope="session")
def signed_in(console_server, browser):
    """user -> the browser storage state of a sign-in through the login page (done once)."""
    states: dict[str, dict] = {}

    def state(user: str) -> dict:
        if user not in states:
            context = browser.new_context()
            try:
                login(context.new_page(), console_server, user)
                states[user] = context.storage_state()
            finally:
                context.close()
        return states[user]

    return state


@pytest.fixture
def as_user(browser, signed_in):
    """``as_user("auditor")`` -> a page of a browser context signed in as that user."""
    contexts = []

    def open_as(user: str):
        context = browser.new_context(
            storage_state=signed_in(user), viewport={"width": 1280, "height": 860}
        )
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context.new_page()

    yield open_as
    for context in contexts:
        context.close()


def open_console_page(page, server, title: str):
    """Open a console page the way a person does: Airflow UI > Plugins > Finance > ``title``;
    returns the iframe the UI shows it in."""
    if not page.url.startswith(server.url) or "/auth/" in page.url:
        page.goto(f"{server.url}/")  # else the UI is loaded: its menu switches pages in place
    page.get_by_role("button", name="Plugins").click()
    page.get_by_role("menuitem", name="Finance").hover()
    page.get_by_role("menuitem", name=title, exact=True).click()
    frame = page.frame_locator(f'iframe[title="{title}"]')
    frame.locator("main h1").wait_for()
    settled(page, title)
    return frame


def settled(page, title: str) -> None:
    """Wait until the document in the console iframe is parsed whole: a page streams in, and
    its heading shows before the rest (a count() of what is absent must see the whole page)."""
    frame = page.locator(f'iframe[title="{title}"]').element_handle().content_frame()
    frame.wait_for_load_state("domcontentloaded")


def post_from_page(
    page, url: str, body, *, content_type="application/json", console_header=True
) -> int:
    """POST from the signed-in page with its cookie, as a script on it would; the status."""
    headers = {"Content-Type": content_type}
    if console_header:
        headers["X-Erpsync-Request"] = "1"
    return page.evaluate(
        """async ([url, headers, body]) => (await fetch(url, {
               method: "POST", credentials: "same-origin", headers: headers,
               body: typeof body === "string" ? body : JSON.stringify(body)})).status""",
        [url, headers, body],
    )


def shoot(page, title: str, name: str) -> None:
    """A screenshot of the Airflow UI with the console page ``title`` in it, for the README."""
    frame = page.locator(f'iframe[title="{title}"]').element_handle().content_frame()
    frame.wait_for_load_state("load")  # its stylesheet applied
    frame.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


# --------------------------------------------------------------------------- signing in


def test_each_role_signs_in_through_airflows_login_page(signed_in):
    for role, user in ROLE_USERS.items():
        cookies = {c["name"] for c in signed_in(user)["cookies"]}
        assert "_token" in cookies, role  # the api-server's JWT cookie (COOKIE_NAME_JWT_TOKEN)


def test_a_wrong_password_is_refused(console_server, page):
    page.goto(f"{console_server.url}/")
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill("auditor")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Invalid credentials", exact=False).wait_for()
    assert "/auth/login" in page.url
    assert "_token" not in {c["name"] for c in page.context.cookies()}


def test_an_unauthenticated_visitor_is_refused(console_server, page):
    base = f"{console_server.url}/erpsync"
    # a browser asking for a page is sent to Airflow's login, and comes back after it
    page.goto(f"{base}/exceptions")
    page.wait_for_url("**/auth/login**")
    assert "next=" in page.url and "exceptions" in page.url
    page.get_by_label("Username").fill("auditor")
    page.get_by_label("Password").fill(console_server.password("auditor"))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/exceptions")
    page.locator("main h1", has_text="Exceptions").wait_for()
    # an API client without a token gets 401, for pages, CSV downloads and actions alike
    exception_id = console_server.scenario.exceptions["tax_id"]
    paths = ["/", "/exceptions", "/exceptions.csv", f"/exceptions/{exception_id}", "/insights"]
    paths += ["/audit", "/audit.csv", "/sync", "/sync/quarantine", "/sync/quarantine/1"]
    paths += ["/billing", "/billing/overview.csv"]
    for path in paths:
        assert httpx.get(f"{base}{path}", timeout=30).status_code == 401, path
    refused = httpx.post(
        f"{base}/exceptions/actions",
        json={"action": "waive", "ids": [exception_id], "comment": "no"},
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
        text = frame.locator("main").inner_text()
        for slip in ("<built-in method", "Traceback", "Undefined"):  # template slips
            assert slip not in text, (title, slip)


# --------------------------------------------------------------------------- acting


def test_finance_ops_waive_an_exception_and_find_it_in_the_audit_trail(console_server, as_user):
    exception_id = console_server.scenario.exceptions["over_cap"]
    page = as_user("approver")
    frame = open_console_page(page, console_server, "Exceptions")
    row = frame.locator("table.data tbody tr", has_text=scenario.CAPPED_PROJECT)
    assert re.search("over.?cap", row.inner_text(), re.I)
    assert scenario.CLIENT_NAME in row.inner_text()
    shoot(page, "Exceptions", "exceptions")
    # the detail view: source record, history, and the actions finance ops may take
    row.get_by_role("link", name=str(exception_id), exact=True).click()
    frame.locator("main h1", has_text=f"Exception {exception_id}").wait_for()
    frame.get_by_label("Action").select_option("waive")
    reason = "Agreed with the client: the cap was raised by phone, change order to follow"
    frame.get_by_label("Comment / reason").fill(reason)
    # a handle, not a locator: arming the button changes its name to the question
    apply = frame.get_by_role("button", name="Apply", exact=True).element_handle()
    apply.click()  # first click arms the in-page confirmation (the iframe forbids confirm())
    assert apply.get_attribute("data-armed") == "1"
    assert frame.locator('[data-status="waived"]').count() == 0  # nothing happened yet
    apply.click()  # the second click acts
    frame.locator('main h1 [data-status="waived"]').wait_for()  # the page reloads waived
    settled(page, "Exceptions")
    assert f"by approver: {reason}" in frame.locator("main").inner_text()
    shoot(page, "Exceptions", "exception_detail")
    find_the_waiver_in_the_audit_trail(page, console_server, exception_id)


def find_the_waiver_in_the_audit_trail(page, server, exception_id: int) -> None:
    """The audit trail, searched by entity as an auditor would, shows the waiver with the
    Airflow user who gave it, and the hash chain's status."""
    frame = open_console_page(page, server, "Audit trail")
    frame.get_by_label("Entity type").fill("exception")
    frame.get_by_label("Entity id").fill(str(exception_id))
    frame.get_by_role("button", name="Search").click()
    # the page the search returns renders the filter back (an attribute, unlike fill())
    frame.locator(f'input[name="entity_id"][value="{exception_id}"]').wait_for()
    settled(page, "Audit trail")
    rows = frame.locator("table.data tbody tr")
    assert all(f"exception {exception_id}" in t for t in rows.all_inner_texts())
    entry = rows.filter(has_text="exception.waived")
    assert "approver" in entry.inner_text()
    assert frame.locator('[data-chain="ok"]').count() == 1  # the hash chain holds
    # any reader may have the rows written since the last check verified
    frame.get_by_role("button", name="Verify pending rows").click()
    frame.locator('[data-chain="ok"]', has_text="verified up to #").wait_for()
    settled(page, "Audit trail")
    assert frame.locator('[data-chain="ok"]').inner_text().endswith(", 0 rows pending")
    shoot(page, "Audit trail", "audit")


def test_finance_ops_assign_exceptions_in_bulk(console_server, as_user):
    page = as_user("approver")
    frame = open_console_page(page, console_server, "Exceptions")
    filters = frame.locator("form.filters")
    filters.locator('select[name="reason"]').select_option("unknown_project")
    filters.get_by_role("button", name="Filter").click()
    # the filtered page renders the choice back (an attribute: selecting sets a property)
    filters.locator('option[value="unknown_project"][selected]').wait_for(state="attached")
    settled(page, "Exceptions")
    rows = frame.locator("table.data tbody tr")
    assert all("Unknown project" in t for t in rows.all_inner_texts())
    frame.get_by_label("Select all on this page").check()
    count = rows.count()
    assert frame.locator("#selected-count").inner_text() == str(count)
    bulk = frame.locator("form#bulk")
    bulk.get_by_label("Action").select_option("assign")
    bulk.get_by_label("Owner").fill("raj.patel")
    apply = bulk.get_by_role("button", name="Apply to selected").element_handle()
    apply.click()
    apply.click()
    frame.get_by_role("status").filter(has_text=f"assign: {count} done").wait_for()
    frame.locator("table.data tbody tr", has_text="raj.patel").first.wait_for()  # reloaded
    settled(page, "Exceptions")
    assert rows.filter(has_text="raj.patel").count() == count


# --------------------------------------------------------------------------- charts

#: Pages with charts (inline SVG, role="img" with the chart's title), and their screenshot.
CHART_PAGES = [("Insights", "insights"), ("Sync health", "sync"), ("Billing", "billing")]


def test_charts_are_drawn_in_the_browser(console_server, as_user):
    page = as_user("auditor")
    for title, shot in CHART_PAGES:
        frame = open_console_page(page, console_server, title)
        chart = frame.locator('svg[role="img"]').first
        chart.wait_for()
        assert chart.get_attribute("aria-label")
        box = chart.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, (title, box)
        # and the scenario's data is on one at least (a line or bars, not "no data yet")
        drawn = frame.locator('svg[role="img"]').filter(has_not_text="no data yet")
        assert drawn.count() >= 1, title
        shoot(page, title, shot)


# --------------------------------------------------------------------------- refusals


def test_the_auditor_sees_no_action_and_a_forced_one_is_refused(console_server, as_user):
    exception_id = console_server.scenario.exceptions["tax_id"]
    page = as_user("auditor")
    frame = open_console_page(page, console_server, "Exceptions")
    frame.locator("table.data tbody tr").first.wait_for()
    assert "read only" in frame.locator(".who").inner_text()
    assert frame.get_by_role("button", name=re.compile("apply", re.I)).count() == 0
    assert frame.locator('input[type="checkbox"]').count() == 0
    frame.get_by_role("link", name=str(exception_id), exact=True).click()
    frame.locator("main h1", has_text=f"Exception {exception_id}").wait_for()
    settled(page, "Exceptions")
    assert frame.locator("form#single").count() == 0
    # forcing it from the page the way the console's own script posts (same origin, JSON, the
    # X-Erpsync-Request header, the auditor's cookie): the server says no
    waive = {"action": "waive", "ids": [exception_id], "comment": "forced"}
    status = post_from_page(page, f"{console_server.url}/erpsync/exceptions/actions", waive)
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


# --------------------------------------------------------------------------- the quarantine


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
    settled(page, "Sync health")
    assert frame.get_by_role("button", name=re.compile("requeue", re.I)).count() == 0
    assert frame.locator('input[type="checkbox"]').count() == 0
    requeue = {"ids": [console_server.scenario.quarantine_id]}
    base = f"{console_server.url}/erpsync"
    assert post_from_page(page, f"{base}/sync/quarantine/requeue", requeue) == 403
