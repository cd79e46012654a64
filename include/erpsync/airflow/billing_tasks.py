"""The billing DAGs' task code: the path shared by the invoice-batch DAG and the
milestone-billing DAG, and the planning tasks of each.

:func:`billing_tasks` wires, inside the calling DAG, one chain used by both DAGs (a factory, not
a copy)::

    dq_gate -> build_batch -> needs_approval -> approve_batch (human in the loop)
            -> record_decision -> push_to_erp -> export_files -> report

* ``dq_gate``: a critical data-quality failure for *all* clients stops the run; a block for one
  client or contract only holds that scope's items (the builder holds them, reason
  ``dq_blocked``).
* ``build_batch``: :func:`erpsync.invoicing.build_batch` (or a credit note); ``prepared_by`` is
  the user who triggered the run, ``scheduler`` for scheduled runs. The approval text and the
  batch's content hash go to XCom for the approval step.
* ``needs_approval``: a dry run (or an empty batch) stops here: nothing is asked, nothing pushed.
* ``approve_batch``: Airflow's :class:`~airflow.providers.standard.operators.hitl.HITLOperator`
  with the options Approve / Reject, the batch summary as Markdown, and a response timeout whose
  default is **Reject** (``ERPSYNC_APPROVAL_TIMEOUT``, default 72 h).
  An approval by the preparer (maker-checker) or for a hash the batch no longer has is refused,
  audited, and asked again in the same run with the current summary and hash
  (:mod:`erpsync.airflow.approval_task`).
* ``record_decision``: records the decision for the hash the approver was shown (maker-checker
  and the hash binding are checked again by :func:`erpsync.invoicing.decide`). A rejection (or
  the timeout) releases the batch's items for the next run.
* ``push_to_erp``: :func:`erpsync.invoicing.push.push_batch` (check-then-create, post, billed
  back to the PSA); failures that may pass are retried by Airflow, safely.
* ``export_files``: the released batch as CSV and JSON files.
* ``report``: what the run read, changed, held and pushed, with counts and totals.

Each task body turns the Airflow context into arguments, opens the warehouse
(:func:`erpsync.warehouse.connection.connect`) and the vendor clients (their default Airflow
connections), calls the library and logs what its typed result says (``BatchResult``,
``PushResult``, ``ReconcileResult``). Domain SQL lives in its domain: milestone queries in
:mod:`erpsync.reconcile.milestones`, invoice references in :mod:`erpsync.invoicing.references`.

This module is imported when a DAG file is parsed: it imports Airflow's authoring API only (and
the warehouse connection helper, which imports nothing); the connectors and the invoicing
library are imported inside the tasks.
"""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule, task

from erpsync import money
from erpsync.models.billing_terms import ItemType
from erpsync.request_budget import counted_requests
from erpsync.warehouse import connection

if TYPE_CHECKING:
    from airflow.sdk import PokeReturnValue
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    from airflow.sdk.types import RuntimeTaskInstanceProtocol

    from erpsync.invoicing.builder import BatchResult
    from erpsync.sync.spec import RunInfo

DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=72)
APPROVE, REJECT = "Approve", "Reject"
TIMEOUT_RESPONDER = "airflow:response_timeout"
SCHEDULER_PREPARER = "scheduler"

#: Item types a billing run can be limited to (the trigger form's drop-down).
#: The item types a billing run may be narrowed to (the trigger form's choices).
BILLING_TYPES: tuple[str, ...] = tuple(t.value for t in ItemType)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def approval_timeout() -> timedelta:
    """How long an approval waits before the default (Reject) applies.

    ``ERPSYNC_APPROVAL_TIMEOUT`` (``90s``, ``30m``, ``72h``, ``5d``; a bare number is seconds),
    read at parse time like the firm time zone (no database access)."""
    raw = os.environ.get("ERPSYNC_APPROVAL_TIMEOUT")
    if not raw:
        return DEFAULT_APPROVAL_TIMEOUT
    match = _DURATION.match(raw)
    if not match:
        raise ValueError(f"ERPSYNC_APPROVAL_TIMEOUT={raw!r}: use e.g. 90s, 30m, 72h or 5d")
    value, unit = float(match.group(1)), match.group(2) or "s"
    field = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]
    return timedelta(**{field: value})


