"""The tenant check: is everything the pack needs there, and permitted, in each configured system?

``erpsync check-systems`` and the preflight DAG's ``check_tenants`` task run :func:`run_checks`
with the pack's own clients (:class:`SystemClients`, each on its default Airflow connection, built
by the caller) and get one :class:`Check` per requirement, printed as
``OK|FAIL <system> <requirement> — <detail or what to fix>``.

What is checked, and where each list comes from:

* **Salesforce**: the token comes from the org's My Domain host (the client-credentials flow is
  refused on ``login.salesforce.com``/``test.salesforce.com``); every object and field the pack
  reads exists and is visible to the Run-As user (``describe`` lists only the fields the user
  can see), taken from the pack's own SOQL field lists (every Salesforce sync spec in
  :mod:`erpsync.sync.specs`, the onboarding's ``OPPORTUNITY_FIELDS``) and from the custom fields
  shipped in ``vendor/salesforce`` (``*.field-meta.xml``); every field the pack writes is
  ``updateable`` (:data:`CRM_WRITES`).
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_describe.htm
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
* **Harvest**: the token and ``Harvest-Account-Id`` work (``GET /v2/users/me``); the company
  (``GET /v2/company``, administrators only) has the modules the pack relies on switched on
  (:data:`HARVEST_FEATURES`); the tasks onboarding assigns exist and are active, or can be
  created by the administrator token.
  https://help.getharvest.com/api-v2/company-api/company/company/
  https://help.getharvest.com/api-v2/users-api/users/users/#retrieve-the-currently-authenticated-user
* **Business Central**: the Entra token, the company, and each entity set or published web
  service the pack reads (:data:`ERP_REQUIREMENTS`, one line each), including the G/L account and
  unit of measure invoice lines are posted with.
  https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/
  https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/odata-web-services

Nothing is written to any system.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from erpsync.connectors.errors import ConnectorError, VendorError

if TYPE_CHECKING:
    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.connectors.harvest import HarvestClient
    from erpsync.connectors.salesforce import SalesforceClient

__all__ = [
    "CRM_WRITES",
    "ERP_REQUIREMENTS",
    "ERP_REQUIREMENTS_PENDING",
    "HARVEST_FEATURES",
    "Check",
    "ErpRequirement",
    "SystemClients",
    "crm_checks",
    "crm_field_requirements",
    "erp_checks",
    "format_check",
    "psa_checks",
    "run_checks",
]

SYSTEMS = ("salesforce", "harvest", "business_central")


@dataclass(frozen=True)
class SystemClients:
    """The three vendor clients the checks read through (built by the caller; no I/O until a
    check runs)."""

    crm: SalesforceClient
    psa: HarvestClient
    erp: BusinessCentralClient

    @classmethod
    def default(cls) -> SystemClients:
        """Each client on its default Airflow connection (``default_conn_id``)."""
        from erpsync.connectors.business_central import BusinessCentralClient
        from erpsync.connectors.harvest import HarvestClient
        from erpsync.connectors.salesforce import SalesforceClient

        return cls(crm=SalesforceClient(), psa=HarvestClient(), erp=BusinessCentralClient())


@dataclass(frozen=True)
class Check:
    """One requirement's outcome: ``detail`` says what was found (OK) or what to fix (FAIL)."""

    ok: bool
    system: str
    requirement: str
    detail: str


def format_check(check: Check) -> str:
    return f"{'OK' if check.ok else 'FAIL'} {check.system} {check.requirement} — {check.detail}"


def _problem(exc: Exception) -> str:
    if isinstance(exc, VendorError):
        return f"HTTP {exc.status} {exc.code or ''}".rstrip() + f": {exc.vendor_message}"
    return str(getattr(exc, "message", None) or exc)


# =========================================================================== Salesforce

