"""Spec -> connector reads. A spec's ``source`` is one of the read descriptions below; this
module turns it into pages of vendor records through the connector of the spec's system
(:mod:`erpsync.connectors`), full or incremental from a watermark, and reads the Salesforce
deleted feed.

Connectors are imported lazily (inside functions) so specs stay importable at DAG parse time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

CRM_CONN_ID = "erpsync_crm"
PSA_CONN_ID = "erpsync_psa"
ERP_CONN_ID = "erpsync_erp"


@dataclass(frozen=True)
class SalesforceQuery:
    """``SELECT fields FROM sobject [WHERE SystemModstamp >= since] ORDER BY SystemModstamp, Id``.

    Incremental reads use queryAll so soft-deleted rows (``IsDeleted = true``) come back too.
    """

    sobject: str
    fields: tuple[str, ...]
    modstamp_field: str = "SystemModstamp"


@dataclass(frozen=True)
class HarvestList:
    """``GET /v2/<resource>`` (``updated_since`` for incremental reads)."""

    resource: str


@dataclass(frozen=True)
class HarvestNested:
    """``GET /v2/<parent>/{id}/<child>`` for every record of ``/v2/<parent>``; each child record
    gets ``parent_key`` (e.g. ``user_id``) added, since the vendor leaves it implicit."""

    parent: str
    child: str
    parent_key: str


@dataclass(frozen=True)
class BusinessCentralList:
    """An entity of the BC API v2.0."""

    entity: str
    api: str = "v2.0"
    modstamp_field: str = "lastModifiedDateTime"


@dataclass(frozen=True)
class BusinessCentralWebService:
    """A page an admin published as an OData V4 web service (``/ODataV4/Company('..')/<service>``),
    always read in full (such pages carry no modification stamp). Each record gets ``key_field``
    added: its key fields joined with ``|`` (the pages have no single id)."""

    service: str
    key_fields: tuple[str, ...]
    key_field: str = "key"


@dataclass(frozen=True)
class Read:
    """What one sync reads: all records (``since is None``) or those changed since ``since``."""

    since: dt.datetime | None

    @property
    def mode(self) -> str:
        return "full" if self.since is None else "incremental"


def sf_datetime(moment: dt.datetime) -> str:
    """A SOQL dateTime literal in a documented form, ``YYYY-MM-DDThh:mm:ssZ`` (UTC; fractions
    of a second truncated down, so ``>=`` stays inclusive of the watermark).
    https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm
    """
    from erpsync.connectors.salesforce import _sf_datetime

    return _sf_datetime(moment)


def iso_seconds(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_pages(spec, read: Read) -> Iterator[list[dict]]:
    """Pages of vendor records for ``spec`` (bounded memory: one page at a time)."""
    source = spec.source
    if isinstance(source, SalesforceQuery):
        yield from _salesforce_pages(source, read)
    elif isinstance(source, HarvestList):
        yield from _harvest_pages(source, read, raw=RAW_CODEC in spec.extra)
    elif isinstance(source, HarvestNested):
        yield from _harvest_nested_pages(source, read)
    elif isinstance(source, BusinessCentralList):
        yield from _bc_pages(source, read)
    elif isinstance(source, BusinessCentralWebService):
        yield from _bc_web_service_pages(source)
    else:
        raise TypeError(f"spec {spec.name}: unknown source {source!r}")


def _salesforce_pages(source: SalesforceQuery, read: Read) -> Iterator[list[dict]]:
    from erpsync.connectors.salesforce import SalesforceClient

    client = SalesforceClient(conn_id=CRM_CONN_ID)
    fields = list(dict.fromkeys(("Id", *source.fields, source.modstamp_field, "IsDeleted")))
    # field and object names come from the spec registry (code), never from input
    soql = f"SELECT {', '.join(fields)} FROM {source.sobject}"  # noqa: S608
    if read.since is not None:
        soql += f" WHERE {source.modstamp_field} >= {sf_datetime(read.since)}"
    soql += f" ORDER BY {source.modstamp_field}, Id"
    yield from client.query(soql, include_deleted=read.since is not None)


#: Records re-read by id in one run (requeue): each is one request, within the vendor's limits.
REQUEUE_PAGE = 100


def read_records(spec, keys: Sequence[str]) -> Iterator[list[dict]]:
    """The records ``keys`` of ``spec`` re-read one by one with the vendor's documented
    single-record read (a requeue from the console, see :mod:`erpsync.sync.requeue`), in pages
    of :data:`REQUEUE_PAGE`. A record the source no longer has is left out (its delete is for
    the entity's delete detection to confirm). Sources read in full every run (nested Harvest
    rates, BC web-service pages) have no such read and yield nothing: their full read covers
    the records.

    - Salesforce: sObject Rows ``GET /services/data/vXX.X/sobjects/{sobject}/{id}?fields=...``
      (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_get_field_values.htm),
      the same field list as the SOQL read;
    - Harvest: ``GET /v2/{resource}/{id}``, e.g. "Retrieve a time entry"
      (https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/), the object
      the list returns (plus a few fields the list leaves out);
    - Business Central: ``GET .../companies({id})/{entity}({id})``
      (MicrosoftDocs/dynamics365smb-devitpro-pb dev-itpro/api-reference/v2.0/api/
      dynamics_customer_get.md and the other ``*_get.md`` pages).
    """
    source = spec.source
    if isinstance(source, SalesforceQuery):
        from erpsync.connectors.salesforce import SalesforceClient

        crm = SalesforceClient(conn_id=CRM_CONN_ID)
        close = crm.close
        fields = list(dict.fromkeys(("Id", *source.fields, source.modstamp_field, "IsDeleted")))

        def one(key: str) -> dict | None:
            return crm.get(source.sobject, key, fields)

    elif isinstance(source, HarvestList):
        from erpsync.connectors.harvest import HarvestClient

        psa = HarvestClient(conn_id=PSA_CONN_ID)
        close = psa.close

        def one(key: str) -> dict | None:
            return psa.get(f"{source.resource}/{quote(str(key), safe='')}")

    elif isinstance(source, BusinessCentralList):
        from erpsync.connectors.business_central import BusinessCentralClient

        erp = BusinessCentralClient(conn_id=ERP_CONN_ID)
        close = erp.close

        def one(key: str) -> dict | None:
            return erp.get(source.entity, key, api=source.api)

    else:
        return
    try:
        page: list[dict] = []
        for key in keys:
            record = one(key)
            if record is not None:
                page.append(record)
            if len(page) >= REQUEUE_PAGE:
                yield page
                page = []
        if page:
            yield page
    finally:
        close()


@dataclass(frozen=True)
class DeletedIds:
    ids: list[str]
    earliest_available: dt.datetime | None
    latest_covered: dt.datetime | None


def salesforce_deleted(spec, start: dt.datetime, end: dt.datetime) -> DeletedIds:
    """The deleted feed of the spec's sobject between ``start`` and ``end``."""
    from erpsync.connectors.salesforce import SalesforceClient

    feed = SalesforceClient(conn_id=CRM_CONN_ID).deleted(spec.source.sobject, start, end)
    return DeletedIds(
        ids=[str(i) for i in feed.ids],
        earliest_available=feed.earliest_available,
        latest_covered=feed.latest_covered,
    )


