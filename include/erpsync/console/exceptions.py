"""The exceptions worklist of the finance console: what its pages read.

Pure functions over an open psycopg connection, used by ``console/pages/exceptions.py`` and
timed by the page-speed benchmark:

- :func:`worklist`: one status tab of ``ops.exceptions`` filtered, sorted and paginated (50 a
  page), with the count of each status tab under the same filters.
- :func:`filter_options`: the values the filter form offers.
- :func:`export_rows`: the filtered list for the CSV download.
- :func:`exception_detail`: one exception with its source record, reconciliation item, client,
  outbox row and history from the audit trail.

Speed on a large queue (200,000 exceptions, over 1,000,000 recon items): every list query
is ``WHERE status = $1 [AND filters] ORDER BY <column>, exception_id LIMIT 50`` over an index
led by (status, <column>) (migration 0025), the tab counts stop counting at
:data:`COUNT_CAP`, pages stop at :data:`MAX_PAGE` (narrow the filters instead), the filter
values are read with a loose index scan (one index probe per distinct value), and the detail
reads single rows by key. No query scans the queue or the reconciliation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypedDict

from psycopg import Connection, sql
from psycopg.rows import TupleRow

from erpsync import redaction
from erpsync.console.db import dicts

__all__ = [
    "COUNT_CAP",
    "CSV_HEADER",
    "MAX_PAGE",
    "PAGE_SIZE",
    "SORTS",
    "STATUSES",
    "Detail",
    "Filters",
    "Row",
    "Worklist",
    "exception_detail",
    "export_rows",
    "filter_options",
    "mask_secrets",
    "worklist",
]

PAGE_SIZE = 50
#: The last page the worklist serves (5,000 rows): beyond it, filters find things faster than
#: paging does, and an OFFSET that deep would read thousands of index entries per request.
MAX_PAGE = 100
#: The tab counts count up to this many and then show "10,000+".
COUNT_CAP = 10_000
#: The CSV stops after this many rows (its last line says so).
EXPORT_CAP = 100_000
STATUSES = ("open", "waived", "resolved")

#: Sort keys -> the columns they order by (each has a (status, column) index, migration 0025).
#: ``age`` is special-cased: how long an exception has been (or was) open.
SORTS: dict[str, tuple[str, ...]] = {
    "id": (),
    "age": (),
    "reason": ("reason_code",),
    "entity": ("entity_type", "entity_key"),
    "client": ("client_name",),
    "owner": ("owner",),
    "amount": ("amount_at_stake",),
    "currency": ("currency",),
}
#: Each sort's natural first direction (a click on a header starts there).
DEFAULT_DIR = {"age": "desc", "amount": "desc", "id": "desc"}


@dataclass(frozen=True)
class Filters:
    """The worklist's query string, validated (see :meth:`from_query`)."""

    status: str = "open"
    reason: str | None = None
    entity_type: str | None = None
    owner: str | None = None
    client: str | None = None  # a CRM Account id, or part of a client's name
    currency: str | None = None
    q: str | None = None  # the entity key starts with this (any case)
    sort: str = "age"
    dir: str = "desc"
    page: int = 1

    @classmethod
    def from_query(cls, params: Mapping[str, Any]) -> Filters:
        """Parse query parameters; unknown or malformed values fall back to the defaults."""

        def text(name: str) -> str | None:
            value = params.get(name)
            value = None if value is None else str(value).strip()
            return value[:200] or None if value else None

        status = text("status") or "open"
        if status not in STATUSES:
            status = "open"
        sort = text("sort") or "age"
        if sort not in SORTS:
            sort = "age"
        direction = text("dir") or DEFAULT_DIR.get(sort, "asc")
        if direction not in ("asc", "desc"):
            direction = "asc"
        try:
            page = int(text("page") or 1)
        except ValueError:
            page = 1
        currency = text("currency")
        return cls(
            status=status,
            reason=text("reason"),
            entity_type=text("entity_type"),
            owner=text("owner"),
            client=text("client"),
            currency=currency.upper() if currency else None,
            q=text("q"),
            sort=sort,
            dir=direction,
            page=min(max(page, 1), MAX_PAGE),
        )

    def query(self, **changes: Any) -> dict[str, str]:
        """These filters (with ``changes``) as query parameters, defaults left out: for links."""
        f = replace(self, **changes)
        out = {}
        for name in ("status", "reason", "entity_type", "owner", "client", "currency", "q"):
            value = getattr(f, name)
            if value:
                out[name] = str(value)
        if f.sort != "age" or f.dir != "desc":
            out["sort"], out["dir"] = f.sort, f.dir
        if f.page > 1:
            out["page"] = str(f.page)
        return out