#: Fields the pack writes (object, field): each must be updateable by the Run-As user. A row
#: applies once the pack reads the object (so the table can name objects still being added).
CRM_WRITES: tuple[tuple[str, str], ...] = (
    ("Opportunity", "PSA_Project_Id__c"),  # onboarding, step crm_writeback
    ("Contract_Milestone__c", "Status__c"),  # milestone billed back after the ERP invoice posts
    ("Contract_Milestone__c", "Invoice_Number__c"),
)
#: Hosts that do not issue client-credentials tokens (the flow needs the org's My Domain).
GENERIC_LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
SALESFORCE_METADATA = Path("vendor") / "salesforce"


def _pack_soql_fields() -> dict[str, set[str]]:
    from erpsync.onboarding.contracts import OPPORTUNITY_FIELDS
    from erpsync.sync import specs
    from erpsync.sync.sources import SalesforceQuery
    from erpsync.sync.spec import EntitySpec

    wanted: dict[str, set[str]] = {"Opportunity": set(OPPORTUNITY_FIELDS)}
    for value in vars(specs).values():
        if isinstance(value, EntitySpec) and isinstance(value.source, SalesforceQuery):
            source = value.source
            fields = wanted.setdefault(source.sobject, set())
            fields.update(source.fields)
            fields.update(("Id", source.modstamp_field))
            if value.deleted_flag:
                fields.add(value.deleted_flag)
    return wanted


def _shipped_fields(root: Path) -> dict[str, set[str]]:
    """Custom fields of the shipped Salesforce DX project (``objects/<Object>/fields/*``)."""
    shipped: dict[str, set[str]] = {}
    for path in sorted((root / SALESFORCE_METADATA).glob("**/objects/*/fields/*.field-meta.xml")):
        sobject = path.parent.parent.name
        name = path.name.removesuffix(".field-meta.xml")
        try:
            tree = ET.parse(path)  # noqa: S314 - a file of this repository
            full = tree.getroot().findtext("{*}fullName")
        except ET.ParseError:
            full = None
        shipped.setdefault(sobject, set()).add((full or name).split(".")[-1])
    return shipped


def crm_field_requirements(project_dir: Path | None = None) -> dict[str, list[str]]:
    """Object -> fields the pack needs to read: its SOQL field lists plus the shipped metadata."""
    from erpsync import paths

    wanted = _pack_soql_fields()
    for sobject, fields in _shipped_fields(project_dir or paths.project_dir()).items():
        wanted.setdefault(sobject, set()).update(fields)
    return {sobject: sorted(fields) for sobject, fields in sorted(wanted.items())}


def crm_checks(client: SalesforceClient, project_dir: Path | None = None) -> Iterator[Check]:
    system = "salesforce"
    try:
        client._ensure_session()
        host = urlsplit(client.base_url).hostname or ""
        if host in GENERIC_LOGIN_HOSTS:
            yield Check(
                False,
                system,
                "auth",
                f"the connection host is {host}: client-credentials tokens come from the org's "
                "My Domain, set host to https://<MyDomain>.my.salesforce.com",
            )
            return
        client._auth_headers()  # the client-credentials token request
    except ConnectorError as exc:
        yield Check(
            False,
            system,
            "auth",
            f"token request refused ({_problem(exc)}): check the External Client App's consumer "
            "key/secret (connection login/password), that it enables the client credentials flow "
            "with a Run-As user, and that the host is the org's My Domain",
        )
        return
    yield Check(True, system, "auth", f"client-credentials token from {client.base_url}")

    writes: dict[str, list[str]] = {}
    for sobject, field in CRM_WRITES:
        writes.setdefault(sobject, []).append(field)
    for sobject, fields in crm_field_requirements(project_dir).items():
        path = f"/services/data/{client.api_version}/sobjects/{sobject}/describe"
        try:
            response = client.request("GET", path, accept=(404,))
        except ConnectorError as exc:
            yield Check(False, system, f"{sobject} readable", f"describe failed: {_problem(exc)}")
            continue
        if response.status_code == 404:
            yield Check(
                False,
                system,
                f"{sobject} readable",
                "object not found or not visible to the Run-As user: deploy vendor/salesforce "
                "(`sf project deploy start`) and assign its permission set to the Run-As user",
            )
            continue
        describe = response.json()
        by_name = {f["name"].lower(): f for f in describe.get("fields") or []}
        if not describe.get("queryable", True):
            yield Check(
                False, system, f"{sobject} readable", "object not queryable by the Run-As user"
            )
        for field in fields:
            found = by_name.get(field.lower())
            requirement = f"{sobject}.{field} readable"
            if found is None:
                yield Check(
                    False,
                    system,
                    requirement,
                    "field missing or hidden from the Run-As user: deploy vendor/salesforce and "
                    "give the Run-As user's permission set read access to it",
                )
            else:
                yield Check(True, system, requirement, f"{found.get('type', '?')} field present")
        for field in writes.get(sobject, ()):
            found = by_name.get(field.lower())
            requirement = f"{sobject}.{field} updateable"
            if found is not None and found.get("updateable"):
                yield Check(True, system, requirement, "the Run-As user may edit it")
            else:
                yield Check(
                    False,
                    system,
                    requirement,
                    "the Run-As user cannot edit it: grant edit access to the field in the "
                    "permission set of vendor/salesforce",
                )


