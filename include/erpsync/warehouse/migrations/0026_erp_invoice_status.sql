-- Cash (issue 16): the payment status of the invoices erpsync pushed, as Business Central shows
-- it, and the dated history of what each invoice still owes, so days sales outstanding (DSO)
-- and overdue receivables can be computed for today and for any past month.
--
-- Source: BC API v2.0 salesInvoice, documented properties status (" ", Draft, In Review, Open,
-- Paid, Canceled, Corrective), remainingAmount, dueDate, postingDate,
-- totalAmountIncludingTax, lastModifiedDateTime
-- (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salesinvoice).
-- Written by erpsync.invoicing.payment_status.sync_payment_status; read by erpsync.console.cash.
--
-- billing.erp_invoice_status: one row per pushed invoice (billing.invoices kind 'invoice' with
--   an ERP id), the latest state read from BC.
-- billing.erp_receivable_history: what the invoice still owed, as periods [valid_from,
--   valid_to) in days. The first period starts on the BC posting date with the full total
--   (a just-posted invoice owes its total: BC sets remainingAmount to the amount including
--   VAT on posting); each sync that reads a different remaining amount or status closes the
--   open period and opens a new one from the sync's date. BC's salesInvoice carries no payment
--   date, so a payment counts from the day a sync first saw it (with the nightly sync, at most
--   a day late); the history holds exactly what was synced, never a guess.
--
-- DSO for month M (per currency; amounts are never added across currencies):
--   receivables(M) = sum of remaining_amount of the periods in effect at the end of M's last
--                    day (valid_from <= last day < coalesce(valid_to, infinity))
--   billings(M)    = sum of total_incl_tax of the invoices posted in M and the two months
--                    before it (credit notes not netted: they lower remaining_amount instead)
--   DSO(M)         = receivables(M) / billings(M) x days in those three months
-- For the current month "the end of M" is the as-of date.

CREATE TABLE billing.erp_invoice_status (
    invoice_id         bigint         PRIMARY KEY REFERENCES billing.invoices (invoice_id),
    erp_invoice_id     text           NOT NULL UNIQUE,
    erp_number         text,
    document_number    text           NOT NULL,
    account_id         text           NOT NULL,
    client_name        text,
    currency           char(3)        NOT NULL,
    status             text           NOT NULL
                       CHECK (status IN (' ', 'Draft', 'In Review', 'Open', 'Paid', 'Canceled', 'Corrective')),
    posting_date       date           NOT NULL,
    due_date           date,
    total_incl_tax     numeric(20, 4) NOT NULL,
    remaining_amount   numeric(20, 4) NOT NULL,
    erp_last_modified  timestamptz,
    first_synced_at    timestamptz    NOT NULL DEFAULT now(),
    synced_at          timestamptz    NOT NULL DEFAULT now(),
    -- the sync date on which BC first showed the invoice Paid (NULL while not paid)
    paid_on            date,
    last_run_id        text           NOT NULL
);
-- overdue and open receivables per client read only invoices that still owe something
CREATE INDEX erp_invoice_status_owing_idx ON billing.erp_invoice_status (account_id, currency)
    WHERE remaining_amount <> 0;
CREATE INDEX erp_invoice_status_posting_idx ON billing.erp_invoice_status (posting_date, currency);
COMMENT ON TABLE billing.erp_invoice_status IS
    'Latest Business Central payment status of each invoice erpsync pushed (salesInvoice status, remainingAmount, dueDate).';

CREATE TABLE billing.erp_receivable_history (
    invoice_id        bigint         NOT NULL REFERENCES billing.erp_invoice_status (invoice_id),
    valid_from        date           NOT NULL,
    -- exclusive; NULL = the period in effect now
    valid_to          date,
    status            text           NOT NULL,
    remaining_amount  numeric(20, 4) NOT NULL,
    observed_at       timestamptz    NOT NULL DEFAULT now(),
    run_id            text           NOT NULL,
    PRIMARY KEY (invoice_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE UNIQUE INDEX erp_receivable_history_open_uq ON billing.erp_receivable_history (invoice_id)
    WHERE valid_to IS NULL;
-- month-end balances: only periods that owe something count
CREATE INDEX erp_receivable_history_owing_idx ON billing.erp_receivable_history (valid_from, valid_to)
    WHERE remaining_amount <> 0;
COMMENT ON TABLE billing.erp_receivable_history IS
    'Remaining amount of each pushed invoice as synced from Business Central, as date periods [valid_from, valid_to).';

-- Summaries the console reads (a page must not aggregate every invoice per request), refreshed
-- by the sync in the same transaction for the months its changes touch
-- (erpsync.console.cash.refresh_dso_months / refresh_status_months); a test checks each equals
-- the direct computation from the two tables above.
--
-- billing.erp_cash_monthly: per month and currency, receivables at the end of the month's last
--   day (for the current month: the periods open at the last sync, i.e. what is owed now) and
--   the billings of the month and the two before it. DSO = receivables / billings x days,
--   days counted when read (to the as-of date in the current month).
CREATE TABLE billing.erp_cash_monthly (
    month              date           NOT NULL CHECK (extract(day FROM month) = 1),
    currency           char(3)        NOT NULL,
    receivables        numeric(20, 4) NOT NULL,
    billings_3m        numeric(20, 4) NOT NULL,
    invoices_owing     integer        NOT NULL,
    refreshed_at       timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (month, currency)
);

-- The sync date the summaries were last refreshed for (one row): the console reads them for an
-- as-of date on or after it in the same month, else computes from the two tables above.
CREATE TABLE billing.erp_cash_refresh (
    singleton          boolean        PRIMARY KEY DEFAULT true CHECK (singleton),
    refreshed_through  date           NOT NULL,
    refreshed_at       timestamptz    NOT NULL DEFAULT now()
);

-- billing.erp_cash_status_monthly: invoices per posting month, currency and payment state
--   (unpaid, partly_paid, paid, canceled, corrective, draft) with their totals and what remains.
CREATE TABLE billing.erp_cash_status_monthly (
    month         date           NOT NULL CHECK (extract(day FROM month) = 1),
    currency      char(3)        NOT NULL,
    state         text           NOT NULL,
    invoices      integer        NOT NULL,
    total         numeric(20, 4) NOT NULL,
    remaining     numeric(20, 4) NOT NULL,
    refreshed_at  timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (month, currency, state)
);
