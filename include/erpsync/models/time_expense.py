"""Canonical time entries and expenses (PSA ``/v2/time_entries`` and ``/v2/expenses``) and their
mappers.

Kept lean for the hourly sync and the million-entry firm: the models use pydantic's native
(Rust) validators only (``Decimal`` with ``ge=0``, ``date``, ``bool``, ``Literal``), no Python
validator runs per time entry, and the mappers are flat dict lookups. A float from the JSON
body becomes a ``Decimal`` through its shortest repr (pydantic converts ``194.62`` to
``Decimal('194.62')``), never binary arithmetic. The prebuilt ``TypeAdapter`` of each model is
registered in :data:`erpsync.models.canonical.ADAPTERS` at import, so the engine reuses it for
every record.

Approval: Harvest's time entry and expense carry no approval status; approval is ``is_closed``
("Whether or not the time entry has been approved via Timesheet Approval",
https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/ and
https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/). The warehouse's
``approval_status`` column is derived from it: ``approved`` when ``is_closed`` is true, else
``unapproved`` (Harvest v2 has no "submitted" state). An entry without ``is_closed`` is taken
as not approved.

Currency: Harvest's time entry ``client`` is ``{id, name}`` (no currency), so a time entry's
``currency`` is null when the vendor omits it; reconciliation then takes the currency of the
entry's client (:mod:`erpsync.reconcile.sql`). An expense's ``client`` carries its currency.

Planted business problems (missing rate, time on a closed project, duplicate entries, expenses
without a receipt or over policy) are *not* validation failures: the rows load as the PSA holds
them and reconciliation reports them. Only records the warehouse cannot hold (no id, no date,
negative hours, an unknown approval state, an unsupported currency) are quarantined.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
import orjson
from pydantic import Field, TypeAdapter

from erpsync.models.canonical import ADAPTERS, Canonical, Currency

#: Derived from Harvest's ``is_closed`` (see the module doc).
ApprovalStatus = Literal["approved", "unapproved"]


def approval_of(is_closed: object) -> str:
    """The warehouse approval state of a Harvest record's ``is_closed``."""
    return "approved" if bool(is_closed) else "unapproved"


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


def _harvest_common(rec: dict) -> dict:
    """The fields a time entry and an expense share: id, date, notes, billing state, and the
    user/assignment/client/project/invoice references (currency is the client's)."""
    client = rec.get("client") or _EMPTY
    project = rec.get("project") or _EMPTY
    rid = rec.get("id")
    return {
        "psa_id": None if rid is None else str(rid),
        "spent_date": rec.get("spent_date"),
        "notes": rec.get("notes"),
        "billable": rec.get("billable"),
        "approval_status": approval_of(rec.get("is_closed")),
        "is_locked": rec.get("is_locked"),
        "locked_reason": rec.get("locked_reason"),
        "is_closed": bool(rec.get("is_closed")),
        "is_billed": rec.get("is_billed"),
        "currency": client.get("currency"),
        "user_psa_id": _ref(rec.get("user")),
        "user_assignment_psa_id": _ref(rec.get("user_assignment")),
        "client_psa_id": _ref(client),
        "project_psa_id": _ref(project),
        "project_code": project.get("code"),
        "invoice_psa_id": _ref(rec.get("invoice")),
        "created_at": rec.get("created_at"),
    }


def harvest_time_entry(rec: dict) -> list[dict]:
    """A ``/v2/time_entries`` record -> one ``core.time_entries`` row."""
    ext = rec.get("external_reference") or _EMPTY
    return [
        {
            **_harvest_common(rec),
            "hours": rec.get("hours"),
            "rounded_hours": rec.get("rounded_hours"),
            "is_running": bool(rec.get("is_running")),
            "billable_rate": rec.get("billable_rate"),
            "cost_rate": rec.get("cost_rate"),
            "task_psa_id": _ref(rec.get("task")),
            "task_assignment_psa_id": _ref(rec.get("task_assignment")),
            "external_reference_id": _ref(ext),
            "external_reference_group_id": _ref(ext, "group_id"),
            "external_reference_permalink": ext.get("permalink"),
        }
    ]


