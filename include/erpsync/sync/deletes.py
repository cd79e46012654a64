"""Delete strategies: how the engine learns that a vendor record is gone, one object per kind
(:class:`erpsync.sync.spec.DeleteStrategy`). The engine calls ``before_read`` once it knows
the watermark (the strategy may turn the read into a full one) and ``after_read`` once every
page is loaded (the ids it returns are tombstoned). Whatever the strategy, a full read also
compares id sets (rows whose record was not read are soft-deleted) unless the kind is
:data:`NO_DELETES`.

The windowed count comparison of Harvest time entries and expenses is
:class:`erpsync.sync.time_expense.WindowedCount`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from erpsync.sync.spec import DeleteMode, ReadPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoDeletes:
    """The vendor never deletes (or we never mirror it): only the records a read record no
    longer yields are soft-deleted (an override removed from a contract)."""

    @property
    def mode(self) -> DeleteMode:
        return DeleteMode.NONE

    @property
    def full_reads_only(self) -> bool:
        return False

    def before_read(self, plan: ReadPlan) -> None:
        return None

    def after_read(self, plan: ReadPlan) -> list[str]:
        return []


@dataclass(frozen=True)
class IdSetCompare:
    """Every read is full: core rows whose record the read did not return are deleted (the
    engine's full-read comparison). For small entities and listings without a modstamp."""

    @property
    def mode(self) -> DeleteMode:
        return DeleteMode.ID_SET_COMPARE

    @property
    def full_reads_only(self) -> bool:
        return True

    def before_read(self, plan: ReadPlan) -> None:
        plan.incremental, plan.since = False, None

    def after_read(self, plan: ReadPlan) -> list[str]:
        return []


@dataclass(frozen=True)
class SalesforceDeletedFeed:
    """Salesforce: soft-deleted records come back from ``queryAll`` flagged ``IsDeleted`` (the
    spec's ``deleted_flag``), and the deleted feed (REST "sObject Get Deleted",
    ``GET /services/data/vXX.X/sobjects/{sobject}/deleted/?start=..&end=..``,
    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api/resources_getdeleted.htm)
    names those already purged from the recycle bin.

    The feed is read before the read, from where the last run's feed ended (the vendor's own
    clock, minute precision, kept in the watermark's state). If it no longer reaches back that
    far (its ``earliestDateAvailable`` is later: the delete log was purged, or the last run is
    more than the documented 15 days back), deletions may have been lost: the read becomes a
    full one, whose id-set comparison finds them. A full read still asks the feed where "now"
    is, so the next incremental run starts from there; the read never moves the watermark past
    the moment the feed covers (``read_started``)."""

    #: how far back a first (full) run asks the feed, only to learn the vendor's "now"
    first_window: dt.timedelta = dt.timedelta(days=1)

    @property
    def mode(self) -> DeleteMode:
        return DeleteMode.SALESFORCE_DELETED_FEED

    @property
    def full_reads_only(self) -> bool:
        return False

    def before_read(self, plan: ReadPlan) -> None:
        from erpsync.connectors.salesforce import SalesforceClient
        from erpsync.sync.sources import SalesforceQuery

        spec, client = plan.spec, plan.client
        if not isinstance(spec.source, SalesforceQuery) or not isinstance(client, SalesforceClient):
            raise TypeError(f"{spec.name}: the deleted feed needs a SalesforceQuery and client")
        end = dt.datetime.now(dt.UTC)
        start = plan.state.get("deleted_feed_end")
        feed_start = dt.datetime.fromisoformat(str(start)) if start else None
        incremental = plan.incremental and feed_start is not None
        if incremental and feed_start is not None:
            feed = client.deleted(spec.source.sobject, feed_start, end)
            if feed.earliest_available is not None and feed.earliest_available > feed_start:
                log.warning(
                    "%s: the deleted feed starts at %s, after the last run's %s: full read",
                    spec.name,
                    feed.earliest_available,
                    feed_start,
                )
                incremental = False
        else:
            feed = client.deleted(spec.source.sobject, end - self.first_window, end)
        plan.read_started = feed.latest_covered
        plan.state["deleted_feed_end"] = (feed.latest_covered or end).isoformat()
        if incremental:
            plan.gone = [str(i) for i in feed.ids]
        else:  # the full read's id-set comparison covers deletions
            plan.incremental, plan.since = False, None

    def after_read(self, plan: ReadPlan) -> list[str]:
        return []


NO_DELETES = NoDeletes()
ID_SET_COMPARE = IdSetCompare()
SALESFORCE_DELETED_FEED = SalesforceDeletedFeed()
