-- Issue 15 (part C): the ERP's own number for every record erpsync maps (customers erpsync
-- created in Business Central included), re-asked approvals, partial credit notes.

-- The number Business Central answered for the record (customer No.), recorded by the write-back
-- from the ERP's reply to its create/read (https://learn.microsoft.com/en-us/dynamics365/
-- business-central/dev-itpro/api-reference/v2.0/resources/dynamics_customer: `number`).
ALTER TABLE core.id_map ADD COLUMN erp_number text;
COMMENT ON COLUMN core.id_map.erp_number IS
    'The ERP''s number of the record (Business Central customer No.) as the ERP answered it.';

-- Credit notes in the billed ledger: the items of a wholly credited invoice line stay billed by
-- the original invoice (billing.billed_items, never billed again) and are credited by the credit
-- note named here, written when the ERP posts the credit memo (docs/billed-state.md).
CREATE TABLE billing.credited_items (
    item_key             text        NOT NULL,
    credit_invoice_id    bigint      NOT NULL REFERENCES billing.invoices (invoice_id),
    credited_invoice_id  bigint      NOT NULL REFERENCES billing.invoices (invoice_id),
    erp_number           text        NOT NULL,
    credited_at          timestamptz NOT NULL DEFAULT now(),
    run_id               text        NOT NULL,
    PRIMARY KEY (item_key, credit_invoice_id)
);
CREATE INDEX credited_items_credited_idx ON billing.credited_items (credited_invoice_id);
COMMENT ON TABLE billing.credited_items IS
    'Items of wholly credited invoice lines: billed by credited_invoice_id, credited by the posted credit note credit_invoice_id (erp_number = its ERP credit memo number).';
