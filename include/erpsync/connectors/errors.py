"""Errors the vendor clients raise.

Every message is built by the clients from parsed, truncated and scrubbed text: it never holds
a connection password, a secret extra or an access token, even when the server echoes the
request back (see :class:`erpsync.connectors.http.Redactor`).

Which errors a task should retry:

* :class:`RetryBudgetExceeded`: the system kept failing transiently (5xx, 429, timeouts) past
  the client's cap; an Airflow task retry later may succeed.
* :class:`QuotaExhausted`: the vendor's quota is spent (Salesforce's rolling 24 h
  ``REQUEST_LIMIT_EXCEEDED``); retrying within minutes will not help.
* :class:`AuthError`: credentials refused; fix the connection.
* :class:`WriteOutcomeUnknown`: a non-idempotent write was sent and the answer was lost; the
  write may have committed. Never resend blindly: look the record up by its stable external
  reference first (check-then-create).
* :class:`VendorError`: any other refusal (4xx validation, 404, 409 stale ETag ...).
"""

from __future__ import annotations

__all__ = [
    "AmbiguousMatch",
    "AuthError",
    "ConnectorError",
    "QuotaExhausted",
    "QuotaReserveReached",
    "RetryBudgetExceeded",
    "VendorError",
    "WriteOutcomeUnknown",
]


class ConnectorError(RuntimeError):
    """Base class of every error a vendor client raises."""

    def __init__(self, message: str, *, system: str = "") -> None:
        super().__init__(message)
        self.system = system
        self.message = message


class VendorError(ConnectorError):
    """The vendor answered with an error status.

    ``status`` is the HTTP status, ``code`` the vendor's error code (Salesforce ``errorCode``,
    Business Central ``error.code``, Harvest ``error``) when it sent one, ``message`` the
    vendor's message (scrubbed, at most a few hundred characters).
    """

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        system: str = "",
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.method = method
        self.path = path
        where = f" {method} {path}" if method else ""
        label = f"{system.upper()}{where}" if system else where.strip()
        text = f"{label}: HTTP {status}" + (f" {code}" if code else "") + f": {message}"
        super().__init__(text, system=system)
        self.vendor_message = message


class AuthError(VendorError):
    """The credentials were refused (token endpoint error, or 401 after one re-login)."""


class QuotaExhausted(VendorError):
    """The vendor's request quota is spent (Salesforce 403 ``REQUEST_LIMIT_EXCEEDED``).

    Not retried: Salesforce's limit is a rolling 24-hour window, so waiting seconds is useless.
    """


class QuotaReserveReached(QuotaExhausted):
    """The client stopped before the quota was spent: what is left is the configured reserve
    (connection extra ``quota_reserve``). Nothing was sent; handled like
    :class:`QuotaExhausted`."""

    def __init__(self, message: str, *, system: str = "") -> None:
        ConnectorError.__init__(self, message, system=system)
        self.status = 0
        self.code = "QUOTA_RESERVE_REACHED"
        self.method = ""
        self.path = ""
        self.vendor_message = message


class RetryBudgetExceeded(ConnectorError):
    """Transient failures went on past the retry cap (attempts or total wait).

    ``attempts`` requests were made, ``waited`` seconds were spent sleeping between them,
    ``last_status`` is the last HTTP status (None for a transport error).
    """

    def __init__(
        self,
        message: str,
        *,
        system: str = "",
        attempts: int = 0,
        waited: float = 0.0,
        last_status: int | None = None,
    ) -> None:
        super().__init__(message, system=system)
        self.attempts = attempts
        self.waited = waited
        self.last_status = last_status


class WriteOutcomeUnknown(ConnectorError):
    """A non-idempotent write was sent but no answer came back (timeout, dropped connection).

    The write may or may not have committed. It is not retried automatically: look the record
    up by its external reference (e.g. Business Central ``externalDocumentNumber`` or
    ``number`` with ``find_one``) and create it only if it is absent.
    """

    def __init__(self, message: str, *, system: str = "", method: str = "", path: str = ""):
        super().__init__(message, system=system)
        self.method = method
        self.path = path


class AmbiguousMatch(ConnectorError):
    """A lookup by a key that should be unique found several records."""
