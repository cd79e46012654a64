-- Data-quality blocks (issue 6): what a critical Great Expectations failure stops from being
-- invoiced, written by erpsync.quality.run_suites.
--
-- A critical expectation that fails opens (or refreshes) one ACTIVE row per scope it affects:
-- 'client' (scope_key = CRM account id), 'contract' (scope_key = CRM opportunity id) or 'all'
-- (scope_key = '*': the failure cannot be pinned on a client or contract). The row is CLEARED by
-- the first later run in which the same expectation passes for that scope; cleared rows are kept
-- as history. A warning never writes here. Every open and clear is also in audit.audit_log.
--
-- Invoicing holds an item (reason 'dq_blocked') when ops.dq_blocked(account_id, opportunity_id)
-- is true, i.e. an active block exists for 'all', for the item's client or for its contract.

CREATE TABLE ops.dq_blocks (
    block_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope_type     text        NOT NULL CHECK (scope_type IN ('all', 'client', 'contract')),
    scope_key      text        NOT NULL,
    suite          text        NOT NULL,
    expectation    text        NOT NULL,
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status         text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'cleared')),
    first_run_id   text        NOT NULL,
    last_run_id    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    cleared_at     timestamptz,
    cleared_run_id text,
    CHECK ((scope_type = 'all') = (scope_key = '*')),
    CHECK ((status = 'cleared') = (cleared_at IS NOT NULL))
);
-- one active block per (scope, suite, expectation), however often a run sees the failure again
CREATE UNIQUE INDEX dq_blocks_active_uq ON ops.dq_blocks (scope_type, scope_key, suite, expectation)
    WHERE status = 'active';
CREATE INDEX dq_blocks_scope_idx ON ops.dq_blocks (scope_type, scope_key) WHERE status = 'active';
CREATE INDEX dq_blocks_suite_idx ON ops.dq_blocks (suite, status);
COMMENT ON TABLE ops.dq_blocks IS
    'Invoicing blocks opened by critical data-quality failures, per client, contract or all; cleared when the check passes again.';

-- The blocks in force now, for finance and for invoicing.
CREATE VIEW ops.dq_active_blocks AS
SELECT block_id, scope_type, scope_key, suite, expectation, detail,
       first_run_id, last_run_id, created_at, updated_at
  FROM ops.dq_blocks
 WHERE status = 'active';
COMMENT ON VIEW ops.dq_active_blocks IS
    'Active data-quality blocks: an item is held when a block exists for all, its client (CRM account id) or its contract (opportunity id).';

-- True when an item of this client / contract must not be invoiced now (either key may be NULL).
CREATE FUNCTION ops.dq_blocked(p_account_id text, p_opportunity_id text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM ops.dq_blocks b
         WHERE b.status = 'active'
           AND (b.scope_type = 'all'
                OR (b.scope_type = 'client' AND b.scope_key = p_account_id)
                OR (b.scope_type = 'contract' AND b.scope_key = p_opportunity_id)))
$$;
COMMENT ON FUNCTION ops.dq_blocked(text, text) IS
    'Whether an active data-quality block covers this client (CRM account id) or contract (opportunity id).';
