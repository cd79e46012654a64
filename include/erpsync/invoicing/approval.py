"""Approving or rejecting an invoice batch, and the Markdown summary the approver reads.

Rules (DESIGN.md "Invariants"):

* maker-checker: whoever prepared a batch cannot approve it (:class:`MakerCheckerError`,
  also enforced by a CHECK on ``billing.invoice_batches``);
* an approval is for a content hash: if the batch's current hash differs from the hash the
  approver saw, the approval is refused (:class:`BatchChangedError`); push compares
  ``decided_hash`` with the current hash again before it sends anything;
* a rejection releases the batch's item reservations so the next run can bill them;
* every decision is audited with who, the hash and the run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from erpsync import audit
from erpsync.invoicing.builder import load_result
from erpsync.invoicing.common import (
    Connection,
    RunLike,
    dict_one,
    dict_rows,
    jsonable,
    run_parts,
    scalar,
)
from erpsync.invoicing.errors import BatchChangedError, BatchStateError, MakerCheckerError
from erpsync.invoicing.hashing import current_hash

__all__ = ["Decision", "approval_markdown", "decide", "erp_total_differences"]

#: Rows of the per-client table shown before it is cut (the totals below it are complete).
MAX_CLIENT_ROWS = 200


@dataclass(frozen=True)
class Decision:
    batch_id: int
    decision: str
    status: str
    by: str
    content_hash: str
    decided_at: dt.datetime
    items_released: int = 0
    comment: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(
            {
                "batch_id": self.batch_id,
                "decision": self.decision,
                "status": self.status,
                "by": self.by,
                "content_hash": self.content_hash,
                "decided_at": self.decided_at.isoformat(),
                "items_released": self.items_released,
                "comment": self.comment,
            }
        )
        return out


def _same_person(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def decide(
    conn: Connection,
    run: RunLike | str,
    batch_id: int,
    *,
    decision: str,
    by: str,
    content_hash: str,
    comment: str | None = None,
) -> Decision:
    """Approve or reject batch ``batch_id`` as ``by``, for the content hash they were shown.

    Raises :class:`MakerCheckerError` when ``by`` prepared the batch and approves it,
    :class:`BatchChangedError` when the batch's content hash is no longer ``content_hash``
    (approval void), :class:`BatchStateError` when the batch is not awaiting approval.
    A rejection is allowed whatever the hash (it only ever stops billing) and releases the
    batch's items. Runs in the caller's transaction.
    """
    if decision not in ("approve", "reject"):
        raise ValueError("decision must be 'approve' or 'reject'")
    if not by or not str(by).strip():
        raise ValueError("the deciding user is required")
    by = str(by).strip()
    run_id, actor, source = run_parts(run)
    with conn.transaction():
        row = dict_one(
            conn,
            """SELECT status, prepared_by, content_hash, kind FROM billing.invoice_batches
               WHERE batch_id = %s FOR UPDATE""",
            (batch_id,),
        )
        if row is None:
            raise BatchStateError(f"invoice batch {batch_id} does not exist")
        status, prepared_by, stored_hash = row["status"], row["prepared_by"], row["content_hash"]
        if status != "awaiting_approval":
            raise BatchStateError(
                f"invoice batch {batch_id} is {status}, not awaiting approval: "
                "only a batch awaiting approval can be approved or rejected"
            )
        now_hash = current_hash(conn, batch_id)
        if decision == "approve":
            if _same_person(by, prepared_by):
                raise MakerCheckerError(
                    f"invoice batch {batch_id} was prepared by {prepared_by}, so {by} cannot "
                    "approve it: maker-checker (four-eyes) rule, a different person must "
                    "approve; the preparer may still reject it"
                )
            if now_hash != content_hash or now_hash != stored_hash:
                raise BatchChangedError(
                    f"invoice batch {batch_id} changed since it was shown for approval "
                    f"(approved hash {content_hash[:12]}, current hash {now_hash[:12]}): "
                    "the approval is void; review the current batch and approve that"
                )
        new_status = "approved" if decision == "approve" else "rejected"
        decided: dt.datetime = scalar(
            conn,
            """UPDATE billing.invoice_batches
               SET status = %s, decided_by = %s, decided_hash = %s, decided_at = now(),
                   decided_run_id = %s, decision_comment = %s, updated_at = now()
               WHERE batch_id = %s RETURNING decided_at""",
            (new_status, by, now_hash, run_id, comment, batch_id),
        )
        conn.execute(
            "UPDATE billing.invoices SET status = %s, updated_at = now() WHERE batch_id = %s",
            ("approved" if decision == "approve" else "rejected", batch_id),
        )
        released = 0
        if decision == "reject":
            released = conn.execute(
                """UPDATE billing.batch_items
                   SET active = false, released_at = now(), released_reason = 'batch rejected'
                   WHERE batch_id = %s AND active""",
                (batch_id,),
            ).rowcount
        totals = dict_rows(
            conn,
            """SELECT currency::text AS currency, count(*) AS invoices, sum(total) AS total
               FROM billing.invoices WHERE batch_id = %s GROUP BY 1 ORDER BY 1""",
            (batch_id,),
        )
        audit.record(
            conn,
            actor=by,
            action=f"invoice_batch.{new_status}",
            entity_type="invoice_batch",
            entity_id=str(batch_id),
            before={"status": status, "prepared_by": prepared_by},
            after={
                "status": new_status,
                "decided_by": by,
                "content_hash": now_hash,
                "items_released": released,
                "totals": {
                    t["currency"]: {"invoices": t["invoices"], "total": str(t["total"])}
                    for t in totals
                },
            },
            source=source,
            detail={
                "comment": comment,
                "kind": row["kind"],
                "run_actor": actor,
                "run_id": run_id,
            },
        )
    return Decision(
        batch_id=batch_id,
        decision=decision,
        status=new_status,
        by=by,
        content_hash=now_hash,
        decided_at=decided,
        items_released=released,
        comment=comment,
    )


def _md(text: object) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def approval_markdown(conn: Connection, batch_id: int) -> str:
    """The approver's summary: totals per client and currency, items held and why, anomalies."""
    result = load_result(conn, batch_id)
    row = dict_one(
        conn,
        """SELECT summary, prepared_by, prepared_run_id, decided_by, decided_hash, params
           FROM billing.invoice_batches WHERE batch_id = %s""",
        (batch_id,),
    )
    assert row is not None  # load_result raised for a missing batch
    summary, params = row["summary"], row["params"]
    prepared_by, prepared_run = row["prepared_by"], row["prepared_run_id"]
    decided_by, decided_hash = row["decided_by"], row["decided_hash"]
    now_hash = current_hash(conn, batch_id)
    title = {
        "period": "Invoice batch",
        "milestone": "Milestone invoice batch",
        "credit_note": "Credit note batch",
    }[result.kind]
    out = [f"# {title} {batch_id}", ""]
    if result.period_start:
        out.append(f"**Period:** {result.period_start} to {result.period_end}  ")
    out.append(f"**Status:** {result.status}  ")
    out.append(
        f"**Prepared by:** {prepared_by} (run `{prepared_run}`); "
        "the preparer cannot approve this batch.  "
    )
    out.append(f"**Content hash:** `{now_hash}`  ")
    if now_hash != result.content_hash:
        out.append("**Warning:** the batch changed since it was built; approval will be refused.  ")
    if params.get("clients"):
        out.append(f"**Clients:** {', '.join(params['clients'])}  ")
    if params.get("billing_types"):
        out.append(f"**Billing types:** {', '.join(params['billing_types'])}  ")
    if result.status == "dry_run":
        out.append("**Dry run:** nothing was reserved; this batch can never be pushed.  ")
    out.append(f"**Items billed:** {result.items:,}; invoices: {len(result.invoices):,}")
    out += [
        "",
        "## Totals per currency",
        "",
        "| Currency | Invoices | Net | Tax | Total |",
        "|---|---:|---:|---:|---:|",
    ]
    for cur, t in result.totals.items():
        out.append(f"| {cur} | {t['invoices']} | {t['net']} | {t['tax']} | {t['total']} |")
    out += [
        "",
        "## Totals per client and currency",
        "",
        "| Client | Currency | Invoices | Net | Tax | Total |",
        "|---|---|---:|---:|---:|---:|",
    ]
    per_client: dict[tuple[str, str, str], list[Any]] = {}
    for inv in result.invoices:
        key = (inv["account_id"], inv["client_name"] or "", inv["currency"])
        agg = per_client.setdefault(key, [0, Decimal(0), Decimal(0), Decimal(0)])
        agg[0] += 1
        agg[1] += Decimal(inv["net"])
        agg[2] += Decimal(inv["tax"])
        agg[3] += Decimal(inv["total"])
    ordered = sorted(per_client.items(), key=lambda kv: (kv[0][2], -kv[1][3], kv[0][0]))
    for (acc, name, cur), (n, net, tx, total) in ordered[:MAX_CLIENT_ROWS]:
        label = f"{_md(name)} ({_md(acc)})" if name else _md(acc)
        out.append(f"| {label} | {cur} | {n} | {net} | {tx} | {total} |")
    if len(ordered) > MAX_CLIENT_ROWS:
        out.append(
            f"| ... {len(ordered) - MAX_CLIENT_ROWS} more clients (see the export) | | | | | |"
        )
    out += ["", "## Items held and why", ""]
    held_rows = summary.get("held", [])
    if held_rows:
        out += ["| Reason | Held by | Currency | Items | Amount |", "|---|---|---|---:|---:|"]
        for h in held_rows:
            out.append(
                f"| {_md(h['reason'])} | {h['source']} | {h['currency'] or ''} | {h['items']} "
                f"| {h['amount'] or ''} |"
            )
        # what each reconciliation reason means, from the catalogue (the plausibility holds
        # say which bound of recon.settings the items broke)
        codes = sorted({h["reason"] for h in held_rows})
        out += [""] + [
            f"- `{_md(r['code'])}` ({_md(r['label'])}): {_md(r['description'])}"
            for r in dict_rows(
                conn,
                "SELECT code, label, description FROM recon.reasons WHERE code = ANY(%s)"
                " ORDER BY precedence",
                (codes,),
            )
        ]
    else:
        out.append("No items held in this scope.")
    if summary.get("reserved_elsewhere"):
        out.append(
            f"\n{summary['reserved_elsewhere']} ready items are already in another active batch."
        )
    blocks = summary.get("dq_blocks") or []
    if blocks:
        out += [
            "",
            "Active data-quality blocks: "
            + "; ".join(
                f"{b['scope_type']} {b['scope_key']} ({b['suite']}: {b['expectation']})"
                for b in blocks
            ),
        ]
    out += ["", "## ERP totals", ""]
    out.append(
        "Net, tax and total are computed by Business Central's documented VAT rule (VAT per"
        " invoice and VAT identifier, `round(base x VAT % / 100)` to the currency's minor unit,"
        ' nearest; docs/invoicing.md "Rounding"). At push time each ERP draft\'s totals are'
        " compared with these: a document whose ERP totals differ is held, not posted, and"
        " nothing of it is billed."
    )
    differences = erp_total_differences(conn, batch_id)
    if differences:
        out += [
            "",
            "**Differences with the ERP's computation (the push will hold these):**",
            "",
            "| Document | Currency | Approved tax | ERP tax | Approved total | ERP total | Why |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for d in differences:
            out.append(
                f"| {_md(d['document_number'])} | {d['currency']} | {d['approved_tax']} "
                f"| {d['erp_tax']} | {d['approved_total']} | {d['erp_total']} "
                f"| {_md(d['reason'])} |"
            )
    else:
        out += ["", "No difference with the ERP's computation."]
    out += ["", "## Anomalies (they inform, they do not block)", ""]
    if result.anomalies:
        for a in result.anomalies:
            out.append(
                f"- **{a['document_number'] or a['invoice_id']}** `{a['code']}`: "
                f"{_md(a['message'])}"
            )
    else:
        out.append("No anomalies flagged.")
    if decided_by:
        out += ["", f"Decided by {decided_by} for hash `{decided_hash}`."]
    return "\n".join(out) + "\n"


def erp_total_differences(conn: Connection, batch_id: int) -> list[dict[str, str]]:
    """Invoices of the batch whose tax or total differs from what Business Central computes.

    Before approval erpsync has the ERP's inputs from documented calls: the lines it will send
    and the ERP's VAT Posting Setup as last read (``core.vat_posting_setup``, the published
    ``VATPostingSetup`` web service, page 472). Two checks per invoice:

    * the invoice's tax is Business Central's rule on its own lines and rates
      (:func:`erpsync.invoicing.pricing.bc_vat`);
    * the ERP's current VAT % for the invoice's tax code and the client's VAT Business Posting
      Group (BC keeps no dates: it taxes a new draft at today's setup) is the invoice's rate;
      else the figures BC would compute with its rate are shown.
    """
    from erpsync import money
    from erpsync.invoicing import pricing, tax

    rows = dict_rows(
        conn,
        """SELECT i.invoice_id, i.document_number, i.currency::text AS currency, i.net, i.tax,
                  i.total, tp.country, coalesce(tp.tax_exempt, false) AS exempt,
                  coalesce(tp.reverse_charge, false) AS reverse_charge,
                  tp.crm_account_id IS NOT NULL AS has_profile
             FROM billing.invoices i
             LEFT JOIN core.tax_profiles tp
                    ON tp.crm_account_id = i.account_id AND tp.deleted_at IS NULL
            WHERE i.batch_id = %s AND i.status <> 'rejected'
            ORDER BY i.document_number""",
        (batch_id,),
    )
    lines_of: dict[int, list[tuple[Decimal, str | None, Decimal | None]]] = {}
    for line in dict_rows(
        conn,
        """SELECT l.invoice_id, l.net_amount, l.tax_code, l.tax_rate
             FROM billing.invoice_lines l JOIN billing.invoices i USING (invoice_id)
            WHERE i.batch_id = %s AND i.status <> 'rejected'
            ORDER BY l.invoice_id, l.line_no""",
        (batch_id,),
    ):
        lines_of.setdefault(int(line["invoice_id"]), []).append(
            (line["net_amount"], line["tax_code"], line["tax_rate"])
        )
    setup = {
        (str(r["vat_bus_posting_group"]), str(r["tax_code"])): Decimal(r["rate_percent"])
        for r in dict_rows(
            conn,
            """SELECT vat_bus_posting_group, tax_code, rate_percent FROM core.vat_posting_setup
                WHERE deleted_at IS NULL AND NOT blocked""",
        )
    }
    out: list[dict[str, str]] = []
    for r in rows:
        doc, net, tx, total = r["document_number"], r["net"], r["tax"], r["total"]
        currency = str(r["currency"]).strip()
        lines = lines_of.get(int(r["invoice_id"]), [])
        if not lines:
            continue
        try:
            money.quantum(currency)
        except money.UnknownCurrency:
            continue
        credit = net < 0
        sign = Decimal(-1) if credit else Decimal(1)
        specs = [(Decimal(a) * sign, str(code or "")) for a, code, _r in lines]
        rates = {str(code or ""): Decimal(rate or 0) for _a, code, rate in lines}
        reasons = []
        erp_rates = dict(rates)
        if r["has_profile"]:
            area = tax.tax_area_for(
                r["country"], exempt=r["exempt"], reverse_charge=r["reverse_charge"]
            )
            for code in rates:
                pct = setup.get((area, code))
                if pct is not None and pct != rates[code]:
                    erp_rates[code] = pct
                    reasons.append(
                        f"the ERP's VAT Posting Setup ({area}, {code}) now has"
                        f" {pct.normalize():f} %, the invoice {rates[code].normalize():f} %"
                    )
        erp_tax = sum(pricing.bc_vat(specs, erp_rates, currency).values(), Decimal(0)) * sign
        erp_total = Decimal(net) + erp_tax
        if erp_tax != Decimal(tx) and not reasons:
            reasons.append("the invoice's tax is not Business Central's rule on its lines")
        if erp_tax != Decimal(tx) or erp_total != Decimal(total):
            out.append(
                {
                    "document_number": str(doc),
                    "currency": currency,
                    "approved_tax": str(money.round_money(Decimal(tx), currency)),
                    "erp_tax": str(money.round_money(erp_tax, currency)),
                    "approved_total": str(money.round_money(Decimal(total), currency)),
                    "erp_total": str(money.round_money(erp_total, currency)),
                    "reason": "; ".join(reasons),
                }
            )
    return out


def verify_approval(conn: Connection, batch_id: int) -> str:
    """The batch's decided hash if it is approved (or pushing) and its content still hashes to
    it; else :class:`BatchStateError` / :class:`BatchChangedError` (for the pusher)."""
    row = conn.execute(
        "SELECT status, decided_hash FROM billing.invoice_batches WHERE batch_id = %s",
        (batch_id,),
    ).fetchone()
    if row is None:
        raise BatchStateError(f"invoice batch {batch_id} does not exist")
    status, decided_hash = row
    if status not in ("approved", "pushing"):
        raise BatchStateError(f"invoice batch {batch_id} is {status}, not approved")
    now_hash = current_hash(conn, batch_id)
    if now_hash != decided_hash:
        raise BatchChangedError(
            f"invoice batch {batch_id} changed after it was approved (approved hash "
            f"{str(decided_hash)[:12]}, current {now_hash[:12]}): the approval is void"
        )
    return now_hash
