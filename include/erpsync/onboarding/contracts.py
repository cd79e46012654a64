"""A closed-won Salesforce Opportunity read as a contract, and the checks billing needs.

The CRM is the system of record for the contract (docs DESIGN.md, "who owns what"). The fields
(custom fields of the firm's Opportunity, see the sandbox CRM schema):

``Billing_Model__c`` (Time and Materials | Fixed Fee | Retainer), ``CurrencyIsoCode``,
``Amount``, ``Contract_Start__c``/``Contract_End__c``, ``PO_Number__c`` (required when the
account has ``PO_Required__c``), ``Cap_Type__c``/``Cap_Value__c`` (Hours | Amount: a
not-to-exceed cap), ``Rate_Overrides__c`` (JSON ``[{"user_email", "role", "rate",
"effective_from"}]``), ``Retainer_Amount__c`` / ``Retainer_Period__c``, ``Contract_Version__c``
(a change order adds 1), ``Change_Effective_Date__c`` (the day a change order takes effect) and
``PSA_Project_Id__c`` (written back once the PSA project exists).

**Effective dates.** A time entry is priced by the contract version in effect on its date: the
highest version whose ``Change_Effective_Date__c`` is on or before it (the first version
erpsync knows applies from the beginning), so a change order never re-prices work dated
before it; a change order without the date is refused (``contract_missing_field``), never
applied to all unbilled work. Within a version, a rate override element may carry
``effective_from`` (``YYYY-MM-DD``): the person's rate from that day on, until the next element
for the same person; an element without it applies from the version's own start. Which
version and rate priced an entry stays in ``recon.items`` (``contract_version``, ``rate``).

A fixed-fee contract's milestones are its child records of the custom object
``Contract_Milestone__c`` (``Name``, ``Amount__c``, ``Due_Date__c``, ``Status__c``; see
:mod:`erpsync.models.milestones`), given to :func:`parse` in the shape of a SOQL
relationship subquery, ``record["Contract_Milestones__r"] = {"records": [...]}`` (Harvest has no
milestones, so the CRM owns them and their acceptance). They are ordered by due date, then name.

:func:`check` returns every problem; the setup raises ONE exception per contract (the first
problem's reason code, all problems in its detail) and builds nothing for it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from erpsync.models.billing_terms import BILLING_MODEL_LABELS, CAP_TYPE_LABELS, BillingModel
from erpsync.models.reference import FIRM_CURRENCIES

__all__ = [
    "CONTRACT_CLIENT_NOT_READY",
    "CONTRACT_INVALID_FIELD",
    "CONTRACT_MISSING_FIELD",
    "ONBOARDING_REASONS",
    "OPPORTUNITY_FIELDS",
    "ClientFacts",
    "Contract",
    "Problem",
    "check",
    "parse",
]

#: A field billing needs is empty in the CRM (``detail.field`` says which).
CONTRACT_MISSING_FIELD = "contract_missing_field"
#: A field is filled but unusable (bad JSON, unknown e-mail, milestones not adding up...).
CONTRACT_INVALID_FIELD = "contract_invalid_field"
#: The client is not ready to bill: no tax profile yet, an invalid tax id, or not in the PSA.
CONTRACT_CLIENT_NOT_READY = "contract_client_not_ready"
ONBOARDING_REASONS = (CONTRACT_MISSING_FIELD, CONTRACT_INVALID_FIELD, CONTRACT_CLIENT_NOT_READY)

#: The child relationship of Opportunity to its Contract_Milestone__c records (the
#: master-detail field's relationshipName + ``__r``), and what is read of each milestone.
MILESTONES_RELATIONSHIP = "Contract_Milestones__r"
MILESTONE_OBJECT = "Contract_Milestone__c"
MILESTONE_FIELDS = ("Id", "Name", "Opportunity__c", "Amount__c", "Due_Date__c", "Status__c")

OPPORTUNITY_FIELDS = (
    "Id",
    "Name",
    "AccountId",
    "OwnerId",
    "StageName",
    "IsWon",
    "Amount",
    "CurrencyIsoCode",
    "Billing_Model__c",
    "Contract_Start__c",
    "Contract_End__c",
    "PO_Number__c",
    "Cap_Type__c",
    "Cap_Value__c",
    "Rate_Overrides__c",
    "Retainer_Amount__c",
    "Retainer_Period__c",
    "Contract_Version__c",
    "Change_Effective_Date__c",
    "PSA_Project_Id__c",
    "Expense_Markup_Pct__c",  # read by the reconciliation (expenses billed at cost + markup)
    "SystemModstamp",
)

RETAINER_PERIODS = {"Monthly": "monthly", "Quarterly": "quarterly"}


@dataclass(frozen=True)
class Problem:
    reason_code: str
    field: str
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {
            "reason_code": self.reason_code,
            "field": self.field,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class ClientFacts:
    """What the warehouse knows about the contract's client (master data sync)."""

    synced: bool  # core.clients has the account
    po_required: bool
    tax_profile: bool  # core.tax_profiles has the account
    vat_id_valid: bool | None
    vat_id_reason: str | None
    psa_client_id: str | None
    name: str | None
    #: the PSA client's currency (a Harvest project bills in its client's currency)
    psa_currency: str | None = None