# --------------------------------------------------------------------------- small helpers


def prepared_by(context: Any) -> str:
    """The preparer of a batch: the user who triggered the run, ``scheduler`` otherwise."""
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
    return str(user) if user else SCHEDULER_PREPARER


def previous_month(day: date) -> tuple[date, date]:
    """First and last day of the month before ``day``."""
    first_this = day.replace(day=1)
    last_prev = first_this - timedelta(days=1)
    return last_prev.replace(day=1), last_prev


def month_bounds(period: str) -> tuple[date, date]:
    """``"2026-10"`` -> (2026-10-01, 2026-10-31)."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", period.strip())
    if not match:
        raise ValueError(f"billing period {period!r}: use YYYY-MM, e.g. 2026-10")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise ValueError(f"billing period {period!r}: month must be 01..12")
    start = date(year, month, 1)
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return start, nxt - timedelta(days=1)


def run_day(context: Any, timezone: str) -> date:
    """The run's date in the firm's time zone (logical date, else when it was queued to run)."""
    import pendulum

    dag_run = context.get("dag_run")
    when = context.get("logical_date") or getattr(dag_run, "run_after", None)
    when = when or pendulum.now("UTC")
    return pendulum.instance(when).in_timezone(timezone).date()


def _money(value: Any) -> str:
    return money.as_text(value, grouped=True)


def _json_safe(value: Any) -> Any:
    """XCom-safe copy: Decimals as strings (never floats), dates as ISO strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _fail(message: str) -> AirflowFailException:
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


def _skip(message: str) -> AirflowSkipException:
    from airflow.sdk.exceptions import AirflowSkipException

    return AirflowSkipException(message)


def _run(context: Any) -> RunInfo:
    from erpsync.sync.spec import RunInfo

    return RunInfo.from_context(context)


def totals_line(totals: dict[str, Any] | None) -> str:
    """``{"EUR": "1200.00", "USD": ...}`` -> ``EUR 1,200.00; USD ...``."""
    if not totals:
        return "nothing"
    parts = []
    for currency in sorted(totals):
        value = totals[currency]
        if isinstance(value, dict):  # {"net":..,"tax":..,"total":..}
            value = value.get("total", value.get("net"))
        parts.append(f"{currency} {_money(value)}")
    return "; ".join(parts)


