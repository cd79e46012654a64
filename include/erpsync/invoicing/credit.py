"""Credit notes: the only way to correct a released (posted) invoice.

A credit note references the original invoice (``credit_of_invoice_id``), carries negative
lines (``credit_of_line_no`` says which original line each one corrects), is taxed with the
original's tax code and rate by the same rule (per credit note and tax code, rounded half away
from zero, so a full credit is exactly the negative of the original), and goes through the
same batch, approval and push path as an invoice (batch kind ``credit_note``). The original's
items stay billed: a credit note corrects money, it does not make work billable again.

``lines=None`` credits whatever is left of every line. Otherwise ``lines`` is a list of
``{"line_no": n}`` (the rest of that line), ``{"line_no": n, "amount": Decimal("...")}`` (part
of it) or ``{"description": "...", "amount": Decimal("...")}`` (a free correction line);
amounts are positive, in the invoice currency, already in minor units. The sum of all credit
notes of an invoice never exceeds what it invoiced (per line and in total).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

from erpsync import audit
from erpsync.invoicing.builder import (
    BUILD_LOCK_KEY,
    BatchResult,
    load_result,
    scope_hash,
)
from erpsync.invoicing.common import jsonable, run_parts
from erpsync.invoicing.errors import BatchStateError, CreditNoteError
from erpsync.invoicing.hashing import compute_hash
from erpsync.money import round_money

__all__ = ["create_credit_note"]


def _amount(value: Any, currency: str) -> Decimal:
    amount = Decimal(str(value))
    if amount <= 0:
        raise CreditNoteError(f"credit amounts are positive numbers, got {value}")
    if round_money(amount, currency) != amount:
        raise CreditNoteError(
            f"credit amount {value} has more decimals than {currency} allows; round it first"
        )
    return amount


def create_credit_note(
    conn,
    run: Any,
    invoice_id: int,
    *,
    reason: str,
    prepared_by: str,
    lines: list[dict] | None = None,
) -> BatchResult:
    """Prepare a credit note for posted invoice ``invoice_id`` in a new batch awaiting
    approval. Asking again for the same credit (same invoice, lines and reason) while it is
    not rejected returns the existing batch."""
    if not reason or not reason.strip():
        raise CreditNoteError("a credit note needs a reason (it is printed and audited)")
    if not prepared_by or not prepared_by.strip():
        raise ValueError("prepared_by is required: the approver must be someone else")
    prepared_by = prepared_by.strip()
    run_id, actor, source = run_parts(run)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUILD_LOCK_KEY,))
        orig = conn.execute(
            """SELECT invoice_id, kind, status, document_number, account_id, client_name,
                      erp_customer_id, erp_customer_number, opportunity_id, version,
                      currency::text, po_number, invoice_date, period_start, period_end, net,
                      erp_invoice_id, erp_number
               FROM billing.invoices WHERE invoice_id = %s FOR UPDATE""",
            (invoice_id,),
        ).fetchone()
        if orig is None:
            raise BatchStateError(f"invoice {invoice_id} does not exist")
        (
            _,
            kind,
            status,
            doc,
            account,
            client_name,
            erp_cust,
            erp_cust_no,
            opp,
            version,
            cur,
            po,
            inv_date,
            ps,
            pe,
            orig_net,
            erp_inv_id,
            erp_number,
        ) = orig
        if kind != "invoice":
            raise CreditNoteError(f"{doc} is a credit note; credit the original invoice instead")
        if status not in ("posted", "billed_back"):
            raise BatchStateError(
                f"invoice {doc} is {status}: only a posted invoice is corrected by a credit note "
                "(reject or rebuild its batch instead)"
            )
        canonical = [
            {k: str(v) for k, v in sorted(spec.items())} for spec in (lines or [{"all": True}])
        ]
        scope_key = scope_hash(
            {"kind": "credit_note", "invoice_id": invoice_id, "lines": canonical, "reason": reason}
        )
        again = conn.execute(
            """SELECT batch_id FROM billing.invoice_batches
               WHERE scope_key = %s AND status NOT IN ('rejected', 'dry_run')
               ORDER BY batch_id DESC LIMIT 1""",
            (scope_key,),
        ).fetchone()
        if again:
            return load_result(conn, again[0], unchanged=True)

        orig_lines = conn.execute(
            """SELECT line_no, kind, description, hours, quantity, unit_price, net_amount,
                      tax_code, tax_rate, item_keys
               FROM billing.invoice_lines WHERE invoice_id = %s ORDER BY line_no""",
            (invoice_id,),
        ).fetchall()
        notes = dict(
            conn.execute(
                "SELECT tax_code, legal_note FROM billing.invoice_taxes WHERE invoice_id = %s",
                (invoice_id,),
            ).fetchall()
        )
        credited: dict[int | None, Decimal] = defaultdict(Decimal)
        for line_no, net in conn.execute(
            """SELECT l.credit_of_line_no, l.net_amount
               FROM billing.invoices c JOIN billing.invoice_lines l USING (invoice_id)
               WHERE c.credit_of_invoice_id = %s AND c.status <> 'rejected'""",
            (invoice_id,),
        ).fetchall():
            credited[line_no] += -Decimal(net)  # stored negative
        by_no = {r[0]: r for r in orig_lines}
        default_code = orig_lines[0][7] if orig_lines else "STANDARD"
        default_rate = orig_lines[0][8] if orig_lines else Decimal(0)

        new_lines: list[dict] = []
        specs = lines if lines is not None else [{"line_no": n} for n in by_no]
        for spec in specs:
            if "line_no" in spec:
                no = int(spec["line_no"])
                if no not in by_no:
                    raise CreditNoteError(f"invoice {doc} has no line {no}")
                _, lkind, desc, hours, qty, price, net, code, rate, keys = by_no[no]
                remaining = Decimal(net) - credited[no]
                if "amount" in spec:
                    amount = _amount(spec["amount"], cur)
                    if amount > remaining:
                        raise CreditNoteError(
                            f"line {no} of {doc} has {remaining} {cur} left to credit, not {amount}"
                        )
                else:
                    amount = remaining
                if amount <= 0:
                    if lines is None:
                        continue
                    raise CreditNoteError(f"line {no} of {doc} is already fully credited")
                credited[no] += amount
                full = amount == Decimal(net)
                new_lines.append(
                    {
                        "kind": lkind,
                        "description": f"Credit: {desc}",
                        "hours": -hours if (full and hours is not None) else None,
                        "quantity": -qty if full else Decimal(-1),
                        "unit_price": price if full else amount,
                        "net_amount": -amount,
                        "tax_code": code,
                        "tax_rate": rate,
                        "item_keys": list(keys) if full else [],
                        "credit_of_line_no": no,
                    }
                )
            else:
                amount = _amount(spec.get("amount"), cur)
                desc = str(spec.get("description") or "").strip()
                if not desc:
                    raise CreditNoteError("a free credit line needs a description")
                new_lines.append(
                    {
                        "kind": "credit",
                        "description": f"Credit: {desc}",
                        "hours": None,
                        "quantity": Decimal(-1),
                        "unit_price": amount,
                        "net_amount": -amount,
                        "tax_code": default_code,
                        "tax_rate": default_rate,
                        "item_keys": [],
                        "credit_of_line_no": None,
                    }
                )
                credited[None] += amount
        if not new_lines:
            raise CreditNoteError(f"invoice {doc} is already fully credited")
        if sum(credited.values(), Decimal(0)) > Decimal(orig_net):
            raise CreditNoteError(
                f"the credit notes of {doc} would total {sum(credited.values())} {cur}, "
                f"more than the {orig_net} {cur} invoiced"
            )

        groups: dict[tuple[str, Decimal], Decimal] = defaultdict(Decimal)
        for ln in new_lines:
            groups[(ln["tax_code"], ln["tax_rate"])] += ln["net_amount"]
        taxes = [
            (code, rate, base, round_money(base * Decimal(rate) / 100, cur))
            for (code, rate), base in sorted(groups.items())
        ]
        net = sum((ln["net_amount"] for ln in new_lines), Decimal(0))
        tax_total = sum((t[3] for t in taxes), Decimal(0))
        n = conn.execute(
            """SELECT count(*) FROM billing.invoices
               WHERE credit_of_invoice_id = %s AND document_number IS NOT NULL""",
            (invoice_id,),
        ).fetchone()[0]
        digest = hashlib.sha256(str(doc).encode()).hexdigest()[:10].upper()
        number = f"CRN-{inv_date:%Y%m}-{digest}-{n + 1}"
        today = dt.datetime.now(dt.UTC).date()
        batch_id = conn.execute(
            """INSERT INTO billing.invoice_batches
                   (kind, period_start, period_end, scope_key, params, status, content_hash,
                    prepared_by, prepared_run_id, summary)
               VALUES ('credit_note', %s, %s, %s, %s::jsonb, 'draft', '', %s, %s, %s::jsonb)
               RETURNING batch_id""",
            (
                ps,
                pe,
                scope_key,
                json.dumps(
                    jsonable(
                        {
                            "credit_of_invoice_id": invoice_id,
                            "credit_of": doc,
                            "reason": reason,
                            "lines": canonical,
                        }
                    )
                ),
                prepared_by,
                run_id,
                json.dumps({"held": [], "items_billed": 0, "credit_of": doc}),
            ),
        ).fetchone()[0]
        new_id = conn.execute(
            """INSERT INTO billing.invoices
                   (batch_id, kind, document_number, invoice_scope, account_id, client_name,
                    erp_customer_id, erp_customer_number, opportunity_id, version, currency,
                    po_number, invoice_date, period_start, period_end, net, tax, total, status,
                    credit_of_invoice_id, credit_reason)
               VALUES (%s, 'credit_note', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       %s, %s, %s, 'draft', %s, %s)
               RETURNING invoice_id""",
            (
                batch_id,
                number,
                f"credit_note|{invoice_id}",
                account,
                client_name,
                erp_cust,
                erp_cust_no,
                opp,
                version,
                cur,
                po,
                today,
                ps,
                pe,
                net,
                tax_total,
                net + tax_total,
                invoice_id,
                reason.strip(),
            ),
        ).fetchone()[0]
        for i, ln in enumerate(new_lines, start=1):
            conn.execute(
                """INSERT INTO billing.invoice_lines
                       (invoice_id, line_no, kind, description, hours, quantity, unit_price,
                        net_amount, tax_code, tax_rate, item_keys, credit_of_line_no)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    new_id,
                    i,
                    ln["kind"],
                    ln["description"],
                    ln["hours"],
                    ln["quantity"],
                    ln["unit_price"],
                    ln["net_amount"],
                    ln["tax_code"],
                    ln["tax_rate"],
                    ln["item_keys"],
                    ln["credit_of_line_no"],
                ),
            )
        for code, rate, base, amount in taxes:
            conn.execute(
                """INSERT INTO billing.invoice_taxes (invoice_id, tax_code, rate, base, amount,
                       legal_note) VALUES (%s, %s, %s, %s, %s, %s)""",
                (new_id, code, rate, base, amount, notes.get(code)),
            )
        chash = compute_hash(conn, batch_id)
        conn.execute(
            """UPDATE billing.invoice_batches SET status = 'awaiting_approval', content_hash = %s,
                   updated_at = now() WHERE batch_id = %s""",
            (chash, batch_id),
        )
        audit.record(
            conn,
            actor=actor,
            action="credit_note.prepared",
            entity_type="invoice_batch",
            entity_id=str(batch_id),
            after={
                "credit_note": number,
                "credit_of": doc,
                "credit_of_erp_number": erp_number,
                "currency": cur,
                "net": str(net),
                "tax": str(tax_total),
                "total": str(net + tax_total),
                "content_hash": chash,
                "prepared_by": prepared_by,
            },
            source=source,
            detail={"reason": reason, "lines": canonical, "erp_invoice_id": erp_inv_id},
        )
        return load_result(conn, batch_id)