def harvest_expense(rec: dict) -> list[dict]:
    """A ``/v2/expenses`` record -> one ``core.expenses`` row (``has_receipt``: a receipt is
    attached, ``receipt: null`` otherwise)."""
    receipt = rec.get("receipt") or _EMPTY
    category = rec.get("expense_category") or _EMPTY
    return [
        {
            **_harvest_common(rec),
            "total_cost": rec.get("total_cost"),
            "units": rec.get("units"),
            "has_receipt": bool(receipt),
            "receipt_file_name": receipt.get("file_name"),
            "expense_category_psa_id": _ref(category),
            "expense_category_name": category.get("name"),
        }
    ]


# ------------------------------------------------------------------ the fast path (time entries)
#
# The engine's per-record path (mapper -> pydantic TypeAdapter -> row hash -> COPY row through
# psycopg's dumpers) costs ~40 us per record, most of a million-entry sync. For Harvest pages
# the connector keeps each record's JSON bytes (msgspec.Raw), and this codec turns one record's
# bytes straight into the COPY text of its ``core.time_entries`` row and its row hash.
#
# It accepts only records whose result it can guarantee equal to the pydantic path's: vendor
# numbers as JSON numbers (>= 0), ids as JSON integers, booleans as JSON booleans, dates as
# ``YYYY-MM-DD``, ``created_at`` as ``YYYY-MM-DDTHH:MM:SSZ``, and strings pydantic would not
# strip. Anything else (a string id, a negative or quoted number, padded text, a missing field,
# a tombstone) returns None and the engine runs that record through the mapper and the model,
# so quarantine reason codes, values and hashes are those of the pydantic path by construction
# (tests/unit/test_models_fast_path.py compares both on sandbox records and edge cases).

_TEXT_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def copy_text(value: str) -> str:
    """``value`` escaped for PostgreSQL's COPY text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        for old, new in _TEXT_ESCAPES:
            value = value.replace(old, new)
    return value


class _Ref(msgspec.Struct, gc=False):
    id: int


class _Client(msgspec.Struct, gc=False):
    id: int
    currency: str | None = None


class _Project(msgspec.Struct, gc=False):
    id: int
    code: str | None = None


class _ExternalReference(msgspec.Struct, gc=False):
    id: int | str | None = None
    group_id: int | str | None = None
    permalink: str | None = None


class _TimeEntryWire(msgspec.Struct, gc=False):
    id: int
    spent_date: dt.date
    hours: int | float
    billable: bool
    is_locked: bool
    is_billed: bool
    user: _Ref
    project: _Project
    rounded_hours: int | float | None = None
    notes: str | None = None
    locked_reason: str | None = None
    is_closed: bool | None = None
    is_running: bool | None = None
    billable_rate: int | float | None = None
    cost_rate: int | float | None = None
    client: _Client | None = None
    task: _Ref | None = None
    user_assignment: _Ref | None = None
    task_assignment: _Ref | None = None
    invoice: _Ref | None = None
    external_reference: _ExternalReference | None = None
    created_at: str | None = None
    updated_at: str | None = None
    tombstone: object = msgspec.field(default=None, name="_erpsync_deleted")


_WIRE = msgspec.json.Decoder(_TimeEntryWire)
_INF = float("inf")
_NUMBERS: dict[tuple[type, int | float], tuple[str, str]] = {}
_HASH_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


class _Reject(Exception):
    pass


def _number(value: int | float) -> tuple[str, str]:
    """(COPY text, row-hash text) of a JSON number as pydantic's ``Decimal`` would hold it:
    ints exactly, floats through their shortest repr; negative or infinite -> rejected."""
    kind = type(value)
    got = _NUMBERS.get((kind, value))
    if got is not None:
        return got
    if value < 0 or value == _INF:
        raise _Reject
    number = Decimal(value) if kind is int else Decimal(repr(value))
    got = (str(number), format(number.normalize(), "f"))
    if value != 0:  # -0.0 == 0.0 as a key: never cache zeros
        if len(_NUMBERS) > 50_000:
            _NUMBERS.clear()
        _NUMBERS[(kind, value)] = got
    return got


def _opt_number(value: int | float | None) -> tuple[str, str | None]:
    if value is None:
        return "\\N", None
    return _number(value)


def _text(value: str | None) -> str | None:
    """A string pydantic (``str_strip_whitespace``) keeps as it is; else rejected."""
    if value is not None and value.strip() != value:
        raise _Reject
    return value


def _ext_ref(value: int | str | None) -> str | None:
    """``_ref`` of an external reference field: None for null or "", else the text."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return str(value)
    return _text(value)


