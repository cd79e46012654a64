"""Simulated business time passing: :func:`advance` moves the firm on by business days.

For each step it makes the changes a real firm would make (see :func:`advance`) and moves the
:class:`~erpsync_sandbox.clock.BusinessClock` on. Every change lands in the shared change log
(``GET /__admin/changes``).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.crm.countries import label_for as country_label
from erpsync_sandbox.generator.ids import sf_id, valid_vat
from erpsync_sandbox.store import change_source, to_iso

__all__ = ["advance"]


# --------------------------------------------------------------------------- advance

_ADVANCE_NOTES = (
    "Stakeholder interviews",
    "Design review",
    "Status report",
    "Testing support",
    "Workshop follow-up",
    "Data migration checks",
)


def _next_business_day(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _harvest(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sf(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


class _Day:
    """Hands out strictly increasing business timestamps within one simulated day."""

    def __init__(self, day: dt.date, rng: random.Random) -> None:
        self.day = day
        self.rng = rng
        self.t = dt.datetime(day.year, day.month, day.day, 8, 0, tzinfo=dt.UTC)

    def tick(self) -> dt.datetime:
        self.t += dt.timedelta(
            seconds=self.rng.randint(5, 90), milliseconds=self.rng.randint(0, 999)
        )
        return self.t


def _raised_rates(raw: Any) -> Any:
    """A change order's contracted rates: each person's latest rate 5 % higher (to the cent),
    without an ``effective_from`` of its own (the change order's date applies). Unreadable
    JSON is kept."""
    if not raw:
        return raw
    try:
        items = json.loads(raw)
    except (TypeError, ValueError):
        return raw
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return raw
    latest: dict[str, dict[str, Any]] = {}
    for item in sorted(items, key=lambda i: str(i.get("effective_from") or "")):
        latest[str(item.get("user_email") or "").lower()] = item
    out = []
    for item in latest.values():
        item = {k: v for k, v in item.items() if k != "effective_from"}
        try:
            rate = Decimal(str(item.get("rate")))
        except ArithmeticError:
            return raw
        item["rate"] = str((rate * Decimal("1.05")).quantize(Decimal("0.01"), ROUND_HALF_UP))
        out.append(item)
    return json.dumps(out)


def advance(ctx: SandboxContext, steps: int, seed: int) -> list[dict[str, Any]]:
    """Simulate ``steps`` business days of the firm, starting the day after the clock's date.

    Each step (one business day, all changes timestamped inside it, clock left at 18:00):

    * PSA: new time entries and expenses for the day; unapproved entries (``is_closed``
      false: Harvest has no approval status, approval is ``is_closed`` via Timesheet Approval)
      older than two days approved; a few recent unapproved entries edited and one
      hard-deleted; an expense approved.
    * CRM: a new account with a closed-won opportunity not yet set up; a contract amendment
      (``Contract_Version__c`` + 1 with a new ``Amount``, if capped a higher cap, contracted
      rates 5 % higher, effective the next day: ``Change_Effective_Date__c``, so the day's own
      work keeps the old rates); an open
      opportunity soft-deleted (``IsDeleted``; shows in ``queryAll`` and the deleted feed); a
      planned contract milestone whose due date has passed accepted by the client
      (``Contract_Milestone__c.Status__c = Accepted``, ``Accepted_Date__c``; Harvest has no
      milestones).
    * ERP: once per firm, a country's standard tax rate changes (old rate gets ``validTo``,
      new effective-dated rate added).

    Deterministic for a given state, ``steps`` and ``seed``. Returns the change-log entries made.
    """
    steps = max(0, int(steps))
    with ctx.lock:
        first_seq = ctx.changes.last_seq()
        token = change_source.set("advance")
        try:
            day = ctx.clock.now_dt().date()
            for _ in range(steps):
                day = _next_business_day(day)
                rng = random.Random(f"{seed}:advance:{day.isoformat()}")  # noqa: S311
                clock = _Day(day, rng)
                _advance_psa(ctx, clock, rng)
                _advance_crm(ctx, clock, rng)
                _advance_erp(ctx, clock, rng)
                ctx.clock.set(dt.datetime(day.year, day.month, day.day, 18, 0, tzinfo=dt.UTC))
        finally:
            change_source.reset(token)
        return ctx.changes.since(first_seq)


def _advance_psa(ctx: SandboxContext, clock: _Day, rng: random.Random) -> None:
    psa = ctx.stores["psa"]
    day = clock.day
    projects = {int(r.id): r.data() for r in psa.scan_rows("projects", where={"is_active": True})}
    users = {int(r.id): r.data() for r in psa.scan_rows("users", where={"is_active": True})}
    rates: dict[int, list[dict[str, Any]]] = {}
    for r in psa.scan_rows("billable_rates"):
        rates.setdefault(int(r.parent_id or 0), []).append(r.data())
    costs: dict[int, list[dict[str, Any]]] = {}
    for r in psa.scan_rows("cost_rates"):
        costs.setdefault(int(r.parent_id or 0), []).append(r.data())
    tasks: dict[int, list[dict[str, Any]]] = {}
    for r in psa.scan_rows("task_assignments"):
        tasks.setdefault(int(r.parent_id or 0), []).append(r.data())
    assignments: dict[int, list[dict[str, Any]]] = {}
    for r in psa.scan_rows("user_assignments"):
        ua = r.data()
        proj = projects.get(int(r.parent_id or 0))
        if proj is None or not ua.get("is_active"):
            continue
        if proj.get("ends_on") and proj["ends_on"] < day.isoformat():
            continue
        assignments.setdefault(ua["user"]["id"], []).append(ua)

    def rate_at(table: dict[int, list[dict[str, Any]]], uid: int) -> Any:
        for rate in table.get(uid, []):
            if rate["start_date"] <= day.isoformat() and (
                rate["end_date"] is None or day.isoformat() <= rate["end_date"]
            ):
                return rate["amount"]
        return None

    # new time entries: a sample of people (only those with a rate, so no new problems)
    people = sorted(uid for uid in users if uid in assignments and rate_at(rates, uid) is not None)
    sample = rng.sample(people, k=min(len(people), rng.randint(8, 16)))
    for uid in sample:
        used: set[tuple[int, int]] = set()
        for _ in range(rng.randint(1, 2)):
            ua = rng.choice(assignments[uid])
            proj = projects[ua["project"]["id"]]
            ta = rng.choice(tasks.get(proj["id"], []) or [None])
            if ta is None or (proj["id"], ta["task"]["id"]) in used:
                continue
            used.add((proj["id"], ta["task"]["id"]))
            billable = bool(proj["is_billable"] and ta["billable"])
            rate = ua.get("hourly_rate") or rate_at(rates, uid) if billable else None
            hours = rng.choice([0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
            moment = clock.tick()
            tid = psa.next_int_id("time_entries")
            psa.put(
                "time_entries",
                tid,
                {
                    "id": tid,
                    "spent_date": day.isoformat(),
                    "hours": hours,
                    "hours_without_timer": hours,
                    "rounded_hours": hours,
                    "notes": rng.choice(_ADVANCE_NOTES),
                    "is_locked": False,
                    "locked_reason": None,
                    "is_closed": False,
                    "is_billed": False,
                    "is_running": False,
                    "timer_started_at": None,
                    "started_time": None,
                    "ended_time": None,
                    "billable": billable,
                    "budgeted": True,
                    "billable_rate": rate,
                    "cost_rate": rate_at(costs, uid),
                    "created_at": _harvest(moment),
                    "user": {"id": uid, "name": ua["user"]["name"]},
                    # Harvest's time entry: client and project are {id, name}
                    "client": {"id": proj["client"]["id"], "name": proj["client"]["name"]},
                    "project": {"id": proj["id"], "name": proj["name"]},
                    "task": {"id": ta["task"]["id"], "name": ta["task"]["name"]},
                    "user_assignment": {"id": ua["id"]},
                    "task_assignment": {"id": ta["id"]},
                    "invoice": None,
                    "external_reference": None,
                },
                modstamp=to_iso(moment),
            )
    # unapproved entries older than two days -> approved (is_closed, locked)
    approve_before = (day - dt.timedelta(days=2)).isoformat()
    for row in psa.scan_rows(
        "time_entries",
        where={"is_closed": False},
        conditions=[("spent_date", "<", approve_before)],
        order="seq",
        limit=40,
    ):
        body = row.data()
        body.update(
            {
                "is_closed": True,
                "is_locked": True,
                "locked_reason": "Approved timesheet",
            }
        )
        psa.put("time_entries", row.id, body, modstamp=to_iso(clock.tick()))
    unapproved = psa.scan_rows(
        "time_entries",
        where={"is_closed": False},
        conditions=[("spent_date", "<", day.isoformat())],
        order="seq",
        limit=60,
    )
    if unapproved:
        victim = unapproved[rng.randrange(len(unapproved))]
        psa.delete("time_entries", victim.id, modstamp=to_iso(clock.tick()))
        for row in unapproved[:3]:
            if row.id == victim.id:
                continue
            body = row.data()
            body["hours"] = body["rounded_hours"] = body["hours_without_timer"] = (
                float(body["hours"]) + 0.5
            )
            body["notes"] = (body.get("notes") or "") + " (updated)"
            psa.put("time_entries", row.id, body, modstamp=to_iso(clock.tick()))
    # expenses: one new, one approved
    if sample:
        uid = sample[0]
        ua = assignments[uid][0]
        proj = projects[ua["project"]["id"]]
        cats = psa.scan("expense_categories", where={"name": "Meals"})
        cat = cats[0] if cats else {"id": 0, "name": "Meals"}
        moment = clock.tick()
        eid = psa.next_int_id("expenses")
        total = round(rng.randint(12, 55) + rng.randint(0, 99) / 100, 2)
        if (proj.get("client") or {}).get("currency") == "JPY":
            total = float(int(total * 162))
        psa.put(
            "expenses",
            eid,
            {
                "id": eid,
                "spent_date": day.isoformat(),
                "notes": "Meals - client site",
                "total_cost": total,
                "units": 1,
                "is_closed": False,
                "is_locked": False,
                "is_billed": False,
                "locked_reason": None,
                "billable": bool(proj["is_billable"]),
                "receipt": {
                    "url": f"https://sandbox.invalid/receipts/{eid}.pdf",
                    "file_name": f"receipt-{eid}.pdf",
                    "file_size": 24000,
                    "content_type": "application/pdf",
                },
                "user": {"id": uid, "name": ua["user"]["name"]},
                "user_assignment": {"id": ua["id"]},
                "project": {"id": proj["id"], "name": proj["name"], "code": proj["code"]},
                "expense_category": {
                    "id": cat["id"],
                    "name": cat["name"],
                    "unit_price": cat.get("unit_price"),
                    "unit_name": cat.get("unit_name"),
                },
                # Harvest's expense: client {id, name, currency}, project {id, name, code}
                "client": proj["client"],
                "invoice": None,
                "created_at": _harvest(moment),
            },
            modstamp=to_iso(moment),
        )
    for row in psa.scan_rows(
        "expenses",
        where={"is_closed": False},
        conditions=[("spent_date", "<", approve_before)],
        order="seq",
        limit=5,
    ):
        body = row.data()
        body.update({"is_closed": True, "is_locked": True})
        psa.put("expenses", row.id, body, modstamp=to_iso(clock.tick()))


def _advance_crm(ctx: SandboxContext, clock: _Day, rng: random.Random) -> None:
    crm = ctx.stores["crm"]
    day = clock.day
    n = int(crm.meta_get("advance_seq", 900000)) + 1
    crm.meta_set("advance_seq", n + 1)
    owners = crm.ids("User") or [""]
    country, currency, city = rng.choice(
        [
            ("NL", "EUR", "Utrecht"),
            ("DE", "EUR", "Hamburg"),
            ("US", "USD", "Boston"),
            ("GB", "GBP", "Manchester"),
        ]
    )
    acc_id = sf_id("001", n)
    moment = clock.tick()
    vat = valid_vat(country, rng) if country != "US" else None
    crm.put(
        "Account",
        acc_id,
        {
            "Id": acc_id,
            "Name": f"Advance Client {n} {'B.V.' if country == 'NL' else 'Ltd'}",
            "AccountNumber": f"ACC-{n}",
            "Type": "Customer - Direct",
            "Industry": rng.choice(["Energy", "Retail", "Technology"]),
            "BillingStreet": f"{rng.randint(1, 99)} Harbour Street",
            "BillingCity": city,
            "BillingPostalCode": f"{rng.randint(1000, 9999)}",
            "BillingCountry": country_label(country),
            "BillingCountryCode": country,
            "CurrencyIsoCode": currency,
            "Payment_Terms__c": "Net 30",
            "VAT_Id__c": vat,
            "Tax_Exempt__c": False,
            "Tax_Exemption_Reason__c": None,
            "Reverse_Charge__c": country == "DE",
            "PO_Required__c": False,
            "ERP_Customer_No__c": None,
            "OwnerId": owners[n % len(owners)],
            "IsDeleted": False,
            "CreatedDate": _sf(moment),
            "LastModifiedDate": _sf(moment),
        },
        modstamp=to_iso(moment),
    )
    opp_id = sf_id("006", n)
    moment = clock.tick()
    start = day + dt.timedelta(days=14)
    amount = rng.randint(40, 200) * 1000
    crm.put(
        "Opportunity",
        opp_id,
        {
            "Id": opp_id,
            "Name": f"Advance Client {n} engagement",
            "AccountId": acc_id,
            "StageName": "Closed Won",
            "Amount": amount,
            "CloseDate": day.isoformat(),
            "Probability": 100,
            "IsClosed": True,
            "IsWon": True,
            "Type": "New Business",
            "OwnerId": owners[n % len(owners)],
            "CurrencyIsoCode": currency,
            "Billing_Model__c": "Time and Materials",
            "Contract_Start__c": start.isoformat(),
            "Contract_End__c": (start + dt.timedelta(days=180)).isoformat(),
            "PO_Number__c": None,
            "Cap_Type__c": None,
            "Cap_Value__c": None,
            "Rate_Overrides__c": None,
            "Retainer_Amount__c": None,
            "Retainer_Period__c": None,
            "Contract_Version__c": 1,
            "Change_Effective_Date__c": None,
            "PSA_Project_Id__c": None,
            "Expense_Markup_Pct__c": 0,
            "IsDeleted": False,
            "CreatedDate": _sf(moment),
            "LastModifiedDate": _sf(moment),
        },
        modstamp=to_iso(moment),
    )
    # contract amendment on a set-up contract
    setup = crm.scan_rows(
        "Opportunity",
        conditions=[("IsWon", "=", True), ("PSA_Project_Id__c", "!=", None)],
        order="id",
    )
    if setup:
        row = setup[rng.randrange(len(setup))]
        body = row.data()
        moment = clock.tick()
        body["Contract_Version__c"] = int(body.get("Contract_Version__c") or 1) + 1
        if body.get("Amount") is not None:
            body["Amount"] = round(float(body["Amount"]) * 1.1, 2)
        if body.get("Cap_Value__c") is not None:
            body["Cap_Value__c"] = round(float(body["Cap_Value__c"]) * 1.2, 2)
        body["Change_Effective_Date__c"] = (day + dt.timedelta(days=1)).isoformat()
        body["Rate_Overrides__c"] = _raised_rates(body.get("Rate_Overrides__c"))
        body["LastModifiedDate"] = _sf(moment)
        crm.put("Opportunity", row.id, body, modstamp=to_iso(moment))
    # an open opportunity is deleted (soft: Salesforce recycle bin)
    open_opps = crm.scan_rows("Opportunity", where={"IsClosed": False}, order="id")
    if open_opps:
        victim = open_opps[rng.randrange(len(open_opps))]
        crm.delete(
            "Opportunity",
            victim.id,
            soft=True,
            set_fields={"IsDeleted": True},
            modstamp=to_iso(clock.tick()),
        )
    # a contract milestone accepted by the client (in the CRM, where milestones live)
    due = crm.scan_rows(
        "Contract_Milestone__c",
        conditions=[("Status__c", "=", "Planned"), ("Due_Date__c", "<=", day.isoformat())],
        order="seq",
        limit=1,
    )
    if due:
        body = due[0].data()
        moment = clock.tick()
        body.update(
            {
                "Status__c": "Accepted",
                "Accepted_Date__c": day.isoformat(),
                "LastModifiedDate": _sf(moment),
            }
        )
        crm.put(
            "Contract_Milestone__c",
            due[0].id,
            body,
            modstamp=to_iso(moment),
            parent_id=due[0].parent_id,
        )


def _advance_erp(ctx: SandboxContext, clock: _Day, rng: random.Random) -> None:
    """Once: the finance team raises the domestic reduced VAT rate in VAT Posting Setup (the
    page keeps no history; erpsync's warehouse dates the change when its sync sees it)."""
    del rng
    erp = ctx.stores["erp"]
    if erp.meta_get("advance_tax_change_done"):
        return
    key = "DOMESTIC|REDUCED"
    current = erp.get("vatPostingSetup", key)
    if current is None:
        return
    current["VAT_Percent"] = 10
    current["VAT_Identifier"] = "VAT10"
    erp.put("vatPostingSetup", key, current, modstamp=to_iso(clock.tick()), stamp_field=None)
    erp.meta_set("advance_tax_change_done", True)
