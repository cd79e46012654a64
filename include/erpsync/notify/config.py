"""Who gets what: recipients, thresholds and timings of erpsync's notifications, as settings.

One Airflow Variable, ``erpsync_notifications`` (JSON, in ``airflow_settings.yaml``), read when a
notification is about to be sent (never at parse time). Like every Airflow Variable it can also
come from the environment (``AIRFLOW_VAR_ERPSYNC_NOTIFICATIONS``) or a secrets backend. Keys
(all optional; the README section "Notifications" is the user's copy of this list):

* ``finance_ops``: addresses that get the digest of exceptions whose owner has no address of its
  own (the fallback).
* ``owners``: owner -> address(es). An exception's owner is a role from the reconciliation
  catalogue (``billing_ops``, ``project_manager``...), ``finance ops``, or names a CRM user
  (``opportunity owner 005...``, ``finance ops / CRM owner 005...``): the whole owner text, each
  ``/``-separated part and a trailing CRM user id are looked up. Owners that are people
  (an e-mail address, or the name or e-mail of an active person in ``core.people``, the PSA's
  users) get the person's e-mail without any setting.
* ``approvers`` / ``escalation``: who is told when an invoice batch waits for approval, and the
  second group told when nobody answered ``approval_escalate_before`` the response timeout.
* ``data_engineers``: who gets missed-deadline and task-failure alerts.
* ``digest_age_days`` (7), ``digest_amount_threshold`` (``"10000"``, in the exception's currency;
  ``digest_amount_thresholds`` per currency overrides it, e.g. ``{"JPY": "1500000"}``),
  ``digest_max_items`` (200 listed per digest; the rest are counted and linked).
* ``approval_reminder_after`` (``"24h"``), ``approval_escalate_before`` (``"12h"``).
* ``smtp_conn_id`` (``erpsync_smtp``, the SMTP connection in ``airflow_settings.yaml``) and
  ``base_url`` (links; default: Airflow's ``[api] base_url``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

VARIABLE = "erpsync_notifications"
DEFAULT_SMTP_CONN_ID = "erpsync_smtp"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(raw: str | int | float, *, name: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"24h"``, ``"2d"``; a bare number is seconds."""
    match = _DURATION.match(str(raw))
    if not match:
        raise ValueError(f"{name}={raw!r}: use e.g. 90s, 30m, 24h or 2d")
    value, unit = float(match.group(1)), match.group(2) or "s"
    field_ = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]
    return timedelta(**{field_: value})


def _addresses(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = re.split(r"\s*[,;]\s*", value)
    return tuple(a.strip() for a in value if a and a.strip())


@dataclass(frozen=True)
class NotifySettings:
    finance_ops: tuple[str, ...] = ()
    owners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    approvers: tuple[str, ...] = ()
    escalation: tuple[str, ...] = ()
    data_engineers: tuple[str, ...] = ()
    digest_age_days: int = 7
    digest_amount_threshold: Decimal = Decimal("10000")
    digest_amount_thresholds: Mapping[str, Decimal] = field(default_factory=dict)
    digest_max_items: int = 200
    approval_reminder_after: timedelta = timedelta(hours=24)
    approval_escalate_before: timedelta = timedelta(hours=12)
    smtp_conn_id: str = DEFAULT_SMTP_CONN_ID
    base_url: str | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> NotifySettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{VARIABLE}: unknown keys {unknown} (known: {sorted(known)})")
        kwargs: dict[str, Any] = {}
        for key in ("finance_ops", "approvers", "escalation", "data_engineers"):
            if key in raw:
                kwargs[key] = _addresses(raw[key])
        if "owners" in raw:
            kwargs["owners"] = {
                str(k).strip().lower(): _addresses(v) for k, v in (raw["owners"] or {}).items()
            }
        if "digest_age_days" in raw:
            kwargs["digest_age_days"] = int(raw["digest_age_days"])
        if "digest_amount_threshold" in raw:
            kwargs["digest_amount_threshold"] = Decimal(str(raw["digest_amount_threshold"]))
        if "digest_amount_thresholds" in raw:
            kwargs["digest_amount_thresholds"] = {
                str(k).upper(): Decimal(str(v))
                for k, v in (raw["digest_amount_thresholds"] or {}).items()
            }
        if "digest_max_items" in raw:
            kwargs["digest_max_items"] = max(1, int(raw["digest_max_items"]))
        for key in ("approval_reminder_after", "approval_escalate_before"):
            if key in raw:
                kwargs[key] = parse_duration(raw[key], name=key)
        for key in ("smtp_conn_id", "base_url"):
            if raw.get(key):
                kwargs[key] = str(raw[key]).rstrip("/") if key == "base_url" else str(raw[key])
        return cls(**kwargs)

    def owner_addresses(self, key: str) -> tuple[str, ...]:
        return self.owners.get(key.strip().lower(), ())

    def amount_threshold(self, currency: str | None) -> Decimal:
        return self.digest_amount_thresholds.get(
            (currency or "").upper(), self.digest_amount_threshold
        )

    def links_base(self) -> str:
        """Where Airflow (and the finance console at ``/erpsync``) is reached from a mail."""
        if self.base_url:
            return self.base_url
        from airflow.providers.common.compat.sdk import conf

        base = conf.get("api", "base_url", fallback=None) or "http://localhost:8080"
        return base.rstrip("/")


def load() -> NotifySettings:
    """The settings from the ``erpsync_notifications`` Variable (defaults when it is unset)."""
    raw = None
    try:
        from airflow.sdk import Variable

        raw = Variable.get(VARIABLE, default=None)
    except Exception:  # noqa: BLE001 - outside a task (callbacks, CLI): the environment only
        raw = os.environ.get(f"AIRFLOW_VAR_{VARIABLE.upper()}")
    if raw is None or raw == "":
        return NotifySettings()
    data = json.loads(raw) if isinstance(raw, str) else raw
    return NotifySettings.from_mapping(data)


def unique(addresses: Iterable[str]) -> tuple[str, ...]:
    """Addresses in order, each once (compared case-insensitively)."""
    seen: set[str] = set()
    out = []
    for a in addresses:
        if a.lower() not in seen:
            seen.add(a.lower())
            out.append(a)
    return tuple(out)