def held_line(held: dict[str, Any] | None) -> str:
    if not held:
        return "none"
    parts = []
    for reason in sorted(held):
        value = held[reason]
        count = value.get("items", value.get("count")) if isinstance(value, dict) else value
        amounts = value.get("amounts") if isinstance(value, dict) else None
        money = f" ({totals_line(amounts)})" if amounts else ""
        parts.append(f"{reason} {count}{money}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- task bodies


def check_dq_gate(context: Any) -> dict[str, Any]:
    """Stop the run if a critical data-quality block covers every client; report the others."""
    from erpsync import quality

    with connection.connect() as conn:
        blocks = quality.active_blocks(conn)
    scoped: dict[str, list[str]] = {}
    for block in blocks:
        scoped.setdefault(block.scope_type, []).append(
            f"{block.scope_key} ({block.suite}: {block.expectation})"
        )
    print(
        f"data-quality gate: read {len(blocks)} active critical block(s): "
        + (
            "; ".join(f"{scope} -> {', '.join(keys)}" for scope, keys in sorted(scoped.items()))
            or "none"
        )
    )
    if "all" in scoped:
        raise _fail(
            "invoicing is blocked for every client by a critical data-quality failure: "
            + "; ".join(scoped["all"])
            + ". Fix the data at the source (see the data-quality DAG's Data Docs), let the "
            "reconcile run clear the block, then run billing again."
        )
    if scoped:
        print(
            "items of the blocked clients/contracts are held (reason dq_blocked); "
            "everything else is billed"
        )
    return {"blocks": len(blocks), "by_scope": {k: len(v) for k, v in scoped.items()}}


def build(context: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Build the batch the request describes; return its summary and approval text."""
    from erpsync import invoicing
    from erpsync.invoicing.references import resolve_invoice

    run = _run(context)
    preparer = prepared_by(context)
    kind = request.get("kind", "period")
    result: BatchResult
    with connection.connect() as conn:
        if kind == "credit_note":
            ref = str(request["credit_note_for"])
            invoice_id = resolve_invoice(conn, ref)
            if invoice_id is None:
                raise _fail(
                    f"no invoice {ref!r} (document number, ERP number or invoice id) to credit"
                )
            lines = [
                {**spec, "amount": Decimal(spec["amount"])} if "amount" in spec else dict(spec)
                for spec in request.get("credit_note_lines") or []
            ]
            result = invoicing.create_credit_note(
                conn,
                run,
                invoice_id,
                reason=request.get("credit_note_reason") or "correction",
                prepared_by=preparer,
                lines=lines or None,
            )
        else:
            result = invoicing.build_batch(
                conn,
                run,
                period_start=date.fromisoformat(request["period_start"]),
                period_end=date.fromisoformat(request["period_end"]),
                clients=request.get("clients") or None,
                billing_types=request.get("billing_types") or None,
                milestone_keys=request.get("milestone_keys") or None,
                dry_run=bool(request.get("dry_run")),
                prepared_by=preparer,
            )
        conn.commit()
        batch_id = result.batch_id
        markdown = invoicing.approval_markdown(conn, batch_id) if batch_id is not None else ""
    summary = {
        "kind": kind,
        "batch_id": batch_id,
        "content_hash": result.content_hash,
        "prepared_by": preparer,
        "status": result.status,
        "dry_run": bool(request.get("dry_run")) or result.dry_run,
        "period_start": request.get("period_start"),
        "period_end": request.get("period_end"),
        "invoices": len(result.invoices),
        "items": result.items,
        "totals": _json_safe(result.totals),
        "held": _json_safe(result.held),
        "anomalies": len(result.anomalies),
        "markdown": markdown,
    }
    print(
        f"build_batch: {kind} batch {batch_id} prepared by {preparer} "
        f"({'dry run, ' if summary['dry_run'] else ''}period {summary['period_start']} .. "
        f"{summary['period_end']}): read the ready items, created {len(result.invoices)} "
        f"invoice draft(s) from {result.items} item(s); totals "
        f"{totals_line(summary['totals'])}; held {held_line(summary['held'])}; "
        f"{summary['anomalies']} anomaly flag(s); content hash {summary['content_hash']}"
    )
    return summary


def needs_approval(built: dict[str, Any]) -> bool:
    """False (stop before the approval) for a dry run or a batch with nothing to invoice."""
    if built.get("dry_run"):
        print("dry run: built and reported only; nothing is asked, pushed or posted")
        return False
    if not built.get("invoices"):
        print("nothing to invoice in this run: no approval is asked")
        return False
    return True


def approval_body_footer() -> str:
    """The part of the approval text Airflow renders from the build step's XCom."""
    return (
        "\n\n---\n"
        "**Batch** `{{ ti.xcom_pull(task_ids='build_batch')['batch_id'] }}`, prepared by "
        "**{{ ti.xcom_pull(task_ids='build_batch')['prepared_by'] }}**. "
        "Content hash `{{ ti.xcom_pull(task_ids='build_batch')['content_hash'] }}`: "
        "approving approves exactly this content; if the batch changes, the approval is void "
        "and nothing is pushed.\n\n"
        "The preparer of a batch cannot approve it. With no answer before the deadline the "
        "batch is **rejected** and its items are released for the next run."
    )


def record(context: Any, built: dict[str, Any], response: dict[str, Any] | None) -> dict[str, Any]:
    """Check the human's answer (maker-checker, content hash) and record the decision."""
    from erpsync import audit, invoicing

    run = _run(context)
    batch_id = built["batch_id"]
    response = response or {}
    chosen = (response.get("chosen_options") or [REJECT])[0]
    responder = response.get("responded_by_user") or None
    by = str(responder.get("name") or responder.get("id")) if responder else TIMEOUT_RESPONDER
    params_input = response.get("params_input") or {}
    comment = params_input.get("comment") or None
    if responder is None:
        comment = comment or "no answer before the response timeout: rejected by default"
    decision = "approve" if chosen == APPROVE else "reject"
    # the hash of the question the person answered (it may be a later ask than the build's)
    shown_hash = response.get("content_hash") or built["content_hash"]
    try:
        with connection.connect() as conn:
            invoicing.decide(
                conn,
                run,
                batch_id,
                decision=decision,
                by=by,
                content_hash=shown_hash,
                comment=comment,
            )
            conn.commit()
    except invoicing.MakerCheckerError as exc:
        with connection.connect() as conn:
            audit.record(
                conn,
                actor=by,
                action="invoice_batch.approval_refused",
                entity_type="invoice_batch",
                entity_id=str(batch_id),
                detail={"reason": "maker_checker", "prepared_by": built.get("prepared_by")},
                source=run.audit_source(),
            )
            conn.commit()
        raise _fail(
            f"{by} prepared batch {batch_id} and cannot also approve it (maker-checker): {exc}. "
            "The batch stays awaiting approval with its items reserved; run billing again for "
            "the scope to ask for its approval."
        ) from exc
    except invoicing.BatchStateError as exc:
        # a retry after the decision was committed: the recorded decision stands
        from erpsync.invoicing.references import recorded_decision

        with connection.connect() as conn:
            recorded = recorded_decision(conn, batch_id)
        if (
            recorded is None
            or recorded.decided_by != by
            or (recorded.status == "rejected") != (decision == "reject")
        ):
            raise _fail(f"batch {batch_id} cannot be {decision}d now: {exc}") from exc
        print(f"record_decision: batch {batch_id} was already {recorded.status} by {by}")
    except invoicing.BatchChangedError as exc:
        raise _fail(
            f"batch {batch_id} changed after it was shown to {by} (hash {shown_hash}): the "
            f"approval is void and nothing is pushed: {exc}. Run billing again to prepare a "
            "fresh batch for approval."
        ) from exc
    verb = "approved" if decision == "approve" else "rejected"
    how = " (response timeout, default Reject)" if responder is None else ""
    print(
        f"record_decision: batch {batch_id} {verb} by {by}{how} for content hash {shown_hash}; "
        f"prepared by {built.get('prepared_by')}; {built.get('invoices')} invoice(s), totals "
        f"{totals_line(built.get('totals'))}"
        + ("; its items are released for the next run" if decision == "reject" else "")
    )
    return {"batch_id": batch_id, "decision": decision, "by": by, "content_hash": shown_hash}


def push(context: Any, decision: dict[str, Any]) -> dict[str, Any]:
    """Push an approved batch to the ERP, post it and settle the billed state in the PSA
    (docs/billed-state.md)."""
    if decision.get("decision") != "approve":
        raise _skip(f"batch {decision.get('batch_id')} was rejected: nothing to push")
    from erpsync import settings
    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.connectors.harvest import HarvestClient
    from erpsync.invoicing import push as invoice_push

    run = _run(context)
    batch_id = decision["batch_id"]
    mirror = settings.harvest_invoice_mirror(_variable(settings.HARVEST_INVOICE_MIRROR))
    erp, psa = BusinessCentralClient(), HarvestClient()
    try:
        with erp, psa:
            result = invoice_push.push_batch(
                connection.connect, run, batch_id, erp=erp, psa=psa, harvest_invoices=mirror
            )
    except invoice_push.PushRefused as exc:
        raise _fail(f"batch {batch_id} is not pushed: {exc}") from exc
    from erpsync.console import insights

    with connection.connect() as conn:  # time to invoice, WIP days and rework see what was posted
        insights.refresh_summaries(conn)
    data = result.as_dict()
    counts = ", ".join(
        f"{k} {v}" for k, v in data.items() if isinstance(v, int) and k != "batch_id" and v
    )
    print(
        f"push_to_erp: batch {batch_id} ({data.get('batch_status')}): "
        f"{counts or 'nothing to do'}; totals {totals_line(data.get('totals'))}"
        + (f"; errors: {'; '.join(data['errors'][:5])}" if data.get("errors") else "")
    )
    # not released yet (a system down, a lost answer): fail so Airflow retries; the retry
    # resumes each invoice where it stopped, so nothing is created or billed twice
    result.raise_if_incomplete()
    return data


def _variable(name: str) -> str | None:
    """An Airflow Variable at run time (None when unset)."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(name, default=None)
        return None if value is None else str(value)
    except Exception:  # noqa: BLE001 - no metadata access (tests): the default applies
        return None


def export(context: Any, decision: dict[str, Any]) -> dict[str, Any]:
    """Write the released batch as CSV and JSON files."""
    from erpsync import invoicing

    batch_id = decision["batch_id"]
    out_dir = os.environ.get("ERPSYNC_EXPORT_DIR")
    target = os.path.join(out_dir, str(batch_id)) if out_dir else None  # None: .erpsync/exports
    with connection.connect() as conn:
        files = invoicing.export_batch(conn, batch_id, target)
    names = [str(f) for f in files]
    print(f"export_files: batch {batch_id}: wrote {len(names)} file(s): {', '.join(names)}")
    return {"batch_id": batch_id, "files": names}


def report(context: Any) -> dict[str, Any]:
    """The run's closing statement for finance and auditors: read, changed, held, pushed."""
    ti: RuntimeTaskInstanceProtocol = context["ti"]
    built = ti.xcom_pull(task_ids="build_batch") or {}
    decision = ti.xcom_pull(task_ids="record_decision") or {}
    pushed = ti.xcom_pull(task_ids="push_to_erp") or {}
    exported = ti.xcom_pull(task_ids="export_files") or {}
    batch_id = built.get("batch_id")
    if not built:
        outcome = "no batch was built"
    elif built.get("dry_run"):
        outcome = "dry run: reported only, nothing pushed"
    elif not built.get("invoices"):
        outcome = "nothing to invoice"
    elif not decision:
        outcome = "no decision recorded"
    elif decision.get("decision") == "reject":
        outcome = f"rejected by {decision.get('by')}: items released"
    elif pushed:
        outcome = f"approved by {decision.get('by')}, pushed and posted"
    else:
        outcome = f"approved by {decision.get('by')}, push not completed"
    lines = [
        f"billing report for {built.get('kind', '?')} batch {batch_id} "
        f"(period {built.get('period_start')} .. {built.get('period_end')}): {outcome}",
        f"  read:    the ready-to-bill items in scope: {built.get('items', '?')} item(s) "
        "went into this batch",
        f"  changed: {built.get('invoices', 0)} invoice(s) prepared; totals "
        f"{totals_line(built.get('totals'))}",
        f"  held:    {held_line(built.get('held'))}",
        f"  anomaly flags shown to the approver: {built.get('anomalies', 0)}",
        "  pushed:  "
        + (", ".join(f"{k} {v}" for k, v in pushed.items() if isinstance(v, int)) or "nothing"),
        f"  files:   {', '.join(exported.get('files', [])) or 'none'}",
    ]
    print("\n".join(lines))
    return {
        "batch_id": batch_id,
        "outcome": outcome,
        "invoices": built.get("invoices", 0),
        "totals": built.get("totals", {}),
        "held": built.get("held", {}),
        "pushed": {k: v for k, v in pushed.items() if isinstance(v, int)},
        "files": exported.get("files", []),
    }


# --------------------------------------------------------------------------- the shared chain


def billing_tasks(request: Any, *, approval_timeout_: timedelta | None = None) -> tuple[Any, Any]:
    """Wire the shared billing chain after ``request`` (an XComArg of the request dict).

    Returns ``(first, last)`` tasks. Both billing DAGs call this, so a batch from a monthly run,
    an on-demand run, a credit note or an accepted milestone is built, approved, pushed and
    exported by the same code."""
    from airflow.sdk import Param

    from erpsync.airflow.approval_task import BatchApprovalOperator, approval_asks, ask_task_id

    @task(task_id="dq_gate")
    def dq_gate(**context: Any) -> dict[str, Any]:
        return check_dq_gate(context)

    @task(task_id="build_batch")
    def build_batch(request: dict[str, Any], **context: Any) -> dict[str, Any]:
        return build(context, request)

    @task.short_circuit(task_id="needs_approval", ignore_downstream_trigger_rules=False)
    def needs_approval_(built: dict[str, Any]) -> bool:
        return needs_approval(built)

    # subject and body are rebuilt from the warehouse each time the question is asked (a
    # refused answer is asked again, with the current summary and hash: approval_task.py)
    asks = approval_asks()
    ask_chain = [
        BatchApprovalOperator(
            task_id=ask_task_id(ask),
            ask=ask,
            asks=asks,
            subject=(
                "Approve invoice batch {{ ti.xcom_pull(task_ids='build_batch')['batch_id'] }}: "
                "{{ ti.xcom_pull(task_ids='build_batch')['invoices'] }} invoice(s)"
            ),
            body="{{ ti.xcom_pull(task_ids='build_batch')['markdown'] }}" + approval_body_footer(),
            options=[APPROVE, REJECT],
            defaults=[REJECT],
            params={
                "comment": Param(
                    "",
                    type=["null", "string"],
                    title="Comment",
                    description="Why you approve or reject (kept in the audit trail).",
                )
            },
            response_timeout=approval_timeout_ or approval_timeout(),
            doc_md=(
                "Approve or reject the batch shown. No answer in time means Reject. An approval by "
                "the preparer, or for a batch that changed meanwhile, is refused and the current "
                "batch is asked again."
            ),
        )
        for ask in range(1, asks + 1)
    ]

    @task(task_id="record_decision", retries=2)
    def record_decision(built: dict[str, Any], **context: Any) -> dict[str, Any]:
        response = context["ti"].xcom_pull(task_ids=ask_chain[-1].task_id)
        return record(context, built, response)

    @task(task_id="push_to_erp", pool="erp_api")
    @counted_requests
    def push_to_erp(decision: dict[str, Any], **context: Any) -> dict[str, Any]:
        return push(context, decision)

    @task(task_id="export_files")
    def export_files(decision: dict[str, Any], **context: Any) -> dict[str, Any]:
        return export(context, decision)

    @task(task_id="report", trigger_rule=TriggerRule.NONE_FAILED)
    def report_(**context: Any) -> dict[str, Any]:
        return report(context)

    gate = dq_gate()
    # XComArgs at authoring time (the task functions receive their values at run time)
    built: Any = build_batch(request)
    gate >> built
    go = needs_approval_(built)
    decided: Any = record_decision(built)
    go >> ask_chain[0]
    for earlier, later in zip(ask_chain, ask_chain[1:], strict=False):
        earlier >> later
    ask_chain[-1] >> decided
    pushed = push_to_erp(decided)
    exported = export_files(decided)
    pushed >> exported
    final = report_()
    exported >> final  # runs after a dry run and a rejection too (skipped upstream, none failed)
    return gate, final


# --------------------------------------------------------------------------- what to bill


def plan_period_run(context: Any, timezone: str) -> dict[str, Any]:
    """The request of an invoice-batch run from its trigger form (scheduled runs: defaults).

    No billing period in the form means the month before the run's date in the firm's time
    zone (the monthly run on the 2nd bills the month that just ended)."""
    params = context.get("params") or {}
    period = str(params.get("billing_period") or "").strip()
    if period:
        try:
            start, end = month_bounds(period)
        except ValueError as exc:
            raise _fail(f"Billing period (billing_period): {exc}") from exc
    else:
        start, end = previous_month(run_day(context, timezone))
    credit_for = str(params.get("credit_note_for") or "").strip()
    request: dict[str, Any] = {
        "kind": "credit_note" if credit_for else "period",
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "clients": _form_list(params.get("clients"), "Clients (clients)"),
        "billing_types": _form_list(params.get("billing_types"), "Billing types (billing_types)"),
        "dry_run": bool(params.get("dry_run")),
    }
    if credit_for:
        request["credit_note_for"] = credit_for
        request["credit_note_reason"] = str(params.get("credit_note_reason") or "").strip()
        if not request["credit_note_reason"]:
            raise _fail("a credit note needs a reason (the 'Credit note reason' field)")
        lines = _credit_lines(params.get("credit_note_lines"))
        if lines:
            request["credit_note_lines"] = lines
    elif _form_list(params.get("credit_note_lines"), "Credit note lines (credit_note_lines)"):
        raise _fail(
            "Credit note lines (credit_note_lines): fill 'Credit note for' with the invoice "
            "they belong to"
        )
    unknown = sorted(set(request["billing_types"]) - set(BILLING_TYPES))
    if unknown:
        raise _fail(
            f"Billing types (billing_types): unknown billing types {unknown}; choose from "
            f"{list(BILLING_TYPES)} or leave the field empty for all"
        )
    print(
        f"billing run requested by {prepared_by(context)}: {request['kind']} "
        f"{request['period_start']} .. {request['period_end']}, clients "
        f"{request['clients'] or 'all'}, types {request['billing_types'] or 'all'}"
        + (", DRY RUN" if request["dry_run"] else "")
        + (f", credit note for {credit_for}" if credit_for else "")
    )
    return request


def _form_list(value: Any, field: str) -> list[str]:
    """A list field of the form: empty (None, ``[]``, ``""``) means all; a string (a run
    triggered with JSON conf or the CLI) is split on commas and new lines."""
    if value is None:
        return []
    if isinstance(value, str):
        value = re.split(r"[,\n]", value)
    if not isinstance(value, list | tuple):
        raise _fail(f"{field}: expected a list of values, got {value!r}")
    return [str(v).strip() for v in value if v is not None and str(v).strip()]


def _credit_lines(value: Any) -> list[dict[str, Any]]:
    """The form's credit note lines (``"2"``: all of line 2, ``"1:150.00"``: 150.00 of line 1)
    as ``[{"line_no": 2}, {"line_no": 1, "amount": "150.00"}]`` (amounts as strings: XCom)."""
    field = "Credit note lines (credit_note_lines)"
    out: list[dict[str, Any]] = []
    for entry in _form_list(value, field):
        match = re.fullmatch(r"(\d+)\s*(?::\s*(\d+(?:\.\d+)?))?", entry)
        if not match or int(match.group(1)) < 1:
            raise _fail(f"{field}: {entry!r} is not '<line no>' or '<line no>:<amount>'")
        spec: dict[str, Any] = {"line_no": int(match.group(1))}
        if match.group(2) is not None:
            if Decimal(match.group(2)) <= 0:
                raise _fail(f"{field}: {entry!r}: the amount must be more than zero")
            spec["amount"] = match.group(2)
        out.append(spec)
    return out


def check_references(request: dict[str, Any]) -> dict[str, Any]:
    """Refuse the run before it starts when an id typed in the form does not resolve (an
    unknown client, an unknown invoice to credit), naming each value; else the request."""
    from erpsync.invoicing.references import unknown_references

    with connection.connect() as conn:
        problems = unknown_references(conn, request)
    if problems:
        raise _fail("; ".join(problems))
    return request


# --------------------------------------------------------------------------- milestones


def poke_milestones(context: Any) -> PokeReturnValue:
    """One look at the CRM: pull the Contract_Milestone__c records changed since the last look
    (SOQL on SystemModstamp, queryAll, deleted feed: the ordinary sync), refresh milestone
    acceptance, then list the accepted, unbilled ones.

    Returns a ``PokeReturnValue``: done (with the item keys) when there is something to bill."""
    from contextlib import closing

    from airflow.sdk import PokeReturnValue

    from erpsync.connectors.salesforce import SalesforceClient
    from erpsync.reconcile import milestones

    run = _run(context)
    with connection.connect() as conn, closing(SalesforceClient()) as crm:
        pulled = milestones.pull_crm_milestones(conn, crm, run=run)
    with connection.connect() as conn:
        refreshed = milestones.refresh_milestones(conn, run)
        conn.commit()
        keys = milestones.accepted_unbilled(conn)
    print(
        f"milestones: {pulled.read} CRM record(s) read ({pulled.mode}), acceptance refreshed "
        f"({_json_safe(refreshed)}); "
        f"{len(keys)} accepted and not billed yet: {', '.join(keys) or 'none'}"
    )
    return PokeReturnValue(is_done=bool(keys), xcom_value=keys)


def plan_milestone_run(context: Any, keys: list[str], timezone: str) -> dict[str, Any]:
    """Reconcile (so the accepted milestones are classified) and describe the milestone batch."""
    from erpsync.reconcile import run_reconcile

    day = run_day(context, timezone)
    with connection.connect() as conn:
        result = run_reconcile(conn, _run(context), as_of=day)
        conn.commit()
    print(f"reconcile before milestone billing: {result.summary()}")
    start = day.replace(day=1)
    request = {
        "kind": "milestone",
        "period_start": start.isoformat(),
        "period_end": month_bounds(start.strftime("%Y-%m"))[1].isoformat(),
        "milestone_keys": list(keys),
        "billing_types": ["milestone"],
        "clients": [],
        "dry_run": False,
    }
    print(f"milestone billing requested for {len(keys)} milestone(s): {', '.join(keys)}")
    return request
