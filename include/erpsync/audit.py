"""The append-only business audit trail (``audit.audit_log``).

Every business action writes one row: who (actor), when, what (action, entity), before and
after, and the run that did it. The table rejects UPDATE, DELETE and TRUNCATE and chains row
hashes (migration 0004), so this module only ever inserts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Source:
    """The Airflow run behind an action."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None

    @classmethod
    def from_context(cls, context: Any) -> Source:
        ti = context["ti"]
        return cls(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id)


class RunLike(Protocol):
    """The run behind an action: :class:`erpsync.sync.spec.RunInfo` is one."""

    @property
    def run_id(self) -> str: ...

    @property
    def actor(self) -> str: ...

    def audit_source(self) -> Source: ...


def run_parts(run: RunLike | str | None) -> tuple[str, str, Source]:
    """(run id, actor, audit source) of ``run``; a bare run id (or none) has an unknown actor."""
    if run is None or isinstance(run, str):
        return str(run), "unknown", Source(run_id=str(run))
    return str(run.run_id or run), str(run.actor or "unknown"), run.audit_source()


def actor_from_context(context: Any) -> str:
    """The user who triggered the run, else the run type (``scheduled``, ``asset_triggered``...)."""
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
    if user:
        return str(user)
    run_type = getattr(dag_run, "run_type", None)
    return f"airflow:{getattr(run_type, 'value', run_type) or 'unknown'}"


def record(
    conn,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | None = None,
    before: Any = None,
    after: Any = None,
    source: Source | None = None,
    detail: dict | None = None,
) -> int:
    """Insert one audit row inside the caller's transaction and return its id."""
    source = source or Source()
    row = conn.execute(
        """INSERT INTO audit.audit_log
               (actor, action, entity_type, entity_id, before_state, after_state,
                source_dag_id, source_run_id, source_task_id, detail, prev_hash, row_hash)
           VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s::jsonb, '', '')
           RETURNING audit_id""",
        (
            actor,
            action,
            entity_type,
            entity_id,
            None if before is None else json.dumps(before, default=str),
            None if after is None else json.dumps(after, default=str),
            source.dag_id,
            source.run_id,
            source.task_id,
            json.dumps(detail or {}, default=str),
        ),
    ).fetchone()
    return int(row[0])
