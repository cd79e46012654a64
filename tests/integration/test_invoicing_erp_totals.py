"""The ERP is the control point for totals, against the real sandbox ERP and PSA and a real
PostgreSQL: an approved invoice whose VAT rounds differently per line and per document (USD,
EUR, JPY, KWD) is posted by the ERP with exactly the approved tax and total; an invoice whose
ERP figure changed after approval (the VAT Posting Setup percent raised between approval and
push) is held, not posted, nothing billed, with an exception showing both figures, and the
approval summary flagged the difference before anyone approved."""

from __future__ import annotations

import itertools
import os
from decimal import Decimal as D

import psycopg
import pytest

from erpsync.invoicing.approval import approval_markdown, erp_total_differences
from erpsync.invoicing.hashing import current_hash
from erpsync.invoicing.pricing import price_invoice
from tests.integration import test_invoicing_push as _push_tests
from tests.integration.test_invoicing_push import INVOICE_DATE, Env, push

#: The push tests' module fixture: sandbox CRM/PSA/ERP, a migrated warehouse, PSA time synced.
env = _push_tests.env

CUSTOMER = "C10010"  # a domestic (NL) customer: VAT Posting Setup DOMESTIC x STANDARD, 21 %
ACCOUNT = f"acct-{CUSTOMER}"
SETUP_KEY = "DOMESTIC|STANDARD"
_tags = itertools.count(1)

# (currency, line nets, BC tax, BC total): ties where per-line rounding gives another tax
GOLDENS = [
    ("EUR", ["100.10", "200.20", "274.20"], "120.65", "695.15"),  # per line: 120.64
    ("USD", ["191.50", "191.50", "191.50"], "120.65", "695.15"),  # per line: 120.66
    ("JPY", ["50", "50", "50"], "32", "182"),  # per line: 33
    ("KWD", ["1.000", "1.025", "1.025"], "0.641", "3.691"),  # per line: 0.640
]


def tie_batch(env: Env, currency: str, nets: list[str], rate: D = D("21")) -> tuple[int, dict]:
    """An approved one-invoice batch for the domestic customer: one line per net (each billing
    one real Harvest time entry), taxed by erpsync's rule (erpsync.invoicing.pricing)."""
    tag = next(_tags)
    customer = env.customers[CUSTOMER]
    priced = price_invoice([(D(n), "STANDARD") for n in nets], {"STANDARD": rate}, currency)
    doc = f"ET-{os.getpid() % 10000:04d}-{tag:03d}-{currency}"
    keys = []
    with psycopg.connect(env.db) as conn:
        batch_id = conn.execute(
            """INSERT INTO billing.invoice_batches
                   (kind, period_start, period_end, scope_key, status, content_hash,
                    prepared_by, prepared_run_id)
               VALUES ('period', '2026-10-01', '2026-10-31', %s, 'draft', '', 'maker', 'test')
               RETURNING batch_id""",
            (f"erp-totals-{tag}-{os.getpid()}",),
        ).fetchone()[0]
        invoice_id = conn.execute(
            """INSERT INTO billing.invoices
                   (batch_id, document_number, invoice_scope, account_id, client_name,
                    erp_customer_id, erp_customer_number, currency, invoice_date,
                    net, tax, total, status)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'approved')
               RETURNING invoice_id""",
            (
                batch_id,
                doc,
                f"scope-{doc}",
                ACCOUNT,
                customer["displayName"],
                customer["id"],
                CUSTOMER,
                currency,
                INVOICE_DATE,
                priced.net,
                priced.tax,
                priced.total,
            ),
        ).fetchone()[0]
        for n, net in enumerate(nets, start=1):
            key = f"time:{next(env.time_entries)['id']}"
            keys.append(key)
            conn.execute(
                """INSERT INTO billing.invoice_lines
                       (invoice_id, line_no, kind, description, hours, quantity, unit_price,
                        net_amount, tax_code, tax_rate, item_keys)
                   VALUES (%s, %s, 'time', %s, NULL, 1, %s, %s, 'STANDARD', %s, %s)""",
                (invoice_id, n, f"Consulting {n}", D(net), D(net), rate, [key]),
            )
            conn.execute(
                """INSERT INTO billing.batch_items (item_key, batch_id, invoice_id)
                   VALUES (%s, %s, %s)""",
                (key, batch_id, invoice_id),
            )
        conn.execute(
            """INSERT INTO billing.invoice_taxes (invoice_id, tax_code, rate, base, amount)
               VALUES (%s, 'STANDARD', %s, %s, %s)""",
            (invoice_id, rate, priced.net, priced.tax),
        )
        content = current_hash(conn, batch_id)
        conn.execute(
            """UPDATE billing.invoice_batches SET status = 'awaiting_approval', content_hash = %s
                WHERE batch_id = %s""",
            (content, batch_id),
        )
        conn.execute(
            """UPDATE billing.invoice_batches
                  SET status = 'approved', decided_by = 'checker', decided_hash = %s,
                      decided_at = now()
                WHERE batch_id = %s""",
            (content, batch_id),
        )
    return batch_id, {
        "doc": doc,
        "invoice_id": invoice_id,
        "keys": keys,
        "net": priced.net,
        "tax": priced.tax,
        "total": priced.total,
    }


