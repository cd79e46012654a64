-- Notifications (issue 19): what erpsync told whom, so a retry never sends twice and a second
-- run sends nothing new.
--
-- ops.notifications_sent: one row per message, keyed by what it is about (notification_key:
-- e.g. 'approval_request:<batch>:<run>:<ask>', 'deadline_missed:<deadline id>',
-- 'exception_digest:<address>:<hash of the items>'). A message is sent inside the transaction
-- that holds its row locked, so two runs never send one message twice; a failed send is recorded
-- (status 'failed', scrubbed error, attempts) and sent by the next run or retry.
CREATE TABLE ops.notifications_sent (
    notification_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_key text        NOT NULL UNIQUE,
    kind             text        NOT NULL CHECK (kind IN ('exception_digest', 'approval_request',
                                     'approval_reminder', 'approval_escalation',
                                     'deadline_missed', 'task_failed')),
    channel          text        NOT NULL DEFAULT 'email' CHECK (channel IN ('email')),
    recipients       text[]      NOT NULL,
    subject          text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('sent', 'failed')),
    attempts         integer     NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    last_error       text,
    detail           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    source_dag_id    text,
    source_run_id    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    CHECK (status <> 'sent' OR sent_at IS NOT NULL)
);
CREATE INDEX notifications_sent_unsent_idx ON ops.notifications_sent (kind, created_at)
    WHERE status <> 'sent';
COMMENT ON TABLE ops.notifications_sent IS
    'Messages erpsync sent (or failed to send) to people: one row per notification key, never sent twice.';
COMMENT ON COLUMN ops.notifications_sent.last_error IS
    'The last delivery failure, scrubbed of secrets before it is stored.';

-- ops.notified_exceptions: which exception each address was told about, and why ('new', 'aged':
-- open past the age threshold, 'amount': at stake above the amount threshold). A digest lists
-- only what an address was not told yet; nothing new means no digest.
CREATE TABLE ops.notified_exceptions (
    recipient        text        NOT NULL,
    exception_id     bigint      NOT NULL REFERENCES ops.exceptions (exception_id),
    why              text        NOT NULL CHECK (why IN ('new', 'aged', 'amount')),
    notification_id  bigint      NOT NULL REFERENCES ops.notifications_sent (notification_id),
    notified_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recipient, exception_id, why)
);
CREATE INDEX notified_exceptions_exception_idx ON ops.notified_exceptions (exception_id);
COMMENT ON TABLE ops.notified_exceptions IS
    'Exceptions each address was told about in a digest, and why: the next digest lists only what is new.';

-- the digest reads the open exceptions (status, first_seen_at) without scanning resolved ones
CREATE INDEX exceptions_open_seen_idx ON ops.exceptions (first_seen_at) WHERE status = 'open';
