"""The invoice batch builder: ready-to-bill reconciliation items -> invoice drafts.

For a billing period (or a set of accepted milestones) the builder takes the items the
reconciliation marked ``ready`` (``recon.items``), leaves out those reserved by another active
batch (``billing.batch_items``) or already billed (``billing.billed_items``), holds those in a
data-quality-blocked scope (``ops.dq_blocks``: reason ``dq_blocked``) or that cannot be taxed,
and groups the rest per client, contract and currency into invoices:

* time: one line per role (or task) and rate: hours summed, priced, rounded once
  (``round(sum(hours) x rate)``, erpsync.money);
* expenses, milestones, retainer fees: one line per item, ``round(amount)``;
* tax per invoice and tax code (Business Central's VAT Identifier), positive and negative
  lines apart: ``round(net x rate / 100)``; total = net + tax (erpsync.invoicing.pricing).

Everything is set-based SQL on temporary tables in the caller's transaction; one advisory
lock serialises builders so two runs never reserve the same item. Document numbers are
deterministic from the invoice's scope (kind, client, contract, currency, period) and how many
invoices that scope already had, so a rebuild of the same batch reuses them. Building the same
scope again while its batch awaits approval (or is approved and not yet pushed) rebuilds that
batch in place: unchanged content changes nothing; changed content gets a new hash and voids
any approval.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from psycopg import sql
from psycopg.rows import class_row

from erpsync import audit
from erpsync.invoicing import anomalies, tax
from erpsync.invoicing.common import (
    Connection,
    RunLike,
    dict_rows,
    jsonable,
    run_parts,
    scalar,
)
from erpsync.invoicing.errors import BatchStateError
from erpsync.invoicing.hashing import compute_hash
from erpsync.models.billing_terms import BillingModel, ItemType
from erpsync.models.reference import CURRENCY_MINOR_UNITS
from erpsync.money import round_money

__all__ = ["BILLING_MODELS", "ITEM_TYPES", "BatchResult", "build_batch", "load_result"]

#: What a billing run may be narrowed to: item types and/or contract billing models (the
#: vocabulary of :mod:`erpsync.models.billing_terms`).
ITEM_TYPES: tuple[str, ...] = tuple(t.value for t in ItemType)
BILLING_MODELS: tuple[str, ...] = tuple(m.value for m in BillingModel)
#: pg_advisory_xact_lock key serialising batch builders (and credit notes).
BUILD_LOCK_KEY = 7_011_001
DOCUMENT_PREFIX = {"period": "INV", "milestone": "INV", "credit_note": "CRN"}
#: Customer-facing wording of invoice lines (SQL parameters of the line builder, _LINES_SQL):
#: a time line without a role/task label, and the prefixes of expense, milestone and retainer
#: lines. Changing one changes every new invoice (and its content hash).
LINE_WORDING = {
    "w_time_default": "Professional services",
    "w_expense": "Expense ",
    "w_expense_default": "expense",
    "w_milestone": "Milestone: ",
    "w_retainer": "Retainer fee ",
}
#: Hold reasons the builder itself adds (the reconciliation's own are in recon.reasons).
HOLD_DQ_BLOCKED = "dq_blocked"


@dataclass(frozen=True)
class BatchResult:
    """What a build (or credit note) produced. ``as_dict()`` is JSON-safe (for XCom)."""

    batch_id: int | None
    kind: str
    status: str  # awaiting_approval | dry_run | empty | (the stored status when unchanged)
    content_hash: str | None
    period_start: dt.date | None
    period_end: dt.date | None
    invoices: tuple[dict[str, Any], ...] = ()
    #: currency -> {invoices, net, tax, total}
    totals: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: reason -> {items, amounts: {currency: amount}}
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    anomalies: tuple[dict[str, Any], ...] = ()
    items: int = 0
    prepared_by: str | None = None
    rebuilt: bool = False
    unchanged: bool = False

    @property
    def dry_run(self) -> bool:
        return self.status == "dry_run"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(asdict(self))
        return out


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _split_billing_types(values: Iterable[str] | None) -> tuple[list[str] | None, list[str] | None]:
    if not values:
        return None, None
    values = sorted({str(v).strip() for v in values if str(v).strip()})
    unknown = [v for v in values if v not in ITEM_TYPES and v not in BILLING_MODELS]
    if unknown:
        raise ValueError(
            f"unknown billing types {unknown}: use item types {list(ITEM_TYPES)} "
            f"and/or contract billing models {list(BILLING_MODELS)}"
        )
    item_types = [v for v in values if v in ITEM_TYPES] or None
    models = [v for v in values if v in BILLING_MODELS] or None
    return item_types, models


def scope_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(jsonable(payload), sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------- SQL

_SCOPE = """
      AND (%(mkeys)s::text[] IS NULL OR i.item_key = ANY(%(mkeys)s::text[]))
      AND (%(mkeys)s::text[] IS NOT NULL OR i.item_date BETWEEN %(ps)s AND %(pe)s)
      AND (%(clients)s::text[] IS NULL OR i.account_id = ANY(%(clients)s::text[]))
      AND (%(itypes)s::text[] IS NULL OR i.item_type = ANY(%(itypes)s::text[]))
      AND (%(models)s::text[] IS NULL OR EXISTS (
              SELECT 1 FROM core.contracts c
              WHERE c.opportunity_id = i.opportunity_id AND c.version = i.contract_version
                AND c.billing_model = ANY(%(models)s::text[])))
