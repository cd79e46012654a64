"""Entity sets of the Business Central sandbox: EDM property types, URL segments, store names.

Each property list is exactly the documented API v2.0 resource type (the page cited above it,
cross-checked against the APIV2 page source in microsoft/ALAppExtensions,
``Apps/W1/APIV2/app/src/pages/``), and ``read_only`` holds the properties the page marks
``Editable = false`` (a POST or PATCH naming one is refused, as Business Central refuses it).
They drive ``$filter``/``$select`` type-checking, body validation and the CSDL ``$metadata``.

Besides the standard API, the sandbox serves one page published as an OData V4 web service,
page 472 "VAT Posting Setup" under the service name ``VATPostingSetup`` (what a Business
Central admin publishes for erpsync; vendor/business_central/README.md). Its property names
follow BC's EDM naming of page fields (spaces -> ``_``, dots dropped, ``%`` -> ``Percent``):
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/return-obtain-service-metadata-edmx-document

There is no custom API: the pack installs no AL extension.

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
    #: API route family: "v2.0" (standard API).
    api: str = "v2.0"
    writable: bool = False
    #: property whose value a POST assigns from a number series when absent.
    number_series: str | None = None
    read_only: frozenset[str] = field(default_factory=frozenset)


_AUDIT = {"lastModifiedDateTime": DTO}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_customer
#: (APIV2Customers.Page.al). There is no
#: ``paymentTermsCode``: payment terms are set by ``paymentTermsId`` (a paymentTerms id).
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
    "shipmentMethodId": G,
    "paymentMethodId": G,
    "blocked": S,
    **_AUDIT,
}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_project
#: (APIV2Jobs.Page.al)
PROJECT = {"id": G, "number": S, "displayName": S, **_AUDIT}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_employee
#: (APIV2Employees.Page.al: ``displayName`` is computed
#: from the names, ``Editable = false``)
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
    "bankBranchNumber": S,
    "bankAccountNumber": S,
    "iban": S,
    **_AUDIT,
}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_taxgroup
#: (in VAT countries the VAT Product Posting Groups)
TAX_GROUP = {"id": G, "code": S, "displayName": S, "taxType": S, **_AUDIT}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_paymentterm
#: (APIV2PaymentTerms.Page.al)
PAYMENT_TERM = {
    "id": G,
    "code": S,
    "displayName": S,
    "dueDateCalculation": S,
    "discountDateCalculation": S,
    "discountPercent": D,
    "calculateDiscountOnCreditMemos": B,
    **_AUDIT,
}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_taxarea
#: (APIV2TaxAreas.Page.al; in VAT countries the VAT Business
#: Posting Groups, which a customer's ``taxAreaId`` sets)
TAX_AREA = {"id": G, "code": S, "displayName": S, "taxType": S, **_AUDIT}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_account
#: (APIV2Accounts.Page.al, page 30014: ``Editable = false``, no insert/modify/delete; the chart of
#: accounts is read-only through the API). ``category`` and ``accountType`` are the enums
#: NAV.glAccountCategory and NAV.glAccountType, typed as strings here like the other enums.
ACCOUNT = {
    "id": G,
    "number": S,
    "displayName": S,
    "category": S,
    "subCategory": S,
    "blocked": B,
    "accountType": S,
    "directPosting": B,
    "netChange": D,
    "consolidationTranslationMethod": S,
    "consolidationDebitAccount": S,
    "consolidationCreditAccount": S,
    "excludeFromConsolidation": B,
    **_AUDIT,
}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_unitofmeasure
#: (APIV2UnitsofMeasure.Page.al, page 30030: GET, POST, PATCH and DELETE; ``id`` and
#: ``lastModifiedDateTime`` not editable)
UNIT_OF_MEASURE = {
    "id": G,
    "code": S,
    "displayName": S,
    "internationalStandardCode": S,
    "symbol": S,
    **_AUDIT,
}

#: Page 472 "VAT Posting Setup" published as OData V4 web service ``VATPostingSetup``: the
#: fields erpsync reads (the page's key fields and the rate columns).
#: https://learn.microsoft.com/en-us/dynamics365/business-central/finance-setup-vat
VAT_POSTING_SETUP = {
    "VAT_Bus_Posting_Group": S,
    "VAT_Prod_Posting_Group": S,
    "VAT_Identifier": S,
    "VAT_Calculation_Type": S,
    "VAT_Percent": D,
    "Description": S,
    "Blocked": B,
}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_timeregistrationentry
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
    # sic: the documented and APIV2TimeRegistrEntries.Page.al name of the modification stamp
    "lastModfiedDateTime": DTO,
}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salesinvoice
SALES_INVOICE = {
    "id": G,
    "number": S,
    "externalDocumentNumber": S,
    "invoiceDate": DATE,
    "postingDate": DATE,
    "dueDate": DATE,
    "customerPurchaseOrderReference": S,
    "orderId": G,
    "orderNumber": S,
    "shipmentMethodId": G,
    "customerId": G,
    "customerNumber": S,
    "customerName": S,
    "billToName": S,
    "billToCustomerId": G,
    "billToCustomerNumber": S,
    "shipToName": S,
    "shipToContact": S,
    "sellToAddressLine1": S,
    "sellToAddressLine2": S,
    "sellToCity": S,
    "sellToCountry": S,
    "sellToState": S,
    "sellToPostCode": S,
    "billToAddressLine1": S,
    "billToAddressLine2": S,
    "billToCity": S,
    "billToCountry": S,
    "billToState": S,
    "billToPostCode": S,
    "shipToAddressLine1": S,
    "shipToAddressLine2": S,
    "shipToCity": S,
    "shipToCountry": S,
    "shipToState": S,
    "shipToPostCode": S,
    "shortcutDimension1Code": S,
    "shortcutDimension2Code": S,
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
    "disputeStatusId": G,
    "disputeStatus": S,
    "promisedPayDate": DATE,
    **_AUDIT,
}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salesinvoiceline
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
    "itemVariantId": G,
    "locationId": G,
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

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salescreditmemo
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
    "sellToAddressLine1": S,
    "sellToAddressLine2": S,
    "sellToCity": S,
    "sellToCountry": S,
    "sellToState": S,
    "sellToPostCode": S,
    "billToAddressLine1": S,
    "billToAddressLine2": S,
    "billToCity": S,
    "billToCountry": S,
    "billToState": S,
    "billToPostCode": S,
    "shortcutDimension1Code": S,
    "shortcutDimension2Code": S,
    "currencyId": G,
    "currencyCode": S,
    "paymentTermsId": G,
    "shipmentMethodId": G,
    "salesperson": S,
    "pricesIncludeTax": B,
    "discountAmount": D,
    "discountAppliedBeforeTax": B,
    "totalAmountExcludingTax": D,
    "totalTaxAmount": D,
    "totalAmountIncludingTax": D,
    "status": S,
    "invoiceId": G,
    "invoiceNumber": S,
    "customerReturnReasonId": G,
    "phoneNumber": S,
    "email": S,
    **_AUDIT,
}

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salescreditmemoline
SALES_CREDIT_MEMO_LINE = dict(SALES_INVOICE_LINE)

#: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_company
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
_CUSTOMER_RO = _RO | {"balanceDue", "taxAreaDisplayName"}
_EMPLOYEE_RO = _RO | {"displayName"}
#: ``Editable = false`` on APIV2SalesInvoices / APIV2SalesCreditMemos (ALAppExtensions).
_MEMO_RO = frozenset(
    {
        "id",
        "number",
        "lastModifiedDateTime",
        "status",
        "totalAmountExcludingTax",
        "totalTaxAmount",
        "totalAmountIncludingTax",
        "customerName",
        "billToName",
        "pricesIncludeTax",
        "discountAppliedBeforeTax",
    }
)
_DOC_RO = _MEMO_RO | {
    "remainingAmount",
    "orderId",
    "orderNumber",
    *(
        f"billTo{x}"
        for x in ("AddressLine1", "AddressLine2", "City", "Country", "State", "PostCode")
    ),
}
#: ``Editable = false`` on APIV2SalesInvoiceLines.
_LINE_RO = frozenset(
    {
        "id",
        "discountAppliedBeforeTax",
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
            read_only=_CUSTOMER_RO,
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
            read_only=_EMPLOYEE_RO,
        ),
        EntitySet("taxGroups", "taxGroup", "taxGroups", TAX_GROUP, "tax", read_only=_RO),
        EntitySet(
            "paymentTerms", "paymentTerm", "paymentTerms", PAYMENT_TERM, "tax", read_only=_RO
        ),
        EntitySet("taxAreas", "taxArea", "taxAreas", TAX_AREA, "tax", read_only=_RO),
        EntitySet("accounts", "account", "accounts", ACCOUNT, "accounts", read_only=_RO),
        EntitySet(
            "unitsOfMeasure",
            "unitOfMeasure",
            "unitsOfMeasure",
            UNIT_OF_MEASURE,
            "unitsOfMeasure",
            writable=True,
            read_only=_RO,
        ),
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
            writable=True,  # POST/PATCH/DELETE salesCreditMemo are documented (resource page)
            read_only=_MEMO_RO,
        ),
        EntitySet(
            "salesCreditMemoLines",
            "salesCreditMemoLine",
            "salesCreditMemoLines",
            SALES_CREDIT_MEMO_LINE,
            "salesCreditMemos",
            writable=True,  # POST salesCreditMemos({id})/salesCreditMemoLines is documented
            read_only=_LINE_RO,
        ),
    )
}

#: Page 472 "VAT Posting Setup" as the OData V4 web service ``VATPostingSetup`` (not under
#: companies({id}) but ``/ODataV4/Company('<name>')/VATPostingSetup``). Keyed by the two
#: posting groups; there is no ``id`` and no modification stamp.
VAT_POSTING_SETUP_SERVICE = EntitySet(
    "VATPostingSetup",
    "NAV.VATPostingSetup",
    "vatPostingSetup",
    VAT_POSTING_SETUP,
    "odata",
    api="ODataV4",
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
