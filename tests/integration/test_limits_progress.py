"""Progress lines of long loops: done/total, rate, time left; throttled; from a real sync."""

from __future__ import annotations

import logging

from erpsync.progress import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_have_done_total_rate_and_eta_and_are_throttled() -> None:
    clock = FakeClock()
    progress = Progress("push of batch 7", 1000, unit="invoices", clock=clock)
    for _ in range(1000):
        clock.now += 0.25  # 4 invoices per second
        progress.advance()
    final = progress.finish()
    # every 10 s (40 invoices) rather than every 10% (100): the time rule comes first
    assert len(progress.lines) == 25 + 1
    first = progress.lines[0]
    assert first == "push of batch 7: 40/1000 invoices (4%), 4.0/s, about 4m 0s left"
    assert final == "push of batch 7: 1000/1000 invoices (100%), 4.0/s, done in 4m 10s"
    assert progress.finish() == final, "finish logs once"


def test_fraction_rule_and_unknown_total() -> None:
    clock = FakeClock()
    fast = Progress("sync", 100, clock=clock)
    for _ in range(100):
        clock.now += 0.01
        fast.advance()
    assert len(fast.lines) == 10, "one line per 10% when that comes before 10 s"

    paged = Progress("sync psa/time_entries", unit="pages", clock=clock)
    start = clock.now
    for page in paged.iterate([[1] * 2000] * 3, records=len):
        assert len(page) == 2000
        clock.now += 2.0
    assert clock.now - start == 6.0
    assert paged.lines == [
        "sync psa/time_entries: 3 pages, 6000 records, 1000.0 records/s, done in 6s"
    ]


def test_format_duration() -> None:
    assert format_duration(42.4) == "42s"
    assert format_duration(3725) == "1h 2m 5s"


def test_a_sync_logs_its_page_progress(warehouse_db, monkeypatch) -> None:
    """The sync engine's page loop logs a progress line (pages given directly, no vendor)."""
    import psycopg

    from erpsync.sync import engine, specs
    from erpsync.sync.spec import RunInfo

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("erpsync.progress")
    monkeypatch.setattr(logger, "level", logging.INFO)
    monkeypatch.setattr(logger, "disabled", False)
    logger.addHandler(handler)
    pages = [[], []]
    with psycopg.connect(warehouse_db) as conn:
        engine.run_entity_sync(
            conn,
            specs.get("people"),
            run=RunInfo("progress", "progress-test", "sync_people"),
            pages=pages,
        )
    logger.removeHandler(handler)
    assert any(line.startswith("sync psa/people: 2 pages, 0 records") for line in lines)
