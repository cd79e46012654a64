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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg.rows import class_row

from erpsync import audit
from erpsync.invoicing.builder import (
    BUILD_LOCK_KEY,
    BatchResult,
    load_result,
    scope_hash,
)
from erpsync.invoicing.common import Connection, RunLike, jsonable, run_parts, scalar
from erpsync.invoicing.errors import BatchStateError, CreditNoteError
from erpsync.invoicing.hashing import compute_hash
from erpsync.money import round_money

__all__ = ["CREDIT_PREFIX", "create_credit_note"]

#: Customer-facing prefix of every credit line's description.
CREDIT_PREFIX = "Credit: "

#: One requested credit line: ``{"line_no": n}``, ``{"line_no": n, "amount": ...}`` or
#: ``{"description": "...", "amount": ...}`` (module docstring).
LineSpec = Mapping[str, Any]


@dataclass(frozen=True)
class OriginalInvoice:
    """The posted invoice a credit note corrects (``billing.invoices``)."""

    invoice_id: int
    kind: str
    status: str
    document_number: str
    account_id: str
    client_name: str | None
    erp_customer_id: str | None
    erp_customer_number: str | None
    opportunity_id: str | None
    version: int | None
    currency: str
    po_number: str | None
    invoice_date: dt.date
    period_start: dt.date | None
    period_end: dt.date | None
    net: Decimal
    erp_invoice_id: str | None
    erp_number: str | None


@dataclass(frozen=True)
class OriginalLine:
    """A line of the original invoice (``billing.invoice_lines``)."""

    line_no: int
    kind: str
    description: str
    hours: Decimal | None
    quantity: Decimal
    unit_price: Decimal
    net_amount: Decimal
    tax_code: str
    tax_rate: Decimal
    item_keys: list[str]


@dataclass(frozen=True)
class CreditLine:
    """A line of the credit note (negative net; ``credit_of_line_no`` = the line it corrects)."""

    kind: str
    description: str
    hours: Decimal | None
    quantity: Decimal
    unit_price: Decimal
    net_amount: Decimal
    tax_code: str
    tax_rate: Decimal
    item_keys: list[str]
    credit_of_line_no: int | None


#: (tax code, rate, base, amount) of the credit note, per tax code and rate.
TaxRow = tuple[str, Decimal, Decimal, Decimal]


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
    conn: Connection,
    run: RunLike | str,
    invoice_id: int,
    *,
    reason: str,
    prepared_by: str,
    lines: list[dict[str, Any]] | None = None,
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
        orig = _load_original(conn, invoice_id)
        _check_creditable(orig)
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
            return load_result(conn, int(again[0]), unchanged=True)

        new_lines = _credit_lines(conn, orig, lines)
        taxes = _taxes(new_lines, orig.currency)
        net = sum((ln.net_amount for ln in new_lines), Decimal(0))
        tax_total = sum((t[3] for t in taxes), Decimal(0))
        batch_id = _create_batch(conn, orig, scope_key, reason, canonical, prepared_by, run_id)
        number = _next_number(conn, orig)
        new_id = _insert_credit_invoice(conn, orig, batch_id, number, net, tax_total, reason)
        _write_lines(conn, new_id, new_lines)
        _write_taxes(conn, orig.invoice_id, new_id, taxes)
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
                "credit_of": orig.document_number,
                "credit_of_erp_number": orig.erp_number,
                "currency": orig.currency,
                "net": str(net),
                "tax": str(tax_total),
                "total": str(net + tax_total),
                "content_hash": chash,
                "prepared_by": prepared_by,
            },
            source=source,
            detail={"reason": reason, "lines": canonical, "erp_invoice_id": orig.erp_invoice_id},
        )
        return load_result(conn, batch_id)


def _load_original(conn: Connection, invoice_id: int) -> OriginalInvoice:
    """The invoice to credit, locked for the rest of the transaction."""
    with conn.cursor(row_factory=class_row(OriginalInvoice)) as cur:
        orig = cur.execute(
            """SELECT invoice_id, kind, status, document_number, account_id, client_name,
                      erp_customer_id, erp_customer_number, opportunity_id, version,
                      currency::text AS currency, po_number, invoice_date, period_start,
                      period_end, net, erp_invoice_id, erp_number
               FROM billing.invoices WHERE invoice_id = %s FOR UPDATE""",
            (invoice_id,),
        ).fetchone()
    if orig is None:
        raise BatchStateError(f"invoice {invoice_id} does not exist")
    return orig


