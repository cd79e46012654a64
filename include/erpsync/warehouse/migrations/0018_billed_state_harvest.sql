-- The billed state of each posted invoice in the PSA (issue 13, audit H19; erpsync.invoicing.push_psa).
--
-- Harvest has no writable "billed" flag: a time entry or expense becomes is_billed only when a
-- Harvest invoice imports it (POST /v2/invoices with line_items_import: every uninvoiced billable
-- item of the given projects in a spent_date window). erpsync's own ledger (billing.billed_items,
-- written when the ERP invoice posts) is the truth; Harvest is made to show the same only when
-- that import would take exactly the items the ERP invoice billed, and the result is read back.
--
-- billing.psa_billed_state: one row per posted invoice (or credit note), written in the same
-- transaction as invoice_push.step = 'billed_back':
--   harvest_invoiced  a Harvest invoice (number = the ERP's posted number) imported exactly the
--                     invoice's time and expenses, read back after the create;
--   ledger_only       nothing written to Harvest; `reason` says why (the window holds other
--                     uninvoiced items, an item is billed elsewhere or gone, mirroring is off,
--                     no Harvest items on the invoice); the ledger is the truth;
--   failed            the Harvest invoice did not bill exactly these items: it was deleted again
--                     (entries released) and an exception was raised with both sets;
--   credit_note       a credit note: its items stay billed (a credit corrects money), Harvest is
--                     left as it is.
CREATE TABLE billing.psa_billed_state (
    invoice_id              bigint      PRIMARY KEY,
    document_number         text        NOT NULL,
    erp_number              text,
    status                  text        NOT NULL
                            CHECK (status IN ('harvest_invoiced', 'ledger_only', 'failed', 'credit_note')),
    reason                  text,
    harvest_invoice_id      text,
    harvest_invoice_number  text,
    harvest_client_id       text,
    project_ids             text[]      NOT NULL DEFAULT '{}',
    time_from               date,
    time_to                 date,
    expenses_from           date,
    expenses_to             date,
    erpsync_items           text[]      NOT NULL DEFAULT '{}',
    harvest_uninvoiced      text[]      NOT NULL DEFAULT '{}',
    harvest_billed          text[]      NOT NULL DEFAULT '{}',
    psa_requests            integer     NOT NULL DEFAULT 0 CHECK (psa_requests >= 0),
    run_id                  text        NOT NULL,
    decided_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'harvest_invoiced' OR harvest_invoice_id IS NOT NULL)
);
CREATE INDEX psa_billed_state_status_idx ON billing.psa_billed_state (status, decided_at);
COMMENT ON TABLE billing.psa_billed_state IS
    'Per posted invoice: whether Harvest shows its time and expenses as invoiced (harvest_invoiced), or only erpsync''s ledger does (ledger_only, with the reason), or the mirror failed and was undone (failed).';
COMMENT ON COLUMN billing.psa_billed_state.harvest_uninvoiced IS
    'Item keys Harvest listed as uninvoiced billable in the import window before any write (what an import would take).';
COMMENT ON COLUMN billing.psa_billed_state.harvest_billed IS
    'Item keys that carried the Harvest invoice after the create (the read-back).';