@dataclass(frozen=True)
class Row:
    exception_id: int
    status: str
    reason_code: str
    reason_label: str
    entity_type: str
    entity_key: str
    account_id: str | None
    client_name: str | None
    owner: str
    amount_at_stake: Decimal | None
    currency: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    age_days: int
    waived_by: str | None
    waive_comment: str | None


@dataclass(frozen=True)
class Worklist:
    filters: Filters
    rows: list[Row]
    counts: dict[str, int]  # per status tab, under the same filters, capped at COUNT_CAP
    #: the filtered count of the current tab (capped), and whether there is a next page
    total: int
    has_next: bool

    @property
    def pages(self) -> int:
        return min(MAX_PAGE, max(1, -(-self.total // PAGE_SIZE)))

    @staticmethod
    def capped(n: int) -> str:
        return f"{COUNT_CAP:,}+" if n > COUNT_CAP else f"{n:,}"


def reason_label(code: str, label: str | None) -> str:
    """The catalogue label (recon.reasons) or the code made readable."""
    return label or code.replace("_", " ").capitalize()


_LIKE_ESCAPE = re.compile(r"([\\%_])")


def _where(
    conn: Connection[TupleRow], f: Filters, *, with_status: bool
) -> tuple[sql.Composable, dict[str, Any]]:
    """The WHERE clause of ``f`` (without the status when ``with_status`` is False)."""
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if with_status:
        parts.append(sql.SQL("e.status = %(status)s"))
        params["status"] = f.status
    for name, column in (
        ("reason", "reason_code"),
        ("entity_type", "entity_type"),
        ("owner", "owner"),
        ("currency", "currency"),
    ):
        value = getattr(f, name)
        if value:
            parts.append(sql.SQL("e.{} = %({})s").format(sql.Identifier(column), sql.SQL(name)))
            params[name] = value
    if f.client:
        parts.append(sql.SQL("e.account_id = ANY(%(accounts)s)"))
        params["accounts"] = _client_accounts(conn, f.client)
    if f.q:
        # a prefix match, served by exceptions_entity_key_prefix_idx (no pg_trgm on the
        # embedded server, and a substring match would scan the queue)
        parts.append(sql.SQL("lower(e.entity_key) LIKE %(q)s"))
        params["q"] = _LIKE_ESCAPE.sub(r"\\\1", f.q.lower()) + "%"
    if not parts:
        return sql.SQL("true"), params
    return sql.SQL(" AND ").join(parts), params


def _client_accounts(conn: Connection[TupleRow], client: str) -> list[str]:
    """The CRM Account ids a client filter means: the id itself, or clients whose name contains
    it (core.clients is the firm's client list: thousands of rows, not the queue)."""
    pattern = "%" + _LIKE_ESCAPE.sub(r"\\\1", client) + "%"
    rows = conn.execute(
        """SELECT crm_id FROM core.clients
            WHERE crm_id = %s OR legal_name ILIKE %s
            ORDER BY legal_name LIMIT 500""",
        (client, pattern),
    ).fetchall()
    return sorted({client, *(r[0] for r in rows)})


def _order(f: Filters) -> sql.Composed:
    """ORDER BY of the sort, every column in one direction so one index serves it (forwards or
    backwards), exception_id last as the tie-breaker."""
    direction = sql.SQL("DESC" if f.dir == "desc" else "ASC")
    exprs: list[sql.Composable]
    if f.sort == "age":
        if f.status == "resolved":
            exprs = [sql.SQL("(e.resolved_at - e.first_seen_at)")]
        else:  # the oldest first seen is the oldest: the opposite direction of first_seen_at
            direction = sql.SQL("ASC" if f.dir == "desc" else "DESC")
            exprs = [sql.SQL("e.first_seen_at")]
    else:
        exprs = [sql.SQL("e.{}").format(sql.Identifier(c)) for c in SORTS[f.sort]]
    exprs.append(sql.SQL("e.exception_id"))
    return sql.SQL(", ").join(sql.SQL("{} {}").format(x, direction) for x in exprs)


_ROW_COLUMNS = sql.SQL(
    """e.exception_id, e.status, e.reason_code, r.label, e.entity_type, e.entity_key,
       e.account_id, e.client_name, e.owner, e.amount_at_stake, e.currency, e.first_seen_at,
       e.last_seen_at, e.resolved_at,
       floor(extract(epoch FROM coalesce(e.resolved_at, now()) - e.first_seen_at) / 86400)::int,
       e.waived_by, e.waive_comment"""
)


def _row(r: tuple[Any, ...]) -> Row:
    values = list(r)
    values[3] = reason_label(values[2], values[3])
    values[10] = None if values[10] is None else str(values[10]).strip()
    return Row(*values)


#: A search or client filter matching at most this many rows of the tab is served by sorting
#: its matches (:func:`_select`).
SORT_MATCHES_MAX = 5_000


def _select(f: Filters, where: sql.Composable, *, sort_matches: bool = False) -> sql.Composed:
    """The page query. ``sort_matches``: find the matching rows first (by the search's or the
    client's own index) and sort them, for a search or client filter that matches few rows
    (at most SORT_MATCHES_MAX, known from the tab count): read in sort order and filtered
    instead, a rare term whose rows all sit at the end of that order would walk the whole tab.
    A term matching more rows finds its page early in the sort order."""
    if sort_matches:
        source = sql.SQL(
            """(WITH m AS MATERIALIZED (SELECT e.* FROM ops.exceptions e WHERE {where})
                SELECT * FROM m e ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s)"""
        )
    else:
        source = sql.SQL(
            """(SELECT * FROM ops.exceptions e WHERE {where}
                 ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s)"""
        )
    return sql.SQL(
        """SELECT {columns}
             FROM {source} e
             LEFT JOIN recon.reasons r ON r.code = e.reason_code
            ORDER BY {order}"""
    ).format(
        columns=_ROW_COLUMNS,
        source=source.format(where=where, order=_order(f)),
        order=_order(f),
    )


def worklist(conn: Connection[TupleRow], f: Filters) -> Worklist:
    """One page of the worklist and the count of each status tab under the same filters."""
    counts = tab_counts(conn, f)
    where, params = _where(conn, f, with_status=True)
    few = bool(f.q or f.client) and counts[f.status] <= SORT_MATCHES_MAX
    rows = conn.execute(
        _select(f, where, sort_matches=few),
        {**params, "limit": PAGE_SIZE + 1, "offset": (f.page - 1) * PAGE_SIZE},
    ).fetchall()
    return Worklist(
        filters=f,
        rows=[_row(r) for r in rows[:PAGE_SIZE]],
        counts=counts,
        total=counts[f.status],
        has_next=len(rows) > PAGE_SIZE and f.page < MAX_PAGE,
    )


def tab_counts(conn: Connection[TupleRow], f: Filters) -> dict[str, int]:
    """Exceptions per status under ``f``'s other filters; a count above COUNT_CAP is
    COUNT_CAP + 1 (shown "10,000+")."""
    where, params = _where(conn, f, with_status=False)
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "SELECT {s}::text, (SELECT count(*) FROM (SELECT 1 FROM ops.exceptions e"
            " WHERE e.status = {s} AND {where} LIMIT %(cap)s) c)"
        ).format(s=sql.Literal(status), where=where)
        for status in STATUSES
    )
    rows = conn.execute(query, {**params, "cap": COUNT_CAP + 1}).fetchall()
    return {status: int(n) for status, n in rows}


#: Columns whose distinct values the filter form offers; each leads a (status, column) index.
_OPTION_COLUMNS = ("reason_code", "entity_type", "owner", "currency")


class FilterOptions(TypedDict):
    """What the filter form's select boxes offer (:func:`filter_options`)."""

    reason_code: list[tuple[str, str]]  # (code, label)
    entity_type: list[str]
    owner: list[str]
    currency: list[str]


def filter_options(conn: Connection[TupleRow], status: str, *, limit: int = 200) -> FilterOptions:
    """The values present in one status tab for the select boxes: reasons (code, label),
    entity types, owners, currencies. A loose index scan: one index probe per value."""
    found: dict[str, list[Any]] = {}
    for column in _OPTION_COLUMNS:
        query = sql.SQL(
            """WITH RECURSIVE v(x) AS (
                   (SELECT {c} FROM ops.exceptions WHERE status = %(s)s AND {c} IS NOT NULL
                     ORDER BY {c} LIMIT 1)
                   UNION ALL
                   SELECT (SELECT e.{c} FROM ops.exceptions e
                            WHERE e.status = %(s)s AND e.{c} > v.x ORDER BY e.{c} LIMIT 1)
                     FROM v WHERE v.x IS NOT NULL
               )
               SELECT x FROM v WHERE x IS NOT NULL LIMIT %(limit)s"""
        ).format(c=sql.Identifier(column))
        found[column] = [r[0] for r in conn.execute(query, {"s": status, "limit": limit})]
    labels: dict[str, str] = dict(
        conn.execute(
            "SELECT code, label FROM recon.reasons WHERE code = ANY(%s)", (found["reason_code"],)
        ).fetchall()
    )
    return FilterOptions(
        reason_code=[(c, reason_label(c, labels.get(c))) for c in found["reason_code"]],
        entity_type=found["entity_type"],
        owner=found["owner"],
        currency=[str(c).strip() for c in found["currency"]],
    )


CSV_HEADER = [
    "exception_id",
    "status",
    "reason_code",
    "reason",
    "entity_type",
    "entity_key",
    "client_id",
    "client",
    "owner",
    "amount_at_stake",
    "currency",
    "first_seen_at",
    "last_seen_at",
    "resolved_at",
    "age_days",
    "waived_by",
    "waive_comment",
]


def export_rows(
    conn: Connection[TupleRow], f: Filters, *, cap: int = EXPORT_CAP
) -> list[list[Any]]:
    """Every row of the filtered tab in the page's order (not one page), up to ``cap`` rows;
    a last row says when the cap cut the list."""
    where, params = _where(conn, f, with_status=True)
    rows = conn.execute(_select(f, where), {**params, "limit": cap + 1, "offset": 0}).fetchall()
    out: list[list[Any]] = []
    for r in rows[:cap]:
        row = _row(r)
        out.append(
            [
                row.exception_id,
                row.status,
                row.reason_code,
                row.reason_label,
                row.entity_type,
                row.entity_key,
                row.account_id or "",
                row.client_name or "",
                row.owner,
                "" if row.amount_at_stake is None else str(row.amount_at_stake),
                row.currency or "",
                row.first_seen_at.isoformat(),
                row.last_seen_at.isoformat(),
                row.resolved_at.isoformat() if row.resolved_at else "",
                row.age_days,
                row.waived_by or "",
                row.waive_comment or "",
            ]
        )
    if len(rows) > cap:
        out.append([f"(cut at {cap:,} rows: narrow the filters)"] + [""] * (len(CSV_HEADER) - 1))
    return out


# ------------------------------------------------------------------ detail

MASK = "********"


def mask_secrets(value: Any) -> Any:
    """``value`` with every value under a secret name (:func:`erpsync.redaction.is_secret_name`)
    replaced by a mask, recursively."""
    return redaction.mask_values(value, MASK)


@dataclass(frozen=True)
class Record:
    """A row shown on the detail page: a title and its fields in order."""

    title: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class SourceRef:
    """A record in a source system; the console's ``ctx.links.<system>(kind, record_id)`` builds
    its web address (crm: sObject + id; psa: "project" + id; erp: "customer" | "sales_invoice" |
    "posted_sales_invoice" + the Business Central number)."""

    label: str
    system: str
    kind: str
    record_id: str


@dataclass
class Detail:
    exception: dict[str, Any]
    reason_label: str
    reason_description: str | None
    client: Record | None = None
    source: list[Record] = field(default_factory=list)
    recon_item: Record | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    refs: list[SourceRef] = field(default_factory=list)


def _one(conn: Connection[TupleRow], query: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    cur = conn.execute(query, params)
    row = cur.fetchone()
    if row is None:
        return None
    cols = [c.name for c in cur.description or ()]
    masked: dict[str, Any] = mask_secrets(dict(zip(cols, row, strict=True)))
    return masked


#: What is shown of a time entry / an expense (PSA): the fields a person checks, no bookkeeping.
_TIME_ENTRY = """SELECT psa_id, spent_date, hours, rounded_hours, billable, approval_status,
       is_locked, is_billed, billable_rate, currency, user_psa_id, client_psa_id, project_psa_id,
       task_psa_id, user_assignment_psa_id, invoice_psa_id, notes, source_modstamp, deleted_at
  FROM core.time_entries WHERE psa_id = %s"""
_EXPENSE = """SELECT psa_id, spent_date, total_cost, units, currency, billable, approval_status,
       is_locked, is_billed, has_receipt, receipt_file_name, expense_category_name, user_psa_id,
       client_psa_id, project_psa_id, invoice_psa_id, notes, source_modstamp, deleted_at
  FROM core.expenses WHERE psa_id = %s"""
_RECON_COLUMNS = """item_key, item_type, state, reason_code, problems, reason_detail,
       account_id, client_psa_id, opportunity_id, contract_version, project_psa_id,
       user_psa_id, item_date, period_start, hours, quantity, rate, currency, amount, approved,
       first_run_id, last_run_id, updated_at"""
_RECON_ITEM = f"SELECT {_RECON_COLUMNS} FROM recon.items WHERE item_key = %s"  # noqa: S608
#: A project / assignment problem's latest on-hold item of the contract (items_open_idx).
_RECON_GROUP_ITEM = (
    f"SELECT {_RECON_COLUMNS} FROM recon.items"  # noqa: S608 - constant column list
    " WHERE state = 'on_hold' AND opportunity_id = %s AND %s = ANY(problems)"
    " AND (%s::text IS NULL OR project_psa_id = %s)"
    " ORDER BY period_start DESC, item_key LIMIT 1"
)
_CONTRACT = """SELECT opportunity_id, version, account_id, name, owner_id, billing_model,
       currency, amount, starts_on, ends_on, po_number, cap_type, cap_value, status, problems,
       psa_project_id, erp_project_id, project_code, updated_at
  FROM core.contracts WHERE opportunity_id = %s ORDER BY version DESC LIMIT 1"""
_CLIENT = """SELECT c.crm_id, c.legal_name, c.account_number, c.billing_city,
       c.billing_country, c.currency, c.payment_terms, c.po_required, c.erp_customer_no,
       t.country AS tax_country, t.vat_id, t.vat_id_valid, t.vat_id_reason, t.tax_exempt,
       t.exemption_reason, t.reverse_charge, c.deleted_at
  FROM core.clients c
  LEFT JOIN core.tax_profiles t ON t.crm_account_id = c.crm_id
 WHERE c.crm_id = %s"""
_INVOICE = """SELECT invoice_id, batch_id, kind, document_number, account_id, client_name,
       opportunity_id, currency, invoice_date, period_start, period_end, net, tax, total,
       status, erp_invoice_id, erp_number, credit_of_invoice_id, credit_reason, anomalies
  FROM billing.invoices WHERE document_number = %s"""
_INVOICE_PUSH = """SELECT document_number, erp_entity, step, erp_invoice_id, erp_draft_number,
       erp_number, erp_net, erp_tax, erp_total, failures, last_error, created_at, posted_at,
       billed_back_at, last_run_id, updated_at
  FROM billing.invoice_push WHERE document_number = %s"""
#: An outbox row without its payload (what is sent to the target) or result.
_OUTBOX_COLUMNS = """outbox_id, target_system, operation, entity_type, entity_key, status,
       blocked_reason, attempts, last_error, target_id, external_ref, created_at, updated_at,
       sent_at"""
_OUTBOX_BY_ID = f"SELECT {_OUTBOX_COLUMNS} FROM ops.outbox WHERE outbox_id = %s"  # noqa: S608
_OUTBOX_LATEST = (
    f"SELECT {_OUTBOX_COLUMNS} FROM ops.outbox"  # noqa: S608 - constant column list
    " WHERE operation = %s AND entity_key = %s ORDER BY outbox_id DESC LIMIT 1"
)
_PERSON = """SELECT psa_id, first_name, last_name, email, employee_number, role, is_active
  FROM core.people WHERE psa_id = %s"""
_RATE_OVERRIDE = """SELECT opportunity_id, user_email, role, rate, currency, contract_version,
       psa_project_id FROM core.contract_rate_overrides
 WHERE opportunity_id = %s AND lower(user_email) = lower(%s)"""

_OPERATION_PREFIX = re.compile(r"^([a-z]+\.[a-z_]+):(.*)$")


def exception_detail(conn: Connection[TupleRow], exception_id: int) -> Detail | None:
    """One exception and everything a person needs to act on it, or None if there is none."""
    ex = _one(
        conn,
        """SELECT e.*, r.label AS reason_label, r.description AS reason_description
             FROM ops.exceptions e LEFT JOIN recon.reasons r ON r.code = e.reason_code
            WHERE e.exception_id = %s""",
        (exception_id,),
    )
    if ex is None:
        return None
    detail = Detail(
        exception=ex,
        reason_label=reason_label(ex["reason_code"], ex.pop("reason_label")),
        reason_description=ex.pop("reason_description"),
    )
    if ex.get("currency"):
        ex["currency"] = str(ex["currency"]).strip()
    info: dict[str, Any] = ex.get("detail") or {}
    etype, key = ex["entity_type"], ex["entity_key"]
    operation = None
    match = _OPERATION_PREFIX.match(key)
    if match:  # the relay's write_back_failed key: "<operation>:<entity key>"
        operation, key = match.group(1), match.group(2)
    operation = info.get("operation") if operation is None else operation

    def add(title: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
        if record is not None:
            detail.source.append(Record(title, record))
        return record

    def ref(label: str, system: str, kind: str, record_id: Any) -> None:
        if record_id:
            found = SourceRef(label, system, kind, str(record_id))
            if found not in detail.refs:
                detail.refs.append(found)

    def opportunity(opp: Any) -> None:
        ref("Opportunity in Salesforce", "crm", "Opportunity", opp)

    def project(project_id: Any) -> None:
        ref("Project in Harvest", "psa", "project", project_id)

    def recon(item_key: str | None, group: tuple[Any, ...] | None = None) -> None:
        item = _one(conn, _RECON_GROUP_ITEM if group else _RECON_ITEM, group or (item_key,))
        if item is not None:
            detail.recon_item = Record("Reconciliation item", item)
            opportunity(item.get("opportunity_id"))
            project(item.get("project_psa_id"))

    if etype in ("time_entry", "expense"):
        # Harvest documents no web address of a time entry or an expense: link its project
        entry = add(
            "Time entry (Harvest)" if etype == "time_entry" else "Expense (Harvest)",
            _one(conn, _TIME_ENTRY if etype == "time_entry" else _EXPENSE, (key,)),
        )
        prefix = "time" if etype == "time_entry" else "expense"
        recon(info.get("item_key") or f"{prefix}:{key}")
        if entry:
            project(entry.get("project_psa_id"))
    elif etype in ("milestone", "psa_item"):
        recon(key)
    elif etype in ("opportunity", "project", "user_assignment", "contract_rate_override"):
        opp = {
            "opportunity": key,
            "contract_rate_override": key.split("|", 1)[0],
        }.get(etype, info.get("opportunity_id"))
        if etype == "contract_rate_override" and "|" in key:
            rate = _one(conn, _RATE_OVERRIDE, tuple(key.split("|", 1)))
            add("Contracted rate (Salesforce)", rate)
        if etype == "project":
            project(key)
        if opp:
            contract = add("Contract (Salesforce opportunity)", _one(conn, _CONTRACT, (opp,)))
            opportunity(opp)
            if contract:
                project(contract.get("psa_project_id"))
            if etype in ("project", "user_assignment"):
                in_project = key if etype == "project" else info.get("project_psa_id")
                recon(None, (opp, ex["reason_code"], in_project, in_project))
    elif etype == "invoice":
        invoice = add("Invoice (erpsync)", _one(conn, _INVOICE, (key,)))
        push = add("Push to Business Central", _one(conn, _INVOICE_PUSH, (key,)))
        if push and push.get("erp_number"):  # posted: the posted invoice's number
            ref(
                "Posted sales invoice in Business Central",
                "erp",
                "posted_sales_invoice",
                push["erp_number"],
            )
        elif push and push.get("erp_draft_number"):
            ref(
                "Sales invoice in Business Central",
                "erp",
                "sales_invoice",
                push["erp_draft_number"],
            )
        if invoice:
            opportunity(invoice.get("opportunity_id"))
    elif etype == "person":
        add("Person (Harvest user)", _one(conn, _PERSON, (key,)))
    if info.get("outbox_id") is not None:
        add("Outbox row (payload not shown)", _one(conn, _OUTBOX_BY_ID, (info["outbox_id"],)))
    elif operation:
        add("Outbox row (payload not shown)", _one(conn, _OUTBOX_LATEST, (operation, key)))
    if ex.get("account_id"):
        client = _one(conn, _CLIENT, (ex["account_id"],))
        if client is not None:
            detail.client = Record("Client", client)
            ref("Account in Salesforce", "crm", "Account", client["crm_id"])
            ref("Customer in Business Central", "erp", "customer", client.get("erp_customer_no"))
        else:
            ref("Account in Salesforce", "crm", "Account", ex["account_id"])
    detail.history = history(conn, exception_id)
    return detail


def history(
    conn: Connection[TupleRow], exception_id: int, *, limit: int = 200
) -> list[dict[str, Any]]:
    """The exception's audit rows, newest first (audit_log_entity_idx)."""
    cur = conn.execute(
        """SELECT audit_id, occurred_at, actor, action, before_state, after_state,
                  source_dag_id, source_run_id, detail
             FROM audit.audit_log
            WHERE entity_type = 'exception' AND entity_id = %s
            ORDER BY audit_id DESC LIMIT %s""",
        (str(exception_id), limit),
    )
    return [mask_secrets(row) for row in dicts(cur)]
