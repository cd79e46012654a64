"""Push an approved invoice batch to the ERP exactly once: create, post, record, bill back.

:func:`push_batch` takes a batch that a person approved (``billing.invoice_batches.status`` =
``approved``, or ``pushing`` when resuming) whose content still hashes to the approved hash,
and walks each invoice through a small state machine kept in ``billing.invoice_push``
(migration 0012)::

    pending --(ERP draft found or created)--> created --(posted, number read back; billed_items
    written)--> posted --(billed state settled in the PSA)--> billed_back

**Every step is committed before the next external call**, so whatever stops a push (a 5xx, a
timeout, a connection dropped after the ERP committed, a SIGKILLed worker, an Airflow retry or
clear, a second push of the same batch running at once) the next push resumes from the recorded
step and each invoice ends in the ERP exactly once:

* **Create = check-then-create.** The ERP is searched by the invoice's stable document number
  (``externalDocumentNumber``) before any create. Before the POST is sent, the push records
  that a create may be in flight (``create_unknown_since``); if the answer is lost (timeout,
  dropped connection, gateway error) the ERP is searched again, and while it does not show the
  document no new create is sent until the settle window has passed (a request the ERP is still
  processing would otherwise land twice). A 500/502/503 answer means the ERP refused the
  request: it is searched once more and then created again, at most ``CREATE_ATTEMPTS`` times.
  The first searches of a batch's invoices are read ahead, 100 per ``$batch``; such an answer
  stands only while no create has been sent for the invoice (:mod:`erpsync.invoicing.
  push_erp_batch`).
* **Lines**: the invoice goes as one deep insert (header + lines, atomic in the ERP). Before
  posting, the draft's lines are compared with the approved lines by sequence (missing ones
  are added, different or extra ones stop the invoice for a person) and the draft's net total
  must equal the approved net, so a changed draft is never posted.
* **The ERP is the control point for totals**: the draft's ``totalAmountExcludingTax``,
  ``totalTaxAmount`` and ``totalAmountIncludingTax`` (what Business Central will post, by its
  VAT rule, erpsync.invoicing.pricing) must equal the approved net, tax and total to the minor
  unit. A draft that differs (a VAT Posting Setup percent changed after approval, a tenant
  rounding differently) is **not posted**: it is held (:class:`ErpTotalsDiffer`) with an
  ``erp_totals_differ`` exception for finance ops showing both figures, nothing is marked
  billed (no ``billed_items``, nothing in the PSA or CRM), and the batch is not released. A
  document found already posted with other totals is not recorded as the invoice either.
* **Post** (``Microsoft.NAV.post``) is idempotent by detection: a document that is no longer a
  draft is posted, its number is read back; a lost or failed post is followed by a re-read,
  never by a blind second post of an already posted document.
* **Record**: the ERP id, number and totals go to ``billing.invoice_push`` and
  ``billing.invoices``; every item key of the invoice goes to ``billing.billed_items`` (``ON
  CONFLICT DO NOTHING``) in the same transaction as the posted state.
* **Billed state**: ``billing.billed_items`` is the truth. Harvest shows the items as invoiced
  only through a Harvest invoice that imports exactly them (:mod:`erpsync.invoicing.push_psa`:
  compared before, read back after, deleted again on a mismatch); otherwise Harvest is left
  alone (``ledger_only``, with the reason). The outcome goes to ``billing.psa_billed_state``
  in the transaction that moves the invoice to ``billed_back``; a Harvest invoice a killed run
  created is found again by its number, never created twice. The lookups by number read one
  list of the batch's Harvest invoices made at the push's first bill-back; such a list only
  ever answers "found", a Harvest invoice created after it is found through the items it
  imported (:mod:`erpsync.invoicing.push_psa`, "The read-ahead").
* **Fixed-fee milestones** live in the CRM: each billed milestone's ``Contract_Milestone__c``
  record is set to Invoiced with the ERP number and read back (:mod:`erpsync.invoicing.push_crm`,
  ``billing.push_crm_marks``).
* **Concurrency**: an invoice is worked on only under a session advisory lock
  (``pg_try_advisory_lock``); a second push skips invoices another holds (``busy``) and the
  lock dies with a killed process's connection.
* **Audit**: ``invoice_batch.push_started``, ``invoice.pushed`` (draft created or found in the
  ERP), ``invoice.posted``, ``invoice.billed_back``, ``invoice_batch.released`` and
  ``invoice_batch.push_refused``, each with the run, in the transaction of the state change.

Credit notes (batch kind ``credit_note``, invoices with ``credit_of_invoice_id``) take the same
path with the ERP's ``salesCreditMemos``. A credit of the whole original is made with
``Microsoft.NAV.makeCorrectiveCreditMemo`` on the posted original (Business Central copies every
line; looked up by ``invoiceId``). A **partial** credit note is its own credit memo with its own
lines: ``POST salesCreditMemos`` (customer, currency, dates, ``externalDocumentNumber`` = the
credit note's number, ``invoiceId`` = the posted original) and one ``POST
salesCreditMemos({id})/salesCreditMemoLines`` per line (positive quantity and price, the
original's tax code), looked up by ``externalDocumentNumber`` before any create; its draft is
checked line by line like an invoice before ``Microsoft.NAV.post``. Before anything is sent the
credit is checked against what was invoiced: per original line and in total, all credit notes of
the invoice (this one included) never exceed it. A posted credit note writes no ``billed_items``;
the items of wholly credited lines go to ``billing.credited_items`` (the ledger says: billed by
the invoice, credited by the credit note; they are not billed again), and the credit note's
``psa_billed_state`` row (``credit_note``) lists them. Harvest is not written: it has no credit
notes, and a Harvest invoice of the original stays (docs/billed-state.md).
Vendor docs: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salescreditmemo
and .../api/dynamics_salescreditmemo_create, .../api/dynamics_salescreditmemoline_create.

Vendor docs: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salesinvoice
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from psycopg import sql

from erpsync import audit, exceptions_queue, money
from erpsync.connectors import errors
from erpsync.invoicing import push_crm, push_erp, push_erp_batch, push_psa
from erpsync.invoicing.common import (
    Connection,
    RunLike,
    dict_one,
    dict_rows,
    scalar,
)
from erpsync.invoicing.hashing import current_hash
from erpsync.invoicing.push_erp import ERP_INVOICES, ERP_MEMOS, ErpDoc
from erpsync.progress import Progress

if TYPE_CHECKING:
    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.connectors.harvest import HarvestClient
    from erpsync.connectors.salesforce import SalesforceClient

__all__ = [
    "CREATE_ATTEMPTS",
    "ConnectionFactory",
    "ERP_TOTALS_DIFFER",
    "ErpTotalsDiffer",
    "InvoicePushError",
    "PushIncomplete",
    "PushRefused",
    "PushResult",
    "push_batch",
]

log = logging.getLogger(__name__)

#: Creates of one invoice per push when the ERP answered 500/502/503 (nothing committed).
CREATE_ATTEMPTS = 3
#: Post requests of one invoice per push while the document stays a draft.
POST_ATTEMPTS = 3
FINANCE_OPS = "finance ops"
#: Answers to a POST that prove the ERP did not commit it (the request was refused whole).
_REFUSED_5XX = frozenset({500, 502, 503})
_LOCK_NAMESPACE = "erpsync.invoice_push"


class PushRefused(RuntimeError):
    """The batch may not be pushed (not approved, or changed since it was approved)."""


class PushIncomplete(RuntimeError):
    """Some invoices are not done yet (failed, busy in another run, or awaiting a settle);
    the push is safe to run again. ``result`` holds what this run did."""

    def __init__(self, result: PushResult) -> None:
        self.result = result
        super().__init__(
            f"batch {result.batch_id}: {result.failed} invoice(s) failed, {result.busy} busy in"
            f" another push, {result.uncertain} awaiting the ERP after a lost answer; run the"
            " push again (it resumes where it stopped)"
        )


class _PushProblem(RuntimeError):
    """Base of the per-invoice problems the push records and moves on from."""


class InvoicePushError(_PushProblem):
    """A problem with one invoice that a retry will not fix (a person must look)."""


class ErpTotalsDiffer(InvoicePushError):
    """The ERP's totals of a document differ from the approved ones: it is held, not posted."""

    def __init__(self, message: str, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


#: Exception reason (ops.exceptions) of a document held because its ERP totals differ.
ERP_TOTALS_DIFFER = "erp_totals_differ"
#: Exception reason of a document whose totals posting itself changed (it stays posted and
#: billed; a person corrects it with a credit note). Not resolved by the push.
ERP_POSTED_TOTALS_DIFFER = "erp_posted_totals_differ"


class _Retryable(_PushProblem):
    """A transient problem: the invoice stays at its step; the next push continues."""


class _Uncertain(_Retryable):
    """A create whose answer was lost and which the ERP does not show yet."""


@dataclass
class PushResult:
    """What one push run did (counts are invoices unless named items / writes)."""

    batch_id: int
    run_id: str = ""
    kind: str = ""
    batch_status: str = ""
    invoices: int = 0
    created: int = 0  # ERP documents this run created (answer received)
    already_in_erp: int = 0  # found in the ERP by the lookup (before or after a lost answer)
    posted: int = 0  # posted by this run
    already_posted: int = 0  # found posted in the ERP
    billed_back: int = 0  # completed (billed state settled) by this run
    already_done: int = 0  # billed back before this run
    busy: int = 0  # worked on by another push at the same time: skipped
    uncertain: int = 0  # lost create answer, not visible in the ERP yet: retried later
    failed: int = 0
    held: int = 0  # not posted: the ERP's totals differ from the approved ones (also failed)
    items_recorded: int = 0  # billed_items rows inserted
    harvest_invoiced: int = 0  # invoices Harvest now shows as invoiced (read back)
    ledger_only: int = 0  # invoices billed in erpsync's ledger only (reason in psa_billed_state)
    billed_state_failed: int = 0  # Harvest invoice did not bill exactly: deleted, exception
    psa_conflicts: int = 0  # items already invoiced in Harvest by another invoice
    erp_writes: int = 0  # creates, line adds and posts that the ERP answered
    psa_writes: int = 0
    psa_requests: int = 0
    totals: dict[str, dict[str, str]] = field(default_factory=dict)
    tax_differences: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when the batch is released: every invoice posted and billed back."""
        return self.batch_status == "released"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["complete"] = self.complete
        safe: dict[str, Any] = json.loads(json.dumps(out, default=str))
        return safe

    def raise_if_incomplete(self) -> None:
        """Raise :class:`PushIncomplete` unless the batch is released (for Airflow retries)."""
        if not self.complete:
            raise PushIncomplete(self)


class ConnectionFactory(Protocol):
    """Opens a new warehouse connection (:func:`erpsync.warehouse.connection.connect` is one)."""

    def __call__(self) -> Connection: ...


@dataclass(frozen=True)
class _Clients:
    erp: BusinessCentralClient
    psa: HarvestClient
    crm: SalesforceClient | None


@dataclass
class _Ctx:
    conn: Connection
    run: RunLike
    erp: BusinessCentralClient
    psa: HarvestClient
    result: PushResult
    settle_seconds: float | None
    on_step: Callable[[str, int], None] | None
    kind: str
    harvest_invoices: bool = True
    crm: SalesforceClient | None = None  # built on first use by push_crm when not given
    #: check-then-create lookups read ahead in $batch requests (push_erp_batch)
    lookups: push_erp_batch.Lookups = field(default_factory=dict)
    #: the batch's Harvest invoices, listed once at the first bill-back (push_psa)
    harvest_read_ahead: push_psa.InvoiceReadAhead | None = None
    harvest_read_ahead_tried: bool = False

    def step(self, name: str, invoice_id: int) -> None:
        if self.on_step is not None:
            self.on_step(name, invoice_id)

    def settle(self) -> float:
        if self.settle_seconds is not None:
            return float(self.settle_seconds)
        policy = getattr(self.erp, "policy", None)
        return 2 * float(getattr(policy, "read_timeout", 120.0)) + 10.0


# ---------------------------------------------------------------------------- entry point


def push_batch(
    connect: ConnectionFactory,
    run: RunLike,
    batch_id: int,
    *,
    erp: BusinessCentralClient,
    psa: HarvestClient,
    crm: SalesforceClient | None = None,
    settle_seconds: float | None = None,
    on_step: Callable[[str, int], None] | None = None,
    harvest_invoices: bool = True,
) -> PushResult:
    """Push the approved batch ``batch_id`` to the ERP and bill its items back in the PSA.

    ``connect``: returns a new warehouse connection (e.g.
    :func:`erpsync.warehouse.connection.connect`); the push uses it in autocommit mode, so each
    step commits before the next external call, and closes it.
    ``run``: a :class:`~erpsync.sync.spec.RunInfo` (``run_id``, ``actor``, ``audit_source()``).
    ``erp`` / ``psa`` / ``crm``: the open vendor clients (the caller opens and closes them);
    ``crm`` is only used for fixed-fee milestones (when None, a
    :class:`~erpsync.connectors.salesforce.SalesforceClient` on its default connection is opened
    on first use: :mod:`erpsync.invoicing.push_crm`).
    ``settle_seconds``: how long after a create whose answer was lost the ERP must still not
    show the document before it is created again (default: twice the ERP read timeout + 10 s).
    ``on_step(step, invoice_id)``: called at each step boundary (``create_sent``,
    ``erp_created``, ``created``, ``erp_posted``, ``posted``, ``harvest_invoice_created``,
    ``harvest_mismatch``, ``billed_back``), for progress reporting and fault-injection tests.
    ``harvest_invoices``: mirror the billed state into Harvest as a Harvest invoice where that
    is exact (:mod:`erpsync.invoicing.push_psa`); False = erpsync's ledger only
    (:data:`erpsync.settings.HARVEST_INVOICE_MIRROR`).

    Raises :class:`PushRefused` for a batch that is not approved or whose content changed since
    its approval. Per-invoice problems do not raise: they are recorded (``last_error``, an
    exception for a person when a retry cannot help) and counted; call
    :meth:`PushResult.raise_if_incomplete` to fail the task so Airflow retries it.
    """
    conn = _autocommit(connect())
    try:
        ctx_clients = _Clients(erp=erp, psa=psa, crm=crm)
        return _push(
            conn, run, int(batch_id), ctx_clients, settle_seconds, on_step, harvest_invoices
        )
    finally:
        conn.close()


def _autocommit(conn: Connection) -> Connection:
    if not conn.autocommit:
        conn.rollback()
        conn.autocommit = True
    return conn


def _audit(
    ctx: _Ctx,
    action: str,
    entity_type: str,
    entity_id: object,
    after: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    audit.record(
        ctx.conn,
        actor=str(ctx.run.actor),
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        before=None,
        after=after,
        source=ctx.run.audit_source(),
        detail=detail or {},
    )


def _push(
    conn: Connection,
    run: RunLike,
    batch_id: int,
    clients: _Clients,
    settle_seconds: float | None,
    on_step: Callable[[str, int], None] | None,
    mirror: bool = True,
) -> PushResult:
    result = PushResult(batch_id=batch_id, run_id=str(getattr(run, "run_id", "")))
    batch = dict_one(
        conn,
        """SELECT batch_id, kind, status, decided_hash, decided_by
                 FROM billing.invoice_batches WHERE batch_id = %s""",
        (batch_id,),
    )
    if batch is None:
        raise PushRefused(f"invoice batch {batch_id} does not exist")
    ctx = _Ctx(
        conn,
        run,
        clients.erp,
        clients.psa,
        result,
        settle_seconds,
        on_step,
        str(batch["kind"]),
        mirror,
        crm=clients.crm,
    )
    result.kind = ctx.kind
    result.batch_status = str(batch["status"])
    invoices = _invoices(conn, batch_id)
    result.invoices = len(invoices)
    if batch["status"] == "released":
        result.already_done = len(invoices)
        _fill_totals(ctx)
        log.info("batch %s is already released: nothing to push", batch_id)
        return result
    _check_pushable(ctx, batch)
    with conn.transaction():
        started = conn.execute(
            """UPDATE billing.invoice_batches SET status = 'pushing', updated_at = now()
                WHERE batch_id = %s AND status = 'approved'""",
            (batch_id,),
        ).rowcount
        if started:
            _audit(
                ctx,
                "invoice_batch.push_started",
                "invoice_batch",
                batch_id,
                after={"status": "pushing"},
                detail={"invoices": len(invoices), "kind": ctx.kind},
            )
    pending = push_erp_batch.pending_document_numbers(conn, batch_id)
    ctx.lookups = push_erp_batch.prefetch_invoice_lookups(ctx.erp, pending)
    for invoice in Progress(f"push of batch {batch_id}", len(invoices), unit="invoices").iterate(
        invoices
    ):
        _push_locked(ctx, invoice)
    _finish(ctx)
    _fill_totals(ctx)
    log.info(
        "push of batch %s: %s",
        batch_id,
        {k: v for k, v in result.as_dict().items() if k not in ("errors", "tax_differences")},
    )
    for message in result.errors:
        log.warning("push of batch %s: %s", batch_id, message)
    return result


def _check_pushable(ctx: _Ctx, batch: dict[str, Any]) -> None:
    batch_id = batch["batch_id"]
    reason = None
    if batch["status"] not in ("approved", "pushing"):
        reason = (
            f"invoice batch {batch_id} is {batch['status']!r}, not approved: only an approved"
            " batch is pushed to the ERP"
        )
    else:
        current = current_hash(ctx.conn, batch_id)
        if not batch["decided_hash"] or current != batch["decided_hash"]:
            reason = (
                f"invoice batch {batch_id} changed after it was approved (content hash now"
                f" {current}, approved {batch['decided_hash']}): the approval is void and"
                " nothing is pushed; prepare and approve the batch again"
            )
    if reason is None:
        return
    with ctx.conn.transaction():
        _audit(
            ctx,
            "invoice_batch.push_refused",
            "invoice_batch",
            batch_id,
            detail={"status": batch["status"], "reason": reason},
        )
    raise PushRefused(reason)


def _invoices(conn: Connection, batch_id: int) -> list[dict[str, Any]]:
    return dict_rows(
        conn,
        """SELECT * FROM billing.invoices
                WHERE batch_id = %s AND status <> 'rejected'
                ORDER BY invoice_id""",
        (batch_id,),
    )


def _lock_key(invoice_id: int) -> str:
    return f"{_LOCK_NAMESPACE}:{invoice_id}"


def _push_locked(ctx: _Ctx, invoice: dict[str, Any]) -> None:
    from erpsync.writeback.relay import scrub

    invoice_id = int(invoice["invoice_id"])
    got = scalar(
        ctx.conn,
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
        (_lock_key(invoice_id),),
    )
    if not got:
        ctx.result.busy += 1
        log.info("invoice %s is being pushed by another run: skipped", invoice["document_number"])
        return
    try:
        _push_invoice(ctx, invoice)
    except (errors.ConnectorError, _PushProblem) as exc:
        message = scrub(f"{type(exc).__name__}: {exc}")
        permanent = isinstance(exc, InvoicePushError | errors.AmbiguousMatch) or (
            isinstance(exc, errors.VendorError)
            and not isinstance(exc, errors.AuthError)
            and exc.status in (400, 404, 405, 409, 410, 413, 422)
        )
        if isinstance(exc, _Uncertain):
            ctx.result.uncertain += 1
        else:
            ctx.result.failed += 1
        held_detail = exc.detail if isinstance(exc, ErpTotalsDiffer) else None
        held = held_detail is not None
        if held_detail is not None:
            ctx.result.held += 1
            ctx.result.tax_differences.append(held_detail)
        ctx.result.errors.append(f"{invoice['document_number']}: {message}")
        with ctx.conn.transaction():
            ctx.conn.execute(
                """UPDATE billing.invoice_push
                      SET failures = failures + 1, last_error = %s, last_run_id = %s,
                          updated_at = now()
                    WHERE invoice_id = %s""",
                (message, ctx.result.run_id, invoice_id),
            )
            if held or permanent:
                reason = ERP_TOTALS_DIFFER if held else exceptions_queue.WRITE_BACK_FAILED
                exceptions_queue.raise_exception(
                    ctx.conn,
                    reason,
                    "invoice",
                    str(invoice["document_number"]),
                    FINANCE_OPS,
                    {
                        "operation": "erp.invoice_push",
                        "batch_id": invoice["batch_id"],
                        "invoice_id": invoice_id,
                        "error": message,
                        **(held_detail or {}),
                    },
                    ctx.run,
                    amount_at_stake=Decimal(invoice["total"]),
                    currency=str(invoice["currency"]).strip(),
                )
            if held:
                _audit(
                    ctx,
                    "invoice.held",
                    "invoice",
                    invoice["document_number"],
                    detail={
                        "invoice_id": invoice_id,
                        "reason": ERP_TOTALS_DIFFER,
                        **(held_detail or {}),
                    },
                )
    finally:
        ctx.conn.execute(
            "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_lock_key(invoice_id),)
        )


def _is_credit(ctx: _Ctx, invoice: dict[str, Any]) -> bool:
    return (
        ctx.kind == "credit_note"
        or invoice.get("kind") == "credit_note"
        or invoice.get("credit_of_invoice_id") is not None
    )


def _push_invoice(ctx: _Ctx, invoice: dict[str, Any]) -> None:
    state = _ensure_state(ctx, invoice)
    if state["step"] == "billed_back":
        ctx.result.already_done += 1
        return
    if state["step"] == "pending":
        state = _create_step(ctx, invoice, state)
    if state["step"] == "created":
        state = _post_step(ctx, invoice, state)
    if state["step"] == "posted":
        _bill_back_step(ctx, invoice, state)


# ---------------------------------------------------------------------------- state rows


def _ensure_state(ctx: _Ctx, invoice: dict[str, Any]) -> dict[str, Any]:
    entity = ERP_MEMOS if _is_credit(ctx, invoice) else ERP_INVOICES
    ctx.conn.execute(
        """INSERT INTO billing.invoice_push
               (invoice_id, batch_id, document_number, erp_entity, first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, %s, %s)
           ON CONFLICT (invoice_id) DO NOTHING""",
        (
            invoice["invoice_id"],
            invoice["batch_id"],
            invoice["document_number"],
            entity,
            ctx.result.run_id,
            ctx.result.run_id,
        ),
    )
    return _state(ctx, invoice["invoice_id"])


def _state(ctx: _Ctx, invoice_id: int) -> dict[str, Any]:
    row = dict_one(
        ctx.conn,
        """SELECT *, extract(epoch FROM now() - create_unknown_since)::float8 AS unknown_age
                 FROM billing.invoice_push WHERE invoice_id = %s""",
        (invoice_id,),
    )
    assert row is not None
    return row


_COUNTERS = frozenset({"create_requests", "post_requests"})


def _update(ctx: _Ctx, invoice_id: int, **fields: Any) -> None:
    """Update the push row (inside the caller's transaction, or autocommitted alone)."""
    sets: list[sql.Composable] = []
    values: list[Any] = []
    for name, value in fields.items():
        if name in _COUNTERS:
            sets.append(sql.SQL("{c} = {c} + 1").format(c=sql.Identifier(name)))
        elif value == "now()":
            sets.append(sql.SQL("{c} = now()").format(c=sql.Identifier(name)))
        else:
            sets.append(sql.SQL("{c} = %s").format(c=sql.Identifier(name)))
            values.append(value)
    sets.append(sql.SQL("last_run_id = %s"))
    values.append(ctx.result.run_id)
    sets.append(sql.SQL("updated_at = now()"))
    ctx.conn.execute(
        sql.SQL("UPDATE billing.invoice_push SET {} WHERE invoice_id = %s").format(
            sql.SQL(", ").join(sets)
        ),
        (*values, invoice_id),
    )


def _lines(ctx: _Ctx, invoice_id: int) -> list[dict[str, Any]]:
    return dict_rows(
        ctx.conn,
        "SELECT * FROM billing.invoice_lines WHERE invoice_id = %s ORDER BY line_no",
        (invoice_id,),
    )


def _item_keys(ctx: _Ctx, invoice_id: int) -> list[str]:
    rows = ctx.conn.execute(
        """SELECT DISTINCT k FROM billing.invoice_lines l, unnest(l.item_keys) AS k
            WHERE l.invoice_id = %s ORDER BY k""",
        (invoice_id,),
    ).fetchall()
    return [r[0] for r in rows]


def _currency(invoice: dict[str, Any]) -> str:
    return str(invoice["currency"]).strip()


def _money(invoice: dict[str, Any], column: str) -> Decimal:
    try:
        return money.round_money(Decimal(invoice[column]), _currency(invoice))
    except money.UnknownCurrency as exc:
        raise InvoicePushError(str(exc)) from None


# ---------------------------------------------------------------------------- step 1: create


def _create_step(ctx: _Ctx, invoice: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    invoice_id = int(invoice["invoice_id"])
    if _is_credit(ctx, invoice):
        original = _credit_original(ctx, invoice)
        original_erp_id = original["erp_id"]
        if original["full"]:

            def lookup() -> ErpDoc | None:
                return push_erp.find_credit_memo(ctx.erp, original_erp_id)

            def send() -> ErpDoc | None:
                push_erp.make_corrective_credit_memo(ctx.erp, original_erp_id)
                return None  # 204 without a body: read it back with the lookup

        else:
            memo = push_erp.credit_memo_body(invoice, original_erp_id)

            def lookup() -> ErpDoc | None:
                return push_erp.find_credit_memo_by_document(ctx.erp, invoice["document_number"])

            def send() -> ErpDoc | None:
                # the header; its lines are added (and checked) before posting: _check_draft
                return ErpDoc.of(ERP_MEMOS, ctx.erp.create(ERP_MEMOS, memo))

        entity = ERP_MEMOS
    else:
        specs = _line_specs(ctx, invoice)
        body = push_erp.invoice_body(invoice, specs)

        def lookup() -> ErpDoc | None:
            return push_erp.find_invoice(ctx.erp, invoice["document_number"])

        def send() -> ErpDoc | None:
            return ErpDoc.of(ERP_INVOICES, ctx.erp.create(ERP_INVOICES, body))

        entity = ERP_INVOICES

    number = str(invoice["document_number"])
    if entity == ERP_INVOICES and push_erp_batch.usable(ctx.lookups, number, state):
        doc = ctx.lookups[number]  # read in a $batch; no create was sent since (see there)
    else:
        doc = lookup()
    found = doc is not None
    if doc is None:
        doc, found = _create_once(ctx, invoice, state, lookup, send)
    with ctx.conn.transaction():
        _update(
            ctx,
            invoice_id,
            step="created",
            erp_entity=entity,
            erp_invoice_id=doc.id,
            erp_draft_number=doc.number if doc.is_draft else None,
            create_unknown_since=None,
            last_error=None,
            created_at="now()",
        )
        ctx.conn.execute(
            """UPDATE billing.invoices SET status = 'created', erp_invoice_id = %s
                WHERE invoice_id = %s AND status NOT IN ('created', 'posted', 'billed_back')""",
            (doc.id, invoice_id),
        )
        _audit(
            ctx,
            "invoice.pushed",
            "invoice",
            invoice["document_number"],
            after={"erp_entity": entity, "erp_id": doc.id, "erp_status": doc.status},
            detail={
                "invoice_id": invoice_id,
                "batch_id": invoice["batch_id"],
                "found_in_erp": found,
                "erp_draft_number": doc.number if doc.is_draft else None,
                "net": str(invoice["net"]),
                "currency": _currency(invoice),
            },
        )
    if found:
        ctx.result.already_in_erp += 1
    else:
        ctx.result.created += 1
    log.info(
        "%s %s in the ERP as %s (%s)",
        invoice["document_number"],
        "found" if found else "created",
        doc.number,
        doc.status,
    )
    ctx.step("created", invoice_id)
    return _state(ctx, invoice_id)


def _create_once(
    ctx: _Ctx,
    invoice: dict[str, Any],
    state: dict[str, Any],
    lookup: Callable[[], ErpDoc | None],
    send: Callable[[], ErpDoc | None],
) -> tuple[ErpDoc, bool]:
    """Send the create (at most ``CREATE_ATTEMPTS`` times, and only while the ERP provably
    has not got it); returns (document, found_by_lookup)."""
    invoice_id = int(invoice["invoice_id"])
    age = state.get("unknown_age")
    if state.get("create_unknown_since") is not None and age is not None:
        if age < ctx.settle():
            raise _Uncertain(
                f"a create sent {age:.0f}s ago got no answer and the ERP does not show the"
                f" document yet; it is searched again, and created only after"
                f" {ctx.settle():.0f}s without it"
            )
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        _update(ctx, invoice_id, create_requests=1, create_unknown_since="now()")
        ctx.step("create_sent", invoice_id)
        try:
            doc = send()
        except errors.VendorError as exc:
            if exc.status < 500 and exc.status != 408:
                _update(ctx, invoice_id, create_unknown_since=None)
                raise InvoicePushError(f"the ERP refused the document: {exc}") from None
            definite = exc.status in _REFUSED_5XX
            cause: Exception = exc
        except errors.RetryBudgetExceeded as exc:
            definite = True  # a POST is retried only when the ERP provably did nothing
            cause = exc
        except errors.WriteOutcomeUnknown as exc:
            definite = False
            cause = exc
        else:
            ctx.result.erp_writes += 1
            ctx.step("erp_created", invoice_id)
            if doc is None:  # an action answered 204: read the document back
                doc = lookup()
                if doc is None:
                    raise _Retryable("the ERP accepted the create but does not show it yet")
            return doc, False
        found = lookup()
        if found is not None:
            ctx.step("erp_created", invoice_id)
            return found, True
        if not definite:
            raise _Uncertain(
                f"the create's answer was lost ({cause}) and the ERP does not show the document"
                " yet; it is searched again before any new create"
            )
        _update(ctx, invoice_id, create_unknown_since=None)
        log.warning(
            "%s: create attempt %d refused (%s)", invoice["document_number"], attempt, cause
        )
    raise _Retryable(f"the ERP refused the create {CREATE_ATTEMPTS} times; last: {cause}")


def _line_specs(ctx: _Ctx, invoice: dict[str, Any]) -> list[push_erp.LineSpec]:
    try:
        return push_erp.line_specs(_lines(ctx, int(invoice["invoice_id"])), _currency(invoice))
    except (money.UnknownCurrency, ValueError) as exc:
        raise InvoicePushError(f"invoice lines cannot be sent: {exc}") from None


def _credit_original(ctx: _Ctx, invoice: dict[str, Any]) -> dict[str, Any]:
    """The posted invoice a credit note corrects: its ERP id, and whether the credit note is
    a full credit (exactly its net). Refuses a credit note that, with the invoice's other
    credit notes, credits more than was invoiced (per line or in total)."""
    original_id = invoice.get("credit_of_invoice_id")
    if original_id is None:
        raise InvoicePushError("a credit note must name the invoice it corrects")
    original = dict_one(
        ctx.conn,
        """SELECT i.document_number, i.net, i.currency, i.erp_invoice_id,
                      p.erp_invoice_id AS pushed_id, p.step
                 FROM billing.invoices i
                 LEFT JOIN billing.invoice_push p ON p.invoice_id = i.invoice_id
                WHERE i.invoice_id = %s""",
        (original_id,),
    )
    if original is None:
        raise InvoicePushError(f"the corrected invoice {original_id} does not exist")
    erp_id = original["pushed_id"] or original["erp_invoice_id"]
    if not erp_id or (original["step"] not in ("posted", "billed_back", None)):
        raise InvoicePushError(
            f"the corrected invoice {original['document_number']} is not posted in the ERP yet"
        )
    _check_not_above_invoiced(ctx, invoice, original)
    full = abs(_money(invoice, "net")) == abs(_money(original, "net"))
    return {"erp_id": str(erp_id), "full": full, "document_number": original["document_number"]}


def _check_not_above_invoiced(ctx: _Ctx, invoice: dict[str, Any], original: dict[str, Any]) -> None:
    """All credit notes of the original (rejected ones aside) credit at most what each of its
    lines invoiced, and at most its net in total (the builder checks the same when the credit
    note is prepared; checked again here, before the ERP is written)."""
    rows = ctx.conn.execute(
        """SELECT l.credit_of_line_no, -sum(l.net_amount) AS credited, o.net_amount AS invoiced
             FROM billing.invoices c
             JOIN billing.invoice_lines l ON l.invoice_id = c.invoice_id
             LEFT JOIN billing.invoice_lines o
                    ON o.invoice_id = c.credit_of_invoice_id AND o.line_no = l.credit_of_line_no
            WHERE c.credit_of_invoice_id = %s AND c.status <> 'rejected'
            GROUP BY l.credit_of_line_no, o.net_amount""",
        (invoice["credit_of_invoice_id"],),
    ).fetchall()
    total = Decimal(0)
    for line_no, credited, invoiced in rows:
        total += Decimal(credited)
        if line_no is not None and invoiced is not None and Decimal(credited) > Decimal(invoiced):
            raise InvoicePushError(
                f"the credit notes of {original['document_number']} credit {credited} on its"
                f" line {line_no}, which invoiced {invoiced} {_currency(invoice)}: never more"
                " than was invoiced; not sent"
            )
    if total > abs(_money(original, "net")):
        raise InvoicePushError(
            f"the credit notes of {original['document_number']} credit {total}"
            f" {_currency(invoice)}, more than the {abs(_money(original, 'net'))} it invoiced;"
            " not sent"
        )


def _credit_line_specs(ctx: _Ctx, invoice: dict[str, Any]) -> list[push_erp.LineSpec]:
    """The ERP lines of a credit note: a credit memo's lines are positive (quantity, price and
    amount; the memo itself is the negative document), so the warehouse's negative credit
    lines are sent with their signs turned."""
    rows = []
    for line in _lines(ctx, int(invoice["invoice_id"])):
        turned = dict(line)
        for column in ("net_amount", "hours", "quantity"):
            if turned.get(column) is not None:
                turned[column] = -Decimal(turned[column])
        rows.append(turned)
    try:
        return push_erp.line_specs(rows, _currency(invoice))
    except (money.UnknownCurrency, ValueError) as exc:
        raise InvoicePushError(f"credit note lines cannot be sent: {exc}") from None


# ---------------------------------------------------------------------------- step 2: post


def _post_step(ctx: _Ctx, invoice: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    invoice_id = int(invoice["invoice_id"])
    entity = state["erp_entity"]
    # an invoice's lines come with it ($expand): _check_draft compares them
    with_lines = entity == ERP_INVOICES
    doc = push_erp.get_doc(ctx.erp, entity, state["erp_invoice_id"], with_lines=with_lines)
    if doc is None:
        raise InvoicePushError(
            f"the ERP {entity} document {state['erp_invoice_id']} recorded for"
            f" {invoice['document_number']} no longer exists (deleted in the ERP?)"
        )
    posted_now = False
    if doc.is_draft:
        doc = _check_draft(ctx, invoice, doc)
        refusal: Exception | None = None
        for _attempt in range(POST_ATTEMPTS):
            _update(ctx, invoice_id, post_requests=1)
            try:
                push_erp.post(ctx.erp, entity, doc.id)
            except errors.VendorError as exc:
                if exc.status >= 500 or exc.status in (400, 408, 409):
                    refusal = exc  # 400: maybe "already posted"; decided by the re-read
                else:
                    raise
            except (errors.WriteOutcomeUnknown, errors.RetryBudgetExceeded) as exc:
                refusal = exc
            else:
                ctx.result.erp_writes += 1
                refusal = None
            ctx.step("erp_posted", invoice_id)
            reread = push_erp.get_doc(ctx.erp, entity, doc.id)
            if reread is None:
                raise InvoicePushError(f"the ERP document {doc.id} vanished while posting")
            doc = reread
            if not doc.is_draft:
                posted_now = True
                break
            if isinstance(refusal, errors.VendorError) and refusal.status < 500:
                raise InvoicePushError(f"the ERP refused to post: {refusal}")
        else:
            raise _Retryable(f"the document is still a draft after {POST_ATTEMPTS} posts")
    else:
        _check_totals(invoice, doc, posted=True)
    _record_posted(ctx, invoice, state, doc, posted_now)
    ctx.step("posted", invoice_id)
    return _state(ctx, invoice_id)


def _check_draft(ctx: _Ctx, invoice: dict[str, Any], doc: ErpDoc) -> ErpDoc:
    """The draft must hold exactly the approved lines (missing ones are added) and net."""
    expected_net = _money(invoice, "net")
    partial_memo = doc.entity == ERP_MEMOS and not _credit_original(ctx, invoice)["full"]
    if doc.entity == ERP_INVOICES or partial_memo:
        specs = _credit_line_specs(ctx, invoice) if partial_memo else _line_specs(ctx, invoice)
        erp_lines = {
            int(line.get("sequence") or 0): line for line in push_erp.draft_lines(ctx.erp, doc)
        }
        wanted = {s.sequence for s in specs}
        wrong = [
            s.sequence
            for s in specs
            if s.sequence in erp_lines and not s.matches(erp_lines[s.sequence])
        ]
        extra = sorted(set(erp_lines) - wanted)
        if wrong or extra:
            raise InvoicePushError(
                f"the ERP draft {doc.number} of {invoice['document_number']} differs from the"
                f" approved invoice (lines changed: {wrong}, lines not approved: {extra});"
                " not posted"
            )
        missing = [s for s in specs if s.sequence not in erp_lines]
        for spec in missing:
            try:
                push_erp.add_line(ctx.erp, doc.id, spec, doc.entity)
                ctx.result.erp_writes += 1
            except (errors.WriteOutcomeUnknown, errors.RetryBudgetExceeded) as exc:
                raise _Retryable(f"adding line {spec.sequence} got no answer: {exc}") from None
        if missing:
            fresh = push_erp.get_doc(ctx.erp, doc.entity, doc.id)
            if fresh is None:
                raise InvoicePushError(f"the ERP draft {doc.id} vanished")
            doc = fresh
        erp_net = doc.net
        if partial_memo:  # a credit memo's amounts are positive; the credit note's negative
            erp_net, expected_net = abs(erp_net), abs(expected_net)
    else:
        erp_net = abs(doc.net)
        expected_net = abs(expected_net)
    if erp_net != expected_net:
        raise InvoicePushError(
            f"the ERP draft {doc.number} of {invoice['document_number']} totals {erp_net} net,"
            f" the approved invoice {expected_net} {_currency(invoice)}; not posted"
        )
    _check_totals(invoice, doc, posted=False)
    return doc


def _check_totals(invoice: dict[str, Any], doc: ErpDoc, *, posted: bool) -> None:
    """The ERP's net, tax and total of ``doc`` must be the approved ones to the minor unit
    (credit memos compared by absolute value: the ERP's memo amounts are positive)."""
    approved = {k: abs(_money(invoice, k)) for k in ("net", "tax", "total")}
    erp = {"net": abs(doc.net), "tax": abs(doc.tax), "total": abs(doc.total)}
    if erp == approved:
        return
    cur = _currency(invoice)
    detail = {
        "document_number": str(invoice["document_number"]),
        "erp_id": doc.id,
        "erp_number": doc.number,
        "erp_status": doc.status,
        "currency": cur,
        "approved_net": str(approved["net"]),
        "approved_tax": str(approved["tax"]),
        "approved_total": str(approved["total"]),
        "erp_net": str(erp["net"]),
        "erp_tax": str(erp["tax"]),
        "erp_total": str(erp["total"]),
    }
    what = f"already posted {doc.number}" if posted else f"draft {doc.number}"
    raise ErpTotalsDiffer(
        f"the ERP {what} of {invoice['document_number']} totals net {erp['net']}, tax"
        f" {erp['tax']}, total {erp['total']} {cur}; the approved invoice has net"
        f" {approved['net']}, tax {approved['tax']}, total {approved['total']} {cur}:"
        + (" not recorded as this invoice" if posted else " held, not posted")
        + ", nothing marked billed",
        detail,
    )


def _record_posted(
    ctx: _Ctx, invoice: dict[str, Any], state: dict[str, Any], doc: ErpDoc, posted_now: bool
) -> None:
    invoice_id = int(invoice["invoice_id"])
    credit = _is_credit(ctx, invoice)
    expected_tax = abs(_money(invoice, "tax"))
    expected_total = abs(_money(invoice, "total"))
    tax_difference = None
    if abs(doc.tax) != expected_tax or abs(doc.total) != expected_total:
        # the draft had the approved totals (_check_totals) and posting changed them (e.g. an
        # Invoice Rounding line): the document is posted in the ERP, so it is recorded (its
        # items are billed: not billing them again), and a person must correct it
        tax_difference = {
            "document_number": str(invoice["document_number"]),
            "erp_number": doc.number,
            "currency": _currency(invoice),
            "approved_tax": str(expected_tax),
            "erp_tax": str(abs(doc.tax)),
            "approved_total": str(expected_total),
            "erp_total": str(abs(doc.total)),
        }
    with ctx.conn.transaction():
        _update(
            ctx,
            invoice_id,
            step="posted",
            erp_number=doc.number,
            erp_net=doc.net,
            erp_tax=doc.tax,
            erp_total=doc.total,
            last_error=None,
            posted_at="now()",
        )
        ctx.conn.execute(
            """UPDATE billing.invoices SET status = 'posted', erp_invoice_id = %s, erp_number = %s
                WHERE invoice_id = %s AND status NOT IN ('posted', 'billed_back')""",
            (doc.id, doc.number, invoice_id),
        )
        recorded = 0
        if credit:
            # the items of wholly credited lines: still billed by the original (never billed
            # again), and credited by this credit note (docs/billed-state.md)
            recorded = ctx.conn.execute(
                """INSERT INTO billing.credited_items
                       (item_key, credit_invoice_id, credited_invoice_id, erp_number, run_id)
                   SELECT DISTINCT k, %s::bigint, i.credit_of_invoice_id, %s, %s
                     FROM billing.invoices i
                     JOIN billing.invoice_lines l ON l.invoice_id = i.invoice_id,
                          unnest(l.item_keys) AS k
                    WHERE i.invoice_id = %s
                   ON CONFLICT (item_key, credit_invoice_id) DO NOTHING""",
                (invoice_id, doc.number, ctx.result.run_id, invoice_id),
            ).rowcount
        else:
            recorded = ctx.conn.execute(
                """INSERT INTO billing.billed_items
                       (item_key, invoice_id, erp_invoice_id, erp_number, billed_at, run_id)
                   SELECT DISTINCT k, %s::bigint, %s, %s, now(), %s
                     FROM billing.invoice_lines l, unnest(l.item_keys) AS k
                    WHERE l.invoice_id = %s
                   ON CONFLICT (item_key) DO NOTHING""",
                (invoice_id, doc.id, doc.number, ctx.result.run_id, invoice_id),
            ).rowcount
        _audit(
            ctx,
            "invoice.posted",
            "invoice",
            invoice["document_number"],
            after={
                "erp_id": doc.id,
                "erp_number": doc.number,
                "erp_status": doc.status,
                "net": str(doc.net),
                "tax": str(doc.tax),
                "total": str(doc.total),
            },
            detail={
                "invoice_id": invoice_id,
                "batch_id": invoice["batch_id"],
                "erp_entity": doc.entity,
                "posted_by_this_run": posted_now,
                "billed_items_recorded": recorded,
                "currency": _currency(invoice),
                "tax_difference": tax_difference,
            },
        )
        if tax_difference:
            exceptions_queue.raise_exception(
                ctx.conn,
                ERP_POSTED_TOTALS_DIFFER,
                "invoice",
                str(invoice["document_number"]),
                FINANCE_OPS,
                {"operation": "erp.invoice_post", "posted": True, **tax_difference},
                ctx.run,
                amount_at_stake=expected_total,
                currency=_currency(invoice),
            )
    ctx.result.items_recorded += recorded
    if tax_difference:
        ctx.result.tax_differences.append(tax_difference)
    if posted_now:
        ctx.result.posted += 1
    else:
        ctx.result.already_posted += 1
    log.info(
        "%s posted in the ERP as %s (%s net %s, tax %s); %d billed item(s) recorded",
        invoice["document_number"],
        doc.number,
        _currency(invoice),
        doc.net,
        doc.tax,
        recorded,
    )


# ---------------------------------------------------------------------------- step 3: billed state


HARVEST_MISMATCH = "harvest_invoice_mismatch"
PSA_BILLED_ELSEWHERE = "psa_billed_elsewhere"


def _bill_back_step(ctx: _Ctx, invoice: dict[str, Any], state: dict[str, Any]) -> None:
    invoice_id = int(invoice["invoice_id"])
    document = str(invoice["document_number"])
    if _is_credit(ctx, invoice):
        billed = push_psa.BilledState(
            "credit_note",
            push_psa.CREDIT_NOTE_REASON,
            erpsync_items=_item_keys(ctx, invoice_id),  # the items of wholly credited lines
        )
    else:
        keys = _item_keys(ctx, invoice_id)
        # fixed-fee milestones live in the CRM: Status__c Invoiced + the ERP number, read back
        push_crm.bill_back_milestones(ctx, invoice, str(state["erp_number"]), keys)
        if ctx.harvest_invoices and not ctx.harvest_read_ahead_tried:
            ctx.harvest_read_ahead_tried = True
            dates = push_psa.pending_issue_dates(ctx.conn, int(invoice["batch_id"]))
            ctx.harvest_read_ahead = push_psa.read_ahead_invoices(ctx.psa, dates)
            if ctx.harvest_read_ahead is not None:
                ctx.result.psa_requests += ctx.harvest_read_ahead.requests
        billed = push_psa.settle(
            ctx.conn,
            ctx.psa,
            keys,
            erp_number=str(state["erp_number"]),
            issue_date=invoice["invoice_date"],
            currency=_currency(invoice),
            document_number=document,
            mirror=ctx.harvest_invoices,
            on_step=lambda step: ctx.step(step, invoice_id),
            read_ahead=ctx.harvest_read_ahead,
        )
    ctx.result.psa_writes += billed.psa_writes
    ctx.result.psa_requests += billed.psa_requests
    with ctx.conn.transaction():
        _record_billed_state(ctx, invoice, state, billed)
        _update(ctx, invoice_id, step="billed_back", last_error=None, billed_back_at="now()")
        ctx.conn.execute(
            """UPDATE billing.invoices SET status = 'billed_back'
                WHERE invoice_id = %s AND status <> 'billed_back'""",
            (invoice_id,),
        )
        _resolve_failures(ctx, invoice)
        _audit(
            ctx,
            "invoice.billed_back",
            "invoice",
            document,
            after={
                "status": "billed_back",
                "erp_number": state["erp_number"],
                "psa_billed_state": billed.status,
                "harvest_invoice_id": billed.harvest_invoice_id,
            },
            detail={
                "invoice_id": invoice_id,
                "batch_id": invoice["batch_id"],
                "items": len(billed.erpsync_items),
                "reason": billed.reason,
                "psa_writes": billed.psa_writes,
            },
        )
    if billed.status == "harvest_invoiced":
        ctx.result.harvest_invoiced += 1
    elif billed.status == "ledger_only":
        ctx.result.ledger_only += 1
    elif billed.status == "failed":
        ctx.result.billed_state_failed += 1
    ctx.result.psa_conflicts += len(billed.conflicts)
    ctx.result.billed_back += 1
    ctx.step("billed_back", invoice_id)
    log.info(
        "%s (%s): billed state %s%s",
        document,
        state["erp_number"],
        billed.status,
        f" (Harvest invoice {billed.harvest_invoice_id})"
        if billed.status == "harvest_invoiced"
        else f": {billed.reason}"
        if billed.reason
        else "",
    )


def _record_billed_state(
    ctx: _Ctx, invoice: dict[str, Any], state: dict[str, Any], billed: push_psa.BilledState
) -> None:
    """The state row, and the exceptions a person must look at (in the caller's transaction)."""
    tw, ew = billed.time_window or (None, None), billed.expenses_window or (None, None)
    ctx.conn.execute(
        """INSERT INTO billing.psa_billed_state
               (invoice_id, document_number, erp_number, status, reason, harvest_invoice_id,
                harvest_invoice_number, harvest_client_id, project_ids, time_from, time_to,
                expenses_from, expenses_to, erpsync_items, harvest_uninvoiced, harvest_billed,
                psa_requests, run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (invoice_id) DO UPDATE SET
               status = EXCLUDED.status, reason = EXCLUDED.reason,
               harvest_invoice_id = EXCLUDED.harvest_invoice_id,
               harvest_invoice_number = EXCLUDED.harvest_invoice_number,
               harvest_billed = EXCLUDED.harvest_billed, run_id = EXCLUDED.run_id,
               psa_requests = billing.psa_billed_state.psa_requests + EXCLUDED.psa_requests,
               decided_at = now()""",
        (
            invoice["invoice_id"],
            invoice["document_number"],
            state["erp_number"],
            billed.status,
            billed.reason,
            billed.harvest_invoice_id,
            billed.harvest_invoice_number,
            billed.harvest_client_id,
            billed.project_ids,
            tw[0],
            tw[1],
            ew[0],
            ew[1],
            billed.erpsync_items,
            billed.harvest_uninvoiced,
            billed.harvest_billed,
            billed.psa_requests,
            ctx.result.run_id,
        ),
    )
    for conflict in billed.conflicts:
        exceptions_queue.raise_exception(
            ctx.conn,
            PSA_BILLED_ELSEWHERE,
            "psa_item",
            conflict["item_key"],
            FINANCE_OPS,
            {
                **conflict,
                "note": "billed by erpsync in the ERP and by another invoice in Harvest",
            },
            ctx.run,
        )
    if billed.status == "failed":
        exceptions_queue.raise_exception(
            ctx.conn,
            HARVEST_MISMATCH,
            "invoice",
            str(invoice["document_number"]),
            FINANCE_OPS,
            {
                "erp_number": state["erp_number"],
                "harvest_invoice_id": billed.harvest_invoice_id,
                "reason": billed.reason,
                "erpsync_items": billed.erpsync_items,
                "harvest_billed": billed.harvest_billed,
                "harvest_uninvoiced_before": billed.harvest_uninvoiced,
            },
            ctx.run,
        )


def _resolve_failures(ctx: _Ctx, invoice: dict[str, Any]) -> None:
    """Close the push-failure exception of an invoice that is now done (the cause is gone)."""
    rows = ctx.conn.execute(
        """SELECT exception_id FROM ops.exceptions
            WHERE reason_code IN (%s, %s) AND entity_type = 'invoice' AND entity_key = %s
              AND status = 'open'""",
        (
            exceptions_queue.WRITE_BACK_FAILED,
            ERP_TOTALS_DIFFER,
            str(invoice["document_number"]),
        ),
    ).fetchall()
    for (exception_id,) in rows:
        exceptions_queue.resolve(
            ctx.conn,
            int(exception_id),
            by="erpsync push",
            comment=f"invoice pushed, posted and billed back by run {ctx.result.run_id}",
            run=ctx.run,
        )


# ---------------------------------------------------------------------------- batch end


def _finish(ctx: _Ctx) -> None:
    batch_id = ctx.result.batch_id
    with ctx.conn.transaction():
        status = scalar(
            ctx.conn,
            "SELECT status FROM billing.invoice_batches WHERE batch_id = %s FOR UPDATE",
            (batch_id,),
        )
        remaining = scalar(
            ctx.conn,
            """SELECT count(*) FROM billing.invoices i
                 LEFT JOIN billing.invoice_push p ON p.invoice_id = i.invoice_id
                WHERE i.batch_id = %s AND i.status <> 'rejected'
                  AND p.step IS DISTINCT FROM 'billed_back'""",
            (batch_id,),
        )
        if status == "pushing" and remaining == 0:
            ctx.conn.execute(
                """UPDATE billing.invoice_batches
                      SET status = 'released', released_at = now(), updated_at = now()
                    WHERE batch_id = %s""",
                (batch_id,),
            )
            _audit(
                ctx,
                "invoice_batch.released",
                "invoice_batch",
                batch_id,
                after={"status": "released"},
                detail={"invoices": ctx.result.invoices, "kind": ctx.kind},
            )
            status = "released"
    ctx.result.batch_status = str(status)


def _fill_totals(ctx: _Ctx) -> None:
    rows = dict_rows(
        ctx.conn,
        """SELECT i.currency, count(*) AS invoices, sum(i.net) AS net, sum(i.tax) AS tax,
                  sum(i.total) AS total, sum(p.erp_net) AS erp_net, sum(p.erp_tax) AS erp_tax,
                  sum(p.erp_total) AS erp_total
             FROM billing.invoices i
             JOIN billing.invoice_push p ON p.invoice_id = i.invoice_id
            WHERE i.batch_id = %s AND p.step IN ('posted', 'billed_back')
            GROUP BY i.currency ORDER BY i.currency""",
        (ctx.result.batch_id,),
    )
    totals = {}
    for row in rows:
        cur = str(row["currency"]).strip()

        def fmt(value: Decimal | None, cur: str = cur) -> str:
            return str(money.round_money(Decimal(value or 0), cur))

        totals[cur] = {"invoices": str(row["invoices"])} | {
            column: fmt(row[column])
            for column in ("net", "tax", "total", "erp_net", "erp_tax", "erp_total")
        }
    ctx.result.totals = totals