def _erp_doc(env: Env, doc: str) -> dict:
    [found] = [d for d in env.erp_docs() if d["externalDocumentNumber"] == doc]
    return found


@pytest.mark.parametrize(("currency", "nets", "tax", "total"), GOLDENS)
def test_the_erp_posts_exactly_the_approved_totals_in_rounding_ties(
    env, currency, nets, tax, total
):
    batch_id, inv = tie_batch(env, currency, nets)
    assert (str(inv["tax"]), str(inv["total"])) == (tax, total)  # what the approver saw
    result = push(env, batch_id)
    assert result.complete and result.held == 0 and not result.tax_differences, result.errors
    posted = _erp_doc(env, inv["doc"])
    assert posted["status"] == "Open"
    assert D(str(posted["totalAmountExcludingTax"])) == inv["net"]
    assert D(str(posted["totalTaxAmount"])) == D(tax)
    assert D(str(posted["totalAmountIncludingTax"])) == D(total)
    with psycopg.connect(env.db) as conn:
        erp_tax, erp_total = conn.execute(
            "SELECT erp_tax, erp_total FROM billing.invoice_push WHERE invoice_id = %s",
            (inv["invoice_id"],),
        ).fetchone()
        billed = conn.execute(
            "SELECT item_key FROM billing.billed_items WHERE item_key = ANY(%s)",
            (inv["keys"],),
        ).fetchall()
    assert (erp_tax, erp_total) == (D(tax), D(total))
    assert sorted(k for (k,) in billed) == sorted(inv["keys"])


@pytest.fixture
def vat_raised(env):
    """The finance team raises the ERP's DOMESTIC x STANDARD VAT % to 22 (and back after)."""
    store = env.sandbox.ctx.stores["erp"]
    original = store.get("vatPostingSetup", SETUP_KEY)
    assert original is not None and D(str(original["VAT_Percent"])) == D("21")

    def set_percent(pct: str) -> None:
        body = dict(store.get("vatPostingSetup", SETUP_KEY))
        body["VAT_Percent"] = D(pct)
        store.put("vatPostingSetup", SETUP_KEY, body, stamp_field=None)

    yield set_percent
    set_percent("21")


def _warehouse_setup(env: Env, pct: str) -> None:
    """The warehouse's copy of the ERP's VAT Posting Setup (as the tax-rate sync reads it) and
    the client's tax profile."""
    with psycopg.connect(env.db) as conn:
        conn.execute(
            """INSERT INTO core.tax_profiles
                   (crm_account_id, country, source_record_id, row_hash, first_run_id,
                    last_run_id)
               VALUES (%s, 'NL', 'test', 'x', 'test', 'test')
               ON CONFLICT (crm_account_id) DO NOTHING""",
            (ACCOUNT,),
        )
        conn.execute(
            """INSERT INTO core.vat_posting_setup
                   (vat_bus_posting_group, tax_code, rate_percent, calculation_type,
                    vat_identifier, source_record_id, row_hash, first_run_id, last_run_id)
               VALUES ('DOMESTIC', 'STANDARD', %s, 'Normal VAT', 'VAT21',
                       'VATPostingSetup:DOMESTIC|STANDARD', 'x', 'test', 'test')
               ON CONFLICT (vat_bus_posting_group, tax_code)
               DO UPDATE SET rate_percent = EXCLUDED.rate_percent""",
            (D(pct),),
        )


