-- The exceptions worklist of the finance console (issue 16): the client of each exception, who
-- assigned it to whom, and the indexes that keep every filter and sort of the worklist fast on a
-- large queue (200,000 rows: one status tab, ORDER BY <column> LIMIT 50 read in index order).
--
-- account_id: the client (CRM Account id, core.clients.crm_id) the exception concerns, when one
-- can be told: callers may pass it to erpsync.exceptions_queue.raise_exception; otherwise
-- ops.exception_account() derives it from the entity (below), at raise time and here for the
-- rows that exist. client_name: the client's legal name when the exception was last seen
-- (kept on the row so the worklist can sort by it from an index; the detail page shows the
-- current core.clients row).
--
-- assigned_by / assigned_at: set when a person assigns the exception (the console). A rerun
-- that sees the cause again then keeps that owner instead of the default owner of the check
-- (erpsync.exceptions_queue.raise_exception).

ALTER TABLE ops.exceptions
    ADD COLUMN account_id   text,
    ADD COLUMN client_name  text,
    ADD COLUMN assigned_by  text,
    ADD COLUMN assigned_at  timestamptz;

COMMENT ON COLUMN ops.exceptions.account_id IS
    'The client (CRM Account id) the exception concerns, when known (ops.exception_account).';
COMMENT ON COLUMN ops.exceptions.client_name IS
    'The client''s legal name when the exception was last raised (for sorting the worklist).';
COMMENT ON COLUMN ops.exceptions.assigned_by IS
    'Who assigned the exception to its owner by hand; a rerun keeps an assigned owner.';

-- The client of an exception, from what its entity is (the entity types raise_exception's
-- callers use: grep "raise_exception(" in include/erpsync). NULL when it cannot be told.
--   client                    entity_key is the CRM Account id (writeback.outbox: invalid VAT)
--   time_entry, expense       recon.items 'time:<psa id>' / 'expense:<psa id>' (reconcile)
--   milestone, psa_item       entity_key is a recon item key (push_crm, push)
--   opportunity               entity_key is the opportunity id (onboarding)
--   project, user_assignment  detail.opportunity_id (reconcile group problems)
--   contract_rate_override    entity_key '<opportunity id>|<email>' (writeback targets)
--   invoice                   entity_key is billing.invoices.document_number (push)
-- The relay's write_back_failed rows key '<operation>:<entity key>' (writeback.relay): the
-- operation prefix is stripped first.
CREATE FUNCTION ops.exception_account(p_entity_type text, p_entity_key text, p_detail jsonb)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    k text := regexp_replace(p_entity_key, '^[a-z]+\.[a-z_]+:', '');
    found text;
BEGIN
    IF p_entity_type = 'client' THEN
        found := k;
    ELSIF p_entity_type IN ('time_entry', 'expense', 'milestone', 'psa_item') THEN
        SELECT i.account_id INTO found
          FROM recon.items i
         WHERE i.item_key = coalesce(
                   p_detail ->> 'item_key',
                   CASE p_entity_type WHEN 'time_entry' THEN 'time:' || k
                                      WHEN 'expense' THEN 'expense:' || k
                                      ELSE k END)
         LIMIT 1;
    ELSIF p_entity_type IN ('opportunity', 'project', 'user_assignment', 'contract_rate_override') THEN
        SELECT c.account_id INTO found
          FROM core.contracts c
         WHERE c.opportunity_id = CASE p_entity_type
                   WHEN 'opportunity' THEN k
                   WHEN 'contract_rate_override' THEN split_part(k, '|', 1)
                   ELSE p_detail ->> 'opportunity_id' END
         ORDER BY c.version DESC
         LIMIT 1;
    ELSIF p_entity_type = 'invoice' THEN
        SELECT v.account_id INTO found FROM billing.invoices v WHERE v.document_number = k;
    END IF;
    RETURN found;
END
$$;

-- the rows that exist
UPDATE ops.exceptions e
   SET account_id = ops.exception_account(e.entity_type, e.entity_key, e.detail);
UPDATE ops.exceptions e
   SET client_name = c.legal_name
  FROM core.clients c
 WHERE c.crm_id = e.account_id;

-- One index per sort of the worklist, each led by the status (the worklist always shows one
-- status tab), ending in exception_id (the tie-breaker of every sort), so that
-- "WHERE status = $1 ORDER BY <column>, exception_id LIMIT 50" reads 50 index entries.
CREATE INDEX exceptions_list_id_idx ON ops.exceptions (status, exception_id);
CREATE INDEX exceptions_list_first_seen_idx ON ops.exceptions (status, first_seen_at, exception_id);
CREATE INDEX exceptions_list_reason_idx ON ops.exceptions (status, reason_code, exception_id);
CREATE INDEX exceptions_list_entity_idx ON ops.exceptions (status, entity_type, entity_key, exception_id);
CREATE INDEX exceptions_list_client_idx ON ops.exceptions (status, client_name, exception_id);
CREATE INDEX exceptions_list_owner_idx ON ops.exceptions (status, owner, exception_id);
CREATE INDEX exceptions_list_amount_idx ON ops.exceptions (status, amount_at_stake, exception_id);
CREATE INDEX exceptions_list_currency_idx ON ops.exceptions (status, currency, exception_id);
-- a resolved exception's age is how long it was open
CREATE INDEX exceptions_list_resolved_age_idx ON ops.exceptions ((resolved_at - first_seen_at), exception_id)
    WHERE status = 'resolved';
-- the client filter, and the free-text search (entity key starts with, any case)
CREATE INDEX exceptions_account_idx ON ops.exceptions (account_id, status);
CREATE INDEX exceptions_entity_key_prefix_idx ON ops.exceptions (status, lower(entity_key) text_pattern_ops);
-- (status, owner) is led by exceptions_list_owner_idx now
DROP INDEX ops.exceptions_owner_idx;