# =========================================================================== Harvest

#: Company modules the pack relies on (``GET /v2/company`` booleans) and why.
HARVEST_FEATURES: tuple[tuple[str, str], ...] = (
    ("approval_feature", "Timesheet Approval: time and expenses are billed only once approved"),
    ("expense_feature", "Expenses: the pack syncs and bills expenses"),
    ("invoice_feature", "Invoices: mirroring the ERP's billed state into Harvest"),
)


def _onboarding_tasks() -> list[str]:
    from erpsync.onboarding.setup import PROJECT_TASKS

    return sorted({name for names in PROJECT_TASKS.values() for name in names})


def psa_checks(client: HarvestClient) -> Iterator[Check]:
    system = "harvest"
    try:
        client._ensure_session()
    except ConnectorError as exc:
        yield Check(False, system, "auth", _problem(exc))
        return
    if not client.account_id:
        yield Check(
            False,
            system,
            "account id",
            "set the connection extra account_id (Harvest ID > Developers > your token's "
            "Account ID); without Harvest-Account-Id Harvest refuses the token",
        )
        return
    agent = client.user_agent
    if "(" not in agent or not ("@" in agent or "http" in agent):
        yield Check(
            False,
            system,
            "user agent",
            "set the connection extra user_agent to 'App name (contact email or URL)' as "
            "Harvest requires",
        )
    try:
        me = client.request_json("GET", "/v2/users/me")
    except ConnectorError as exc:
        yield Check(
            False,
            system,
            "auth",
            f"GET /v2/users/me refused ({_problem(exc)}): check the personal access token "
            "(connection password) and the account_id extra",
        )
        return
    yield Check(
        True,
        system,
        "auth",
        f"token of user {me.get('id')} on account {client.account_id}",
    )
    try:
        company = client.request_json("GET", "/v2/company")
    except ConnectorError as exc:
        yield Check(
            False,
            system,
            "administrator",
            f"GET /v2/company refused ({_problem(exc)}): the token must belong to a Harvest "
            "Administrator (the pack reads every user, rate and project and creates projects)",
        )
        return
    yield Check(True, system, "administrator", f"company {company.get('name')!r} readable")
    for feature, why in HARVEST_FEATURES:
        if company.get(feature) is True:
            yield Check(True, system, feature, "on")
        else:
            yield Check(False, system, feature, f"turn on {why} (Settings > Modules)")
    tasks: dict[str, dict[str, Any]] = {}
    try:
        for page in client.iter_pages("tasks"):
            for task in page:
                tasks.setdefault(str(task.get("name", "")).strip().lower(), task)
    except ConnectorError as exc:
        yield Check(False, system, "tasks readable", _problem(exc))
        return
    for name in _onboarding_tasks():
        found = tasks.get(name.lower())
        requirement = f"task {name!r}"
        if found is None:
            yield Check(True, system, requirement, "absent; onboarding creates it")
        elif found.get("is_active") is False:
            yield Check(
                False,
                system,
                requirement,
                f"task {found.get('id')} is archived: restore it in Manage > Tasks "
                "(onboarding assigns it to new projects)",
            )
        else:
            yield Check(True, system, requirement, f"task {found.get('id')} active")


