"""Entity sets of the Business Central sandbox: EDM property types, URL segments, store names.

The property lists follow the Business Central API v2.0 resource types (customer, project,
employee, taxGroup, salesInvoice, salesInvoiceLine, timeRegistrationEntry, company) plus the
custom ``erpsync/finance/v1.0`` API page ``taxRates`` (see docs/reference/vendor-apis.md,
"Business Central sandbox", and the sandbox contract). They drive ``$filter``/``$select``
type-checking and the CSDL ``$metadata`` document.

Reference: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ENTITY_SETS", "EntitySet", "MONEY_FIELDS"]

G = "Edm.Guid"
S = "Edm.String"
D = "Edm.Decimal"
I32 = "Edm.Int32"
B = "Edm.Boolean"
DATE = "Edm.Date"
DTO = "Edm.DateTimeOffset"


@dataclass(frozen=True)
class EntitySet:
    """One entity set: URL segment, EDM entity type, store resource and property types."""

    segment: str
    entity_type: str
    resource: str
    properties: dict[str, str]
    tag: str
    #: API route family: "v2.0" (standard API) or "erpsync/finance/v1.0" (custom API page).
    api: str = "v2.0"
    writable: bool = False
    #: property whose value a POST assigns from a number series when absent.
    number_series: str | None = None
    read_only: frozenset[str] = field(default_factory=frozenset)


_AUDIT = {"lastModifiedDateTime": DTO}

CUSTOMER = {
    "id": G,
    "number": S,
    "displayName": S,
    "type": S,
    "addressLine1": S,
    "addressLine2": S,
    "city": S,
    "state": S,
    "country": S,
    "postalCode": S,
    "phoneNumber": S,
    "email": S,
    "website": S,
    "salespersonCode": S,
    "balanceDue": D,
    "creditLimit": D,
    "taxLiable": B,
    "taxAreaId": G,
    "taxAreaDisplayName": S,
    "taxRegistrationNumber": S,
    "currencyId": G,
    "currencyCode": S,
    "paymentTermsId": G,
    "paymentTermsCode": S,
    "shipmentMethodId": G,
    "paymentMethodId": G,
    "blocked": S,
    **_AUDIT,
}

PROJECT = {"id": G, "number": S, "displayName": S, **_AUDIT}

EMPLOYEE = {
    "id": G,
    "number": S,
    "displayName": S,
    "givenName": S,
    "middleName": S,
    "surname": S,
    "jobTitle": S,
    "addressLine1": S,
    "addressLine2": S,
    "city": S,
    "state": S,
    "country": S,
    "postalCode": S,
    "phoneNumber": S,
    "mobilePhone": S,
    "email": S,
    "personalEmail": S,
    "employmentDate": DATE,
    "terminationDate": DATE,
    "status": S,
    "birthDate": DATE,
    "statisticsGroupCode": S,
    **_AUDIT,
}

TAX_GROUP = {"id": G, "code": S, "displayName": S, "taxType": S, **_AUDIT}

TAX_RATE = {
    "id": G,
    "taxGroupCode": S,
    "countryCode": S,
    "ratePercent": D,
    "validFrom": DATE,
    "validTo": DATE,
    **_AUDIT,
}

TIME_ENTRY = {
    "id": G,
    "employeeId": G,
    "employeeNumber": S,
    "jobId": G,
    "jobNumber": S,
    "jobTaskNumber": S,
    "absence": S,
    "lineNumber": I32,
    "date": DATE,
    "quantity": D,
    "status": S,
    "unitOfMeasureId": G,
    "unitOfMeasureCode": S,
    **_AUDIT,
}

SALES_INVOICE = {
    "id": G,
    "number": S,
    "externalDocumentNumber": S,
    "invoiceDate": DATE,
    "postingDate": DATE,
    "dueDate": DATE,
    "customerPurchaseOrderReference": S,
    "contactId": S,
    "shipToName": S,
    "shipToContact": S,
    "orderId": G,
    "orderNumber": S,
    "shipmentMethodId": G,
    "customerId": G,
    "customerNumber": S,
    "customerName": S,
    "billToName": S,
    "billToCustomerId": G,
    "billToCustomerNumber": S,
    "currencyId": G,
    "currencyCode": S,
    "paymentTermsId": G,
    "salesperson": S,
    "pricesIncludeTax": B,
    "remainingAmount": D,
    "discountAmount": D,
    "discountAppliedBeforeTax": B,
    "totalAmountExcludingTax": D,
    "totalTaxAmount": D,
    "totalAmountIncludingTax": D,
    "status": S,
    "phoneNumber": S,
    "email": S,
    **_AUDIT,
}

SALES_INVOICE_LINE = {
    "id": G,
    "documentId": G,
    "sequence": I32,
    "itemId": G,
    "accountId": G,
    "lineType": S,
    "lineObjectNumber": S,
    "description": S,
    "description2": S,
    "unitOfMeasureId": G,
    "unitOfMeasureCode": S,
    "unitPrice": D,
    "quantity": D,
    "discountAmount": D,
    "discountPercent": D,
    "discountAppliedBeforeTax": B,
    "amountExcludingTax": D,
    "taxCode": S,
    "taxPercent": D,
    "totalTaxAmount": D,
    "amountIncludingTax": D,
    "invoiceDiscountAllocation": D,
    "netAmount": D,
    "netTaxAmount": D,
    "netAmountIncludingTax": D,
    "shipmentDate": DATE,
}

SALES_CREDIT_MEMO = {
    "id": G,
    "number": S,
    "externalDocumentNumber": S,
    "creditMemoDate": DATE,
    "postingDate": DATE,
    "dueDate": DATE,
    "customerId": G,
    "customerNumber": S,
    "customerName": S,
    "billToName": S,
    "billToCustomerId": G,
    "billToCustomerNumber": S,
    "currencyCode": S,
    "pricesIncludeTax": B,
    "discountAmount": D,
    "totalAmountExcludingTax": D,
    "totalTaxAmount": D,
    "totalAmountIncludingTax": D,
    "status": S,
    "invoiceId": G,
    "invoiceNumber": S,
    **_AUDIT,
}

SALES_CREDIT_MEMO_LINE = {k: v for k, v in SALES_INVOICE_LINE.items() if k != "shipmentDate"}

COMPANY = {
    "id": G,
    "systemVersion": S,
    "timestamp": "Edm.Int64",
    "name": S,
    "displayName": S,
    "businessProfileId": S,
    "systemCreatedAt": DTO,
    "systemCreatedBy": G,
    "systemModifiedAt": DTO,
    "systemModifiedBy": G,
}

_RO = frozenset({"id", "lastModifiedDateTime"})
_DOC_RO = frozenset(
    {
        "id",
        "lastModifiedDateTime",
        "status",
        "totalAmountExcludingTax",
        "totalTaxAmount",
        "totalAmountIncludingTax",
        "remainingAmount",
        "customerName",
        "billToName",
        "billToCustomerId",
        "billToCustomerNumber",
    }
)
_LINE_RO = frozenset(
    {
        "id",
        "documentId",
        "amountExcludingTax",
        "taxPercent",
        "totalTaxAmount",
        "amountIncludingTax",
        "invoiceDiscountAllocation",
        "netAmount",
        "netTaxAmount",
        "netAmountIncludingTax",
    }
)

#: Entity sets under companies({id}), keyed by URL segment.
ENTITY_SETS: dict[str, EntitySet] = {
    es.segment: es
    for es in (
        EntitySet(
            "customers",
            "customer",
            "customers",
            CUSTOMER,
            "customers",
            writable=True,
            number_series="customer",
            read_only=_RO,
        ),
        EntitySet(
            "projects",
            "project",
            "projects",
            PROJECT,
            "projects",
            writable=True,
            number_series="project",
            read_only=_RO,
        ),
        EntitySet(
            "employees",
            "employee",
            "employees",
            EMPLOYEE,
            "employees",
            writable=True,
            number_series="employee",
            read_only=_RO,
        ),
        EntitySet("taxGroups", "taxGroup", "taxGroups", TAX_GROUP, "tax"),
        EntitySet(
            "timeRegistrationEntries",
            "timeRegistrationEntry",
            "timeRegistrationEntries",
            TIME_ENTRY,
            "timeRegistrationEntries",
        ),
        EntitySet(
            "salesInvoices",
            "salesInvoice",
            "salesInvoices",
            SALES_INVOICE,
            "salesInvoices",
            writable=True,
            read_only=_DOC_RO,
        ),
        EntitySet(
            "salesInvoiceLines",
            "salesInvoiceLine",
            "salesInvoiceLines",
            SALES_INVOICE_LINE,
            "salesInvoices",
            writable=True,
            read_only=_LINE_RO,
        ),
        EntitySet(
            "salesCreditMemos",
            "salesCreditMemo",
            "salesCreditMemos",
            SALES_CREDIT_MEMO,
            "salesCreditMemos",
            read_only=_DOC_RO,
        ),
        EntitySet(
            "salesCreditMemoLines",
            "salesCreditMemoLine",
            "salesCreditMemoLines",
            SALES_CREDIT_MEMO_LINE,
            "salesCreditMemos",
            read_only=_LINE_RO,
        ),
    )
}

#: The custom API page (publisher erpsync, group finance, version v1.0).
TAX_RATES = EntitySet(
    "taxRates", "taxRate", "taxRates", TAX_RATE, "tax", api="erpsync/finance/v1.0"
)

COMPANIES = EntitySet("companies", "company", "companies", COMPANY, "companies")

#: Money fields rounded to the currency's minor units.
MONEY_FIELDS = frozenset(
    {
        "remainingAmount",
        "discountAmount",
        "totalAmountExcludingTax",
        "totalTaxAmount",
        "totalAmountIncludingTax",
        "amountExcludingTax",
        "amountIncludingTax",
        "netAmount",
        "netTaxAmount",
        "netAmountIncludingTax",
        "invoiceDiscountAllocation",
    }
)
