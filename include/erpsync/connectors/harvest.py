"""Harvest API v2 client (the PSA): bearer auth, ``links.next`` paging, 429 ``Retry-After``.

Connection (``erpsync_psa``, conn_type http): host/schema/port = ``https://api.harvestapp.com``;
password = the personal access token (or extra ``access_token``). Extras: ``account_id``
(required, sent as ``Harvest-Account-Id``; an empty one is a configuration error),
``user_agent`` (Harvest requires ``App name (contact email)``).

* Auth: ``Authorization: Bearer``, ``Harvest-Account-Id`` and ``User-Agent`` on every request.
  https://help.getharvest.com/api-v2/authentication-api/authentication/authentication/
* Paging: ``per_page`` (1..2000) and then the ``links.next`` URL of each answer (a cursor URL
  carrying the original filters) until it is null; never ``page=N`` arithmetic, which repeats or
  skips records while others change.
  https://help.getharvest.com/api-v2/introduction/overview/pagination/
* Rate limit: 100 requests per 15 s per token; over it Harvest answers 429 with
  ``Retry-After: <seconds>``, which the shared request loop waits out (capped).
  https://help.getharvest.com/api-v2/introduction/overview/general/#rate-limiting
* Incremental reads: ``updated_since=<watermark>`` is inclusive (``updated_at >=``); the boundary
  dedupe of :mod:`erpsync.connectors.cursors` drops what was already seen
  (:func:`~erpsync.connectors.cursors.harvest_incremental_params`). Harvest deletes are hard
  deletes with no feed: compare id sets.
* Writes: ``create`` (POST) is never retried automatically; ``update`` (PATCH of absolute field
  values, e.g. an assignment's ``hourly_rate``) is idempotent and retried.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from erpsync.connectors.errors import ConnectorError
from erpsync.connectors.http import VendorClient
from erpsync.connectors.ids import PSA_CONN_ID

__all__ = ["HarvestClient"]

MAX_PER_PAGE = 2000
DEFAULT_USER_AGENT = "erpsync (https://github.com/erpsync/erpsync)"


def _decoders():
    import msgspec

    return (
        msgspec.json.Decoder(dict[str, msgspec.Raw]),
        msgspec.json.Decoder(list[msgspec.Raw] | None),
    )


_ENVELOPE, _RECORDS = _decoders()


def _v2(path: str) -> str:
    path = path.strip()
    if "://" in path:
        return path
    path = "/" + path.lstrip("/")
    return path if path.startswith("/v2/") else "/v2" + path


def envelope_key(resource_path: str) -> str:
    """The list key of a Harvest envelope: the last path segment (``users/5/billable_rates``
    -> ``billable_rates``)."""
    return resource_path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


class HarvestClient(VendorClient):
    """Harvest v2 client on the Airflow connection ``conn_id`` (default ``erpsync_psa``)."""

    system = "psa"
    label = "PSA (Harvest)"
    default_conn_id = PSA_CONN_ID

    def _configure(self) -> None:
        self._token = self._secret("access_token")
        self.account_id = str(self.extras.get("account_id") or "").strip()
        self.user_agent = str(self.extras.get("user_agent") or DEFAULT_USER_AGENT)
        self._require_account()

    def _require_account(self) -> None:
        if not getattr(self, "account_id", ""):
            # Harvest needs the account on every request; without it a personal access token
            # is refused, so fail with what to set before anything is sent
            raise ConnectorError(
                f"{self.label}: connection {self.conn_id} needs the extra 'account_id' (the"
                " Harvest account id shown next to the personal access token at"
                " https://id.getharvest.com/developers)",
                system=self.system,
            )

    def _auth_headers(self) -> dict[str, str]:
        self._require_account()
        return {
            "Authorization": f"Bearer {self._token or ''}",
            "User-Agent": self.user_agent,
            "Harvest-Account-Id": self.account_id,
        }

    # ------------------------------------------------------------------ reads

    def iter_pages(
        self,
        resource_path: str,
        params: dict[str, Any] | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the records of a list endpoint (``time_entries``, ``users/5/cost_rates`` ...)
        page by page, following ``links.next``."""
        key = envelope_key(resource_path)
        query = {**(params or {}), "per_page": max(1, min(MAX_PER_PAGE, int(per_page)))}
        payload = self.request_json("GET", _v2(resource_path), params=query)
        while True:
            records = payload.get(key) or []
            if records:
                yield records
            next_url = (payload.get("links") or {}).get("next")
            if not next_url:
                return
            payload = self.request_json("GET", next_url)

    def iter_raw_pages(
        self,
        resource_path: str,
        params: dict[str, Any] | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> Iterator[list[Any]]:
        """:meth:`iter_pages` for bulk reads: the same requests, paging and errors, but each
        record comes back as its undecoded JSON text (``msgspec.Raw``, a slice of the page's
        bytes) for a typed decoder and the raw landing, so no Python dict is built per record.
        A page the strict decoder refuses (e.g. ``NaN`` literals) is decoded exactly as
        :meth:`iter_pages` decodes it and comes back as a list of dicts."""
        key = envelope_key(resource_path)
        query = {**(params or {}), "per_page": max(1, min(MAX_PER_PAGE, int(per_page)))}
        url, params_now = _v2(resource_path), query
        while True:
            response = self.request("GET", url, params=params_now)
            records, next_url = self._raw_page(response, key)
            if records:
                yield records
            if not next_url:
                return
            url, params_now = next_url, None

    def _raw_page(self, response, key: str) -> tuple[list[Any], Any]:
        import msgspec

        try:
            envelope = _ENVELOPE.decode(response.content)
            records = _RECORDS.decode(envelope[key]) if key in envelope else None
            links = msgspec.json.decode(envelope["links"]) if "links" in envelope else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            payload = self._json_of(response, "GET")
            return payload.get(key) or [], (payload.get("links") or {}).get("next")
        return records or [], (links or {}).get("next")

    def get(self, path: str) -> dict[str, Any] | None:
        """One resource (``projects/12``), or None on 404."""
        response = self.request("GET", _v2(path), accept=(404,))
        if response.status_code == 404:
            return None
        return response.json()

    # ------------------------------------------------------------------ writes

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a new resource (not retried once sent: Harvest has no idempotency key)."""
        return self.request_json("POST", _v2(path), json_body=body)

    def update(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH absolute field values; idempotent, so retried like a read."""
        return self.request_json("PATCH", _v2(path), json_body=body, idempotent=True)
