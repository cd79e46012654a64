"""The finance console in a real browser (issue 16): Debian's chromium, driven by Playwright,
against a real Airflow api-server with the erpsync console plugin (tests/browser/conftest.py).

Each role logs in through Airflow's own login page (the SimpleAuthManager form) with the demo's
users, opens the console pages through the Airflow UI's navigation (Plugins > Finance > page: a
plugin page with a ``url_route`` is an iframe titled by its view name) and does what its role may,
or is refused what it may not. The main pages are photographed into docs/screenshots/.
"""

from __future__ import annotations

import pytest

from erpsync.console import PAGES
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
    return frame


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


@pytest.mark.parametrize("role", list(ROLE_USERS))
def test_each_role_signs_in_through_airflows_login_page(console_server, page, role):
    login(page, console_server, ROLE_USERS[role])
    cookies = {c["name"] for c in page.context.cookies()}
    assert "_token" in cookies  # the api-server's JWT cookie (COOKIE_NAME_JWT_TOKEN)


def test_a_wrong_password_is_refused(console_server, page):
    page.goto(f"{console_server.url}/")
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill("auditor")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Invalid credentials", exact=False).wait_for()
    assert "/auth/login" in page.url
    assert "_token" not in {c["name"] for c in page.context.cookies()}
