"""
### Master data sync (nightly)

Every night at 01:30 in the firm's time zone this brings the firm's master data into the
warehouse and pushes it to the systems that need it:

- **Clients** (from the CRM): legal name, billing address, currency, payment terms and whether a
  purchase order is required.
- **Tax profiles** (from the CRM): VAT id, exemption and reverse charge. Each VAT id is checked
  with its country's check-digit rules. A client with an invalid VAT id is **not** sent to the ERP
  or the PSA; it appears as an exception for its owner to fix in the CRM, and goes out on the
  next run after the fix.
- **Tax codes and tax rates** (from the ERP), with their effective dates; old rates are kept.
- **People** (from the PSA): consultants and staff.
- **Invoice payment status** (from the ERP): for every invoice erpsync sent, whether it is open,
  partly paid, paid or canceled, what the client still owes and when it was due. This feeds the
  console's cash figures: days sales outstanding by month and overdue amounts per client. A
  payment shows from the night after the ERP recorded it.

Then `write_back_erp` creates or updates ERP customers and employees and `write_back_psa`
creates or updates PSA clients. Every write is checked first, so a rerun never creates
duplicates, and every write is recorded in the audit trail.

Records that fail validation are set aside in the quarantine list with the reason (for example
"invalid_currency"), not loaded; fix them at the source and they load on the next run. A run
that fails part-way changes nothing: rerun it.
"""

from __future__ import annotations

from erpsync.airflow.dag_defaults import deadline, tags
from erpsync.airflow.payment_status import payment_status_task
from erpsync.airflow.sync_dags import build_sync_dag
from erpsync.sync.specs import MASTER_DATA

dag = build_sync_dag(
    dag_id="erpsync_master_data_sync",
    specs=MASTER_DATA,
    write_back=("erp", "psa"),
    also=(payment_status_task,),
    cron="30 1 * * *",
    doc_md=__doc__,
    tags=tags("master-data", "crm", "psa", "erp"),
    deadline=deadline("sync", "nightly master data sync"),
)
