-- Request budgets (issue 18): how many requests each task sent to each vendor system, by
-- purpose, so run statistics show where a month-end's API budget went.
--
-- ops.request_counts: one row per task try, system and purpose, written at the end of the task
-- by erpsync.request_budget.track_requests (the difference of the process's request ledger,
-- erpsync.connectors.budget.LEDGER, between the task's start and end). purpose is what the
-- request did: auth, read, create, post, batch, mark, update, delete. requests counts every
-- request sent (retries included); throttled_429 those answered 429; waited_seconds the sleeps
-- for Retry-After/back-off; throttle_seconds the time spent waiting for the client-side rate
-- limiter (erpsync.connectors.throttle).
CREATE TABLE ops.request_counts (
    dag_id           text          NOT NULL,
    run_id           text          NOT NULL,
    task_id          text          NOT NULL,
    map_index        integer       NOT NULL DEFAULT -1,
    try_number       integer       NOT NULL DEFAULT 1,
    system           text          NOT NULL CHECK (system IN ('crm', 'psa', 'erp')),
    purpose          text          NOT NULL CHECK (purpose IN ('auth', 'read', 'create', 'post',
                                       'batch', 'mark', 'update', 'delete')),
    requests         integer       NOT NULL CHECK (requests >= 0),
    throttled_429    integer       NOT NULL DEFAULT 0 CHECK (throttled_429 >= 0),
    waited_seconds   numeric(12,3) NOT NULL DEFAULT 0,
    throttle_seconds numeric(12,3) NOT NULL DEFAULT 0,
    recorded_at      timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, run_id, task_id, map_index, try_number, system, purpose)
);
CREATE INDEX request_counts_recorded_idx ON ops.request_counts (recorded_at);
COMMENT ON TABLE ops.request_counts IS
    'Requests per task try, vendor system and purpose (written at task end; issue 18).';
