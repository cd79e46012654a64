"""The finance console in a real browser (issue 16): Debian's chromium, driven by Playwright,
against a real Airflow api-server with the erpsync console plugin (tests/browser/conftest.py).

Each role logs in through Airflow's own login page (the SimpleAuthManager form) with the demo's
users, opens the console pages through the Airflow UI's navigation (a plugin page is an iframe
titled by its view name) and does what its role may, or is refused what it may not.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import ROLE_USERS

pytestmark = pytest.mark.slow


def login(page, server, user: str) -> None:
    """Sign in through Airflow's login page (it redirects any UI URL there first)."""
    page.goto(f"{server.url}/")
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(server.password(user))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/")
    page.get_by_role("button", name="User").wait_for()


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