def _check_creditable(orig: OriginalInvoice) -> None:
    doc = orig.document_number
    if orig.kind != "invoice":
        raise CreditNoteError(f"{doc} is a credit note; credit the original invoice instead")
    if orig.status not in ("posted", "billed_back"):
        raise BatchStateError(
            f"invoice {doc} is {orig.status}: only a posted invoice is corrected by a credit note "
            "(reject or rebuild its batch instead)"
        )


def _credit_lines(
    conn: Connection, orig: OriginalInvoice, lines: Sequence[LineSpec] | None
) -> list[CreditLine]:
    """The credit note's lines for ``lines`` (None: the rest of every line), checked against
    what the invoice's earlier credit notes already credited, per line and in total."""
    with conn.cursor(row_factory=class_row(OriginalLine)) as cur:
        orig_lines = cur.execute(
            """SELECT line_no, kind, description, hours, quantity, unit_price, net_amount,
                      tax_code, tax_rate, item_keys
               FROM billing.invoice_lines WHERE invoice_id = %s ORDER BY line_no""",
            (orig.invoice_id,),
        ).fetchall()
    credited: dict[int | None, Decimal] = defaultdict(Decimal)
    for line_no, net in conn.execute(
        """SELECT l.credit_of_line_no, l.net_amount
           FROM billing.invoices c JOIN billing.invoice_lines l USING (invoice_id)
           WHERE c.credit_of_invoice_id = %s AND c.status <> 'rejected'""",
        (orig.invoice_id,),
    ).fetchall():
        credited[line_no] += -Decimal(net)  # stored negative
    by_no = {line.line_no: line for line in orig_lines}
    default_code = orig_lines[0].tax_code if orig_lines else "STANDARD"
    default_rate = orig_lines[0].tax_rate if orig_lines else Decimal(0)
    doc, cur_code = orig.document_number, orig.currency

    new_lines: list[CreditLine] = []
    specs: Sequence[LineSpec] = lines if lines is not None else [{"line_no": n} for n in by_no]
    for spec in specs:
        if "line_no" in spec:
            no = int(spec["line_no"])
            if no not in by_no:
                raise CreditNoteError(f"invoice {doc} has no line {no}")
            line = by_no[no]
            remaining = Decimal(line.net_amount) - credited[no]
            if "amount" in spec:
                amount = _amount(spec["amount"], cur_code)
                if amount > remaining:
                    raise CreditNoteError(
                        f"line {no} of {doc} has {remaining} {cur_code} left to credit, not"
                        f" {amount}"
                    )
            else:
                amount = remaining
            if amount <= 0:
                if lines is None:
                    continue
                raise CreditNoteError(f"line {no} of {doc} is already fully credited")
            credited[no] += amount
            new_lines.append(_line_credit(line, amount))
        else:
            amount = _amount(spec.get("amount"), cur_code)
            desc = str(spec.get("description") or "").strip()
            if not desc:
                raise CreditNoteError("a free credit line needs a description")
            new_lines.append(
                CreditLine(
                    kind="credit",
                    description=f"{CREDIT_PREFIX}{desc}",
                    hours=None,
                    quantity=Decimal(-1),
                    unit_price=amount,
                    net_amount=-amount,
                    tax_code=default_code,
                    tax_rate=default_rate,
                    item_keys=[],
                    credit_of_line_no=None,
                )
            )
            credited[None] += amount
    if not new_lines:
        raise CreditNoteError(f"invoice {doc} is already fully credited")
    if sum(credited.values(), Decimal(0)) > Decimal(orig.net):
        raise CreditNoteError(
            f"the credit notes of {doc} would total {sum(credited.values())} {cur_code}, "
            f"more than the {orig.net} {cur_code} invoiced"
        )
    return new_lines


def _line_credit(line: OriginalLine, amount: Decimal) -> CreditLine:
    """The credit of ``amount`` of an original line: the whole line negated (hours, quantity,
    items) when it is all of it, else one unit of ``amount`` without items."""
    full = amount == Decimal(line.net_amount)
    return CreditLine(
        kind=line.kind,
        description=f"{CREDIT_PREFIX}{line.description}",
        hours=-line.hours if (full and line.hours is not None) else None,
        quantity=-line.quantity if full else Decimal(-1),
        unit_price=line.unit_price if full else amount,
        net_amount=-amount,
        tax_code=line.tax_code,
        tax_rate=line.tax_rate,
        item_keys=list(line.item_keys) if full else [],
        credit_of_line_no=line.line_no,
    )


