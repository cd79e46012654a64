-- The write-back outbox and the exceptions queue (issue 4).
--
-- ops.outbox: one row per write erpsync owes another system, inserted in the same transaction
-- as the core change that caused it (transactional outbox), sent later by the relay
-- (erpsync.writeback.relay), which claims rows with FOR UPDATE SKIP LOCKED so two relays never
-- send one row twice. The idempotency key is derived from the operation, the entity and the
-- payload hash (plus the row it follows), so an unchanged record never enqueues again.
CREATE TABLE ops.outbox (
    outbox_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_system    text        NOT NULL CHECK (target_system IN ('crm', 'psa', 'erp')),
    operation        text        NOT NULL,
    entity_type      text        NOT NULL,
    entity_key       text        NOT NULL,
    canonical_id     bigint,
    idempotency_key  text        NOT NULL UNIQUE,
    external_ref     text,
    payload          jsonb       NOT NULL,
    payload_hash     text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'sent', 'failed', 'blocked', 'superseded')),
    blocked_reason   text,
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error       text,
    target_id        text,
    result           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    created_dag_id   text,
    created_run_id   text,
    last_run_id      text
);
CREATE INDEX outbox_ready_idx ON ops.outbox (target_system, outbox_id)
    WHERE status IN ('pending', 'in_flight');
CREATE INDEX outbox_entity_idx ON ops.outbox (operation, entity_key, outbox_id DESC);
COMMENT ON TABLE ops.outbox IS
    'Writes owed to the CRM, PSA and ERP: enqueued with the core change, sent by the relay, outcome recorded.';
COMMENT ON COLUMN ops.outbox.last_error IS
    'The last failure, scrubbed of secrets before it is stored.';

-- ops.exceptions: problems a person must act on (an invalid VAT id, a rejected write...), one open
-- row per (reason, entity) however often a run sees it again; resolved when the cause is gone,
-- or waived by a named person with a comment.
CREATE TABLE ops.exceptions (
    exception_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reason_code      text        NOT NULL,
    entity_type      text        NOT NULL,
    entity_key       text        NOT NULL,
    owner            text        NOT NULL,
    status           text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'waived')),
    detail           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    amount_at_stake  numeric(20, 4),
    currency         text,
    first_seen_run   text        NOT NULL,
    last_seen_run    text        NOT NULL,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz,
    resolved_by      text,
    waived_at        timestamptz,
    waived_by        text,
    waive_comment    text,
    CHECK (status <> 'resolved' OR resolved_at IS NOT NULL),
    CHECK (status <> 'waived' OR (waived_by IS NOT NULL AND nullif(btrim(waive_comment), '') IS NOT NULL))
);
-- at most one live (open or waived) row per cause: a rerun updates it, never duplicates it
CREATE UNIQUE INDEX exceptions_live_uq ON ops.exceptions (reason_code, entity_type, entity_key)
    WHERE status IN ('open', 'waived');
CREATE INDEX exceptions_owner_idx ON ops.exceptions (owner, status);
COMMENT ON TABLE ops.exceptions IS
    'The exceptions queue: one live row per (reason_code, entity_type, entity_key); resolved or waived with who and why.';
