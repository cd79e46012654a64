"""Invoice batches: build, approve, correct and export invoices.

The public API (the DAGs in ``dags/erpsync_invoice_batches.py`` and
``dags/erpsync_milestone_billing.py`` call these, the ERP push lives in ``push.py``):

* :func:`build_batch` -> :class:`BatchResult`: ready items -> invoice drafts (builder.py)
* :func:`approval_markdown`, :func:`decide`, :func:`verify_approval` (approval.py)
* :func:`current_hash` (hashing.py)
* :func:`create_credit_note` (credit.py)
* :func:`export_batch` (export.py)

Rules for users: docs/invoicing.md. Rounding: erpsync.money.
"""

from __future__ import annotations

from erpsync.invoicing.approval import Decision, approval_markdown, decide, verify_approval
from erpsync.invoicing.builder import BatchResult, build_batch, load_result
from erpsync.invoicing.credit import create_credit_note
from erpsync.invoicing.errors import (
    BatchChangedError,
    BatchStateError,
    CreditNoteError,
    InvoicingError,
    MakerCheckerError,
)
from erpsync.invoicing.export import export_batch
from erpsync.invoicing.hashing import current_hash

__all__ = [
    "BatchChangedError",
    "BatchResult",
    "BatchStateError",
    "CreditNoteError",
    "Decision",
    "InvoicingError",
    "MakerCheckerError",
    "approval_markdown",
    "build_batch",
    "create_credit_note",
    "current_hash",
    "decide",
    "export_batch",
    "load_result",
    "verify_approval",
]