"""

_CANDIDATES_HEAD = """
CREATE TEMP TABLE _inv_items ON COMMIT DROP AS
SELECT i.item_key, i.item_type, i.source_id, i.account_id,
       coalesce(i.opportunity_id, '') AS opp_key,
       i.opportunity_id, i.contract_version, i.user_psa_id, i.task_name, i.role, i.item_date,
       i.hours, i.quantity, i.rate, i.currency::text AS currency,
       coalesce(i.amount, i.hours * i.rate) AS amount,
       CASE WHEN %(dq_all)s OR i.account_id = ANY(%(dq_clients)s::text[])
                 OR i.opportunity_id = ANY(%(dq_contracts)s::text[]) THEN 'dq_blocked'
            WHEN i.item_type NOT IN ('time', 'expense', 'milestone', 'retainer')
                 THEN 'unknown_item_type'
            WHEN i.currency IS NULL OR (%(mu)s::jsonb ->> i.currency::text) IS NULL
                 THEN 'unknown_currency'
            WHEN i.account_id IS NULL THEN 'unknown_client'
            WHEN i.item_type = 'time' AND (i.hours IS NULL OR i.rate IS NULL) THEN 'missing_rate'
            WHEN i.item_type <> 'time' AND i.amount IS NULL THEN 'missing_amount'
       END AS hold_reason
FROM recon.items i
WHERE i.state = 'ready'
"""
_CANDIDATES_TAIL = """
  AND NOT EXISTS (SELECT 1 FROM billing.batch_items b
                  WHERE b.item_key = i.item_key AND b.active AND b.batch_id <> %(self_batch)s)
  AND NOT EXISTS (SELECT 1 FROM billing.billed_items bi WHERE bi.item_key = i.item_key)
"""
# the scope filter is shared, so the statements are assembled from constant parts
_CANDIDATES_SQL = "".join((_CANDIDATES_HEAD, _SCOPE, _CANDIDATES_TAIL))

_RESERVED_ELSEWHERE_SQL = "".join(
    (
        "SELECT count(*) FROM recon.items i WHERE i.state = 'ready'",
        _SCOPE,
        """  AND EXISTS (SELECT 1 FROM billing.batch_items b
              WHERE b.item_key = i.item_key AND b.active AND b.batch_id <> %(self_batch)s)""",
    )
)

_ON_HOLD_SQL = "".join(
    (
        """
SELECT coalesce(i.reason_code, 'unspecified') AS reason, i.currency::text AS currency,
       count(*) AS items, sum(coalesce(i.amount, i.hours * i.rate)) AS amount
FROM recon.items i
WHERE i.state = 'on_hold'
""",
        _SCOPE,
        " GROUP BY 1, 2",
    )
)

_GROUPS_SQL = """
CREATE TEMP TABLE _inv_groups ON COMMIT DROP AS
SELECT account_id, opp_key, currency, max(opportunity_id) AS opportunity_id,
       max(contract_version) AS version, count(*) AS n_items,
       concat_ws('|', %(kind)s::text, account_id, opp_key, currency, %(ps)s::text, %(pe)s::text,
                 CASE WHEN %(kind)s::text = 'milestone'
                      THEN string_agg(item_key, ',' ORDER BY item_key) END) AS invoice_scope,
       NULL::bigint AS invoice_id, NULL::text AS document_number
FROM _inv_items WHERE hold_reason IS NULL
GROUP BY account_id, opp_key, currency
"""

_NUMBERS_SQL = """
UPDATE _inv_groups g
SET document_number = %(prefix)s || '-' || to_char(%(inv_date)s::date, 'YYYYMM') || '-'
    || upper(substr(encode(sha256(convert_to(g.invoice_scope, 'UTF8')), 'hex'), 1, 10)) || '-'
    || (1 + (SELECT count(*) FROM billing.invoices x
             WHERE x.invoice_scope = g.invoice_scope AND x.document_number IS NOT NULL))::text
