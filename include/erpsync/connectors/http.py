"""The request loop every vendor client shares: connection, timeouts, retries, redaction.

The Airflow connection is resolved with the http provider's
:class:`airflow.providers.http.hooks.http.HttpHook` (base URL from host/schema/port, proxies,
``verify``, client certificates and TCP keep-alive from the connection), but the request loop is
ours, because the hook's ``run``/``check_response`` logs ``response.text`` at ERROR (which can
echo credentials), turns 429 into a generic exception and ignores ``Retry-After``
(apache/airflow#9569). Two things ``HttpHook.get_conn`` does are undone on purpose: it copies
every connection extra into the request headers (that would send ``token_path``, account ids
and secret extras to the vendor) and sets HTTP basic auth from login/password (the clients
authenticate with bearer tokens instead).

Retry rules (:class:`RetryPolicy`):

* Retried statuses: 408, 429, 500, 502, 503, 504, and transport errors (connect/read timeout,
  refused or dropped connection).
* Waits: exponential backoff with full jitter, ``uniform(0, min(max_delay, base_delay *
  2**(n-1)))`` before retry ``n`` (AWS Architecture Blog, "Exponential Backoff And Jitter");
  when the server sends ``Retry-After`` (seconds or an HTTP-date, RFC 9110 section 10.2.3) the
  wait is that value plus up to ``base_delay`` of jitter, never less.
* Cap: at most ``max_attempts`` requests and ``max_total_wait`` seconds of sleeping per call;
  past either, :class:`~erpsync.connectors.errors.RetryBudgetExceeded` says how many attempts,
  how long, and the last error. A ``Retry-After`` longer than the budget left fails at once.
* Only idempotent requests are retried: GET/HEAD/OPTIONS, PUT/PATCH/DELETE carrying
  ``If-Match``, and calls the client marks idempotent (an external-id upsert, an OAuth token
  request). A non-idempotent write (a bare POST) is retried only when the server provably did
  nothing: it could not connect, or it answered 429 (refused by the rate limiter before the
  handler ran). A write that was sent and got no answer raises
  :class:`~erpsync.connectors.errors.WriteOutcomeUnknown`; a 5xx answer to it raises
  :class:`~erpsync.connectors.errors.VendorError`; callers look the record up before writing
  again.
* A 401 re-authenticates once (new token) and resends; a second 401 is an
  :class:`~erpsync.connectors.errors.AuthError`.
* Every request has a connect and a read timeout (extras ``connect_timeout``/``read_timeout``).

Limits and budgets: before each authenticated request the client waits for its turn at the
:class:`~erpsync.connectors.throttle.Throttle` of its account (documented vendor limits,
configurable per connection: ``rate_limit``, ``max_concurrent``, ``quota_reserve``,
``shared_limits``; shared by the process's clients and, through the warehouse, by every process
using the account), so the pack stays just under each limit instead of collecting 429s; a 429
that comes anyway is still waited out (``Retry-After``). Every request sent is counted in
:data:`erpsync.connectors.budget.LEDGER` by system and purpose (``request(..., purpose=...)``
or derived from method and resource by :func:`~erpsync.connectors.budget.purpose_of`).

Secrets: the connection password, every extra whose name contains ``password``, ``secret``,
``token``, ``key``, ``authorization``... (Airflow's sensitive-name list; names ending in
``_path``/``_url``/``_uri`` are locations, not secrets) and every access token a client obtains
are registered with ``airflow.sdk.log.mask_secret`` and with the client's :class:`Redactor`,
which scrubs them (and their URL-encoded forms) from every message this module logs or raises.
Vendor error bodies are parsed, truncated and scrubbed; raw response text is never logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urljoin, urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

import erpsync
from erpsync.connectors.budget import LEDGER, purpose_of
from erpsync.connectors.errors import (
    AuthError,
    ConnectorError,
    RetryBudgetExceeded,
    VendorError,
    WriteOutcomeUnknown,
)
from erpsync.connectors.throttle import (
    QuotaGuard,
    Throttle,
    fingerprint,
    limit_settings,
    throttle_for,
)
from erpsync.redaction import is_secret_name

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "Redactor",
    "RequestStats",
    "RetryPolicy",
    "VendorClient",
    "backoff_delay",
    "is_idempotent",
    "parse_retry_after",
    "retry_wait",
    "sensitive_extra_names",
]

log = logging.getLogger("erpsync.connectors")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Methods that are idempotent when the request carries ``If-Match`` (optimistic concurrency).
CONDITIONAL_METHODS = frozenset({"PUT", "PATCH", "DELETE"})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_MIN_SECRET_LEN = 4
_MAX_MESSAGE = 300


# --------------------------------------------------------------------------- retry arithmetic


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a client tries. Defaults suit nightly syncs; tests shrink the waits."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 180.0
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    retry_statuses: frozenset[int] = RETRY_STATUSES

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], base: RetryPolicy | None = None) -> RetryPolicy:
        """Overrides from connection extras: ``retry_max_attempts``, ``retry_max_total_wait``,
        ``retry_base_delay``, ``retry_max_delay``, ``connect_timeout``, ``read_timeout``."""
        policy = base or cls()
        names = {
            "retry_max_attempts": "max_attempts",
            "retry_max_total_wait": "max_total_wait",
            "retry_base_delay": "base_delay",
            "retry_max_delay": "max_delay",
            "connect_timeout": "connect_timeout",
            "read_timeout": "read_timeout",
        }
        changes: dict[str, Any] = {}
        for extra, attr in names.items():
            if extras.get(extra) not in (None, ""):
                kind = int if attr == "max_attempts" else float
                changes[attr] = kind(extras[extra])
        if not changes:
            return policy
        return RetryPolicy(**{**policy.__dict__, **changes})


def backoff_delay(retry_number: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full-jitter backoff before retry ``retry_number`` (1 = first retry)."""
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** max(0, retry_number - 1)))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Returns None when absent or unparseable; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


