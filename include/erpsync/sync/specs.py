"""The registry of entity specs: one :class:`~erpsync.sync.spec.EntitySpec` per entity.

Adding an entity = one spec here (source, model, mapper, keys, cursor, delete semantics, target
table, write-back rule), a core table in a migration, and its tests (README, "Adding an entity").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from erpsync.models import mappings, milestones
from erpsync.models.canonical import (
    Client,
    ContractRateOverride,
    Person,
    PsaClient,
    RateCard,
    TaxCode,
    TaxProfile,
    TaxRate,
)
from erpsync.sync.deletes import ID_SET_COMPARE, SALESFORCE_DELETED_FEED
from erpsync.sync.sources import (
    BusinessCentralList,
    BusinessCentralWebService,
    HarvestList,
    HarvestNested,
    SalesforceQuery,
)
from erpsync.sync.spec import CursorSpec, EntitySpec, Record, RunInfo

if TYPE_CHECKING:
    import psycopg

RAW_TABLE = "raw.vendor_records"

_ACCOUNT = SalesforceQuery(
    "Account",
    (
        "Name",
        "AccountNumber",
        "BillingStreet",
        "BillingCity",
        "BillingPostalCode",
        "BillingCountry",
        # State and Country/Territory Picklists: the ISO code (the label above is the fallback)
        "BillingCountryCode",
        # multi-currency orgs only (a documented pack requirement: vendor/salesforce/README.md)
        "CurrencyIsoCode",
        "Payment_Terms__c",
        "VAT_Id__c",
        "Tax_Exempt__c",
        "Tax_Exemption_Reason__c",
        "Reverse_Charge__c",
        "PO_Required__c",
        "ERP_Customer_No__c",
        # the CRM owner named on VAT exceptions (writeback/targets.py reads it from the payload)
        "OwnerId",
    ),
)
_SF_CURSOR = CursorSpec(field="SystemModstamp", id_field="Id", overlap_seconds=1)
_HARVEST_CURSOR = CursorSpec(field="updated_at", id_field="id", overlap_seconds=1)
_BC_CURSOR = CursorSpec(field="lastModifiedDateTime", id_field="id", overlap_seconds=1)

# What every spec of one vendor listing shares (system, cursor, delete strategy, record key):
# each spec below names only what is its own.
_crm = partial(
    EntitySpec,
    system="crm",
    cursor=_SF_CURSOR,
    deletes=SALESFORCE_DELETED_FEED,
    deleted_flag="IsDeleted",
    raw_table=RAW_TABLE,
)
#: Harvest and Business Central have no delete feed: deletes by comparing full id sets
_by_id_set = partial(EntitySpec, raw_table=RAW_TABLE, deletes=ID_SET_COMPARE, record_key="id")
_psa = partial(_by_id_set, system="psa", cursor=_HARVEST_CURSOR)
_erp = partial(_by_id_set, system="erp", cursor=_BC_CURSOR)

CLIENTS = _crm(
    name="clients",
    source=_ACCOUNT,
    model=Client,
    mapper=mappings.salesforce_account_to_client,
    natural_key=("crm_id",),
    core_table="core.clients",
    id_map=("client", "crm_id", "crm_id"),
    write_back=("erp.customer", "psa.client"),
    description="CRM Accounts: legal name, billing address, currency, payment terms, PO rule.",
)

TAX_PROFILES = _crm(
    name="tax_profiles",
    source=_ACCOUNT,
    model=TaxProfile,
    mapper=mappings.salesforce_account_to_tax_profile,
    natural_key=("crm_account_id",),
    core_table="core.tax_profiles",
    write_back=("erp.customer",),
    description="CRM Account tax fields: VAT id (validated), exemption, reverse charge.",
)

TAX_CODES = _erp(
    name="tax_codes",
    source=BusinessCentralList("taxGroups"),
    model=TaxCode,
    mapper=mappings.bc_tax_group_to_tax_code,
    natural_key=("code",),
    core_table="core.tax_codes",
    description="ERP tax groups (VAT codes).",
)


def _date_vat_rates(conn: psycopg.Connection[Any], run: RunInfo) -> None:
    from erpsync.sync import vat_rates

    vat_rates.date_vat_rates(conn, run)


TAX_RATES = _erp(
    name="tax_rates",
    # page 472 "VAT Posting Setup", published by the BC admin as OData V4 web service
    # VATPostingSetup (vendor/business_central/README.md); no dates, no modstamp: full reads
    source=BusinessCentralWebService(
        "VATPostingSetup", ("VAT_Bus_Posting_Group", "VAT_Prod_Posting_Group")
    ),
    model=TaxRate,
    mapper=mappings.bc_vat_posting_setup_to_tax_rate,
    natural_key=("vat_bus_posting_group", "tax_code"),
    cursor=None,
    record_key="key",
    core_table="core.vat_posting_setup",
    after_merge=_date_vat_rates,
    description="ERP VAT Posting Setup (VAT % per tax area and tax code); erpsync dates each "
    "rate in core.tax_rates (a changed percentage closes the old period).",
)

PEOPLE = _psa(
    name="people",
    source=HarvestList("users"),
    model=Person,
    mapper=mappings.harvest_user_to_person,
    natural_key=("psa_id",),
    core_table="core.people",
    id_map=("person", "psa_id", "psa_id"),
    write_back=("erp.employee",),
    description="PSA users: name, e-mail, employee number, role.",
)


def _rate_card(kind: str, mapper: Callable[[Record], list[Record]]) -> EntitySpec:
    """One Harvest rate list per person (``/v2/users/{id}/<kind>_rates``) as rate-card rows of
    ``kind``, sharing core.rate_cards with the other kind."""
    return _psa(
        name=f"{kind}_rates",
        source=HarvestNested("users", f"{kind}_rates", "user_id"),
        model=RateCard,
        mapper=mapper,
        natural_key=("kind", "psa_rate_id"),
        core_table="core.rate_cards",
        history="effective_dated",
        scope={"kind": kind},
        description=(
            f"PSA {kind} rates per person, effective-dated; no currency (the client's applies) and"
            " read in full every run (the rate lists take no updated_since)."
        ),
    )


BILLABLE_RATES = _rate_card("billable", mappings.harvest_billable_rate_to_rate_card)
COST_RATES = _rate_card("cost", mappings.harvest_cost_rate_to_rate_card)

PSA_CLIENTS = _psa(
    name="psa_clients",
    source=HarvestList("clients"),
    model=PsaClient,
    mapper=mappings.harvest_client_to_psa_client,
    natural_key=("psa_id",),
    core_table="core.psa_clients",
    description=(
        "PSA clients and the currency Harvest prices their time in (Harvest's time entries and"
        " rates carry no currency)."
    ),
)

CONTRACT_RATE_OVERRIDES = _crm(
    name="contract_rate_overrides",
    source=SalesforceQuery(
        "Opportunity",
        (
            "IsWon",
            "IsClosed",
            "CurrencyIsoCode",
            "Rate_Overrides__c",
            "Contract_Version__c",
            "Change_Effective_Date__c",
            "PSA_Project_Id__c",
        ),
    ),
    model=ContractRateOverride,
    mapper=mappings.salesforce_opportunity_to_rate_overrides,
    natural_key=("opportunity_id", "user_email"),
    core_table="core.contract_rate_overrides",
    write_back=("psa.assignment_rate",),
    description="Contracted rate overrides of closed-won CRM opportunities.",
)

CONTRACT_MILESTONES = _crm(
    name="contract_milestones",
    source=SalesforceQuery(milestones.MILESTONE_SOBJECT, milestones.MILESTONE_FIELDS),
    model=milestones.CrmMilestone,
    mapper=milestones.salesforce_contract_milestone,
    natural_key=("crm_milestone_id",),
    core_table="core.crm_milestones",
    description=(
        "CRM Contract_Milestone__c (child of Opportunity): fixed-fee milestones and their "
        "acceptance (Harvest has no milestones). Pulled by the milestone sensor and the "
        "reconcile DAG's refresh_milestones, not by the nightly DAGs."
    ),
)

MASTER_DATA = (CLIENTS, TAX_PROFILES, TAX_CODES, TAX_RATES, PEOPLE)
RATES = (BILLABLE_RATES, COST_RATES, PSA_CLIENTS, CONTRACT_RATE_OVERRIDES)
MILESTONES = (CONTRACT_MILESTONES,)
ALL: dict[str, EntitySpec] = {s.name: s for s in (*MASTER_DATA, *RATES, *MILESTONES)}


def get(name: str) -> EntitySpec:
    try:
        return ALL[name]
    except KeyError:
        pass
    # the hourly time & expense specs live in their own module (own DAG, not in ALL)
    from erpsync.sync import specs_time

    try:
        return specs_time.BY_NAME[name]
    except KeyError:
        known = sorted({*ALL, *specs_time.BY_NAME})
        raise KeyError(f"no entity spec named {name!r}; known: {known}") from None
