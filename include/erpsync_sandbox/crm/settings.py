"""Run-time knobs of the sandbox CRM and its daily API request quota.

Both are shared by the edge middleware (bearer check, quota, ``Sforce-Limit-Info``) and the
routes (``/limits``, ``/__admin/crm``). Salesforce's limits:
https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

__all__ = ["CrmSettings", "Quota"]


@dataclass
class CrmSettings:
    """Run-time knobs of the sandbox CRM (env defaults, ``PUT /__admin/crm`` to change)."""

    #: Enterprise Edition's documented daily allocation is 100,000 + 1,000 per Salesforce
    #: licence (+ purchased add-ons) per rolling 24 h; the default is that base, i.e. an org
    #: whose licences add nothing (developer.salesforce.com, "Salesforce Developer Limits and
    #: Allocations Quick Reference" > "API Request Limits and Allocations").
    daily_limit: int = 100_000
    deleted_retention_days: float = 15.0
    earliest_deleted: str | None = None
    locator_ttl_seconds: float = 900.0
    max_open_cursors: int = 10
    session_seconds: int = 7200

    @classmethod
    def from_env(cls) -> CrmSettings:
        env = os.environ
        s = cls()
        s.daily_limit = int(env.get("ERPSYNC_SANDBOX_CRM_DAILY_LIMIT", s.daily_limit))
        s.deleted_retention_days = float(
            env.get("ERPSYNC_SANDBOX_CRM_DELETED_RETENTION_DAYS", s.deleted_retention_days)
        )
        s.earliest_deleted = env.get("ERPSYNC_SANDBOX_CRM_EARLIEST_DELETED") or None
        s.locator_ttl_seconds = float(
            env.get("ERPSYNC_SANDBOX_CRM_LOCATOR_TTL_SECONDS", s.locator_ttl_seconds)
        )
        s.max_open_cursors = int(
            env.get("ERPSYNC_SANDBOX_CRM_MAX_OPEN_CURSORS", s.max_open_cursors)
        )
        s.session_seconds = int(env.get("ERPSYNC_SANDBOX_CRM_SESSION_SECONDS", s.session_seconds))
        return s


class Quota:
    """The org's daily API request count (fixed 24 h window from the first counted call)."""

    WINDOW = 86_400.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.used = 0
        self._window_start = time.monotonic()

    def _roll(self) -> None:
        if time.monotonic() - self._window_start >= self.WINDOW:
            self.used = 0
            self._window_start = time.monotonic()

    def consume(self, limit: int) -> bool:
        """Count one call; False (not counted) if the quota is spent."""
        with self._lock:
            self._roll()
            if self.used >= limit:
                return False
            self.used += 1
            return True

    def current(self) -> int:
        with self._lock:
            self._roll()
            return self.used

    def set(self, used: int) -> None:
        with self._lock:
            self.used = max(0, used)
            self._window_start = time.monotonic()
