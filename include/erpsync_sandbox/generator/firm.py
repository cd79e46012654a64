"""Generate the sandbox firm into the CRM, PSA and ERP stores, plus its problem manifest.

The firm ("Meridian Advisory B.V.", home country NL, functional currency EUR) is what erpsync
meets on day one: CRM accounts with tax profiles and closed-won opportunities (some already set
up by hand in the PSA and ERP, some not), PSA users with effective-dated rate cards, projects
with tasks and assignments and months of time and expenses (older months billed and
locked), ERP tax groups and effective-dated tax rates, customers, projects, employees and the
posted invoices for the billed months.

Everything derives from ``random.Random`` streams seeded with ``f"{seed}:<topic>"`` and from
fixed business dates, never from wall time, so the same seed gives byte-identical stores and
manifest. Bulk records (time entries, expenses) are streamed into ``Store.put_many``.

Planted problems are listed in the manifest (``{kind, system, resource, id, detail, refs}``);
the regular data is built so that it contains none of them by accident.
Field shapes: docs/reference/vendor-apis.md and the sandbox contract.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from erpsync_sandbox.context import SandboxContext, write_info
from erpsync_sandbox.crm.countries import label_for as country_label
from erpsync_sandbox.generator.ids import guid, invalid_vat, sf_id, valid_vat
from erpsync_sandbox.store import Store, dumps, to_iso

GENERATOR_VERSION = 1
UTC = dt.UTC

FIRM = {"name": "Meridian Advisory B.V.", "country": "NL", "currency": "EUR"}
CLOCK_START = dt.datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

#: Decimals per currency (ISO 4217 minor units).
DECIMALS = {"EUR": 2, "USD": 2, "GBP": 2, "JPY": 0, "KWD": 3}
#: Fixed sandbox FX (units of currency per EUR) used to price non-EUR contracts.
FX = {
    "EUR": Decimal("1"),
    "USD": Decimal("1.08"),
    "GBP": Decimal("0.86"),
    "JPY": Decimal("162"),
    "KWD": Decimal("0.332"),
}

#: (country, currency, region, city, weight)
COUNTRIES = [
    ("NL", "EUR", "domestic", "Amsterdam", 6),
    ("DE", "EUR", "eu", "Berlin", 4),
    ("FR", "EUR", "eu", "Paris", 3),
    ("BE", "EUR", "eu", "Brussels", 2),
    ("AT", "EUR", "eu", "Vienna", 1),
    ("IT", "EUR", "eu", "Milan", 1),
    ("IE", "EUR", "eu", "Dublin", 1),
    ("DK", "EUR", "eu", "Copenhagen", 1),
    ("GB", "GBP", "uk", "London", 3),
    ("US", "USD", "export", "New York", 4),
    ("JP", "JPY", "export", "Tokyo", 1),
    ("KW", "KWD", "export", "Kuwait City", 1),
]

#: Standard VAT rates by period, for the generated invoice history (the firm is Dutch: NL is
#: the one the ERP's VAT Posting Setup holds, at its current rate). BE has a sandbox rate
#: change inside the history window.
STANDARD_RATES: dict[str, list[tuple[str, str | None, str]]] = {
    "NL": [("2012-10-01", None, "21")],
    "DE": [("2021-01-01", None, "19")],
    "FR": [("2014-01-01", None, "20")],
    "BE": [("1996-01-01", "2026-08-31", "21"), ("2026-09-01", None, "22")],
    "AT": [("2016-01-01", None, "20")],
    "IT": [("2013-10-01", None, "22")],
    "IE": [("2021-03-01", None, "23")],
    "DK": [("1992-01-01", None, "25")],
    "GB": [("2011-01-04", None, "20")],
}

TAX_GROUPS = [  # VAT Product Posting Groups (taxGroups)
    ("STANDARD", "Standard VAT", "VAT"),
    ("REDUCED", "Reduced VAT", "VAT"),
    ("REVERSE", "EU reverse charge (0%)", "VAT"),
    ("EXEMPT", "Exempt supply (0%)", "VAT"),
    ("EXPORT", "Outside scope / export (0%)", "VAT"),
]

#: VAT Business Posting Groups (taxAreas): code, description.
TAX_AREAS = [
    ("DOMESTIC", "Domestic customers"),
    ("EU", "Customers in the EU (reverse charge)"),
    ("EXPORT", "Customers outside the EU"),
]

#: VAT Posting Setup (page 472): bus. group, prod. group, VAT %, calculation type.
VAT_POSTING_SETUP = [
    ("DOMESTIC", "STANDARD", "21", "Normal VAT"),
    ("DOMESTIC", "REDUCED", "9", "Normal VAT"),
    ("DOMESTIC", "EXEMPT", "0", "Normal VAT"),
    ("EU", "REVERSE", "0", "Reverse Charge VAT"),
    ("EU", "EXEMPT", "0", "Normal VAT"),
    ("EXPORT", "EXPORT", "0", "Normal VAT"),
    ("EXPORT", "EXEMPT", "0", "Normal VAT"),
]

#: Payment Terms: code, description, due date formula.
PAYMENT_TERMS = [
    ("0 DAYS", "Due on receipt", "0D"),
    ("14 DAYS", "Net 14 days", "14D"),
    ("30 DAYS", "Net 30 days", "30D"),
    ("45 DAYS", "Net 45 days", "45D"),
    ("60 DAYS", "Net 60 days", "60D"),
]

#: The blank GUID Business Central shows for an unset relation.
NO_ID = "00000000-0000-0000-0000-000000000000"

#: Chart of accounts served as ``accounts`` (API v2.0 account: number, displayName, category,
#: subCategory, accountType, directPosting, blocked). Invoice lines post fees to 8000 and
#: rebilled expenses to 8100 (the pack's default ``ERPSYNC_BC_REVENUE_ACCOUNT``); receivables
#: and VAT are posted through posting groups only (Direct Posting off); 8090 is an old fee
#: account kept blocked.
#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_account
ACCOUNTS = [
    ("1300", "Trade receivables", "Assets", "Accounts Receivable", "Posting", False, False),
    ("1600", "VAT payable", "Liabilities", "Current Liabilities", "Posting", False, False),
    ("4400", "Travel and lodging", "Expense", "Travel Expenses", "Posting", True, False),
    ("7999", "REVENUE", "Income", "", "Heading", False, False),
    ("8000", "Consulting fees", "Income", "Income, Services", "Posting", True, False),
    ("8090", "Consulting fees (before 2024)", "Income", "Income, Services", "Posting", True, True),
    ("8100", "Rebilled expenses", "Income", "Income, Services", "Posting", True, False),
]

#: Units of Measure served as ``unitsOfMeasure``: code, description, UNECE Rec 20 code, symbol.
#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_unitofmeasure
UNITS_OF_MEASURE = [
    ("DAY", "Day", "DAY", "d"),
    ("HOUR", "Hour", "HUR", "h"),
    ("KM", "Kilometer", "KMT", "km"),
    ("PCS", "Piece", "H87", "pcs"),
]

ROLES = [  # role, base EUR rate, cost rate, weight
    ("Partner", 320, 140, 1),
    ("Manager", 230, 95, 3),
    ("Senior Consultant", 175, 70, 5),
    ("Consultant", 135, 55, 7),
    ("Analyst", 95, 40, 4),
]

TASKS = [  # name, billable
    ("Advisory", True),
    ("Analysis", True),
    ("Implementation", True),
    ("Project Management", True),
    ("Workshops", True),
    ("Documentation", True),
    ("Internal Meetings", False),
    ("Travel Time", False),
]

EXPENSE_CATEGORIES = [  # name, unit_name, unit_price(EUR) or None, policy limit per unit (EUR)
    ("Airfare", None, None, Decimal("1200")),
    ("Hotel", "night", None, Decimal("250")),
    ("Meals", None, None, Decimal("60")),
    ("Taxi & Transit", None, None, Decimal("120")),
    ("Mileage", "km", Decimal("0.23"), Decimal("0.23")),
    ("Software & Subscriptions", None, None, Decimal("500")),
]
RECEIPT_THRESHOLD_EUR = Decimal("75")

FIRST = (
    "Anna Ben Carla Daan Eva Finn Greta Hugo Ines Jonas Katrin Lars Mila Noah Olga Pieter "
    "Quinn Rosa Sven Tess Umar Vera Wim Xenia Yara Zeno Amir Bo Chloe Dirk Elif Femke Gijs "
    "Hana Ivo Julia Koen Lotte Mats Nina Omar Pia Ruben Saar Tim Uma Victor Wout"
).split()
LAST = (
    "Jansen de-Vries Bakker Visser Smit Meijer de-Boer Mulder de-Groot Bos Vos Peters Hendriks "
    "van-Dijk Dekker Brouwer Schouten Kramer Muller Schneider Fischer Weber Martin Bernard "
    "Rossi Russo Murphy Kelly Hansen Nielsen Nowak Kowalski Smith Jones Taylor Brown Tanaka "
    "Sato Al-Sabah Haddad Garcia Lopez"
).split()
COMPANY_A = (
    "Northwind Bluefield Copperleaf Driftwood Evergreen Falcon Granite Harbor Ironwood "
    "Juniper Keystone Lighthouse Meridian Nimbus Oakridge Pinnacle Quarry Riverstone Summit "
    "Tidewater Upland Vantage Willow Zephyr Aurora Beacon Cascade Delta Ember Frontier"
).split()
COMPANY_B = (
    "Logistics Foods Energy Health Retail Bank Insurance Media Telecom Pharma Robotics "
    "Shipping Textiles Analytics Capital Foundation Chemicals Aerospace Mining Software"
).split()
SUFFIX = {
    "NL": "B.V.",
    "DE": "GmbH",
    "FR": "SAS",
    "BE": "NV",
    "AT": "GmbH",
    "IT": "S.p.A.",
    "IE": "Ltd",
    "DK": "A/S",
    "GB": "Ltd",
    "US": "Inc.",
    "JP": "K.K.",
    "KW": "K.S.C.C.",
}
INDUSTRIES = ["Banking", "Energy", "Healthcare", "Manufacturing", "Retail", "Technology"]
NOTES = [
    "Stakeholder interviews",
    "Requirements workshop",
    "Data model review",
    "Steering committee prep",
    "Process mapping",
    "Status report",
    "Solution design",
    "Testing support",
    "Vendor assessment",
    "Training session",
    "Backlog refinement",
    "Cut-over planning",
]


@dataclass(frozen=True)
class Size:
    accounts: int
    users: int
    start: dt.date
    per_day: tuple[int, ...]  # entries per user-day, chosen uniformly
    expense_p: float
    problems: int  # planted problems per kind


SIZES: dict[str, Size] = {
    "small": Size(30, 24, dt.date(2026, 8, 3), (1, 2, 2, 3), 0.10, 2),
    "medium": Size(300, 200, dt.date(2026, 5, 1), (2, 3, 3, 4), 0.25, 4),
    "large": Size(3000, 2000, dt.date(2026, 5, 1), (4, 4, 5), 0.40, 8),
}
HISTORY_END = dt.date(2026, 10, 30)
BILLED_THROUGH = dt.date(2026, 9, 30)  # months up to here are invoiced
#: a contracted rate that changes mid-month (effective-dated Rate_Overrides__c element)
RATE_STEP_DAY = dt.date(2026, 10, 15)


# --------------------------------------------------------------------------- helpers


def money(value: Decimal | float | int, currency: str) -> Decimal:
    q = Decimal(1).scaleb(-DECIMALS[currency])
    return Decimal(str(value)).quantize(q, rounding=ROUND_HALF_UP)


def convert(eur: Decimal, currency: str) -> Decimal:
    return money(Decimal(eur) * FX[currency], currency)


def ts_harvest(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_sf(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def ts_bc(moment: dt.datetime) -> str:
    return to_iso(moment)


def at(day: dt.date, hour: int, minute: int = 0, second: int = 0, ms: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, ms * 1000, tzinfo=UTC)


def workdays(start: dt.date, end: dt.date) -> list[dt.date]:
    out = []
    d = start
    while d <= end:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def month_end(day: dt.date) -> dt.date:
    nxt = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return nxt - dt.timedelta(days=1)


def slug(name: str) -> str:
    return "".join(ch for ch in name.lower().replace(" ", ".") if ch.isalnum() or ch == ".")


# --------------------------------------------------------------------------- model


@dataclass
class Person:
    id: int
    first: str
    last: str
    email: str
    role: str
    rates: list[tuple[dt.date, dt.date | None, Decimal]]  # billable (EUR)
    costs: list[tuple[dt.date, dt.date | None, Decimal]]
    contractor: bool = False
    projects: list[int] = field(default_factory=list)
    employee_no: str = ""

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    def rate_at(self, day: dt.date) -> Decimal | None:
        for start, end, amount in self.rates:
            if start <= day and (end is None or day <= end):
                return amount
        return None

    def cost_at(self, day: dt.date) -> Decimal | None:
        for start, end, amount in self.costs:
            if start <= day and (end is None or day <= end):
                return amount
        return None


@dataclass
class Client:
    n: int
    sf_id: str
    name: str
    country: str
    currency: str
    region: str
    city: str
    vat: str | None
    exempt: bool
    po_required: bool
    psa_id: int | None = None
    erp_no: str | None = None
    erp_id: str | None = None


@dataclass
class Project:
    id: int
    code: str
    name: str
    client: Client
    opp_id: str
    model: str  # T&M | Fixed Fee | Retainer | Internal
    currency: str
    starts: dt.date
    ends: dt.date | None
    active: bool
    team: list[int]
    assign_rate: dict[int, Decimal | None]  # user id -> hourly_rate in project currency
    ua_ids: dict[int, int]
    tasks: list[tuple[int, int, str, bool]]  # (task id, task assignment id, name, billable)
    billable: bool = True
    contract_currency: str = ""
    overrides: list[dict[str, str]] = field(default_factory=list)
    #: user id -> (first day, old rate, new rate): a contracted rate that steps up mid-month
    #: (a dated Rate_Overrides__c element; the PSA stamps the rate in force on each entry)
    rate_steps: dict[int, tuple[dt.date, Decimal, Decimal]] = field(default_factory=dict)
    cap_type: str | None = None
    over_cap: bool = False
    hours: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    erp_id: str | None = None
    #: the Harvest client the project belongs to, {id, name, currency} (set when written)
    psa_client: dict[str, Any] = field(default_factory=dict)

    def active_on(self, day: dt.date) -> bool:
        return self.starts <= day and (self.ends is None or day <= self.ends)


class Manifest:
    def __init__(self) -> None:
        self.problems: list[dict[str, Any]] = []

    def add(self, kind: str, system: str, resource: str, id: Any, detail: str, **refs: Any) -> None:
        entry: dict[str, Any] = {
            "kind": kind,
            "system": system,
            "resource": resource,
            "id": str(id),
            "detail": detail,
        }
        if refs:
            entry["refs"] = {k: str(v) for k, v in refs.items()}
        self.problems.append(entry)


# --------------------------------------------------------------------------- generator


class FirmGenerator:
    """Builds the firm; ``run()`` writes the stores and returns the manifest dict."""

    def __init__(self, stores: dict[str, Store], *, size: str, seed: int) -> None:
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
        self.stores = stores
        self.size_name = size
        self.size = SIZES[size]
        self.seed = seed
        self.manifest = Manifest()
        self.days = workdays(self.size.start, HISTORY_END)
        self.counters: dict[str, int] = {}
        self.people: list[Person] = []
        self.clients: list[Client] = []
        self.projects: list[Project] = []
        self.task_ids: dict[str, int] = {}
        self.category_ids: dict[str, int] = {}
        self.category_refs: dict[str, dict[str, Any]] = {}
        self.sales_ids: list[str] = []
        self.company_id = ""
        self.tax_area_ids: dict[str, str] = {}
        self.payment_terms_ids: dict[str, str] = {}
        self.account_ids: dict[str, str] = {}
        self.unit_ids: dict[str, str] = {}
        self.opportunities: list[dict[str, Any]] = []
        self.invoices: dict[tuple[int, str], dict[str, Any]] = {}
        self.dup_candidates: list[dict[str, Any]] = []

    def rng(self, topic: str) -> random.Random:
        return random.Random(f"{self.seed}:{topic}")  # noqa: S311 - reproducible test data

    def next_id(self, kind: str, start: int) -> int:
        n = self.counters.get(kind, start - 1) + 1
        self.counters[kind] = n
        return n

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        self.gen_reference()
        self.gen_people()
        self.gen_clients()
        self.gen_projects()
        self.gen_time_entries()
        self.gen_expenses()
        self.plant_time_problems()
        self.gen_invoices()
        self.gen_opportunities()
        return self.build_manifest()

    # ------------------------------------------------------------------ reference data

    def gen_reference(self) -> None:
        rng = self.rng("reference")
        erp, psa = self.stores["erp"], self.stores["psa"]
        stamp = at(dt.date(2024, 1, 2), 8)
        self.company_id = guid(rng)
        erp.put(
            "companies",
            self.company_id,
            {
                "id": self.company_id,
                "systemVersion": "25.0.23364.0",
                "name": "MERIDIAN",
                "displayName": FIRM["name"],
                "businessProfileId": "",
                "systemCreatedAt": ts_bc(stamp),
                "systemCreatedBy": "00000000-0000-0000-0000-000000000001",
                "systemModifiedAt": ts_bc(stamp),
                "systemModifiedBy": "00000000-0000-0000-0000-000000000001",
            },
            modstamp=to_iso(stamp),
            stamp_field=None,
            log=False,
        )
        erp.meta_set("company_id", self.company_id)
        erp.meta_set("company_name", FIRM["name"])
        rows = []
        for code, name, kind in TAX_GROUPS:
            gid = guid(rng)
            body = {"id": gid, "code": code, "displayName": name, "taxType": kind}
            rows.append((gid, body, to_iso(stamp), None))
        erp.put_many("taxGroups", rows)
        rows = []
        for code, name in TAX_AREAS:
            aid = guid(rng)
            self.tax_area_ids[code] = aid
            body = {"id": aid, "code": code, "displayName": name, "taxType": "VAT"}
            rows.append((aid, body, to_iso(stamp), None))
        erp.put_many("taxAreas", rows)
        rows = []
        for code, name, formula in PAYMENT_TERMS:
            tid = guid(rng)
            self.payment_terms_ids[code] = tid
            body = {
                "id": tid,
                "code": code,
                "displayName": name,
                "dueDateCalculation": formula,
                "discountDateCalculation": "",
                "discountPercent": Decimal(0),
                "calculateDiscountOnCreditMemos": False,
            }
            rows.append((tid, body, to_iso(stamp), None))
        erp.put_many("paymentTerms", rows)
        rows = []
        for bus, prod, pct, calc in VAT_POSTING_SETUP:
            key = f"{bus}|{prod}"
            body = {
                "VAT_Bus_Posting_Group": bus,
                "VAT_Prod_Posting_Group": prod,
                "Description": "",
                "Blocked": False,
                "VAT_Identifier": prod if pct == "0" else f"VAT{pct}",
                "VAT_Percent": Decimal(pct),
                "VAT_Calculation_Type": calc,
            }
            rows.append((key, body, to_iso(stamp), None))
        erp.put_many("vatPostingSetup", rows, stamp_field=None)
        self.gen_accounts_and_units(stamp)

        rows = []
        for i, (name, billable) in enumerate(TASKS):
            tid = 8000001 + i
            self.task_ids[name] = tid
            body = {
                "id": tid,
                "name": name,
                "billable_by_default": billable,
                "default_hourly_rate": None,
                "is_default": billable,
                "is_active": True,
                "created_at": ts_harvest(stamp),
            }
            rows.append((tid, body, to_iso(stamp), None))
        psa.put_many("tasks", rows)
        rows = []
        for i, (name, unit, unit_price, _limit) in enumerate(EXPENSE_CATEGORIES):
            cid = 4100001 + i
            self.category_ids[name] = cid
            self.category_refs[name] = {
                "id": cid,
                "name": name,
                "unit_price": unit_price,
                "unit_name": unit,
            }
            body = {
                "id": cid,
                "name": name,
                "unit_name": unit,
                "unit_price": unit_price,
                "is_active": True,
                "created_at": ts_harvest(stamp),
                "updated_at": ts_harvest(stamp),
            }
            rows.append((cid, body, to_iso(stamp), None))
        psa.put_many("expense_categories", rows)

    # ------------------------------------------------------------------ people

    def gen_people(self) -> None:
        rng = self.rng("people")
        psa, erp, crm = self.stores["psa"], self.stores["erp"], self.stores["crm"]
        size = self.size
        weights = [w for *_, w in ROLES]
        users, brates, crates, employees = [], [], [], []
        used_emails: set[str] = set()
        raise_day = dt.date(2026, 9, 1) if size.start < dt.date(2026, 9, 1) else None
        for i in range(size.users):
            uid = 3100001 + i
            first, last = rng.choice(FIRST), rng.choice(LAST).replace("-", " ")
            email = f"{slug(first)}.{slug(last)}@meridian-advisory.example"
            k = 2
            while email in used_emails:
                email = f"{slug(first)}.{slug(last)}{k}@meridian-advisory.example"
                k += 1
            used_emails.add(email)
            role, base, cost, _w = rng.choices(ROLES, weights=weights)[0]
            base_rate = Decimal(base + rng.choice((-10, -5, 0, 5, 10)))
            start = dt.date(2025, 1, 1)
            if raise_day is not None and rng.random() < 0.3:
                new = money(base_rate * Decimal("1.06"), "EUR")
                rates = [
                    (start, raise_day - dt.timedelta(days=1), base_rate),
                    (raise_day, None, new),
                ]
            else:
                rates = [(start, None, base_rate)]
            costs = [(start, None, Decimal(cost))]
            p = Person(uid, first, last, email, role, rates, costs)
            p.employee_no = f"E{1001 + i:05d}"
            self.people.append(p)
        # Planted: a contractor with no rate card at all, and a new hire whose rate starts late.
        for j, (first, last, rates) in enumerate(
            [
                ("Cas", "Contractor", []),
                ("Nora", "Newhire", [(dt.date(2026, 10, 19), None, Decimal("120"))]),
            ]
        ):
            uid = 3100001 + size.users + j
            p = Person(
                uid,
                first,
                last,
                f"{slug(first)}.{slug(last)}@meridian-advisory.example",
                "Consultant",
                rates,
                [(dt.date(2025, 1, 1), None, Decimal("60"))],
                contractor=(j == 0),
            )
            p.employee_no = f"E{1001 + size.users + j:05d}"
            self.people.append(p)
        self.planted_people = self.people[-2:]

        for p in self.people:
            created = at(dt.date(2025, 1, 2), 9, p.id % 60)
            updated = created
            users.append(
                (
                    p.id,
                    {
                        "id": p.id,
                        "first_name": p.first,
                        "last_name": p.last,
                        "email": p.email,
                        "telephone": "",
                        "timezone": "Europe/Amsterdam",
                        "has_access_to_all_future_projects": False,
                        "is_contractor": p.contractor,
                        "is_active": True,
                        "weekly_capacity": 144000,
                        "default_hourly_rate": p.rates[-1][2] if p.rates else None,
                        "cost_rate": p.costs[-1][2],
                        "roles": [p.role],
                        "access_roles": ["member"],
                        "created_at": ts_harvest(created),
                        "updated_at": ts_harvest(updated),
                    },
                    to_iso(updated),
                    None,
                )
            )
            for start, end, amount in p.rates:
                rid = self.next_id("billable_rate", 5200001)
                mod = at(start, 8) if start > dt.date(2025, 1, 1) else created
                if end is not None:
                    mod = at(dt.date(2026, 8, 20), 10)
                mod = min(mod, at(dt.date(2026, 10, 15), 9))
                brates.append(
                    (
                        rid,
                        {
                            "id": rid,
                            "amount": amount,
                            "start_date": start.isoformat(),
                            "end_date": None if end is None else end.isoformat(),
                            "created_at": ts_harvest(mod),
                            "updated_at": ts_harvest(mod),
                        },
                        to_iso(mod),
                        p.id,
                    )
                )
            for start, end, amount in p.costs:
                rid = self.next_id("cost_rate", 5300001)
                crates.append(
                    (
                        rid,
                        {
                            "id": rid,
                            "amount": amount,
                            "start_date": start.isoformat(),
                            "end_date": None if end is None else end.isoformat(),
                            "created_at": ts_harvest(created),
                            "updated_at": ts_harvest(created),
                        },
                        to_iso(created),
                        p.id,
                    )
                )
            eid = guid(rng)
            employees.append(
                (
                    eid,
                    {
                        "id": eid,
                        "number": p.employee_no,
                        "displayName": p.name,
                        "givenName": p.first,
                        "middleName": "",
                        "surname": p.last,
                        "jobTitle": p.role,
                        "email": p.email,
                        "personalEmail": "",
                        "phoneNumber": "",
                        "mobilePhone": "",
                        "status": "Active",
                        "employmentDate": "2025-01-01",
                        "terminationDate": None,
                    },
                    to_iso(created),
                    None,
                )
            )
        psa.put_many("users", users)
        psa.put_many("billable_rates", brates)
        psa.put_many("cost_rates", crates)
        erp.put_many("employees", employees)

        sales = []
        for i in range(max(3, size.accounts // 40)):
            sid = sf_id("005", i + 1)
            self.sales_ids.append(sid)
            first, last = rng.choice(FIRST), rng.choice(LAST).replace("-", " ")
            created = at(dt.date(2024, 3, 1), 9, i % 60)
            sales.append(
                (
                    sid,
                    {
                        "Id": sid,
                        "Username": f"{slug(first)}.{slug(last)}.{i}@meridian-advisory.example",
                        "Name": f"{first} {last}",
                        "FirstName": first,
                        "LastName": last,
                        "Email": f"{slug(first)}.{slug(last)}@meridian-advisory.example",
                        "IsActive": True,
                        "Title": "Account Executive",
                        "CreatedDate": ts_sf(created),
                        "LastModifiedDate": ts_sf(created),
                        "IsDeleted": False,
                    },
                    to_iso(created),
                    None,
                )
            )
        crm.put_many("User", sales)

    # ------------------------------------------------------------------ clients / accounts

    def gen_clients(self) -> None:
        rng = self.rng("clients")
        n = self.size.accounts
        weights = [c[4] for c in COUNTRIES]
        names: set[str] = set()
        # Planted indices (distinct, chosen deterministically).
        k = self.size.problems
        for i in range(n):
            country, currency, region, city, _w = rng.choices(COUNTRIES, weights=weights)[0]
            if i < 5:  # make sure every currency appears even in the small firm
                country, currency, region, city, _w = [
                    COUNTRIES[0],
                    COUNTRIES[8],
                    COUNTRIES[9],
                    COUNTRIES[10],
                    COUNTRIES[11],
                ][i]
            while True:
                base = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)}"
                if base not in names:
                    break
                base = f"{base} {rng.randint(2, 99)}"
                if base not in names:
                    break
            names.add(base)
            name = f"{base} {SUFFIX[country]}"
            vat = valid_vat(country, rng) if region in ("domestic", "eu", "uk") else None
            exempt = region in ("domestic", "eu") and rng.random() < 0.06
            c = Client(
                n=i,
                sf_id=sf_id("001", i + 1),
                name=name,
                country=country,
                currency=currency,
                region=region,
                city=city,
                vat=vat,
                exempt=exempt,
                po_required=rng.random() < 0.25,
            )
            self.clients.append(c)
        # guaranteed exempt clients, then planted invalid VAT ids on EU clients
        eu = [c for c in self.clients if c.region in ("domestic", "eu")]
        for c in eu[-2:]:
            c.exempt = True
        planted = [c for c in eu if not c.exempt][1 : 1 + k]
        for c in planted:
            c.vat = invalid_vat(c.country, rng)
            self.manifest.add(
                "invalid_vat_id",
                "crm",
                "Account",
                c.sf_id,
                f"VAT_Id__c {c.vat} fails the {c.country} check digit",
            )

    def account_body(self, c: Client, created: dt.datetime) -> dict[str, Any]:
        rng = self.rng(f"account:{c.n}")
        reverse = c.region == "eu" and not c.exempt
        return {
            "Id": c.sf_id,
            "Name": c.name,
            "AccountNumber": f"ACC-{10001 + c.n}",
            "Type": "Customer" if c.psa_id else "Customer - Direct",
            "Industry": rng.choice(INDUSTRIES),
            "BillingStreet": f"{rng.randint(1, 250)} {rng.choice(COMPANY_A)} Street",
            "BillingCity": c.city,
            "BillingPostalCode": f"{rng.randint(1000, 9999)}",
            # a State and Country/Territory Picklists org: the ISO code and its label
            "BillingCountry": country_label(c.country),
            "BillingCountryCode": c.country,
            "CurrencyIsoCode": c.currency,
            "Payment_Terms__c": rng.choice(["Net 30", "Net 30", "Net 14", "Net 45"]),
            "VAT_Id__c": c.vat,
            "Tax_Exempt__c": c.exempt,
            "Tax_Exemption_Reason__c": (
                rng.choice(["Charity", "Government body", "Diplomatic mission"])
                if c.exempt
                else None
            ),
            "Reverse_Charge__c": reverse,
            "PO_Required__c": c.po_required,
            "ERP_Customer_No__c": c.erp_no,
            "OwnerId": self.sales_ids[c.n % len(self.sales_ids)],
            "IsDeleted": False,
            "CreatedDate": ts_sf(created),
            "LastModifiedDate": ts_sf(created),
        }

    # ------------------------------------------------------------------ projects

    def gen_projects(self) -> None:
        """Decide engagements: set-up projects (PSA + ERP) and not-yet-set-up contracts."""
        rng = self.rng("projects")
        psa, erp = self.stores["psa"], self.stores["erp"]
        size = self.size
        billable_people = [p for p in self.people if p not in self.planted_people]
        task_names = [t for t, b in TASKS if b]
        seq = 0
        pending: list[tuple[Client, dict[str, Any]]] = []
        for c in self.clients:
            n_setup = rng.choices([0, 1, 1, 2, 3], k=1)[0] if c.n >= 5 else 1
            for _ in range(n_setup):
                seq += 1
                model = rng.choices(["T&M", "Fixed Fee", "Retainer"], weights=[6, 3, 1])[0]
                starts = size.start - dt.timedelta(days=rng.randint(0, 120))
                ends: dt.date | None = None
                active = True
                roll = rng.random()
                if roll < 0.15:
                    starts = rng.choice(self.days[: len(self.days) // 2])
                if roll > 0.93:  # finished during the history window: closed project
                    ends = rng.choice(self.days[len(self.days) // 3 : 2 * len(self.days) // 3])
                    active = False
                team = rng.sample(billable_people, k=min(len(billable_people), rng.randint(2, 6)))
                pid = 6400001 + seq
                proj = Project(
                    id=pid,
                    code=f"PRJ-{10000 + seq}",
                    name=f"{c.name.split()[0]} {rng.choice(['Transformation', 'Finance Ops', 'Data Platform', 'ERP Rollout', 'Strategy', 'Compliance', 'Integration'])} {seq}",  # noqa: E501
                    client=c,
                    opp_id=sf_id("006", seq),
                    model=model,
                    currency=c.currency,
                    contract_currency=c.currency,
                    starts=starts,
                    ends=ends,
                    active=active,
                    team=[p.id for p in team],
                    assign_rate={},
                    ua_ids={},
                    tasks=[],
                )
                names = rng.sample(task_names, k=rng.randint(3, 5)) + ["Internal Meetings"]
                for tname in names:
                    ta = self.next_id("task_assignment", 7100001)
                    proj.tasks.append((self.task_ids[tname], ta, tname, tname in task_names))
                override_some = c.currency == "EUR" and model == "T&M" and rng.random() < 0.4
                for p in team:
                    proj.ua_ids[p.id] = self.next_id("user_assignment", 7200001)
                    if c.currency != "EUR":
                        proj.assign_rate[p.id] = convert(p.rates[-1][2], c.currency)
                    elif override_some and rng.random() < 0.5:
                        proj.assign_rate[p.id] = p.rates[-1][2] - 10
                    else:
                        proj.assign_rate[p.id] = None
                    if proj.assign_rate[p.id] is not None and model == "T&M":
                        proj.overrides.append(
                            {
                                "user_email": p.email,
                                "role": p.role,
                                "rate": str(proj.assign_rate[p.id]),
                            }
                        )
                    p.projects.append(pid)
                if model == "T&M" and rng.random() < 0.3:
                    proj.cap_type = rng.choice(["Hours", "Amount"])
                self.projects.append(proj)
            if c.n >= 5 and rng.random() < 0.18 or (self.size_name == "small" and c.n in (5, 6)):
                pending.append((c, {}))
        self.pending_clients = pending
        # internal (non-billable) project every user can book to
        seq += 1
        internal_client = Client(
            n=-1,
            sf_id="",
            name=FIRM["name"],
            country="NL",
            currency="EUR",
            region="domestic",
            city="Amsterdam",
            vat=None,
            exempt=False,
            po_required=False,
        )
        internal = Project(
            id=6400001 + seq,
            code="INT-0001",
            name="Internal - Admin & Bench",
            client=internal_client,
            opp_id="",
            model="Internal",
            currency="EUR",
            starts=dt.date(2025, 1, 1),
            ends=None,
            active=True,
            team=[p.id for p in self.people],
            assign_rate={p.id: None for p in self.people},
            ua_ids={},
            tasks=[],
            billable=False,
        )
        for tname in ("Internal Meetings", "Documentation"):
            ta = self.next_id("task_assignment", 7100001)
            internal.tasks.append((self.task_ids[tname], ta, tname, False))
        for p in self.people:
            internal.ua_ids[p.id] = self.next_id("user_assignment", 7200001)
        self.internal = internal

        # planted: rate differs from contract / currency differs from contract
        k = size.problems
        tm_override = [p for p in self.projects if p.model == "T&M" and p.overrides and p.active]
        for proj in tm_override[:k]:
            ov = proj.overrides[0]
            uid = next(p.id for p in self.people if p.email == ov["user_email"])
            contract = Decimal(ov["rate"])
            proj.assign_rate[uid] = contract - 15
            self.manifest.add(
                "rate_differs_from_contract",
                "psa",
                "user_assignments",
                proj.ua_ids[uid],
                f"contract rate {contract} {proj.currency} for {ov['user_email']}, PSA "
                f"assignment hourly_rate {contract - 15}",
                opportunity=proj.opp_id,
                project=proj.id,
            )
        eur_plain = [
            p
            for p in self.projects
            if p.currency == "EUR" and p.model == "T&M" and not p.overrides and p.active
        ]
        for proj in eur_plain[-k:]:
            proj.currency = "USD"
            proj.contract_currency = "EUR"
            for uid in proj.team:
                person = self.person(uid)
                proj.assign_rate[uid] = convert(person.rates[-1][2], "USD")
            self.manifest.add(
                "currency_differs_from_contract",
                "psa",
                "projects",
                proj.id,
                "contract currency EUR, PSA project currency USD",
                opportunity=proj.opp_id,
            )
        # a contracted rate effective mid-month (not a problem: work before the 15th is billed at
        # the old rate, from the 15th at the new one; Harvest's assignment shows the new rate)
        for proj in [
            p
            for p in tm_override[k:]
            if p.starts < RATE_STEP_DAY and (p.ends is None or p.ends > RATE_STEP_DAY)
        ][:1]:
            ov = proj.overrides[0]
            uid = next(p.id for p in self.people if p.email == ov["user_email"])
            old = Decimal(ov["rate"])
            new = old + Decimal("12.50")
            proj.overrides.append(
                {**ov, "rate": str(new), "effective_from": RATE_STEP_DAY.isoformat()}
            )
            proj.rate_steps[uid] = (RATE_STEP_DAY, old, new)
            proj.assign_rate[uid] = new
        # planted over-cap: hours-capped active T&M projects
        capped = [p for p in self.projects if p.cap_type == "Hours" and p.active]
        for proj in capped[:k]:
            proj.over_cap = True

        # write PSA clients, ERP customers, CRM accounts
        self.write_clients_and_projects(psa, erp)

    def person(self, uid: int) -> Person:
        return self.people[uid - 3100001]

    def write_clients_and_projects(self, psa: Store, erp: Store) -> None:
        rng = self.rng("write-projects")
        crm = self.stores["crm"]
        setup_clients = {p.client.n for p in self.projects}
        clients, customers, accounts, contacts = [], [], [], []
        for c in self.clients:
            created = at(dt.date(2024, 1, 15) + dt.timedelta(days=c.n % 500), 10, c.n % 60)
            if c.n in setup_clients:
                c.psa_id = 5100001 + c.n
                c.erp_no = f"C{10010 + c.n * 10:05d}"
                c.erp_id = guid(rng)
                clients.append(
                    (
                        c.psa_id,
                        {
                            "id": c.psa_id,
                            "name": c.name,
                            "is_active": True,
                            "address": f"{c.city}, {c.country}",
                            "statement_key": f"{rng.getrandbits(64):016x}",
                            "currency": c.currency,
                            "created_at": ts_harvest(created),
                            "updated_at": ts_harvest(created),
                        },
                        to_iso(created),
                        None,
                    )
                )
                tax_area = {"domestic": "DOMESTIC", "eu": "EU", "uk": "EXPORT"}.get(
                    c.region, "EXPORT"
                )
                customers.append(
                    (
                        c.erp_id,
                        {
                            "id": c.erp_id,
                            "number": c.erp_no,
                            "displayName": c.name,
                            "type": "Company",
                            "addressLine1": f"{rng.randint(1, 250)} Main Street",
                            "addressLine2": "",
                            "city": c.city,
                            "state": "",
                            "country": c.country,
                            "postalCode": f"{rng.randint(1000, 9999)}",
                            "phoneNumber": "",
                            "email": f"ap@{slug(c.name.split()[0])}.example",
                            "website": "",
                            "taxLiable": not c.exempt,
                            "taxAreaId": self.tax_area_ids[tax_area],
                            "taxAreaDisplayName": dict(TAX_AREAS)[tax_area],
                            "taxRegistrationNumber": c.vat or "",
                            "currencyId": "00000000-0000-0000-0000-000000000000",
                            "currencyCode": c.currency,
                            "paymentTermsId": self.payment_terms_ids["30 DAYS"],
                            "shipmentMethodId": "00000000-0000-0000-0000-000000000000",
                            "paymentMethodId": "00000000-0000-0000-0000-000000000000",
                            "blocked": " ",
                        },
                        to_iso(created + dt.timedelta(hours=2)),
                        None,
                    )
                )
            mod = created + dt.timedelta(days=30, seconds=c.n)
            accounts.append((c.sf_id, self.account_body(c, created), to_iso(mod), None))
            for j in range(1 + c.n % 2):
                cid = sf_id("003", c.n * 2 + j + 1)
                first, last = rng.choice(FIRST), rng.choice(LAST).replace("-", " ")
                contacts.append(
                    (
                        cid,
                        {
                            "Id": cid,
                            "AccountId": c.sf_id,
                            "FirstName": first,
                            "LastName": last,
                            "Name": f"{first} {last}",
                            "Email": f"{slug(first)}.{slug(last)}@{slug(c.name.split()[0])}.example",  # noqa: E501
                            "Title": rng.choice(["CFO", "Finance Manager", "Project Sponsor"]),
                            "Phone": "",
                            "IsDeleted": False,
                            "CreatedDate": ts_sf(created),
                            "LastModifiedDate": ts_sf(created),
                        },
                        to_iso(created),
                        c.sf_id,
                    )
                )
        # A Harvest project bills in its client's currency (it has none of its own): a project
        # planted to bill in another currency than its contract belongs to a second Harvest
        # client of the same customer in that currency, as a firm sets one up in Harvest.
        for k, proj in enumerate(p for p in self.projects if p.currency != p.client.currency):
            c = proj.client
            created = at(dt.date(2024, 1, 15) + dt.timedelta(days=c.n % 500), 11, c.n % 60)
            pid = 5109001 + k
            proj.psa_client = {"id": pid, "name": f"{c.name} ({proj.currency})"}
            clients.append(
                (
                    pid,
                    {
                        "id": pid,
                        "name": proj.psa_client["name"],
                        "is_active": True,
                        "address": f"{c.city}, {c.country}",
                        "statement_key": f"{rng.getrandbits(64):016x}",
                        "currency": proj.currency,
                        "created_at": ts_harvest(created),
                        "updated_at": ts_harvest(created),
                    },
                    to_iso(created),
                    None,
                )
            )
        # the firm itself, the client of its internal project (Harvest projects need a client);
        # no random draw here, so the rest of the firm stays as it was
        internal_created = at(dt.date(2024, 12, 20), 11)
        clients.append(
            (
                5100000,
                {
                    "id": 5100000,
                    "name": FIRM["name"],
                    "is_active": True,
                    "address": "Amsterdam, NL",
                    "statement_key": "0000000000000000",
                    "currency": "EUR",
                    "created_at": ts_harvest(internal_created),
                    "updated_at": ts_harvest(internal_created),
                },
                to_iso(internal_created),
                None,
            )
        )
        psa.put_many("clients", clients)
        erp.put_many("customers", customers)
        crm.put_many("Account", accounts)
        crm.put_many("Contact", contacts)

        projects, tas, uas, erp_projects = [], [], [], []
        self.milestone_plan: dict[int, list[dict[str, Any]]] = {}
        for proj in [*self.projects, self.internal]:
            c = proj.client
            created = at(proj.starts - dt.timedelta(days=3), 11, proj.id % 60)
            created = min(created, at(dt.date(2026, 10, 28), 11))
            mod = created
            if not proj.active and proj.ends is not None:
                mod = at(proj.ends + dt.timedelta(days=2), 16)
            # a Harvest project has no currency: it bills in its client's
            client_ref = {"id": c.psa_id or 5100000, "name": c.name, "currency": c.currency}
            if proj.psa_client:  # planted: a second Harvest client in another currency
                client_ref = {**proj.psa_client, "currency": proj.currency}
            if proj.model == "Internal":
                client_ref = {"id": 5100000, "name": FIRM["name"], "currency": "EUR"}
            proj.psa_client = client_ref
            proj.amount_estimate = Decimal(rng.randint(20, 400) * 1000)  # type: ignore[attr-defined]
            fee = money(proj.amount_estimate * FX[proj.currency], proj.currency)  # type: ignore[attr-defined]
            body = {
                "id": proj.id,
                "name": proj.name,
                "code": proj.code,
                "client": client_ref,
                "is_active": proj.active,
                "is_billable": proj.billable,
                "is_fixed_fee": proj.model == "Fixed Fee",
                "bill_by": "People" if proj.model == "T&M" else "none",
                "budget": None,
                "budget_by": "none",
                "fee": fee if proj.model == "Fixed Fee" else None,
                "hourly_rate": None,
                "cost_budget": None,
                "notes": "" if proj.model == "Internal" else f"Contract {proj.opp_id}",
                "starts_on": proj.starts.isoformat(),
                "ends_on": None if proj.ends is None else proj.ends.isoformat(),
                "created_at": ts_harvest(created),
                "updated_at": ts_harvest(mod),
            }
            projects.append((proj.id, body, to_iso(mod), None))
            for tid, ta, tname, billable in proj.tasks:
                tas.append(
                    (
                        ta,
                        {
                            "id": ta,
                            "billable": billable and proj.billable,
                            "is_active": True,
                            "hourly_rate": None,
                            "budget": None,
                            "project": {"id": proj.id, "name": proj.name, "code": proj.code},
                            "task": {"id": tid, "name": tname},
                            "created_at": ts_harvest(created),
                            "updated_at": ts_harvest(created),
                        },
                        to_iso(created),
                        proj.id,
                    )
                )
            for uid in proj.team:
                person = self.person(uid)
                uas.append(
                    (
                        proj.ua_ids[uid],
                        {
                            "id": proj.ua_ids[uid],
                            "is_project_manager": uid == proj.team[0],
                            "is_active": True,
                            "use_default_rates": proj.assign_rate.get(uid) is None,
                            "hourly_rate": proj.assign_rate.get(uid),
                            "budget": None,
                            "project": {"id": proj.id, "name": proj.name, "code": proj.code},
                            "user": {"id": uid, "name": person.name},
                            "created_at": ts_harvest(created),
                            "updated_at": ts_harvest(created),
                        },
                        to_iso(created),
                        proj.id,
                    )
                )
            if proj.model != "Internal":
                proj.erp_id = guid(rng)
                erp_projects.append(
                    (
                        proj.erp_id,
                        {"id": proj.erp_id, "number": proj.code, "displayName": proj.name},
                        to_iso(created + dt.timedelta(hours=1)),
                        None,
                    )
                )
            if proj.model == "Fixed Fee":
                plan = []
                parts = rng.randint(2, 4)
                share = money(fee / parts, proj.currency)
                for m in range(parts):
                    amount = share if m < parts - 1 else fee - share * (parts - 1)
                    due = proj.starts + dt.timedelta(days=45 * (m + 1))
                    plan.append({"name": f"Milestone {m + 1}", "amount": amount, "due_date": due})
                for m in plan:
                    accepted = m["due_date"] <= dt.date(2026, 10, 23) and rng.random() < 0.8
                    accepted_at = (
                        at(m["due_date"] + dt.timedelta(days=rng.randint(0, 6)), 14, 5)
                        if accepted
                        else None
                    )
                    if accepted_at is not None and accepted_at >= CLOCK_START:
                        accepted_at = at(dt.date(2026, 10, 30), 15)
                    m["accepted_at"] = accepted_at
                    m["created"] = created
                self.milestone_plan[proj.id] = plan
        psa.put_many("projects", projects)
        psa.put_many("task_assignments", tas)
        psa.put_many("user_assignments", uas)
        erp.put_many("projects", erp_projects)

    # ------------------------------------------------------------------ time entries

    def approval(self, rng: random.Random, day: dt.date) -> str:
        age = (CLOCK_START.date() - day).days
        if age > 17:
            return "approved"
        if age > 10:
            return "approved" if rng.random() < 0.8 else "submitted"
        r = rng.random()
        return "approved" if r < 0.2 else ("submitted" if r < 0.7 else "unsubmitted")

    def invoice_for(self, proj: Project, day: dt.date) -> dict[str, Any] | None:
        if proj.model != "T&M" or day > BILLED_THROUGH:
            return None
        key = (proj.id, day.strftime("%Y-%m"))
        inv = self.invoices.get(key)
        if inv is None:
            iid = self.next_id("invoice", 1300001)
            inv = {
                "id": iid,
                "number": f"{2026}{iid - 1300000:05d}",
                "project": proj,
                "month": month_end(day),
                "hours": Decimal(0),
                "amount": Decimal(0),
                "expenses": Decimal(0),
            }
            self.invoices[key] = inv
        return inv

    def entry_body(
        self,
        tid: int,
        p: Person,
        proj: Project,
        task: tuple[int, int, str, bool],
        day: dt.date,
        hours: float,
        notes: str,
        status: str,
        rng: random.Random,
        *,
        rate_override: Decimal | None | bool = False,
    ) -> tuple[dict[str, Any], dt.datetime]:
        billable = proj.billable and task[3]
        if rate_override is not False:
            rate = rate_override
        elif p.id in proj.rate_steps:
            since, old, new = proj.rate_steps[p.id]
            rate = new if day >= since else old
        else:
            rate = proj.assign_rate.get(p.id)
            if rate is None and billable:
                rate = p.rate_at(day)
        rate = rate if billable else None
        inv = self.invoice_for(proj, day) if (billable and status == "approved") else None
        created = at(day, 16 + rng.randint(0, 3), rng.randint(0, 59), rng.randint(0, 59))
        if inv is not None:
            updated = at(inv["month"] + dt.timedelta(days=3), 9, 30)
            inv["hours"] += Decimal(str(hours))
            inv["amount"] += money(Decimal(str(hours)) * rate, proj.currency)  # type: ignore[operator]
        elif status == "approved":
            updated = min(
                at(day + dt.timedelta(days=7 - day.weekday()), 10, rng.randint(0, 59)),
                at(dt.date(2026, 11, 1), 18),
            )
        else:
            updated = created
        if status == "approved" and billable:
            proj.hours += Decimal(str(hours))
            if rate is not None:
                proj.amount += Decimal(str(hours)) * rate
        body = {
            "id": tid,
            "spent_date": day.isoformat(),
            "hours": hours,
            "hours_without_timer": hours,
            "rounded_hours": hours,
            "notes": notes,
            "is_locked": status == "approved",
            "locked_reason": (
                "Item Invoiced"
                if inv is not None
                else ("Approved timesheet" if status == "approved" else None)
            ),
            # Harvest has no approval status: approval is is_closed (Timesheet Approval)
            "is_closed": status == "approved",
            "is_billed": inv is not None,
            "is_running": False,
            "timer_started_at": None,
            "started_time": None,
            "ended_time": None,
            "billable": billable,
            "budgeted": proj.model != "Internal",
            "billable_rate": rate,
            "cost_rate": p.cost_at(day),
            "created_at": ts_harvest(created),
            "updated_at": ts_harvest(updated),
            "user": {"id": p.id, "name": p.name},
            # Harvest's time entry: client and project are {id, name}
            "client": {"id": proj.psa_client["id"], "name": proj.psa_client["name"]},
            "project": {"id": proj.id, "name": proj.name},
            "task": {"id": task[0], "name": task[2]},
            "user_assignment": {"id": proj.ua_ids[p.id]},
            "task_assignment": {"id": task[1]},
            "invoice": None if inv is None else {"id": inv["id"], "number": inv["number"]},
            "external_reference": None,
        }
        return body, updated

    def gen_time_entries(self) -> None:
        self.stores["psa"].put_many("time_entries", self._time_rows())

    def _time_rows(self) -> Iterator[tuple[int, dict[str, Any], str, None]]:
        rng = self.rng("time")
        projects = {p.id: p for p in self.projects}
        regular = [p for p in self.people if p not in self.planted_people]
        per_day = self.size.per_day
        hour_choices = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
        for day in self.days:
            for p in regular:
                if rng.random() < 0.04:  # leave / sick
                    continue
                active = [projects[i] for i in p.projects if projects[i].active_on(day)]
                if not active:
                    active = [self.internal]
                n = rng.choice(per_day)
                used: set[tuple[int, int]] = set()
                for _ in range(n):
                    proj = (
                        active[rng.randrange(len(active))] if rng.random() < 0.92 else self.internal
                    )
                    task = proj.tasks[rng.randrange(len(proj.tasks))]
                    if (proj.id, task[0]) in used:
                        continue
                    used.add((proj.id, task[0]))
                    tid = self.next_id("time_entry", 2_000_000_001)
                    status = self.approval(rng, day)
                    body, updated = self.entry_body(
                        tid,
                        p,
                        proj,
                        task,
                        day,
                        hour_choices[rng.randrange(len(hour_choices))],
                        NOTES[rng.randrange(len(NOTES))],
                        status,
                        rng,
                    )
                    if (
                        len(self.dup_candidates) < self.size.problems
                        and body["billable"]
                        and not body["is_billed"]
                        and proj.model == "T&M"
                        and not proj.over_cap
                        and day > BILLED_THROUGH
                        and rng.random() < 0.05
                    ):
                        self.dup_candidates.append(body.copy())
                    yield tid, body, to_iso(updated), None

    def gen_expenses(self) -> None:
        self.stores["psa"].put_many("expenses", self._expense_rows())

    def expense_body(
        self,
        eid: int,
        p: Person,
        proj: Project,
        day: dt.date,
        category: str,
        units: int,
        total: Decimal,
        receipt: bool,
        status: str,
        rng: random.Random,
    ) -> tuple[dict[str, Any], dt.datetime]:
        created = at(day, 19, rng.randint(0, 59), rng.randint(0, 59))
        inv = self.invoice_for(proj, day) if status == "approved" else None
        if inv is not None:
            updated = at(inv["month"] + dt.timedelta(days=3), 9, 31)
            inv["expenses"] += total
        elif status == "approved":
            updated = min(
                at(day + dt.timedelta(days=7 - day.weekday()), 11), at(dt.date(2026, 11, 1), 18)
            )
        else:
            updated = created
        cat_id = self.category_ids[category]
        body = {
            "id": eid,
            "spent_date": day.isoformat(),
            "notes": f"{category} - {proj.client.city}",
            "total_cost": total,
            "units": units,
            "is_closed": status == "approved",
            "is_locked": status == "approved",
            "is_billed": inv is not None,
            "locked_reason": "Item Invoiced" if inv is not None else None,
            "billable": proj.billable,
            "receipt": (
                {
                    "url": f"https://sandbox.invalid/receipts/{eid}.pdf",
                    "file_name": f"receipt-{eid}.pdf",
                    "file_size": 20000 + eid % 50000,
                    "content_type": "application/pdf",
                }
                if receipt
                else None
            ),
            "user": {"id": p.id, "name": p.name},
            "user_assignment": {"id": proj.ua_ids[p.id]},
            "project": {"id": proj.id, "name": proj.name, "code": proj.code},
            # {id, name, unit_price, unit_name}, as Harvest's expense object documents
            "expense_category": {**self.category_refs[category], "id": cat_id},
            "client": {
                "id": proj.psa_client["id"],
                "name": proj.psa_client["name"],
                "currency": proj.psa_client["currency"],
            },
            "invoice": None if inv is None else {"id": inv["id"], "number": inv["number"]},
            "created_at": ts_harvest(created),
            "updated_at": ts_harvest(updated),
        }
        return body, updated

    def _expense_rows(self) -> Iterator[tuple[int, dict[str, Any], str, None]]:
        rng = self.rng("expenses")
        projects = {p.id: p for p in self.projects}
        regular = [p for p in self.people if p not in self.planted_people]
        cats = [c for c in EXPENSE_CATEGORIES]
        for day in self.days:
            for p in regular:
                if rng.random() >= self.size.expense_p:
                    continue
                active = [projects[i] for i in p.projects if projects[i].active_on(day)]
                if not active:
                    continue
                proj = active[rng.randrange(len(active))]
                name, unit, unit_price, limit = cats[rng.randrange(len(cats))]
                cur = proj.currency
                if unit_price is not None:
                    units = rng.randint(20, 300)
                    total = convert(unit_price * units, cur)
                else:
                    units = rng.randint(1, 3) if unit == "night" else 1
                    eur = Decimal(rng.randint(8, int(limit * Decimal("0.9")))) * units
                    total = convert(eur, cur)
                above = total > convert(RECEIPT_THRESHOLD_EUR, cur)
                receipt = True if above else rng.random() < 0.5
                eid = self.next_id("expense", 1_500_000_001)
                status = self.approval(rng, day)
                body, updated = self.expense_body(
                    eid, p, proj, day, name, units, total, receipt, status, rng
                )
                yield eid, body, to_iso(updated), None

    # ------------------------------------------------------------------ planted time problems

    def plant_time_problems(self) -> None:
        rng = self.rng("planted")
        psa = self.stores["psa"]
        k = self.size.problems
        rows: list[tuple[int, dict[str, Any], str, None]] = []
        late_days = [d for d in self.days if d > dt.date(2026, 10, 5)]
        tm_open = [
            p for p in self.projects if p.model == "T&M" and p.active and p.currency == "EUR"
        ]
        contractor, newhire = self.planted_people
        # missing_rate: both planted people book billable time on a T&M project without an
        # assignment rate, on days where they have no rate card.
        for person, days in (
            (contractor, late_days[:k]),
            (newhire, [d for d in late_days if d < dt.date(2026, 10, 19)][:k]),
        ):
            proj = next(p for p in tm_open if not p.overrides)
            if person.id not in proj.team:
                proj.team.append(person.id)
                proj.ua_ids[person.id] = self.next_id("user_assignment", 7200001)
                proj.assign_rate[person.id] = None
                self.write_extra_assignment(proj, person)
            task = next(t for t in proj.tasks if t[3])
            for day in days:
                tid = self.next_id("time_entry", 2_000_000_001)
                body, updated = self.entry_body(
                    tid, person, proj, task, day, 3.0, "Client support", "submitted", rng
                )
                rows.append((tid, body, to_iso(updated), None))
                self.manifest.add(
                    "missing_rate",
                    "psa",
                    "time_entries",
                    tid,
                    f"{person.email} has no billable rate on {day} and no assignment rate "
                    f"on project {proj.code}",
                    user=person.id,
                    project=proj.id,
                )
        # time on closed projects
        closed = [p for p in self.projects if not p.active and p.ends is not None]
        for proj in closed[:k]:
            person = self.person(proj.team[0])
            day = next(d for d in self.days if d > proj.ends)  # type: ignore[operator]
            task = next(t for t in proj.tasks if t[3])
            tid = self.next_id("time_entry", 2_000_000_001)
            body, updated = self.entry_body(
                tid, person, proj, task, day, 2.0, "Follow-up questions", "submitted", rng
            )
            rows.append((tid, body, to_iso(updated), None))
            self.manifest.add(
                "time_on_closed_project",
                "psa",
                "time_entries",
                tid,
                f"spent {day} on project {proj.code} closed {proj.ends}",
                project=proj.id,
            )
        # duplicates of regular entries
        for orig in self.dup_candidates[:k]:
            tid = self.next_id("time_entry", 2_000_000_001)
            dup = dict(orig)
            dup["id"] = tid
            created = dt.datetime.strptime(orig["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=UTC
            ) + dt.timedelta(minutes=3)
            dup["created_at"] = ts_harvest(created)
            if not orig["is_closed"]:
                dup["updated_at"] = dup["created_at"]
            updated = max(
                created,
                dt.datetime.strptime(dup["updated_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
            )
            dup["updated_at"] = ts_harvest(updated)
            rows.append((tid, dup, to_iso(updated), None))
            proj = next(p for p in self.projects if p.id == orig["project"]["id"])
            if orig["is_closed"]:
                proj.hours += Decimal(str(orig["hours"]))
            self.manifest.add(
                "duplicate_time_entry",
                "psa",
                "time_entries",
                tid,
                f"duplicate of time entry {orig['id']} (same user, date, project, task, hours, "
                "notes)",
                original=orig["id"],
            )
        psa.put_many("time_entries", rows)

        # planted expenses
        erows: list[tuple[int, dict[str, Any], str, None]] = []
        regular = [p for p in self.people if p not in self.planted_people]
        projects = {p.id: p for p in self.projects}
        day_pool = late_days[-6:]
        for i in range(k * 2):
            person = regular[(i * 7) % len(regular)]
            day = day_pool[i % len(day_pool)]
            options = [projects[j] for j in person.projects if projects[j].active_on(day)]
            if not options:
                continue
            proj = options[0]
            eid = self.next_id("expense", 1_500_000_001)
            cur = proj.currency
            if i % 2 == 0:
                total = convert(Decimal("180") + i, cur)
                body, updated = self.expense_body(
                    eid, person, proj, day, "Taxi & Transit", 1, total, False, "submitted", rng
                )
                body["total_cost"] = total
                self.manifest.add(
                    "expense_missing_receipt",
                    "psa",
                    "expenses",
                    eid,
                    f"{total} {cur} above the receipt threshold "
                    f"{convert(RECEIPT_THRESHOLD_EUR, cur)} {cur} without a receipt",
                )
            else:
                total = convert(Decimal("480") * 2, cur)
                body, updated = self.expense_body(
                    eid, person, proj, day, "Hotel", 2, total, True, "submitted", rng
                )
                self.manifest.add(
                    "expense_over_policy",
                    "psa",
                    "expenses",
                    eid,
                    f"Hotel {convert(Decimal('480'), cur)} {cur}/night over the policy limit "
                    f"{convert(Decimal('250'), cur)} {cur}/night",
                )
            erows.append((eid, body, to_iso(updated), None))
        psa.put_many("expenses", erows)

    def write_extra_assignment(self, proj: Project, person: Person) -> None:
        created = at(dt.date(2026, 10, 1), 9)
        self.stores["psa"].put(
            "user_assignments",
            proj.ua_ids[person.id],
            {
                "id": proj.ua_ids[person.id],
                "is_project_manager": False,
                "is_active": True,
                "use_default_rates": True,
                "hourly_rate": None,
                "budget": None,
                "project": {"id": proj.id, "name": proj.name, "code": proj.code},
                "user": {"id": person.id, "name": person.name},
                "created_at": ts_harvest(created),
                "updated_at": ts_harvest(created),
            },
            modstamp=to_iso(created),
            parent_id=proj.id,
            log=False,
        )
        person.projects.append(proj.id)

    # ------------------------------------------------------------------ invoices

    def tax_for(self, c: Client, day: dt.date) -> tuple[str, Decimal]:
        if c.exempt:
            return "EXEMPT", Decimal(0)
        if c.region == "eu":
            return "REVERSE", Decimal(0)
        if c.region == "domestic":
            for start, end, pct in STANDARD_RATES["NL"]:
                if start <= day.isoformat() and (end is None or day.isoformat() <= end):
                    return "STANDARD", Decimal(pct)
        return "EXPORT", Decimal(0)

    def gen_invoices(self) -> None:
        rng = self.rng("invoices")
        psa, erp = self.stores["psa"], self.stores["erp"]
        hrows, irows, lrows = [], [], []
        erp_no = 103000
        for (_pid, month), inv in sorted(self.invoices.items(), key=lambda kv: kv[1]["id"]):
            proj: Project = inv["project"]
            c = proj.client
            cur = proj.currency
            amount = money(inv["amount"] + inv["expenses"], cur)
            if amount == 0:
                continue
            issue = inv["month"] + dt.timedelta(days=3)
            due = issue + dt.timedelta(days=30)
            code, pct = self.tax_for(c, issue)
            tax_amount = money(amount * pct / 100, cur)
            paid = due < CLOCK_START.date()
            issued_at = at(issue, 9, 30)
            paid_at = at(due - dt.timedelta(days=rng.randint(0, 5)), 12) if paid else None
            mod = paid_at or issued_at
            lines = [
                {
                    "id": self.next_id("invoice_line", 1400001),
                    "kind": "Service",
                    "description": f"{proj.name}: professional services {month}",
                    "quantity": float(inv["hours"]),
                    "unit_price": money(inv["amount"] / inv["hours"], cur) if inv["hours"] else 0,
                    "amount": money(inv["amount"], cur),
                    "taxed": pct > 0,
                    "taxed2": False,
                    "project": {"id": proj.id, "name": proj.name, "code": proj.code},
                }
            ]
            if inv["expenses"]:
                lines.append(
                    {
                        "id": self.next_id("invoice_line", 1400001),
                        "kind": "Product",
                        "description": f"{proj.name}: expenses {month}",
                        "quantity": 1.0,
                        "unit_price": money(inv["expenses"], cur),
                        "amount": money(inv["expenses"], cur),
                        "taxed": pct > 0,
                        "taxed2": False,
                        "project": {"id": proj.id, "name": proj.name, "code": proj.code},
                    }
                )
            # exact total = sum of rounded lines
            amount = sum((ln["amount"] for ln in lines), Decimal(0))
            tax_amount = money(amount * pct / 100, cur)
            erp_no += 1
            hbody = {
                "id": inv["id"],
                "client_key": f"{rng.getrandbits(80):020x}",
                "number": inv["number"],
                "purchase_order": f"PO-{rng.randint(10000, 99999)}" if c.po_required else "",
                "amount": amount + tax_amount,
                "due_amount": Decimal(0) if paid else amount + tax_amount,
                "tax": pct if pct else None,
                "tax_amount": tax_amount,
                "tax2": None,
                "tax2_amount": Decimal(0),
                "discount": None,
                "discount_amount": Decimal(0),
                "subject": f"{proj.name} {month}",
                "notes": f"ERP invoice PSI-{erp_no}",
                "currency": cur,
                "state": "paid" if paid else "open",
                "period_start": inv["month"].replace(day=1).isoformat(),
                "period_end": inv["month"].isoformat(),
                "issue_date": issue.isoformat(),
                "due_date": due.isoformat(),
                "payment_term": "net 30",
                "sent_at": ts_harvest(issued_at),
                "paid_at": None if paid_at is None else ts_harvest(paid_at),
                "paid_date": None if paid_at is None else paid_at.date().isoformat(),
                "closed_at": None,
                "created_at": ts_harvest(issued_at),
                "client": {"id": c.psa_id, "name": c.name},
                "creator": {"id": 3100001, "name": self.people[0].name},
                "estimate": None,
                "retainer": None,
                "line_items": lines,
            }
            hrows.append((inv["id"], hbody, to_iso(mod), None))
            iid = guid(rng)
            ibody = {
                "id": iid,
                "number": f"PSI-{erp_no}",
                "externalDocumentNumber": f"HARVEST-{inv['number']}",
                "invoiceDate": issue.isoformat(),
                "postingDate": issue.isoformat(),
                "dueDate": due.isoformat(),
                "customerPurchaseOrderReference": hbody["purchase_order"],
                "customerId": c.erp_id,
                "customerNumber": c.erp_no,
                "customerName": c.name,
                "billToCustomerId": c.erp_id,
                "billToCustomerNumber": c.erp_no,
                "billToName": c.name,
                "currencyId": "00000000-0000-0000-0000-000000000000",
                "currencyCode": cur,
                "paymentTermsId": "00000000-0000-0000-0000-000000000000",
                "pricesIncludeTax": False,
                "discountAmount": Decimal(0),
                "discountAppliedBeforeTax": True,
                "totalAmountExcludingTax": amount,
                "totalTaxAmount": tax_amount,
                "totalAmountIncludingTax": amount + tax_amount,
                "remainingAmount": Decimal(0) if paid else amount + tax_amount,
                "status": "Paid" if paid else "Open",
                "phoneNumber": "",
                "email": "",
            }
            irows.append((iid, ibody, to_iso(mod), None))
            for seq, ln in enumerate(lines, start=1):
                lid = guid(rng)
                service = ln["kind"] == "Service"
                account = "8000" if service else "8100"
                line_tax = money(ln["amount"] * pct / 100, cur)
                lrows.append(
                    (
                        lid,
                        {
                            "id": lid,
                            "documentId": iid,
                            "sequence": seq * 10000,
                            "itemId": "00000000-0000-0000-0000-000000000000",
                            "accountId": self.account_ids[account],
                            "lineType": "Account",
                            "lineObjectNumber": account,
                            "description": ln["description"],
                            "unitOfMeasureId": self.unit_ids["HOUR"] if service else NO_ID,
                            "unitOfMeasureCode": "HOUR" if service else "",
                            "quantity": ln["quantity"],
                            "unitPrice": ln["unit_price"],
                            "discountAmount": Decimal(0),
                            "discountPercent": Decimal(0),
                            "taxCode": code,
                            "taxPercent": pct,
                            "amountExcludingTax": ln["amount"],
                            "totalTaxAmount": line_tax,
                            "amountIncludingTax": ln["amount"] + line_tax,
                            "netAmount": ln["amount"],
                            "netTaxAmount": line_tax,
                            "netAmountIncludingTax": ln["amount"] + line_tax,
                        },
                        to_iso(mod),
                        iid,
                    )
                )
        psa.put_many("invoices", hrows)
        erp.put_many("salesInvoices", irows)
        erp.put_many("salesInvoiceLines", lrows)

    def gen_accounts_and_units(self, stamp: dt.datetime) -> None:
        """G/L accounts and Units of Measure (their own random stream, so the reference data
        drawn before them keeps its ids)."""
        rng = self.rng("accounts")
        erp = self.stores["erp"]
        rows = []
        for number, name, category, sub, kind, direct, blocked in ACCOUNTS:
            aid = guid(rng)
            self.account_ids[number] = aid
            body = {
                "id": aid,
                "number": number,
                "displayName": name,
                "category": category,
                "subCategory": sub,
                "blocked": blocked,
                "accountType": kind,
                "directPosting": direct,
                # a FlowField over G/L entries, which the sandbox does not keep
                "netChange": Decimal(0),
                "consolidationTranslationMethod": "Average Rate (Manual)",
                "consolidationDebitAccount": "",
                "consolidationCreditAccount": "",
                "excludeFromConsolidation": False,
            }
            rows.append((aid, body, to_iso(stamp), None))
        erp.put_many("accounts", rows)
        rows = []
        for code, name, iso, symbol in UNITS_OF_MEASURE:
            uid = guid(rng)
            self.unit_ids[code] = uid
            body = {
                "id": uid,
                "code": code,
                "displayName": name,
                "internationalStandardCode": iso,
                "symbol": symbol,
            }
            rows.append((uid, body, to_iso(stamp), None))
        erp.put_many("unitsOfMeasure", rows)

    # ------------------------------------------------------------------ opportunities

    def opportunity_body(
        self, oid: str, c: Client, name: str, created: dt.datetime, **fields: Any
    ) -> dict[str, Any]:
        body = {
            "Id": oid,
            "Name": name,
            "AccountId": c.sf_id,
            "StageName": "Closed Won",
            "Amount": None,
            "CloseDate": None,
            "Probability": 100,
            "IsClosed": True,
            "IsWon": True,
            "Type": "New Business",
            "OwnerId": self.sales_ids[c.n % len(self.sales_ids)],
            "CurrencyIsoCode": c.currency,
            "Billing_Model__c": None,
            "Contract_Start__c": None,
            "Contract_End__c": None,
            "PO_Number__c": None,
            "Cap_Type__c": None,
            "Cap_Value__c": None,
            "Rate_Overrides__c": None,
            "Retainer_Amount__c": None,
            "Retainer_Period__c": None,
            "Contract_Version__c": 1,
            "Change_Effective_Date__c": None,
            "PSA_Project_Id__c": None,
            "Expense_Markup_Pct__c": Decimal("0"),
            "IsDeleted": False,
            "CreatedDate": ts_sf(created),
            "LastModifiedDate": ts_sf(created),
        }
        body.update(fields)
        return body

    def milestone_row(
        self,
        opportunity_id: str,
        name: str,
        amount: Decimal,
        due: dt.date,
        created: dt.datetime,
        *,
        accepted_on: dt.date | None = None,
        modified: dt.datetime | None = None,
    ) -> tuple[str, dict[str, Any], str, str]:
        """One ``Contract_Milestone__c`` record (child of the opportunity): Planned, or
        Accepted on ``accepted_on`` by the client."""
        n = self.next_id("contract_milestone", 1)
        mid = sf_id("a0M", n)
        mod = modified or created
        body = {
            "Id": mid,
            "Name": name,
            "Opportunity__c": opportunity_id,
            "Amount__c": amount,
            "Due_Date__c": due.isoformat(),
            "Status__c": "Accepted" if accepted_on else "Planned",
            "Accepted_Date__c": None if accepted_on is None else accepted_on.isoformat(),
            "Invoice_Number__c": None,
            "IsDeleted": False,
            "CreatedDate": ts_sf(created),
            "CreatedById": None,
            "LastModifiedDate": ts_sf(mod),
            "LastModifiedById": None,
        }
        return (mid, body, to_iso(mod), opportunity_id)

    def gen_opportunities(self) -> None:
        rng = self.rng("opportunities")
        rows = []
        milestones: list[tuple[str, dict[str, Any], str, str]] = []
        model_name = {"T&M": "Time and Materials", "Fixed Fee": "Fixed Fee", "Retainer": "Retainer"}
        for proj in self.projects:
            c = proj.client
            cur = proj.contract_currency
            close = proj.starts - dt.timedelta(days=rng.randint(5, 20))
            created = at(close - dt.timedelta(days=rng.randint(20, 90)), 10, rng.randint(0, 59))
            mod = at(close, 15, rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999))
            fields: dict[str, Any] = {
                "CloseDate": close.isoformat(),
                "Billing_Model__c": model_name[proj.model],
                "CurrencyIsoCode": cur,
                "Contract_Start__c": proj.starts.isoformat(),
                "Contract_End__c": (
                    proj.ends or (proj.starts + dt.timedelta(days=365))
                ).isoformat(),
                "PO_Number__c": f"PO-{rng.randint(100000, 999999)}" if c.po_required else None,
                "PSA_Project_Id__c": str(proj.id),
                "Expense_Markup_Pct__c": Decimal(rng.choice([0, 0, 5, 10])),
            }
            est = money(proj.amount_estimate * FX[cur], cur)  # type: ignore[attr-defined]
            fields["Amount"] = est
            if proj.model == "T&M":
                if proj.overrides:
                    fields["Rate_Overrides__c"] = json.dumps(proj.overrides)
                if proj.cap_type == "Hours":
                    if proj.over_cap:
                        cap = max(Decimal(8), (proj.hours * Decimal("0.8")).to_integral_value())
                        self.manifest.add(
                            "over_cap_hours",
                            "psa",
                            "projects",
                            proj.id,
                            f"{proj.hours} approved billable hours logged, contract cap {cap} h",
                            opportunity=proj.opp_id,
                        )
                    else:
                        cap = (proj.hours * Decimal("1.5") / 50).to_integral_value() * 50 + 100
                    fields["Cap_Type__c"], fields["Cap_Value__c"] = "Hours", cap
                elif proj.cap_type == "Amount":
                    cap_amt = money(max(proj.amount * Decimal("1.5"), est), cur)
                    fields["Cap_Type__c"], fields["Cap_Value__c"] = "Amount", cap_amt
            elif proj.model == "Fixed Fee":
                plan = self.milestone_plan[proj.id]
                fields["Amount"] = sum((m["amount"] for m in plan), Decimal(0))
                for m in plan:
                    accepted_at = m["accepted_at"]
                    milestones.append(
                        self.milestone_row(
                            proj.opp_id,
                            m["name"],
                            m["amount"],
                            m["due_date"],
                            m["created"],
                            accepted_on=None if accepted_at is None else accepted_at.date(),
                            modified=accepted_at,
                        )
                    )
            else:
                monthly = money(Decimal(rng.randint(5, 30) * 1000) * FX[cur], cur)
                fields["Retainer_Amount__c"] = monthly
                fields["Retainer_Period__c"] = "Monthly"
                fields["Amount"] = monthly * 12
            body = self.opportunity_body(proj.opp_id, c, proj.name, created, **fields)
            rows.append((proj.opp_id, body, to_iso(mod), None))

        # closed-won, not yet set up (some with missing fields), plus open and lost deals
        n = len(self.projects)
        k = self.size.problems
        pending = [c for c, _ in self.pending_clients]
        missing_cycle = [
            "Billing_Model__c",
            "CurrencyIsoCode",
            "Contract_Start__c",
            "PO_Number__c",
            "Contract_Milestone__c",
        ]
        missing_plan: list[str] = [missing_cycle[i % len(missing_cycle)] for i in range(max(k, 5))]
        for i, c in enumerate(pending + self.clients[5 : 5 + max(3, k)]):
            n += 1
            oid = sf_id("006", n)
            close = dt.date(2026, 10, 12) + dt.timedelta(days=i % 20)
            created = at(close - dt.timedelta(days=40), 10, i % 60)
            mod = at(close, 16, i % 60, i % 60, (i * 37) % 1000)
            model = ["Time and Materials", "Fixed Fee", "Retainer"][i % 3]
            start = dt.date(2026, 11, 9) + dt.timedelta(days=7 * (i % 4))
            est = money(Decimal(rng.randint(30, 300) * 1000) * FX[c.currency], c.currency)
            fields = {
                "CloseDate": close.isoformat(),
                "Amount": est,
                "Billing_Model__c": model,
                "Contract_Start__c": start.isoformat(),
                "Contract_End__c": (start + dt.timedelta(days=180)).isoformat(),
                "PO_Number__c": f"PO-{rng.randint(100000, 999999)}" if c.po_required else None,
            }
            plan: list[tuple[str, Decimal, dt.date]] = []
            if model == "Fixed Fee":
                half = money(est / 2, c.currency)
                plan = [
                    ("Design sign-off", half, start + dt.timedelta(days=60)),
                    ("Go-live", est - half, start + dt.timedelta(days=150)),
                ]
            elif model == "Retainer":
                fields["Retainer_Amount__c"] = money(est / 6, c.currency)
                fields["Retainer_Period__c"] = "Quarterly" if i % 2 else "Monthly"
            if missing_plan:
                want = missing_plan[0]
                ok = (
                    want in ("Billing_Model__c", "CurrencyIsoCode", "Contract_Start__c")
                    or (want == "PO_Number__c" and c.po_required)
                    or (want == "Contract_Milestone__c" and model == "Fixed Fee")
                )
                if ok:
                    missing_plan.pop(0)
                    if want == "Contract_Milestone__c":
                        plan = []  # no milestone records under the opportunity
                    else:
                        fields[want] = None
                    why = {
                        "PO_Number__c": "PO number missing for a PO-required client",
                        "Contract_Milestone__c": "fixed-fee contract without milestones",
                    }.get(want, f"{want} is empty")
                    self.manifest.add(
                        "contract_missing_field",
                        "crm",
                        "Opportunity",
                        oid,
                        f"{want}: {why}",
                        field=want,
                    )
            body = self.opportunity_body(
                oid, c, f"{c.name.split()[0]} new engagement {i + 1}", created, **fields
            )
            rows.append((oid, body, to_iso(mod), None))
            for name, amount, due in plan:
                milestones.append(self.milestone_row(oid, name, amount, due, created))
        for i, c in enumerate(self.clients[::3]):
            n += 1
            oid = sf_id("006", n)
            lost = i % 4 == 0
            close = dt.date(2026, 11, 30) + dt.timedelta(days=i % 60)
            if lost:
                close = dt.date(2026, 9, 1) + dt.timedelta(days=i % 40)
            created = at(dt.date(2026, 8, 1) + dt.timedelta(days=i % 60), 9)
            mod = at(dt.date(2026, 10, 1) + dt.timedelta(days=i % 28), 12, i % 60, 0, i % 1000)
            body = self.opportunity_body(
                oid,
                c,
                f"{c.name.split()[0]} proposal {i + 1}",
                created,
                StageName="Closed Lost"
                if lost
                else rng.choice(["Proposal/Price Quote", "Negotiation/Review", "Qualification"]),
                IsWon=False,
                IsClosed=lost,
                Probability=0 if lost else rng.choice([10, 30, 60, 80]),
                Amount=money(Decimal(rng.randint(20, 200) * 1000) * FX[c.currency], c.currency),
                CloseDate=close.isoformat(),
                Billing_Model__c="Time and Materials",
            )
            rows.append((oid, body, to_iso(mod), None))
        self.stores["crm"].put_many("Opportunity", rows)
        self.stores["crm"].put_many("Contract_Milestone__c", milestones)

    # ------------------------------------------------------------------ manifest

    def build_manifest(self) -> dict[str, Any]:
        counts = {
            system: {res: store.count(res) for res in store.resources()}
            for system, store in sorted(self.stores.items())
        }
        kinds: dict[str, int] = {}
        for p in self.manifest.problems:
            kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
        return {
            "generator_version": GENERATOR_VERSION,
            "size": self.size_name,
            "seed": self.seed,
            "firm": {**FIRM, "erp_company_id": self.company_id},
            "clock_start": to_iso(CLOCK_START),
            "history": {"start": self.size.start.isoformat(), "end": HISTORY_END.isoformat()},
            "billed_through": BILLED_THROUGH.isoformat(),
            "policy": {
                "receipt_threshold": {
                    cur: str(convert(RECEIPT_THRESHOLD_EUR, cur)) for cur in DECIMALS
                },
                "expense_limits_eur": {
                    name: str(limit) for name, _u, _p, limit in EXPENSE_CATEGORIES
                },
                "fx_per_eur": {cur: str(v) for cur, v in FX.items()},
                "currency_decimals": DECIMALS,
            },
            "counts": counts,
            "problem_counts": dict(sorted(kinds.items())),
            "problems": self.manifest.problems,
        }


def generate_into(ctx: SandboxContext, *, size: str, seed: int) -> dict[str, Any]:
    """Generate the firm into ``ctx``'s stores; write ``manifest.json`` and ``sandbox.json``."""
    gen = FirmGenerator(ctx.stores, size=size, seed=seed)
    bulk = [store.bulk() for store in ctx.stores.values()]
    for b in bulk:
        b.__enter__()
    try:
        manifest = gen.run()
    finally:
        for b in bulk:
            b.__exit__(None, None, None)
    for store in ctx.stores.values():
        store.checkpoint()
    text = json.dumps(json.loads(dumps(manifest)), indent=2, sort_keys=True)
    (ctx.state_dir / "manifest.json").write_text(text + "\n")
    ctx.clock.reset(to_iso(CLOCK_START))
    write_info(
        ctx.state_dir,
        {
            "generated": True,
            "size": size,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
            "clock_start": to_iso(CLOCK_START),
            "erp_company_id": gen.company_id,
        },
    )
    return json.loads(text)
