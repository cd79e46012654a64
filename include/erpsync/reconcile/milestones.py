"""Milestone acceptance from the CRM into ``core.contract_milestones`` (status, accepted_at).

The client's acceptance of a fixed-fee milestone is recorded in the CRM, on the milestone's
``Contract_Milestone__c`` record (``Status__c`` Accepted, ``Accepted_Date__c``): Harvest has
no milestone resource (audit H16-H18). :func:`pull_crm_milestones` syncs those
records into ``core.crm_milestones`` through the ordinary sync engine (SOQL incremental on
``SystemModstamp`` with queryAll, deletions from the ``Contract_Milestone__c/deleted`` feed);
:func:`refresh_milestones` then carries their acceptance onto the milestones of current
contract versions, in the warehouse only.

A contract version's milestone is matched to its CRM record by ``crm_milestone_id`` (set by
project setup), else by its opportunity and name (case and spacing ignored), and the id is
then remembered. ``Accepted`` counts as accepted; ``Invoiced`` only for the contract version's
milestone that erpsync billed (``billing.billed_items``), so a change order's new version never
bills a milestone a second time; ``Planned`` or a deleted record is open. Only rows whose
status, acceptance time or CRM id differ are written; each acceptance (or reopening) is audited
in the caller's transaction.

Milestones of contracts set up outside erpsync (adopted) have no warehouse rows and are not
created here; CRM milestones no contract row matched come back as ``unmatched``.

:func:`accepted_unbilled` lists what the milestone-billing DAG bills: the accepted milestones
of current contract versions that are neither billed nor in an active batch.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from erpsync import audit
from erpsync.models.billing_terms import milestone_item_key_sql

# ruff: noqa: S608 - the milestone key is a constant expression; values are bound

if TYPE_CHECKING:
    import psycopg

    from erpsync.connectors.salesforce import SalesforceClient
    from erpsync.sync.spec import RunInfo, SyncStats

__all__ = [
    "ACCEPTED_UNBILLED_SQL",
    "accepted_unbilled",
    "pull_crm_milestones",
    "refresh_milestones",
]

#: Item keys (``milestone:<opportunity>:<version>:<seq>``, as recon.items spells them) of the
#: accepted milestones of each contract's current version, not billed and in no active batch.
_KEY = milestone_item_key_sql("m")
ACCEPTED_UNBILLED_SQL = f"""
SELECT {_KEY} AS item_key
  FROM core.contract_milestones m
 WHERE m.status = 'accepted'
   AND m.version = (SELECT max(c.version) FROM core.contracts c
                     WHERE c.opportunity_id = m.opportunity_id)
   AND NOT EXISTS (SELECT 1 FROM billing.billed_items b WHERE b.item_key = {_KEY})
   AND NOT EXISTS (SELECT 1 FROM billing.batch_items bi
                    WHERE bi.active AND bi.item_key = {_KEY})
 ORDER BY 1
