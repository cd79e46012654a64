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
import hashlib
import io
import json
import os
from decimal import Decimal
from pathlib import Path

from erpsync import paths
from erpsync.invoicing.errors import BatchStateError
from erpsync.money import round_money

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


def _money(value, currency: str) -> str:
    return str(round_money(Decimal(value), currency))


def _num(value) -> str:
    if value is None:
        return ""
    text = format(Decimal(value).normalize(), "f")
    return text


def _csv(columns: list[str], rows: list[dict]) -> bytes:
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


def export_batch(conn, batch_id: int, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``invoices.csv``, ``invoice_lines.csv`` and ``batch.json`` of released batch
    ``batch_id`` into ``out_dir`` (default ``<state dir>/exports/<batch_id>/``, the state dir
    being ``.erpsync``) and return their paths."""
    batch = conn.execute(
        """SELECT batch_id, kind, status, period_start, period_end, content_hash, prepared_by,
                  prepared_at, decided_by, decided_at, decided_hash, released_at
           FROM billing.invoice_batches WHERE batch_id = %s""",
        (batch_id,),
    ).fetchone()
    if batch is None:
        raise BatchStateError(f"invoice batch {batch_id} does not exist")
    if batch[2] not in EXPORTABLE:
        raise BatchStateError(
            f"invoice batch {batch_id} is {batch[2]}: only released batches are exported"
        )
    out = Path(out_dir) if out_dir else paths.state_dir() / "exports" / str(batch_id)
    out.mkdir(parents=True, exist_ok=True)
    invoices = conn.execute(
        """SELECT i.invoice_id, i.document_number, i.kind, i.status, i.erp_invoice_id,
                  i.erp_number, i.invoice_date, i.period_start, i.period_end, i.account_id,
                  i.client_name,
                  coalesce(nullif(i.erp_customer_number, ''),
                           (SELECT m.erp_number FROM core.clients c
                              JOIN core.id_map m ON m.canonical_id = c.canonical_id
                             WHERE c.crm_id = i.account_id LIMIT 1)),
                  i.opportunity_id, i.version,
                  i.po_number, i.currency::text, i.net, i.tax, i.total, o.document_number,
                  i.credit_reason
           FROM billing.invoices i
           LEFT JOIN billing.invoices o ON o.invoice_id = i.credit_of_invoice_id
           WHERE i.batch_id = %s ORDER BY i.document_number""",
        (batch_id,),
    ).fetchall()
    ids = [r[0] for r in invoices]
    lines_by: dict[int, list] = {i: [] for i in ids}
    for r in conn.execute(
        """SELECT invoice_id, line_no, kind, description, hours, quantity, unit_price, net_amount,
                  tax_code, tax_rate, credit_of_line_no, item_keys
           FROM billing.invoice_lines WHERE invoice_id = ANY(%s) ORDER BY invoice_id, line_no""",
        (ids,),
    ).fetchall():
        lines_by[r[0]].append(r)
    taxes_by: dict[int, list] = {i: [] for i in ids}
    for r in conn.execute(
        """SELECT invoice_id, tax_code, rate, base, amount, legal_note
           FROM billing.invoice_taxes WHERE invoice_id = ANY(%s) ORDER BY invoice_id, tax_code""",
        (ids,),
    ).fetchall():
        taxes_by[r[0]].append(r)

    inv_rows, line_rows, nested = [], [], []
    for r in invoices:
        (inv_id, doc, kind, status, erp_id, erp_no, idate, ps, pe, acc, name, cust_no, opp, ver,
         po, cur, net, tax, total, credit_of, credit_reason) = r  # fmt: skip
        lines = lines_by[inv_id]
        taxes = taxes_by[inv_id]
        inv = {
            "batch_id": batch_id,
            "document_number": doc,
            "kind": kind,
            "status": status,
            "erp_invoice_id": erp_id,
            "erp_number": erp_no,
            "invoice_date": idate.isoformat(),
            "period_start": ps.isoformat() if ps else None,
            "period_end": pe.isoformat() if pe else None,
            "account_id": acc,
            "client_name": name,
            "erp_customer_number": cust_no,
            "opportunity_id": opp,
            "contract_version": ver,
            "po_number": po,
            "currency": cur,
            "net": _money(net, cur),
            "tax": _money(tax, cur),
            "total": _money(total, cur),
            "tax_codes": ";".join(t[1] for t in taxes),
            "credit_of_document_number": credit_of,
            "credit_reason": credit_reason,
            "line_count": len(lines),
            "content_hash": batch[5],
        }
        inv_rows.append(inv)
        jl = []
        for ln in lines:
            row = {
                "batch_id": batch_id,
                "document_number": doc,
                "line_no": ln[1],
                "kind": ln[2],
                "description": ln[3],
                "hours": _num(ln[4]) if ln[4] is not None else None,
                "quantity": _num(ln[5]),
                "unit_price": _num(ln[6]),
                "net_amount": _money(ln[7], cur),
                "currency": cur,
                "tax_code": ln[8],
                "tax_rate": _num(ln[9]),
                "credit_of_line_no": ln[10],
                "item_count": len(ln[11]),
                "item_keys": " ".join(ln[11]),
            }
            line_rows.append(row)
            jl.append({**{k: v for k, v in row.items() if k not in ("batch_id", "document_number",
                                                                   "item_keys")},
                       "item_keys": list(ln[11])})  # fmt: skip
        nested.append(
            {
                **{k: v for k, v in inv.items() if k not in ("batch_id", "content_hash")},
                "lines": jl,
                "taxes": [
                    {
                        "tax_code": t[1],
                        "rate": _num(t[2]),
                        "base": _money(t[3], cur),
                        "amount": _money(t[4], cur),
                        "legal_note": t[5],
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
            "batch_id": batch[0],
            "kind": batch[1],
            "status": batch[2],
            "period_start": batch[3].isoformat() if batch[3] else None,
            "period_end": batch[4].isoformat() if batch[4] else None,
            "content_hash": batch[5],
            "prepared_by": batch[6],
            "approved_by": batch[8],
            "approved_at": batch[9].isoformat() if batch[9] else None,
            "approved_hash": batch[10],
            "released_at": batch[11].isoformat() if batch[11] else None,
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
