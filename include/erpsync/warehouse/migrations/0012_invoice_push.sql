-- The ERP push of approved invoice batches (issue 7, erpsync.invoicing.push).
--
-- billing.invoice_push: one row per invoice being pushed, the durable state machine
--   pending -> created (ERP document id known) -> posted (ERP number known, billed_items written)
--   -> billed_back (PSA entries marked billed).
-- Every step is committed here before the next external call, so a killed, retried, cleared or
-- concurrent push resumes from the recorded step and never creates a second ERP document: the
-- ERP is first searched by the invoice's stable document number (externalDocumentNumber), and a
-- create whose answer was lost (create_unknown_since) is not repeated before the ERP has been
-- searched again after the settle window.
--
-- billing.push_psa_marks: one row per item key the push has settled in the PSA (marked billed,
-- found already billed by this invoice, billed elsewhere = conflict, missing, or nothing to
-- mark), so a retry skips what is already done.
--
-- No foreign keys to billing.invoices / billing.invoice_batches (migration 0011, another
-- module): this migration stands alone; the push code joins by invoice_id / batch_id.
CREATE TABLE billing.invoice_push (
    invoice_id            bigint         PRIMARY KEY,
    batch_id              bigint         NOT NULL,
    document_number       text           NOT NULL UNIQUE,
    erp_entity            text           NOT NULL
                          CHECK (erp_entity IN ('salesInvoices', 'salesCreditMemos')),
    step                  text           NOT NULL DEFAULT 'pending'
                          CHECK (step IN ('pending', 'created', 'posted', 'billed_back')),
    erp_invoice_id        text,
    erp_draft_number      text,
    erp_number            text,
    erp_net               numeric(20, 4),
    erp_tax               numeric(20, 4),
    erp_total             numeric(20, 4),
    create_requests       integer        NOT NULL DEFAULT 0 CHECK (create_requests >= 0),
    create_unknown_since  timestamptz,
    post_requests         integer        NOT NULL DEFAULT 0 CHECK (post_requests >= 0),
    failures              integer        NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_error            text,
    created_at            timestamptz,
    posted_at             timestamptz,
    billed_back_at        timestamptz,
    first_run_id          text           NOT NULL,
    last_run_id           text           NOT NULL,
    updated_at            timestamptz    NOT NULL DEFAULT now(),
    CHECK (step = 'pending' OR erp_invoice_id IS NOT NULL),
    CHECK (step IN ('pending', 'created') OR erp_number IS NOT NULL)
);
CREATE INDEX invoice_push_batch_idx ON billing.invoice_push (batch_id, invoice_id);
-- one warehouse invoice per ERP document, whatever happens
CREATE UNIQUE INDEX invoice_push_erp_doc_uq ON billing.invoice_push (erp_entity, erp_invoice_id)
    WHERE erp_invoice_id IS NOT NULL;
COMMENT ON TABLE billing.invoice_push IS
    'Push state of each invoice sent to the ERP: pending, created (ERP id), posted (ERP number), billed_back (PSA marked).';
COMMENT ON COLUMN billing.invoice_push.create_unknown_since IS
    'Set when a create was sent and its answer lost; the ERP is searched again before any new create.';
COMMENT ON COLUMN billing.invoice_push.last_error IS
    'The last failure, scrubbed of secrets before it is stored.';

CREATE TABLE billing.push_psa_marks (
    item_key      text        PRIMARY KEY,
    invoice_id    bigint      NOT NULL,
    psa_resource  text        CHECK (psa_resource IN ('time_entries', 'expenses', 'milestones')),
    psa_id        text,
    outcome       text        NOT NULL
                  CHECK (outcome IN ('marked', 'already_billed', 'conflict', 'missing', 'nothing_to_mark')),
    detail        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    run_id        text        NOT NULL,
    marked_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_psa_marks_invoice_idx ON billing.push_psa_marks (invoice_id);
COMMENT ON TABLE billing.push_psa_marks IS
    'Items the ERP push has settled in the PSA after posting (marked billed, already billed, conflict, missing).';
