"""Dynamics 365 Business Central API v2.0 client (the ERP): Entra ID auth, OData paging, ETags.

Connection (``erpsync_erp``, conn_type http): host/schema/port =
``https://api.businesscentral.dynamics.com``; login = the Entra app's client id, password = its
client secret (or extra ``client_secret``). Extras: ``tenant``, ``environment``, ``scope``
(default ``https://api.businesscentral.dynamics.com/.default``), ``company_id`` (else discovered
from ``/companies``; ``company_name`` picks one when there are several and names the company in
OData V4 web-service URLs). The token comes from Microsoft Entra ID,
``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token``, unless the extra ``token_url``
names another endpoint or ``token_path`` a path on the API host (the sandbox serves its own
Entra emulation that way).

* Auth: OAuth 2.0 client credentials against Entra ID; the token is cached until shortly before
  ``expires_in`` and fetched again once on 401.
  https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/administration/automation-apis-using-s2s-authentication
* URLs: ``/v2.0/{tenant}/{environment}/api/v2.0/companies({id})/{entity}``, and pages an admin
  published as OData V4 web services (page 472 VAT Posting Setup as ``VATPostingSetup``) under
  ``/v2.0/{tenant}/{environment}/ODataV4/Company('<name>')/{service}`` (:meth:`iter_web_service`).
  https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/endpoints-apis-for-dynamics
  https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/publish-web-service
* Paging: ``Prefer: odata.maxpagesize=N`` and the ``@odata.nextLink`` (``$skiptoken``) of each
  answer until absent.
  https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/use-server-driven-paging
* Incremental reads: ``$filter=lastModifiedDateTime ge <watermark>`` (inclusive) plus the
  boundary dedupe of :mod:`erpsync.connectors.cursors` (``bc_incremental_filter``).
  Deletes leave no tombstone: compare id sets.
* Writes: ``create`` (POST) has no idempotency key in Business Central and is **never retried**
  once sent; a lost answer raises :class:`~erpsync.connectors.errors.WriteOutcomeUnknown` and the
  caller checks with :meth:`BusinessCentralClient.find_one` (by ``number`` /
  ``externalDocumentNumber``) before creating again. ``patch`` sends ``If-Match: <etag>`` and is
  retried (a stale ETag answers 409 ``Request_EntityChanged``, not retried).
* Limits: 429 (rate or concurrency, with or without ``Retry-After``) and 5xx are retried.
  https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/dynamics-rate-limits
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

from erpsync.connectors.errors import AmbiguousMatch, ConnectorError
from erpsync.connectors.http import VendorClient
from erpsync.connectors.ids import ERP_CONN_ID

__all__ = [
    "BATCH_MAX",
    "BC_SCOPE",
    "ENTRA_TOKEN_URL",
    "VAT_POSTING_SETUP_SERVICE",
    "BusinessCentralClient",
    "odata_quote",
]

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
#: Microsoft Entra ID's v2.0 token endpoint of the tenant (client credentials).
ENTRA_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105 - a URL
STANDARD_API = "v2.0"
#: Operations per ``$batch`` (operational-limits-online.md, "Max batch size": 100).
BATCH_MAX = 100
#: Service name under which the admin publishes page 472 "VAT Posting Setup" (OData V4).
VAT_POSTING_SETUP_SERVICE = "VATPostingSetup"
#: Refresh a cached token this many seconds before it expires.
TOKEN_MARGIN = 120.0


def odata_quote(value: str) -> str:
    """An OData string literal: ``O'Brien`` -> ``'O''Brien'``."""
    return "'" + str(value).replace("'", "''") + "'"


def _key(entity_id: str) -> str:
    return entity_id if entity_id.startswith("(") else f"({entity_id})"


