"""The outbox relay: sends the pending ``ops.outbox`` rows of one target system, once each.

Each row is claimed in its own transaction with ``SELECT ... FOR UPDATE SKIP LOCKED`` and the
lock is held while the row is delivered, so two relays running at once (an Airflow retry racing
a zombie, two DAG runs) never send one row twice: the second skips it. The outcome (target id,
what was done) is written to the row, to ``core.id_map`` and to the audit trail in that same
transaction. If the process dies mid-delivery the transaction rolls back and the row stays
``pending``; the next attempt starts with the lookup by stable external reference
(``targets.py``), so a write that committed at the vendor before the connection dropped is found
and never created a second time.

A failed delivery leaves the row ``pending`` with ``attempts + 1`` and the error, scrubbed of
secrets, in ``last_error``; after ``MAX_ATTEMPTS`` (or at once when the data itself is the
problem) the row is ``failed`` and an exception is opened for a person.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from erpsync import audit, exceptions_queue
from erpsync.connectors.ids import SYSTEM_CONN_IDS
from erpsync.redaction import is_secret_name, scrub
from erpsync.writeback import targets

if TYPE_CHECKING:
    import psycopg

    from erpsync.sync.spec import RunInfo

__all__ = ["MAX_ATTEMPTS", "RelayStats", "TargetClients", "run_outbox", "scrub"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
CONN_IDS: dict[str, str] = dict(SYSTEM_CONN_IDS)


@dataclass
class RelayStats:
    target_system: str
    attempted: int = 0
    sent: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    absent: int = 0  # a block/archive of a record the target never had
    failed: int = 0  # rows that failed this time (left pending, or failed for good)
    left_pending: int = 0  # of those, rows to retry (transient failure, attempts left)
    writes: int = 0  # create/patch requests that succeeded
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class TargetClients:
    """The vendor clients the relay writes through, built lazily from Airflow connections, plus a
    per-relay index of PSA clients by name (Harvest has no lookup by name)."""

    def __init__(self, conn_ids: dict[str, str] | None = None) -> None:
        self.conn_ids = {**CONN_IDS, **(conn_ids or {})}
        self._erp = None
        self._psa = None
        self._psa_by_name: dict[str, dict] | None = None
        self._secrets: tuple[str, ...] | None = None
        self._assignments: dict[str, dict[str, dict]] = {}
        self._erp_codes: dict[tuple[str, str], str | None] = {}

    @property
    def erp(self):
        if self._erp is None:
            from erpsync.connectors.business_central import BusinessCentralClient

            self._erp = BusinessCentralClient(conn_id=self.conn_ids["erp"])
        return self._erp

    @property
    def psa(self):
        if self._psa is None:
            from erpsync.connectors.harvest import HarvestClient

            self._psa = HarvestClient(conn_id=self.conn_ids["psa"])
        return self._psa

    def psa_client_by_name(self, name: str) -> dict | None:
        if self._psa_by_name is None:
            index: dict[str, dict] = {}
            for page in self.psa.iter_pages("clients"):
                for item in page:
                    index.setdefault(_name_key(item.get("name")), item)
            self._psa_by_name = index
        return self._psa_by_name.get(_name_key(name))

    def remember_psa_client(self, body: dict) -> None:
        if self._psa_by_name is not None and body:
            self._psa_by_name[_name_key(body.get("name"))] = body

    def forget_psa_clients(self) -> None:
        self._psa_by_name = None

    def erp_code_id(self, entity: str, code: str) -> str | None:
        """The id of the Business Central record with ``code`` in ``entity`` (``paymentTerms``,
        ``taxAreas``): ``GET {entity}?$filter=code eq '<code>'``, asked once per relay run;
        None when the tenant has no such code."""
        key = (entity, code)
        if key not in self._erp_codes:
            from erpsync.connectors.business_central import odata_quote

            found = self.erp.find_one(entity, f"code eq {odata_quote(code)}")
            self._erp_codes[key] = None if found is None else str(found["id"])
        return self._erp_codes[key]

    def psa_user_assignments(self, project_id: str) -> dict[str, dict]:
        """The user assignments of a PSA project by user id (read once per relay run)."""
        key = str(project_id)
        if key not in self._assignments:
            found: dict[str, dict] = {}
            for page in self.psa.iter_pages(f"projects/{key}/user_assignments"):
                for item in page:
                    found[str((item.get("user") or {}).get("id"))] = item
            self._assignments[key] = found
        return self._assignments[key]

    def secrets(self) -> tuple[str, ...]:
        """Credential values of the connections in use, for scrubbing error text."""
        if self._secrets is None:
            self._secrets = self._collect_secrets()
        return self._secrets

    def _collect_secrets(self) -> tuple[str, ...]:
        found: list[str] = []
        try:
            from airflow.sdk import BaseHook

            for cid in self.conn_ids.values():
                try:
                    conn = BaseHook.get_connection(cid)
                except Exception:  # noqa: BLE001 - an unknown connection has no secrets
                    log.debug("connection %s not found while collecting secrets", cid)
                    continue
                if conn.password:
                    found.append(conn.password)
                for key, value in (conn.extra_dejson or {}).items():
                    if isinstance(value, str) and is_secret_name(key):
                        found.append(value)
        except ImportError:
            log.debug("airflow not importable; no connection secrets to scrub")
        return tuple(found)


def _name_key(name: Any) -> str:
    return " ".join(str(name or "").split()).casefold()


_CLAIM = """
SELECT outbox_id, operation, entity_type, entity_key, canonical_id, external_ref, payload,
       payload_hash, attempts
  FROM ops.outbox
 WHERE target_system = %s AND status = 'pending' AND outbox_id > %s
 ORDER BY outbox_id
 LIMIT 1
 FOR UPDATE SKIP LOCKED
