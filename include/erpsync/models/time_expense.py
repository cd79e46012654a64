"""Canonical time entries and expenses (PSA ``/v2/time_entries`` and ``/v2/expenses``) and their
mappers.

Kept lean for the hourly sync and the million-entry firm: the models use pydantic's native
(Rust) validators only (``Decimal`` with ``ge=0``, ``date``, ``bool``, ``Literal``), no Python
validator runs per time entry, and the mappers are flat dict lookups. A float from the JSON
body becomes a ``Decimal`` through its shortest repr (pydantic converts ``194.62`` to
``Decimal('194.62')``), never binary arithmetic. The prebuilt ``TypeAdapter`` of each model is
registered in :data:`erpsync.models.canonical.ADAPTERS` at import, so the engine reuses it for
every record.

Planted business problems (missing rate, time on a closed project, duplicate entries, expenses
without a receipt or over policy) are *not* validation failures: the rows load as the PSA holds
them and reconciliation reports them. Only records the warehouse cannot hold (no id, no date,
negative hours, an unknown approval state, an unsupported currency) are quarantined.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from erpsync.models.canonical import ADAPTERS, Canonical, Currency

ApprovalStatus = Literal["unsubmitted", "submitted", "approved"]
NonNegative = Annotated[Decimal, Field(ge=0)]


class TimeEntry(Canonical):
    psa_id: str = Field(min_length=1)
    spent_date: dt.date
    hours: NonNegative
    rounded_hours: NonNegative | None = None
    notes: str | None = None
    billable: bool
    approval_status: ApprovalStatus
    is_locked: bool
    locked_reason: str | None = None
    is_closed: bool = False
    is_billed: bool
    is_running: bool = False
    billable_rate: NonNegative | None = None
    cost_rate: NonNegative | None = None
    currency: str | None = None  # the client's currency (Harvest ``client.currency``)
    user_psa_id: str = Field(min_length=1)
    client_psa_id: str | None = None
    project_psa_id: str = Field(min_length=1)
    project_code: str | None = None
    task_psa_id: str | None = None
    user_assignment_psa_id: str | None = None
    task_assignment_psa_id: str | None = None
    invoice_psa_id: str | None = None
    external_reference_id: str | None = None
    external_reference_group_id: str | None = None
    external_reference_permalink: str | None = None
    created_at: dt.datetime | None = None


class Expense(Canonical):
    psa_id: str = Field(min_length=1)
    spent_date: dt.date
    notes: str | None = None
    total_cost: Decimal
    units: NonNegative | None = None
    currency: Currency
    billable: bool
    approval_status: ApprovalStatus
    is_locked: bool
    locked_reason: str | None = None
    is_closed: bool = False
    is_billed: bool
    has_receipt: bool
    receipt_file_name: str | None = None
    user_psa_id: str = Field(min_length=1)
    user_assignment_psa_id: str | None = None
    client_psa_id: str | None = None
    project_psa_id: str = Field(min_length=1)
    project_code: str | None = None
    expense_category_psa_id: str | None = None
    expense_category_name: str | None = None
    invoice_psa_id: str | None = None
    created_at: dt.datetime | None = None


ADAPTERS[TimeEntry] = TypeAdapter(TimeEntry)
ADAPTERS[Expense] = TypeAdapter(Expense)

_EMPTY: dict = {}


def _ref(value: dict | None, key: str = "id") -> str | None:
    if not value:
        return None
    got = value.get(key)
    return None if got is None or got == "" else str(got)


def harvest_time_entry(rec: dict) -> list[dict]:
    """A ``/v2/time_entries`` record -> one ``core.time_entries`` row."""
    client = rec.get("client") or _EMPTY
    project = rec.get("project") or _EMPTY
    ext = rec.get("external_reference") or _EMPTY
    rid = rec.get("id")
    return [
        {
            "psa_id": None if rid is None else str(rid),
            "spent_date": rec.get("spent_date"),
            "hours": rec.get("hours"),
            "rounded_hours": rec.get("rounded_hours"),
            "notes": rec.get("notes"),
            "billable": rec.get("billable"),
            "approval_status": rec.get("approval_status"),
            "is_locked": rec.get("is_locked"),
            "locked_reason": rec.get("locked_reason"),
            "is_closed": bool(rec.get("is_closed")),
            "is_billed": rec.get("is_billed"),
            "is_running": bool(rec.get("is_running")),
            "billable_rate": rec.get("billable_rate"),
            "cost_rate": rec.get("cost_rate"),
            "currency": client.get("currency"),
            "user_psa_id": _ref(rec.get("user")),
            "client_psa_id": _ref(client),
            "project_psa_id": _ref(project),
            "project_code": project.get("code"),
            "task_psa_id": _ref(rec.get("task")),
            "user_assignment_psa_id": _ref(rec.get("user_assignment")),
            "task_assignment_psa_id": _ref(rec.get("task_assignment")),
            "invoice_psa_id": _ref(rec.get("invoice")),
            "external_reference_id": _ref(ext),
            "external_reference_group_id": _ref(ext, "group_id"),
            "external_reference_permalink": ext.get("permalink"),
            "created_at": rec.get("created_at"),
        }
    ]


def harvest_expense(rec: dict) -> list[dict]:
    """A ``/v2/expenses`` record -> one ``core.expenses`` row (``has_receipt``: a receipt is
    attached, ``receipt: null`` otherwise)."""
    client = rec.get("client") or _EMPTY
    project = rec.get("project") or _EMPTY
    receipt = rec.get("receipt") or _EMPTY
    category = rec.get("expense_category") or _EMPTY
    rid = rec.get("id")
    return [
        {
            "psa_id": None if rid is None else str(rid),
            "spent_date": rec.get("spent_date"),
            "notes": rec.get("notes"),
            "total_cost": rec.get("total_cost"),
            "units": rec.get("units"),
            "currency": rec.get("currency") or client.get("currency"),
            "billable": rec.get("billable"),
            "approval_status": rec.get("approval_status"),
            "is_locked": rec.get("is_locked"),
            "locked_reason": rec.get("locked_reason"),
            "is_closed": bool(rec.get("is_closed")),
            "is_billed": rec.get("is_billed"),
            "has_receipt": bool(receipt),
            "receipt_file_name": receipt.get("file_name"),
            "user_psa_id": _ref(rec.get("user")),
            "user_assignment_psa_id": _ref(rec.get("user_assignment")),
            "client_psa_id": _ref(client),
            "project_psa_id": _ref(project),
            "project_code": project.get("code"),
            "expense_category_psa_id": _ref(category),
            "expense_category_name": category.get("name"),
            "invoice_psa_id": _ref(rec.get("invoice")),
            "created_at": rec.get("created_at"),
        }
    ]
