"""
### Rates sync (nightly)

Every night at 02:30 in the firm's time zone this brings rates into the warehouse:

- **Billable rates and cost rates** of every person (from the PSA), with the dates each rate is
  valid for. Old rates are kept, so time worked in the past is always valued at the rate of its
  day.
- **Contracted rate overrides** (from the CRM): the hourly rates agreed in closed-won contracts
  for named people.

Then `write_back_psa` sets each contracted rate on the person's assignment in the PSA project,
so time entries carry the rate the client agreed to. Setting a rate that is already right
changes nothing.

Records that fail validation (for example a negative rate, or a rate-override field that is not
readable) are set aside in the quarantine list with the reason and not loaded. A run that fails
part-way changes nothing: rerun it.
"""

from __future__ import annotations

from erpsync.airflow.dag_defaults import deadline, tags
from erpsync.airflow.sync_dags import build_sync_dag
from erpsync.sync.specs import RATES

dag = build_sync_dag(
    dag_id="erpsync_rates_sync",
    specs=RATES,
    write_back=("psa",),
    cron="30 2 * * *",
    doc_md=__doc__,
    tags=tags("rates", "crm", "psa"),
    deadline=deadline("sync", "nightly rates sync"),
)
