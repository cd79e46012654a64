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


def test_the_erp_app_indexes_what_documents_are_looked_up_by(tmp_path):
    """The check-then-create lookup by externalDocumentNumber (a $batch of 100 of them took
    3 s as scans of a large firm's posted invoices), a credit memo's invoiceId and the number
    checks read an index once the Business Central app has started."""
    from erpsync_sandbox.erp.app import INDEXED_FIELDS
    from erpsync_sandbox.serve import start_sandbox

    with start_sandbox(tmp_path / "state", "small", 0, services=("erp",)) as handle:
        store = handle.ctx.stores["erp"]
        conn = store._conn()
        for resource, fields in INDEXED_FIELDS.items():
            for field in fields:
                plan = conn.execute(
                    f'EXPLAIN QUERY PLAN SELECT id FROM "{resource}"'  # noqa: S608 - constants
                    f" WHERE {store._col(field)} = ?",
                    ("INV-202610-0000000000-1",),
                ).fetchall()
                details = " ".join(str(row[-1]) for row in plan)
                assert f"ix_{resource}_{field}" in details, details
                assert "SCAN" not in details, details