def _taxes(new_lines: list[CreditLine], currency: str) -> list[TaxRow]:
    """Tax per tax code and rate over the credit lines, rounded once per group."""
    groups: dict[tuple[str, Decimal], Decimal] = defaultdict(Decimal)
    for ln in new_lines:
        groups[(ln.tax_code, ln.tax_rate)] += ln.net_amount
    return [
        (code, rate, base, round_money(base * Decimal(rate) / 100, currency))
        for (code, rate), base in sorted(groups.items())
    ]


def _create_batch(
    conn: Connection,
    orig: OriginalInvoice,
    scope_key: str,
    reason: str,
    canonical: list[dict[str, str]],
    prepared_by: str,
    run_id: str,
) -> int:
    """The credit note's own batch (kind ``credit_note``, draft until its hash is stored)."""
    params = {
        "credit_of_invoice_id": orig.invoice_id,
        "credit_of": orig.document_number,
        "reason": reason,
        "lines": canonical,
    }
    return int(
        scalar(
            conn,
            """INSERT INTO billing.invoice_batches
                   (kind, period_start, period_end, scope_key, params, status, content_hash,
                    prepared_by, prepared_run_id, summary)
               VALUES ('credit_note', %s, %s, %s, %s::jsonb, 'draft', '', %s, %s, %s::jsonb)
               RETURNING batch_id""",
            (
                orig.period_start,
                orig.period_end,
                scope_key,
                json.dumps(jsonable(params)),
                prepared_by,
                run_id,
                json.dumps({"held": [], "items_billed": 0, "credit_of": orig.document_number}),
            ),
        )
    )


def _next_number(conn: Connection, orig: OriginalInvoice) -> str:
    """``CRN-<yyyymm of the original>-<digest of its number>-<n>``: the n-th credit note."""
    n = int(
        scalar(
            conn,
            """SELECT count(*) FROM billing.invoices
               WHERE credit_of_invoice_id = %s AND document_number IS NOT NULL""",
            (orig.invoice_id,),
        )
    )
    digest = hashlib.sha256(str(orig.document_number).encode()).hexdigest()[:10].upper()
    return f"CRN-{orig.invoice_date:%Y%m}-{digest}-{n + 1}"


def _insert_credit_invoice(
    conn: Connection,
    orig: OriginalInvoice,
    batch_id: int,
    number: str,
    net: Decimal,
    tax_total: Decimal,
    reason: str,
) -> int:
    """The credit note's ``billing.invoices`` row (the original's client, contract, currency
    and period; dated today); returns its id."""
    today = dt.datetime.now(dt.UTC).date()
    return int(
        scalar(
            conn,
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
                f"credit_note|{orig.invoice_id}",
                orig.account_id,
                orig.client_name,
                orig.erp_customer_id,
                orig.erp_customer_number,
                orig.opportunity_id,
                orig.version,
                orig.currency,
                orig.po_number,
                today,
                orig.period_start,
                orig.period_end,
                net,
                tax_total,
                net + tax_total,
                orig.invoice_id,
                reason.strip(),
            ),
        )
    )


def _write_lines(conn: Connection, new_id: int, new_lines: list[CreditLine]) -> None:
    for i, ln in enumerate(new_lines, start=1):
        conn.execute(
            """INSERT INTO billing.invoice_lines
                   (invoice_id, line_no, kind, description, hours, quantity, unit_price,
                    net_amount, tax_code, tax_rate, item_keys, credit_of_line_no)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                new_id,
                i,
                ln.kind,
                ln.description,
                ln.hours,
                ln.quantity,
                ln.unit_price,
                ln.net_amount,
                ln.tax_code,
                ln.tax_rate,
                ln.item_keys,
                ln.credit_of_line_no,
            ),
        )


def _write_taxes(conn: Connection, original_id: int, new_id: int, taxes: list[TaxRow]) -> None:
    """The credit note's taxes, with the original's legal note of the same tax code."""
    notes: dict[str, str | None] = dict(
        conn.execute(
            "SELECT tax_code, legal_note FROM billing.invoice_taxes WHERE invoice_id = %s",
            (original_id,),
        ).fetchall()
    )
    for code, rate, base, amount in taxes:
        conn.execute(
            """INSERT INTO billing.invoice_taxes (invoice_id, tax_code, rate, base, amount,
                   legal_note) VALUES (%s, %s, %s, %s, %s, %s)""",
            (new_id, code, rate, base, amount, notes.get(code)),
        )
