"""Which Harvest API v2 lists the sandbox PSA serves and which filters each one takes.

One :class:`ListSpec` per list endpoint: the store resource, the envelope key, and the query
parameters Harvest documents for it, each mapped to a body field and a comparison. Filters
compare against the stored body with ``json_extract`` (dotted paths for nested references,
e.g. ``project_id`` -> ``project.id``). Harvest reference pages, e.g.
https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/ and
https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/.

``updated_since`` is inclusive: Harvest says "Only return X that have been updated since the
given date and time" and the sandbox returns records with ``updated_at >= updated_since`` (the
store's microsecond modstamp against the given instant), so a client that re-reads from the
largest ``updated_at`` it saw never misses a record that shares that second; it may see that
record again, which an upsert absorbs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from erpsync_sandbox.store import parse_iso, to_iso


class FilterError(ValueError):
    """A filter value Harvest would refuse with 422."""


@dataclass(frozen=True)
class Filter:
    """Query parameter ``param`` compares body field ``path`` with ``op`` after ``kind`` parsing."""

    param: str
    path: str
    kind: str  # "int" | "bool" | "str" | "date"
    op: str = "="

    def parse(self, raw: str) -> Any:
        if self.kind == "int":
            try:
                return int(raw)
            except ValueError as exc:
                raise FilterError(f"{self.param} must be an integer") from exc
        if self.kind == "bool":
            text = raw.strip().lower()
            if text in {"true", "1", "yes"}:
                return True
            if text in {"false", "0", "no"}:
                return False
            raise FilterError(f"{self.param} must be true or false")
        if self.kind == "date":
            text = raw.strip()
            for fmt in ("%Y-%m-%d", "%Y%m%d"):
                try:
                    return dt.datetime.strptime(text, fmt).date().isoformat()
                except ValueError:
                    continue
            raise FilterError(f"{self.param} must be a date (YYYY-MM-DD)")
        return raw


def parse_updated_since(raw: str) -> str:
    """``updated_since`` (ISO 8601 date-time, any offset, or a bare date) as a store modstamp."""
    try:
        return to_iso(parse_iso(raw))
    except ValueError as exc:
        raise FilterError("updated_since must be an ISO 8601 date and time") from exc


def _ref(name: str) -> Filter:
    return Filter(f"{name}_id", f"{name}.id", "int")


IS_ACTIVE = Filter("is_active", "is_active", "bool")


@dataclass(frozen=True)
class ListSpec:
    """A Harvest list endpoint backed by one store resource."""

    resource: str
    filters: tuple[Filter, ...] = ()
    updated_since: bool = True
    summary: str = ""
    tag: str = ""
    by_param: dict[str, Filter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_param", {f.param: f for f in self.filters})


LISTS: dict[str, ListSpec] = {
    "clients": ListSpec("clients", (IS_ACTIVE,), summary="List clients", tag="Clients"),
    "contacts": ListSpec("contacts", (_ref("client"),), summary="List contacts", tag="Clients"),
    "projects": ListSpec(
        "projects", (IS_ACTIVE, _ref("client")), summary="List projects", tag="Projects"
    ),
    "tasks": ListSpec("tasks", (IS_ACTIVE,), summary="List tasks", tag="Tasks"),
    "users": ListSpec("users", (IS_ACTIVE,), summary="List users", tag="Users"),
    "task_assignments": ListSpec(
        "task_assignments", (IS_ACTIVE,), summary="List task assignments", tag="Projects"
    ),
    "user_assignments": ListSpec(
        "user_assignments",
        (IS_ACTIVE, _ref("user")),
        summary="List user assignments",
        tag="Projects",
    ),
    "time_entries": ListSpec(
        "time_entries",
        (
            _ref("user"),
            _ref("client"),
            _ref("project"),
            _ref("task"),
            Filter("external_reference_id", "external_reference.id", "str"),
            Filter("is_billed", "is_billed", "bool"),
            Filter("is_running", "is_running", "bool"),
            Filter("approval_status", "approval_status", "str"),
            Filter("from", "spent_date", "date", ">="),
            Filter("to", "spent_date", "date", "<="),
        ),
        summary="List time entries",
        tag="Time entries",
    ),
    "expenses": ListSpec(
        "expenses",
        (
            _ref("user"),
            _ref("client"),
            _ref("project"),
            Filter("is_billed", "is_billed", "bool"),
            Filter("approval_status", "approval_status", "str"),
            Filter("from", "spent_date", "date", ">="),
            Filter("to", "spent_date", "date", "<="),
        ),
        summary="List expenses",
        tag="Expenses",
    ),
    "expense_categories": ListSpec(
        "expense_categories", (IS_ACTIVE,), summary="List expense categories", tag="Expenses"
    ),
    "invoices": ListSpec(
        "invoices",
        (
            _ref("client"),
            Filter("state", "state", "str"),
            Filter("from", "issue_date", "date", ">="),
            Filter("to", "issue_date", "date", "<="),
        ),
        summary="List invoices",
        tag="Invoices",
    ),
    # rate cards under a user: Harvest documents only page/per_page for these
    "billable_rates": ListSpec(
        "billable_rates", (), updated_since=False, summary="List billable rates", tag="Users"
    ),
    "cost_rates": ListSpec(
        "cost_rates", (), updated_since=False, summary="List cost rates", tag="Users"
    ),
}