def retry_wait(
    retry_number: int, retry_after: float | None, policy: RetryPolicy, rng: random.Random
) -> float:
    """The wait before retry ``retry_number``: ``Retry-After`` plus a little jitter when the
    server gave one (never less than it asked), else full-jitter backoff."""
    if retry_after is not None:
        return retry_after + rng.uniform(0.0, policy.base_delay)
    return backoff_delay(retry_number, policy, rng)


def is_idempotent(method: str, headers: Mapping[str, str] | None = None) -> bool:
    """GET/HEAD/OPTIONS always; PUT/PATCH/DELETE only with ``If-Match``; never a bare POST."""
    method = method.upper()
    if method in IDEMPOTENT_METHODS:
        return True
    if method in CONDITIONAL_METHODS:
        return any(k.lower() == "if-match" and v for k, v in (headers or {}).items())
    return False


# --------------------------------------------------------------------------- secrets


def sensitive_extra_names(extras: Mapping[str, Any]) -> list[str]:
    """Connection extras holding credentials (:func:`~erpsync.redaction.is_secret_name`)."""
    return [name for name in extras if is_secret_name(name)]


class Redactor:
    """Scrubs registered secrets (and their URL-encoded / base64 forms) out of text."""

    REPLACEMENT = "***"

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._variants: list[str] = []

    def add(self, secret: Any, name: str | None = None) -> None:
        """Register ``secret`` here and with Airflow's masker (before anything is logged)."""
        if secret is None:
            return
        text = str(secret)
        if len(text) < _MIN_SECRET_LEN or text in self._secrets:
            return
        self._secrets.add(text)
        try:
            from airflow.sdk.log import mask_secret

            mask_secret(text, name)
        except Exception:  # noqa: BLE001 - masking is defence in depth; scrubbing still applies
            log.debug("airflow mask_secret unavailable")
        variants = {text, quote(text, safe=""), quote_plus(text), json.dumps(text)[1:-1]}
        self._variants = sorted(
            {v for v in (*self._variants, *variants) if v}, key=len, reverse=True
        )

    def add_basic(self, user: str | None, password: str | None) -> None:
        """Also scrub the base64 ``user:password`` of an HTTP basic header."""
        if user is not None and password:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.add(token)

    def scrub(self, text: Any) -> str:
        out = str(text)
        for secret in self._variants:
            if secret in out:
                out = out.replace(secret, self.REPLACEMENT)
        return out

    def __contains__(self, text: str) -> bool:
        return any(v in text for v in self._variants)


# --------------------------------------------------------------------------- client base