class BusinessCentralClient(VendorClient):
    """Business Central v2.0 client on the Airflow connection ``conn_id`` (``erpsync_erp``)."""

    system = "erp"
    label = "ERP (Business Central)"
    default_conn_id = ERP_CONN_ID

    def _configure(self) -> None:
        self.tenant = str(self.extras.get("tenant") or "")
        self.environment = str(self.extras.get("environment") or "production")
        self.scope = str(self.extras.get("scope") or BC_SCOPE)
        if not self.tenant:
            raise ConnectorError(
                f"{self.label}: connection {self.conn_id} needs the extra 'tenant'",
                system=self.system,
            )
        self._token: str | None = None
        self._token_expires = 0.0
        self._company_id: str | None = self.extras.get("company_id") or None
        self._company_name: str | None = None

    # ------------------------------------------------------------------ auth

    def _token_url(self) -> str:
        """``token_url`` extra, else ``token_path`` on the API host (the sandbox), else Entra
        ID's endpoint for the tenant (a real tenant never serves tokens on the API host)."""
        url = self.extras.get("token_url")
        if url:
            return str(url).replace("{tenant}", self.tenant)
        path = self.extras.get("token_path")
        if path:
            return self.base_url + "/" + str(path).lstrip("/")
        return ENTRA_TOKEN_URL.format(tenant=quote(self.tenant, safe=""))

    def _login(self) -> None:
        payload = self._fetch_token(
            self._token_url(),
            {
                "grant_type": "client_credentials",
                "client_id": self.login or "",
                "client_secret": self._secret() or "",
                "scope": self.scope,
            },
        )
        self._token = str(payload["access_token"])
        try:
            lifetime = float(payload.get("expires_in", 3599))
        except (TypeError, ValueError):
            lifetime = 3599.0
        self._token_expires = time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN)

    def _auth_headers(self) -> dict[str, str]:
        if self._token is None or time.monotonic() >= self._token_expires:
            self._login()
        return {"Authorization": f"Bearer {self._token}"}

    def _invalidate_auth(self) -> bool:
        self._token = None
        return True

    # ------------------------------------------------------------------ URLs

    def api_root(self, api: str = STANDARD_API) -> str:
        """``/v2.0/{tenant}/{environment}/api/{api}`` (``api`` = ``v2.0`` or a custom route)."""
        self._ensure_session()
        return f"/v2.0/{self.tenant}/{self.environment}/api/{api.strip('/')}"

    @property
    def company_id(self) -> str:
        """The company id: the ``company_id`` extra, else discovered from ``/companies``."""
        self._ensure_session()
        if self._company_id is None:
            companies = [
                c for page in self._pages(f"{self.api_root()}/companies", {}, None) for c in page
            ]
            wanted = self.extras.get("company_name")
            if wanted:
                companies = [
                    c for c in companies if wanted in (c.get("name"), c.get("displayName"))
                ]
            if len(companies) != 1:
                names = ", ".join(str(c.get("name")) for c in companies) or "none"
                raise ConnectorError(
                    f"{self.label}: cannot pick the company ({len(companies)} found: {names});"
                    f" set the extra 'company_id' (or 'company_name') on {self.conn_id}",
                    system=self.system,
                )
            self._company_id = str(companies[0]["id"])
        return self._company_id

    def entity_path(self, entity: str, *, api: str = STANDARD_API) -> str:
        return f"{self.api_root(api)}/companies({self.company_id})/{entity.strip('/')}"

    @property
    def company_name(self) -> str:
        """The company's ``name`` (the key of OData V4 web-service URLs): the ``company_name``
        extra, else read from ``/companies({id})``."""
        wanted = self.extras.get("company_name")
        if wanted:
            return str(wanted)
        if self._company_name is None:
            company = self.request_json("GET", f"{self.api_root()}/companies({self.company_id})")
            self._company_name = str(company["name"])
        return self._company_name

    def web_service_path(self, service: str) -> str:
        """``/v2.0/{tenant}/{environment}/ODataV4/Company('<name>')/{service}``."""
        self._ensure_session()
        name = quote(self.company_name.replace("'", "''"), safe="")
        return f"/v2.0/{self.tenant}/{self.environment}/ODataV4/Company('{name}')/{service}"

    def iter_web_service(
        self,
        service: str,
        *,
        filter: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of a page published as an OData V4 web service (e.g. ``VATPostingSetup``)."""
        params = {"$filter": filter} if filter else {}
        yield from self._pages(self.web_service_path(service), params, page_size)

    # ------------------------------------------------------------------ reads

    def _pages(
        self, url: str, params: dict[str, str], page_size: int | None
    ) -> Iterator[list[dict[str, Any]]]:
        headers = {"Prefer": f"odata.maxpagesize={int(page_size)}"} if page_size else {}
        payload = self.request_json("GET", url, params=params or None, headers=headers)
        while True:
            values = payload.get("value") or []
            if values:
                yield values
            next_link = payload.get("@odata.nextLink")
            if not next_link:
                return
            payload = self.request_json("GET", next_link, headers=headers)

    def iter_pages(
        self,
        entity: str,
        *,
        filter: str | None = None,
        select: Sequence[str] | str | None = None,
        expand: Sequence[str] | str | None = None,
        orderby: str | None = None,
        page_size: int | None = None,
        api: str = STANDARD_API,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the records of ``entity`` (``customers``, ``taxGroups`` ...) page by page,
        following ``@odata.nextLink``."""
        params: dict[str, str] = {}
        if filter:
            params["$filter"] = filter
        if select:
            params["$select"] = select if isinstance(select, str) else ",".join(select)
        if expand:
            params["$expand"] = expand if isinstance(expand, str) else ",".join(expand)
        if orderby:
            params["$orderby"] = orderby
        yield from self._pages(self.entity_path(entity, api=api), params, page_size)

    def get(
        self,
        entity: str,
        entity_id: str,
        *,
        api: str = STANDARD_API,
        expand: Sequence[str] | str | None = None,
    ) -> dict[str, Any] | None:
        """One entity by id, or None on 404; ``expand`` names navigation properties to read in
        the same request (``$expand=salesInvoiceLines``: the lines with the header,
        api-reference/v2.0/dynamics-rate-limits "use $expand to fetch related entities in one
        request")."""
        params = None
        if expand:
            params = {"$expand": expand if isinstance(expand, str) else ",".join(expand)}
        response = self.request(
            "GET",
            self.entity_path(entity, api=api) + _key(entity_id),
            params=params,
            accept=(404,),
        )
        if response.status_code == 404:
            return None
        return response.json()

    def find_one(
        self, entity: str, odata_filter: str, *, api: str = STANDARD_API
    ) -> dict[str, Any] | None:
        """The single entity matching ``odata_filter`` (e.g. ``"number eq 'C-00042'"``; build
        literals with :func:`odata_quote`), None if none; several raise :class:`AmbiguousMatch`."""
        payload = self.request_json(
            "GET",
            self.entity_path(entity, api=api),
            params={"$filter": odata_filter, "$top": "2"},
        )
        values = payload.get("value") or []
        if len(values) > 1:
            raise AmbiguousMatch(
                f"{self.label}: {entity} matching {odata_filter} is not unique", system=self.system
            )
        return values[0] if values else None

    # ------------------------------------------------------------------ writes

    def create(
        self, entity: str, body: dict[str, Any], *, api: str = STANDARD_API
    ) -> dict[str, Any]:
        """POST a new entity. Never retried once sent (no idempotency key in BC): on
        :class:`~erpsync.connectors.errors.WriteOutcomeUnknown` or a 5xx, call
        :meth:`find_one` by the stable reference before creating again."""
        return self.request_json("POST", self.entity_path(entity, api=api), json_body=body)

    def patch(
        self,
        entity: str,
        entity_id: str,
        body: dict[str, Any],
        etag: str,
        *,
        api: str = STANDARD_API,
    ) -> dict[str, Any]:
        """PATCH with ``If-Match: etag`` (idempotent, retried); stale ETag -> 409 VendorError."""
        return self.request_json(
            "PATCH",
            self.entity_path(entity, api=api) + _key(entity_id),
            json_body=body,
            headers={"If-Match": etag},
        )

    # ------------------------------------------------------------------ $batch

    def batch_url(self, entity: str) -> str:
        """An operation's ``url`` in a ``$batch``: relative to ``api/v2.0``
        (``companies({id})/salesInvoices?...``), as in Microsoft's examples."""
        return f"companies({self.company_id})/{entity.lstrip('/')}"

    def batch(self, operations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send up to :data:`BATCH_MAX` operations in one ``POST .../api/v2.0/$batch`` (OData
        JSON batch) and return one answer per operation, in the order of ``operations``
        (``{"id", "status", "headers", "body"}``; matched by ``id``, which is set here).

        Each operation has its own status: a caller counts an operation done only on its own
        answer. Not transactional (no ``Isolation: snapshot``): every operation the push
        batches is a read, or a write that is checked afterwards on its own. A batch of reads is
        idempotent and retried like a GET; one with writes is a POST that is never retried once
        sent (a lost answer raises :class:`~erpsync.connectors.errors.WriteOutcomeUnknown`).
        https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/use-odata-batch
        (max 100 operations: .../administration/operational-limits-online, "Max batch size")
        """
        if not operations:
            return []
        if len(operations) > BATCH_MAX:
            raise ValueError(
                f"a $batch holds at most {BATCH_MAX} operations, not {len(operations)}"
            )
        requests = [
            {"headers": {"Content-Type": "application/json"}, **op, "id": str(n)}
            for n, op in enumerate(operations, start=1)
        ]
        payload = self.request_json(
            "POST",
            f"{self.api_root()}/$batch",
            json_body={"requests": requests},
            headers={"Accept": "application/json"},
            idempotent=all(str(op.get("method", "")).upper() == "GET" for op in operations),
        )
        answers = {
            str(a.get("id")): a
            for a in (payload or {}).get("responses") or []
            if isinstance(a, dict)
        }
        missing = [r["id"] for r in requests if r["id"] not in answers]
        if missing:
            raise ConnectorError(
                f"{self.label}: the $batch answer has no response for operation(s) {missing}",
                system=self.system,
            )
        return [answers[r["id"]] for r in requests]