@dataclass
class Contract:
    opportunity_id: str
    version: int
    account_id: str | None
    name: str | None
    owner_id: str | None
    billing_model: str | None
    currency: str | None
    amount: Decimal | None
    starts_on: dt.date | None
    ends_on: dt.date | None
    po_number: str | None
    cap_type: str | None
    cap_value: Decimal | None
    retainer_amount: Decimal | None
    retainer_period: str | None
    rate_overrides: list[dict[str, Any]] = field(default_factory=list)
    #: the day this version takes effect (``Change_Effective_Date__c``; a change order's)
    effective_from: dt.date | None = None
    milestones: list[dict[str, Any]] = field(default_factory=list)
    psa_project_id_in_crm: str | None = None
    modstamp: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    def fingerprint(self) -> dict[str, Any]:
        """The contract terms (what a change order can change), JSON-ready."""
        return {
            "billing_model": self.billing_model,
            "currency": self.currency,
            "amount": None if self.amount is None else str(self.amount),
            "starts_on": None if self.starts_on is None else self.starts_on.isoformat(),
            "ends_on": None if self.ends_on is None else self.ends_on.isoformat(),
            "po_number": self.po_number,
            "cap_type": self.cap_type,
            "cap_value": None if self.cap_value is None else str(self.cap_value),
            "retainer_amount": None if self.retainer_amount is None else str(self.retainer_amount),
            "retainer_period": self.retainer_period,
            "rate_overrides": self.rate_overrides,
            "effective_from": None
            if self.effective_from is None
            else self.effective_from.isoformat(),
            "milestones": [
                {k: m[k] for k in ("name", "amount", "due_date")} for m in self.milestones
            ],
        }


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _decimal(value: Any) -> Decimal | None:
    if _blank(value) or isinstance(value, bool):
        return None
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        return None
    return out if out.is_finite() else None


def _date(value: Any) -> dt.date | None:
    if _blank(value):
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _missing(name: str, message: str, fix: str) -> Problem:
    return Problem(CONTRACT_MISSING_FIELD, name, message, fix)


def _invalid(name: str, message: str, fix: str) -> Problem:
    return Problem(CONTRACT_INVALID_FIELD, name, message, fix)


def _json_list(raw: Any, name: str, problems: list[Problem]) -> list[dict[str, Any]] | None:
    if _blank(raw):
        return None
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        problems.append(_invalid(name, f"{name} is not valid JSON", f"correct {name} in the CRM"))
        return None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(
            _invalid(name, f"{name} must be a JSON list of objects", f"correct {name} in the CRM")
        )
        return None
    return value


def _milestone_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The opportunity's Contract_Milestone__c records (subquery shape), by due date and name."""
    related = record.get(MILESTONES_RELATIONSHIP) or {}
    items = related.get("records") if isinstance(related, dict) else related
    items = [i for i in items or [] if isinstance(i, dict)]
    return sorted(items, key=lambda i: (str(i.get("Due_Date__c") or ""), str(i.get("Name") or "")))