@dataclass
class RequestStats:
    """What a client did: requests sent, retries (by cause), seconds slept, re-logins."""

    requests: int = 0
    retries: int = 0
    retry_causes: Counter[str] = field(default_factory=Counter)
    waited: float = 0.0
    reauthentications: int = 0
    throttled_429: int = 0
    throttle_wait: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "retry_causes": dict(self.retry_causes),
            "waited_seconds": round(self.waited, 3),
            "reauthentications": self.reauthentications,
            "throttled_429": self.throttled_429,
            "throttle_wait_seconds": round(self.throttle_wait, 3),
        }


def _never_sent(exc: BaseException) -> bool:
    """True when the request provably never reached the server (could not connect)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return False


class VendorClient:
    """Base of the Salesforce, Harvest and Business Central clients.

    Subclasses set ``system``/``label``/``default_conn_id`` and implement ``_auth_headers``
    (and, for token-based auth, ``_invalidate_auth``) plus ``_configure`` (read extras).
    Construction does no I/O: the connection is resolved and the session built on first use.
    """

    system = "http"
    label = "HTTP"
    default_conn_id = ""

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.conn_id = conn_id or self.default_conn_id
        self._policy_override = policy
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self.redactor = Redactor()
        self.stats = RequestStats()
        self._session: requests.Session | None = None
        self.base_url = ""
        self.extras: dict[str, Any] = {}
        self.login: str | None = None
        self._password: str | None = None
        self._throttle: Throttle | None = None
        self.quota: QuotaGuard | None = None

    # ------------------------------------------------------------------ session

    def _ensure_session(self) -> requests.Session:
        if self._session is not None:
            return self._session
        from airflow.providers.http.hooks.http import HttpHook

        hook = HttpHook(method="GET", http_conn_id=self.conn_id)
        conn = hook.get_connection(self.conn_id)
        extras = dict(conn.extra_dejson or {})
        # Register every secret before anything can be logged.
        self.redactor.add(conn.password, f"{self.conn_id}.password")
        for name in sensitive_extra_names(extras):
            self.redactor.add(extras[name], f"{self.conn_id}.{name}")
        self.redactor.add_basic(conn.login, conn.password)
        session = hook.get_conn()
        # Undo what does not belong on the wire (see module docstring).
        session.auth = None
        session.headers = requests.utils.default_headers()
        session.headers["Accept"] = "application/json"
        session.headers["User-Agent"] = f"erpsync/{erpsync.__version__}"
        self.base_url = hook.base_url.rstrip("/")
        self.extras = extras
        self.login = conn.login or None
        self._password = conn.password or None
        self.policy = self._policy_override or RetryPolicy.from_extras(extras)
        self._session = session
        self._configure()
        return session

    def _configure(self) -> None:
        """Read vendor extras (called once, after the session is built)."""

    def throttle(self) -> Throttle:
        """The shared limiter of this client's account and credentials (built on first use)."""
        self._ensure_session()
        if self._throttle is None:
            key = fingerprint(
                self.system,
                self.base_url,
                self.login,
                self._password or self.extras.get("access_token"),
            )
            settings = limit_settings(self.system, self.extras, self.base_url)
            try:
                self._throttle = throttle_for(self.system, key, settings, base_url=self.base_url)
            except ValueError as exc:
                raise ConnectorError(
                    f"{self.label}: connection {self.conn_id}: {exc}", system=self.system
                ) from None
            if settings.get("quota_reserve") is not None:
                self.quota = QuotaGuard(settings["quota_reserve"])
            log.debug(
                "%s: client-side limits %s%s",
                self.label,
                self._throttle.describe(),
                f", quota reserve {settings['quota_reserve']}" if self.quota else "",
            )
        return self._throttle

    def _quota_usage(self) -> tuple[int, int] | None:
        """Hook: ``(used, limit)`` of a daily quota the last answer reported (Salesforce)."""
        return None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> VendorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ auth hooks

    def _auth_headers(self) -> dict[str, str]:
        return {}

    def _invalidate_auth(self) -> bool:
        """Drop the cached token; True if a fresh login may fix a 401."""
        return False

    def _should_reauthenticate(self, response: requests.Response) -> bool:
        return response.status_code == 401

    # ------------------------------------------------------------------ errors

    def _error_details(self, response: requests.Response) -> tuple[str | None, str]:
        """``(code, message)`` from a vendor error body, scrubbed and truncated."""
        code: str | None = None
        message = ""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, list) and body and isinstance(body[0], dict):
            code = body[0].get("errorCode") or body[0].get("error")
            message = str(body[0].get("message") or "")
        elif isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict):
                code = err.get("code")
                message = str(err.get("message") or "")
            else:
                code = str(err) if err else None
                message = str(body.get("error_description") or body.get("message") or "")
        if not message:
            message = response.reason or "no message"
        message = self.redactor.scrub(message)
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + "..."
        return (self.redactor.scrub(code) if code else None), message

    def _error_for(self, response: requests.Response, method: str, path: str) -> VendorError:
        code, message = self._error_details(response)
        cls = AuthError if response.status_code == 401 else VendorError
        return cls(
            response.status_code, code, message, system=self.system, method=method, path=path
        )

    # ------------------------------------------------------------------ URLs

    def url_for(self, path_or_url: str) -> str:
        """Absolute URL on this system: paths join the base URL; absolute URLs (paging links)
        must point at the same scheme and host, so a token is never sent elsewhere."""
        self._ensure_session()
        if "://" not in path_or_url:
            return urljoin(self.api_base() + "/", path_or_url.lstrip("/"))
        allowed = {urlsplit(u)[:2] for u in (self.base_url, self.api_base())}
        if urlsplit(path_or_url)[:2] not in allowed:
            raise ConnectorError(
                f"{self.label}: refusing to follow a link to another host "
                f"({urlsplit(path_or_url).netloc})",
                system=self.system,
            )
        return path_or_url

    def api_base(self) -> str:
        """Base URL API paths are joined to (Salesforce: the token's ``instance_url``)."""
        return self.base_url

    def _display_path(self, url: str) -> str:
        return self.redactor.scrub(urlsplit(url).path)

    # ------------------------------------------------------------------ the request loop

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        authenticated: bool = True,
        accept: Collection[int] = (),
        purpose: str | None = None,
    ) -> requests.Response:
        """Send one logical request with retries; return the response (2xx or in ``accept``).

        ``idempotent`` defaults to :func:`is_idempotent` of the method and headers;
        ``purpose`` (for the request budget) to :func:`~erpsync.connectors.budget.purpose_of`.
        """
        session = self._ensure_session()
        method = method.upper()
        if authenticated:
            self._auth_headers()  # log in first: the API base may come from the token answer
            url = self.url_for(path_or_url)
        elif "://" in path_or_url:
            url = path_or_url
        else:
            url = urljoin(self.base_url + "/", path_or_url.lstrip("/"))
        path = self._display_path(url)
        if idempotent is None:
            idempotent = is_idempotent(method, headers)
        purpose = purpose or purpose_of(self.system, method, path, authenticated=authenticated)
        throttle = self.throttle() if authenticated else None
        policy = self.policy
        attempts = 0
        retries = 0
        waited = 0.0
        reauthenticated = False
        while True:
            attempts += 1
            send_headers = dict(headers or {})
            if authenticated:
                send_headers.update(self._auth_headers())
            if throttle is not None and self.quota is not None:
                self.quota.check(self.system, self.label)
            ticket, throttle_wait = throttle.acquire() if throttle is not None else (None, 0.0)
            self.stats.requests += 1
            self.stats.throttle_wait += throttle_wait
            LEDGER.sent(self.system, purpose, throttle_seconds=throttle_wait)
            retry_after: float | None = None
            last_status: int | None = None
            try:
                try:
                    response = session.request(
                        method,
                        url,
                        params=params,
                        json=json_body,
                        data=data,
                        headers=send_headers,
                        timeout=(policy.connect_timeout, policy.read_timeout),
                        allow_redirects=False,
                    )
                finally:
                    if throttle is not None:
                        throttle.release(ticket)
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                kind = type(exc).__name__
                if not idempotent and not _never_sent(exc):
                    raise WriteOutcomeUnknown(
                        f"{self.label} {method} {path}: the request was sent but no answer came"
                        f" back ({kind}); the write may have committed. Not retried: look the"
                        " record up by its external reference before writing again.",
                        system=self.system,
                        method=method,
                        path=path,
                    ) from None
                cause = kind
                last_error = f"{kind} (no HTTP answer)"
            else:
                self._observe(response)
                usage = self._quota_usage()
                if usage is not None and self.quota is not None:
                    self.quota.observe(*usage)
                status = response.status_code
                if status == 429:
                    self.stats.throttled_429 += 1
                    LEDGER.throttled(self.system, purpose)
                if status < 400 and (status < 300 or status in accept):
                    return response
                if status in accept:
                    return response
                if (
                    authenticated
                    and status == 401
                    and not reauthenticated
                    and self._should_reauthenticate(response)
                    and self._invalidate_auth()
                ):
                    reauthenticated = True
                    self.stats.reauthentications += 1
                    log.info(
                        "%s %s %s: session expired, logging in again", self.label, method, path
                    )
                    attempts -= 1
                    continue
                error = self._error_for(response, method, path)
                if status not in policy.retry_statuses:
                    raise error
                if not idempotent and status != 429:
                    raise error
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                cause = str(status)
                last_status = status
                last_error = f"HTTP {status}" + (f" {error.code}" if error.code else "")
                last_error += f": {error.vendor_message}"
            if attempts >= policy.max_attempts:
                raise RetryBudgetExceeded(
                    f"{self.label} {method} {path}: gave up after {attempts} attempts and"
                    f" {waited:.1f}s of waiting (cap: {policy.max_attempts} attempts,"
                    f" {policy.max_total_wait:.0f}s total wait); last error: {last_error}",
                    system=self.system,
                    attempts=attempts,
                    waited=waited,
                    last_status=last_status,
                )
            retries += 1
            wait = retry_wait(retries, retry_after, policy, self._rng)
            remaining = policy.max_total_wait - waited
            if wait > remaining:
                asked = (
                    f"the server asked to wait {retry_after:.0f}s (Retry-After)"
                    if retry_after is not None
                    else f"the next back-off is {wait:.1f}s"
                )
                raise RetryBudgetExceeded(
                    f"{self.label} {method} {path}: {asked} but only {max(0.0, remaining):.1f}s"
                    f" of the {policy.max_total_wait:.0f}s wait budget is left after {attempts}"
                    f" attempts; last error: {last_error}",
                    system=self.system,
                    attempts=attempts,
                    waited=waited,
                    last_status=last_status,
                )
            log.warning(
                "%s %s %s: %s; retry %d/%d in %.2fs",
                self.label,
                method,
                path,
                self.redactor.scrub(last_error),
                retries,
                policy.max_attempts - 1,
                wait,
            )
            self.stats.retries += 1
            self.stats.retry_causes[cause] += 1
            self.stats.waited += wait
            LEDGER.waited(self.system, purpose, wait)
            waited += wait
            self._sleep(wait)

    def _observe(self, response: requests.Response) -> None:
        """Hook: look at every response (e.g. Salesforce's ``Sforce-Limit-Info``)."""

    def request_json(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """:meth:`request` and decode the JSON body (None for an empty body)."""
        return self._json_of(self.request(method, path_or_url, **kwargs), method)

    def _json_of(self, response: requests.Response, method: str) -> Any:
        """The JSON body of an answer already received (None for an empty body); an answer that
        is not JSON is a :class:`ConnectorError` naming the request."""
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(
                f"{self.label} {method.upper()} {self._display_path(response.url)}: the answer"
                f" (HTTP {response.status_code}) is not JSON",
                system=self.system,
            ) from None

    # ------------------------------------------------------------------ tokens

    def _fetch_token(self, token_url: str, form: Mapping[str, str]) -> dict[str, Any]:
        """POST a form to an OAuth2 token endpoint; errors become :class:`AuthError`."""
        try:
            response = self.request(
                "POST",
                token_url,
                data=dict(form),
                authenticated=False,
                idempotent=True,  # a token request has no side effect
            )
        except VendorError as exc:
            raise AuthError(
                exc.status,
                exc.code,
                f"the token request was refused: {exc.vendor_message}. Check the login"
                f" (client id) and password (client secret) of connection {self.conn_id}",
                system=self.system,
                method="POST",
                path=exc.path,
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not payload.get("access_token"):
            raise AuthError(
                response.status_code,
                None,
                "the token endpoint answered without an access_token",
                system=self.system,
                method="POST",
                path=self._display_path(token_url),
            )
        self.redactor.add(payload["access_token"], f"{self.conn_id}.access_token")
        if payload.get("refresh_token"):
            self.redactor.add(payload["refresh_token"], f"{self.conn_id}.refresh_token")
        return payload

    def _secret(self, extra_name: str = "client_secret") -> str | None:
        """The connection password, else the named extra."""
        self._ensure_session()
        return self._password or self.extras.get(extra_name) or None
