"""
### Data quality (nightly)

Every night at 03:30 in the firm's time zone (after the master data and rates syncs) this
checks the warehouse with Great Expectations, suite by suite: clients, tax profiles, people,
rates, contracts, time entries, expenses and the reconciliation result. Examples: every key
present and unique, currencies valid, hours between 0 and 24, amounts not negative, dates
plausible, every reference (client, person, contract) known.

Each check is either:

- **critical**: a failure **holds invoicing** for what it concerns: the client or the contract
  of the failing rows, or everyone when it concerns the whole table or rows that cannot be
  traced to a client. The hold is lifted automatically by the first run in which the check
  passes again. Every hold opened and lifted is in the audit trail.
- **warning**: reported here and in the Data Docs, holds nothing.

The task log lists the failures and the holds in force; the full report (every check, the
failing values) is the Data Docs site whose path the log prints. The checks themselves are
version-controlled in `great_expectations/expectations/`.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag, task

from erpsync.airflow.dag_defaults import FIRM_TIMEZONE, dag_kwargs, tags
from erpsync.airflow.sync_dags import asset_for


@dag(
    dag_id="erpsync_data_quality",
    schedule=CronTriggerTimetable("30 3 * * *", timezone=FIRM_TIMEZONE),
    tags=tags("data-quality", "ops"),
    doc_md=__doc__,
    **dag_kwargs(),
)
def erpsync_data_quality():
    @task(outlets=[asset_for("ops.dq_blocks")])
    def run_all_suites(**context) -> dict:
        from erpsync.airflow import reconcile_tasks

        return reconcile_tasks.data_quality(context)

    run_all_suites()


dag = erpsync_data_quality()
