"""Field catalogue of the sandbox CRM's sObjects (Account, Opportunity, User, Contact).

The sandbox emulates Salesforce REST v60.0; this module is what ``describe`` returns and what
SOQL and the write endpoints validate field names and literal types against. It is strict: a
field that is not listed here does not exist, whatever a stored record holds (SOQL and writes
answer ``INVALID_FIELD`` as Salesforce does). Standard fields follow the Salesforce object
reference (each object cites its page below); custom fields (``__c``) are exactly the ones the
pack ships as Salesforce DX metadata in ``vendor/salesforce/force-app`` (names, types, lengths,
picklist values; ``tests/sandbox/test_crm_metadata.py`` keeps the two equal).

The org emulated has State and Country/Territory Picklists on (``BillingCountryCode`` exists)
and multiple currencies on (``CurrencyIsoCode`` exists): both are documented requirements of
the pack (vendor/salesforce/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FieldDef", "SObjectSchema", "SCHEMAS", "resolve_sobject", "salesforce_id"]

#: Field types (Salesforce ``describe`` spelling) with how SOQL literals must look for them.
DATETIME_TYPES = frozenset({"datetime"})
DATE_TYPES = frozenset({"date"})
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})
BOOLEAN_TYPES = frozenset({"boolean"})
ID_TYPES = frozenset({"id", "reference"})
TEXT_TYPES = frozenset({"string", "textarea", "picklist", "email", "phone", "url"})


@dataclass(frozen=True)
class FieldDef:
    """One field as ``describe`` reports it."""

    name: str
    type: str
    label: str = ""
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    unique: bool = False
    custom: bool = False
    sortable: bool = True
    filterable: bool = True
    reference_to: tuple[str, ...] = ()
    #: total digits and decimals of a number/currency/percent field (0: the type's default)
    precision: int = 0
    scale: int = 0
    #: Values of a picklist, in order; a restricted one refuses any other value on write
    #: (``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``); ``default_value`` is set on create.
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    default_value: str | None = None
    #: Master-detail: the child's relationship to its master (``Opportunity__r``) and the
    #: master's relationship to its children (``Contract_Milestones__r``).
    relationship_name: str | None = None
    child_relationship: str | None = None

    def describe(self) -> dict[str, Any]:
        """The field entry of a ``describe`` response (the commonly read keys)."""
        soap = {
            "id": "tns:ID",
            "reference": "tns:ID",
            "boolean": "xsd:boolean",
            "double": "xsd:double",
            "currency": "xsd:double",
            "percent": "xsd:double",
            "int": "xsd:int",
            "date": "xsd:date",
            "datetime": "xsd:dateTime",
        }.get(self.type, "xsd:string")
        return {
            "name": self.name,
            "label": self.label or self.name.removesuffix("__c").replace("_", " "),
            "type": self.type,
            "soapType": soap,
            "length": self.length,
            "precision": self.precision
            or (18 if self.type in ("double", "currency", "percent") else 0),
            "scale": self.scale or (2 if self.type in ("currency",) else 0),
            "digits": 9 if self.type == "int" else 0,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "externalId": self.external_id,
            "idLookup": self.external_id or self.type == "id",
            "unique": self.unique,
            "custom": self.custom,
            "sortable": self.sortable,
            "filterable": self.filterable,
            "groupable": self.type not in ("textarea", "double", "currency", "percent"),
            "calculated": False,
            "defaultedOnCreate": self.name in _DEFAULTED,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name
            or (self.name[:-2] if self.type == "reference" and self.name.endswith("Id") else None),
            "cascadeDelete": self.relationship_name is not None,
            "restrictedPicklist": self.restricted,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": value == self.default_value,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for value in self.picklist
            ],
        }


_DEFAULTED = frozenset(
    {
        "Id",
        "IsDeleted",
        "CreatedDate",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "SystemModstamp",
        "OwnerId",
        "CurrencyIsoCode",
        "IsClosed",
        "IsWon",
    }
)


def _audit() -> list[FieldDef]:
    ro = {"createable": False, "updateable": False}
    return [
        FieldDef("IsDeleted", "boolean", "Deleted", nillable=False, **ro),
        FieldDef("CreatedDate", "datetime", "Created Date", nillable=False, **ro),
        FieldDef(
            "CreatedById",
            "reference",
            "Created By ID",
            18,
            nillable=False,
            reference_to=("User",),
            **ro,
        ),
        FieldDef("LastModifiedDate", "datetime", "Last Modified Date", nillable=False, **ro),
        FieldDef(
            "LastModifiedById",
            "reference",
            "Last Modified By ID",
            18,
            nillable=False,
            reference_to=("User",),
            **ro,
        ),
        FieldDef("SystemModstamp", "datetime", "System Modstamp", nillable=False, **ro),
    ]


def _id() -> FieldDef:
    return FieldDef(
        "Id", "id", "Record ID", 18, nillable=False, createable=False, updateable=False, unique=True
    )


def _c(name: str, type_: str, label: str, length: int = 0, **kw: Any) -> FieldDef:
    """A custom field (it must also be shipped in vendor/salesforce/force-app)."""
    return FieldDef(name, type_, label, length=length, custom=True, **kw)


@dataclass(frozen=True)
class SObjectSchema:
    """One sObject: its name, id key prefix, fields and required-on-create fields."""

    name: str
    label: str
    key_prefix: str
    fields: tuple[FieldDef, ...]
    required: tuple[str, ...] = ()
    custom: bool = False
    _by_lower: dict[str, FieldDef] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_lower.update({f.name.lower(): f for f in self.fields})

    def lookup(self, name: str) -> FieldDef | None:
        """The field called ``name`` (case-insensitive, as Salesforce resolves names)."""
        return self._by_lower.get(name.lower())

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def external_ids(self) -> list[str]:
        return [f.name for f in self.fields if f.external_id]

    def describe(self, version: str) -> dict[str, Any]:
        """The ``/sobjects/{name}/describe`` document."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "replicateable": True,
            "undeletable": True,
            "triggerable": True,
            "fields": [f.describe() for f in self.fields],
            "childRelationships": [
                {
                    "childSObject": child.name,
                    "field": f.name,
                    "relationshipName": f.child_relationship,
                    "cascadeDelete": True,
                    "restrictedDelete": False,
                }
                for child in SCHEMAS.values()
                for f in child.fields
                if f.relationship_name and self.name in f.reference_to
            ],
            "recordTypeInfos": [],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def summary(self, version: str) -> dict[str, Any]:
        """The entry of this object in ``GET /sobjects`` (the global describe)."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "replicateable": True,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


#: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_account.htm
#: (address fields: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/compound_fields_address.htm;
#: ``BillingCountryCode`` exists only with State and Country/Territory Picklists on,
#: ``CurrencyIsoCode`` only in multi-currency orgs)
ACCOUNT = SObjectSchema(
    "Account",
    "Account",
    "001",
    (
        _id(),
        FieldDef("Name", "string", "Account Name", 255, nillable=False),
        FieldDef("AccountNumber", "string", "Account Number", 40),
        FieldDef("Type", "picklist", "Account Type", 255),
        FieldDef("Industry", "picklist", "Industry", 255),
        FieldDef("BillingStreet", "textarea", "Billing Street", 255, sortable=False),
        FieldDef("BillingCity", "string", "Billing City", 40),
        FieldDef("BillingPostalCode", "string", "Billing Zip/Postal Code", 20),
        FieldDef("BillingCountry", "string", "Billing Country", 80),
        FieldDef("BillingCountryCode", "picklist", "Billing Country Code", 10),
        FieldDef("OwnerId", "reference", "Owner ID", 18, reference_to=("User",)),
        FieldDef("CurrencyIsoCode", "picklist", "Account Currency", 3),
        _c(
            "Payment_Terms__c",
            "picklist",
            "Payment Terms",
            255,
            picklist=("Net 14", "Net 30", "Net 45", "Net 60"),
        ),
        _c("VAT_Id__c", "string", "VAT ID", 40),
        _c("Tax_Exempt__c", "boolean", "Tax Exempt", nillable=False),
        _c("Tax_Exemption_Reason__c", "string", "Tax Exemption Reason", 255),
        _c("Reverse_Charge__c", "boolean", "Reverse Charge", nillable=False),
        _c("PO_Required__c", "boolean", "PO Required", nillable=False),
        _c("ERP_Customer_No__c", "string", "ERP Customer No", 20, external_id=True),
        *_audit(),
    ),
    required=("Name",),
)

#: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_opportunity.htm
OPPORTUNITY = SObjectSchema(
    "Opportunity",
    "Opportunity",
    "006",
    (
        _id(),
        FieldDef("AccountId", "reference", "Account ID", 18, reference_to=("Account",)),
        FieldDef("Name", "string", "Name", 120, nillable=False),
        FieldDef("StageName", "picklist", "Stage", 255, nillable=False),
        FieldDef("Type", "picklist", "Opportunity Type", 255),
        FieldDef("Amount", "currency", "Amount"),
        FieldDef("CloseDate", "date", "Close Date", nillable=False),
        FieldDef("Probability", "percent", "Probability (%)"),
        FieldDef(
            "IsClosed", "boolean", "Closed", nillable=False, createable=False, updateable=False
        ),
        FieldDef("IsWon", "boolean", "Won", nillable=False, createable=False, updateable=False),
        FieldDef("OwnerId", "reference", "Owner ID", 18, reference_to=("User",)),
        FieldDef("CurrencyIsoCode", "picklist", "Opportunity Currency", 3),
        _c(
            "Billing_Model__c",
            "picklist",
            "Billing Model",
            255,
            picklist=("Time and Materials", "Fixed Fee", "Retainer"),
        ),
        _c("Contract_Start__c", "date", "Contract Start"),
        _c("Contract_End__c", "date", "Contract End"),
        _c("PO_Number__c", "string", "PO Number", 80),
        _c("Cap_Type__c", "picklist", "Cap Type", 255, picklist=("Hours", "Amount")),
        _c("Cap_Value__c", "double", "Cap Value", precision=16, scale=2),
        _c(
            "Rate_Overrides__c",
            "textarea",
            "Rate Overrides",
            32768,
            sortable=False,
            filterable=False,
        ),
        _c("Retainer_Amount__c", "currency", "Retainer Amount", precision=16, scale=2),
        _c(
            "Retainer_Period__c",
            "picklist",
            "Retainer Period",
            255,
            picklist=("Monthly", "Quarterly"),
        ),
        _c("Contract_Version__c", "double", "Contract Version", precision=18, scale=0),
        # the day a change order (Contract Version > 1) takes effect: work dated before it keeps
        # the previous version's terms and rates
        _c("Change_Effective_Date__c", "date", "Change Effective Date"),
        _c("PSA_Project_Id__c", "string", "PSA Project Id", 40, external_id=True),
        _c("Expense_Markup_Pct__c", "percent", "Expense Markup Pct", precision=5, scale=2),
        *_audit(),
    ),
    required=("Name", "StageName", "CloseDate"),
)

#: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_user.htm
USER = SObjectSchema(
    "User",
    "User",
    "005",
    (
        _id(),
        FieldDef("Username", "string", "Username", 80, nillable=False, unique=True),
        FieldDef("FirstName", "string", "First Name", 40),
        FieldDef("LastName", "string", "Last Name", 80, nillable=False),
        FieldDef("Name", "string", "Full Name", 121, createable=False, updateable=False),
        FieldDef("Email", "email", "Email", 128, nillable=False),
        FieldDef("Title", "string", "Title", 80),
        FieldDef("Department", "string", "Department", 80),
        FieldDef("IsActive", "boolean", "Active", nillable=False),
        FieldDef("CurrencyIsoCode", "picklist", "Currency", 3),
        *_audit(),
    ),
    required=("Username", "LastName", "Email"),
)

#: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_contact.htm
CONTACT = SObjectSchema(
    "Contact",
    "Contact",
    "003",
    (
        _id(),
        FieldDef("AccountId", "reference", "Account ID", 18, reference_to=("Account",)),
        FieldDef("FirstName", "string", "First Name", 40),
        FieldDef("LastName", "string", "Last Name", 80, nillable=False),
        FieldDef("Name", "string", "Full Name", 121, createable=False, updateable=False),
        FieldDef("Email", "email", "Email", 80),
        FieldDef("Phone", "phone", "Business Phone", 40),
        FieldDef("Title", "string", "Title", 128),
        FieldDef("OwnerId", "reference", "Owner ID", 18, reference_to=("User",)),
        FieldDef("CurrencyIsoCode", "picklist", "Contact Currency", 3),
        *_audit(),
    ),
    required=("LastName",),
)

#: A fixed-fee contract's milestone: custom object, master-detail child of Opportunity (a
#: contract's milestones and their acceptance live in the CRM; Harvest has no milestones).
#: Shipped as Salesforce DX source in vendor/salesforce/force-app/main/default/objects/
#: Contract_Milestone__c/. Standard fields of a custom object (a master-detail child has no
#: OwnerId): https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/system_fields.htm
#: Custom field types: https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customfield.htm
MILESTONE_STATUSES = ("Planned", "Accepted", "Invoiced")
CONTRACT_MILESTONE = SObjectSchema(
    "Contract_Milestone__c",
    "Contract Milestone",
    "a0M",
    (
        _id(),
        FieldDef("Name", "string", "Contract Milestone Name", 80, nillable=False),
        _c(
            "Opportunity__c",
            "reference",
            "Opportunity",
            18,
            nillable=False,
            updateable=False,  # master-detail, not reparentable
            reference_to=("Opportunity",),
            relationship_name="Opportunity__r",
            child_relationship="Contract_Milestones__r",
        ),
        _c("Amount__c", "currency", "Amount", precision=18, scale=2),
        _c("Due_Date__c", "date", "Due Date"),
        _c(
            "Status__c",
            "picklist",
            "Status",
            255,
            nillable=False,
            picklist=MILESTONE_STATUSES,
            restricted=True,
            default_value="Planned",
        ),
        _c("Accepted_Date__c", "date", "Accepted Date"),
        _c("Invoice_Number__c", "string", "Invoice Number", 35),
        *_audit(),
    ),
    required=("Name", "Opportunity__c"),
    custom=True,
)

#: The queryable objects, by canonical name.
SCHEMAS: dict[str, SObjectSchema] = {
    s.name: s for s in (ACCOUNT, OPPORTUNITY, USER, CONTACT, CONTRACT_MILESTONE)
}
_SCHEMAS_LOWER = {k.lower(): k for k in SCHEMAS}
_BY_PREFIX = {s.key_prefix: s.name for s in SCHEMAS.values()}


def resolve_sobject(name: str) -> str | None:
    """Canonical sObject name for ``name`` (case-insensitive), or None if not supported."""
    return _SCHEMAS_LOWER.get(name.lower())


def sobject_for_id(record_id: str) -> str | None:
    """The sObject an id belongs to, by its three-character key prefix."""
    return _BY_PREFIX.get(record_id[:3])


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def salesforce_id(id15: str) -> str:
    """Extend a 15-character, case-sensitive Salesforce id with its 3-character case suffix."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = 0
        for i, ch in enumerate(chunk):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        suffix += _B32[bits]
    return id15 + suffix


def looks_like_id(value: str) -> bool:
    """True if ``value`` has the shape of a 15- or 18-character Salesforce id."""
    return len(value) in (15, 18) and value.isalnum() and value.isascii()
