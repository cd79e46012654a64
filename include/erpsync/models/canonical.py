"""Canonical models: the warehouse's shape of clients, tax profiles, tax codes and rates, people,
rate cards and contracted rate overrides, independent of any vendor.

Money and rates are ``Decimal``, never float (a float input is read through its shortest
repr, never binary arithmetic). Custom error types are catalogue reason codes
(:mod:`erpsync.models.reasons`), so a failed record is quarantined with a code a steward
understands. Validators are built once: :data:`ADAPTERS` holds one prebuilt ``TypeAdapter`` per
model and every record reuses it.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

from erpsync.models import reasons
from erpsync.models.reference import COUNTRIES, CURRENCY_MINOR_UNITS

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _required_text(value: object) -> object:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PydanticCustomError(reasons.MISSING_REQUIRED_FIELD, "required value is empty")
    return value


def _currency(value: object) -> str:
    if value is None or value == "":
        raise PydanticCustomError(reasons.MISSING_REQUIRED_FIELD, "currency is empty")
    code = str(value).strip().upper()
    if code not in CURRENCY_MINOR_UNITS:
        raise PydanticCustomError(
            reasons.INVALID_CURRENCY, "'{value}' is not a supported currency", {"value": value}
        )
    return code


def _country(value: object) -> str:
    if value is None or value == "":
        raise PydanticCustomError(reasons.MISSING_REQUIRED_FIELD, "country is empty")
    code = str(value).strip().upper()
    if code not in COUNTRIES:
        raise PydanticCustomError(
            reasons.INVALID_COUNTRY, "'{value}' is not an ISO country code", {"value": value}
        )
    return code


def _exact_number(value: object) -> object:
    """Money arrives as exact JSON numbers or strings; a float is converted through its repr
    (the shortest round-trip text), never through binary arithmetic."""
    if isinstance(value, bool):
        raise PydanticCustomError(reasons.INVALID_NUMBER, "a boolean is not a number")
    if isinstance(value, float):
        return Decimal(repr(value))
    if value is None or value == "":
        raise PydanticCustomError(reasons.MISSING_REQUIRED_FIELD, "amount is empty")
    return value


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise PydanticCustomError(
            reasons.NEGATIVE_RATE, "{value} is below zero", {"value": str(value)}
        )
    return value


def _email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value):
        raise PydanticCustomError(
            reasons.INVALID_EMAIL, "'{value}' is not an e-mail address", {"value": value}
        )
    return value.lower()


RequiredText = Annotated[str, BeforeValidator(_required_text)]
Currency = Annotated[str, BeforeValidator(_currency)]
Country = Annotated[str, BeforeValidator(_country)]
Rate = Annotated[Decimal, BeforeValidator(_exact_number), AfterValidator(_non_negative)]
Email = Annotated[str, BeforeValidator(_required_text), AfterValidator(_email)]


class Canonical(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class _Dated(Canonical):
    valid_from: dt.date
    valid_to: dt.date | None = None

    @model_validator(mode="after")
    def _range(self):
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise PydanticCustomError(
                reasons.INVALID_DATE_RANGE,
                "valid_to {to} is before valid_from {frm}",
                {"to": str(self.valid_to), "frm": str(self.valid_from)},
            )
        return self


class Client(Canonical):
    crm_id: RequiredText
    legal_name: RequiredText
    account_number: str | None = None
    billing_street: str | None = None
    billing_city: str | None = None
    billing_postal_code: str | None = None
    billing_country: Country
    currency: Currency
    payment_terms: str | None = None
    payment_terms_days: int | None = None
    po_required: bool = False
    erp_customer_no: str | None = None


class TaxProfile(Canonical):
    crm_account_id: RequiredText
    country: Country
    vat_id: str | None = None
    vat_id_normalized: str | None = None
    vat_id_valid: bool | None = None
    vat_id_reason: str | None = None
    tax_exempt: bool = False
    exemption_reason: str | None = None
    reverse_charge: bool = False

    @model_validator(mode="after")
    def _exemption(self):
        if self.tax_exempt and not self.exemption_reason:
            raise PydanticCustomError(
                reasons.MISSING_EXEMPTION_REASON, "tax-exempt client has no exemption reason"
            )
        return self


class TaxCode(Canonical):
    code: RequiredText
    erp_id: RequiredText
    display_name: RequiredText
    tax_type: RequiredText


class TaxRate(Canonical):
    """A VAT rate as Business Central's VAT Posting Setup holds it: one percentage per VAT
    Business Posting Group (a customer's tax area) and VAT Product Posting Group (the tax code),
    without dates (erpsync.sync.vat_rates dates it in core.tax_rates)."""

    vat_bus_posting_group: str = ""
    tax_code: RequiredText
    rate_percent: Annotated[Decimal, BeforeValidator(_exact_number)]
    calculation_type: str | None = None
    vat_identifier: str | None = None
    blocked: bool = False

    @model_validator(mode="after")
    def _percent(self):
        if not (Decimal(0) <= self.rate_percent <= Decimal(100)):
            raise PydanticCustomError(
                reasons.RATE_OUT_OF_RANGE,
                "rate {value}% is outside 0..100",
                {"value": str(self.rate_percent)},
            )
        return self


class Person(Canonical):
    psa_id: RequiredText
    first_name: RequiredText
    last_name: RequiredText
    email: Email
    employee_number: str | None = None
    role: str | None = None
    is_contractor: bool = False
    is_active: bool = True
    weekly_capacity_seconds: int | None = None


class RateCard(_Dated):
    kind: Literal["billable", "cost"]
    psa_rate_id: RequiredText
    person_psa_id: RequiredText
    amount: Rate
    # Harvest rates carry no currency (https://help.getharvest.com/api-v2/users-api/users/
    # billable-rates/): the amount is in the currency of the client it prices
    currency: Currency | None = None


class PsaClient(Canonical):
    """A Harvest client (https://help.getharvest.com/api-v2/clients-api/clients/clients/): the
    currency Harvest prices the client's time in (its time entries and rates carry none)."""

    psa_id: RequiredText
    name: str | None = None
    currency: Currency | None = None
    is_active: bool = True


class ContractRateOverride(Canonical):
    opportunity_id: RequiredText
    user_email: Email
    role: str | None = None
    rate: Rate
    currency: Currency
    contract_version: int = 1
    psa_project_id: str | None = None
    #: the first day this rate applies (a dated element, or the change order's effective date)
    effective_from: dt.date | None = None


#: One prebuilt validator per canonical model, reused for every record.
ADAPTERS: dict[type[Canonical], TypeAdapter] = {
    model: TypeAdapter(model)
    for model in (
        Client,
        TaxProfile,
        TaxCode,
        TaxRate,
        Person,
        RateCard,
        PsaClient,
        ContractRateOverride,
    )
}


def adapter_for(model: type[Canonical]) -> TypeAdapter:
    return ADAPTERS[model]
