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
    settled,
    shoot,
    signed_in,
)

pytestmark = pytest.mark.slow


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


# --------------------------------------------------------------------------- acting and auditing
