"""Export of a released invoice batch as CSV and JSON for downstream systems and auditors.

Files (schema version :data:`SCHEMA_VERSION`, documented in docs/invoicing.md; columns are
only ever added at the end, never renamed or removed, within a major version):

* ``invoices.csv``: one row per invoice or credit note, columns :data:`INVOICE_COLUMNS`;
* ``invoice_lines.csv``: one row per line, columns :data:`LINE_COLUMNS`;
* ``batch.json``: the batch with its invoices, lines and tax rows nested, plus the SHA-256
  of the two CSV files.

Money is written as a plain decimal string with exactly the currency's minor units
(``1234.50`` EUR, ``1235`` JPY, ``1.235`` KWD); dates are ISO 8601; CSV is UTF-8, comma
separated, ``\\n`` line ends, quoted where needed. The same batch always exports to the same
bytes. Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from erpsync import money, paths
from erpsync.invoicing.common import Connection, dict_one, dict_rows
from erpsync.invoicing.errors import BatchStateError

__all__ = ["INVOICE_COLUMNS", "LINE_COLUMNS", "SCHEMA_VERSION", "export_batch"]

SCHEMA_VERSION = "1.0"
EXPORTABLE = ("released",)

INVOICE_COLUMNS = [
    "batch_id", "document_number", "kind", "status", "erp_invoice_id", "erp_number",
    "invoice_date", "period_start", "period_end", "account_id", "client_name",
    "erp_customer_number", "opportunity_id", "contract_version", "po_number", "currency",
    "net", "tax", "total", "tax_codes", "credit_of_document_number", "credit_reason",
    "line_count", "content_hash",
]  # fmt: skip
LINE_COLUMNS = [
    "batch_id", "document_number", "line_no", "kind", "description", "hours", "quantity",
    "unit_price", "net_amount", "currency", "tax_code", "tax_rate", "credit_of_line_no",
    "item_count", "item_keys",
]  # fmt: skip


def _money(value: Decimal | int, currency: str) -> str:
    return money.as_text(value, currency, unknown="raise")  # a document: never unrounded


def _num(value: Decimal | int | None) -> str:
    if value is None:
        return ""
    text = format(Decimal(value).normalize(), "f")
    return text


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buf.getvalue().encode("utf-8")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _by_invoice(conn: Connection, query: str, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The rows of ``query`` (over ``invoice_id = ANY(ids)``) grouped by invoice."""
    grouped: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for r in dict_rows(conn, query, (ids,)):
        grouped[r["invoice_id"]].append(r)
    return grouped


