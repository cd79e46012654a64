"""Canonical models (pydantic 2), the reason-code catalogue and the vendor mappings."""

from erpsync.models.canonical import (
    ADAPTERS,
    Client,
    ContractRateOverride,
    Person,
    RateCard,
    TaxCode,
    TaxProfile,
    TaxRate,
    adapter_for,
)
from erpsync.models.reasons import CATALOGUE, RecordError

__all__ = [
    "ADAPTERS",
    "CATALOGUE",
    "Client",
    "ContractRateOverride",
    "Person",
    "RateCard",
    "RecordError",
    "TaxCode",
    "TaxProfile",
    "TaxRate",
    "adapter_for",
]
