"""
### Time & expense sync (hourly)

Every hour, on the hour in the firm's time zone, this brings the time and expenses people
record in the PSA into the warehouse, where billing and month-end reconciliation read them:

- **Time entries**: date, hours, billable or not, the billable and cost rate, the person,
  client, project and task, and the entry's state: **approval** (unsubmitted, submitted,
  approved), **locked** (and why) and **billed** (with the invoice).
- **Expenses**: date, amount and currency, billable or not, category, whether a **receipt** is
  attached, and the same approval, locked and billed states.

Each run reads only what changed since the previous run. Entries deleted in the PSA are
marked deleted in the warehouse (kept, with the time they were seen gone), found by comparing
counts per date range with the PSA rather than re-reading everything, usually within the
hour, at most one run later.

Records that cannot be stored (for example no date, negative hours or an unknown currency) are
set aside in the quarantine list with the reason; fix them in the PSA and they load on the next
run. Business problems such as a missing rate or an expense without a receipt are loaded as
they are and reported by reconciliation. A run that fails part-way changes nothing: rerun it.
"""

from __future__ import annotations

from erpsync.airflow.dag_defaults import tags
from erpsync.airflow.sync_dags import build_sync_dag
from erpsync.sync.specs_time import TIME_EXPENSE

dag = build_sync_dag(
    dag_id="erpsync_time_expense_sync",
    specs=TIME_EXPENSE,
    cron="0 * * * *",
    doc_md=__doc__,
    tags=tags("time-expense", "psa"),
)
