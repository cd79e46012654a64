"""The PSA store answers a project's month of time entries from an index, not a scan of every
record (a large firm's billed-state reads took 2.5 s each as a scan of a million rows)."""

from __future__ import annotations

from erpsync_sandbox.psa.app import INDEXED_BY_PROJECT_AND_DATE
from erpsync_sandbox.store import Store


def test_a_project_and_date_filter_reads_the_index(tmp_path):
    store = Store(tmp_path / "psa.sqlite3")
    for resource in INDEXED_BY_PROJECT_AND_DATE:
        store.ensure_index(resource, ("project.id", "spent_date"))
        store.ensure_index(resource, ("project.id", "spent_date"))  # idempotent
    conn = store._conn()
    where = (
        f"{store._col('project.id')} = ? AND {store._col('spent_date')} >= ?"
        f" AND {store._col('spent_date')} <= ?"
    )
    for resource in INDEXED_BY_PROJECT_AND_DATE:
        plan = conn.execute(
            f'EXPLAIN QUERY PLAN SELECT id FROM "{resource}" WHERE {where}',  # noqa: S608 - constants
            (7, "2026-10-01", "2026-10-31"),
        ).fetchall()
        details = " ".join(str(row[-1]) for row in plan)
        assert f"ix_{resource}_project_id_spent_date" in details, details
        assert "SCAN" not in details, details
