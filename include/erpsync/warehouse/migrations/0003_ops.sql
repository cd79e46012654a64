-- Sync watermarks: advanced only after the merge that used them commits.
CREATE TABLE ops.sync_watermarks (
    source_system  text        NOT NULL CHECK (source_system IN ('crm', 'psa', 'erp')),
    entity         text        NOT NULL,
    cursor_ts      timestamptz,
    cursor_id      text,
    cursor_state   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by_run text,
    PRIMARY KEY (source_system, entity)
);

-- Records that failed validation, with the reason and the raw payload, per run.
CREATE TABLE ops.quarantine (
    quarantine_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         text        NOT NULL,
    source_system  text        NOT NULL,
    entity         text        NOT NULL,
    record_key     text,
    reason_code    text        NOT NULL,
    reason_detail  text        NOT NULL,
    payload        jsonb       NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    resolved_by_run text
);
CREATE INDEX quarantine_open_idx ON ops.quarantine (source_system, entity, record_key)
    WHERE resolved_at IS NULL;

-- One row per task run and entity: what it read, loaded, left unchanged, quarantined, deleted
-- and wrote back. Counts come from the database after commit, not from loops.
CREATE TABLE ops.run_stats (
    run_stat_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id         text        NOT NULL,
    run_id         text        NOT NULL,
    task_id        text        NOT NULL,
    try_number     integer     NOT NULL DEFAULT 1,
    entity         text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    records_read        bigint NOT NULL DEFAULT 0,
    records_loaded      bigint NOT NULL DEFAULT 0,
    records_unchanged   bigint NOT NULL DEFAULT 0,
    records_quarantined bigint NOT NULL DEFAULT 0,
    records_deleted     bigint NOT NULL DEFAULT 0,
    records_written_back bigint NOT NULL DEFAULT 0,
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX run_stats_run_idx ON ops.run_stats (dag_id, run_id);
