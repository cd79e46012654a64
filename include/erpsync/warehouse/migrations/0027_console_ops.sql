-- Issue 16 (console: audit trail and sync health).

-- The audit chain's verified checkpoint. audit.verify_chain() re-hashes every row (a full scan,
-- minutes on millions of rows), too slow for a page. The console instead verifies only the rows
-- after the last verified one, in bounded batches (erpsync.console.audit_trail), and keeps here
-- how far the chain is known to be intact (the row and its hash) or where it broke. One row.
CREATE TABLE ops.audit_chain_checkpoint (
    singleton           boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    verified_audit_id   bigint      NOT NULL DEFAULT 0,
    verified_row_hash   text        NOT NULL DEFAULT 'genesis',
    verified_at         timestamptz,
    rows_verified       bigint      NOT NULL DEFAULT 0,
    broken_audit_id     bigint,
    broken_reason       text,
    broken_detected_at  timestamptz
);
INSERT INTO ops.audit_chain_checkpoint DEFAULT VALUES;

-- Audit search filters (the console pages newest first, keyset on audit_id): one index per
-- filter that leads to the newest rows of that actor / action quickly, and the date range.
CREATE INDEX audit_log_actor_idx ON audit.audit_log (actor, audit_id DESC);
CREATE INDEX audit_log_action_idx ON audit.audit_log (action, audit_id DESC);
CREATE INDEX audit_log_occurred_idx ON audit.audit_log (occurred_at DESC, audit_id DESC);
-- a run id alone (audit_log_run_idx leads with the DAG id)
CREATE INDEX audit_log_run_id_idx ON audit.audit_log (source_run_id, audit_id DESC);

-- Requeue of a quarantined record (Action.REQUEUE in the console): the next run of the entity's
-- sync re-reads the record by id from the source even if the watermark has passed it, loads it
-- through the normal path and records here which run did it and with what outcome.
ALTER TABLE ops.quarantine
    ADD COLUMN requeue_requested_at timestamptz,
    ADD COLUMN requeue_requested_by text,
    ADD COLUMN requeued_at          timestamptz,
    ADD COLUMN requeued_by_run      text,
    ADD COLUMN requeue_outcome      text
        CHECK (requeue_outcome IN ('loaded', 'quarantined', 'not_found'));
CREATE INDEX quarantine_requeue_pending_idx ON ops.quarantine (source_system, entity)
    WHERE resolved_at IS NULL AND requeue_requested_at IS NOT NULL AND requeued_at IS NULL;
-- the quarantine list (newest first): open rows, by entity, by reason, by record (also the
-- record's other rows on the detail page)
CREATE INDEX quarantine_open_list_idx ON ops.quarantine (quarantine_id DESC)
    WHERE resolved_at IS NULL;
CREATE INDEX quarantine_entity_list_idx ON ops.quarantine (entity, quarantine_id DESC);
CREATE INDEX quarantine_reason_list_idx ON ops.quarantine (reason_code, quarantine_id DESC);
CREATE INDEX quarantine_record_idx ON ops.quarantine (record_key, quarantine_id DESC);

-- Sync health: the last run and the last 30 runs of each entity.
CREATE INDEX run_stats_entity_idx ON ops.run_stats (entity, run_stat_id DESC);
