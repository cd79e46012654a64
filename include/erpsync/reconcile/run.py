"""Reconciliation: every billable (or not) item, classified once, with the reason it waits.

What finance gets, per item (``recon.items``): **ready** to bill, **billed**, **non_billable**,
or **on_hold** with one reason from the catalogue ``recon.reasons`` (and every problem found in
``problems``). Items are time entries, expenses (live ones: ``deleted_at IS NULL``), fixed-fee
milestones (``core.contract_milestones``) and retainer fees (``billing.schedule_lines``).

Billing models (the contract of a time entry or expense is the version of the PSA project's
contract in effect on its date: a change order applies from its ``Change_Effective_Date__c``,
so it never re-prices work dated before it; ``recon.items.contract_version`` says which):

* **Time & materials**: hours x the contracted rate for the person on the entry's date
  (contract rate overrides, else the PSA's rate on the entry, else the person's rate card that
  day); each entry is priced on its own date, so a mid-month rate change is honoured. The
  amount is kept unrounded; it is rounded (erpsync.money) where it is reported or invoiced.
* **Not-to-exceed caps** (hours or amount): cumulative per contract in date order; entries
  beyond the cap are held ``over_cap``; an entry that straddles the cap is held whole (its
  detail says how much still fits) - a person splits it in the PSA.
* **Fixed fee**: a milestone is ready when the client accepted it; before its due date it is
  on hold ``not_yet_due``, after it ``milestone_not_accepted``. Time on a fixed-fee or retainer
  contract is non-billable (covered by the fee).
* **Retainer**: a fee line due on or before the as-of date is ready, later ones ``not_yet_due``.
* **Expenses**: billable and approved only; at cost plus the markup (``recon.settings``, or the
  contract's ``Expense_Markup_Pct__c``); a receipt is required above the threshold
  (75 EUR converted to the expense currency, ``recon.settings`` / ``recon.currencies``); policy
  limits per category (``recon.expense_policy``, e.g. Hotel 250 EUR per night).
* **Locked period**: items dated on or before ``recon.settings.lock_date`` (NULL: no lock) are
  held ``locked_period``.
* **Plausibility** (bounds in ``recon.settings``, migration 0021, changed through the
  audited :func:`erpsync.reconcile.policy.update_settings`): a billable T&M entry with more
  hours than ``max_hours_per_entry`` (24) is held ``hours_over_entry_limit``; when a person's
  hours on one date (every live entry, billable or not) exceed ``max_hours_per_person_day``
  (16), each of their billable entries that day is held ``hours_over_day_limit``; billable time
  or expenses whose amount is zero are held ``zero_amount``; a rate below ``rate_ratio_min``
  (0.5) or above ``rate_ratio_max`` (2.0) times the person's billable rate cards (lowest /
  highest, compared through ``recon.currencies.per_eur``; a card without a currency, as
  Harvest's, is in ``rate_card_currency``, EUR) is held ``rate_off_card``; a billable item
  dated more than ``date_tolerance_days`` (31) before the contract start, after its end or
  after the as-of date is held ``implausible_date``. An implausible entry consumes no cap.
* **Credits**: Harvest's expense ``total_cost`` is a decimal with no sign rule and a Harvest
  credit is a negative line, so a negative expense is a credit: billed as a negative line
  (markup included), marked ``reason_detail.credit`` and flagged to the approver
  (``expense_credit``, :mod:`erpsync.invoicing.anomalies`). Negative hours never load (the
  sync quarantines them).

Precedence when an item has several problems: billed first, then data problems (unknown
project, implausible date, closed project, outside contract dates, hours over the entry or
daily limit, zero amount, duplicate, missing rate, rate off the rate card, missing receipt, over
policy, over cap, currency, rate differs), then locked period, then not approved. So a planted
problem on a submitted entry is found now, not after approval.

Exceptions (``ops.exceptions`` via :mod:`erpsync.exceptions_queue`): one per problem at the
level a person fixes it - per time entry or expense (missing rate, closed project, duplicate,
missing receipt, over policy, unknown project, outside contract dates and the plausibility
reasons), per PSA project (over
cap, currency differs) and per PSA user assignment (rate differs) - with the amount at stake
and the owner from the catalogue. A rerun refreshes them (no duplicates); a problem no longer
found (fixed at the source and resynced) closes its exception.

Totals: the run also rewrites ``recon.item_totals`` (migration 0028: per period, client,
currency, item type, state, reason, WIP age bucket and leakage) from the per-group sums it
computes for its own summary anyway - no extra pass over recon.items - in the same transaction
as the items, so the billing cockpit reads totals that always match them.

Reruns: an item row is written only when something about it changed (IS DISTINCT FROM); a run
whose inputs did not change at all since the last one (same as-of date; fingerprint of every
input table's row count and newest row version, see ``sql.FINGERPRINT``;
the inputs' part is read before the run computes anything) recomputes nothing and
says so (``skipped``) - the hourly, asset-triggered reconcile is then about a second.

Parallel: recon.items is partitioned in two shards by contract (``sql.SHARDS``, migration
0015); from ``PARALLEL_MIN_ENTRIES`` time entries and expenses on, a run with its own
transaction classifies both shards at once, one worker connection per shard (and core), each
reading the snapshot the run exported with its input fingerprint, so every worker sees exactly
the data the run describes. The first reconciliation builds each shard's partition whole in its
worker (rows, then indexes and keys) and swaps the new partitions in in the run's transaction;
later runs' workers write only their shard's differences, which the run applies. Nothing a
worker writes is visible as a result before the run commits; the result does not depend on the
number of workers (``tests/integration/test_reconcile_sandbox.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from erpsync import audit, exceptions_queue, money
from erpsync.reconcile import sql

if TYPE_CHECKING:
    import psycopg

    from erpsync.sync.spec import RunInfo

#: one row of ``sql.STATE_SUMMARY`` (state, reason, approved, currency, items, hours, amount,
#: newest row version)
SummaryRow = tuple[Any, ...]

__all__ = [
    "ENTRY_REASONS",
    "GROUP_REASONS",
    "STATES",
    "ReconcileResult",
    "run_reconcile",
]

STATES = ("ready", "billed", "non_billable", "on_hold")
#: Problems raised per time entry / expense (entity types ``time_entry`` / ``expense``).
ENTRY_REASONS = (
    "unknown_project",
    "implausible_date",
    "closed_project",
    "outside_contract_dates",
    "hours_over_entry_limit",
    "hours_over_day_limit",
    "zero_amount",
    "duplicate_entry",
    "missing_rate",
    "rate_off_card",
    "missing_receipt",
    "expense_over_policy",
)
#: Problems raised per PSA project (``project``) or user assignment (``user_assignment``).
GROUP_REASONS = (
    ("over_cap", "project"),
    ("currency_differs_from_contract", "project"),
    ("rate_differs_from_contract", "user_assignment"),
)
_LOCK_KEY = "erpsync.reconcile"
#: The classification and the merge join every item to small lookups, or recon.items to the
#: stage, by hash: a row estimate off by a shard filter must never turn one into a nested loop.
_HASH_JOINS_ONLY = "SET LOCAL enable_nestloop = off"
#: From this many time entries and expenses on, a run classifies its shards in parallel
#: workers (one per shard, at most one per core).
PARALLEL_MIN_ENTRIES = 200_000


def _money_str(amount: Decimal | None, currency: str | None) -> str | None:
    return None if amount is None else money.as_text(amount, currency)


def _at_stake(amount: Decimal | None, currency: str | None) -> Decimal | None:
    if amount is None or currency is None:
        return None
    try:
        return money.round_money(Decimal(amount), currency)
    except money.UnknownCurrency:
        return Decimal(amount)


@dataclass(frozen=True)
class ReconcileResult:
    """What one reconciliation found and changed (JSON-safe via :meth:`as_dict`).

    ``by_state``/``approved_by_state``: ``{state: {"items", "hours", "amounts": {cur: "1.00"}}}``;
    ``on_hold_by_reason``: the same per reason code; amounts rounded to the currency's minor
    units (erpsync.money) after summing the unrounded item amounts.
    """

    run_id: str
    as_of: str
    items: int
    by_state: dict[str, dict[str, Any]]
    approved_by_state: dict[str, dict[str, Any]]
    on_hold_by_reason: dict[str, dict[str, Any]]
    inserted: int
    updated: int
    deleted: int
    exceptions_open: int
    exceptions_raised: int
    exceptions_resolved: int
    problems: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: True when no input changed since the last run (same as-of): nothing was recomputed
    skipped: bool = False
    #: seconds per step (``inputs``: fingerprint and snapshot, ``classify``: the items classified
    #: and written or compared, ``apply``: swap or merge, ``exceptions``, ``summary``) and the
    #: number of workers that classified
    timings: dict[str, float] = field(default_factory=dict)
    workers: int = 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(json.dumps(asdict(self), default=str))
        return out

    def summary(self) -> str:
        """One log line: items per state, exceptions raised and resolved, and how the run
        went (skipped, or workers and seconds per step)."""
        return (
            "reconciliation: "
            + ", ".join(f"{state} {v.get('items', v)}" for state, v in self.by_state.items())
            + f"; exceptions raised {self.exceptions_raised}, "
            f"resolved {self.exceptions_resolved}; "
            + (
                "nothing changed since the last run, nothing recomputed"
                if self.skipped
                else f"{self.workers} worker(s), seconds per step {self.timings}"
            )
        )


def _bucket() -> dict[str, Any]:
    return {"items": 0, "hours": Decimal(0), "amounts": {}}


def _add(
    bucket: dict[str, Any],
    n: int,
    hours: Decimal | None,
    amount: Decimal | None,
    currency: str | None,
) -> None:
    bucket["items"] += n
    bucket["hours"] += Decimal(hours or 0)
    if amount is not None and currency:
        bucket["amounts"][currency] = bucket["amounts"].get(currency, Decimal(0)) + amount


def _finish(bucket: dict[str, Any]) -> dict[str, Any]:
    return {
        "items": bucket["items"],
        "hours": str(bucket["hours"]),
        "amounts": {c: _money_str(a, c) for c, a in sorted(bucket["amounts"].items())},
    }


def _summary(
    conn: psycopg.Connection[Any],
    rows: Sequence[SummaryRow] | None = None,
    written_xid: int | None = None,
) -> tuple[int, dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """The counts per state (and of approved items) and per reason; and recon.items' part of the
    fingerprint (``sql.FINGERPRINT``: row count and newest row version), from the same scan
    (``rows``: ``sql.STATE_SUMMARY``'s rows already read, e.g. per shard by the parallel
    workers; rows of the same group add up; ``written_xid``: the run's transaction id when it
    wrote rows the workers could not see written)."""
    by_state = {s: _bucket() for s in STATES}
    approved = {s: _bucket() for s in STATES}
    reasons: dict[str, dict[str, Any]] = {}
    total = newest = 0
    if rows is None:
        rows = conn.execute(sql.STATE_SUMMARY).fetchall()
    if written_xid is not None:
        newest = written_xid
    for state, reason, is_approved, currency, n, hours, amount, xmin in rows:
        total += n
        newest = max(newest, int(xmin or 0))
        cur = None if currency is None else str(currency).strip()
        _add(by_state[state], n, hours, amount, cur)
        if is_approved:
            _add(approved[state], n, hours, amount, cur)
        if reason is not None:
            _add(reasons.setdefault(reason, _bucket()), n, hours, amount, cur)
    return (
        total,
        {s: _finish(b) for s, b in by_state.items()},
        {s: _finish(b) for s, b in approved.items()},
        {r: _finish(b) for r, b in sorted(reasons.items())},
        f"{total}:{newest}",
    )


def _store_totals(
    conn: psycopg.Connection[Any], as_of: dt.date, work_tables: list[str] | None
) -> list[SummaryRow] | None:
    """Rewrite ``recon.item_totals`` (migration 0028, the billing cockpit's summary) and
    ``recon.client_period_totals`` from it, in the run's transaction, server-side: from the
    parallel workers' sums in their work tables (``work_tables``: their shard tables; call it
    before they are dropped), else in one pass over recon.items (``sql.TOTALS_SERIAL``), whose
    state summary (``sql.STATE_SUMMARY``'s columns) is returned (None after the workers: they
    returned theirs)."""
    conn.execute(sql.DELETE_TOTALS)
    rows = None
    if work_tables:
        # the names are the run's own (see _shard_tables)
        union = " UNION ALL ".join(f"SELECT * FROM {t}_totals" for t in work_tables)  # noqa: S608
        conn.execute(sql.TOTALS_FROM_WORK.replace("{tables}", union))
    else:
        rows = conn.execute(sql.TOTALS_SERIAL, {"as_of": as_of}).fetchall()
    conn.execute(sql.CLIENT_PERIOD_TOTALS)
    return rows


def _problems(
    conn: psycopg.Connection[Any],
) -> Iterator[tuple[str, str, str, str, dict[str, Any], Decimal | None, str | None]]:
    """Every problem found, at the level a person fixes it: ``(reason, entity_type, key, owner,
    detail, amount, currency)`` per time entry / expense (``sql.ENTRY_PROBLEMS``), then per PSA
    project or user assignment (``sql.GROUP_PROBLEMS``)."""
    entry_rows = conn.execute(sql.ENTRY_PROBLEMS, {"codes": list(ENTRY_REASONS)}).fetchall()
    for (
        reason,
        entity_type,
        key,
        amount,
        currency,
        item_key,
        project,
        user,
        day,
        hours,
        detail,
        owner,
    ) in entry_rows:
        context = {
            "item_key": item_key,
            "project_psa_id": project,
            "user_psa_id": user,
            "date": day,
            "hours": hours,
            **(detail or {}),
        }
        yield reason, entity_type, key, owner, context, amount, currency
    for (
        reason,
        entity_type,
        key,
        amount,
        currency,
        n,
        hours,
        first,
        last,
        opportunity,
        project,
        user,
        owner,
        sample,
    ) in conn.execute(sql.GROUP_PROBLEMS).fetchall():
        context = {
            "items": n,
            "hours": hours,
            "first_date": first,
            "last_date": last,
            "opportunity_id": opportunity,
            "project_psa_id": project,
            "user_psa_id": user if entity_type == "user_assignment" else None,
            "example": sample,
        }
        yield reason, entity_type, key, owner, context, amount, currency


def _exceptions(
    conn: psycopg.Connection[Any], run: RunInfo
) -> tuple[int, int, int, dict[str, int]]:
    """Raise / refresh one exception per problem; resolve those whose problem is gone."""
    failing: dict[tuple[str, str], list[str]] = {}
    raised = seen = 0
    for reason in ENTRY_REASONS:
        for entity_type in ("time_entry", "expense"):
            failing[(reason, entity_type)] = []
    for reason, entity_type in GROUP_REASONS:
        failing[(reason, entity_type)] = []
    for reason, entity_type, key, owner, context, amount, currency in _problems(conn):
        cur = None if currency is None else str(currency).strip()
        out = exceptions_queue.raise_exception(
            conn,
            reason,
            entity_type,
            key,
            owner,
            context,
            run,
            amount_at_stake=_at_stake(amount, cur),
            currency=cur,
        )
        failing[(reason, entity_type)].append(key)
        raised += int(out.created)
        seen += 1
    resolved = 0
    for (reason, entity_type), keys in failing.items():
        resolved += len(exceptions_queue.resolve_missing(conn, reason, entity_type, keys, run))
    counts = {f"{r}/{e}": len(k) for (r, e), k in failing.items() if k}
    return seen, raised, resolved, counts


def _unchanged(
    conn: psycopg.Connection[Any],
    run: RunInfo,
    run_id: str,
    as_of: dt.date,
    last: Any,
    fingerprint: str,
    started: float,
    source: audit.Source,
) -> ReconcileResult:
    """Nothing changed since the last run: record this run, recompute nothing."""
    # recon.item_totals is the last run's, still true: only the state summary is read
    total, by_state, approved, reasons, _items_part = _summary(conn)
    result = ReconcileResult(
        run_id=run_id,
        as_of=as_of.isoformat(),
        items=total,
        by_state=by_state,
        approved_by_state=approved,
        on_hold_by_reason=reasons,
        inserted=0,
        updated=0,
        deleted=0,
        exceptions_open=int(last.get("exceptions_open", 0)),
        exceptions_raised=0,
        exceptions_resolved=0,
        problems=dict(last.get("problems") or {}),
        seconds=round(time.perf_counter() - started, 3),
        skipped=True,
    )
    summary = {**result.as_dict(), "inputs_fingerprint": fingerprint}
    conn.execute(
        "UPDATE recon.runs SET finished_at = clock_timestamp(), result = %s::jsonb "
        "WHERE run_id = %s",
        (json.dumps(summary), run_id),
    )
    audit.record(
        conn,
        actor=str(getattr(run, "actor", None) or "unknown"),
        action="reconcile.run",
        entity_type="reconciliation",
        entity_id=run_id,
        after={"as_of": summary["as_of"], "items": total, "skipped": True},
        source=source,
        detail={"reason": "no input changed since the last reconciliation"},
    )
    return result


class _Clock:
    """Seconds per step of a run (``laps``), for the result and the benchmark."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps[step] = round(now - self._last, 3)
        self._last = now


