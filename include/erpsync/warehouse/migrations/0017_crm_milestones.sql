-- Contract milestones live in the CRM (issue 13, audit H16-H18): Harvest has no milestone
-- resource, so a fixed-fee contract's milestones and their acceptance are Salesforce records of
-- the custom object Contract_Milestone__c (child of Opportunity; shipped in vendor/salesforce).
--
-- core.crm_milestones: the synced Contract_Milestone__c records (sync spec
--   contract_milestones: SOQL incremental on SystemModstamp with queryAll, deletions from the
--   sobjects/Contract_Milestone__c/deleted feed -> deleted_at).
-- core.contract_milestones.crm_milestone_id (was psa_milestone_id): the CRM record a contract
--   version's milestone was set up from; acceptance is refreshed from core.crm_milestones.
-- billing.push_crm_marks: one row per milestone item the ERP push has settled in the CRM
--   (Status__c = Invoiced and Invoice_Number__c written and read back), so a retry skips it.

CREATE TABLE core.crm_milestones (
    crm_milestone_id  text           PRIMARY KEY,
    opportunity_id    text           NOT NULL,
    name              text           NOT NULL,
    amount            numeric(18, 4),
    due_date          date,
    status            text           NOT NULL,
    accepted_date     date,
    invoice_number    text,
    source_record_id  text           NOT NULL,
    row_hash          text           NOT NULL,
    source_modstamp   timestamptz,
    deleted_at        timestamptz,
    first_run_id      text           NOT NULL,
    last_run_id       text           NOT NULL,
    updated_at        timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX crm_milestones_opportunity_idx ON core.crm_milestones (opportunity_id);
CREATE INDEX crm_milestones_source_idx ON core.crm_milestones (source_record_id);
COMMENT ON TABLE core.crm_milestones IS
    'Salesforce Contract_Milestone__c records (a fixed-fee contract''s milestones and their acceptance).';

ALTER TABLE core.contract_milestones RENAME COLUMN psa_milestone_id TO crm_milestone_id;
-- ids recorded before were Harvest ids of an invented resource: they never matched anything
UPDATE core.contract_milestones SET crm_milestone_id = NULL WHERE crm_milestone_id !~ '^[a-zA-Z0-9]{15,18}$';

CREATE TABLE billing.push_crm_marks (
    item_key      text        PRIMARY KEY,
    invoice_id    bigint      NOT NULL,
    sobject       text        NOT NULL DEFAULT 'Contract_Milestone__c',
    record_id     text,
    outcome       text        NOT NULL
                  CHECK (outcome IN ('marked', 'already_billed', 'conflict', 'missing')),
    detail        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    run_id        text        NOT NULL,
    marked_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_crm_marks_invoice_idx ON billing.push_crm_marks (invoice_id);
COMMENT ON TABLE billing.push_crm_marks IS
    'Milestones the ERP push has marked Invoiced in the CRM after posting (written and read back).';
