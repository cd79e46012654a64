"""Entity specs of the hourly time & expense sync (``dags/erpsync_time_expense_sync.py``).

PSA time entries and expenses, read incrementally with Harvest's inclusive ``updated_since``
(the engine re-reads from the watermark minus a 10-minute lookback, the connectors' default
boundary window; unchanged re-reads are no-ops in the merge because their row hash is equal).
Harvest hard-deletes with no feed: deletes are found by the specs' delete strategy,
:class:`erpsync.sync.time_expense.WindowedCount` (windowed count comparison, see its module),
whose deleted ids the engine loads as tombstone records flagged :data:`TOMBSTONE_FLAG`. Full
reads (the first run, ``full=True``) compare id sets in the engine.

Not part of :data:`erpsync.sync.specs.ALL` (the nightly DAGs iterate that); ``specs.get(name)``
finds these through :data:`BY_NAME`.
"""

from __future__ import annotations

from functools import partial

from erpsync.models import time_expense as te
from erpsync.sync.sources import HarvestList
from erpsync.sync.spec import CursorSpec, EntitySpec
from erpsync.sync.time_expense import WindowedCount

#: Field of a tombstone record (``{"id": 123, TOMBSTONE_FLAG: True}``): the record is gone.
TOMBSTONE_FLAG = "_erpsync_deleted"
#: The connectors' default lookback (erpsync.connectors.cursors.DEFAULT_LOOKBACK): records
#: changed while a read was paging may carry a stamp below the highest one seen.
LOOKBACK_SECONDS = 600

_CURSOR = CursorSpec(field="updated_at", id_field="id", overlap_seconds=LOOKBACK_SECONDS)
#: windows cut on core's (and Harvest's) spent_date
_DELETES = WindowedCount(window_column="spent_date")

# what both listings share: each spec below names only what is its own
_harvest = partial(
    EntitySpec,
    system="psa",
    natural_key=("psa_id",),
    cursor=_CURSOR,
    deletes=_DELETES,
    deleted_flag=TOMBSTONE_FLAG,
    record_key="id",
    raw_table="raw.vendor_records",
)

TIME_ENTRIES = _harvest(
    name="time_entries",
    source=HarvestList("time_entries"),
    model=te.TimeEntry,
    mapper=te.harvest_time_entry,
    core_table="core.time_entries",
    # pages read as JSON bytes, encoded per record by the codec; what it declines (and the
    # tombstones of deleted entries) goes through mapper and model
    codec=te.encode_time_entry,
    description=(
        "PSA time entries: hours, approval state, locked and billed flags, billable and cost "
        "rates, project/task/person/client, invoice and external reference."
    ),
)

EXPENSES = _harvest(
    name="expenses",
    source=HarvestList("expenses"),
    model=te.Expense,
    mapper=te.harvest_expense,
    core_table="core.expenses",
    description=(
        "PSA expenses: amount and currency, approval state, locked and billed flags, receipt "
        "attached or not, project/person/client, category and invoice."
    ),
)

TIME_EXPENSE = (TIME_ENTRIES, EXPENSES)
BY_NAME: dict[str, EntitySpec] = {s.name: s for s in TIME_EXPENSE}