def _created(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    if len(value) != 20 or value[10] != "T" or value[19] != "Z" or not value.isascii():
        raise _Reject
    return dt.datetime.fromisoformat(value)  # ValueError (no such date) -> rejected


def _ct(value: str | None) -> str:
    return "\\N" if value is None else copy_text(value)


def encode_time_entry(raw: bytes | msgspec.Raw) -> tuple[str, str, str, str] | None:
    """One ``/v2/time_entries`` record's JSON -> ``(key, modstamp, columns, row_hash)``:
    the record key, ``updated_at`` and the ``TimeEntry`` columns (in model order) as COPY text,
    and :func:`erpsync.sync.engine.row_hash` of the validated row; or None when only the
    pydantic path may decide (see above)."""
    try:
        w = _WIRE.decode(raw)
        if w.tombstone is not None:
            return None
        hours, hours_h = _number(w.hours)
        rounded, rounded_h = _opt_number(w.rounded_hours)
        billable_rate, billable_rate_h = _opt_number(w.billable_rate)
        cost_rate, cost_rate_h = _opt_number(w.cost_rate)
        notes = _text(w.notes)
        locked_reason = _text(w.locked_reason)
        client = w.client
        currency = _text(client.currency) if client is not None else None
        client_id = str(client.id) if client is not None else None
        project = w.project
        project_code = _text(project.code)
        ext = w.external_reference
        if ext is not None:
            ext_id, ext_group = _ext_ref(ext.id), _ext_ref(ext.group_id)
            ext_link = _text(ext.permalink)
        else:
            ext_id = ext_group = ext_link = None
        created = _created(w.created_at)
    except (msgspec.ValidationError, msgspec.DecodeError, _Reject, ValueError):
        return None
    psa_id = str(w.id)
    user_id = str(w.user.id)
    project_id = str(project.id)
    task = None if w.task is None else str(w.task.id)
    ua = None if w.user_assignment is None else str(w.user_assignment.id)
    ta = None if w.task_assignment is None else str(w.task_assignment.id)
    invoice = None if w.invoice is None else str(w.invoice.id)
    is_closed = bool(w.is_closed)
    approval = "approved" if is_closed else "unapproved"
    is_running = bool(w.is_running)
    spent = w.spent_date.isoformat()
    row = {
        "psa_id": psa_id,
        "spent_date": w.spent_date,
        "hours": hours_h,
        "rounded_hours": rounded_h,
        "notes": notes,
        "billable": w.billable,
        "approval_status": approval,
        "is_locked": w.is_locked,
        "locked_reason": locked_reason,
        "is_closed": is_closed,
        "is_billed": w.is_billed,
        "is_running": is_running,
        "billable_rate": billable_rate_h,
        "cost_rate": cost_rate_h,
        "currency": currency,
        "user_psa_id": user_id,
        "client_psa_id": client_id,
        "project_psa_id": project_id,
        "project_code": project_code,
        "task_psa_id": task,
        "user_assignment_psa_id": ua,
        "task_assignment_psa_id": ta,
        "invoice_psa_id": invoice,
        "external_reference_id": ext_id,
        "external_reference_group_id": ext_group,
        "external_reference_permalink": ext_link,
        "created_at": created,
    }
    digest = hashlib.sha256(orjson.dumps(row, option=_HASH_OPTIONS)).hexdigest()
    columns = "\t".join(
        (
            psa_id,
            spent,
            hours,
            rounded,
            _ct(notes),
            "t" if w.billable else "f",
            approval,
            "t" if w.is_locked else "f",
            _ct(locked_reason),
            "t" if is_closed else "f",
            "t" if w.is_billed else "f",
            "t" if is_running else "f",
            billable_rate,
            cost_rate,
            _ct(currency),
            user_id,
            _ct(client_id),
            project_id,
            _ct(project_code),
            _ct(task),
            _ct(ua),
            _ct(ta),
            _ct(invoice),
            _ct(ext_id),
            _ct(ext_group),
            _ct(ext_link),
            "\\N" if created is None else created.isoformat(),
        )
    )
    return psa_id, _ct(w.updated_at), columns, digest