def export_batch(conn: Connection, batch_id: int, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``invoices.csv``, ``invoice_lines.csv`` and ``batch.json`` of released batch
    ``batch_id`` into ``out_dir`` (default ``<state dir>/exports/<batch_id>/``, the state dir
    being ``.erpsync``) and return their paths."""
    batch = dict_one(
        conn,
        """SELECT batch_id, kind, status, period_start, period_end, content_hash, prepared_by,
                  prepared_at, decided_by, decided_at, decided_hash, released_at
           FROM billing.invoice_batches WHERE batch_id = %s""",
        (batch_id,),
    )
    if batch is None:
        raise BatchStateError(f"invoice batch {batch_id} does not exist")
    if batch["status"] not in EXPORTABLE:
        raise BatchStateError(
            f"invoice batch {batch_id} is {batch['status']}: only released batches are exported"
        )
    out = Path(out_dir) if out_dir else paths.state_dir() / "exports" / str(batch_id)
    out.mkdir(parents=True, exist_ok=True)
    invoices = dict_rows(
        conn,
        """SELECT i.invoice_id, i.document_number, i.kind, i.status, i.erp_invoice_id,
                  i.erp_number, i.invoice_date, i.period_start, i.period_end, i.account_id,
                  i.client_name,
                  coalesce(nullif(i.erp_customer_number, ''),
                           (SELECT m.erp_number FROM core.clients c
                              JOIN core.id_map m ON m.canonical_id = c.canonical_id
                             WHERE c.crm_id = i.account_id LIMIT 1)) AS erp_customer_number,
                  i.opportunity_id, i.version,
                  i.po_number, i.currency::text AS currency, i.net, i.tax, i.total,
                  o.document_number AS credit_of_document_number, i.credit_reason
           FROM billing.invoices i
           LEFT JOIN billing.invoices o ON o.invoice_id = i.credit_of_invoice_id
           WHERE i.batch_id = %s ORDER BY i.document_number""",
        (batch_id,),
    )
    ids = [r["invoice_id"] for r in invoices]
    lines_by = _by_invoice(
        conn,
        """SELECT invoice_id, line_no, kind, description, hours, quantity, unit_price, net_amount,
                  tax_code, tax_rate, credit_of_line_no, item_keys
           FROM billing.invoice_lines WHERE invoice_id = ANY(%s) ORDER BY invoice_id, line_no""",
        ids,
    )
    taxes_by = _by_invoice(
        conn,
        """SELECT invoice_id, tax_code, rate, base, amount, legal_note
           FROM billing.invoice_taxes WHERE invoice_id = ANY(%s) ORDER BY invoice_id, tax_code""",
        ids,
    )

    inv_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    nested: list[dict[str, Any]] = []
    for r in invoices:
        lines = lines_by[r["invoice_id"]]
        taxes = taxes_by[r["invoice_id"]]
        inv = _invoice_row(batch, r, lines, taxes)
        inv_rows.append(inv)
        cur = r["currency"]
        jl = []
        for ln in lines:
            row = _line_row(batch_id, r["document_number"], cur, ln)
            line_rows.append(row)
            jl.append({**{k: v for k, v in row.items() if k not in ("batch_id", "document_number",
                                                                   "item_keys")},
                       "item_keys": list(ln["item_keys"])})  # fmt: skip
        nested.append(
            {
                **{k: v for k, v in inv.items() if k not in ("batch_id", "content_hash")},
                "lines": jl,
                "taxes": [
                    {
                        "tax_code": t["tax_code"],
                        "rate": _num(t["rate"]),
                        "base": _money(t["base"], cur),
                        "amount": _money(t["amount"], cur),
                        "legal_note": t["legal_note"],
                    }
                    for t in taxes
                ],
            }
        )
    inv_csv = _csv(INVOICE_COLUMNS, inv_rows)
    line_csv = _csv(LINE_COLUMNS, line_rows)
    doc = {
        "schema": "erpsync.invoice_batch",
        "schema_version": SCHEMA_VERSION,
        "batch": {
            "batch_id": batch["batch_id"],
            "kind": batch["kind"],
            "status": batch["status"],
            "period_start": _iso(batch["period_start"]),
            "period_end": _iso(batch["period_end"]),
            "content_hash": batch["content_hash"],
            "prepared_by": batch["prepared_by"],
            "approved_by": batch["decided_by"],
            "approved_at": _iso(batch["decided_at"]),
            "approved_hash": batch["decided_hash"],
            "released_at": _iso(batch["released_at"]),
        },
        "files": {
            "invoices.csv": hashlib.sha256(inv_csv).hexdigest(),
            "invoice_lines.csv": hashlib.sha256(line_csv).hexdigest(),
        },
        "invoices": nested,
    }
    targets = [out / "invoices.csv", out / "invoice_lines.csv", out / "batch.json"]
    _write(targets[0], inv_csv)
    _write(targets[1], line_csv)
    _write(targets[2], (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return targets


def _invoice_row(
    batch: dict[str, Any],
    r: dict[str, Any],
    lines: list[dict[str, Any]],
    taxes: list[dict[str, Any]],
) -> dict[str, Any]:
    """One ``invoices.csv`` row (INVOICE_COLUMNS)."""
    cur = r["currency"]
    return {
        "batch_id": batch["batch_id"],
        "document_number": r["document_number"],
        "kind": r["kind"],
        "status": r["status"],
        "erp_invoice_id": r["erp_invoice_id"],
        "erp_number": r["erp_number"],
        "invoice_date": r["invoice_date"].isoformat(),
        "period_start": _iso(r["period_start"]),
        "period_end": _iso(r["period_end"]),
        "account_id": r["account_id"],
        "client_name": r["client_name"],
        "erp_customer_number": r["erp_customer_number"],
        "opportunity_id": r["opportunity_id"],
        "contract_version": r["version"],
        "po_number": r["po_number"],
        "currency": cur,
        "net": _money(r["net"], cur),
        "tax": _money(r["tax"], cur),
        "total": _money(r["total"], cur),
        "tax_codes": ";".join(t["tax_code"] for t in taxes),
        "credit_of_document_number": r["credit_of_document_number"],
        "credit_reason": r["credit_reason"],
        "line_count": len(lines),
        "content_hash": batch["content_hash"],
    }


def _line_row(batch_id: int, document_number: str, cur: str, ln: dict[str, Any]) -> dict[str, Any]:
    """One ``invoice_lines.csv`` row (LINE_COLUMNS)."""
    return {
        "batch_id": batch_id,
        "document_number": document_number,
        "line_no": ln["line_no"],
        "kind": ln["kind"],
        "description": ln["description"],
        "hours": _num(ln["hours"]) if ln["hours"] is not None else None,
        "quantity": _num(ln["quantity"]),
        "unit_price": _num(ln["unit_price"]),
        "net_amount": _money(ln["net_amount"], cur),
        "currency": cur,
        "tax_code": ln["tax_code"],
        "tax_rate": _num(ln["tax_rate"]),
        "credit_of_line_no": ln["credit_of_line_no"],
        "item_count": len(ln["item_keys"]),
        "item_keys": " ".join(ln["item_keys"]),
    }
