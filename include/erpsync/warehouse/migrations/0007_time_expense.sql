-- Time entries and expenses (PSA), synced hourly by erpsync_time_expense_sync (issue 5).
--
-- Same conventions as 0005: natural key (the PSA id) as primary key, source_record_id,
-- row_hash, source_modstamp (the PSA updated_at), soft deletes (deleted_at: Harvest hard-deletes,
-- erpsync keeps the row and stamps when it saw it gone), first_run_id / last_run_id, updated_at.
-- Hours, rates and amounts are numeric, never float. References to projects, tasks, people,
-- clients and invoices are PSA ids (text), resolved through core.id_map where one exists.
--
-- Indexes: (spent_date) for the hourly delete check, which counts live rows per spent_date
-- window (erpsync.sync.time_expense); (project_psa_id, spent_date) for reconciliation and
-- billing per project and period; (user_psa_id, spent_date) for timesheets per person.

CREATE TABLE core.time_entries (
    psa_id                       text        PRIMARY KEY,
    spent_date                   date        NOT NULL,
    hours                        numeric NOT NULL CHECK (hours >= 0),
    rounded_hours                numeric CHECK (rounded_hours >= 0),
    notes                        text,
    billable                     boolean     NOT NULL,
    approval_status              text        NOT NULL
                                 CHECK (approval_status IN ('unsubmitted', 'submitted', 'approved')),
    is_locked                    boolean     NOT NULL,
    locked_reason                text,
    is_closed                    boolean     NOT NULL DEFAULT false,
    is_billed                    boolean     NOT NULL,
    is_running                   boolean     NOT NULL DEFAULT false,
    billable_rate                numeric CHECK (billable_rate >= 0),
    cost_rate                    numeric CHECK (cost_rate >= 0),
    currency                     char(3),
    user_psa_id                  text        NOT NULL,
    client_psa_id                text,
    project_psa_id               text        NOT NULL,
    project_code                 text,
    task_psa_id                  text,
    user_assignment_psa_id       text,
    task_assignment_psa_id       text,
    invoice_psa_id               text,
    external_reference_id        text,
    external_reference_group_id  text,
    external_reference_permalink text,
    created_at                   timestamptz,
    source_record_id             text        NOT NULL,
    row_hash                     text        NOT NULL,
    source_modstamp              timestamptz,
    deleted_at                   timestamptz,
    first_run_id                 text        NOT NULL,
    last_run_id                  text        NOT NULL,
    updated_at                   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX time_entries_spent_date_idx ON core.time_entries (spent_date) WHERE deleted_at IS NULL;
CREATE INDEX time_entries_project_idx ON core.time_entries (project_psa_id, spent_date);
CREATE INDEX time_entries_user_idx ON core.time_entries (user_psa_id, spent_date);
CREATE INDEX time_entries_source_idx ON core.time_entries (source_record_id);
COMMENT ON TABLE core.time_entries IS
    'PSA time entries (hourly sync): hours, approval state, locked/billed flags, rates; deleted_at set when the PSA no longer has the entry.';

CREATE TABLE core.expenses (
    psa_id                   text        PRIMARY KEY,
    spent_date               date        NOT NULL,
    notes                    text,
    total_cost               numeric NOT NULL,
    units                    numeric CHECK (units >= 0),
    currency                 char(3)     NOT NULL,
    billable                 boolean     NOT NULL,
    approval_status          text        NOT NULL
                             CHECK (approval_status IN ('unsubmitted', 'submitted', 'approved')),
    is_locked                boolean     NOT NULL,
    locked_reason            text,
    is_closed                boolean     NOT NULL DEFAULT false,
    is_billed                boolean     NOT NULL,
    has_receipt              boolean     NOT NULL,
    receipt_file_name        text,
    user_psa_id              text        NOT NULL,
    user_assignment_psa_id   text,
    client_psa_id            text,
    project_psa_id           text        NOT NULL,
    project_code             text,
    expense_category_psa_id  text,
    expense_category_name    text,
    invoice_psa_id           text,
    created_at               timestamptz,
    source_record_id         text        NOT NULL,
    row_hash                 text        NOT NULL,
    source_modstamp          timestamptz,
    deleted_at               timestamptz,
    first_run_id             text        NOT NULL,
    last_run_id              text        NOT NULL,
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX expenses_spent_date_idx ON core.expenses (spent_date) WHERE deleted_at IS NULL;
CREATE INDEX expenses_project_idx ON core.expenses (project_psa_id, spent_date);
CREATE INDEX expenses_user_idx ON core.expenses (user_psa_id, spent_date);
CREATE INDEX expenses_source_idx ON core.expenses (source_record_id);
COMMENT ON TABLE core.expenses IS
    'PSA expenses (hourly sync): amount, currency, approval state, locked/billed flags, receipt attached; deleted_at set when the PSA no longer has the expense.';
