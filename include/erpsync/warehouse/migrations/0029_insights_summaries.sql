-- Process intelligence (issue 16, erpsync.console.insights): monthly summaries the insights page
-- reads instead of aggregating recon.items (over 1,000,000 rows on a large firm) per request.
--
-- Both are rebuilt whole by erpsync.console.insights.refresh_summaries in one transaction, at the
-- end of the runs that change what they summarise: the reconciliation task (recon.items, its
-- states and the leakage age) and the ERP push (billing.billed_items, invoice_push.posted_at).
-- tests/integration/test_insights_metrics.py checks that each equals the direct computation.
--
-- recon.monthly_items: recon.items grouped by work month and what happened to the items.
--   billed_month  month the item was posted on an ERP invoice (billing.billed_items joined to
--                 billing.invoice_push.posted_at, else billed_at); NULL: not billed by erpsync;
--   state         the item's state, 'billed' as soon as billing.billed_items has it (before the
--                 next reconciliation marks it);
--   leakage_amount  recon.leakage as of the latest run (approved, unbilled billable time and
--                 expenses older than recon.settings.leakage_days);
--   std_hours / std_billed / std_amount  billed time items with a billable rate card
--                 (core.rate_cards) on the work day: their hours, their amount, and hours x that
--                 standard rate converted to the item's currency through recon.currencies.per_eur
--                 (a card without a currency is in recon.settings.rate_card_currency); NULL when
--                 no card or no FX.
CREATE TABLE recon.monthly_items (
    work_month      date        NOT NULL,
    item_type       text        NOT NULL,
    state           text        NOT NULL,
    reason_code     text,
    approved        boolean     NOT NULL,
    currency        char(3),
    billed_month    date,
    items           bigint      NOT NULL,
    hours           numeric,
    amount          numeric,
    leakage_amount  numeric,
    std_hours       numeric,
    std_billed      numeric,
    std_amount      numeric
);
CREATE INDEX monthly_items_month_idx ON recon.monthly_items (work_month);
COMMENT ON TABLE recon.monthly_items IS
    'recon.items per work month, type, state, reason, approval, currency and billed month (rebuilt after each reconciliation and ERP push; see migration 0029).';

-- recon.monthly_reconciled: items per month of the reconciliation run that first classified
-- them (recon.items.first_run_id -> recon.runs.started_at): the exception rate's denominator.
CREATE TABLE recon.monthly_reconciled (
    run_month  date    NOT NULL,
    item_type  text    NOT NULL,
    items      bigint  NOT NULL,
    PRIMARY KEY (run_month, item_type)
);
COMMENT ON TABLE recon.monthly_reconciled IS
    'Items first reconciled per month (rebuilt with recon.monthly_items).';

-- billing.monthly_invoice_lag: the time-to-invoice histogram: per month of posting, how many
-- billed time and expense items had been worked how many days before their invoice posted.
CREATE TABLE billing.monthly_invoice_lag (
    posted_month  date     NOT NULL,
    lag_days      integer  NOT NULL,
    items         bigint   NOT NULL,
    PRIMARY KEY (posted_month, lag_days)
);
COMMENT ON TABLE billing.monthly_invoice_lag IS
    'Billed time/expense items per posting month and days from work date to ERP posting (rebuilt with recon.monthly_items).';

-- When the summaries were last rebuilt, and from which reconciliation.
CREATE TABLE recon.insights_refresh (
    id            boolean     PRIMARY KEY DEFAULT true CHECK (id),
    refreshed_at  timestamptz NOT NULL,
    run_id        text,
    as_of         date,
    seconds       numeric
);

-- Index-backed reads of the raw tables the page still reads directly (index-only scans: the
-- columns each query needs are in the index): exceptions raised per month and reason, resolved
-- per month and reason, open by reason and age; invoices posted per month.
CREATE INDEX exceptions_first_seen_idx ON ops.exceptions (first_seen_at) INCLUDE (reason_code);
CREATE INDEX exceptions_resolved_idx ON ops.exceptions (resolved_at)
    INCLUDE (first_seen_at, reason_code) WHERE status = 'resolved';
CREATE INDEX exceptions_open_age_idx ON ops.exceptions (reason_code, first_seen_at)
    WHERE status = 'open';
CREATE INDEX invoice_push_posted_idx ON billing.invoice_push (posted_at) INCLUDE (invoice_id)
    WHERE posted_at IS NOT NULL;
