-- Reconciliation (issue 6): every live time entry and expense, every contract milestone and
-- every retainer schedule line classified once into recon.items as ready, billed,
-- non_billable or on_hold (with one reason code from recon.reasons). Written by
-- erpsync.reconcile.run_reconcile in set-based SQL; read by invoicing, data quality and the
-- finance table.
--
-- Policy is data, not code: recon.settings (lock date, leakage threshold, receipt threshold,
-- default expense markup), recon.currencies (minor units, FX per EUR for converting EUR
-- policy amounts) and recon.expense_policy (limit per category) are seeded with the
-- documented defaults (they match the sandbox manifest's "policy" section) and can be edited.
-- Money is numeric, never float; amounts in recon.items are unrounded (hours x rate), rounded
-- only where reported (erpsync.money: round(x, minor units), half away from zero).

-- ------------------------------------------------------------------ configuration

CREATE TABLE recon.settings (
    id                         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    -- items dated on or before the lock date are held 'locked_period' (NULL: no lock)
    lock_date                  date,
    -- approved billable work older than this many days and still unbilled is leakage
    leakage_days               integer     NOT NULL DEFAULT 30 CHECK (leakage_days >= 0),
    -- an expense above this amount (converted to the expense currency with
    -- recon.currencies.per_eur, rounded to its minor units) needs a receipt
    receipt_threshold          numeric     NOT NULL DEFAULT 75 CHECK (receipt_threshold >= 0),
    receipt_threshold_currency char(3)     NOT NULL DEFAULT 'EUR',
    -- markup on billable expenses in percent, unless the contract payload carries
    -- Expense_Markup_Pct__c
    expense_markup_pct         numeric     NOT NULL DEFAULT 0 CHECK (expense_markup_pct >= 0),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
INSERT INTO recon.settings (id) VALUES (true);
COMMENT ON TABLE recon.settings IS
    'Reconciliation policy (one row): lock date, leakage threshold, receipt threshold, default expense markup.';

CREATE TABLE recon.currencies (
    code         char(3)  PRIMARY KEY,
    minor_units  integer  NOT NULL CHECK (minor_units BETWEEN 0 AND 4),
    per_eur      numeric  CHECK (per_eur > 0)  -- units per EUR for policy amounts; NULL: unknown
);
INSERT INTO recon.currencies (code, minor_units, per_eur) VALUES
    ('AED', 2, NULL), ('ARS', 2, NULL), ('AUD', 2, NULL), ('BGN', 2, NULL), ('BHD', 3, NULL),
    ('BRL', 2, NULL), ('CAD', 2, NULL), ('CHF', 2, NULL), ('CLP', 0, NULL), ('CNY', 2, NULL),
    ('COP', 2, NULL), ('CZK', 2, NULL), ('DKK', 2, NULL), ('EGP', 2, NULL), ('EUR', 2, 1),
    ('GBP', 2, 0.86), ('HKD', 2, NULL), ('HUF', 2, NULL), ('IDR', 2, NULL), ('ILS', 2, NULL),
    ('INR', 2, NULL), ('IQD', 3, NULL), ('ISK', 0, NULL), ('JOD', 3, NULL), ('JPY', 0, 162),
    ('KES', 2, NULL), ('KRW', 0, NULL), ('KWD', 3, 0.332), ('LYD', 3, NULL), ('MAD', 2, NULL),
    ('MXN', 2, NULL), ('MYR', 2, NULL), ('NGN', 2, NULL), ('NOK', 2, NULL), ('NZD', 2, NULL),
    ('OMR', 3, NULL), ('PEN', 2, NULL), ('PHP', 2, NULL), ('PLN', 2, NULL), ('QAR', 2, NULL),
    ('RON', 2, NULL), ('SAR', 2, NULL), ('SEK', 2, NULL), ('SGD', 2, NULL), ('THB', 2, NULL),
    ('TND', 3, NULL), ('TRY', 2, NULL), ('TWD', 2, NULL), ('USD', 2, 1.08), ('VND', 0, NULL),
    ('ZAR', 2, NULL);
COMMENT ON TABLE recon.currencies IS
    'Minor units per currency (ISO 4217, as erpsync.money) and the FX per EUR used to convert EUR policy amounts (the firm''s fixed rates).';

CREATE TABLE recon.expense_policy (
    category        text     PRIMARY KEY,           -- PSA expense category name
    limit_amount    numeric  NOT NULL CHECK (limit_amount >= 0),
    limit_currency  char(3)  NOT NULL DEFAULT 'EUR',
    per_unit        boolean  NOT NULL DEFAULT true,  -- limit x units (nights, km); else per expense
    unit_name       text
);
INSERT INTO recon.expense_policy (category, limit_amount, per_unit, unit_name) VALUES
    ('Airfare', 1200, true, NULL),
    ('Hotel', 250, true, 'night'),
    ('Meals', 60, true, NULL),
    ('Taxi & Transit', 120, true, NULL),
    ('Mileage', 0.23, true, 'km'),
    ('Software & Subscriptions', 500, true, NULL);
COMMENT ON TABLE recon.expense_policy IS
    'Expense policy limits per category (limit x units when per_unit), converted to the expense currency with recon.currencies.per_eur.';

-- ------------------------------------------------------------------ reason catalogue

CREATE TABLE recon.reasons (
    code          text     PRIMARY KEY,
    label         text     NOT NULL,
    description   text     NOT NULL,
    owner         text     NOT NULL,  -- the role that acts on it (exceptions are assigned to it)
    precedence    integer  NOT NULL UNIQUE,  -- lower wins when an item has several problems
    -- a data problem: an exception is raised for it (not_approved, not_yet_due... are normal)
    raises_exception boolean NOT NULL DEFAULT true
);
INSERT INTO recon.reasons (code, label, description, owner, precedence, raises_exception) VALUES
    ('unknown_project', 'Unknown project',
     'Billable work or expense on a PSA project with no (current) contract in the warehouse.',
     'billing_ops', 10, true),
    ('closed_project', 'Closed project',
     'Work or expense dated after the contract''s end date (the project was closed).',
     'project_manager', 20, true),
    ('outside_contract_dates', 'Outside contract dates',
     'Work or expense dated before the contract''s start date.',
     'project_manager', 30, true),
    ('duplicate_entry', 'Duplicate entry',
     'Same person, date, project, task, hours and notes as an earlier entry.',
     'timesheet_owner', 40, true),
    ('missing_rate', 'Missing rate',
     'No contracted rate, no PSA assignment rate and no rate card for the person on that day.',
     'resource_manager', 50, true),
    ('missing_receipt', 'Missing receipt',
     'Expense above the receipt threshold without a receipt.',
     'expense_owner', 60, true),
    ('expense_over_policy', 'Expense over policy',
     'Expense above the policy limit for its category.',
     'expense_owner', 70, true),
    ('over_cap', 'Over cap',
     'Beyond the contract''s not-to-exceed cap (hours or amount, cumulative in date order).',
     'engagement_manager', 80, true),
    ('currency_differs_from_contract', 'Currency differs from contract',
     'The PSA project''s currency is not the contract currency.',
     'billing_ops', 90, true),
    ('rate_differs_from_contract', 'Rate differs from contract',
     'The PSA assignment rate differs from the contracted rate for the person.',
     'resource_manager', 100, true),
    ('locked_period', 'Locked period',
     'Dated in a period that is locked for billing (recon.settings.lock_date).',
     'finance_controller', 110, false),
    ('not_approved', 'Not approved',
     'The time entry or expense is not approved yet.',
     'timesheet_owner', 120, false),
    ('milestone_not_accepted', 'Milestone not accepted',
     'A fixed-fee milestone that is due but not accepted by the client yet.',
     'engagement_manager', 130, false),
    ('not_yet_due', 'Not yet due',
     'A milestone or retainer fee whose due date is after the reconciliation date.',
     'billing_ops', 140, false),
    ('dq_blocked', 'Blocked by data quality',
     'A critical data-quality check failed for the client, contract or everything (set by invoicing).',
     'data_steward', 150, false);
COMMENT ON TABLE recon.reasons IS
    'Why an item is on hold: one catalogue; precedence decides when an item has several problems.';

-- ------------------------------------------------------------------ output

CREATE TABLE recon.runs (
    run_id       text        PRIMARY KEY,
    as_of        date        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    result       jsonb
);
COMMENT ON TABLE recon.runs IS
    'Reconciliation runs: the as-of date (WIP age and leakage are measured from the latest) and the summary.';

CREATE TABLE recon.items (
    item_key          text        PRIMARY KEY,
    item_type         text        NOT NULL CHECK (item_type IN ('time', 'expense', 'milestone', 'retainer')),
    source_id         text        NOT NULL,
    account_id        text,
    client_psa_id     text,
    opportunity_id    text,
    contract_version  integer,
    project_psa_id    text,
    user_psa_id       text,
    user_assignment_psa_id text,
    task_psa_id       text,
    task_name         text,
    role              text,
    item_date         date        NOT NULL,
    period_start      date        NOT NULL,
    hours             numeric,
    quantity          numeric,
    rate              numeric,
    currency          char(3),
    amount            numeric,
    approved          boolean     NOT NULL,
    state             text        NOT NULL CHECK (state IN ('ready', 'billed', 'non_billable', 'on_hold')),
    reason_code       text        REFERENCES recon.reasons (code),
    -- every problem found, in precedence order (reason_code is the first, or not_approved...)
    problems          text[]      NOT NULL DEFAULT '{}',
    reason_detail     jsonb,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'on_hold') = (reason_code IS NOT NULL))
);
CREATE INDEX items_state_idx ON recon.items (state, reason_code);
CREATE INDEX items_contract_idx ON recon.items (opportunity_id, period_start);
COMMENT ON TABLE recon.items IS
    'The reconciliation: one row per time entry, expense, milestone and retainer fee, in exactly one state; amount unrounded in currency (the contract currency, except items held for currency_differs_from_contract).';

