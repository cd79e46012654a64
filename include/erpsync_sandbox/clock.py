"""Business clock of the sandbox firm.

The firm lives at a business date (it starts at :data:`CLOCK_START`, 2026-11-02T09:00Z, just
after the generated history ends). While the sandbox runs, business time flows at wall-clock
speed from its last persisted value; :func:`erpsync_sandbox.simulate.advance` jumps it forward
one business day per step and makes the changes a real firm would make.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

from erpsync_sandbox.store import parse_iso, to_iso

__all__ = ["CLOCK_START", "BusinessClock"]

#: Business "now" of a freshly generated firm.
CLOCK_START = "2026-11-02T09:00:00.000000Z"


class BusinessClock:
    """The firm's "now": persisted in ``<state_dir>/clock.json``, flowing at wall speed.

    ``now()`` = the persisted business time + the monotonic time elapsed since it was loaded or
    set. ``set()`` re-anchors (and persists); ``freeze()`` stops the flow (tests that need exact
    timestamps).
    """

    def __init__(self, path: Path | None = None, start: str = CLOCK_START) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self.frozen = False
        business = start
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            business = data.get("now", start)
            self.frozen = bool(data.get("frozen", False))
        self._anchor = parse_iso(business)
        self._mono = time.monotonic()

    def now_dt(self) -> dt.datetime:
        """Business now as an aware UTC datetime."""
        with self._lock:
            if self.frozen:
                return self._anchor
            return self._anchor + dt.timedelta(seconds=time.monotonic() - self._mono)

    def now(self) -> str:
        """Business now in the stores' modstamp format (``...T09:00:00.000000Z``)."""
        return to_iso(self.now_dt())

    def set(self, moment: str | dt.datetime) -> str:
        """Jump the clock to ``moment`` (never backwards) and persist it."""
        target = parse_iso(moment) if isinstance(moment, str) else moment.astimezone(dt.UTC)
        current = self.now_dt()
        with self._lock:
            self._anchor = max(target, current)
            self._mono = time.monotonic()
        self.save()
        return to_iso(self._anchor)

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or restart) the flow of business time."""
        current = self.now_dt()
        with self._lock:
            self._anchor = current
            self._mono = time.monotonic()
            self.frozen = frozen
        self.save()

    def save(self) -> None:
        """Persist the current business time."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"now": self.now(), "frozen": self.frozen}))
        tmp.replace(self.path)

    def reset(self, start: str = CLOCK_START) -> None:
        """Back to ``start`` (used by reset)."""
        with self._lock:
            self._anchor = parse_iso(start)
            self._mono = time.monotonic()
        self.save()
