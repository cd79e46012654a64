"""Create, update and delete logic of the sandbox PSA (Harvest API v2 write endpoints).

Builds records the way Harvest returns them (nested ``{id, name}`` references, ``created_at``
/ ``updated_at`` in ``2026-11-25T10:00:00Z`` form) from Harvest's documented request
parameters, validates what Harvest validates (422 ``{"message": "..."}``), and enforces the
delete rules Harvest documents, e.g.
https://help.getharvest.com/api-v2/clients-api/clients/clients/#delete-a-client and
https://help.getharvest.com/api-v2/projects-api/projects/projects/#delete-a-project.

Billed state (what erpsync reads after an ERP invoice posts): as in Harvest, ``is_billed``,
``invoice`` and the "invoiced" lock are read-only on time entries and expenses. Only a Harvest
invoice that imports them sets them (``POST /v2/invoices`` with ``line_items_import``, see
:meth:`PsaWriter.create_invoice`), and deleting that invoice releases them again
(:meth:`PsaWriter.delete_invoice`). ``PATCH /v2/time_entries/{id}`` and ``PATCH
/v2/expenses/{id}`` take exactly the update parameters Harvest documents
(:data:`TIME_ENTRY_UPDATE_PARAMS`, :data:`EXPENSE_UPDATE_PARAMS`); anything else is ignored, as
Harvest ignores it (the app notes it with :func:`erpsync_sandbox.contract.undocumented`), and a
locked entry (approved or invoiced) refuses edits with 422.
https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/#update-a-time-entry
https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/#update-an-expense
https://help.getharvest.com/api-v2/invoices-api/invoices/invoices/#create-an-invoice-based-on-tracked-time-and-expenses

Response shapes follow Harvest's object tables (URLs at each builder): a time entry's
``client`` and ``project`` are ``{id, name}``
(https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/), an expense's are
``{id, name, currency}`` and ``{id, name, code}``
(https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/); neither carries an
approval status: approval is ``is_closed`` (true = approved via Timesheet Approval). A project
has no ``currency`` of its own (its client's applies) and ``budget`` is hours, a money budget is
``cost_budget`` (https://help.getharvest.com/api-v2/projects-api/projects/projects/). The
request parameters each endpoint takes are listed in ``resources.BODY_PARAMS``; the app drops
(and notes) any other before these builders see the body.

Money arrives as JSON numbers and is kept as :class:`~decimal.Decimal` (request bodies are
parsed with ``parse_float=Decimal``), so ``150.00`` is stored and served as written.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from erpsync_sandbox.psa.resources import BODY_PARAMS
from erpsync_sandbox.store import Store, format_stamp


class Unprocessable(ValueError):
    """Harvest's 422 with ``{"message": ...}``."""


class NotFound(LookupError):
    """Harvest's 404."""


#: ``PATCH /v2/time_entries/{id}`` and ``PATCH /v2/expenses/{id}``: the parameters Harvest
#: documents (one list, in :data:`erpsync_sandbox.psa.resources.BODY_PARAMS`; no ``is_billed``,
#: ``invoice`` or lock: those are read-only; expenses have no ``external_reference`` at all).
#: https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/#update-a-time-entry
#: https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/#update-an-expense
TIME_ENTRY_UPDATE_PARAMS = BODY_PARAMS["update_time_entry"]
EXPENSE_UPDATE_PARAMS = BODY_PARAMS["update_expense"]
#: ``POST /v2/invoices`` (free-form, or based on tracked time and expenses with
#: ``line_items_import``).
#: https://help.getharvest.com/api-v2/invoices-api/invoices/invoices/#create-a-free-form-invoice
#: https://help.getharvest.com/api-v2/invoices-api/invoices/invoices/#create-an-invoice-based-on-tracked-time-and-expenses
INVOICE_CREATE_PARAMS = frozenset(
    {
        "client_id",
        "retainer_id",
        "estimate_id",
        "number",
        "purchase_order",
        "tax",
        "tax2",
        "discount",
        "subject",
        "notes",
        "currency",
        "issue_date",
        "due_date",
        "payment_term",
        "payment_options",
        "line_items",
        "line_items_import",
    }
)
#: ``line_items_import``: ``project_ids`` (required), ``time`` and ``expenses`` import objects.
LINE_ITEMS_IMPORT_PARAMS = frozenset({"project_ids", "time", "expenses"})
TIME_IMPORT_PARAMS = frozenset({"summary_type", "from", "to"})
EXPENSE_IMPORT_PARAMS = frozenset({"summary_type", "from", "to", "attach_receipt"})
#: "How to summarize the time entries per line item. Options: project, task, people, or
#: detailed." / expenses: "project, category, people, or detailed."
TIME_SUMMARY_TYPES = ("project", "task", "people", "detailed")
EXPENSE_SUMMARY_TYPES = ("project", "category", "people", "detailed")
#: Harvest's lock reasons (examples in its time entry and expense documentation).
TIME_INVOICED = "Item Invoiced"
TIME_INVOICED_AND_CLOSED = "Item Invoiced and Approved and Locked for this Time Period"
TIME_CLOSED = "Item Approved and Locked for this Time Period"
EXPENSE_INVOICED = "Expense is invoiced."


