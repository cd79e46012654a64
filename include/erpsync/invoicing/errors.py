"""Errors of the invoice batch workflow, each with a message a finance user can act on."""

from __future__ import annotations


class InvoicingError(RuntimeError):
    """Base class: something about an invoice batch prevents the requested action."""


class MakerCheckerError(InvoicingError):
    """The person deciding a batch is the person who prepared it (four-eyes rule)."""


class BatchChangedError(InvoicingError):
    """The batch's content changed since the hash the decision was made for."""


class BatchStateError(InvoicingError):
    """The batch (or invoice) is not in a state that allows the action."""


class CreditNoteError(InvoicingError):
    """A credit note request is invalid (e.g. it credits more than was invoiced)."""