-- The ledger of what erpsync billed (PUSH inserts when an invoice is posted).
CREATE TABLE billing.billed_items (
    item_key        text        PRIMARY KEY,
    invoice_id      bigint,
    erp_invoice_id  text,
    erp_number      text,
    billed_at       timestamptz NOT NULL DEFAULT now(),
    run_id          text
);
COMMENT ON TABLE billing.billed_items IS
    'Items erpsync has invoiced (posted in the ERP): recon counts them billed.';

-- Milestone acceptance, kept fresh from the PSA by erpsync.reconcile.milestones.
ALTER TABLE core.contract_milestones
    ADD COLUMN status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted')),
    ADD COLUMN accepted_at timestamptz,
    ADD COLUMN status_updated_at timestamptz;

-- ------------------------------------------------------------------ per contract and period

CREATE VIEW recon.latest_run AS
    SELECT run_id, as_of FROM recon.runs
     WHERE finished_at IS NOT NULL
     ORDER BY finished_at DESC, run_id DESC
     LIMIT 1;

-- Unbilled billable work (time and expenses, ready or on hold) with its age at the latest run.
CREATE VIEW recon.wip AS
    SELECT i.*, (r.as_of - i.item_date) AS age_days,
           (i.approved AND (r.as_of - i.item_date) > s.leakage_days) AS is_leakage
      FROM recon.items i
      CROSS JOIN recon.latest_run r
      CROSS JOIN recon.settings s
     WHERE i.item_type IN ('time', 'expense') AND i.state IN ('ready', 'on_hold');
