-- The business audit trail: who, when, what, before/after, and the run that did it.
-- Append-only, enforced by the database: UPDATE, DELETE and TRUNCATE are rejected by triggers,
-- and each row carries a SHA-256 hash chained to the previous row, so a row changed or removed
-- behind the triggers' back (by a superuser disabling them) breaks the chain (audit.verify_chain()).
CREATE TABLE audit.audit_log (
    audit_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          text        NOT NULL,
    action         text        NOT NULL,
    entity_type    text        NOT NULL,
    entity_id      text,
    before_state   jsonb,
    after_state    jsonb,
    source_dag_id  text,
    source_run_id  text,
    source_task_id text,
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash      text        NOT NULL,
    row_hash       text        NOT NULL
);
CREATE INDEX audit_log_entity_idx ON audit.audit_log (entity_type, entity_id);
CREATE INDEX audit_log_run_idx ON audit.audit_log (source_dag_id, source_run_id);

CREATE FUNCTION audit.row_digest(r audit.audit_log) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws('|',
        r.prev_hash, r.audit_id::text, to_char(r.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        r.actor, r.action, r.entity_type, coalesce(r.entity_id, ''),
        coalesce(r.before_state::text, ''), coalesce(r.after_state::text, ''),
        coalesce(r.source_dag_id, ''), coalesce(r.source_run_id, ''), coalesce(r.source_task_id, ''),
        r.detail::text), 'UTF8')), 'hex')
$$;

CREATE FUNCTION audit.chain_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- one writer at a time extends the chain
    PERFORM pg_advisory_xact_lock(hashtext('erpsync.audit_log.chain'));
    SELECT row_hash INTO NEW.prev_hash FROM audit.audit_log ORDER BY audit_id DESC LIMIT 1;
    NEW.prev_hash := coalesce(NEW.prev_hash, 'genesis');
    NEW.row_hash := audit.row_digest(NEW);
    RETURN NEW;
END
$$;

CREATE FUNCTION audit.reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Record a correction as a new audit row instead.';
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit.audit_log
    FOR EACH ROW EXECUTE FUNCTION audit.chain_before_insert();
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit.audit_log
    FOR EACH ROW EXECUTE FUNCTION audit.reject_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.reject_change();

-- Rows whose stored hash does not match their content or predecessor (empty when intact).
CREATE FUNCTION audit.verify_chain() RETURNS TABLE (audit_id bigint, problem text)
LANGUAGE sql STABLE AS $$
    WITH ordered AS (
        SELECT a, lag(a.row_hash) OVER (ORDER BY a.audit_id) AS expected_prev
        FROM audit.audit_log a
    )
    SELECT (o.a).audit_id,
           CASE WHEN (o.a).row_hash <> audit.row_digest(o.a) THEN 'row content does not match its hash'
                ELSE 'previous hash does not match the preceding row' END
    FROM ordered o
    WHERE (o.a).row_hash <> audit.row_digest(o.a)
       OR (o.a).prev_hash <> coalesce(o.expected_prev, 'genesis')
$$;
