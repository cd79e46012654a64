"""The console page-speed benchmark's page list: which pages the app serves is decided by its
routes (a page another branch has not added yet is reported, not timed as an error)."""

from __future__ import annotations

from erpsync.bench import console as bench


def test_route_presence_follows_the_apps_routes():
    served = ["/", "/billing", "/billing/{table}.csv", "/exceptions/{exception_id}"]
    assert bench._route_present("/", served)
    assert bench._route_present("/billing?period=2026-10&currency=EUR", served)
    assert bench._route_present("/exceptions/17", served)
    assert not bench._route_present("/exceptions", served)
    assert not bench._route_present("/audit/12", served)


def test_every_page_is_under_the_console_and_every_placeholder_is_filled():
    ids = {"exception_id": "1", "audit_id": "2", "quarantine_id": "3", "client": "a1"}
    urls = [template.format(**ids) for _name, template in bench.PAGES]
    assert all(u.startswith("/") and "{" not in u for u in urls)
    assert len({name for name, _ in bench.PAGES}) == len(bench.PAGES)
    assert bench.SIZES["large"]["exceptions"] == 200_000
    assert bench.SIZES["large"]["audit"] == 1_000_000
