-- The warehouse schemas, by purpose (DESIGN.md "Data flow").
CREATE SCHEMA IF NOT EXISTS raw;      -- landed vendor payloads, one row per record per load
CREATE SCHEMA IF NOT EXISTS core;     -- the canonical model and the cross-system id map
CREATE SCHEMA IF NOT EXISTS recon;    -- reconciliation results
CREATE SCHEMA IF NOT EXISTS billing;  -- schedules, invoice batches, outbox
CREATE SCHEMA IF NOT EXISTS ops;      -- watermarks, quarantine, exceptions, run statistics
CREATE SCHEMA IF NOT EXISTS audit;    -- the append-only business audit trail
