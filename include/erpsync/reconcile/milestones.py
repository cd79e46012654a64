"""Milestone acceptance from the PSA into ``core.contract_milestones`` (status, accepted_at).

The PSA is where the client's acceptance is recorded (``GET /v2/milestones``). A warehouse
milestone is matched to the PSA's by ``psa_milestone_id`` when known, else by its contract's
PSA project and its name (case and spacing ignored, as project setup creates them), and the PSA
id is then remembered. Only rows whose status, acceptance time or PSA id differ are written;
each acceptance (or reopening) is audited in the caller's transaction.

Milestones of contracts set up outside erpsync (adopted) have no warehouse rows and are not
created here: they were billed the way they were set up; the count comes back as
``unmatched``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from erpsync import audit

__all__ = ["refresh_milestones"]


def _key(name: Any) -> str:
    return " ".join(str(name or "").split()).casefold()


def _ts(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def refresh_milestones(conn, run, psa_client) -> dict[str, int]:
    """Read every PSA milestone and update the warehouse milestones of current contracts.

    ``psa_client``: an :class:`erpsync.connectors.harvest.HarvestClient` (anything with
    ``iter_pages("milestones")``). Returns counts: read, matched, updated, accepted (newly),
    reopened, unmatched.
    """
    psa: dict[str, dict[str, Any]] = {}
    by_name: dict[tuple[str, str], dict[str, Any]] = {}
    for page in psa_client.iter_pages("milestones"):
        for m in page:
            psa[str(m["id"])] = m
            project = str((m.get("project") or {}).get("id") or m.get("project_id") or "")
            by_name.setdefault((project, _key(m.get("name"))), m)
    stats = {"read": len(psa), "matched": 0, "updated": 0, "accepted": 0, "reopened": 0}
    run_id = str(getattr(run, "run_id", run))
    actor = str(getattr(run, "actor", None) or "unknown")
    source = run.audit_source() if hasattr(run, "audit_source") else audit.Source(run_id=run_id)
    matched_ids: set[str] = set()
    with conn.transaction():
        rows = conn.execute(
            """SELECT m.opportunity_id, m.version, m.seq, m.name, m.psa_milestone_id, m.status,
                      m.accepted_at, c.psa_project_id
                 FROM core.contract_milestones m
                 JOIN core.contracts c
                   ON c.opportunity_id = m.opportunity_id AND c.version = m.version
                WHERE c.status <> 'superseded'
                ORDER BY 1, 2, 3
                  FOR UPDATE OF m"""
        ).fetchall()
        for opp, version, seq, name, psa_id, status, accepted_at, project in rows:
            found = psa.get(str(psa_id)) if psa_id else None
            if found is None:
                found = by_name.get((str(project or ""), _key(name)))
            if found is None:
                continue
            stats["matched"] += 1
            matched_ids.add(str(found["id"]))
            new_status = "accepted" if found.get("status") == "accepted" else "open"
            new_accepted = _ts(found.get("accepted_at")) if new_status == "accepted" else None
            new_psa_id = str(found["id"])
            if (new_status, new_accepted, new_psa_id) == (status, accepted_at, psa_id):
                continue
            conn.execute(
                """UPDATE core.contract_milestones
                      SET status = %s, accepted_at = %s, psa_milestone_id = %s,
                          status_updated_at = now()
                    WHERE opportunity_id = %s AND version = %s AND seq = %s""",
                (new_status, new_accepted, new_psa_id, opp, version, seq),
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
                    detail={"psa_milestone_id": new_psa_id, "name": name},
                )
    stats["unmatched"] = len(set(psa) - matched_ids)
    return stats