def _fingerprint(as_of: dt.date, parts: list[str]) -> str:
    """``sql.FINGERPRINT`` from its parts (same value: md5 of the as-of date and the parts)."""
    return hashlib.md5("|".join([as_of.isoformat(), *parts]).encode()).hexdigest()  # noqa: S324 - a change detector, not security


def _parallel_workers(requested: int | None, own_transaction: bool, entries: int) -> int:
    """How many workers classify the items: 1 (this connection) or one per shard."""
    if not own_transaction:
        # workers could not see the caller's uncommitted writes
        return 1
    if requested is not None:
        return max(1, min(int(requested), sql.SHARDS))
    if entries < PARALLEL_MIN_ENTRIES:
        return 1
    return max(1, min(os.cpu_count() or 1, sql.SHARDS))


def _connect_kwargs(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """How to open another connection to the same database as the same user."""
    kwargs: dict[str, Any] = dict(conn.info.get_parameters())
    if conn.info.password:
        kwargs["password"] = conn.info.password
    return kwargs


def _build_shard(
    conn: psycopg.Connection[Any], table: str, shard: int, params: dict[str, Any]
) -> int:
    """One shard's new partition, in ``conn``'s transaction: created, filled, then indexed."""
    conn.execute(sql.SHARD_TABLE.replace("{table}", table).replace("%(shard)s", str(int(shard))))
    filled = conn.execute(
        sql.SHARD_FILL.replace("{table}", table), {**params, "shards": [shard]}
    ).rowcount
    _index_shard(conn, table)
    return int(filled)


def _build_shard_summed(
    conn: psycopg.Connection[Any], table: str, shard: int, params: dict[str, Any]
) -> tuple[int, list[SummaryRow]]:
    """``_build_shard``, summing the partition up as it is written (``sql.SUMMARY``: into the
    worker's totals table, read back by state for the run's summary)."""
    conn.execute(sql.SHARD_TABLE.replace("{table}", table).replace("%(shard)s", str(int(shard))))
    conn.execute(sql.TOTALS_TABLE.replace("{table}", table))
    conn.execute(sql.SHARD_FILL_SUMMARY.replace("{table}", table), {**params, "shards": [shard]})
    ((xid,),) = conn.execute(sql.OWN_XID).fetchall()
    own_xid = int(xid)  # every row's version
    _index_shard(conn, table)
    rows = conn.execute(sql.STATE_SUMMARY_OF_WORK.replace("{table}", table)).fetchall()
    return sum(r[4] for r in rows), [(*r[:7], own_xid) for r in rows]


def _index_shard(conn: psycopg.Connection[Any], table: str) -> None:
    for (statement,) in conn.execute(sql.SHARD_INDEXES.replace("{table}", table)).fetchall():
        conn.execute(statement)


def _shard_worker(
    connect: dict[str, Any],
    snapshot: str,
    shard: int,
    table: str,
    first: bool,
    params: dict[str, Any],
) -> tuple[int, list[SummaryRow] | None]:
    """One parallel worker: its own connection, reading the run's snapshot, commits its shard's
    table (the new partition the first time, else the shard's differences) and sums up its
    shard as the run will leave it. Returns the table's row count and the summary rows."""
    import psycopg
    from psycopg import IsolationLevel
    from psycopg import sql as pgsql

    with psycopg.connect(**connect) as worker:
        worker.isolation_level = IsolationLevel.REPEATABLE_READ
        # the first statement of its transaction: see exactly what the run's transaction saw
        worker.execute(pgsql.SQL("SET TRANSACTION SNAPSHOT {}").format(pgsql.Literal(snapshot)))
        worker.execute("SET LOCAL work_mem = '512MB'")
        worker.execute("SET LOCAL maintenance_work_mem = '256MB'")
        # the other workers have the other cores: no parallel index build on top
        worker.execute("SET LOCAL max_parallel_maintenance_workers = 0")
        # the run reads the table in its own transaction: nothing waits for this commit
        worker.execute("SET LOCAL synchronous_commit = off")
        worker.execute(_HASH_JOINS_ONLY)
        worker.execute(sql.CREATE_LOOKUPS)
        summary = None
        if first:
            # the new partition is final: its summary is the run's, for this shard
            rows, summary = _build_shard_summed(worker, table, shard, params)
        else:
            rows = worker.execute(
                sql.SHARD_DIFF.replace("{table}", table), {**params, "shards": [shard]}
            ).rowcount
            worker.execute(
                sql.SHARD_SUMMARY_AFTER_DIFF.replace("{table}", table),
                {"shard": shard, "as_of": params["as_of"]},
            )
            summary = worker.execute(sql.STATE_SUMMARY_OF_WORK.replace("{table}", table)).fetchall()
        worker.commit()
    return rows, summary


def _shards_in_parallel(
    conn: psycopg.Connection[Any], snapshot: str, workers: int, first: bool, params: dict[str, Any]
) -> tuple[list[str], list[tuple[int, list[SummaryRow] | None]]]:
    """Every shard at once, one worker (connection, core) each, all reading the run's snapshot.

    Returns the workers' tables (``recon_work.r<tag>_<shard>``, committed: only this run reads
    them; the first reconciliation's become recon.items' partitions, a later run's differences
    are dropped once read; a failed run's are dropped by the next run) and what each worker
    returned (``_shard_worker``).
    A worker's error fails the run (its transaction rolls back).
    """
    from concurrent.futures import ThreadPoolExecutor

    tables = _shard_tables()
    connect = _connect_kwargs(conn)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
        futures = [
            pool.submit(_shard_worker, connect, snapshot, shard, table, first, params)
            for shard, table in enumerate(tables)
        ]
        done = [future.result() for future in futures]
    return tables, done


def _shard_tables() -> list[str]:
    """Names for this run's shard tables (the run's own: schema constant, hex tag, shard)."""
    tag = uuid.uuid4().hex[:12]
    return [f"{sql.WORK_SCHEMA}.r{tag}_{shard}" for shard in range(sql.SHARDS)]


def _swap_in(conn: psycopg.Connection[Any], tables: list[str]) -> None:
    """The new shard tables become recon.items' partitions, in the run's transaction."""
    for shard, table in enumerate(tables):
        conn.execute(
            sql.SHARD_SWAP.replace("{table}", table)
            .replace("{name}", table.split(".", 1)[1])
            .replace("{shard}", str(shard))
        )


def _union(tables: list[str]) -> str:
    # the names are the run's own (see _shard_tables)
    return " UNION ALL ".join(f"SELECT * FROM {table}" for table in tables)  # noqa: S608


def _drop_work_tables(conn: psycopg.Connection[Any]) -> None:
    """Drop the parallel workers' tables: this run's once read, a failed earlier run's at the
    start (runs never overlap: advisory lock)."""
    from psycopg import sql as pgsql

    for (name,) in conn.execute(sql.WORK_TABLES).fetchall():
        conn.execute(
            pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(sql.WORK_SCHEMA, name))
        )


