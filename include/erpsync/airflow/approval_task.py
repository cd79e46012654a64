"""The billing approval step: Airflow's human-in-the-loop tasks that ask again, by themselves.

:class:`BatchApprovalOperator` is a :class:`~airflow.providers.standard.operators.hitl.
HITLOperator` (options Approve / Reject, default Reject after the response timeout) with two
additions:

* **The question is built when it is asked**, from the warehouse: the batch's current summary
  (:func:`erpsync.invoicing.approval_markdown`) and its current content hash. Each ask is audited
  (``invoice_batch.approval_requested``, with the hash shown), and the answer is checked against
  *that* hash, not the one the build step saw.
* **An answer that cannot stand is refused and the next person is asked, in the same run.** An
  Approve by the batch's preparer (maker-checker) or for a hash the batch no longer has (it
  changed while the question was open) is recorded (``invoice_batch.approval_refused``, with
  who, why and both hashes) and the next ask of the chain asks again with the current summary,
  hash and the refused answers. Nobody has to clear a task by hand; the earlier answers stay in
  the audit trail and in Airflow's own record of each ask.

Why a chain of asks (``approve_batch``, ``approve_batch_2``, ... up to ``ERPSYNC_APPROVAL_ASKS``,
default 3) and not a retry of one task: Airflow keeps one HITL detail per task instance and,
when a task instance asks again, keeps that detail's subject and body and only clears its
response (``upsert_hitl_detail``, airflow/api_fastapi/execution_api/routes/hitl.py, case 3:
"the existing response is removed, and the HITLDetail is returned"), so a retried approval
would show the first attempt's summary and hash. Each ask of the chain is its own task
instance with its own Required Action. An ask after an answer that stands passes that answer
on without asking anybody; the last ask's answer goes to ``record_decision``. When every ask
was refused the last one fails and nothing is pushed.

A Reject (or the timeout's default Reject) is never refused: it only ever stops billing.

Each ask tells the approvers at once by e-mail (summary and the Required Actions link:
:func:`erpsync.notify.approvals.notify_approval_requested`); reminders and the escalation come
from the ``erpsync_approval_reminders`` DAG. A mail problem never stops the ask.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk.exceptions import AirflowFailException

APPROVE, REJECT = "Approve", "Reject"
DEFAULT_ASKS = 3


def approval_asks() -> int:
    """How many times one run asks for a batch's approval (``ERPSYNC_APPROVAL_ASKS``, >= 1),
    read when the DAG file is parsed (it sets the number of ask tasks)."""
    raw = os.environ.get("ERPSYNC_APPROVAL_ASKS")
    asks = int(raw) if raw and raw.strip() else DEFAULT_ASKS
    if asks < 1:
        raise ValueError(f"ERPSYNC_APPROVAL_ASKS={raw!r}: ask at least once")
    return asks


def ask_task_id(ask: int) -> str:
    """``approve_batch`` for the first ask, ``approve_batch_<n>`` for the later ones."""
    return "approve_batch" if ask == 1 else f"approve_batch_{ask}"


class ApprovalRefused(AirflowFailException):
    """The last ask's answer cannot stand (maker-checker, changed batch): nothing is pushed,
    and the task is not retried (a retry would show the first ask's text again)."""


def _responder(event_or_payload: Any) -> str | None:
    user = (event_or_payload or {}).get("responded_by_user")
    if not user:
        return None
    return str(user.get("name") or user.get("id"))


def _same_person(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


class BatchApprovalOperator(HITLOperator):
    """Ask ``ask`` of ``asks`` for one invoice batch (module docstring)."""

    def __init__(
        self, *, ask: int = 1, asks: int = 1, build_task_id: str = "build_batch", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ask, self.asks = ask, asks
        self.build_task_id = build_task_id
        self.previous_task_ids = [ask_task_id(k) for k in range(1, ask)]

    # ------------------------------------------------------------------ the question

    def execute(self, context: Any) -> Any:
        from erpsync import audit, invoicing
        from erpsync.invoicing.common import scalar
        from erpsync.invoicing.hashing import current_hash
        from erpsync.sync.spec import RunInfo

        ti = context["ti"]
        for task_id in reversed(self.previous_task_ids):
            earlier_answer = ti.xcom_pull(task_ids=task_id)
            if earlier_answer and not earlier_answer.get("refused"):
                print(
                    f"approve_batch: {task_id} has an answer that stands "
                    f"({(earlier_answer.get('chosen_options') or ['?'])[0]}): nobody is asked"
                )
                return earlier_answer
        from erpsync.warehouse import connection

        # the build step's XCom (billing_tasks.build): JSON, untyped
        built: dict[str, Any] = ti.xcom_pull(task_ids=self.build_task_id) or {}
        batch_id: Any = built.get("batch_id")  # an int once the batch exists (checked below)
        run = RunInfo.from_context(context)
        with connection.connect() as conn:
            row = conn.execute(
                "SELECT status, prepared_by FROM billing.invoice_batches WHERE batch_id = %s",
                (batch_id,),
            ).fetchone()
            if row is None or row[0] != "awaiting_approval":
                raise AirflowFailException(
                    f"invoice batch {batch_id} is {row[0] if row else 'missing'}, not awaiting "
                    "approval: nothing to ask"
                )
            prepared_by = row[1]
            shown_hash = current_hash(conn, batch_id)
            markdown = invoicing.approval_markdown(conn, batch_id)
            invoices = scalar(
                conn, "SELECT count(*) FROM billing.invoices WHERE batch_id = %s", (batch_id,)
            )
            earlier = conn.execute(
                """SELECT actor, action, detail FROM audit.audit_log
                    WHERE entity_type = 'invoice_batch' AND entity_id = %s
                      AND source_run_id = %s AND action = 'invoice_batch.approval_refused'
                    ORDER BY audit_id""",
                (str(batch_id), run.run_id),
            ).fetchall()
            audit.record(
                conn,
                actor=run.actor,
                action="invoice_batch.approval_requested",
                entity_type="invoice_batch",
                entity_id=str(batch_id),
                source=run.audit_source(),
                detail={
                    "content_hash": shown_hash,
                    "ask": self.ask,
                    "try_number": run.try_number,
                    "prepared_by": prepared_by,
                },
            )
            conn.commit()
        self.subject = f"Approve invoice batch {batch_id}: {invoices} invoice(s)" + (
            f" (asked again, {len(earlier)} answer(s) refused)" if earlier else ""
        )
        self.body = markdown + self._footer(batch_id, prepared_by, shown_hash, earlier)
        print(
            f"approve_batch: asking for batch {batch_id} (ask {self.ask} of {self.asks}), hash "
            f"{shown_hash}, prepared by {prepared_by}"
        )
        # the approvers are told at once (summary + Required Actions link); a mail failure is
        # logged and recorded, never raised: the question is asked all the same
        from erpsync.notify.approvals import notify_approval_requested

        outcome = notify_approval_requested(
            batch_id=batch_id,
            dag_id=run.dag_id,
            run_id=run.run_id,
            task_id=run.task_id,
            timeout=self.response_timeout,
        )
        print(f"approve_batch: approvers notified: {outcome}")
        return super().execute(context)

    @staticmethod
    def _footer(
        batch_id: Any, prepared_by: str, shown_hash: str, earlier: list[tuple[Any, ...]]
    ) -> str:
        text = (
            "\n\n---\n"
            f"**Batch** `{batch_id}`, prepared by **{prepared_by}**. "
            f"Content hash `{shown_hash}`: approving approves exactly this content; if the batch "
            "changes, the approval is void and nothing is pushed.\n\n"
            "The preparer of a batch cannot approve it. With no answer before the deadline the "
            "batch is **rejected** and its items are released for the next run."
        )
        if earlier:
            text += "\n\n**Earlier answers in this run (refused):**\n" + "".join(
                f"\n- {actor}: {(detail or {}).get('message', '')}" for actor, _a, detail in earlier
            )
        return text

    # ------------------------------------------------------------------ the answer

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        payload = dict(super().execute_complete(context, event))
        built: dict[str, Any] = context["ti"].xcom_pull(task_ids=self.build_task_id) or {}
        batch_id: Any = built.get("batch_id")  # the batch the answered question was about
        from erpsync import audit
        from erpsync.invoicing.hashing import current_hash
        from erpsync.sync.spec import RunInfo
        from erpsync.warehouse import connection

        run = RunInfo.from_context(context)
        chosen = (payload.get("chosen_options") or [REJECT])[0]
        by = _responder(payload)
        with connection.connect() as conn:
            asked = conn.execute(
                """SELECT detail ->> 'content_hash' FROM audit.audit_log
                    WHERE entity_type = 'invoice_batch' AND entity_id = %s
                      AND source_run_id = %s AND action = 'invoice_batch.approval_requested'
                    ORDER BY audit_id DESC LIMIT 1""",
                (str(batch_id), run.run_id),
            ).fetchone()
            shown_hash = asked[0] if asked else built.get("content_hash")
            payload["content_hash"] = shown_hash
            if chosen != APPROVE or by is None:
                return payload
            stored = conn.execute(
                """SELECT prepared_by, status, content_hash FROM billing.invoice_batches
                    WHERE batch_id = %s""",
                (batch_id,),
            ).fetchone()
            if stored is None:
                raise AirflowFailException(
                    f"invoice batch {batch_id} is missing: nothing to approve"
                )
            prepared_by, status, stored_hash = stored
            now_hash = current_hash(conn, batch_id)
            reason = message = None
            if _same_person(by, prepared_by):
                reason = "maker_checker"
                message = (
                    f"{by} prepared batch {batch_id} and cannot also approve it (maker-checker); "
                    "another person is asked"
                )
            elif status == "awaiting_approval" and now_hash not in (shown_hash, stored_hash):
                # edited outside a rebuild: erpsync.invoicing.decide refuses any approval
                reason = "batch_changed"
                message = (
                    f"batch {batch_id} changed after it was shown to {by} (hash "
                    f"{str(shown_hash)[:12]}, now {now_hash[:12]}), outside a rebuild: the "
                    "approval is void and the batch cannot be approved as it is; reject it and "
                    "run billing again"
                )
            elif status == "awaiting_approval" and now_hash != shown_hash:
                reason = "batch_changed"
                message = (
                    f"batch {batch_id} changed after it was shown to {by} (hash "
                    f"{str(shown_hash)[:12]}, now {now_hash[:12]}): the approval is void; the "
                    "current batch is shown for approval"
                )
            if reason is None:
                return payload
            params_input = payload.get("params_input") or {}
            audit.record(
                conn,
                actor=by,
                action="invoice_batch.approval_refused",
                entity_type="invoice_batch",
                entity_id=str(batch_id),
                source=run.audit_source(),
                detail={
                    "reason": reason,
                    "message": message,
                    "prepared_by": prepared_by,
                    "shown_hash": shown_hash,
                    "current_hash": now_hash,
                    "chosen": chosen,
                    "comment": params_input.get("comment"),
                    "try_number": run.try_number,
                },
            )
            conn.commit()
        print(f"approve_batch: answer refused: {message}")
        if self.ask >= self.asks:
            raise ApprovalRefused(
                f"{message}; batch {batch_id} was asked {self.asks} time(s) in this run and no "
                "answer stands: nothing is pushed (run billing again to ask again)"
            )
        payload["refused"] = {"reason": reason, "message": message, "by": by}
        return payload
