-- Client onboarding: contracts (closed-won CRM opportunities) with their versions, milestones,
-- billing schedules, and the per-step record that makes project setup resumable.
--
-- A change order (Contract_Version__c + 1) is a NEW row in core.contracts; the version it
-- replaces is kept with status 'superseded', and so are its milestones and schedule lines.
-- Money is numeric, never float.

CREATE TABLE core.contracts (
    opportunity_id    text        NOT NULL,
    version           integer     NOT NULL CHECK (version >= 1),
    account_id        text,
    name              text,
    owner_id          text,
    billing_model     text        CHECK (billing_model IN ('time_and_materials', 'fixed_fee', 'retainer')),
    currency          char(3),
    amount            numeric(18, 4),
    starts_on         date,
    ends_on           date,
    po_number         text,
    cap_type          text        CHECK (cap_type IN ('hours', 'amount')),
    cap_value         numeric(18, 4) CHECK (cap_value >= 0),
    retainer_amount   numeric(18, 4) CHECK (retainer_amount >= 0),
    retainer_period   text        CHECK (retainer_period IN ('monthly', 'quarterly')),
    rate_overrides    jsonb       NOT NULL DEFAULT '[]'::jsonb,
    project_code      text        NOT NULL,
    -- pending: valid, setup steps still to do; complete: every step done; invalid: an exception
    -- is open; adopted: set up outside erpsync (PSA_Project_Id__c already filled);
    -- superseded: a later version replaced it (kept as history).
    status            text        NOT NULL CHECK (status IN ('pending', 'complete', 'invalid', 'adopted', 'superseded')),
    problems          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    psa_project_id    text,
    erp_project_id    text,
    source_modstamp   timestamptz,
    payload           jsonb       NOT NULL,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    superseded_at     timestamptz,
    PRIMARY KEY (opportunity_id, version)
);
CREATE INDEX contracts_status_idx ON core.contracts (status);
CREATE INDEX contracts_code_idx ON core.contracts (project_code);
COMMENT ON TABLE core.contracts IS
    'Closed-won contracts, one row per version (change orders are new versions; older ones are kept as superseded).';

CREATE TABLE core.contract_milestones (
    opportunity_id   text           NOT NULL,
    version          integer        NOT NULL,
    seq              integer        NOT NULL CHECK (seq >= 1),
    name             text           NOT NULL,
    amount           numeric(18, 4) NOT NULL CHECK (amount >= 0),
    currency         char(3)        NOT NULL,
    due_date         date           NOT NULL,
    psa_milestone_id text,
    PRIMARY KEY (opportunity_id, version, seq),
    FOREIGN KEY (opportunity_id, version) REFERENCES core.contracts (opportunity_id, version)
);

CREATE TABLE billing.schedules (
    schedule_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    opportunity_id   text        NOT NULL,
    version          integer     NOT NULL,
    billing_model    text        NOT NULL,
    currency         char(3)     NOT NULL,
    cap_type         text,
    cap_value        numeric(18, 4),
    status           text        NOT NULL CHECK (status IN ('active', 'superseded')),
    created_run_id   text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    superseded_at    timestamptz,
    UNIQUE (opportunity_id, version),
    FOREIGN KEY (opportunity_id, version) REFERENCES core.contracts (opportunity_id, version)
);
-- at most one active schedule per contract
CREATE UNIQUE INDEX schedules_active_uq ON billing.schedules (opportunity_id) WHERE status = 'active';

CREATE TABLE billing.schedule_lines (
    schedule_id      bigint         NOT NULL REFERENCES billing.schedules (schedule_id),
    seq              integer        NOT NULL CHECK (seq >= 1),
    -- tm_period: time and materials billed for the period (amount from approved time, NULL here);
    -- milestone: fixed-fee milestone; retainer: retainer fee for the period.
    kind             text           NOT NULL CHECK (kind IN ('tm_period', 'milestone', 'retainer')),
    description      text           NOT NULL,
    period_start     date,
    period_end       date,
    due_date         date           NOT NULL,
    amount           numeric(18, 4) CHECK (amount >= 0),
    currency         char(3)        NOT NULL,
    PRIMARY KEY (schedule_id, seq)
);

CREATE TABLE ops.onboarding_steps (
    opportunity_id   text        NOT NULL,
    version          integer     NOT NULL,
    step             text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('done', 'failed')),
    outcome          text,
    target_id        text,
    detail           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error            text,
    attempts         integer     NOT NULL DEFAULT 1,
    run_id           text        NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (opportunity_id, version, step)
);
COMMENT ON TABLE ops.onboarding_steps IS
    'Project setup steps per contract version: outcome and target id, so a rerun resumes where a failure stopped.';
