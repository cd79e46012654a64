"""The Business Central sandbox's payment control (``POST /__admin/payments``) over real HTTP.

BC's API v2.0 documents no action that posts a customer payment journal
(dynamics_customerPaymentJournal.md lists none; APIV2CustPaymJournals.Page.al has an empty
``actions`` block), so the sandbox applies a payment as a control operation. What the API then
shows follows BC: ``remainingAmount`` drops (computed from the ledger entry at read time),
``status`` becomes ``Paid`` when nothing remains, and ``lastModifiedDateTime`` moves only with
the status (codeunit 5477 "Sales Invoice Aggregator", ``UpdateStatusIfChanged``).
"""

from __future__ import annotations

from decimal import Decimal

import httpx

from tests.sandbox import test_erp_contract as bc

API = bc.API
new_invoice = bc.new_invoice
# the contract module's fixtures: one hand-seeded BC sandbox server for this module too
erp = bc.erp
base = bc.base
client = bc.client
quiet = bc.quiet


def _posted(client: httpx.Client) -> dict:
    created = new_invoice(client)  # 2 x 150.00 EUR at 19 %: 357.00
    assert created.status_code == 201, created.text
    url = f"{API}/salesInvoices({created.json()['id']})"
    assert client.post(f"{url}/Microsoft.NAV.post").status_code == 204
    return client.get(url).json()


def test_partial_then_full_payment(client: httpx.Client, base: str) -> None:
    inv = _posted(client)
    url = f"{API}/salesInvoices({inv['id']})"
    assert inv["status"] == "Open" and Decimal(str(inv["remainingAmount"])) == Decimal("357.00")

    paid = httpx.post(f"{base}/__admin/payments", json={"invoiceId": inv["id"], "amount": 100.5})
    assert paid.status_code == 200, paid.text
    assert Decimal(str(paid.json()["remainingAmount"])) == Decimal("256.50")
    part = client.get(url).json()
    assert part["status"] == "Open"
    assert Decimal(str(part["remainingAmount"])) == Decimal("256.50")
    # the aggregate record is not modified by a payment that leaves the status as it was
    assert part["lastModifiedDateTime"] == inv["lastModifiedDateTime"]
    still_open = client.get(
        f"{API}/salesInvoices",
        params={
            "$filter": f"status eq 'Open' and id eq {inv['id']}",
            "$select": "id,remainingAmount",
        },
    ).json()["value"]
    assert [Decimal(str(r["remainingAmount"])) for r in still_open] == [Decimal("256.50")]

    too_much = httpx.post(
        f"{base}/__admin/payments", json={"number": inv["number"], "amount": "256.51"}
    )
    assert too_much.status_code == 409
    rest = httpx.post(
        f"{base}/__admin/payments", json={"number": inv["number"], "amount": "256.50"}
    )
    assert rest.status_code == 200, rest.text
    done = client.get(url).json()
    assert done["status"] == "Paid" and Decimal(str(done["remainingAmount"])) == 0
    assert done["lastModifiedDateTime"] > inv["lastModifiedDateTime"]
    again = httpx.post(f"{base}/__admin/payments", json={"invoiceId": inv["id"], "amount": 1})
    assert again.status_code == 409 and "Paid" in again.json()["error"]["message"]


def test_payments_are_refused_on_drafts_and_bad_amounts(client: httpx.Client, base: str) -> None:
    draft = new_invoice(client).json()
    refused = httpx.post(f"{base}/__admin/payments", json={"invoiceId": draft["id"], "amount": 1})
    assert refused.status_code == 409 and "Draft" in refused.json()["error"]["message"]
    inv = _posted(client)
    for amount in (0, -5, "1.001", "abc"):
        bad = httpx.post(
            f"{base}/__admin/payments", json={"invoiceId": inv["id"], "amount": amount}
        )
        assert bad.status_code == 409, (amount, bad.text)
    assert Decimal(
        str(client.get(f"{API}/salesInvoices({inv['id']})").json()["remainingAmount"])
    ) == Decimal("357.00")


def test_cli_pay_against_a_running_sandbox(tmp_path) -> None:
    from click.testing import CliRunner

    from erpsync_sandbox.cli import sandbox
    from erpsync_sandbox.serve import start_sandbox

    with start_sandbox(tmp_path / "state", "small", 0, services=("erp",)) as handle:
        store = handle.ctx.stores["erp"]
        inv = next(i for i in store.scan("salesInvoices") if i["status"] == "Open")
        total = Decimal(str(inv["remainingAmount"]))
        port = f"--port={handle.ports['erp']}"
        res = CliRunner().invoke(sandbox, ["pay", inv["number"], "1", port])
        assert res.exit_code == 0, res.output
        assert f"remaining {total - 1}" in res.output and "status Open" in res.output
        res = CliRunner().invoke(sandbox, ["pay", inv["id"], str(total - 1), port])
        assert res.exit_code == 0 and "status Paid" in res.output
        assert store.get("salesInvoices", inv["id"])["status"] == "Paid"
        res = CliRunner().invoke(sandbox, ["pay", inv["number"], "1", port])
        assert res.exit_code != 0 and "409" in res.output
