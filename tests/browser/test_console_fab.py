"""The console with the FAB auth manager and the compose deployment's roles
(erpsync.deploy.roles), in a real browser: each of the pack's roles signs in through FAB's login
page and finds the console under Plugins > Finance.

This is the research notes' open point 1 (docs/reference/finance-ui-research.md §1.3): the 3.3
UI builds plugin menus from ``GET /api/v2/plugins``, which asks for ``AccessView.PLUGINS`` (FAB:
``can read on Plugins``); FAB's own "User" role lacks it and so sees no console menu at all,
which is why the pack's roles grant it.
"""

from __future__ import annotations

import pytest

from tests.browser.test_console_browser import (
    PAGE_TITLES,
    open_console_page,
    post_from_page,
    settled,
)

pytestmark = pytest.mark.slow


def fab_login(page, server, user: str) -> int:
    """Sign in through the FAB auth manager's login page (a Flask-AppBuilder form); returns the
    status of the UI's ``GET /api/v2/plugins``, which its plugin menus are built from."""
    page.goto(f"{server.url}/")
    page.wait_for_url("**/auth/login**")
    page.locator('input[name="username"]').fill(user)
    page.locator('input[name="password"]').fill(server.password(user))
    with page.expect_response(lambda r: "/api/v2/plugins" in r.url) as plugins:
        page.locator('input[type="submit"], button[type="submit"]').first.click()
    page.get_by_role("button", name="User").wait_for()
    return plugins.value.status


def finance_menu(page, plugins_status: int) -> list[str]:
    """The entries under Plugins > Finance, or [] when the UI shows no Plugins menu."""
    plugins = page.get_by_role("button", name="Plugins", exact=True)
    if plugins_status != 200:
        page.wait_for_timeout(500)  # the UI has had its answer: no plugins, no menu
        assert plugins.count() == 0
        return []
    plugins.click()
    page.get_by_role("menuitem", name="Finance").hover()
    page.get_by_role("menuitem", name=PAGE_TITLES[-1], exact=True).wait_for()
    names = [m.inner_text().strip() for m in page.get_by_role("menuitem").all()]
    page.keyboard.press("Escape")
    return [n for n in names if n in PAGE_TITLES]


@pytest.mark.parametrize("user", ["fiona", "audrey", "dan"])
def test_the_packs_fab_roles_find_the_console_under_plugins(fab_console_server, page, user):
    status = fab_login(page, fab_console_server, user)
    assert status == 200
    assert finance_menu(page, status) == PAGE_TITLES
    # and the console asks FAB what each may do (erpsync.console.permissions): finance ops and
    # data engineers act on exceptions, the auditor only reads
    frame = open_console_page(page, fab_console_server, "Exceptions")
    who = frame.locator(".who").inner_text()
    assert user in who
    may_act = user != "audrey"
    assert ("read only" in who) is not may_act
    assert frame.locator("form#bulk").count() == int(may_act)
    base = f"{fab_console_server.url}/erpsync"
    if not may_act:
        exception_id = fab_console_server.scenario.exceptions["tax_id"]
        waive = {"action": "waive", "ids": [exception_id], "comment": "forced"}
        assert post_from_page(page, f"{base}/exceptions/actions", waive) == 403
    # only the data engineer may requeue a quarantined record (FAB: edit on the sync DAGs'
    # task instances), finance ops and the auditor may not
    may_requeue = user == "dan"
    frame = open_console_page(page, fab_console_server, "Sync health")
    frame.get_by_role("link", name="quarantine", exact=True).first.click()
    frame.locator("table.data tbody tr", has_text="001BRWSR0000000002").wait_for()
    settled(page, "Sync health")
    requeue_button = frame.get_by_role("button", name="Requeue", exact=True)
    assert requeue_button.count() == int(may_requeue)
    if not may_requeue:
        requeue = {"ids": [fab_console_server.scenario.quarantine_id]}
        assert post_from_page(page, f"{base}/sync/quarantine/requeue", requeue) == 403


def test_fabs_own_user_role_without_plugins_read_sees_no_console_menu(fab_console_server, page):
    status = fab_login(page, fab_console_server, "uma")
    assert status == 403  # can read on Plugins is what FAB asks for AccessView.PLUGINS
    assert finance_menu(page, status) == []
