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


def find_the_waiver_in_the_audit_trail(page, server, exception_id: int) -> None:
    """The end of test_finance_ops_waive_...: the audit trail, searched by entity as an
    auditor would, shows the waiver with the Airflow user who gave it."""
    frame = open_console_page(page, server, "Audit trail")
    frame.get_by_label("Entity type").fill("exception")
    frame.get_by_label("Entity id").fill(str(exception_id))
    frame.get_by_role("button", name="Search").click()
    # the page the search returns renders the filter back (an attribute, unlike fill())
    frame.locator(f'input[name="entity_id"][value="{exception_id}"]').wait_for()
    rows = frame.locator("table.data tbody tr")
    assert all(f"exception {exception_id}" in t for t in rows.all_inner_texts())
    entry = rows.filter(has_text="exception.waived")
    assert "approver" in entry.inner_text()
    assert frame.locator('[data-chain="ok"]').count() == 1  # the hash chain holds
    shoot(page, "Audit trail", "audit")


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
