"""Salesforce REST API client (the CRM): OAuth2, SOQL paging, deleted feed, record updates.

Connection (``erpsync_crm``, conn_type http): host/schema/port = the org's **My Domain** URL
(``https://<MyDomain>.my.salesforce.com``; a sandbox org's ``https://<MyDomain>--<sandbox>.sandbox.my.salesforce.com``):
the client-credentials flow is served only on the My Domain host, so ``login.salesforce.com``
and ``test.salesforce.com`` are refused at configure time. login = the External Client App's
consumer key, password = its consumer secret (or extra ``client_secret``). Extras:
``token_path`` (default ``/services/oauth2/token``) or ``token_url`` (also My Domain),
``grant_type`` (``client_credentials``), ``api_version`` (default ``v60.0``).

* Auth: OAuth 2.0 client-credentials flow (the app's Run-As user); API calls go to the token
  response's ``instance_url``; there is no refresh token: the token is cached and fetched again
  once on 401 ``INVALID_SESSION_ID``.
  https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_client_credentials_flow.htm
* Query paging: ``GET /services/data/vXX.X/query?q=`` (``queryAll`` to include soft-deleted
  rows) with ``Sforce-Query-Options: batchSize=N`` (200..2000), then follow the opaque
  ``nextRecordsUrl`` until ``done``.
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_queryoptions.htm
* Incremental reads: ``SELECT ... WHERE SystemModstamp >= <watermark> ORDER BY SystemModstamp,
  Id`` (inclusive; the literal in SOQL's documented ``YYYY-MM-DDThh:mm:ssZ`` form) with the
  boundary dedupe of :mod:`erpsync.connectors.cursors`
  (:func:`~erpsync.connectors.cursors.salesforce_incremental_soql`).
  https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm
* Deletes: ``GET /sobjects/{type}/deleted/?start=&end=`` -> :class:`DeletedFeed`; when
  ``earliest_available`` is later than the last sync the log was purged and a full resync
  (id-set compare) is needed.
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_getdeleted.htm
* Updates of a known record: ``PATCH /sobjects/{type}/{id}`` (204 No Content; 404
  ``NOT_FOUND`` / ``ENTITY_IS_DELETED`` if it is gone: it never creates), then ``GET
  /sobjects/{type}/{id}?fields=`` to read back that every value took (:meth:`update`).
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_retrieve.htm
* Idempotent writes by an external-ID field: ``PATCH /sobjects/{type}/{extIdField}/{value}``
  (201 created, 200 updated, 300 several matches ->
  :class:`~erpsync.connectors.errors.AmbiguousMatch`); retried like a GET because resending it
  converges on the same record. REST upsert takes external-ID fields only, never ``Id``.
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
* Quota: the org's rolling 24-hour request limit answers 403 ``REQUEST_LIMIT_EXCEEDED``: raised
  as :class:`~erpsync.connectors.errors.QuotaExhausted` at once, never retried. Usage from
  ``Sforce-Limit-Info: api-usage=N/M`` is kept in :attr:`SalesforceClient.api_usage`.
  https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from erpsync.connectors.errors import AmbiguousMatch, ConnectorError, QuotaExhausted, VendorError
from erpsync.connectors.http import VendorClient
from erpsync.connectors.ids import CRM_CONN_ID

__all__ = [
    "DeletedFeed",
    "DeletedRecord",
    "ORG_FEATURE_FIELDS",
    "SalesforceClient",
    "UpdateNotApplied",
    "UpsertResult",
    "check_my_domain",
]

MIN_BATCH = 200
MAX_BATCH = 2000

#: Fields the pack reads that exist only when an org feature is on, with what the admin turns on
#: (for the tenant check; vendor/salesforce/README.md "Org requirements").
#: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/compound_fields_address.htm
#: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_account.htm
ORG_FEATURE_FIELDS: dict[str, str] = {
    "BillingCountryCode": "enable State and Country/Territory Picklists"
    " (Setup > State and Country/Territory Picklists)",
    "CurrencyIsoCode": "enable multiple currencies (Setup > Company Information > Currencies)",
}

#: Hosts that do not serve the client-credentials flow (it needs the org's My Domain).
#: https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_client_credentials_flow.htm
GENERIC_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})


class UpdateNotApplied(ConnectorError):
    """Salesforce accepted an update (204) but reading the record back shows other values
    (a trigger, flow or validation rewrote them, or the Run-As user cannot see the field)."""

    def __init__(self, message: str, *, system: str = "", differences: dict | None = None):
        super().__init__(message, system=system)
        self.differences = differences or {}


def check_my_domain(url: str) -> None:
    """Raise :class:`ConnectorError` if ``url`` is a generic login host, not a My Domain."""
    host = (urlsplit(url if "://" in url else "https://" + url).hostname or "").lower()
    if host in GENERIC_LOGIN_HOSTS:
        raise ConnectorError(
            f"CRM (Salesforce): the connection host {host} does not serve the OAuth 2.0 client"
            " credentials flow; set the connection host (and any token_url extra) to the org's"
            " My Domain URL, https://<MyDomain>.my.salesforce.com (Setup > My Domain)",
            system="crm",
        )


@dataclass(frozen=True)
class UpsertResult:
    """Outcome of an external-id upsert: the record id and whether it was created."""

    id: str | None
    created: bool


@dataclass(frozen=True)
class DeletedRecord:
    id: str
    deleted_date: dt.datetime


@dataclass(frozen=True)
class DeletedFeed:
    """``/deleted`` answer: the deletions in the window and how far back the log reaches."""

    records: list[DeletedRecord]
    earliest_available: dt.datetime | None
    latest_covered: dt.datetime | None

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def covers(self, since: dt.datetime) -> bool:
        """True if the log still reaches back to ``since`` (else a full resync is needed)."""
        return self.earliest_available is None or self.earliest_available <= since


def _sf_datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("Salesforce date-times must be timezone-aware")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_sf_datetime(text: str | None) -> dt.datetime | None:
    """``2026-11-02T09:00:00.000+0000`` (or ISO 8601 with ``Z``) -> aware UTC datetime."""
    if not text:
        return None
    s = text.strip().replace("Z", "+00:00")
    if len(s) >= 5 and s[-5] in "+-" and s[-3] != ":":
        s = s[:-2] + ":" + s[-2:]
    return dt.datetime.fromisoformat(s).astimezone(dt.UTC)


class SalesforceClient(VendorClient):
    """Salesforce REST client on the Airflow connection ``conn_id`` (default ``erpsync_crm``)."""

    system = "crm"
    label = "CRM (Salesforce)"
    default_conn_id = CRM_CONN_ID

    def _configure(self) -> None:
        try:
            check_my_domain(self._token_url())
        except ConnectorError:
            self.close()  # the next call configures (and refuses) again
            raise
        self.api_version = str(self.extras.get("api_version") or "v60.0")
        if not self.api_version.startswith("v"):
            self.api_version = "v" + self.api_version
        self._token: str | None = None
        self._instance_url: str | None = None
        self.api_usage: tuple[int, int] | None = None

    # ------------------------------------------------------------------ auth

    def _token_url(self) -> str:
        url = self.extras.get("token_url")
        if url:
            return str(url)
        path = str(self.extras.get("token_path") or "/services/oauth2/token")
        return self.base_url + "/" + path.lstrip("/")

    def token_url(self) -> str:
        """The token endpoint this client posts to (the My Domain host; for checks)."""
        self._ensure_session()
        return self._token_url()

    def _login(self) -> None:
        grant = str(self.extras.get("grant_type") or "client_credentials")
        if grant != "client_credentials":
            raise ConnectorError(
                f"{self.label}: grant_type {grant!r} is not supported; use client_credentials",
                system=self.system,
            )
        payload = self._fetch_token(
            self._token_url(),
            {
                "grant_type": "client_credentials",
                "client_id": self.login or "",
                "client_secret": self._secret() or "",
            },
        )
        self._token = str(payload["access_token"])
        instance = payload.get("instance_url")
        self._instance_url = str(instance).rstrip("/") if instance else None

    def _auth_headers(self) -> dict[str, str]:
        if self._token is None:
            self._login()
        return {"Authorization": f"Bearer {self._token}"}

    def _invalidate_auth(self) -> bool:
        self._token = None
        return True

    def _should_reauthenticate(self, response: requests.Response) -> bool:
        code, _ = self._error_details(response)
        return response.status_code == 401 and code in (None, "INVALID_SESSION_ID")

    def api_base(self) -> str:
        return self._instance_url or self.base_url

    def _error_for(self, response: requests.Response, method: str, path: str) -> VendorError:
        error = super()._error_for(response, method, path)
        if response.status_code == 403 and error.code == "REQUEST_LIMIT_EXCEEDED":
            usage = (
                f" (api-usage {self.api_usage[0]}/{self.api_usage[1]})" if self.api_usage else ""
            )
            return QuotaExhausted(
                403,
                error.code,
                f"{error.vendor_message}{usage}: the org's 24-hour API request quota is spent;"
                " not retried. Wait for the quota to recover or raise the org limit.",
                system=self.system,
                method=method,
                path=path,
            )
        return error

    def _observe(self, response: requests.Response) -> None:
        info = response.headers.get("Sforce-Limit-Info", "")
        if "api-usage=" in info:
            try:
                used, _, limit = info.split("api-usage=", 1)[1].split(",")[0].partition("/")
                self.api_usage = (int(used), int(limit))
            except ValueError:
                pass

    def _quota_usage(self) -> tuple[int, int] | None:
        return self.api_usage

    def _data(self, suffix: str) -> str:
        return f"/services/data/{self.api_version}/{suffix.lstrip('/')}"

    # ------------------------------------------------------------------ reads

    def query(
        self, soql: str, *, include_deleted: bool = False, batch_size: int = MAX_BATCH
    ) -> Iterator[list[dict[str, Any]]]:
        """Run ``soql`` and yield its records page by page (``queryAll`` when
        ``include_deleted``); records keep Salesforce's shape, ``attributes`` included."""
        self._ensure_session()
        batch = max(MIN_BATCH, min(MAX_BATCH, int(batch_size)))
        headers = {"Sforce-Query-Options": f"batchSize={batch}"}
        resource = "queryAll" if include_deleted else "query"
        payload = self.request_json(
            "GET", self._data(resource), params={"q": soql}, headers=headers
        )
        while True:
            records = payload.get("records") or []
            if records:
                yield records
            next_url = payload.get("nextRecordsUrl")
            if payload.get("done", True) or not next_url:
                return
            payload = self.request_json("GET", next_url, headers=headers)

    def get(
        self, sobject: str, record_id: str, fields: list[str] | None = None
    ) -> dict[str, Any] | None:
        """One record by id (only ``fields`` if given), or None if it does not exist."""
        self._ensure_session()
        response = self.request(
            "GET",
            self._data(f"sobjects/{sobject}/{quote(record_id, safe='')}"),
            params={"fields": ",".join(fields)} if fields else None,
            accept=(404,),
        )
        if response.status_code == 404:
            return None
        return response.json()

    def deleted(self, sobject: str, start: dt.datetime, end: dt.datetime) -> DeletedFeed:
        """Records of ``sobject`` deleted in ``[start, end)`` (minute precision, Salesforce)."""
        self._ensure_session()
        payload = self.request_json(
            "GET",
            self._data(f"sobjects/{sobject}/deleted/"),
            params={"start": _sf_datetime(start), "end": _sf_datetime(end)},
        )
        records = [
            DeletedRecord(str(r["id"]), parse_sf_datetime(r.get("deletedDate")) or start)
            for r in payload.get("deletedRecords") or []
        ]
        return DeletedFeed(
            records,
            parse_sf_datetime(payload.get("earliestDateAvailable")),
            parse_sf_datetime(payload.get("latestDateCovered")),
        )

    # ------------------------------------------------------------------ writes

    def update(self, sobject: str, record_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Set ``fields`` on the existing ``sobject`` record ``record_id`` and read them back.

        ``PATCH /sobjects/{sobject}/{id}`` answers 204 No Content; a record that is gone answers
        404 ``NOT_FOUND`` or ``ENTITY_IS_DELETED`` (raised as
        :class:`~erpsync.connectors.errors.VendorError`; an update never creates). Setting fixed
        values is idempotent, so it is retried like a read. The record is then read back (``GET
        ...?fields=``) and :class:`UpdateNotApplied` is raised unless every value took; returns
        the values read back.
        """
        self._ensure_session()
        path = self._data(f"sobjects/{sobject}/{quote(record_id, safe='')}")
        self.request("PATCH", path, json_body=dict(fields), idempotent=True)
        names = list(fields)
        record = self.get(sobject, record_id, names)
        if record is None:
            raise UpdateNotApplied(
                f"{self.label}: {sobject} {record_id} is gone after the update",
                system=self.system,
            )
        differences = {
            name: {"sent": fields[name], "read": record.get(name)}
            for name in names
            if not _same_value(fields[name], record.get(name))
        }
        if differences:
            raise UpdateNotApplied(
                f"{self.label}: {sobject} {record_id} was updated but reads back other values"
                f" for {', '.join(sorted(differences))}",
                system=self.system,
                differences=differences,
            )
        return {name: record.get(name) for name in names}

    def upsert_by_external_id(
        self, sobject: str, field: str, value: str, body: dict[str, Any]
    ) -> UpsertResult:
        """Create or update the ``sobject`` whose external-id ``field`` equals ``value``.

        Idempotent (resending converges on one record), so it is retried like a read.
        Several matching records raise :class:`AmbiguousMatch`.
        """
        self._ensure_session()
        response = self.request(
            "PATCH",
            self._data(f"sobjects/{sobject}/{field}/{quote(str(value), safe='')}"),
            json_body=body,
            idempotent=True,
            accept=(300,),
        )
        if response.status_code == 300:
            raise AmbiguousMatch(
                f"{self.label}: {sobject}.{field} = {value!r} matches several records",
                system=self.system,
            )
        if response.status_code == 204 or not response.content:
            return UpsertResult(None, False)
        payload = response.json()
        created = payload.get("created")
        if created is None:
            created = response.status_code == 201
        return UpsertResult(payload.get("id"), bool(created))


def _same_value(sent: Any, read: Any) -> bool:
    """Whether a value read back equals the one sent (numbers by value, text exactly)."""
    if sent is None or read is None:
        return sent is None and read is None
    if isinstance(sent, bool) or isinstance(read, bool):
        return sent is read or str(sent).lower() == str(read).lower()
    if isinstance(sent, (int, float, Decimal)) or isinstance(read, (int, float, Decimal)):
        try:
            return Decimal(str(sent)) == Decimal(str(read))
        except InvalidOperation:
            return False
    return str(sent) == str(read)