def _harvest_pages(source: HarvestList, read: Read, raw: bool = False) -> Iterator[list[dict]]:
    from erpsync.connectors.harvest import HarvestClient

    params = {} if read.since is None else {"updated_since": iso_seconds(read.since)}
    client = HarvestClient(conn_id=PSA_CONN_ID)
    if not raw:
        yield from prefetch(client.iter_pages(source.resource, params or None))
        return
    import msgspec

    for records in prefetch(client.iter_raw_pages(source.resource, params or None)):
        # the connector's fallback for a page its strict decoder refused is a list of dicts
        as_raw = isinstance(records, list) and isinstance(records[0], msgspec.Raw)
        yield RawPage(records) if as_raw else records


#: ``EntitySpec.extra`` key of a spec's raw-record codec (e.g.
#: :func:`erpsync.models.time_expense.encode_time_entry`): its pages are read as
#: :class:`RawPage` and the engine encodes each record's JSON bytes directly.
RAW_CODEC = "raw_codec"


class RawPage(Sequence):
    """A page of vendor records kept as their JSON bytes (``msgspec.Raw``): the engine hands
    ``raw`` to the spec's codec; anyone else sees a list of dicts (decoded on first use with
    the stdlib ``json``, exactly as the connector's ``iter_pages`` decodes them). A record
    that is not raw JSON (the connector's fallback for a page its strict decoder refused)
    stays as it is."""

    __slots__ = ("raw", "_dicts")

    def __init__(self, raw: list) -> None:
        self.raw = raw
        self._dicts: list | None = None

    def record(self, index: int) -> Any:
        """Record ``index`` as the dict path would see it."""
        if self._dicts is not None:
            return self._dicts[index]
        return _decode(self.raw[index])

    def dicts(self) -> list:
        if self._dicts is None:
            self._dicts = [_decode(r) for r in self.raw]
        return self._dicts

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index):
        return self.dicts()[index]

    def __iter__(self):
        return iter(self.dicts())

    def __repr__(self) -> str:
        return f"RawPage({len(self.raw)} records)"


