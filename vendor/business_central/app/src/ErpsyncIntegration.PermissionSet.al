// The permissions erpsync's Microsoft Entra application needs in Business Central (assign this
// set to the app on the "Microsoft Entra Applications" card; SUPER cannot be assigned to apps).
// Least privilege for what the pack does (include/erpsync/connectors/business_central.py):
//   read    companies, taxGroups, taxAreas, paymentTerms, VAT Posting Setup (OData V4 page 472)
//   write   customers (create, update, block), employees, projects (jobs)
//   write   draft sales invoices with lines, post them, make corrective credit memos and post them
// The included D365 sets carry the indirect permissions posting needs (ledger entries, VAT
// entries, number series); the explicit table data below covers the master data erpsync writes.
// https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/developer/devenv-permissionset-object
permissionset 50190 "ERPSYNC INTEGRATION"
{
    Access = Public;
    Assignable = true;
    Caption = 'erpsync integration (API + VATPostingSetup web service)';

    IncludedPermissionSets = "D365 SALES DOC, EDIT",
                             "D365 SALES DOC, POST",
                             "D365 JOBS, EDIT";

    Permissions = tabledata Customer = RIM,
                  tabledata Employee = RIM,
                  tabledata Job = RIM,
                  tabledata "Payment Terms" = R,
                  tabledata "Tax Area" = R,
                  tabledata "VAT Business Posting Group" = R,
                  tabledata "VAT Product Posting Group" = R,
                  tabledata "VAT Posting Setup" = R,
                  tabledata "Tax Group" = R,
                  tabledata "G/L Account" = R,
                  tabledata "Unit of Measure" = R,
                  tabledata Currency = R,
                  tabledata "Country/Region" = R,
                  tabledata "No. Series" = R,
                  tabledata "No. Series Line" = RM,
                  tabledata "Web Service" = R,
                  tabledata "Tenant Web Service" = R,
                  page "VAT Posting Setup" = X;
}