def test_an_erp_figure_changed_after_approval_is_held_not_posted_nothing_billed(env, vat_raised):
    _warehouse_setup(env, "21")
    batch_id, inv = tie_batch(env, "EUR", ["100.10", "200.20", "274.20"])
    with psycopg.connect(env.db) as conn:
        assert erp_total_differences(conn, batch_id) == []
        assert "No difference with the ERP's computation." in approval_markdown(conn, batch_id)
    # after approval, the ERP's VAT Posting Setup changes: BC now taxes a new draft at 22 %
    vat_raised("22")
    result = push(env, batch_id)
    assert not result.complete and result.held == 1 and result.posted == 0
    assert result.tax_differences[0]["approved_tax"] == "120.65"
    assert result.tax_differences[0]["erp_tax"] == "126.39"  # 574.50 x 22 % = 126.39
    draft = _erp_doc(env, inv["doc"])
    assert draft["status"] == "Draft", "held: not posted"
    assert D(str(draft["totalAmountIncludingTax"])) == D("700.89")
    with psycopg.connect(env.db) as conn:
        billed = conn.execute(
            "SELECT count(*) FROM billing.billed_items WHERE item_key = ANY(%s)", (inv["keys"],)
        ).fetchone()[0]
        psa_state = conn.execute(
            "SELECT count(*) FROM billing.psa_billed_state WHERE invoice_id = %s",
            (inv["invoice_id"],),
        ).fetchone()[0]
        status, step = conn.execute(
            """SELECT i.status, p.step FROM billing.invoices i
                 JOIN billing.invoice_push p USING (invoice_id) WHERE invoice_id = %s""",
            (inv["invoice_id"],),
        ).fetchone()
        batch_status = conn.execute(
            "SELECT status FROM billing.invoice_batches WHERE batch_id = %s", (batch_id,)
        ).fetchone()[0]
        exc = conn.execute(
            """SELECT status, detail, amount_at_stake FROM ops.exceptions
                WHERE reason_code = 'erp_totals_differ' AND entity_key = %s""",
            (inv["doc"],),
        ).fetchall()
        audits = dict(
            conn.execute(
                """SELECT action, count(*) FROM audit.audit_log
                    WHERE entity_type = 'invoice' AND entity_id = %s GROUP BY 1""",
                (inv["doc"],),
            ).fetchall()
        )
    assert billed == 0 and psa_state == 0, "nothing marked billed"
    assert (status, step, batch_status) == ("created", "created", "pushing")  # not posted
    [(exc_status, detail, at_stake)] = exc
    assert exc_status == "open" and at_stake == D("695.15")
    assert (detail["approved_tax"], detail["erp_tax"]) == ("120.65", "126.39")
    assert (detail["approved_total"], detail["erp_total"]) == ("695.15", "700.89")
    assert audits.get("invoice.held") == 1 and "invoice.posted" not in audits
    for key in inv["keys"]:
        entry = env.psa("time_entries", key.partition(":")[2])
        assert not (entry["invoice"] or {}).get("number", "").startswith("PSI-")
    # a second push holds it again (one exception, refreshed), never posts it
    again = push(env, batch_id)
    assert again.held == 1 and again.posted == 0
    assert _erp_doc(env, inv["doc"])["status"] == "Draft"