def _decode(raw: Any) -> Any:
    import json

    if isinstance(raw, bytes | bytearray | str):
        return json.loads(raw)
    if isinstance(raw, dict | list) or raw is None:
        return raw
    return json.loads(bytes(raw))


_DONE = object()


def prefetch(pages: Iterator[list[dict]], depth: int = 2) -> Iterator[list[dict]]:
    """Read ``pages`` in a helper thread, at most ``depth`` pages ahead, so the next request
    is on the wire (and the vendor busy) while this thread validates and stages the current
    page. Memory stays bounded (``depth`` + 1 pages); the client is used by that thread only;
    an error in the read is raised here, in order; stopping early stops the reader."""
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            put(exc)
        finally:
            close = getattr(pages, "close", None)
            if close is not None and stop.is_set():
                close()

    thread = threading.Thread(target=reader, name="erpsync-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _harvest_nested_pages(source: HarvestNested, read: Read) -> Iterator[list[dict]]:
    from erpsync.connectors.harvest import HarvestClient

    client = HarvestClient(conn_id=PSA_CONN_ID)
    parent_ids = [rec["id"] for page in client.iter_pages(source.parent) for rec in page]
    # Harvest's nested rate lists document only page/per_page (e.g.
    # https://help.getharvest.com/api-v2/users-api/users/billable-rates/): no updated_since,
    # so every read is a bounded full read (one request per parent at per_page 2000) whatever
    # ``read.since`` says; the id-set comparison finds deleted rates.
    for parent_id in parent_ids:
        path = f"{source.parent}/{parent_id}/{source.child}"
        for page in client.iter_pages(path):
            yield [{**rec, source.parent_key: parent_id} for rec in page]


def _bc_pages(source: BusinessCentralList, read: Read) -> Iterator[list[dict]]:
    from erpsync.connectors.business_central import BusinessCentralClient

    odata = None
    if read.since is not None:
        odata = f"{source.modstamp_field} ge {iso_seconds(read.since)}"
    client = BusinessCentralClient(conn_id=ERP_CONN_ID)
    yield from client.iter_pages(source.entity, filter=odata, api=source.api)


def _bc_web_service_pages(source: BusinessCentralWebService) -> Iterator[list[dict]]:
    from erpsync.connectors.business_central import BusinessCentralClient

    client = BusinessCentralClient(conn_id=ERP_CONN_ID)
    for page in client.iter_web_service(source.service):
        yield [
            {**rec, source.key_field: "|".join(str(rec.get(k) or "") for k in source.key_fields)}
            for rec in page
        ]
