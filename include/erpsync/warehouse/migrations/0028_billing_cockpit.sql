-- The billing cockpit (issue 16, erpsync.console.billing): what it reads must answer in well
-- under a second on the large firm (1,000,000+ recon.items), so it never groups recon.items
-- per request. The reconciliation (erpsync.reconcile.run_reconcile) writes recon.item_totals
-- in the same transaction as the items, from the per-group sums it already computes for its
-- own summary (sql.SUMMARY, or the parallel workers' sums): per period, client, currency,
-- item type, state, reason, approval, WIP age bucket and leakage flag, one row per shard that
-- has such items (a client's contracts may be in both shards): readers sum them.
--
-- WIP age and leakage are measured as recon.wip measures them: against the run's as-of date
-- (the latest run's, which the table was written by) and recon.settings.leakage_days; the
-- age bucket is set only for WIP (unbilled time and expenses, ready or on hold):
-- 0 = 0-30 days (and anything dated after the as-of date), 1 = 31-60, 2 = 61-90, 3 = over 90.
-- Amounts are the unrounded item amounts summed, in the items' currency (erpsync.money rounds
-- them once where they are shown).

CREATE TABLE recon.item_totals (
    period_start   date     NOT NULL,
    account_id     text,                -- CRM account (client); NULL: no contract found
    client_psa_id  text,                -- the PSA client (shown when there is no CRM account)
    currency       char(3),
    item_type      text     NOT NULL,
    state          text     NOT NULL,
    reason_code    text,
    approved       boolean  NOT NULL,
    age_bucket     smallint CHECK (age_bucket BETWEEN 0 AND 3),
    is_leakage     boolean  NOT NULL,
    items          bigint   NOT NULL,
    hours          numeric,
    amount         numeric,
    CHECK ((age_bucket IS NOT NULL) = (item_type IN ('time', 'expense')
                                       AND state IN ('ready', 'on_hold')))
);
-- one narrow index: every run rewrites the table in its transaction (text keys with many
-- duplicates tripled that write on the large firm); the cockpit reads it filtered by period,
-- else whole (tens of thousands of rows)
CREATE INDEX item_totals_period_idx ON recon.item_totals (period_start);
COMMENT ON TABLE recon.item_totals IS
    'recon.items summed per period, client, currency, item type, state, reason, approval, WIP age bucket (0: 0-30 days, 1: 31-60, 2: 61-90, 3: over 90) and leakage; rewritten by every reconciliation in its transaction (the billing cockpit reads it).';

-- A warehouse reconciled before this migration: its totals now, as of its latest run.
INSERT INTO recon.item_totals (period_start, account_id, client_psa_id, currency, item_type,
                               state, reason_code, approved, age_bucket, is_leakage, items,
                               hours, amount)
SELECT i.period_start, i.account_id, i.client_psa_id, i.currency, i.item_type, i.state,
       i.reason_code, i.approved,
       CASE WHEN i.item_type IN ('time', 'expense') AND i.state IN ('ready', 'on_hold') THEN
            CASE WHEN r.as_of - i.item_date <= 30 THEN 0
                 WHEN r.as_of - i.item_date <= 60 THEN 1
                 WHEN r.as_of - i.item_date <= 90 THEN 2
                 ELSE 3 END END,
       (i.item_type IN ('time', 'expense') AND i.state IN ('ready', 'on_hold') AND i.approved
        AND r.as_of - i.item_date > s.leakage_days),
       count(*), sum(i.hours), sum(i.amount)
  FROM recon.items i
 CROSS JOIN recon.latest_run r
 CROSS JOIN recon.settings s
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;

-- One row per period, client and currency with the cockpit's columns, summed from
-- recon.item_totals by the same run (the period x client table pages through it).
CREATE TABLE recon.client_period_totals (
    period_start    date     NOT NULL,
    account_id      text,
    client_psa_id   text,
    currency        char(3),
    ready_items     bigint   NOT NULL,
    ready_hours     numeric,
    ready_amount    numeric,
    on_hold_items   bigint   NOT NULL,
    on_hold_hours   numeric,
    on_hold_amount  numeric,
    billed_items    bigint   NOT NULL,
    billed_hours    numeric,
    billed_amount   numeric,
    wip_items       bigint   NOT NULL,
    wip_amount      numeric,
    leakage_items   bigint   NOT NULL,
    leakage_hours   numeric,
    leakage_amount  numeric
);
CREATE INDEX client_period_totals_period_idx ON recon.client_period_totals (period_start);
COMMENT ON TABLE recon.client_period_totals IS
    'recon.item_totals per period, client and currency: ready, on hold, billed (items, hours, amount), WIP and leakage; rewritten by every reconciliation with it.';

INSERT INTO recon.client_period_totals
SELECT period_start, account_id, client_psa_id, currency,
       coalesce(sum(items) FILTER (WHERE state = 'ready'), 0),
       sum(hours) FILTER (WHERE state = 'ready'), sum(amount) FILTER (WHERE state = 'ready'),
       coalesce(sum(items) FILTER (WHERE state = 'on_hold'), 0),
       sum(hours) FILTER (WHERE state = 'on_hold'), sum(amount) FILTER (WHERE state = 'on_hold'),
       coalesce(sum(items) FILTER (WHERE state = 'billed'), 0),
       sum(hours) FILTER (WHERE state = 'billed'), sum(amount) FILTER (WHERE state = 'billed'),
       coalesce(sum(items) FILTER (WHERE age_bucket IS NOT NULL), 0),
       sum(amount) FILTER (WHERE age_bucket IS NOT NULL),
       coalesce(sum(items) FILTER (WHERE is_leakage), 0),
       sum(hours) FILTER (WHERE is_leakage), sum(amount) FILTER (WHERE is_leakage)
  FROM recon.item_totals
 GROUP BY 1, 2, 3, 4;

-- The cockpit's invoice batches per period (and client: invoices_account_idx) read by index.
CREATE INDEX invoices_period_idx ON billing.invoices (period_start, currency);