# =========================================================================== Business Central


@dataclass(frozen=True)
class ErpRequirement:
    """One thing the pack reads in Business Central: an API v2.0 entity set (``entity``, with an
    optional OData ``filter`` that must match) or an OData V4 web service published for the
    company (``web_service``). ``fix`` says what the admin does when it is missing."""

    name: str
    fix: str
    entity: str | None = None
    filter: Callable[[], str] | None = None
    web_service: str | None = None
    #: extra condition on the first matching record: returns a problem or None
    inspect: Callable[[dict[str, Any]], str | None] | None = None


def _revenue_account() -> str:
    """The G/L account the push posts invoice lines to (``ERPSYNC_BC_REVENUE_ACCOUNT``)."""
    from erpsync.invoicing import push_erp

    return push_erp.revenue_account()


def _hour_unit() -> str:
    """The unit of measure of hour-based lines (``ERPSYNC_BC_HOUR_UNIT``)."""
    from erpsync.invoicing import push_erp

    return push_erp.hour_unit()


def _posting_account(record: dict[str, Any]) -> str | None:
    """What Business Central checks on the G/L account of a sales line (``CheckGLAcc``:
    Account Type Posting, not Blocked; ``TestField("Direct Posting", true)``)."""
    number = record.get("number")
    if record.get("accountType") not in (None, "Posting"):
        return f"G/L account {number} has account type {record.get('accountType')}, not Posting"
    if record.get("blocked") is True:
        return f"G/L account {number} is blocked"
    if record.get("directPosting") is False:
        return f"G/L account {number} has Direct Posting off"
    return None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_PAYMENT_TERMS = ErpRequirement(
    "paymentTerms readable",
    "set up Payment Terms (customers get theirs by paymentTermsId)",
    entity="paymentTerms",
)
_TAX_AREAS = ErpRequirement(
    "taxAreas readable",
    "set up Tax Areas (reverse-charge and exempt customers get theirs)",
    entity="taxAreas",
)
_TAX_GROUPS = ErpRequirement(
    "taxGroups readable",
    "set up VAT Product Posting Groups (invoice lines carry them as taxCode)",
    entity="taxGroups",
)
_VAT_POSTING_SETUP = ErpRequirement(
    "VATPostingSetup web service",
    "publish page 472 VAT Posting Setup as web service VATPostingSetup (Web Services page)",
    web_service="VATPostingSetup",
)
_REVENUE_ACCOUNT = ErpRequirement(
    "G/L account for invoice lines",
    "create the revenue G/L account invoice lines post to (Posting, Direct Posting on, not "
    "blocked) or name the tenant's in ERPSYNC_BC_REVENUE_ACCOUNT",
    entity="accounts",
    filter=lambda: f"number eq {_quote(_revenue_account())}",
    inspect=_posting_account,
)
_HOUR_UNIT = ErpRequirement(
    "unit of measure for hours",
    "create the unit of measure time lines are invoiced in (Units of Measure page) or name "
    "the tenant's in ERPSYNC_BC_HOUR_UNIT",
    entity="unitsOfMeasure",
    filter=lambda: f"code eq {_quote(_hour_unit())}",
)