def parse(record: dict[str, Any]) -> Contract:
    """The contract terms of one Opportunity record, with the problems found in the record
    itself (client checks come from :func:`check`)."""
    problems: list[Problem] = []
    model_raw = record.get("Billing_Model__c")
    model = BILLING_MODEL_LABELS.get(model_raw) if not _blank(model_raw) else None
    if _blank(model_raw):
        problems.append(
            _missing(
                "Billing_Model__c",
                "the billing model is empty",
                "set Billing Model (Time and Materials, Fixed Fee or Retainer) on the opportunity",
            )
        )
    elif model is None:
        problems.append(
            _invalid(
                "Billing_Model__c",
                f"unknown billing model {model_raw!r}",
                "set Billing Model to Time and Materials, Fixed Fee or Retainer",
            )
        )
    currency = record.get("CurrencyIsoCode")
    if _blank(currency):
        currency = None
        problems.append(
            _missing(
                "CurrencyIsoCode", "the contract currency is empty", "set the opportunity currency"
            )
        )
    elif currency not in FIRM_CURRENCIES:
        problems.append(
            _invalid(
                "CurrencyIsoCode",
                f"currency {currency!r} is not billed by the firm",
                "use one of " + ", ".join(sorted(FIRM_CURRENCIES)),
            )
        )
    amount = _decimal(record.get("Amount"))
    if amount is None:
        problems.append(_missing("Amount", "the contract amount is empty", "set Amount"))
    elif amount < 0:
        problems.append(_invalid("Amount", "the contract amount is negative", "correct Amount"))
    starts = _date(record.get("Contract_Start__c"))
    if starts is None:
        problems.append(
            _missing("Contract_Start__c", "the contract start date is empty", "set Contract Start")
        )
    ends = _date(record.get("Contract_End__c"))
    if starts and ends and ends < starts:
        problems.append(
            _invalid(
                "Contract_End__c",
                "the contract ends before it starts",
                "correct Contract Start / Contract End",
            )
        )
    cap_type = None
    cap_value = _decimal(record.get("Cap_Value__c"))
    if not _blank(record.get("Cap_Type__c")):
        cap_type = CAP_TYPE_LABELS.get(record["Cap_Type__c"])
        if cap_type is None:
            problems.append(
                _invalid(
                    "Cap_Type__c",
                    f"unknown cap type {record['Cap_Type__c']!r}",
                    "set Cap Type to Hours or Amount",
                )
            )
        elif cap_value is None or cap_value <= 0:
            problems.append(
                _missing(
                    "Cap_Value__c",
                    "a not-to-exceed contract has no cap value",
                    "set Cap Value (hours or amount) on the opportunity",
                )
            )
    overrides_raw = _json_list(record.get("Rate_Overrides__c"), "Rate_Overrides__c", problems)
    overrides: list[dict[str, Any]] = []
    for item in overrides_raw or []:
        rate = _decimal(item.get("rate"))
        email = str(item.get("user_email") or "").strip().lower()
        if not email or rate is None or rate < 0:
            problems.append(
                _invalid(
                    "Rate_Overrides__c",
                    f"rate override {item!r} needs a user_email and a non-negative rate",
                    "correct Rate Overrides in the CRM",
                )
            )
            continue
        out = {"user_email": email, "role": item.get("role"), "rate": str(rate)}
        if not _blank(item.get("effective_from")):
            since = _date(item.get("effective_from"))
            if since is None or len(str(item["effective_from"]).strip()) != 10:
                problems.append(
                    _invalid(
                        "Rate_Overrides__c",
                        f"rate override {item!r}: effective_from is not a date (YYYY-MM-DD)",
                        "correct effective_from in Rate Overrides in the CRM",
                    )
                )
                continue
            out["effective_from"] = since.isoformat()
        overrides.append(out)
    seen: set[tuple[str, str | None]] = set()
    for item in overrides:
        key = (item["user_email"], item.get("effective_from"))
        if key in seen:
            problems.append(
                _invalid(
                    "Rate_Overrides__c",
                    f"two rate overrides for {key[0]} take effect on the same day"
                    f" ({key[1] or 'the version start'})",
                    "keep one rate per person and effective_from in Rate Overrides",
                )
            )
        seen.add(key)
    milestones_raw = _milestone_records(record)
    milestones: list[dict[str, Any]] = []
    for item in milestones_raw:
        m_amount, due = _decimal(item.get("Amount__c")), _date(item.get("Due_Date__c"))
        name = str(item.get("Name") or "").strip()
        if not name or m_amount is None or m_amount < 0 or due is None:
            problems.append(
                _invalid(
                    MILESTONE_OBJECT,
                    f"milestone {name or item.get('Id')!r} needs a name, a non-negative amount"
                    " and a due date",
                    "correct the Contract Milestone records of the opportunity in the CRM",
                )
            )
            continue
        milestones.append(
            {
                "name": name,
                "amount": str(m_amount),
                "due_date": due.isoformat(),
                "crm_id": None if _blank(item.get("Id")) else str(item["Id"]),
            }
        )
    if model == BillingModel.FIXED_FEE:
        if not milestones_raw:
            problems.append(
                _missing(
                    MILESTONE_OBJECT,
                    "a fixed-fee contract has no milestones",
                    "add Contract Milestone records (name, amount, due date) to the opportunity",
                )
            )
        elif amount is not None and milestones:
            total = sum((Decimal(m["amount"]) for m in milestones), Decimal(0))
            if total != amount:
                problems.append(
                    _invalid(
                        MILESTONE_OBJECT,
                        f"milestones total {total} but the contract amount is {amount}",
                        "make the Contract Milestone amounts add up to the opportunity Amount",
                    )
                )
    retainer_amount = _decimal(record.get("Retainer_Amount__c"))
    period_raw = record.get("Retainer_Period__c")
    period = RETAINER_PERIODS.get(period_raw) if not _blank(period_raw) else None
    if model == BillingModel.RETAINER:
        if retainer_amount is None:
            problems.append(
                _missing(
                    "Retainer_Amount__c",
                    "a retainer contract has no retainer amount",
                    "set Retainer Amount",
                )
            )
        if period is None:
            problems.append(
                _missing(
                    "Retainer_Period__c",
                    "a retainer contract has no (known) retainer period",
                    "set Retainer Period to Monthly or Quarterly",
                )
            )
    version_raw = _decimal(record.get("Contract_Version__c"))
    version = int(version_raw) if version_raw is not None and version_raw >= 1 else 1
    effective_from = _date(record.get("Change_Effective_Date__c"))
    if effective_from is None and not _blank(record.get("Change_Effective_Date__c")):
        problems.append(
            _invalid(
                "Change_Effective_Date__c",
                "the change order's effective date is not a date",
                "correct Change Effective Date on the opportunity",
            )
        )
    return Contract(
        opportunity_id=str(record["Id"]),
        version=version,
        account_id=record.get("AccountId"),
        name=record.get("Name"),
        owner_id=record.get("OwnerId"),
        billing_model=model,
        currency=currency,
        amount=amount,
        starts_on=starts,
        ends_on=ends,
        po_number=None if _blank(record.get("PO_Number__c")) else str(record["PO_Number__c"]),
        cap_type=cap_type,
        cap_value=cap_value if cap_type else None,
        retainer_amount=retainer_amount if model == BillingModel.RETAINER else None,
        retainer_period=period if model == BillingModel.RETAINER else None,
        rate_overrides=overrides,
        effective_from=effective_from,
        milestones=milestones,
        psa_project_id_in_crm=None
        if _blank(record.get("PSA_Project_Id__c"))
        else str(record["PSA_Project_Id__c"]),
        modstamp=record.get("SystemModstamp"),
        payload={k: v for k, v in record.items() if k != "attributes"},
        problems=problems,
    )


