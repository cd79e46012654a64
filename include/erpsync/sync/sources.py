"""The vendor listings a spec reads from: one :class:`erpsync.sync.spec.Source` per kind of
listing (Salesforce SOQL, Harvest lists and nested lists, Business Central API entities and
published web-service pages). Each turns a :class:`~erpsync.sync.spec.Read` (full, or changed
since a watermark) into pages of vendor records through the client of its system
(:mod:`erpsync.connectors`), and re-reads single records by id for a requeue.

The caller opens the client (``source.client()``, on the system's default Airflow connection)
and closes it; connectors are imported lazily (inside functions) so specs stay importable at
DAG parse time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import quote

from erpsync.sync.spec import Read, Record

if TYPE_CHECKING:
    from erpsync.connectors.business_central import BusinessCentralClient
    from erpsync.connectors.harvest import HarvestClient
    from erpsync.connectors.http import VendorClient
    from erpsync.connectors.salesforce import SalesforceClient

__all__ = [
    "REQUEUE_PAGE",
    "BusinessCentralList",
    "BusinessCentralWebService",
    "HarvestList",
    "HarvestNested",
    "RawPage",
    "Read",
    "SalesforceQuery",
    "iso_seconds",
    "prefetch",
    "sf_datetime",
]

#: Records re-read by id in one run (requeue): each is one request, within the vendor's limits.
REQUEUE_PAGE = 100

_C = TypeVar("_C")
_P = TypeVar("_P")


def _narrow(client: VendorClient, kind: type[_C]) -> _C:
    if not isinstance(client, kind):
        raise TypeError(f"expected a {kind.__name__}, got {type(client).__name__}")
    return client


def _one_by_one(keys: Sequence[str], one: Callable[[str], Record | None]) -> Iterator[list[Record]]:
    """Records read one by one, in pages of :data:`REQUEUE_PAGE`; a record the source no
    longer has is left out (its delete is for the entity's delete detection to confirm)."""
    page: list[Record] = []
    for key in keys:
        record = one(key)
        if record is not None:
            page.append(record)
        if len(page) >= REQUEUE_PAGE:
            yield page
            page = []
    if page:
        yield page


class _HarvestSource:
    """What the Harvest listings share: the client they read through (PSA connection)."""

    def client(self) -> HarvestClient:
        from erpsync.connectors.harvest import HarvestClient

        return HarvestClient()

    @staticmethod
    def _psa(client: VendorClient) -> HarvestClient:
        from erpsync.connectors.harvest import HarvestClient

        return _narrow(client, HarvestClient)


class _BusinessCentralSource:
    """What the Business Central listings share: the client they read through (ERP
    connection)."""

    def client(self) -> BusinessCentralClient:
        from erpsync.connectors.business_central import BusinessCentralClient

        return BusinessCentralClient()

    @staticmethod
    def _erp(client: VendorClient) -> BusinessCentralClient:
        from erpsync.connectors.business_central import BusinessCentralClient

        return _narrow(client, BusinessCentralClient)


@dataclass(frozen=True)
class SalesforceQuery:
    """``SELECT fields FROM sobject [WHERE SystemModstamp >= since] ORDER BY SystemModstamp, Id``.

    Incremental reads use queryAll so soft-deleted rows (``IsDeleted = true``) come back too.
    A requeue re-reads with sObject Rows ``GET /services/data/vXX.X/sobjects/{sobject}/{id}
    ?fields=...`` (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_get_field_values.htm),
    the same field list as the SOQL read.
    """

    sobject: str
    fields: tuple[str, ...]
    modstamp_field: str = "SystemModstamp"

    def client(self) -> SalesforceClient:
        from erpsync.connectors.salesforce import SalesforceClient

        return SalesforceClient()

    def _fields(self) -> list[str]:
        return list(dict.fromkeys(("Id", *self.fields, self.modstamp_field, "IsDeleted")))

    def pages(
        self, client: VendorClient, read: Read, *, raw: bool = False
    ) -> Iterator[list[Record]]:
        from erpsync.connectors.salesforce import SalesforceClient

        crm = _narrow(client, SalesforceClient)
        # field and object names come from the spec registry (code), never from input
        soql = f"SELECT {', '.join(self._fields())} FROM {self.sobject}"  # noqa: S608
        if read.since is not None:
            soql += f" WHERE {self.modstamp_field} >= {sf_datetime(read.since)}"
        soql += f" ORDER BY {self.modstamp_field}, Id"
        yield from crm.query(soql, include_deleted=read.since is not None)

    def records(self, client: VendorClient, keys: Sequence[str]) -> Iterator[list[Record]]:
        from erpsync.connectors.salesforce import SalesforceClient

        crm, fields = _narrow(client, SalesforceClient), self._fields()
        return _one_by_one(keys, lambda key: crm.get(self.sobject, key, fields))


@dataclass(frozen=True)
class HarvestList(_HarvestSource):
    """``GET /v2/<resource>`` (``updated_since`` for incremental reads), read ahead in a helper
    thread (:func:`prefetch`). A requeue re-reads with ``GET /v2/{resource}/{id}``, e.g.
    "Retrieve a time entry" (https://help.getharvest.com/api-v2/timesheets-api/timesheets/time-entries/),
    the object the list returns (plus a few fields the list leaves out)."""

    resource: str

    def pages(
        self, client: VendorClient, read: Read, *, raw: bool = False
    ) -> Iterator[Sequence[Record]]:
        psa = self._psa(client)
        params = {} if read.since is None else {"updated_since": iso_seconds(read.since)}
        if not raw:
            yield from prefetch(psa.iter_pages(self.resource, params or None))
            return
        import msgspec

        for records in prefetch(psa.iter_raw_pages(self.resource, params or None)):
            # the connector's fallback for a page its strict decoder refused is a list of dicts
            as_raw = isinstance(records, list) and isinstance(records[0], msgspec.Raw)
            yield RawPage(records) if as_raw else records

    def records(self, client: VendorClient, keys: Sequence[str]) -> Iterator[list[Record]]:
        psa = self._psa(client)
        return _one_by_one(keys, lambda key: psa.get(f"{self.resource}/{quote(str(key), safe='')}"))


@dataclass(frozen=True)
class HarvestNested(_HarvestSource):
    """``GET /v2/<parent>/{id}/<child>`` for every record of ``/v2/<parent>``; each child record
    gets ``parent_key`` (e.g. ``user_id``) added, since the vendor leaves it implicit.

    Harvest's nested rate lists document only page/per_page (e.g.
    https://help.getharvest.com/api-v2/users-api/users/billable-rates/): no updated_since, so
    every read is a bounded full read (one request per parent at per_page 2000) whatever
    ``read.since`` says; the id-set comparison finds deleted rates. No single-record re-read:
    the full read covers a requeued record."""

    parent: str
    child: str
    parent_key: str

    def pages(
        self, client: VendorClient, read: Read, *, raw: bool = False
    ) -> Iterator[list[Record]]:
        psa = self._psa(client)
        parent_ids = [rec["id"] for page in psa.iter_pages(self.parent) for rec in page]
        for parent_id in parent_ids:
            path = f"{self.parent}/{parent_id}/{self.child}"
            for page in psa.iter_pages(path):
                yield [{**rec, self.parent_key: parent_id} for rec in page]

    def records(self, client: VendorClient, keys: Sequence[str]) -> Iterator[list[Record]]:
        return iter(())


@dataclass(frozen=True)
class BusinessCentralList(_BusinessCentralSource):
    """An entity of the BC API v2.0, filtered on its modstamp for incremental reads. A requeue
    re-reads with ``GET .../companies({id})/{entity}({id})`` (MicrosoftDocs/
    dynamics365smb-devitpro-pb dev-itpro/api-reference/v2.0/api/dynamics_customer_get.md and
    the other ``*_get.md`` pages)."""

    entity: str
    api: str = "v2.0"
    modstamp_field: str = "lastModifiedDateTime"

    def pages(
        self, client: VendorClient, read: Read, *, raw: bool = False
    ) -> Iterator[list[Record]]:
        erp = self._erp(client)
        odata = None
        if read.since is not None:
            odata = f"{self.modstamp_field} ge {iso_seconds(read.since)}"
        yield from erp.iter_pages(self.entity, filter=odata, api=self.api)

    def records(self, client: VendorClient, keys: Sequence[str]) -> Iterator[list[Record]]:
        erp = self._erp(client)
        return _one_by_one(keys, lambda key: erp.get(self.entity, key, api=self.api))


@dataclass(frozen=True)
class BusinessCentralWebService(_BusinessCentralSource):
    """A page an admin published as an OData V4 web service (``/ODataV4/Company('..')/<service>``),
    always read in full (such pages carry no modification stamp). Each record gets ``key_field``
    added: its key fields joined with ``|`` (the pages have no single id). No single-record
    re-read: the full read covers a requeued record."""

    service: str
    key_fields: tuple[str, ...]
    key_field: str = "key"

    def pages(
        self, client: VendorClient, read: Read, *, raw: bool = False
    ) -> Iterator[list[Record]]:
        erp = self._erp(client)
        for page in erp.iter_web_service(self.service):
            yield [
                {**rec, self.key_field: "|".join(str(rec.get(k) or "") for k in self.key_fields)}
                for rec in page
            ]

    def records(self, client: VendorClient, keys: Sequence[str]) -> Iterator[list[Record]]:
        return iter(())


def sf_datetime(moment: dt.datetime) -> str:
    """A SOQL dateTime literal in a documented form, ``YYYY-MM-DDThh:mm:ssZ`` (UTC; fractions
    of a second truncated down, so ``>=`` stays inclusive of the watermark).
    https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm
    """
    from erpsync.connectors.salesforce import _sf_datetime

    return _sf_datetime(moment)


def iso_seconds(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class RawPage(Sequence[Record]):
    """A page of vendor records kept as their JSON bytes (``msgspec.Raw``): the engine hands
    ``raw`` to the spec's codec; anyone else sees a list of dicts (decoded on first use with
    the stdlib ``json``, exactly as the connector's ``iter_pages`` decodes them). A record
    that is not raw JSON (the connector's fallback for a page its strict decoder refused)
    stays as it is."""

    __slots__ = ("raw", "_dicts")

    def __init__(self, raw: list[Any]) -> None:
        self.raw = raw
        self._dicts: list[Any] | None = None

    def record(self, index: int) -> Any:
        """Record ``index`` as the dict path would see it."""
        if self._dicts is not None:
            return self._dicts[index]
        return _decode(self.raw[index])

    def dicts(self) -> list[Any]:
        if self._dicts is None:
            self._dicts = [_decode(r) for r in self.raw]
        return self._dicts

    def __len__(self) -> int:
        return len(self.raw)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        item: Record | list[Record] = self.dicts()[index]
        return item

    def __iter__(self) -> Iterator[Record]:
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


def prefetch(pages: Iterator[_P], depth: int = 2) -> Iterator[_P]:
    """Read ``pages`` in a helper thread, at most ``depth`` pages ahead, so the next request
    is on the wire (and the vendor busy) while this thread validates and stages the current
    page. Memory stays bounded (``depth`` + 1 pages); the client is used by that thread only;
    an error in the read is raised here, in order; stopping early stops the reader."""
    import queue
    import threading

    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
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