def test_the_approval_summary_flags_the_erps_computation_before_anyone_approves(env):
    _warehouse_setup(env, "22")  # the ERP's setup as last read: 22 %, the invoice 21 %
    try:
        batch_id, inv = tie_batch(env, "EUR", ["100.10", "200.20", "274.20"])
        with psycopg.connect(env.db) as conn:
            [diff] = erp_total_differences(conn, batch_id)
            summary = approval_markdown(conn, batch_id)
        assert diff["document_number"] == inv["doc"]
        assert (diff["approved_tax"], diff["erp_tax"]) == ("120.65", "126.39")
        assert (diff["approved_total"], diff["erp_total"]) == ("695.15", "700.89")
        assert "DOMESTIC, STANDARD) now has 22 %" in diff["reason"]
        assert "the push will hold these" in summary and "| 126.39 |" in summary
        # an invoice whose tax is not BC's rule on its lines is flagged too
        _warehouse_setup(env, "21")
        with psycopg.connect(env.db) as conn:
            conn.execute(
                "UPDATE billing.invoices SET tax = 120.64, total = 695.14 WHERE invoice_id = %s",
                (inv["invoice_id"],),
            )
            [diff] = erp_total_differences(conn, batch_id)
        assert (diff["approved_tax"], diff["erp_tax"]) == ("120.64", "120.65")
        assert "not Business Central's rule" in diff["reason"]
    finally:
        _warehouse_setup(env, "21")


# ---------------------------------------------------------------------------- the builder


@pytest.fixture(scope="module")
def build_conn(pg_server_url):
    from erpsync.runtime import database
    from erpsync.warehouse import migrate
    from tests.conftest import make_database
    from tests.support import invoicing_data as dd

    url = make_database(pg_server_url, "erpsync_test_erptotals_build")
    migrate.migrate(url)
    with psycopg.connect(url) as c:
        dd.add_tax_setup(c)
        for acc, cur in (("c-eur", "EUR"), ("c-jpy", "JPY"), ("c-kwd", "KWD"), ("c-usd", "USD")):
            dd.add_client(c, acc, country="NL", currency=cur)
            dd.add_contract(c, f"opp-{acc}", acc, currency=cur)
        c.commit()
        yield c
    database.drop_database(url)


# (client, amounts of its items, the builder's tax): BC rounds positive and negative lines apart
BUILDER_GOLDENS = [
    # EUR: 21.0063 -> 21.01 and -10.5021 -> -10.50: 10.51 (one group: 50.02 x 21 % -> 10.50)
    ("c-eur", ["100.03", "-50.01"], "10.51"),
    # the example, all positive: 574.50 x 21 % = 120.645 -> 120.65
    ("c-usd", ["100.10", "200.20", "274.20"], "120.65"),
    # JPY: 31.5 -> 32 (per line 33)
    ("c-jpy", ["50", "50", "50"], "32"),
    # KWD: 0.6405 -> 0.641 (per line 0.640)
    ("c-kwd", ["1.000", "1.025", "1.025"], "0.641"),
]


@pytest.mark.parametrize(("account", "amounts", "tax"), BUILDER_GOLDENS)
def test_the_builder_taxes_invoices_as_business_central_does(build_conn, account, amounts, tax):
    import datetime as dt

    from erpsync.invoicing.builder import build_batch
    from erpsync.sync.spec import RunInfo
    from tests.support import invoicing_data as dd

    class _Undo(Exception):
        pass

    currency = {"c-eur": "EUR", "c-jpy": "JPY", "c-kwd": "KWD", "c-usd": "USD"}[account]
    try:
        with build_conn.transaction():
            for n, amount in enumerate(amounts):
                dd.add_item(
                    build_conn,
                    f"expense:g{n}",
                    account_id=account,
                    opportunity_id=f"opp-{account}",
                    currency=currency,
                    item_date="2026-10-10",
                    amount=D(amount),
                )
            result = build_batch(
                build_conn,
                RunInfo(dag_id="test", run_id="erptotals", task_id="build", actor="alice"),
                period_start=dt.date(2026, 10, 1),
                period_end=dt.date(2026, 10, 31),
                prepared_by="alice",
            )
            [inv] = result.invoices
            net = sum((D(a) for a in amounts), D(0))
            assert (D(inv["net"]), D(inv["tax"]), D(inv["total"])) == (net, D(tax), net + D(tax))
            lines = [(D(a), "STANDARD") for a in amounts]
            assert price_invoice(lines, {"STANDARD": D(21)}, currency).tax == D(tax)
            raise _Undo
    except _Undo:
        pass