def check(
    contract: Contract,
    client: ClientFacts | None,
    people_by_email: dict[str, str],
    *,
    change_order: bool = False,
) -> list[Problem]:
    """The contract's problems: its own (from :func:`parse`) plus the client's and the people's.

    ``people_by_email``: PSA user id by lower-case e-mail (core.people). ``change_order``: the
    warehouse already has an earlier version, so this one must say when it takes effect."""
    problems = list(contract.problems)
    if change_order and contract.effective_from is None:
        problems.append(
            _missing(
                "Change_Effective_Date__c",
                f"change order (version {contract.version}) has no effective date: work before"
                " it must keep the previous version's rates",
                "set Change Effective Date on the opportunity (the first day the change applies)",
            )
        )
    if client is None or not client.synced or not client.tax_profile:
        problems.append(
            Problem(
                CONTRACT_CLIENT_NOT_READY,
                "AccountId",
                "the client and its tax profile are not in the warehouse yet",
                "run the master data sync (erpsync_master_data_sync) so the client is synced",
            )
        )
        return problems
    if client.vat_id_valid is False:
        problems.append(
            Problem(
                CONTRACT_CLIENT_NOT_READY,
                "Account.VAT_Id__c",
                f"the client's tax id is invalid ({client.vat_id_reason or 'failed validation'})",
                "correct the VAT / tax id on the CRM account",
            )
        )
    if client.po_required and contract.po_number is None:
        problems.append(
            _missing(
                "PO_Number__c",
                "the client requires a PO number and the contract has none",
                "enter the client's PO number on the opportunity",
            )
        )
    if client.psa_client_id is None:
        problems.append(
            Problem(
                CONTRACT_CLIENT_NOT_READY,
                "Account",
                "the client does not exist in the PSA yet",
                "let the master data sync write the client to the PSA (erpsync_master_data_sync)",
            )
        )
    if (
        client.psa_client_id is not None
        and client.psa_currency
        and contract.currency
        and client.psa_currency.upper() != contract.currency.upper()
    ):
        problems.append(
            _invalid(
                "CurrencyIsoCode",
                f"the contract is in {contract.currency} but the client bills in"
                f" {client.psa_currency} in the PSA (a Harvest project takes its client's"
                " currency)",
                "correct the opportunity's currency, or the client's currency in the PSA",
            )
        )
    for item in contract.rate_overrides:
        if item["user_email"] not in people_by_email:
            problems.append(
                _invalid(
                    "Rate_Overrides__c",
                    f"no PSA user has the e-mail {item['user_email']}",
                    "correct the e-mail in Rate Overrides or add the person to the PSA",
                )
            )
    return problems
