"""The few numbers the console's landing page shows: each answered by an index or a small table,
never a scan of the reconciliation items."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import Connection
from psycopg.rows import TupleRow

from erpsync import money
from erpsync.console.db import scalar


@dataclass(frozen=True)
class Tile:
    key: str
    title: str
    count: int
    detail: str
    href: str  # path under the console


def attention(conn: Connection[TupleRow]) -> list[Tile]:
    """Open exceptions (and their amount at stake per currency), batches waiting for an
    approver, records in quarantine, data-quality blocks in force."""
    open_count = scalar(conn.execute("SELECT count(*) FROM ops.exceptions WHERE status = 'open'"))
    at_stake = conn.execute(
        """SELECT currency, sum(amount_at_stake) FROM ops.exceptions
            WHERE status = 'open' AND amount_at_stake IS NOT NULL AND currency IS NOT NULL
            GROUP BY currency ORDER BY currency"""
    ).fetchall()
    waiting = scalar(
        conn.execute(
            "SELECT count(*) FROM billing.invoice_batches WHERE status = 'awaiting_approval'"
        )
    )
    quarantined = scalar(
        conn.execute("SELECT count(*) FROM ops.quarantine WHERE resolved_at IS NULL")
    )
    blocks = scalar(conn.execute("SELECT count(*) FROM ops.dq_active_blocks"))
    stake = (
        ", ".join(f"{money.as_text(amount, cur, grouped=True)} {cur}" for cur, amount in at_stake)
        or "nothing at stake"
    )
    return [
        Tile("exceptions", "Open exceptions", int(open_count), stake, "/exceptions?status=open"),
        Tile(
            "batches",
            "Batches awaiting approval",
            int(waiting),
            "answer them in Airflow's Required Actions",
            "/billing",
        ),
        Tile("quarantine", "Records in quarantine", int(quarantined), "", "/sync/quarantine"),
        Tile("dq_blocks", "Data-quality blocks in force", int(blocks), "", "/billing"),
    ]