COMMENT ON VIEW recon.wip IS
    'Work in progress: unbilled billable time and expenses with their age; is_leakage when approved and older than recon.settings.leakage_days.';

-- Leakage: approved billable work older than the threshold and still unbilled.
CREATE VIEW recon.leakage AS
    SELECT * FROM recon.wip WHERE is_leakage;

-- Per contract and month: scheduled (milestone and retainer schedule lines) vs ready vs on hold
-- vs billed, WIP and its oldest age, leakage. Amounts unrounded, in the items' currency.
CREATE VIEW recon.contract_periods AS
    WITH items AS (
        SELECT opportunity_id, contract_version, period_start, currency,
               sum(amount) FILTER (WHERE state = 'ready')   AS ready_amount,
               sum(hours)  FILTER (WHERE state = 'ready')   AS ready_hours,
               sum(amount) FILTER (WHERE state = 'on_hold') AS on_hold_amount,
               sum(hours)  FILTER (WHERE state = 'on_hold') AS on_hold_hours,
               sum(amount) FILTER (WHERE state = 'billed')  AS billed_amount,
               sum(hours)  FILTER (WHERE state = 'billed')  AS billed_hours,
               sum(hours)  FILTER (WHERE state = 'non_billable') AS non_billable_hours
          FROM recon.items
         WHERE opportunity_id IS NOT NULL
         GROUP BY 1, 2, 3, 4
    ), wip AS (
        SELECT opportunity_id, contract_version, period_start, currency,
               sum(amount) AS wip_amount, max(age_days) AS wip_oldest_days,
               sum(amount) FILTER (WHERE is_leakage) AS leakage_amount
          FROM recon.wip
         WHERE opportunity_id IS NOT NULL
         GROUP BY 1, 2, 3, 4
    ), scheduled AS (
        SELECT s.opportunity_id, s.version AS contract_version,
               date_trunc('month', coalesce(l.period_start, l.due_date))::date AS period_start,
               l.currency, sum(l.amount) AS scheduled_amount, count(*) AS scheduled_lines
          FROM billing.schedules s
          JOIN billing.schedule_lines l ON l.schedule_id = s.schedule_id
         WHERE s.status = 'active'
         GROUP BY 1, 2, 3, 4
    )
    SELECT coalesce(i.opportunity_id, s.opportunity_id) AS opportunity_id,
           coalesce(i.contract_version, s.contract_version) AS contract_version,
           coalesce(i.period_start, s.period_start) AS period_start,
           coalesce(i.currency, s.currency) AS currency,
           s.scheduled_amount, s.scheduled_lines,
           i.ready_amount, i.ready_hours, i.on_hold_amount, i.on_hold_hours,
           i.billed_amount, i.billed_hours, i.non_billable_hours,
           w.wip_amount, w.wip_oldest_days, w.leakage_amount
      FROM items i
      FULL JOIN scheduled s
        ON s.opportunity_id = i.opportunity_id AND s.contract_version = i.contract_version
       AND s.period_start = i.period_start AND s.currency = i.currency
      LEFT JOIN wip w
        ON w.opportunity_id = coalesce(i.opportunity_id, s.opportunity_id)
       AND w.contract_version = coalesce(i.contract_version, s.contract_version)
       AND w.period_start = coalesce(i.period_start, s.period_start)
       AND w.currency = coalesce(i.currency, s.currency);
COMMENT ON VIEW recon.contract_periods IS
    'Per contract version and month: scheduled vs ready vs on hold vs billed, WIP (with its oldest age in days) and leakage.';