WHERE g.document_number IS NULL
"""

_LINES_SQL = """
CREATE TEMP TABLE _inv_lines ON COMMIT DROP AS
WITH src AS (
    SELECT b.*, (%(mu)s::jsonb ->> b.currency)::int AS mu FROM _inv_billable b
), time_lines AS (
    SELECT invoice_id, 1 AS kind_order, 'time'::text AS kind,
           coalesce(nullif(btrim(CASE WHEN %(by_task)s THEN task_name ELSE role END), ''),
                    %(w_time_default)s::text) AS label,
           sum(hours) AS hours, sum(hours) AS quantity, rate AS unit_price,
           round(sum(hours) * rate, max(mu)) AS net_amount,
           array_agg(item_key ORDER BY item_key) AS item_keys
    FROM src WHERE item_type = 'time'
    GROUP BY invoice_id, 4, rate
), other_lines AS (
    SELECT invoice_id,
           CASE item_type WHEN 'expense' THEN 2 WHEN 'milestone' THEN 3 ELSE 4 END AS kind_order,
           item_type AS kind,
           CASE item_type
                WHEN 'expense' THEN %(w_expense)s::text || item_date::text || ': '
                     || coalesce(nullif(btrim(task_name), ''), %(w_expense_default)s::text)
                WHEN 'milestone' THEN %(w_milestone)s::text
                     || coalesce(nullif(btrim(task_name), ''), source_id, item_key)
                ELSE %(w_retainer)s::text || to_char(item_date, 'YYYY-MM')
                     || coalesce(': ' || nullif(btrim(task_name), ''), '')
           END AS label,
           NULL::numeric AS hours, 1::numeric AS quantity, round(amount, mu) AS unit_price,
           round(amount, mu) AS net_amount, ARRAY[item_key] AS item_keys
    FROM src WHERE item_type <> 'time'
), all_lines AS (
    SELECT invoice_id, kind_order, kind,
           label || ' (' || %(ps)s::text || ' to ' || %(pe)s::text || ')' AS description,
           hours, quantity, unit_price, net_amount, item_keys
    FROM time_lines
    UNION ALL
    SELECT invoice_id, kind_order, kind, label, hours, quantity, unit_price, net_amount, item_keys
    FROM other_lines
)
SELECT invoice_id,
       row_number() OVER (PARTITION BY invoice_id
                          ORDER BY kind_order, description, unit_price, item_keys[1]
                          )::int AS line_no,
       kind, description, hours, quantity, unit_price, net_amount, item_keys
FROM all_lines
"""

_INVOICES_SQL = """
INSERT INTO billing.invoices
    (invoice_id, batch_id, kind, document_number, invoice_scope, account_id, client_name,
     erp_customer_id, erp_customer_number, opportunity_id, version, currency, po_number,
     invoice_date, period_start, period_end, net, tax, total, status)
SELECT g.invoice_id, %(batch)s, 'invoice', g.document_number, g.invoice_scope, g.account_id,
       t.legal_name, t.erp_customer_id, t.erp_customer_no, g.opportunity_id, g.version,
       g.currency, po.po_number, %(inv_date)s, %(ps)s, %(pe)s, n.net, x.tax, n.net + x.tax, 'draft'
FROM _inv_groups g
JOIN _inv_tax t USING (account_id)
JOIN (SELECT invoice_id, sum(net_amount) AS net,
             coalesce(sum(net_amount) FILTER (WHERE net_amount >= 0), 0) AS net_pos,
             coalesce(sum(net_amount) FILTER (WHERE net_amount < 0), 0) AS net_neg
        FROM _inv_lines GROUP BY 1) n USING (invoice_id)
CROSS JOIN LATERAL (
    -- Business Central's rule (erpsync.invoicing.pricing.bc_vat): VAT per document and VAT
    -- identifier (one tax code per invoice), positive and negative lines apart
    SELECT round(n.net_pos * t.tax_rate / 100, (%(mu)s::jsonb ->> g.currency)::int)
           + round(n.net_neg * t.tax_rate / 100, (%(mu)s::jsonb ->> g.currency)::int) AS tax
) x
LEFT JOIN LATERAL (
    SELECT c.po_number FROM core.contracts c
    WHERE c.opportunity_id = g.opportunity_id AND c.po_number IS NOT NULL
    ORDER BY (c.version = g.version) DESC, c.version DESC LIMIT 1
) po ON true
"""

_LINES_INSERT_SQL = """
INSERT INTO billing.invoice_lines
    (invoice_id, line_no, kind, description, hours, quantity, unit_price, net_amount, tax_code,
     tax_rate, item_keys)
SELECT l.invoice_id, l.line_no, l.kind, l.description, l.hours, l.quantity, l.unit_price,
       l.net_amount, t.tax_code, t.tax_rate, l.item_keys