"""


def _permanent(exc: Exception) -> bool:
    """Errors a retry cannot fix: bad data or a refused request (not auth, quota, 409/429)."""
    from erpsync.connectors import errors

    if isinstance(exc, targets.DeliveryError):
        return True
    if isinstance(exc, errors.AuthError | errors.QuotaExhausted):
        return False
    if isinstance(exc, errors.VendorError):
        return exc.status in (400, 404, 405, 410, 413, 422)
    return False


def _update_id_map(conn, op: targets.Operation, row: dict, target_id: str | None) -> str | None:
    """Record the target id on the entity's canonical id (None = fine, else why not)."""
    if op.id_map_column is None or row["canonical_id"] is None or target_id is None:
        return None
    column = op.id_map_column
    from psycopg import errors as pg_errors
    from psycopg import sql

    try:
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "UPDATE core.id_map SET {col} = %s, updated_at = now() "
                    "WHERE canonical_id = %s AND {col} IS DISTINCT FROM %s"
                ).format(col=sql.Identifier(column)),
                (target_id, row["canonical_id"], target_id),
            )
    except pg_errors.UniqueViolation:
        return f"{column} {target_id} already belongs to another {op.entity_type} in core.id_map"
    return None


def _record_erp_number(conn, op: targets.Operation, row: dict, delivery) -> None:
    """The ERP's own number of the record (a customer's No.), from its answer, on the id map:
    invoices and exports name the customer by it, also when erpsync created the customer."""
    number = getattr(delivery, "target_number", None)
    if op.id_map_column != "erp_id" or row["canonical_id"] is None or not number:
        return
    conn.execute(
        """UPDATE core.id_map SET erp_number = %s, updated_at = now()
            WHERE canonical_id = %s AND erp_number IS DISTINCT FROM %s""",
        (number, row["canonical_id"], number),
    )


