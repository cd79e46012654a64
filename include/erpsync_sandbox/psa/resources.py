"""Which Harvest API v2 lists the sandbox PSA serves and which filters each one takes.

One :class:`ListSpec` per list endpoint: the store resource, the envelope key, and the query
parameters Harvest documents for it, each mapped to a body field and a comparison. Filters
compare against the stored body with ``json_extract`` (dotted paths for nested references,
e.g. ``project_id`` -> ``project.id``). Each list's parameters are exactly those of its
Harvest reference page (cited next to it); any other query parameter is ignored, as Harvest
ignores it, and noted with :func:`erpsync_sandbox.contract.undocumented`. Besides a list's own
filters every list takes ``page`` / ``per_page`` and the cursor links' ``cursor`` / ``ref``
(https://help.getharvest.com/api-v2/introduction/overview/pagination/), and every request may
carry ``access_token`` / ``account_id`` instead of the headers
(https://help.getharvest.com/api-v2/authentication-api/authentication/authentication/).

:data:`BODY_PARAMS` lists the documented request parameters of each write endpoint the sandbox
emulates; a parameter outside the list is ignored (Harvest answers as if it were absent) and
noted.

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
    doc: str = ""
    tag: str = ""
    by_param: dict[str, Filter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_param", {f.param: f for f in self.filters})


_DOC = "https://help.getharvest.com/api-v2/"

#: Query parameters every list takes (paging, cursor links, credentials as parameters).
COMMON_QUERY = frozenset({"page", "per_page", "cursor", "ref", "access_token", "account_id"})

LISTS: dict[str, ListSpec] = {
    "clients": ListSpec(
        "clients",
        (IS_ACTIVE,),
        summary="List clients",
        tag="Clients",
        doc=_DOC + "clients-api/clients/clients/#list-all-clients",
    ),
    "contacts": ListSpec(
        "contacts",
        (_ref("client"),),
        summary="List contacts",
        tag="Clients",
        doc=_DOC + "clients-api/clients/contacts/#list-all-contacts",
    ),
    "projects": ListSpec(
        "projects",
        (IS_ACTIVE, _ref("client")),
        summary="List projects",
        tag="Projects",
        doc=_DOC + "projects-api/projects/projects/#list-all-projects",
    ),
    "tasks": ListSpec(
        "tasks",
        (IS_ACTIVE,),
        summary="List tasks",
        tag="Tasks",
        doc=_DOC + "tasks-api/tasks/tasks/#list-all-tasks",
    ),
    "users": ListSpec(
        "users",
        (IS_ACTIVE,),
        summary="List users",
        tag="Users",
        doc=_DOC + "users-api/users/users/#list-all-users",
    ),
    "task_assignments": ListSpec(
        "task_assignments",
        (IS_ACTIVE,),
        summary="List task assignments",
        tag="Projects",
        doc=_DOC + "projects-api/projects/task-assignments/#list-all-task-assignments",
    ),
    "user_assignments": ListSpec(
        "user_assignments",
        (IS_ACTIVE, _ref("user")),
        summary="List user assignments",
        tag="Projects",
        doc=_DOC + "projects-api/projects/user-assignments/#list-all-user-assignments",
    ),
    # no approval filter: Harvest's time entry has no approval_status (approval is is_closed)
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
            Filter("from", "spent_date", "date", ">="),
            Filter("to", "spent_date", "date", "<="),
        ),
        summary="List time entries",
        tag="Time entries",
        doc=_DOC + "timesheets-api/timesheets/time-entries/#list-all-time-entries",
    ),
    "expenses": ListSpec(
        "expenses",
        (
            _ref("user"),
            _ref("client"),
            _ref("project"),
            Filter("is_billed", "is_billed", "bool"),
            Filter("from", "spent_date", "date", ">="),
            Filter("to", "spent_date", "date", "<="),
        ),
        summary="List expenses",
        tag="Expenses",
        doc=_DOC + "expenses-api/expenses/expenses/#list-all-expenses",
    ),
    "expense_categories": ListSpec(
        "expense_categories",
        (IS_ACTIVE,),
        summary="List expense categories",
        tag="Expenses",
        doc=_DOC + "expenses-api/expenses/expense-categories/#list-all-expense-categories",
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
        doc=_DOC + "invoices-api/invoices/invoices/#list-all-invoices",
    ),
    # rate cards under a user: Harvest documents only page/per_page for these (no
    # updated_since: a client that sends it gets every rate, and the sandbox notes it)
    "billable_rates": ListSpec(
        "billable_rates",
        (),
        updated_since=False,
        summary="List billable rates",
        tag="Users",
        doc=_DOC + "users-api/users/billable-rates/#list-all-billable-rates-for-a-specific-user",
    ),
    "cost_rates": ListSpec(
        "cost_rates",
        (),
        updated_since=False,
        summary="List cost rates",
        tag="Users",
        doc=_DOC + "users-api/users/cost-rates/#list-all-cost-rates-for-a-specific-user",
    ),
}

# ---------------------------------------------------------------------------- write parameters

_CLIENT = frozenset({"name", "is_active", "address", "currency"})
_CONTACT = frozenset(
    {"client_id", "title", "first_name", "last_name", "email", "phone_office", "phone_mobile"}
    | {"fax"}
)
#: https://help.getharvest.com/api-v2/projects-api/projects/projects/#create-a-project (and
#: #update-a-project): no ``currency`` (a project's currency is its client's); ``budget`` is
#: hours, a money budget is ``cost_budget`` with ``budget_by: project_cost``.
_PROJECT = frozenset(
    {
        "client_id",
        "name",
        "code",
        "is_active",
        "is_billable",
        "is_fixed_fee",
        "bill_by",
        "hourly_rate",
        "budget",
        "budget_by",
        "budget_is_monthly",
        "notify_when_over_budget",
        "over_budget_notification_percentage",
        "show_budget_to_all",
        "cost_budget",
        "cost_budget_include_expenses",
        "fee",
        "notes",
        "starts_on",
        "ends_on",
    }
)
_TASK = frozenset({"name", "billable_by_default", "default_hourly_rate", "is_default", "is_active"})
_TASK_ASSIGNMENT = frozenset({"task_id", "is_active", "billable", "hourly_rate", "budget"})
_USER_ASSIGNMENT = frozenset(
    {"user_id", "is_active", "is_project_manager", "use_default_rates", "hourly_rate", "budget"}
)
#: https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/#create-a-time-entry-via-duration
#: (and via start and end time, #update-a-time-entry): no approval parameter.
_TIME_ENTRY = frozenset(
    {
        "user_id",
        "project_id",
        "task_id",
        "spent_date",
        "hours",
        "started_time",
        "ended_time",
        "notes",
        "external_reference",
    }
)
#: https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/#create-an-expense
_EXPENSE = frozenset(
    {
        "user_id",
        "project_id",
        "expense_category_id",
        "spent_date",
        "units",
        "total_cost",
        "notes",
        "billable",
        "receipt",
        "delete_receipt",
    }
)
#: https://help.getharvest.com/api-v2/users-api/users/billable-rates/#create-a-billable-rate
#: and .../cost-rates/#create-a-cost-rate
_RATE = frozenset({"amount", "start_date"})

#: Documented request parameters per write route name (``create_<x>`` / ``update_<x>``).
BODY_PARAMS: dict[str, frozenset[str]] = {
    "create_clients": _CLIENT,
    "update_clients": _CLIENT,
    "create_contacts": _CONTACT,
    "update_contacts": _CONTACT,
    "create_projects": _PROJECT,
    "update_projects": _PROJECT,
    "create_tasks": _TASK,
    "update_tasks": _TASK,
    "create_task_assignments": _TASK_ASSIGNMENT,
    "update_task_assignments": _TASK_ASSIGNMENT - {"task_id"},
    "create_user_assignments": _USER_ASSIGNMENT,
    "update_user_assignments": _USER_ASSIGNMENT - {"user_id"},
    "create_time_entry": _TIME_ENTRY,
    "update_time_entry": _TIME_ENTRY - {"user_id"},
    "create_expense": _EXPENSE - {"delete_receipt"},
    "update_expense": _EXPENSE - {"user_id"},
    "create_billable_rates": _RATE,
    "create_cost_rates": _RATE,
}