FROM _inv_lines l JOIN _inv_groups g USING (invoice_id) JOIN _inv_tax t USING (account_id)
"""

_TAXES_INSERT_SQL = """
INSERT INTO billing.invoice_taxes (invoice_id, tax_code, rate, base, amount, legal_note)
SELECT i.invoice_id, t.tax_code, t.tax_rate, i.net, i.tax, t.legal_note
FROM billing.invoices i JOIN _inv_tax t USING (account_id)
WHERE i.batch_id = %(batch)s
"""

_BILLABLE_SQL = """
CREATE TEMP TABLE _inv_billable ON COMMIT DROP AS
SELECT g.invoice_id, i.*
FROM _inv_items i JOIN _inv_groups g USING (account_id, opp_key, currency)
WHERE i.hold_reason IS NULL
"""

_RESERVE_SQL = """
INSERT INTO billing.batch_items (item_key, batch_id, invoice_id)
SELECT item_key, %(batch)s, invoice_id FROM _inv_billable ORDER BY item_key
"""


def _round_report(amount: Decimal | None, currency: str | None) -> str | None:
    if amount is None:
        return None
    try:
        return str(round_money(Decimal(amount), str(currency)))
    except Exception:  # noqa: BLE001 - unknown currency: show it unrounded
        return str(amount)


def _dq_scope(conn: Connection) -> tuple[bool, list[str], list[str], list[dict[str, Any]]]:
    """(all blocked, blocked clients, blocked contracts, the active blocks) from ops.dq_blocks."""
    if scalar(conn, "SELECT to_regclass('ops.dq_blocks')") is None:
        return False, [], [], []
    blocks = dict_rows(
        conn,
        """SELECT scope_type, scope_key, suite, expectation FROM ops.dq_blocks
           WHERE status = 'active' ORDER BY scope_type, scope_key, suite, expectation""",
    )
    return (
        any(b["scope_type"] == "all" for b in blocks),
        sorted({b["scope_key"] for b in blocks if b["scope_type"] == "client"}),
        sorted({b["scope_key"] for b in blocks if b["scope_type"] == "contract"}),
        blocks,
    )


def _held(conn: Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {"reason": r["reason"], "source": "reconciliation", "currency": r["currency"],
         "items": r["items"], "amount": r["amount"]}
        for r in dict_rows(conn, _ON_HOLD_SQL, params)
    ]  # fmt: skip
    rows += [
        {"reason": r["reason"], "source": "invoicing", "currency": r["currency"],
         "items": r["items"], "amount": r["amount"]}
        for r in dict_rows(
            conn,
            """SELECT hold_reason AS reason, currency, count(*) AS items, sum(amount) AS amount
               FROM _inv_items WHERE hold_reason IS NOT NULL GROUP BY 1, 2""",
        )
    ]  # fmt: skip
    rows.sort(key=lambda r: (r["reason"], r["source"], r["currency"] or ""))
    for r in rows:
        r["amount"] = _round_report(r["amount"], r["currency"])
    return rows


def held_by_reason(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(r["reason"], {"items": 0, "amounts": {}, "source": r["source"]})
        entry["items"] += r["items"]
        if r["amount"] is not None:
            cur = r["currency"] or "?"
            prev = Decimal(entry["amounts"].get(cur, "0"))
            entry["amounts"][cur] = str(prev + Decimal(r["amount"]))
    return out


def _totals(conn: Connection, batch_id: int) -> dict[str, dict[str, Any]]:
    rows = dict_rows(
        conn,
        """SELECT currency::text AS currency, count(*) AS invoices, sum(net) AS net,
                  sum(tax) AS tax, sum(total) AS total
           FROM billing.invoices WHERE batch_id = %s GROUP BY 1 ORDER BY 1""",
        (batch_id,),
    )
    return {
        r["currency"]: {
            "invoices": r["invoices"],
            "net": _round_report(r["net"], r["currency"]),
            "tax": _round_report(r["tax"], r["currency"]),
            "total": _round_report(r["total"], r["currency"]),
        }
        for r in rows
    }


@dataclass(frozen=True)
class _StoredBatch:
    kind: str
    status: str
    content_hash: str | None
    period_start: dt.date | None
    period_end: dt.date | None
    summary: dict[str, Any]
    prepared_by: str | None


def load_result(
    conn: Connection, batch_id: int, *, rebuilt: bool = False, unchanged: bool = False
) -> BatchResult:
    """The :class:`BatchResult` of a stored batch (as approval and push see it)."""
    with conn.cursor(row_factory=class_row(_StoredBatch)) as cur:
        batch = cur.execute(
            """SELECT kind, status, content_hash, period_start, period_end, summary, prepared_by
               FROM billing.invoice_batches WHERE batch_id = %s""",
            (batch_id,),
        ).fetchone()
    if batch is None:
        raise BatchStateError(f"invoice batch {batch_id} does not exist")
    invoices = []
    flags = []
    for r in dict_rows(
        conn,
        """SELECT i.invoice_id, i.document_number, i.kind, i.account_id, i.client_name,
                  i.opportunity_id, i.version, i.currency::text AS currency, i.po_number, i.net,
                  i.tax, i.total, i.status, i.credit_of_invoice_id, i.anomalies,
                  (SELECT count(*) FROM billing.invoice_lines l
                    WHERE l.invoice_id = i.invoice_id) AS lines,
                  (SELECT string_agg(tax_code, ',' ORDER BY tax_code) FROM billing.invoice_taxes t
                    WHERE t.invoice_id = i.invoice_id) AS tax_codes
           FROM billing.invoices i WHERE i.batch_id = %s
           ORDER BY i.account_id, i.opportunity_id NULLS FIRST, i.currency, i.invoice_id""",
        (batch_id,),
    ):
        for money_column in ("net", "tax", "total"):
            r[money_column] = _round_report(r[money_column], r["currency"])
        invoices.append(r)
        for a in r["anomalies"] or []:
            flags.append(
                {"invoice_id": r["invoice_id"], "document_number": r["document_number"], **a}
            )
    return BatchResult(
        batch_id=batch_id,
        kind=batch.kind,
        status=batch.status,
        content_hash=batch.content_hash,
        period_start=batch.period_start,
        period_end=batch.period_end,
        invoices=tuple(invoices),
        totals=_totals(conn, batch_id),
        held=held_by_reason(batch.summary.get("held", [])),
        anomalies=tuple(flags),
        items=int(batch.summary.get("items_billed", 0)),
        prepared_by=batch.prepared_by,
        rebuilt=rebuilt,
        unchanged=unchanged,
    )


class _Unchanged(Exception):
    """Raised inside the rebuild savepoint to undo a rebuild whose content did not change."""


@dataclass(frozen=True)
class ExistingBatch:
    """The open batch of the same scope that a build replaces (rebuilt in place)."""

    batch_id: int
    status: str
    content_hash: str
    decided_by: str | None


@dataclass(frozen=True)
class BuildRequest:
    """What :func:`build_batch` was asked for, checked and normalised (the build's input)."""

    scope: dict[str, Any]  # kind, period, clients, billing types, milestone keys, grouping, date
    scope_key: str
    home: str
    inv_date: dt.date
    item_types: list[str] | None
    models: list[str] | None
    dry_run: bool
    prepared_by: str
    time_grouping: str
    run_id: str
    actor: str
    source: audit.Source

    @property
    def kind(self) -> str:
        return str(self.scope["kind"])

    @property
    def period_start(self) -> dt.date:
        ps: dt.date = self.scope["period_start"]
        return ps

    @property
    def period_end(self) -> dt.date:
        pe: dt.date = self.scope["period_end"]
        return pe


@dataclass(frozen=True)
class _Staged:
    """The candidate items of a build, staged in ``_inv_items`` / ``_inv_groups``."""

    blocks: list[dict[str, Any]]
    reserved_elsewhere: int
    items_read: int
    items_billable: int
    held_rows: list[dict[str, Any]]
    n_invoices: int


def build_batch(
    conn: Connection,
    run: RunLike | str,
    *,
    period_start: dt.date | str,
    period_end: dt.date | str,
    clients: Iterable[str] | None = None,
    billing_types: Iterable[str] | None = None,
    milestone_keys: Iterable[str] | None = None,
    dry_run: bool = False,
    prepared_by: str,
    time_grouping: str = "role",
    invoice_date: dt.date | str | None = None,
    home_country: str | None = None,
) -> BatchResult:
    """Build (or rebuild) the invoice batch for a period or a set of milestone items.

    ``clients``: CRM account ids (None = all). ``billing_types``: item types (``time``,
    ``expense``, ``milestone``, ``retainer``) and/or contract billing models
    (``time_and_materials``, ``fixed_fee``, ``retainer``); None = all. ``milestone_keys``:
    bill exactly these ``milestone:...`` items (kind ``milestone``; the period is then only
    recorded). ``dry_run``: build and report, reserve nothing, status ``dry_run`` (never
    pushable, no document numbers). ``time_grouping``: ``role`` or ``task``. The invoice date
    (tax rate date) defaults to ``period_end``. Runs in the caller's transaction (the caller
    commits). Returns the :class:`BatchResult`; ``status='empty'`` and ``batch_id=None`` when
    there is nothing to bill (the held items are still reported).
    """
    ps, pe = _as_date(period_start), _as_date(period_end)
    if pe < ps:
        raise ValueError(f"period_end {pe} is before period_start {ps}")
    if not prepared_by or not str(prepared_by).strip():
        raise ValueError("prepared_by is required: the approver must be someone else")
    if time_grouping not in ("role", "task"):
        raise ValueError("time_grouping must be 'role' or 'task'")
    prepared_by = str(prepared_by).strip()
    inv_date = _as_date(invoice_date) if invoice_date else pe
    kind = "milestone" if milestone_keys else "period"
    mkeys = sorted({str(k) for k in milestone_keys}) if milestone_keys else None
    clients_l = sorted({str(c) for c in clients}) if clients else None
    item_types, models = _split_billing_types(billing_types)
    scope = {
        "kind": kind,
        "period_start": ps,
        "period_end": pe,
        "clients": clients_l,
        "billing_types": sorted((item_types or []) + (models or [])) or None,
        "milestone_keys": mkeys,
        "time_grouping": time_grouping,
        "invoice_date": inv_date,
    }
    run_id, actor, source = run_parts(run)
    request = BuildRequest(
        scope=scope,
        scope_key=scope_hash(scope),
        home=tax.home_country(home_country),
        inv_date=inv_date,
        item_types=item_types,
        models=models,
        dry_run=dry_run,
        prepared_by=prepared_by,
        time_grouping=time_grouping,
        run_id=run_id,
        actor=actor,
        source=source,
    )

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUILD_LOCK_KEY,))
        existing = None if dry_run else _existing_batch(conn, request.scope_key)
        if existing is None:
            return _build(conn, request, None)
        try:
            with conn.transaction():
                result = _build(conn, request, existing)
                if result.content_hash == existing.content_hash:
                    raise _Unchanged
                return result
        except _Unchanged:
            return load_result(conn, existing.batch_id, rebuilt=True, unchanged=True)


