-- Master data: landed vendor payloads (raw) and the canonical clients, tax, people and rates (core).
--
-- Every core table written by the sync engine (erpsync.sync.engine) carries the same bookkeeping
-- columns: the natural key (unique), source_record_id (the vendor record the row came from, used
-- for deletes), row_hash (SHA-256 of the canonical content: an upsert whose hash is unchanged
-- touches nothing), source_modstamp, deleted_at (deletes are soft so history is kept),
-- first_run_id / last_run_id, and updated_at. Money is numeric, never float.

-- One landing table for every entity: one row per valid record per load.
CREATE TABLE raw.vendor_records (
    raw_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_system   text        NOT NULL CHECK (source_system IN ('crm', 'psa', 'erp')),
    entity          text        NOT NULL,
    run_id          text        NOT NULL,
    record_key      text        NOT NULL,
    source_modstamp timestamptz,
    payload         jsonb       NOT NULL,
    loaded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vendor_records_entity_key_idx ON raw.vendor_records (source_system, entity, record_key);
CREATE INDEX vendor_records_run_idx ON raw.vendor_records (run_id);
COMMENT ON TABLE raw.vendor_records IS
    'Landed vendor payloads, one row per valid record per sync run (invalid ones go to ops.quarantine).';

-- Clients (CRM Account). canonical_id is the client''s row in core.id_map.
CREATE TABLE core.clients (
    crm_id              text        PRIMARY KEY,
    canonical_id        bigint      NOT NULL REFERENCES core.id_map (canonical_id),
    legal_name          text        NOT NULL,
    account_number      text,
    billing_street      text,
    billing_city        text,
    billing_postal_code text,
    billing_country     char(2)     NOT NULL,
    currency            char(3)     NOT NULL,
    payment_terms       text,
    payment_terms_days  integer     CHECK (payment_terms_days >= 0),
    po_required         boolean     NOT NULL DEFAULT false,
    erp_customer_no     text,
    source_record_id    text        NOT NULL,
    row_hash            text        NOT NULL,
    source_modstamp     timestamptz,
    deleted_at          timestamptz,
    first_run_id        text        NOT NULL,
    last_run_id         text        NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX clients_canonical_uq ON core.clients (canonical_id);
CREATE INDEX clients_source_idx ON core.clients (source_record_id);

-- Tax profile of each client (CRM Account tax fields). vat_id_valid is the python-stdnum verdict.
CREATE TABLE core.tax_profiles (
    crm_account_id     text        PRIMARY KEY,
    country            char(2)     NOT NULL,
    vat_id             text,
    vat_id_normalized  text,
    vat_id_valid       boolean,
    vat_id_reason      text,
    tax_exempt         boolean     NOT NULL DEFAULT false,
    exemption_reason   text,
    reverse_charge     boolean     NOT NULL DEFAULT false,
    CHECK (NOT tax_exempt OR exemption_reason IS NOT NULL),
    source_record_id   text        NOT NULL,
    row_hash           text        NOT NULL,
    source_modstamp    timestamptz,
    deleted_at         timestamptz,
    first_run_id       text        NOT NULL,
    last_run_id        text        NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tax_profiles_source_idx ON core.tax_profiles (source_record_id);

-- Tax codes (ERP taxGroups).
CREATE TABLE core.tax_codes (
    code              text        PRIMARY KEY,
    erp_id            text        NOT NULL,
    display_name      text        NOT NULL,
    tax_type          text        NOT NULL,
    source_record_id  text        NOT NULL,
    row_hash          text        NOT NULL,
    source_modstamp   timestamptz,
    deleted_at        timestamptz,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tax_codes_source_idx ON core.tax_codes (source_record_id);

-- Tax rates (ERP custom taxRates API), effective-dated: one row per rate period, closed periods
-- kept (valid_to set), a deleted period soft-deleted.
CREATE TABLE core.tax_rates (
    erp_id            text        PRIMARY KEY,
    tax_code          text        NOT NULL,
    country           text        NOT NULL DEFAULT '',
    rate_percent      numeric(9, 4) NOT NULL CHECK (rate_percent >= 0 AND rate_percent <= 100),
    valid_from        date        NOT NULL,
    valid_to          date,
    CHECK (valid_to IS NULL OR valid_to >= valid_from),
    source_record_id  text        NOT NULL,
    row_hash          text        NOT NULL,
    source_modstamp   timestamptz,
    deleted_at        timestamptz,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tax_rates_lookup_idx ON core.tax_rates (tax_code, country, valid_from);
CREATE INDEX tax_rates_source_idx ON core.tax_rates (source_record_id);

-- People (PSA users). canonical_id is the person''s row in core.id_map.
CREATE TABLE core.people (
    psa_id            text        PRIMARY KEY,
    canonical_id      bigint      NOT NULL REFERENCES core.id_map (canonical_id),
    first_name        text        NOT NULL,
    last_name         text        NOT NULL,
    email             text        NOT NULL,
    employee_number   text,
    role              text,
    is_contractor     boolean     NOT NULL DEFAULT false,
    is_active         boolean     NOT NULL DEFAULT true,
    weekly_capacity_seconds integer,
    source_record_id  text        NOT NULL,
    row_hash          text        NOT NULL,
    source_modstamp   timestamptz,
    deleted_at        timestamptz,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX people_canonical_uq ON core.people (canonical_id);
CREATE INDEX people_email_idx ON core.people (lower(email));
CREATE INDEX people_source_idx ON core.people (source_record_id);

-- Rate cards (PSA billable_rates and cost_rates), effective-dated per person.
CREATE TABLE core.rate_cards (
    kind              text        NOT NULL CHECK (kind IN ('billable', 'cost')),
    psa_rate_id       text        NOT NULL,
    person_psa_id     text        NOT NULL,
    amount            numeric(18, 4) NOT NULL CHECK (amount >= 0),
    currency          char(3)     NOT NULL,
    valid_from        date        NOT NULL,
    valid_to          date,
    CHECK (valid_to IS NULL OR valid_to >= valid_from),
    source_record_id  text        NOT NULL,
    row_hash          text        NOT NULL,
    source_modstamp   timestamptz,
    deleted_at        timestamptz,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, psa_rate_id)
);
CREATE INDEX rate_cards_person_idx ON core.rate_cards (person_psa_id, kind, valid_from);
CREATE INDEX rate_cards_source_idx ON core.rate_cards (source_record_id);

-- Contracted rate overrides (CRM Opportunity Rate_Overrides__c on closed-won contracts).
CREATE TABLE core.contract_rate_overrides (
    opportunity_id    text        NOT NULL,
    user_email        text        NOT NULL,
    role              text,
    rate              numeric(18, 4) NOT NULL CHECK (rate >= 0),
    currency          char(3)     NOT NULL,
    contract_version  integer     NOT NULL DEFAULT 1,
    psa_project_id    text,
    source_record_id  text        NOT NULL,
    row_hash          text        NOT NULL,
    source_modstamp   timestamptz,
    deleted_at        timestamptz,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (opportunity_id, user_email)
);
CREATE INDEX contract_rate_overrides_source_idx ON core.contract_rate_overrides (source_record_id);

-- Earlier versions of effective-dated rows (tax rates, rate cards): when the source edits a
-- period in place, the version it replaces is kept here with the run that replaced it.
CREATE TABLE core.record_history (
    history_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    core_table        text        NOT NULL,
    natural_key       text        NOT NULL,
    row_data          jsonb       NOT NULL,
    superseded_at     timestamptz NOT NULL DEFAULT now(),
    superseded_by_run text        NOT NULL
);
CREATE INDEX record_history_key_idx ON core.record_history (core_table, natural_key);

-- Open quarantine rows are unique per record and reason, so a rerun does not pile up copies.
CREATE UNIQUE INDEX quarantine_open_uq ON ops.quarantine (source_system, entity, record_key, reason_code)
    WHERE resolved_at IS NULL;
