-- Issue 15 (part C): the ERP's own number for every record erpsync maps (customers erpsync
-- created in Business Central included), re-asked approvals, partial credit notes.

-- The number Business Central answered for the record (customer No.), recorded by the write-back
-- from the ERP's reply to its create/read (https://learn.microsoft.com/en-us/dynamics365/
-- business-central/dev-itpro/api-reference/v2.0/resources/dynamics_customer: `number`).
ALTER TABLE core.id_map ADD COLUMN erp_number text;
COMMENT ON COLUMN core.id_map.erp_number IS
    'The ERP''s number of the record (Business Central customer No.) as the ERP answered it.';
