-- Vendor limits shared by every process (issue 18): the requests each vendor budget has in flight
-- or answered within its window, so the Airflow tasks of all workers that talk to one account
-- (five Business Central tasks in the erp_api pool at once) stay under the one documented limit
-- together instead of each spending the whole of it.
--
-- ops.api_limit_tickets: one row per request, written by erpsync.connectors.shared_limits.
-- budget_key names the account without a secret (system, vendor host:port and a truncated hash
-- of the credential, e.g. 'erp@api.businesscentral.dynamics.com:443/3f9a...'). A ticket is
-- inserted just before the request is sent (sent_at) and stamped when its answer came back
-- (answered_at); it counts against the limit while in flight and for the window after its
-- answer, then the next acquire deletes it. backend_pid is the PostgreSQL backend of the process
-- that holds the ticket: when that backend is gone (the task was killed), its in-flight tickets
-- are treated as answered. Every stamp comes from the database clock (clock_timestamp()), so
-- workers on several machines agree on the window.
CREATE TABLE ops.api_limit_tickets (
    budget_key  text        NOT NULL,
    ticket      bigint      GENERATED ALWAYS AS IDENTITY,
    backend_pid integer     NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    answered_at timestamptz,
    PRIMARY KEY (budget_key, ticket)
);
CREATE INDEX api_limit_tickets_answered_idx ON ops.api_limit_tickets (budget_key, answered_at);
COMMENT ON TABLE ops.api_limit_tickets IS
    'Vendor requests in flight or answered within the limit window, per budget (issue 18).';