def undocumented_params(payload: dict[str, Any], documented: frozenset[str]) -> list[str]:
    """The keys of a request body that Harvest does not document for the endpoint."""
    return sorted(k for k in payload if k not in documented)


def invoice_import_undocumented(payload: dict[str, Any]) -> list[str]:
    """Undocumented keys inside ``line_items_import`` (dotted names)."""
    imp = payload.get("line_items_import")
    if not isinstance(imp, dict):
        return []
    found = [f"line_items_import.{k}" for k in undocumented_params(imp, LINE_ITEMS_IMPORT_PARAMS)]
    for part, allowed in (("time", TIME_IMPORT_PARAMS), ("expenses", EXPENSE_IMPORT_PARAMS)):
        if isinstance(imp.get(part), dict):
            found += [
                f"line_items_import.{part}.{k}" for k in undocumented_params(imp[part], allowed)
            ]
    return found


def _h(stamp: str) -> str:
    return format_stamp(stamp, "harvest")


def _money(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise Unprocessable(f"{name} must be a number")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise Unprocessable(f"{name} must be a number") from exc


def _date(value: Any, name: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise Unprocessable(f"{name.replace('_', ' ').capitalize()} can't be blank")
        return None
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError as exc:
        raise Unprocessable(f"{name} must be a date (YYYY-MM-DD)") from exc


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise Unprocessable(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise Unprocessable(f"{name} must be an integer") from exc


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise Unprocessable(f"{name} must be true or false")


def _require(payload: dict[str, Any], *names: str) -> None:
    for name in names:
        if payload.get(name) in (None, ""):
            label = name.removesuffix("_id").replace("_", " ").capitalize()
            raise Unprocessable(f"{label} can't be blank")


class PsaWriter:
    """Write operations over the PSA store; every write bumps ``updated_at``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ helpers

    def _put(
        self, resource: str, rid: int, body: dict[str, Any], *, parent_id: Any = None
    ) -> dict[str, Any]:
        return self.store.put(resource, rid, body, parent_id=parent_id, stamp_field="updated_at")

    def _stamp_now(self) -> str:
        return self.store.now()

    def _new(self, resource: str) -> tuple[int, str]:
        """A fresh integer id and the harvest-format creation time."""
        return self.store.next_int_id(resource), _h(self._stamp_now())

    def _ref(self, resource: str, rid: Any, label: str, fields: tuple[str, ...]) -> dict[str, Any]:
        if rid is None:
            raise Unprocessable(f"{label} can't be blank")
        body = self.store.get(resource, _int(rid, f"{label.lower()}_id"))
        if body is None:
            raise Unprocessable(f"{label} is not valid")
        return {f: body.get(f) for f in fields}

    def _client_ref(self, rid: Any) -> dict[str, Any]:
        return self._ref("clients", rid, "Client", ("id", "name", "currency"))

    def _project_ref(self, rid: Any) -> dict[str, Any]:
        return self._ref("projects", rid, "Project", ("id", "name", "code"))

    @staticmethod
    def _entry_refs(project: dict[str, Any]) -> dict[str, Any]:
        """A time entry's ``client`` and ``project``: ``{id, name}`` each (Harvest's time entry
        object, https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/)."""
        client = project.get("client") or {}
        return {
            "client": {"id": client.get("id"), "name": client.get("name")},
            "project": {"id": project["id"], "name": project["name"]},
        }

    def _user_ref(self, rid: Any) -> dict[str, Any]:
        ref = self._ref("users", rid, "User", ("id", "first_name", "last_name", "name"))
        name = ref.pop("name", None) or " ".join(
            p for p in (ref.pop("first_name", None), ref.pop("last_name", None)) if p
        )
        ref.pop("first_name", None)
        ref.pop("last_name", None)
        return {"id": ref["id"], "name": name}

    def _task_ref(self, rid: Any) -> dict[str, Any]:
        return self._ref("tasks", rid, "Task", ("id", "name"))

    def _existing(self, resource: str, rid: int, parent_id: str | None = None) -> dict[str, Any]:
        row = self.store.get_row(resource, rid)
        if row is None or (parent_id is not None and row.parent_id != str(parent_id)):
            raise NotFound(resource)
        return row.data()

    def _update(
        self, resource: str, rid: int, body: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any]:
        body.update(changes)
        row = self.store.get_row(resource, rid)
        return self._put(resource, rid, body, parent_id=None if row is None else row.parent_id)

    def _has(self, resource: str, where: dict[str, Any]) -> bool:
        return bool(self.store.scan_rows(resource, where=where, limit=1))

    # ------------------------------------------------------------------ clients, contacts

    def create_client(self, p: dict[str, Any]) -> dict[str, Any]:
        """https://help.getharvest.com/api-v2/clients-api/clients/clients/#the-client-object"""
        _require(p, "name")
        rid, now = self._new("clients")
        body = {
            "id": rid,
            "name": p["name"],
            "is_active": _bool(p.get("is_active", True), "is_active"),
            "address": p.get("address"),
            "statement_key": f"{rid:032x}",
            "created_at": now,
            "updated_at": now,
            "currency": p.get("currency") or "USD",
        }
        return self._put("clients", rid, body)

    def update_client(self, rid: int, p: dict[str, Any]) -> dict[str, Any]:
        body = self._existing("clients", rid)
        changes = {k: p[k] for k in ("name", "address", "currency") if k in p}
        if "is_active" in p:
            changes["is_active"] = _bool(p["is_active"], "is_active")
        if "name" in changes and not changes["name"]:
            raise Unprocessable("Name can't be blank")
        return self._update("clients", rid, body, changes)

    def delete_client(self, rid: int) -> None:
        self._existing("clients", rid)
        if self._has("projects", {"client.id": rid}) or self._has("invoices", {"client.id": rid}):
            raise Unprocessable("Client cannot be deleted: it has projects, invoices or estimates.")
        self.store.delete("clients", rid)

    _CONTACT_FIELDS = (
        "title",
        "first_name",
        "last_name",
        "email",
        "phone_office",
        "phone_mobile",
        "fax",
    )

    def create_contact(self, p: dict[str, Any]) -> dict[str, Any]:
        """https://help.getharvest.com/api-v2/clients-api/clients/contacts/#the-contact-object"""
        _require(p, "client_id", "first_name")
        client = self._client_ref(p["client_id"])
        rid, now = self._new("contacts")
        body: dict[str, Any] = {"id": rid}
        body.update({f: p.get(f) for f in self._CONTACT_FIELDS})
        body.update(
            {
                "created_at": now,
                "updated_at": now,
                "client": {"id": client["id"], "name": client["name"]},
            }
        )
        return self._put("contacts", rid, body)

    def update_contact(self, rid: int, p: dict[str, Any]) -> dict[str, Any]:
        body = self._existing("contacts", rid)
        changes = {f: p[f] for f in self._CONTACT_FIELDS if f in p}
        if "client_id" in p:
            client = self._client_ref(p["client_id"])
            changes["client"] = {"id": client["id"], "name": client["name"]}
        return self._update("contacts", rid, body, changes)

    # ------------------------------------------------------------------ projects, tasks

    _PROJECT_MONEY = (
        "hourly_rate",
        "budget",
        "cost_budget",
        "fee",
        "over_budget_notification_percentage",
    )
    _PROJECT_FLAGS = (
        "is_active",
        "is_billable",
        "is_fixed_fee",
        "budget_is_monthly",
        "notify_when_over_budget",
        "show_budget_to_all",
        "cost_budget_include_expenses",
    )

    def create_project(self, p: dict[str, Any]) -> dict[str, Any]:
        """https://help.getharvest.com/api-v2/projects-api/projects/projects/#the-project-object
        (no currency of its own: ``client`` is ``{id, name, currency}``)"""
        _require(p, "client_id", "name", "is_billable", "bill_by", "budget_by")
        client = self._client_ref(p["client_id"])
        rid, now = self._new("projects")
        body: dict[str, Any] = {
            "id": rid,
            "name": p["name"],
            "code": p.get("code"),
            "is_active": True,
            "is_billable": True,
            "is_fixed_fee": False,
            "bill_by": p["bill_by"],
            "hourly_rate": None,
            "budget": None,
            "budget_by": p["budget_by"],
            "budget_is_monthly": False,
            "notify_when_over_budget": False,
            "over_budget_notification_percentage": Decimal("80.0"),
            "show_budget_to_all": False,
            "created_at": now,
            "updated_at": now,
            "starts_on": None,
            "ends_on": None,
            "over_budget_notification_date": None,
            "notes": p.get("notes"),
            "cost_budget": None,
            "cost_budget_include_expenses": False,
            "fee": None,
            "client": client,
        }
        body.update(self._project_changes(p))
        return self._put("projects", rid, body)

    def _project_changes(self, p: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for f in ("name", "code", "bill_by", "budget_by", "notes"):
            if f in p:
                changes[f] = p[f]
        for f in self._PROJECT_FLAGS:
            if f in p:
                changes[f] = _bool(p[f], f)
        for f in self._PROJECT_MONEY:
            if f in p:
                changes[f] = _money(p[f], f)
        for f in ("starts_on", "ends_on"):
            if f in p:
                changes[f] = _date(p[f], f)
        if changes.get("bill_by") not in (None, "Project", "Tasks", "People", "none"):
            raise Unprocessable("Bill by is not included in the list")
        budget_by = ("project", "project_cost", "task", "task_fees", "person", "none")
        if changes.get("budget_by") not in (None, *budget_by):
            raise Unprocessable("Budget by is not included in the list")
        return changes

    def update_project(self, rid: int, p: dict[str, Any]) -> dict[str, Any]:
        body = self._existing("projects", rid)
        changes = self._project_changes(p)
        if "client_id" in p:
            changes["client"] = self._client_ref(p["client_id"])
        if "name" in changes and not changes["name"]:
            raise Unprocessable("Name can't be blank")
        return self._update("projects", rid, body, changes)

    def delete_project(self, rid: int) -> None:
        """Harvest deletes the project with its time and expenses unless any is invoiced."""
        self._existing("projects", rid)
        for resource in ("time_entries", "expenses"):
            if self._has(resource, {"project.id": rid, "is_billed": True}):
                raise Unprocessable(
                    "Project cannot be deleted: it has invoiced time entries or expenses."
                )
        for resource in ("time_entries", "expenses"):
            for row in self.store.scan_rows(resource, where={"project.id": rid}):
                self.store.delete(resource, row.id)
        for resource in ("task_assignments", "user_assignments"):
            for row in self.store.scan_rows(resource, where={"parent_id": str(rid)}):
                self.store.delete(resource, row.id)
        self.store.delete("projects", rid)

    def create_task(self, p: dict[str, Any]) -> dict[str, Any]:
        """https://help.getharvest.com/api-v2/tasks-api/tasks/tasks/#the-task-object"""
        _require(p, "name")
        rid, now = self._new("tasks")
        body = {
            "id": rid,
            "name": p["name"],
            "billable_by_default": _bool(p.get("billable_by_default", True), "billable_by_default"),
            "default_hourly_rate": _money(p.get("default_hourly_rate"), "default_hourly_rate"),
            "is_default": _bool(p.get("is_default", False), "is_default"),
            "is_active": _bool(p.get("is_active", True), "is_active"),
            "created_at": now,
            "updated_at": now,
        }
        return self._put("tasks", rid, body)

    def update_task(self, rid: int, p: dict[str, Any]) -> dict[str, Any]:
        body = self._existing("tasks", rid)
        changes: dict[str, Any] = {}
        if "name" in p:
            if not p["name"]:
                raise Unprocessable("Name can't be blank")
            changes["name"] = p["name"]
        for f in ("billable_by_default", "is_default", "is_active"):
            if f in p:
                changes[f] = _bool(p[f], f)
        if "default_hourly_rate" in p:
            changes["default_hourly_rate"] = _money(p["default_hourly_rate"], "default_hourly_rate")
        return self._update("tasks", rid, body, changes)

    def delete_task(self, rid: int) -> None:
        self._existing("tasks", rid)
        if self._has("time_entries", {"task.id": rid}):
            raise Unprocessable("Task cannot be deleted: it has time entries.")
        self.store.delete("tasks", rid)

    # ------------------------------------------------------------------ assignments

    def create_task_assignment(self, project_id: int, p: dict[str, Any]) -> dict[str, Any]:
        """https://help.getharvest.com/api-v2/projects-api/projects/task-assignments/"""
        project = self._existing("projects", project_id)
        _require(p, "task_id")
        task = self._task_ref(p["task_id"])
        if self._has("task_assignments", {"parent_id": str(project_id), "task.id": task["id"]}):
            raise Unprocessable("Task has already been assigned to this project")
        rid, now = self._new("task_assignments")
        body = {
            "id": rid,
            "billable": _bool(p.get("billable", True), "billable"),
            "is_active": _bool(p.get("is_active", True), "is_active"),
            "created_at": now,
            "updated_at": now,
            "hourly_rate": _money(p.get("hourly_rate"), "hourly_rate"),
            "budget": _money(p.get("budget"), "budget"),
            "project": {"id": project["id"], "name": project["name"], "code": project.get("code")},
            "task": task,
        }
        return self._put("task_assignments", rid, body, parent_id=project_id)

    def update_task_assignment(
        self, project_id: int, rid: int, p: dict[str, Any]
    ) -> dict[str, Any]:
        body = self._existing("task_assignments", rid, str(project_id))
        changes: dict[str, Any] = {}
        for f in ("billable", "is_active"):
            if f in p:
                changes[f] = _bool(p[f], f)
        for f in ("hourly_rate", "budget"):
            if f in p:
                changes[f] = _money(p[f], f)
        return self._update("task_assignments", rid, body, changes)

    def create_user_assignment(self, project_id: int, p: dict[str, Any]) -> dict[str, Any]:
        """https://help.getharvest.com/api-v2/projects-api/projects/user-assignments/"""
        project = self._existing("projects", project_id)
        _require(p, "user_id")
        user = self._user_ref(p["user_id"])
        if self._has("user_assignments", {"parent_id": str(project_id), "user.id": user["id"]}):
            raise Unprocessable("User has already been assigned to this project")
        rid, now = self._new("user_assignments")
        body = {
            "id": rid,
            "is_project_manager": _bool(p.get("is_project_manager", False), "is_project_manager"),
            "is_active": _bool(p.get("is_active", True), "is_active"),
            # Harvest: use_default_rates "Defaults to true" (an hourly_rate alone is stored but
            # not applied), https://help.getharvest.com/api-v2/projects-api/projects/user-assignments/
            "use_default_rates": _bool(p.get("use_default_rates", True), "use_default_rates"),
            "budget": _money(p.get("budget"), "budget"),
            "created_at": now,
            "updated_at": now,
            "hourly_rate": _money(p.get("hourly_rate", 0), "hourly_rate"),
            "project": {"id": project["id"], "name": project["name"], "code": project.get("code")},
            "user": user,
        }
        return self._put("user_assignments", rid, body, parent_id=project_id)

    def update_user_assignment(
        self, project_id: int, rid: int, p: dict[str, Any]
    ) -> dict[str, Any]:
        body = self._existing("user_assignments", rid, str(project_id))
        changes: dict[str, Any] = {}
        for f in ("is_project_manager", "is_active", "use_default_rates"):
            if f in p:
                changes[f] = _bool(p[f], f)
        for f in ("hourly_rate", "budget"):
            if f in p:
                changes[f] = _money(p[f], f)
        return self._update("user_assignments", rid, body, changes)

    def delete_child(self, resource: str, project_id: int, rid: int) -> None:
        self._existing(resource, rid, str(project_id))
        self.store.delete(resource, rid)

    # ------------------------------------------------------------------ rates

    def create_rate(self, resource: str, user_id: int, p: dict[str, Any]) -> dict[str, Any]:
        """POST /v2/users/{id}/billable_rates: the new rate starts on ``start_date`` and the
        previous open-ended rate ends the day before, as Harvest does."""
        self._existing("users", user_id)
        _require(p, "amount")
        amount = _money(p["amount"], "amount")
        start = _date(p.get("start_date"), "start_date")
        rows = self.store.scan_rows(resource, where={"parent_id": str(user_id)})
        for row in rows:
            prior = row.data()
            if prior.get("end_date") is None and start is not None:
                prior_start = prior.get("start_date")
                if prior_start is not None and prior_start >= start:
                    raise Unprocessable("Start date must be after the current rate's start date")
                end = (dt.date.fromisoformat(start) - dt.timedelta(days=1)).isoformat()
                self._put(resource, int(row.id), {**prior, "end_date": end}, parent_id=user_id)
        rid, now = self._new(resource)
        body = {
            "id": rid,
            "amount": amount,
            "start_date": start,
            "end_date": None,
            "created_at": now,
            "updated_at": now,
        }
        return self._put(resource, rid, body, parent_id=user_id)

    # ------------------------------------------------------------------ time entries

    def _effective_rate(self, resource: str, user_id: int, spent_date: str) -> Decimal | None:
        best: dict[str, Any] | None = None
        for row in self.store.scan_rows(resource, where={"parent_id": str(user_id)}):
            rate = row.data()
            start, end = rate.get("start_date"), rate.get("end_date")
            if (start is None or start <= spent_date) and (end is None or spent_date <= end):
                if best is None or (start or "") > (best.get("start_date") or ""):
                    best = rate
        return None if best is None else _money(best.get("amount"), "amount")

    def _assignment(self, resource: str, project_id: Any, key: str, rid: int) -> dict | None:
        rows = self.store.scan_rows(
            resource, where={"parent_id": str(project_id), f"{key}.id": rid}, limit=1
        )
        return rows[0].data() if rows else None

    @staticmethod
    def _assignment_ref(body: dict[str, Any] | None, *fields: str) -> dict[str, Any] | None:
        """The assignment as embedded in time entries and expenses (without project/user)."""
        if body is None:
            return None
        return {f: body.get(f) for f in ("id", *fields, "created_at", "updated_at")}

    def _billable_rate(
        self,
        project: dict[str, Any],
        task_assignment: dict[str, Any] | None,
        user_assignment: dict[str, Any] | None,
        user_id: int,
        spent: str,
    ) -> Any:
        bill_by = project.get("bill_by")
        if bill_by == "Project":
            return project.get("hourly_rate")
        if bill_by == "Tasks":
            return None if task_assignment is None else task_assignment.get("hourly_rate")
        if bill_by == "People":
            # the assignment's rate applies only with use_default_rates false (Harvest's user
            # assignment object); otherwise the person's billable rate on the day
            if user_assignment is not None and user_assignment.get("use_default_rates") is False:
                return user_assignment.get("hourly_rate")
            return self._effective_rate("billable_rates", user_id, spent)
        return None

    def create_time_entry(self, p: dict[str, Any], default_user_id: int | None) -> dict[str, Any]:
        """https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/#the-time-entry-object
        (no approval_status: approval is ``is_closed``)"""
        _require(p, "project_id", "task_id", "spent_date")
        project = self._existing_ref("projects", p["project_id"], "Project")
        task = self._task_ref(p["task_id"])
        user = self._user_ref(p.get("user_id", default_user_id))
        spent = _date(p["spent_date"], "spent_date", required=True) or ""
        hours = _money(p.get("hours", 0), "hours") or Decimal(0)
        billable = project.get("is_billable", True) is not False
        task_assignment = self._assignment("task_assignments", project["id"], "task", task["id"])
        user_assignment = self._assignment("user_assignments", project["id"], "user", user["id"])
        rid, now = self._new("time_entries")
        body: dict[str, Any] = {
            "id": rid,
            "spent_date": spent,
            "hours": hours,
            "hours_without_timer": hours,
            "rounded_hours": hours,
            "notes": p.get("notes"),
            "is_locked": False,
            "locked_reason": None,
            "is_closed": False,
            "is_billed": False,
            "timer_started_at": None,
            "started_time": p.get("started_time"),
            "ended_time": p.get("ended_time"),
            "is_running": False,
            "billable": billable,
            "budgeted": False,
            "billable_rate": self._billable_rate(
                project, task_assignment, user_assignment, user["id"], spent
            )
            if billable
            else None,
            "cost_rate": self._effective_rate("cost_rates", user["id"], spent),
            "created_at": now,
            "updated_at": now,
            "user": user,
            **self._entry_refs(project),
            "task": task,
            "user_assignment": self._assignment_ref(
                user_assignment, "is_project_manager", "is_active", "budget", "hourly_rate"
            ),
            "task_assignment": self._assignment_ref(
                task_assignment, "billable", "is_active", "hourly_rate", "budget"
            ),
            "external_reference": p.get("external_reference"),
            "invoice": None,
        }
        return self._put("time_entries", rid, body)

    def _existing_ref(self, resource: str, rid: Any, label: str) -> dict[str, Any]:
        body = self.store.get(resource, _int(rid, f"{label.lower()}_id"))
        if body is None:
            raise Unprocessable(f"{label} is not valid")
        return body

    @staticmethod
    def _refuse_if_locked(body: dict[str, Any], p: dict[str, Any], allowed, label: str) -> None:
        """Harvest refuses edits to a locked (approved or invoiced) item with 422."""
        if body.get("is_locked") and any(k in allowed for k in p):
            reason = body.get("locked_reason") or "locked"
            raise Unprocessable(f"This {label} is locked and can't be edited ({reason}).")

    def update_time_entry(self, rid: int, p: dict[str, Any]) -> dict[str, Any]:
        """PATCH with Harvest's documented parameters only; others are ignored."""
        body = self._existing("time_entries", rid)
        self._refuse_if_locked(body, p, TIME_ENTRY_UPDATE_PARAMS, "time entry")
        changes: dict[str, Any] = {}
        if "project_id" in p:
            project = self._existing_ref("projects", p["project_id"], "Project")
            changes.update(self._entry_refs(project))
        if "task_id" in p:
            changes["task"] = self._task_ref(p["task_id"])
        if "spent_date" in p:
            changes["spent_date"] = _date(p["spent_date"], "spent_date", required=True)
        if "hours" in p:
            changes["hours"] = changes["rounded_hours"] = _money(p["hours"], "hours")
            changes["hours_without_timer"] = changes["hours"]
        for f in ("notes", "started_time", "ended_time", "external_reference"):
            if f in p:
                changes[f] = p[f]
        return self._update("time_entries", rid, body, changes)

    # ------------------------------------------------------------------ expenses

    def create_expense(self, p: dict[str, Any], default_user_id: int | None) -> dict[str, Any]:
        """https://help.getharvest.com/api-v2/expenses-api/expenses/expenses/#the-expense-object"""
        _require(p, "project_id", "expense_category_id", "spent_date")
        project = self._existing_ref("projects", p["project_id"], "Project")
        category = self._ref(
            "expense_categories",
            p["expense_category_id"],
            "Expense category",
            ("id", "name", "unit_price", "unit_name"),
        )
        user = self._user_ref(p.get("user_id", default_user_id))
        if p.get("total_cost") is None and p.get("units") is None:
            raise Unprocessable("Total cost can't be blank")
        rid, now = self._new("expenses")
        body = {
            "id": rid,
            "spent_date": _date(p["spent_date"], "spent_date", required=True),
            "user": user,
            "client": project.get("client"),  # {id, name, currency}, as Harvest documents
            "project": {"id": project["id"], "name": project["name"], "code": project.get("code")},
            "expense_category": category,
            "user_assignment": self._assignment_ref(
                self._assignment("user_assignments", project["id"], "user", user["id"]),
                "is_project_manager",
                "is_active",
                "budget",
                "hourly_rate",
            ),
            "total_cost": _money(p.get("total_cost"), "total_cost"),
            "units": _money(p.get("units"), "units"),
            "notes": p.get("notes"),
            "billable": _bool(p.get("billable", True), "billable"),
            "is_closed": False,
            "is_billed": False,
            "is_locked": False,
            "locked_reason": None,
            "receipt": p.get("receipt"),
            "invoice": None,
            "created_at": now,
            "updated_at": now,
        }
        return self._put("expenses", rid, body)

    def update_expense(self, rid: int, p: dict[str, Any]) -> dict[str, Any]:
        """PATCH with Harvest's documented parameters only; others are ignored."""
        body = self._existing("expenses", rid)
        self._refuse_if_locked(body, p, EXPENSE_UPDATE_PARAMS, "expense")
        changes: dict[str, Any] = {}
        if "project_id" in p:
            project = self._existing_ref("projects", p["project_id"], "Project")
            changes["project"] = {
                "id": project["id"],
                "name": project["name"],
                "code": project.get("code"),
            }
            changes["client"] = project.get("client")
        if "expense_category_id" in p:
            changes["expense_category"] = self._ref(
                "expense_categories", p["expense_category_id"], "Expense category", ("id", "name")
            )
        for f in ("total_cost", "units"):
            if f in p:
                changes[f] = _money(p[f], f)
        for f in ("notes", "receipt"):
            if f in p:
                changes[f] = p[f]
        if p.get("delete_receipt") is not None and _bool(p["delete_receipt"], "delete_receipt"):
            changes["receipt"] = None
        if "billable" in p:
            changes["billable"] = _bool(p["billable"], "billable")
        if "spent_date" in p:
            changes["spent_date"] = _date(p["spent_date"], "spent_date", required=True)
        return self._update("expenses", rid, body, changes)

    # ------------------------------------------------------------------ invoices

    def _next_invoice_number(self, fallback: int) -> str:
        """Harvest numbers invoices on from the latest one (``202600017`` -> ``202600018``)."""
        for row in self.store.scan_rows("invoices", order="seq", descending=True, limit=1):
            number = str(row.data().get("number") or "")
            if number.isdigit():
                return str(int(number) + 1).zfill(len(number))
        return str(fallback)

    def create_invoice(self, p: dict[str, Any], creator: dict[str, Any] | None) -> dict[str, Any]:
        """POST /v2/invoices: always a new invoice (Harvest has no idempotency key).

        Free-form ``line_items`` and/or ``line_items_import`` (the client's uninvoiced billable
        time and expenses of ``project_ids`` in the ``from``/``to`` spent_date window, summed
        per ``summary_type``; each imported item becomes ``is_billed`` with ``invoice {id,
        number}`` and locked "invoiced"). Undocumented keys are ignored (the app notes them)."""
        _require(p, "client_id")
        client = self._client_ref(p["client_id"])
        items_in = p.get("line_items") or []
        if not isinstance(items_in, list):
            raise Unprocessable("line_items must be an array")
        imported_lines, to_mark, windows = self._line_items_import(client, p)
        tax = _money(p.get("tax"), "tax")
        tax2 = _money(p.get("tax2"), "tax2")
        discount = _money(p.get("discount"), "discount")
        rid, now = self._new("invoices")
        items: list[dict[str, Any]] = []
        subtotal = taxable = taxable2 = Decimal(0)
        cents = Decimal("0.01")
        for n, item in enumerate([*items_in, *imported_lines], start=1):
            if not isinstance(item, dict):
                raise Unprocessable("line_items must be objects")
            _require(item, "kind")
            qty = _money(item.get("quantity", 1), "quantity") or Decimal(0)
            price = _money(item.get("unit_price"), "unit_price") or Decimal(0)
            amount = (qty * price).quantize(cents)
            project = item.get("project")
            if project is None and item.get("project_id") is not None:
                proj = self._existing_ref("projects", item["project_id"], "Project")
                project = {"id": proj["id"], "name": proj["name"], "code": proj.get("code")}
            taxed, taxed2 = bool(item.get("taxed", False)), bool(item.get("taxed2", False))
            subtotal += amount
            taxable += amount if taxed else 0
            taxable2 += amount if taxed2 else 0
            items.append(
                {
                    "id": rid * 1000 + n,
                    "kind": item["kind"],
                    "description": item.get("description"),
                    "quantity": qty,
                    "unit_price": price,
                    "amount": amount,
                    "taxed": taxed,
                    "taxed2": taxed2,
                    "project": project,
                }
            )
        discount_amount = subtotal * (discount or 0) / 100
        tax_amount = taxable * (tax or 0) / 100
        tax2_amount = taxable2 * (tax2 or 0) / 100
        amount = subtotal - discount_amount + tax_amount + tax2_amount
        issue = _date(p.get("issue_date"), "issue_date") or now[:10]
        due = _date(p.get("due_date"), "due_date")
        term = p.get("payment_term")
        if due is None:
            days = {"upon receipt": 0, "net 15": 15, "net 30": 30, "net 45": 45, "net 60": 60}
            due_days = days.get(str(term or "upon receipt").lower(), 0)
            due = (dt.date.fromisoformat(issue) + dt.timedelta(days=due_days)).isoformat()
        number = str(p.get("number") or self._next_invoice_number(rid))
        body = {
            "id": rid,
            "client_key": f"{rid:040x}",
            "number": number,
            "purchase_order": p.get("purchase_order"),
            "amount": amount.quantize(cents),
            "due_amount": amount.quantize(cents),
            "tax": tax,
            "tax_amount": tax_amount.quantize(cents),
            "tax2": tax2,
            "tax2_amount": tax2_amount.quantize(cents),
            "discount": discount,
            "discount_amount": discount_amount.quantize(cents),
            "subject": p.get("subject"),
            "notes": p.get("notes"),
            "currency": p.get("currency") or client.get("currency"),
            "state": "draft",
            "period_start": windows[0],
            "period_end": windows[1],
            "issue_date": issue,
            "due_date": due,
            "payment_term": term or "custom",
            "payment_options": p.get("payment_options") or [],
            "sent_at": None,
            "paid_at": None,
            "paid_date": None,
            "closed_at": None,
            "recurring_invoice_id": None,
            "created_at": now,
            "updated_at": now,
            "client": {"id": client["id"], "name": client["name"]},
            "estimate": None,
            "retainer": None,
            "creator": creator,
            "line_items": items,
        }
        invoice = self._put("invoices", rid, body)
        ref = {"id": rid, "number": number}
        for resource, item in to_mark:
            self._update(resource, int(item["id"]), item, self._invoiced(resource, item, ref))
        return invoice

    @staticmethod
    def _invoiced(resource: str, item: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
        if resource == "expenses":
            reason = EXPENSE_INVOICED
        else:
            reason = TIME_INVOICED_AND_CLOSED if item.get("is_closed") else TIME_INVOICED
        return {"is_billed": True, "invoice": dict(ref), "is_locked": True, "locked_reason": reason}

    @staticmethod
    def _window(part: dict[str, Any], name: str) -> tuple[str | None, str | None]:
        start = _date(part.get("from"), f"{name} from")
        end = _date(part.get("to"), f"{name} to")
        if (start is None) != (end is None):
            raise Unprocessable(f"{name}: from and to must be given together")
        return start, end

    def _line_items_import(
        self, client: dict[str, Any], p: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]], tuple[Any, Any]]:
        """The imported line items, the items they bill and the time window (period)."""
        imp = p.get("line_items_import")
        if imp is None:
            return [], [], (None, None)
        if not isinstance(imp, dict):
            raise Unprocessable("line_items_import must be an object")
        ids = imp.get("project_ids")
        if not isinstance(ids, list) or not ids:
            raise Unprocessable("Project ids can't be blank")
        projects = []
        for pid in ids:
            project = self._existing_ref("projects", pid, "Project")
            if (project.get("client") or {}).get("id") != client["id"]:
                raise Unprocessable(f"Project {pid} does not belong to the client")
            projects.append(project)
        lines: list[dict[str, Any]] = []
        marks: list[tuple[str, dict[str, Any]]] = []
        period: tuple[Any, Any] = (None, None)
        for part, resource, types in (
            ("time", "time_entries", TIME_SUMMARY_TYPES),
            ("expenses", "expenses", EXPENSE_SUMMARY_TYPES),
        ):
            spec = imp.get(part)
            if spec is None:
                continue
            if not isinstance(spec, dict):
                raise Unprocessable(f"{part} must be an object")
            summary = spec.get("summary_type")
            if summary not in types:
                raise Unprocessable(f"{part} summary_type must be one of {', '.join(types)}")
            start, end = self._window(spec, part)
            if part == "time":
                period = (start, end)
            chosen = []
            for project in projects:
                for row in self.store.scan_rows(resource, where={"project.id": project["id"]}):
                    item = row.data()
                    spent = str(item.get("spent_date") or "")
                    if not item.get("billable") or item.get("is_billed"):
                        continue
                    if start is not None and not (start <= spent <= str(end)):
                        continue
                    chosen.append(item)
            chosen.sort(key=lambda i: (str(i.get("spent_date")), int(i["id"])))
            lines.extend(_summarize(part, summary, chosen))
            marks.extend((resource, item) for item in chosen)
        return lines, marks, period

    def delete_invoice(self, rid: int) -> None:
        """DELETE /v2/invoices/{id}: the invoice goes, and the time and expenses it imported are
        uninvoiced again (unlocked, unless approved)."""
        self._existing("invoices", rid)
        for resource in ("time_entries", "expenses"):
            for row in self.store.scan_rows(resource, where={"invoice.id": rid}):
                item = row.data()
                closed = bool(item.get("is_closed"))
                reason = TIME_CLOSED if resource == "time_entries" else item.get("locked_reason")
                self._update(
                    resource,
                    int(item["id"]),
                    item,
                    {
                        "is_billed": False,
                        "invoice": None,
                        "is_locked": closed,
                        "locked_reason": reason if closed else None,
                    },
                )
        self.store.delete("invoices", rid)


def _ref_label(item: dict[str, Any]) -> str:
    project = item.get("project") or {}
    code = project.get("code")
    return f"[{code}] {project.get('name')}" if code else str(project.get("name"))


def _summarize(part: str, summary: str, chosen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Harvest's imported line items: one per group of ``summary_type`` (and, for time, per
    billable rate within it), quantity = hours (time) or 1 (expenses)."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in chosen:
        project = item.get("project") or {}
        if part == "time":
            rate = Decimal(str(item.get("billable_rate") or 0))
            hours = Decimal(str(item.get("rounded_hours") or item.get("hours") or 0))
            sub = {
                "project": (),
                "task": ((item.get("task") or {}).get("id"),),
                "people": ((item.get("user") or {}).get("id"),),
                "detailed": (item["id"],),
            }[summary]
            key = (project.get("id"), *sub, rate)
            label = {
                "project": _ref_label(item),
                "task": f"{_ref_label(item)}: {(item.get('task') or {}).get('name')}",
                "people": f"{_ref_label(item)}: {(item.get('user') or {}).get('name')}",
                "detailed": f"{_ref_label(item)}: {(item.get('task') or {}).get('name')}"
                f" ({item.get('spent_date')})" + (f" {item['notes']}" if item.get("notes") else ""),
            }[summary]
            group = groups.setdefault(
                key,
                {
                    "kind": "Service",
                    "description": label,
                    "quantity": Decimal(0),
                    "unit_price": rate,
                    "project": {
                        "id": project.get("id"),
                        "name": project.get("name"),
                        "code": project.get("code"),
                    },
                },
            )
            group["quantity"] += hours
        else:
            cost = Decimal(str(item.get("total_cost") or 0))
            sub = {
                "project": (),
                "category": ((item.get("expense_category") or {}).get("id"),),
                "people": ((item.get("user") or {}).get("id"),),
                "detailed": (item["id"],),
            }[summary]
            key = (project.get("id"), *sub)
            category = (item.get("expense_category") or {}).get("name")
            label = {
                "project": f"{_ref_label(item)}: expenses",
                "category": f"{_ref_label(item)}: {category}",
                "people": f"{_ref_label(item)}: {(item.get('user') or {}).get('name')}",
                "detailed": f"{_ref_label(item)}: {category}"
                f" ({item.get('spent_date')})" + (f" {item['notes']}" if item.get("notes") else ""),
            }[summary]
            group = groups.setdefault(
                key,
                {
                    "kind": "Product",
                    "description": label,
                    "quantity": Decimal(1),
                    "unit_price": Decimal(0),
                    "project": {
                        "id": project.get("id"),
                        "name": project.get("name"),
                        "code": project.get("code"),
                    },
                },
            )
            group["unit_price"] += cost
    return list(groups.values())
