"""Progress lines for long loops (ERP pushes, sync pages): done/total, rate, time left.

A month-end push or a full time-entry sync runs for minutes to hours at the rate the vendors'
limits allow; an operator follows it in the task log::

    push to ERP: 1200/4000 invoices (30%), 4.1/s, about 11m 23s left
    sync psa/time_entries: 36 pages, 72000 records, 380.2 records/s

Use::

    for invoice in Progress("push to ERP", total=len(invoices), unit="invoices").iterate(invoices):
        ...

    for page in Progress("sync psa/time_entries", unit="pages").iterate(pages, records=len):
        ...

or ``advance()`` / ``finish()`` by hand.

A line is logged at most every ``every_seconds`` (default 10 s) or when another ``every_fraction``
(default 10%) of the total is done, whichever comes first, and once by :meth:`finish`. Without a
total (a paged read of unknown length) the line has the count and rate only. Thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["Progress", "format_duration"]

log = logging.getLogger("erpsync.progress")

T = TypeVar("T")


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1h 2m 5s"``; ``42.4`` -> ``"42s"``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


class Progress:
    """Counts work done and logs throttled progress lines (see the module docstring)."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "items",
        every_seconds: float = 10.0,
        every_fraction: float = 0.10,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.every_seconds = every_seconds
        self.every_fraction = every_fraction
        self.done = 0
        self.extra: dict[str, int] = {}
        self.lines: list[str] = []
        self._log = logger or log
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_time = self._started
        self._last_done = 0
        self._finished = False

    def advance(self, n: int = 1, **counters: int) -> None:
        """``n`` more units done (plus optional side counters, e.g. ``records=2000``)."""
        with self._lock:
            self.done += n
            for name, value in counters.items():
                self.extra[name] = self.extra.get(name, 0) + value
            now = self._clock()
            due = now - self._last_time >= self.every_seconds
            if self.total and not due:
                step = max(1, int(self.total * self.every_fraction))
                due = self.done - self._last_done >= step
            if due:
                self._emit(now)

    def iterate(self, items: Iterable[T], **counters: Callable[[T], int]) -> Iterator[T]:
        """Yield ``items``, advancing by one after each (when the loop asks for the next) and
        by ``counter(item)`` for each side counter; the final line when they are exhausted."""
        for item in items:
            yield item
            self.advance(1, **{name: count(item) for name, count in counters.items()})
        self.finish()

    def finish(self) -> str:
        """Log the final line (once) and return it."""
        with self._lock:
            if not self._finished:
                self._finished = True
                self._emit(self._clock(), final=True)
            return self.lines[-1]

    def line(self, now: float | None = None, *, final: bool = False) -> str:
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate_units = self.done / elapsed
        if self.total:
            pct = 100.0 * self.done / self.total
            text = f"{self.label}: {self.done}/{self.total} {self.unit} ({pct:.0f}%)"
        else:
            text = f"{self.label}: {self.done} {self.unit}"
        for name, value in self.extra.items():
            text += f", {value} {name}"
        if self.extra and not self.total:
            name, value = next(iter(self.extra.items()))
            text += f", {value / elapsed:.1f} {name}/s"
        else:
            text += f", {rate_units:.1f}/s"
        if final:
            text += f", done in {format_duration(elapsed)}"
        elif self.total and self.done and self.done < self.total:
            left = (self.total - self.done) / rate_units
            text += f", about {format_duration(left)} left"
        return text

    def _emit(self, now: float, *, final: bool = False) -> None:
        text = self.line(now, final=final)
        self.lines.append(text)
        self._log.info("%s", text)
        self._last_time = now
        self._last_done = self.done
