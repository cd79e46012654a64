-- Plausibility rules (issue 14): bounds in the audited policy table recon.settings (changed
-- through erpsync.reconcile.policy.update_settings, which writes an audit row) and their reason
-- codes in the catalogue recon.reasons. Reconciliation (erpsync.reconcile.sql) holds an
-- implausible billable item with its reason; it is never billed unexamined.
--
-- Documented defaults:
--   max_hours_per_entry       24   one time entry is at most one day's hours
--   max_hours_per_person_day  16   a person's hours on one date, every live entry summed
--   rate_ratio_min / _max     0.5 / 2.0  the rate billed against the person's billable rate
--                                  cards (lowest / highest card): below half or above twice;
--                                  compared in one currency through recon.currencies.per_eur
--   rate_card_currency        EUR  the currency of a rate card without one (Harvest's)
--   date_tolerance_days       31   dated more than this many days before the contract start,
--                                  after its end, or after the reconciliation date

ALTER TABLE recon.settings
    ADD COLUMN max_hours_per_entry      numeric NOT NULL DEFAULT 24
        CHECK (max_hours_per_entry > 0),
    ADD COLUMN max_hours_per_person_day numeric NOT NULL DEFAULT 16
        CHECK (max_hours_per_person_day > 0),
    ADD COLUMN rate_ratio_min           numeric NOT NULL DEFAULT 0.5 CHECK (rate_ratio_min > 0),
    ADD COLUMN rate_ratio_max           numeric NOT NULL DEFAULT 2.0,
    ADD COLUMN date_tolerance_days      integer NOT NULL DEFAULT 31
        CHECK (date_tolerance_days >= 0),
    -- Harvest's rates carry no currency: they are in the Harvest account's currency (this one)
    ADD COLUMN rate_card_currency       char(3) NOT NULL DEFAULT 'EUR',
    ADD CONSTRAINT settings_rate_ratio_check CHECK (rate_ratio_max >= rate_ratio_min);
COMMENT ON TABLE recon.settings IS
    'Reconciliation policy (one row): lock date, leakage threshold, receipt threshold, default expense markup, plausibility bounds (hours per entry and per person per day, rate ratio to the rate card, days outside the contract period).';

INSERT INTO recon.reasons (code, label, description, owner, precedence, raises_exception) VALUES
    ('implausible_date', 'Implausible date',
     'Dated more than recon.settings.date_tolerance_days before the contract start, after its end, or after the reconciliation date (a mistyped date?).',
     'timesheet_owner', 15, true),
    ('hours_over_entry_limit', 'Hours over the entry limit',
     'A time entry with more hours than recon.settings.max_hours_per_entry.',
     'timesheet_owner', 32, true),
    ('hours_over_day_limit', 'Hours over the daily limit',
     'The person''s hours on that date (every live time entry) exceed recon.settings.max_hours_per_person_day; each of their billable entries of that day is held.',
     'timesheet_owner', 34, true),
    ('zero_amount', 'Zero amount',
     'Billable time or expense whose amount is zero (0 hours, a zero rate, a zero expense): nothing to bill.',
     'timesheet_owner', 36, true),
    ('rate_off_card', 'Rate far from the rate card',
     'The rate is below rate_ratio_min or above rate_ratio_max times the person''s billable rate card (recon.settings).',
     'resource_manager', 55, true);