def _deliver_one(conn, row: dict, clients: TargetClients, run: Any, stats: RelayStats) -> None:
    op = targets.OPERATIONS[row["operation"]]
    secrets = clients.secrets()
    try:
        with conn.transaction():  # a savepoint: a database error inside rolls back cleanly
            delivery = op.deliver(conn, row, clients)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row
        attempts = row["attempts"] + 1
        message = scrub(f"{type(exc).__name__}: {exc}", secrets)
        permanent = _permanent(exc)
        status = "failed" if permanent or attempts >= MAX_ATTEMPTS else "pending"
        conn.execute(
            """UPDATE ops.outbox SET status = %s, attempts = %s, last_error = %s,
                      updated_at = now(), last_run_id = %s
                WHERE outbox_id = %s""",
            (status, attempts, message, run.run_id, row["outbox_id"]),
        )
        if status == "failed":
            exceptions_queue.raise_exception(
                conn,
                exceptions_queue.WRITE_BACK_FAILED,
                op.entity_type,
                f"{op.name}:{row['entity_key']}",
                targets.FINANCE_OPS,
                {"operation": op.name, "outbox_id": row["outbox_id"], "error": message},
                run,
            )
        stats.failed += 1
        if status == "pending":
            stats.left_pending += 1
        stats.errors.append(f"outbox {row['outbox_id']} ({op.name}): {message}")
        log.warning("outbox row %s (%s) failed: %s", row["outbox_id"], op.name, message)
        return
    id_map_problem = _update_id_map(conn, op, row, delivery.target_id)
    if not id_map_problem:
        _record_erp_number(conn, op, row, delivery)
    result = {"action": delivery.action, **delivery.detail}
    if id_map_problem:
        result["id_map"] = id_map_problem
    conn.execute(
        """UPDATE ops.outbox SET status = 'sent', attempts = attempts + 1, target_id = %s,
                  result = %s::jsonb, last_error = NULL, sent_at = now(), updated_at = now(),
                  last_run_id = %s
            WHERE outbox_id = %s""",
        (delivery.target_id, json.dumps(result, default=str), run.run_id, row["outbox_id"]),
    )
    if delivery.writes:
        audit.record(
            conn,
            actor=run.actor,
            action=f"writeback.{op.name}.{delivery.action}",
            entity_type=op.entity_type,
            entity_id=row["entity_key"],
            before=None,
            after=row["payload"],
            source=run.audit_source(),
            detail={
                "outbox_id": row["outbox_id"],
                "target_system": op.target_system,
                "target_id": delivery.target_id,
                **delivery.detail,
            },
        )
    stats.sent += 1
    stats.writes += delivery.writes
    setattr(stats, delivery.action, getattr(stats, delivery.action) + 1)


def run_outbox(
    conn: psycopg.Connection[Any],
    target_system: str,
    *,
    run: RunInfo,
    limit: int | None = None,
    clients: TargetClients | None = None,
    conn_ids: dict[str, str] | None = None,
) -> RelayStats:
    """Send the pending outbox rows of ``target_system`` (one pass, oldest first).

    ``conn``: an open warehouse connection in autocommit mode (each row is claimed, delivered
    and recorded in a transaction of its own); the caller opens and closes it."""
    if target_system not in CONN_IDS:
        raise ValueError(f"unknown target system {target_system!r}")
    if not conn.autocommit:
        raise ValueError("run_outbox needs an autocommit connection (one transaction per row)")
    clients = clients or TargetClients(conn_ids)
    stats = RelayStats(target_system)
    last_id = 0
    while limit is None or stats.attempted < limit:
        with conn.transaction():
            cur = conn.execute(_CLAIM, (target_system, last_id))
            found = cur.fetchone()
            if found is None:
                break
            row = dict(zip([c.name for c in cur.description or ()], found, strict=True))
            last_id = row["outbox_id"]
            stats.attempted += 1
            _deliver_one(conn, row, clients, run, stats)
    log.info(
        "outbox relay %s: %s",
        target_system,
        {k: v for k, v in stats.as_dict().items() if k != "errors"},
    )
    return stats