def _entries(parts: list[str]) -> int:
    """Time entries and expenses (rows, live or not) from the fingerprint's parts."""
    return sum(
        int(parts[sql.INPUT_TABLES.index(t)].split(":", 1)[0])
        for t in ("core.time_entries", "core.expenses")
    )


def run_reconcile(
    conn: psycopg.Connection[Any],
    run: RunInfo,
    *,
    as_of: dt.date | None = None,
    workers: int | None = None,
) -> ReconcileResult:
    """Reconcile everything in one transaction on ``conn`` (see the module doc).

    ``run``: a :class:`erpsync.sync.spec.RunInfo` (or anything with ``run_id``/``actor``);
    ``as_of``: the date due dates, WIP age and leakage are measured against (default: today);
    ``workers``: how many connections classify the items at once (default: one per shard of
    ``sql.SHARDS``, at most one per core, from ``PARALLEL_MIN_ENTRIES`` time entries and
    expenses on; always 1 inside a caller's transaction). The result does not depend on it.
    Two reconciliations never interleave (transaction-scoped advisory lock).
    """
    started = time.perf_counter()
    as_of = as_of or dt.date.today()
    run_id = str(getattr(run, "run_id", run))
    actor = str(getattr(run, "actor", None) or "unknown")
    source = run.audit_source() if hasattr(run, "audit_source") else audit.Source(run_id=run_id)
    params = {"as_of": as_of, "run_id": run_id, "shards": list(range(sql.SHARDS))}
    # our own transaction (not a savepoint in the caller's): see synchronous_commit below
    from psycopg import pq

    own_transaction = conn.info.transaction_status == pq.TransactionStatus.IDLE
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_KEY,))
        conn.execute("SET LOCAL work_mem = '512MB'")
        if own_transaction:
            # The result is recomputable from the warehouse: if the server crashes within a
            # moment of the commit, losing this transaction costs only the next run redoing it
            # (its audit row, runs row and exceptions go with it, all in this transaction, and
            # nothing outside the database acts on them in that moment). So this commit does
            # not wait for the WAL flush. SET LOCAL: this transaction only, and only when it is
            # ours - inside a caller's transaction the caller's own writes decide durability.
            conn.execute("SET LOCAL synchronous_commit = off")
        conn.execute(
            """INSERT INTO recon.runs (run_id, as_of) VALUES (%s, %s)
               ON CONFLICT (run_id) DO UPDATE SET as_of = EXCLUDED.as_of,
                   started_at = now(), finished_at = NULL""",
            (run_id, as_of),
        )
        # the inputs' fingerprint and, for parallel workers, the snapshot it was read in
        clock = _Clock()
        ((parts, snapshot),) = conn.execute(
            sql.FINGERPRINT_PARTS_AND_SNAPSHOT, {"export": own_transaction}
        ).fetchall()
        parts = list(parts)
        fingerprint = _fingerprint(as_of, parts)
        last = conn.execute(sql.LAST_FINGERPRINT).fetchone()
        if last is not None and last[0] == fingerprint:
            return _unchanged(conn, run, run_id, as_of, last[1], fingerprint, started, source)
        ((first,),) = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM recon.items)").fetchall()
        n_workers = _parallel_workers(workers, own_transaction, _entries(parts))
        conn.execute(_HASH_JOINS_ONLY)
        _drop_work_tables(conn)
        shard_summaries = None  # a parallel run's, from its workers
        clock.lap("inputs")
        if first:
            # the first reconciliation: each shard's partition built whole, then swapped in
            if n_workers > 1:
                tables, done = _shards_in_parallel(conn, snapshot, n_workers, True, params)
                rows = [n for n, _summary_rows in done]
                shard_summaries = [r for _n, rows_k in done for r in rows_k or ()]
            else:
                conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
                conn.execute(sql.CREATE_LOOKUPS)
                tables = _shard_tables()
                rows = [_build_shard(conn, t, k, params) for k, t in enumerate(tables)]
            clock.lap("classify")
            _swap_in(conn, tables)
            inserted, updated, deleted = sum(rows), 0, 0
        else:
            conn.execute(sql.CREATE_STAGE)
            if n_workers > 1:
                tables, done = _shards_in_parallel(conn, snapshot, n_workers, False, params)
                conn.execute(sql.FILL_STAGE_FROM.replace("{tables}", _union(tables)))
                shard_summaries = [r for _n, rows_k in done for r in rows_k or ()]
            else:
                conn.execute(sql.CREATE_LOOKUPS)
                conn.execute(sql.FILL_STAGE, params)
            clock.lap("classify")
            # a few changes are applied through the key index, many by hash joins: the
            # planner decides, with the stage's real size, and knowing that recon.items' pages
            # are in memory by now (read a moment ago), not on a disk that seeks
            conn.execute("ANALYZE pg_temp.recon_stage")
            conn.execute("SET LOCAL enable_nestloop = on")
            conn.execute("SET LOCAL random_page_cost = 1.1")
            updated = conn.execute(sql.UPDATE_CHANGED, params).rowcount
            inserted = conn.execute(sql.INSERT_NEW, params).rowcount
            deleted = conn.execute(sql.DELETE_GONE).rowcount
        if shard_summaries is not None:
            # the billing cockpit's totals from the workers' sums, before their tables go
            _store_totals(conn, as_of, tables)
        _drop_work_tables(conn)
        clock.lap("apply")
        seen, raised, resolved, problems = _exceptions(conn, run)
        clock.lap("exceptions")
        written_xid = None
        if shard_summaries is not None and not first and (updated or inserted):
            ((xid,),) = conn.execute(sql.OWN_XID).fetchall()
            written_xid = int(xid)
        state_rows = shard_summaries
        if state_rows is None:
            # a serial run: the cockpit's totals and the run's own summary in one pass
            state_rows = _store_totals(conn, as_of, None)
        total, by_state, approved, reasons, items_part = _summary(conn, state_rows, written_xid)
        clock.lap("summary")
        conn.execute(sql.DROP_TEMP)
        result = ReconcileResult(
            run_id=run_id,
            as_of=as_of.isoformat(),
            items=total,
            by_state=by_state,
            approved_by_state=approved,
            on_hold_by_reason=reasons,
            inserted=inserted,
            updated=updated,
            deleted=deleted,
            exceptions_open=seen,
            exceptions_raised=raised,
            exceptions_resolved=resolved,
            problems=problems,
            seconds=round(time.perf_counter() - started, 3),
            timings=clock.laps,
            workers=n_workers,
        )
        summary = result.as_dict()
        # the run's own outputs, as they are now (the inputs' parts stay as read at the start)
        parts[sql.INPUT_TABLES.index("recon.items")] = items_part
        ((exceptions_part,),) = conn.execute(sql.EXCEPTIONS_PART).fetchall()
        parts[sql.INPUT_TABLES.index("ops.exceptions")] = exceptions_part
        summary["inputs_fingerprint"] = _fingerprint(as_of, parts)
        conn.execute(
            "UPDATE recon.runs SET finished_at = clock_timestamp(), result = %s::jsonb "
            "WHERE run_id = %s",
            (json.dumps(summary), run_id),
        )
        audit.record(
            conn,
            actor=actor,
            action="reconcile.run",
            entity_type="reconciliation",
            entity_id=run_id,
            after={
                "as_of": summary["as_of"],
                "items": total,
                "inserted": inserted,
                "updated": updated,
                "deleted": deleted,
                "by_state": {s: v["items"] for s, v in by_state.items()},
            },
            source=source,
            detail={
                "exceptions_raised": raised,
                "exceptions_resolved": resolved,
                "exceptions_open": seen,
            },
        )
    return result
