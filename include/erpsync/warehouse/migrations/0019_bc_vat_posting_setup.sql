-- Business Central VAT rates from a source a real tenant has (issue 13, audit B4): page 472
-- "VAT Posting Setup" published as the OData V4 web service VATPostingSetup. BC keeps one VAT %
-- per VAT Business Posting Group x VAT Product Posting Group and no validity dates, so the
-- warehouse keeps the dated history itself:
--   core.vat_posting_setup  the setup as last read (one row per combination, merged by the
--                           tax_rates sync like any other entity);
--   core.tax_rates          the periods erpsync derives from it (erpsync.sync.vat_rates): a
--                           combination seen for the first time opens a period (from the sync
--                           date, or ERPSYNC_TAX_RATES_SINCE on the very first sync), a changed
--                           percentage closes the open period the day before the sync date and
--                           opens a new one, an unchanged one changes nothing.
CREATE TABLE core.vat_posting_setup (
    vat_bus_posting_group  text          NOT NULL,
    tax_code               text          NOT NULL,  -- the VAT Product Posting Group (taxGroups)
    rate_percent           numeric(9, 4) NOT NULL CHECK (rate_percent >= 0 AND rate_percent <= 100),
    calculation_type       text,
    vat_identifier         text,
    blocked                boolean       NOT NULL DEFAULT false,
    source_record_id       text          NOT NULL,
    row_hash               text          NOT NULL,
    source_modstamp        timestamptz,
    deleted_at             timestamptz,
    first_run_id           text          NOT NULL,
    last_run_id            text          NOT NULL,
    updated_at             timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (vat_bus_posting_group, tax_code)
);
CREATE INDEX vat_posting_setup_source_idx ON core.vat_posting_setup (source_record_id);

-- The periods now come from VAT Posting Setup: a rate belongs to a VAT Business Posting Group
-- (the customer's tax area) as well as to a tax code. '' = any group (rows entered by hand).
ALTER TABLE core.tax_rates ADD COLUMN vat_bus_posting_group text NOT NULL DEFAULT '';
CREATE INDEX tax_rates_bus_lookup_idx
    ON core.tax_rates (tax_code, vat_bus_posting_group, valid_from);
COMMENT ON TABLE core.tax_rates IS
    'VAT rate periods dated by erpsync from BC VAT Posting Setup (which has no dates); '
    'source_record_id VATPostingSetup:<bus>|<prod> for derived rows.';