def _existing_batch(conn: Connection, scope_key: str) -> ExistingBatch | None:
    """The open (awaiting approval or approved) batch of the scope, locked."""
    with conn.cursor(row_factory=class_row(ExistingBatch)) as cur:
        return cur.execute(
            """SELECT batch_id, status, content_hash, decided_by FROM billing.invoice_batches
               WHERE scope_key = %s AND status IN ('awaiting_approval', 'approved')
               ORDER BY batch_id DESC LIMIT 1 FOR UPDATE""",
            (scope_key,),
        ).fetchone()


def _temp(conn: Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def _build(conn: Connection, req: BuildRequest, existing: ExistingBatch | None) -> BatchResult:
    """One build: clear the batch it replaces, stage the candidates, then either report an
    empty scope or number, insert, flag, hash and record the batch."""
    params, blocks = _params(conn, req, existing)
    previous_numbers = _clear_old_batch(conn, existing.batch_id) if existing else []
    staged = _stage_candidates(conn, params, blocks)
    if staged.n_invoices == 0:
        return _empty(conn, req, existing, staged)
    _number_invoices(conn, params, previous_numbers, req.dry_run)
    batch_id = existing.batch_id if existing else _insert_batch(conn, req)
    params["batch"] = batch_id
    _insert_invoices(conn, params, req.dry_run)
    n_flags = anomalies.flag_batch(
        conn, batch_id, period_start=req.period_start, period_end=req.period_end, kind=req.kind
    )
    new_hash = compute_hash(conn, batch_id)
    if existing and new_hash == existing.content_hash:
        return BatchResult(
            batch_id=batch_id,
            kind=req.kind,
            status=existing.status,
            content_hash=new_hash,
            period_start=req.period_start,
            period_end=req.period_end,
        )
    summary = {
        "held": staged.held_rows,
        "dq_blocks": staged.blocks,
        "items_read": staged.items_read,
        "items_billed": staged.items_billable,
        "reserved_elsewhere": staged.reserved_elsewhere,
        "anomalies": n_flags,
        "home_country": req.home,
        "invoice_date": req.inv_date,
    }
    status = "dry_run" if req.dry_run else "awaiting_approval"
    conn.execute(
        """UPDATE billing.invoice_batches
           SET status = %s, content_hash = %s, summary = %s::jsonb, prepared_by = %s,
               prepared_run_id = %s, prepared_at = now(), decided_by = NULL, decided_hash = NULL,
               decided_at = NULL, decided_run_id = NULL, decision_comment = NULL, updated_at = now()
           WHERE batch_id = %s""",
        (status, new_hash, json.dumps(jsonable(summary)), req.prepared_by, req.run_id, batch_id),
    )
    result = load_result(conn, batch_id, rebuilt=bool(existing))
    after = {
        "status": status,
        "content_hash": new_hash,
        "invoices": len(result.invoices),
        "items": staged.items_billable,
        "totals": result.totals,
        "held": result.held,
        "anomalies": n_flags,
        "prepared_by": req.prepared_by,
    }
    _audit_prepared(conn, req, existing, batch_id, new_hash, after)
    return result


def _params(
    conn: Connection, req: BuildRequest, existing: ExistingBatch | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The SQL parameters of the build (scope, data-quality blocks, tax, wording) and the
    active data-quality blocks."""
    dq_all, dq_clients, dq_contracts, blocks = _dq_scope(conn)
    params = {
        "ps": req.period_start,
        "pe": req.period_end,
        "kind": req.kind,
        "mkeys": req.scope["milestone_keys"],
        "clients": req.scope["clients"],
        "itypes": req.item_types,
        "models": req.models,
        "dq_all": dq_all,
        "dq_clients": dq_clients,
        "dq_contracts": dq_contracts,
        "mu": json.dumps(CURRENCY_MINOR_UNITS),
        "self_batch": existing.batch_id if existing else 0,
        "home": req.home,
        "inv_date": req.inv_date,
        "by_task": req.time_grouping == "task",
        "prefix": DOCUMENT_PREFIX[req.kind],
        "note_exempt": tax.LEGAL_NOTES[tax.EXEMPT],
        "note_reverse": tax.LEGAL_NOTES[tax.REVERSE],
        "note_export": tax.LEGAL_NOTES[tax.EXPORT],
        **LINE_WORDING,
        **tax.tax_sql_params(),
    }
    if existing:
        params["batch"] = existing.batch_id
    return params, blocks


def _clear_old_batch(conn: Connection, batch_id: int) -> list[tuple[str, str]]:
    """Empty the batch being rebuilt (its reservations, invoices, lines and taxes) and return
    its (invoice scope, document number) pairs, so the rebuild reuses the numbers."""
    previous = conn.execute(
        """SELECT invoice_scope, document_number FROM billing.invoices
           WHERE batch_id = %s AND document_number IS NOT NULL""",
        (batch_id,),
    ).fetchall()
    conn.execute("DELETE FROM billing.batch_items WHERE batch_id = %s", (batch_id,))
    conn.execute(
        """DELETE FROM billing.invoice_taxes WHERE invoice_id IN
               (SELECT invoice_id FROM billing.invoices WHERE batch_id = %s)""",
        (batch_id,),
    )
    conn.execute(
        """DELETE FROM billing.invoice_lines WHERE invoice_id IN
               (SELECT invoice_id FROM billing.invoices WHERE batch_id = %s)""",
        (batch_id,),
    )
    conn.execute("DELETE FROM billing.invoices WHERE batch_id = %s", (batch_id,))
    return [(str(scope), str(number)) for scope, number in previous]


def _stage_candidates(
    conn: Connection, params: dict[str, Any], blocks: list[dict[str, Any]]
) -> _Staged:
    """The scope's ready items in ``_inv_items`` (with a hold reason where they cannot be
    billed: data-quality block, unknown type or currency, no rate, no tax), their clients' tax
    in ``_inv_tax`` and one row per invoice in ``_inv_groups``."""
    for name in (
        "_inv_items",
        "_inv_accounts",
        "_inv_tax",
        "_inv_groups",
        "_inv_billable",
        "_inv_lines",
    ):
        _temp(conn, name)
    conn.execute(_CANDIDATES_SQL, params)
    reserved_elsewhere = int(scalar(conn, _RESERVED_ELSEWHERE_SQL, params))
    conn.execute(
        """CREATE TEMP TABLE _inv_accounts ON COMMIT DROP AS
           SELECT DISTINCT account_id FROM _inv_items WHERE hold_reason IS NULL"""
    )
    conn.execute(tax.TAX_RESOLUTION_SQL, params)
    conn.execute(
        """UPDATE _inv_items i SET hold_reason = t.hold_reason
           FROM _inv_tax t
           WHERE t.account_id = i.account_id AND t.hold_reason IS NOT NULL
             AND i.hold_reason IS NULL"""
    )
    read = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE hold_reason IS NULL) FROM _inv_items"
    ).fetchone()
    assert read is not None
    held_rows = _held(conn, params)
    conn.execute(_GROUPS_SQL, params)
    return _Staged(
        blocks=blocks,
        reserved_elsewhere=reserved_elsewhere,
        items_read=int(read[0]),
        items_billable=int(read[1]),
        held_rows=held_rows,
        n_invoices=int(scalar(conn, "SELECT count(*) FROM _inv_groups")),
    )


def _empty(
    conn: Connection, req: BuildRequest, existing: ExistingBatch | None, staged: _Staged
) -> BatchResult:
    """Nothing to bill in the scope: a batch being rebuilt is rejected (nothing is left to
    approve); otherwise only the held items are reported."""
    summary = {
        "held": staged.held_rows,
        "dq_blocks": staged.blocks,
        "items_read": staged.items_read,
        "items_billed": 0,
        "reserved_elsewhere": staged.reserved_elsewhere,
    }
    if existing:
        # everything the batch held has gone (on hold, billed elsewhere): nothing to approve
        conn.execute(
            """UPDATE billing.invoice_batches
               SET status = 'rejected', decided_by = 'erpsync', decided_at = now(),
                   decided_run_id = %s, decided_hash = NULL, summary = %s::jsonb,
                   content_hash = %s, updated_at = now(),
                   decision_comment = 'rebuilt with nothing left to bill'
               WHERE batch_id = %s""",
            (req.run_id, json.dumps(jsonable(summary)), "", existing.batch_id),
        )
        audit.record(
            conn,
            actor=req.actor,
            action="invoice_batch.emptied_on_rebuild",
            entity_type="invoice_batch",
            entity_id=str(existing.batch_id),
            before={"status": existing.status, "content_hash": existing.content_hash},
            after={"status": "rejected"},
            source=req.source,
            detail=summary,
        )
        return load_result(conn, existing.batch_id, rebuilt=True)
    audit.record(
        conn,
        actor=req.actor,
        action="invoice_batch.nothing_to_bill",
        entity_type="invoice_batch_scope",
        entity_id=req.scope_key,
        after=jsonable(req.scope),
        source=req.source,
        detail=jsonable(summary),
    )
    return BatchResult(
        batch_id=None,
        kind=req.kind,
        status="empty",
        content_hash=None,
        period_start=req.period_start,
        period_end=req.period_end,
        held=held_by_reason(staged.held_rows),
        prepared_by=req.prepared_by,
    )


def _number_invoices(
    conn: Connection,
    params: dict[str, Any],
    previous_numbers: list[tuple[str, str]],
    dry_run: bool,
) -> None:
    """Invoice ids for every group and (not for a dry run) document numbers: the rebuilt
    batch's own where the invoice scope is the same, else the next of the scope."""
    conn.execute(
        "UPDATE _inv_groups "
        "SET invoice_id = nextval(pg_get_serial_sequence('billing.invoices', 'invoice_id'))"
    )
    if dry_run:
        return
    if previous_numbers:
        conn.execute(
            """UPDATE _inv_groups g SET document_number = p.document_number
               FROM unnest(%s::text[], %s::text[]) AS p(invoice_scope, document_number)
               WHERE p.invoice_scope = g.invoice_scope""",
            ([s for s, _ in previous_numbers], [d for _, d in previous_numbers]),
        )
    conn.execute(_NUMBERS_SQL, params)


def _insert_batch(conn: Connection, req: BuildRequest) -> int:
    """A new draft batch row for the scope; returns its id."""
    return int(
        scalar(
            conn,
            """INSERT INTO billing.invoice_batches
                   (kind, period_start, period_end, scope_key, params, status, content_hash,
                    prepared_by, prepared_run_id)
               VALUES (%s, %s, %s, %s, %s::jsonb, 'draft', '', %s, %s) RETURNING batch_id""",
            (
                req.kind,
                req.period_start,
                req.period_end,
                req.scope_key,
                json.dumps(jsonable({**req.scope, "home_country": req.home})),
                req.prepared_by,
                req.run_id,
            ),
        )
    )


def _insert_invoices(conn: Connection, params: dict[str, Any], dry_run: bool) -> None:
    """The staged groups become invoices, lines and taxes of batch ``params['batch']``; their
    items are reserved for it (not for a dry run)."""
    conn.execute(_BILLABLE_SQL)
    conn.execute(_LINES_SQL, params)
    conn.execute(_INVOICES_SQL, params)
    conn.execute(_LINES_INSERT_SQL, params)
    conn.execute(_TAXES_INSERT_SQL, params)
    if not dry_run:
        conn.execute(_RESERVE_SQL, params)


def _audit_prepared(
    conn: Connection,
    req: BuildRequest,
    existing: ExistingBatch | None,
    batch_id: int,
    new_hash: str | None,
    after: dict[str, Any],
) -> None:
    """The audit rows of a prepared (or rebuilt, or dry-run) batch; a rebuild of an approved
    batch also records that its approval is void."""
    if existing is None:
        audit.record(
            conn,
            actor=req.actor,
            action="invoice_batch.dry_run" if req.dry_run else "invoice_batch.prepared",
            entity_type="invoice_batch",
            entity_id=str(batch_id),
            after=after,
            source=req.source,
            detail=jsonable(req.scope),
        )
        return
    audit.record(
        conn,
        actor=req.actor,
        action="invoice_batch.rebuilt",
        entity_type="invoice_batch",
        entity_id=str(batch_id),
        before={"status": existing.status, "content_hash": existing.content_hash},
        after=after,
        source=req.source,
        detail=jsonable(req.scope),
    )
    if existing.status == "approved":
        audit.record(
            conn,
            actor=req.actor,
            action="invoice_batch.approval_voided",
            entity_type="invoice_batch",
            entity_id=str(batch_id),
            before={"decided_by": existing.decided_by, "decided_hash": existing.content_hash},
            after={"content_hash": new_hash},
            source=req.source,
            detail={"why": "the batch content changed after approval"},
        )
