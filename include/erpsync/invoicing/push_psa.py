"""The PSA side of the invoice push: the billed state in Harvest after an ERP invoice posts.

Harvest has no writable "billed" flag. ``is_billed``, ``invoice`` and the "invoiced" lock of a
time entry or expense are read-only; Harvest sets them only when a **Harvest invoice imports the
item** (``POST /v2/invoices`` with ``line_items_import {project_ids, time {summary_type, from,
to}, expenses {summary_type, from, to}}``), and it imports *every* uninvoiced billable item of
those projects in the ``spent_date`` window: single items cannot be picked or left out. Deleting
that invoice releases them again.
Retainer and milestone items have no Harvest record (Harvest has no milestones: a billed
milestone is marked in the CRM by :mod:`erpsync.invoicing.push_crm`).

So erpsync's own ledger (``billing.billed_items``, written when the ERP invoice posts) is the
truth, and Harvest is made to show the same only when that is exact. Per posted invoice
(:func:`settle`):

1. The invoice's time and expense keys are located in the warehouse (``core.time_entries`` /
   ``core.expenses``: Harvest project, client, spent_date), giving the projects and one window
   for time and one for expenses (the first to the last spent_date billed).
2. Harvest is listed with its documented filters (``project_id``, ``from``, ``to``; one request
   per project and kind unless a page overflows, never a GET per entry). A Harvest invoice whose
   ``number`` is the ERP's posted number is looked up first, in the push's read-ahead of the
   batch's Harvest invoices (below; without one, ``GET /v2/invoices?client_id&from&to`` on the
   issue date) and in the ``invoice`` of the listed items: found = a previous run created it,
   go to the read-back (check-then-create: retries and kills never make a second one).
3. The uninvoiced billable items Harvest would import are compared with the set erpsync billed.
   Equal: the Harvest invoice is created (``number`` = ERP posted number, the ERP's issue date
   and currency). Different (other uninvoiced items in the window, an item billed by another
   Harvest invoice, an item gone): nothing is written and the state is ``ledger_only`` with the
   reason (an item billed elsewhere also raises ``psa_billed_elsewhere`` for a person).
4. Read-back: the same lists again; exactly erpsync's items must now carry the new invoice id
   and no other item in the window may have changed. Otherwise the Harvest invoice is deleted,
   the delete is checked (the invoice answers 404), and the state is ``failed`` with both sets
   (exception ``harvest_invoice_mismatch``).

**The read-ahead of the batch's Harvest invoices** (:func:`read_ahead_invoices`): instead of one
``GET /v2/invoices?client_id&from&to`` per invoice, a push lists Harvest's invoices once, with
``from``/``to`` on the issue dates of the batch's invoices still to bill back (no ``client_id``,
``per_page`` 2000, paged by ``links.next``: "List all invoices"), and each invoice's lookup by
number reads that list. Exactly-once still holds because the read-ahead only ever answers
"found"; "not found" is never trusted alone:

* a Harvest invoice that existed when the read-ahead was made (a previous push killed after the
  create, before recording) is in it and is found by number, client and issue date;
* a Harvest invoice created *after* the read-ahead can only be a create by another push that
  held the invoice's advisory lock and died before recording ``billed_back`` (this push settles
  the invoice only under that lock, and reads its state after taking it). :func:`settle` creates
  a Harvest invoice only when Harvest's uninvoiced billable items of the plan's projects and
  windows are exactly erpsync's items (all of them present, billable and uninvoiced, nothing
  else), with ``line_items_import`` over exactly those projects and windows, and Harvest's import
  takes every uninvoiced billable item there. So such an invoice imported erpsync's items, and
  the snapshot lists, read fresh after the lock is taken, show them with ``invoice {id,
  number}`` = that invoice: :func:`_find_invoice` finds it by the items (``by_items``). If
  the items had changed between that push's comparison and its create so that the import took
  none of them, they were billed elsewhere or gone, and this push's fresh comparison refuses to
  create too (``ledger_only``);
* a create whose answer was lost (:class:`~erpsync.connectors.errors.WriteOutcomeUnknown`) is
  after the read-ahead by definition: it is looked up with the per-invoice list, as before.

The read-ahead counts in the push's ``psa_requests``, not in an invoice's state row. If it fails
(Harvest unreachable after the client's retries) each invoice is looked up alone, as before (the
failed attempts are then counted only in the connectors' request ledger and the warning).

The Harvest invoice stays a draft: the ERP is the receivables system, and a Harvest draft is not
an outstanding amount in Harvest's reports. Nothing else is ever written to a time entry or
expense (``external_reference`` belongs to timer integrations; expenses have none).
Credit notes leave Harvest as it is: the credited items stay billed (a credit corrects money, it
does not make work billable again; :mod:`erpsync.invoicing.credit`).

Vendor docs:
https://help.getharvest.com/api-v2/invoices-api/invoices/invoices/#create-an-invoice-based-on-tracked-time-and-expenses
https://help.getharvest.com/api-v2/invoices-api/invoices/invoices/#list-all-invoices
https://help.getharvest.com/api-v2/invoices-api/invoices/invoices/#delete-an-invoice
https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/#list-all-time-entries
https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/#list-all-expenses
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from erpsync.connectors import errors
from erpsync.invoicing.common import Connection

__all__ = [
    "CREDIT_NOTE_REASON",
    "HARVEST_KINDS",
    "BilledState",
    "InvoiceReadAhead",
    "pending_issue_dates",
    "read_ahead_invoices",
    "settle",
]

log = logging.getLogger(__name__)

#: item key prefix -> Harvest list resource
HARVEST_KINDS = {"time": "time_entries", "expense": "expenses"}
#: How the Harvest invoice lists what it imported: one line per entry / expense.
SUMMARY_TYPE = "detailed"
CREDIT_NOTE_REASON = (
    "credit note: the credited items stay billed in erpsync's ledger (a credit corrects money,"
    " it does not make work billable again); Harvest is left as it is"
)


@dataclass
class BilledState:
    """What the billed-state step decided for one invoice (a row of billing.psa_billed_state)."""

    status: str  # harvest_invoiced | ledger_only | failed | credit_note
    reason: str | None = None
    harvest_invoice_id: str | None = None
    harvest_invoice_number: str | None = None
    harvest_client_id: str | None = None
    project_ids: list[str] = field(default_factory=list)
    time_window: tuple[dt.date, dt.date] | None = None
    expenses_window: tuple[dt.date, dt.date] | None = None
    erpsync_items: list[str] = field(default_factory=list)
    harvest_uninvoiced: list[str] = field(default_factory=list)
    harvest_billed: list[str] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    psa_requests: int = 0
    psa_writes: int = 0
    created_now: bool = False


@dataclass
class InvoiceReadAhead:
    """The Harvest invoices issued from ``start`` to ``end``, listed once for a push
    (:func:`read_ahead_invoices`; why a "not found" here is never trusted alone: module doc)."""

    start: dt.date
    end: dt.date
    by_number: dict[str, list[dict[str, Any]]]
    requests: int = 0

    def covers(self, issue: dt.date) -> bool:
        """Whether invoices issued on ``issue`` were listed."""
        return self.start <= issue <= self.end

    def find(self, number: str, client_id: str, issue: dt.date) -> dict[str, Any] | None:
        """The listed invoice numbered ``number`` of the client, issued on ``issue`` (what the
        per-invoice ``GET /v2/invoices?client_id&from&to`` on the issue day would answer)."""
        day = issue.isoformat()
        for invoice in self.by_number.get(number, []):
            client = _str((invoice.get("client") or {}).get("id"))
            if client == client_id and str(invoice.get("issue_date") or "") == day:
                return invoice
        return None


def read_ahead_invoices(psa: Any, issue_dates: Iterable[dt.date]) -> InvoiceReadAhead | None:
    """List Harvest's invoices issued on the ``issue_dates`` (first to last) in one paged list:
    ``GET /v2/invoices?from&to&per_page=2000`` ("List all invoices": ``client_id`` is optional,
    ``from``/``to`` filter on ``issue_date``,
    https://help.getharvest.com/api-v2/invoices-api/invoices/invoices/#list-all-invoices).

    None when there is no date, or when Harvest cannot be listed (after the client's retries):
    each invoice is then looked up alone, as without the read-ahead."""
    dates = sorted(set(issue_dates))
    if not dates:
        return None
    h = _Counted(psa)
    params = {"from": dates[0].isoformat(), "to": dates[-1].isoformat()}
    try:
        listed = h.list("invoices", params)
    except errors.ConnectorError as exc:
        log.warning(
            "reading the Harvest invoices issued %s..%s ahead failed (%s); each invoice's"
            " Harvest invoice is looked up alone",
            params["from"],
            params["to"],
            exc,
        )
        return None
    by_number: dict[str, list[dict[str, Any]]] = {}
    for invoice in listed:
        by_number.setdefault(str(invoice.get("number") or ""), []).append(invoice)
    log.info(
        "Harvest invoices issued %s..%s read ahead: %d in %d request(s)",
        params["from"],
        params["to"],
        len(listed),
        h.requests,
    )
    return InvoiceReadAhead(dates[0], dates[-1], by_number, h.requests)


def pending_issue_dates(conn: Connection, batch_id: int) -> list[dt.date]:
    """The issue dates of the batch's invoices (not credit notes) not billed back yet: the
    dates the Harvest invoice read-ahead of a push covers."""
    rows = conn.execute(
        """SELECT DISTINCT i.invoice_date FROM billing.invoices i
             LEFT JOIN billing.invoice_push p ON p.invoice_id = i.invoice_id
            WHERE i.batch_id = %s AND i.status <> 'rejected'
              AND i.kind = 'invoice'
              AND coalesce(p.step, 'pending') <> 'billed_back'
              AND i.invoice_date IS NOT NULL""",
        (batch_id,),
    ).fetchall()
    return sorted(r[0] for r in rows)


@dataclass
class _Plan:
    keys: list[str]
    projects: list[str]
    client_id: str | None
    windows: dict[str, tuple[dt.date, dt.date]]  # kind -> (from, to)


class _Counted:
    """Counts the requests sent to Harvest for the state row (few requests is the design)."""

    def __init__(self, psa: Any) -> None:
        self.psa = psa
        self.writes = 0
        stats = getattr(psa, "stats", None)
        self._start = getattr(stats, "requests", 0)

    @property
    def requests(self) -> int:
        """HTTP requests sent to Harvest since this step started (retries included)."""
        return getattr(getattr(self.psa, "stats", None), "requests", 0) - self._start

    def list(self, resource: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.psa.iter_pages(resource, params):
            out.extend(page)
        return out

    def get(self, path: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.psa.get(path)
        return found

    def create_invoice(self, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.psa.create("invoices", body)
        self.writes += 1
        return answer

    def delete_invoice(self, invoice_id: str) -> bool:
        """DELETE, then GET: True when Harvest no longer has the invoice."""
        self.psa.request("DELETE", f"/v2/invoices/{invoice_id}", accept=(404,))
        self.writes += 1
        return self.psa.get(f"invoices/{invoice_id}") is None


def _plan(conn: Connection, keys: list[str]) -> tuple[_Plan | None, str | None]:
    """Where the invoice's Harvest items are (projects, client, windows), from the warehouse."""
    harvest = sorted(k for k in keys if k.partition(":")[0] in HARVEST_KINDS)
    if not harvest:
        return None, "no Harvest time or expenses on this invoice"
    found: dict[str, tuple[str, str | None, dt.date]] = {}
    for kind, table in (("time", "core.time_entries"), ("expense", "core.expenses")):
        ids = [k.partition(":")[2] for k in harvest if k.startswith(kind + ":")]
        if not ids:
            continue
        rows = conn.execute(
            f"""SELECT psa_id, project_psa_id, client_psa_id, spent_date FROM {table}
                 WHERE psa_id = ANY(%s)""",  # noqa: S608 - table from a constant
            (ids,),
        ).fetchall()
        for psa_id, project, client, spent in rows:
            found[f"{kind}:{psa_id}"] = (str(project), client and str(client), spent)
    missing = [k for k in harvest if k not in found]
    if missing:
        return None, f"not in the warehouse's Harvest copy: {', '.join(missing[:10])}"
    clients = {c for _, c, _ in found.values() if c}
    if len(clients) > 1:
        return None, f"items of more than one Harvest client ({', '.join(sorted(clients))})"
    windows: dict[str, tuple[dt.date, dt.date]] = {}
    for kind in HARVEST_KINDS:
        dates = [d for k, (_, _, d) in found.items() if k.startswith(kind + ":")]
        if dates:
            windows[kind] = (min(dates), max(dates))
    projects = sorted({p for p, _, _ in found.values()}, key=lambda p: (len(p), p))
    return _Plan(harvest, projects, next(iter(clients), None), windows), None


def _snapshot(h: _Counted, plan: _Plan) -> dict[str, dict[str, Any]]:
    """Item key -> listed record, for every item of the plan's projects in its windows."""
    out: dict[str, dict[str, Any]] = {}
    for kind, (start, end) in plan.windows.items():
        for project in plan.projects:
            params = {"project_id": project, "from": start.isoformat(), "to": end.isoformat()}
            for record in h.list(HARVEST_KINDS[kind], params):
                out[f"{kind}:{record['id']}"] = record
    return out


def _invoice_of(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("invoice") or {}


def _state_of(record: dict[str, Any]) -> tuple[bool, str | None]:
    return bool(record.get("is_billed")), _str(_invoice_of(record).get("id"))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _find_invoice(
    h: _Counted,
    client_id: str | None,
    number: str,
    issue: dt.date,
    listed: dict[str, dict[str, Any]],
    read_ahead: InvoiceReadAhead | None = None,
) -> dict[str, Any] | None:
    """The Harvest invoice numbered ``number`` (a previous run's), if any: in the push's
    ``read_ahead`` when it covers the issue date (else one list of the client's invoices of
    that day), then through the ``invoice`` of the ``listed`` items (a Harvest invoice created
    after the read-ahead imported them: module doc)."""
    by_items = {
        _str(_invoice_of(r).get("id"))
        for r in listed.values()
        if str(_invoice_of(r).get("number") or "") == number
    }
    if client_id:
        if read_ahead is not None and read_ahead.covers(issue):
            found = read_ahead.find(number, client_id, issue)
            if found is not None:
                return found
        else:
            day = issue.isoformat()
            for invoice in h.list("invoices", {"client_id": client_id, "from": day, "to": day}):
                if str(invoice.get("number") or "") == number:
                    return invoice
    for invoice_id in sorted(i for i in by_items if i):
        invoice = h.get(f"invoices/{invoice_id}")
        if invoice is not None:
            return invoice
    return None


def settle(
    conn: Connection,
    psa: Any,
    keys: list[str],
    *,
    erp_number: str,
    issue_date: dt.date,
    currency: str,
    document_number: str,
    mirror: bool,
    on_step: Callable[[str], None] | None = None,
    read_ahead: InvoiceReadAhead | None = None,
) -> BilledState:
    """Decide and apply the Harvest billed state of one posted invoice (see the module doc).

    ``read_ahead``: the push's list of the batch's Harvest invoices
    (:func:`read_ahead_invoices`); None = look the invoice's Harvest invoice up alone.

    Raises a :class:`~erpsync.connectors.errors.ConnectorError` when Harvest cannot be reached
    (the caller leaves the invoice at its step; the next push resumes, and finds a Harvest
    invoice it already created by its number)."""
    erpsync_items = sorted(k for k in keys if k.partition(":")[0] in HARVEST_KINDS)
    if not mirror:
        return BilledState(
            "ledger_only",
            "Harvest mirroring is off (Airflow Variable erpsync_harvest_invoice_mirror)",
            erpsync_items=erpsync_items,
        )
    plan, why_not = _plan(conn, keys)
    if plan is None:
        return BilledState("ledger_only", why_not, erpsync_items=erpsync_items)
    h = _Counted(psa)
    state = BilledState(
        "ledger_only",
        harvest_client_id=plan.client_id,
        project_ids=plan.projects,
        time_window=plan.windows.get("time"),
        expenses_window=plan.windows.get("expense"),
        erpsync_items=plan.keys,
    )
    try:
        before = _snapshot(h, plan)
        if state.harvest_client_id is None:
            clients = {_str((r.get("client") or {}).get("id")) for r in before.values()}
            state.harvest_client_id = next(iter(sorted(c for c in clients if c)), None)
        existing = _find_invoice(
            h, state.harvest_client_id, erp_number, issue_date, before, read_ahead
        )
        if existing is not None:
            return _read_back(h, plan, state, existing, None, erp_number, on_step)
        wanted = set(plan.keys)
        uninvoiced = {k for k, r in before.items() if r.get("billable") and not r.get("is_billed")}
        state.harvest_uninvoiced = sorted(uninvoiced)
        for key in sorted(wanted):
            record = before.get(key)
            if record is not None and record.get("is_billed"):
                state.conflicts.append(
                    {
                        "item_key": key,
                        "billed_on": _invoice_of(record),
                        "erp_number": erp_number,
                        "document_number": document_number,
                    }
                )
        gone = sorted(k for k in wanted if k not in before)
        extra = sorted(uninvoiced - wanted)
        unbillable = sorted(k for k in wanted if k in before and not before[k].get("billable"))
        reasons = []
        if state.conflicts:
            reasons.append(
                "already invoiced in Harvest by another invoice: "
                + ", ".join(c["item_key"] for c in state.conflicts[:10])
            )
        if gone:
            reasons.append(f"not found in Harvest (deleted or moved): {', '.join(gone[:10])}")
        if unbillable:
            reasons.append(f"not billable in Harvest: {', '.join(unbillable[:10])}")
        if extra:
            reasons.append(
                f"{len(extra)} other uninvoiced billable item(s) in the window that erpsync did"
                f" not bill (a Harvest import would take them too): {', '.join(extra[:10])}"
            )
        if reasons:
            state.reason = "; ".join(reasons)
            return state
        if state.harvest_client_id is None:
            state.reason = "the Harvest client of the items is unknown"
            return state
        if on_step is not None:
            on_step("harvest_compared")
        body = _invoice_body(plan, state.harvest_client_id, erp_number, issue_date, currency)
        body["subject"] = f"{erp_number} (posted in the ERP; erpsync {document_number})"
        try:
            created = h.create_invoice(body)
        except errors.VendorError as exc:
            if exc.status >= 500 or exc.status in (408, 429):
                raise
            state.status = "failed"
            state.reason = f"Harvest refused the invoice import: {exc}"
            return state
        except errors.WriteOutcomeUnknown:
            # sent after the read-ahead: looked up alone (the per-invoice list)
            found = _find_invoice(h, state.harvest_client_id, erp_number, issue_date, {})
            if found is None:
                raise
            created = found
        state.created_now = True
        if on_step is not None:
            on_step("harvest_invoice_created")
        return _read_back(h, plan, state, created, before, erp_number, on_step)
    finally:
        state.psa_requests = h.requests
        state.psa_writes = h.writes


def _invoice_body(
    plan: _Plan, client_id: str, number: str, issue: dt.date, currency: str
) -> dict[str, Any]:
    """``POST /v2/invoices`` with ``line_items_import`` (documented parameters only)."""
    imp: dict[str, Any] = {"project_ids": [int(p) if p.isdigit() else p for p in plan.projects]}
    for kind, part in (("time", "time"), ("expense", "expenses")):
        if kind in plan.windows:
            start, end = plan.windows[kind]
            imp[part] = {
                "summary_type": SUMMARY_TYPE,
                "from": start.isoformat(),
                "to": end.isoformat(),
            }
    return {
        "client_id": int(client_id) if client_id.isdigit() else client_id,
        "number": number,
        "issue_date": issue.isoformat(),
        "currency": currency,
        "line_items_import": imp,
    }


def _read_back(
    h: _Counted,
    plan: _Plan,
    state: BilledState,
    invoice: dict[str, Any],
    before: dict[str, dict[str, Any]] | None,
    erp_number: str,
    on_step: Callable[[str], None] | None,
) -> BilledState:
    """Exactly erpsync's items carry the Harvest invoice and nothing else changed, or the
    Harvest invoice is deleted again and the state is ``failed``."""
    invoice_id = str(invoice["id"])
    state.harvest_invoice_id = invoice_id
    state.harvest_invoice_number = str(invoice.get("number") or "")
    after = _snapshot(h, plan)
    billed = sorted(
        k for k, r in after.items() if r.get("is_billed") and _state_of(r)[1] == invoice_id
    )
    state.harvest_billed = billed
    changed_others = []
    if before is not None:
        changed_others = sorted(
            k
            for k, r in after.items()
            if k not in plan.keys and k in before and _state_of(before[k]) != _state_of(r)
        )
    problems = []
    if state.harvest_invoice_number != erp_number:
        problems.append(f"number {state.harvest_invoice_number!r}, not {erp_number!r}")
    if billed != sorted(plan.keys):
        missing = sorted(set(plan.keys) - set(billed))
        extra = sorted(set(billed) - set(plan.keys))
        problems.append(f"not billed by it: {missing}; billed by it but not by erpsync: {extra}")
    if changed_others:
        problems.append(f"other items changed: {changed_others}")
    if not problems:
        state.status, state.reason = "harvest_invoiced", None
        return state
    if on_step is not None:
        on_step("harvest_mismatch")
    gone = h.delete_invoice(invoice_id)
    state.status = "failed"
    state.reason = (
        f"Harvest invoice {invoice_id} did not bill exactly the items of the ERP invoice"
        f" ({'; '.join(problems)}); "
        + ("it was deleted again" if gone else "deleting it did not take: delete it in Harvest")
    )
    return state