#: What the pack reads in the ERP, one line each (resource docs under
#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/
#: dynamics_taxgroup, dynamics_paymentterm, dynamics_taxarea, dynamics_account,
#: dynamics_unitofmeasure; web services:
#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/publish-web-service).
ERP_REQUIREMENTS: tuple[ErpRequirement, ...] = (
    _TAX_GROUPS,
    _PAYMENT_TERMS,
    _TAX_AREAS,
    _VAT_POSTING_SETUP,
    _REVENUE_ACCOUNT,
    _HOUR_UNIT,
)
#: Requirements written before the ERP sandbox serves what they read (none now: the sandbox
#: emulates every entity set and web service above).
ERP_REQUIREMENTS_PENDING: tuple[ErpRequirement, ...] = ()


def _company_name(client: BusinessCentralClient) -> str:
    record = client.request_json("GET", f"{client.api_root()}/companies({client.company_id})")
    return str(record.get("name") or "")


def erp_checks(
    client: BusinessCentralClient, requirements: Iterable[ErpRequirement] | None = None
) -> Iterator[Check]:
    system = "business_central"
    try:
        client._ensure_session()
        client._auth_headers()  # the Entra ID client-credentials token request
    except ConnectorError as exc:
        yield Check(
            False,
            system,
            "auth",
            f"token request refused ({_problem(exc)}): check the Entra app's client id/secret, "
            "the tenant extra, API.ReadWrite.All with admin consent",
        )
        return
    yield Check(True, system, "auth", "Entra ID token")
    try:
        company_id = client.company_id
        company = _company_name(client)
    except ConnectorError as exc:
        yield Check(
            False,
            system,
            "company",
            f"{_problem(exc)} (add the app in Microsoft Entra Applications with permission "
            "sets, and set company_id or company_name)",
        )
        return
    yield Check(True, system, "company", f"{company!r} ({company_id})")
    for req in ERP_REQUIREMENTS if requirements is None else requirements:
        yield _erp_requirement(client, company, req)


def _erp_requirement(client: BusinessCentralClient, company: str, req: ErpRequirement) -> Check:
    system = "business_central"
    if req.web_service:
        path = (
            f"/v2.0/{client.tenant}/{client.environment}/ODataV4/"
            f"Company({_quote(company)})/{req.web_service}"
        )
        params: dict[str, str] = {}
    else:
        path = client.entity_path(str(req.entity))
        params = {"$top": "1"}
        if req.filter is not None:
            params["$filter"] = req.filter()
    try:
        response = client.request("GET", path, params=params, accept=(403, 404))
    except ConnectorError as exc:
        return Check(False, system, req.name, f"{_problem(exc)}: {req.fix}")
    if response.status_code == 404:
        return Check(False, system, req.name, f"not found: {req.fix}")
    if response.status_code == 403:
        return Check(
            False,
            system,
            req.name,
            "not permitted: give the app's Microsoft Entra Applications entry a permission set "
            "that reads it",
        )
    values = (response.json() or {}).get("value") or []
    if not values:
        what = f"nothing matches {params['$filter']}" if "$filter" in params else "empty"
        return Check(False, system, req.name, f"{what}: {req.fix}")
    problem = req.inspect(values[0]) if req.inspect else None
    if problem:
        return Check(False, system, req.name, f"{problem}: {req.fix}")
    found = values[0].get("number") or values[0].get("code") or f"{len(values)}+ record(s)"
    return Check(True, system, req.name, f"readable ({found})")


# =========================================================================== all systems


def run_checks(
    clients: SystemClients, systems: Iterable[str] = SYSTEMS, *, project_dir: Path | None = None
) -> Iterator[Check]:
    """Every requirement of the named systems, in order (a broken system never stops the next)."""
    runners: dict[str, Callable[[], Iterator[Check]]] = {
        "salesforce": lambda: crm_checks(clients.crm, project_dir=project_dir),
        "harvest": lambda: psa_checks(clients.psa),
        "business_central": lambda: erp_checks(clients.erp),
    }
    for system in systems:
        try:
            yield from runners[system]()
        except ConnectorError as exc:
            yield Check(False, system, "reachable", _problem(exc))
