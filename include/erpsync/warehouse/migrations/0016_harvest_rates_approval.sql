-- Harvest as Harvest documents it (issue 13, audit H2-H4).
--
-- Rate cards: Harvest's billable and cost rate objects are {id, amount, start_date, end_date,
-- created_at, updated_at}, no currency
-- (https://help.getharvest.com/api-v2/users-api/users/billable-rates/ and .../cost-rates/).
-- A rate is an amount in the currency of the client whose time it prices, so the card's
-- currency is null when the vendor gives none; reconciliation prices it in the contract's
-- currency.
ALTER TABLE core.rate_cards ALTER COLUMN currency DROP NOT NULL;
COMMENT ON COLUMN core.rate_cards.currency IS
    'Null for Harvest rates (the vendor has no rate currency: the client''s currency applies).';

-- Approval: Harvest's time entries and expenses have no approval status; approval is
-- is_closed (true = approved via Timesheet Approval). approval_status is derived from it:
-- approved / unapproved. The earlier values stay valid for rows loaded before this change.
ALTER TABLE core.time_entries DROP CONSTRAINT IF EXISTS time_entries_approval_status_check;
ALTER TABLE core.time_entries ADD CONSTRAINT time_entries_approval_status_check
    CHECK (approval_status IN ('approved', 'unapproved', 'unsubmitted', 'submitted'));
ALTER TABLE core.expenses DROP CONSTRAINT IF EXISTS expenses_approval_status_check;
ALTER TABLE core.expenses ADD CONSTRAINT expenses_approval_status_check
    CHECK (approval_status IN ('approved', 'unapproved', 'unsubmitted', 'submitted'));
COMMENT ON COLUMN core.time_entries.approval_status IS
    'Derived from Harvest is_closed: approved (true) or unapproved (false).';
COMMENT ON COLUMN core.expenses.approval_status IS
    'Derived from Harvest is_closed: approved (true) or unapproved (false).';

-- The PSA's clients as Harvest has them (rates sync, erpsync.sync.specs.PSA_CLIENTS): Harvest
-- prices time in the client's currency, and neither a time entry (client {id, name}) nor a
-- rate carries it (https://help.getharvest.com/api-v2/clients-api/clients/clients/), so the
-- reconciliation takes an entry's currency from here.
CREATE TABLE core.psa_clients (
    psa_id            text        PRIMARY KEY,
    name              text,
    currency          char(3),
    is_active         boolean     NOT NULL DEFAULT true,
    source_record_id  text        NOT NULL,
    row_hash          text        NOT NULL,
    source_modstamp   timestamptz,
    deleted_at        timestamptz,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX psa_clients_source_idx ON core.psa_clients (source_record_id);
COMMENT ON TABLE core.psa_clients IS
    'PSA (Harvest) clients: the currency Harvest bills each client''s time and expenses in.';
