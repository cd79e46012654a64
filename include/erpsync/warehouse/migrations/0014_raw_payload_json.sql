-- The raw landing keeps each vendor payload exactly as it was received: type json (the text,
-- checked to be valid JSON) instead of jsonb (parsed into a binary tree, keys reordered and
-- de-duplicated). The landing zone is written once per record and read rarely (audits, the
-- CRM owner lookup with ->>, which works on json), so the cheaper input path is the right
-- trade: parsing payloads into jsonb was about half of PostgreSQL's work in a full
-- time-entry sync (benchmarks/profile_sync_server.py).
ALTER TABLE raw.vendor_records ALTER COLUMN payload TYPE json USING payload::json;
COMMENT ON COLUMN raw.vendor_records.payload IS
    'The vendor payload exactly as received (json: validated text, not re-serialised).';