"""


def _key(name: Any) -> str:
    return " ".join(str(name or "").split()).casefold()


def _accepted_at(accepted_date: dt.date | None, modstamp: dt.datetime | None) -> dt.datetime | None:
    """The CRM records the acceptance day; the warehouse keeps a timestamp (midnight UTC of
    that day, or the record's modification stamp when the day is empty)."""
    if accepted_date is not None:
        return dt.datetime.combine(accepted_date, dt.time(0), tzinfo=dt.UTC)
    return modstamp


def pull_crm_milestones(
    conn: psycopg.Connection[Any],
    crm: SalesforceClient,
    *,
    run: RunInfo,
    full: bool | None = None,
) -> SyncStats:
    """Sync ``Contract_Milestone__c`` into ``core.crm_milestones`` (incremental after the first
    run) on ``conn`` with the CRM client ``crm``; both opened by the caller. Returns the
    engine's :class:`~erpsync.sync.spec.SyncStats`."""
    from erpsync.sync import engine, specs

    return engine.run_entity_sync(conn, specs.CONTRACT_MILESTONES, run=run, client=crm, full=full)


def accepted_unbilled(conn: psycopg.Connection[Any]) -> list[str]:
    """The item keys of the accepted milestones still to bill (:data:`ACCEPTED_UNBILLED_SQL`)."""
    return [str(row[0]) for row in conn.execute(ACCEPTED_UNBILLED_SQL).fetchall()]


def refresh_milestones(conn: psycopg.Connection[Any], run: RunInfo) -> dict[str, int]:
    """Carry CRM acceptance (``core.crm_milestones``) onto the milestones of current contracts.

    Returns counts: read (live CRM milestones), matched, updated, accepted (newly), reopened,
    unmatched (CRM milestones of no current contract version).
    """
    crm: dict[str, dict[str, Any]] = {}
    by_name: dict[tuple[str, str], dict[str, Any]] = {}
    for cid, opp, name, status, accepted_date, modstamp in conn.execute(
        """SELECT crm_milestone_id, opportunity_id, name, status, accepted_date, source_modstamp
             FROM core.crm_milestones WHERE deleted_at IS NULL"""
    ).fetchall():
        rec = {
            "id": cid,
            "status": status,
            "accepted_at": _accepted_at(accepted_date, modstamp),
            "name": name,
        }
        crm[str(cid)] = rec
        by_name.setdefault((str(opp), _key(name)), rec)
    stats = {"read": len(crm), "matched": 0, "updated": 0, "accepted": 0, "reopened": 0}
    actor = run.actor or "unknown"
    source = run.audit_source()
    matched_ids: set[str] = set()
    with conn.transaction():
        rows = conn.execute(
            f"""SELECT m.opportunity_id, m.version, m.seq, m.name, m.crm_milestone_id, m.status,
                      m.accepted_at,
                      EXISTS (SELECT 1 FROM billing.billed_items b
                               WHERE b.item_key = {_KEY})
                 FROM core.contract_milestones m
                 JOIN core.contracts c
                   ON c.opportunity_id = m.opportunity_id AND c.version = m.version
                WHERE c.status <> 'superseded'
                ORDER BY 1, 2, 3
                  FOR UPDATE OF m"""
        ).fetchall()
        for opp, version, seq, name, crm_id, status, accepted_at, billed in rows:
            found = crm.get(str(crm_id)) if crm_id else None
            if found is None:
                found = by_name.get((str(opp), _key(name)))
            if found is None:
                new_status, new_accepted, new_id = "open", None, crm_id  # deleted in the CRM
            else:
                stats["matched"] += 1
                matched_ids.add(str(found["id"]))
                accepted = found["status"] == "Accepted" or (
                    found["status"] == "Invoiced" and billed
                )
                new_status = "accepted" if accepted else "open"
                new_accepted = found["accepted_at"] if new_status == "accepted" else None
                new_id = str(found["id"])
            if (new_status, new_accepted, new_id) == (status, accepted_at, crm_id):
                continue
            conn.execute(
                """UPDATE core.contract_milestones
                      SET status = %s, accepted_at = %s, crm_milestone_id = %s,
                          status_updated_at = now()
                    WHERE opportunity_id = %s AND version = %s AND seq = %s""",
                (new_status, new_accepted, new_id, opp, version, seq),
            )
            stats["updated"] += 1
            if new_status != status:
                stats["accepted" if new_status == "accepted" else "reopened"] += 1
                audit.record(
                    conn,
                    actor=actor,
                    action=(
                        "milestone.accepted" if new_status == "accepted" else "milestone.reopened"
                    ),
                    entity_type="milestone",
                    entity_id=f"{opp}:{version}:{seq}",
                    before={"status": status},
                    after={"status": new_status, "accepted_at": new_accepted},
                    source=source,
                    detail={"crm_milestone_id": new_id, "name": name},
                )
    stats["unmatched"] = len(set(crm) - matched_ids)
    return stats
