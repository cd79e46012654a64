-- The reconciliation in parallel (erpsync.reconcile): recon.items in two shards, each a
-- partition, so two workers (connections, cores) classify at once and the first reconciliation
-- of a large firm builds each shard's partition - rows, indexes, constraints - on its own core,
-- then swaps the new partitions in, in the run's transaction.
--
-- shard: 0 or 1, from the item's contract (else its PSA project): hashtext(coalesce(
-- opportunity_id, project_psa_id, '')) & 2147483647) % 2. All items of one contract are in one
-- shard, so a cap's running total and a duplicate group never span two workers.
--
-- item_key stays unique by construction (each item is classified once, in the shard of its
-- contract, and moves with it); PostgreSQL requires the partition key in a unique index, so
-- the key is (item_key, shard), a unique index in byte order (text_pattern_ops: item keys are
-- only ever compared for equality, and byte order sorts about a third faster when a shard's
-- index is built).
--
-- Indexes: one, over the open items only (ready and on hold: what invoicing, the milestone
-- sensor and the exceptions read, by state, contract and period). Billed and non-billable
-- items, the bulk of the table and growing every month, are read only whole (the views, the
-- summaries, the data-quality suite), so they are in no index but the key.

CREATE SCHEMA IF NOT EXISTS recon_work;
COMMENT ON SCHEMA recon_work IS
    'Per-run work tables of a parallel reconciliation (dropped or attached by the run that made them; a failed run''s are dropped by the next run).';

ALTER TABLE recon.items RENAME TO items_before_0015;
-- (constraint names given explicitly: the old table keeps its own until it is dropped below)

CREATE TABLE recon.items (
    -- the columns the key, the open-items index, the foreign key and the summary read come
    -- first (fixed-width ones before them): PostgreSQL decodes a row from its start, and the
    -- first run builds every index from 1,000,000+ new rows
    shard             smallint    NOT NULL DEFAULT 0,
    item_date         date        NOT NULL,
    period_start      date        NOT NULL,
    approved          boolean     NOT NULL,
    item_key          text        NOT NULL,
    state             text        NOT NULL
        CONSTRAINT items_state_check CHECK (state IN ('ready', 'billed', 'non_billable', 'on_hold')),
    reason_code       text        CONSTRAINT items_reason_code_fkey REFERENCES recon.reasons (code),
    opportunity_id    text,
    currency          char(3),
    hours             numeric,
    amount            numeric,
    item_type         text        NOT NULL
        CONSTRAINT items_item_type_check CHECK (item_type IN ('time', 'expense', 'milestone', 'retainer')),
    source_id         text        NOT NULL,
    account_id        text,
    client_psa_id     text,
    contract_version  integer,
    project_psa_id    text,
    user_psa_id       text,
    user_assignment_psa_id text,
    task_psa_id       text,
    task_name         text,
    role              text,
    quantity          numeric,
    rate              numeric,
    -- every problem found, in precedence order (reason_code is the first, or not_approved...)
    problems          text[]      NOT NULL DEFAULT '{}',
    reason_detail     jsonb,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT items_check CHECK ((state = 'on_hold') = (reason_code IS NOT NULL))
) PARTITION BY LIST (shard);
CREATE TABLE recon.items_0 PARTITION OF recon.items FOR VALUES IN (0);
CREATE TABLE recon.items_1 PARTITION OF recon.items FOR VALUES IN (1);
CREATE UNIQUE INDEX items_key_idx ON recon.items (item_key text_pattern_ops, shard);
CREATE INDEX items_open_idx ON recon.items (state, opportunity_id, period_start)
    WHERE state IN ('ready', 'on_hold');
COMMENT ON TABLE recon.items IS
    'The reconciliation: one row per time entry, expense, milestone and retainer fee, in exactly one state; amount unrounded in currency (the contract currency, except items held for currency_differs_from_contract). Two shards (partitions) by contract, see migration 0015.';
COMMENT ON COLUMN recon.items.shard IS
    'The shard (partition) of the item''s contract, else PSA project: (hashtext(coalesce(opportunity_id, project_psa_id, '''')) & 2147483647) % 2.';

INSERT INTO recon.items (
    item_key, item_type, source_id, account_id, client_psa_id, opportunity_id, contract_version,
    project_psa_id, user_psa_id, user_assignment_psa_id, task_psa_id, task_name, role,
    item_date, period_start, hours, quantity, rate, currency, amount, approved, state,
    reason_code, problems, reason_detail, first_run_id, last_run_id, updated_at,
    shard)
SELECT o.item_key, o.item_type, o.source_id, o.account_id, o.client_psa_id, o.opportunity_id,
       o.contract_version, o.project_psa_id, o.user_psa_id, o.user_assignment_psa_id,
       o.task_psa_id, o.task_name, o.role, o.item_date, o.period_start, o.hours, o.quantity,
       o.rate, o.currency, o.amount, o.approved, o.state, o.reason_code, o.problems,
       o.reason_detail, o.first_run_id, o.last_run_id, o.updated_at,
       ((hashtext(coalesce(o.opportunity_id, o.project_psa_id, '')) & 2147483647) % 2)::smallint
  FROM recon.items_before_0015 o;

-- the views read the new table (same definitions as migration 0009)
DROP VIEW recon.contract_periods;
DROP VIEW recon.leakage;
DROP VIEW recon.wip;
DROP TABLE recon.items_before_0015;

CREATE VIEW recon.wip AS
    SELECT i.*, (r.as_of - i.item_date) AS age_days,
           (i.approved AND (r.as_of - i.item_date) > s.leakage_days) AS is_leakage
      FROM recon.items i
      CROSS JOIN recon.latest_run r
      CROSS JOIN recon.settings s
     WHERE i.item_type IN ('time', 'expense') AND i.state IN ('ready', 'on_hold');
COMMENT ON VIEW recon.wip IS
    'Work in progress: unbilled billable time and expenses with their age; is_leakage when approved and older than recon.settings.leakage_days.';

CREATE VIEW recon.leakage AS
    SELECT * FROM recon.wip WHERE is_leakage;

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
