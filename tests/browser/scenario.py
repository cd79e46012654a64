"""The known warehouse the browser tests look at: two clients with contracts and time, reconciled
by the real reconciliation (so the billing cockpit has ready, on-hold and billed work and WIP,
and the exceptions queue an ``over_cap`` and an ``unknown_project`` exception), an invalid VAT id
and a waived exception raised through :mod:`erpsync.exceptions_queue` (each with its real audit
rows), invoice batches, sync runs with counts and watermarks, and a quarantined record whose
payload holds a secret the pages must mask.

Master data and time come from :class:`erpsync.reconcile.rows.Rows` (the reconciliation tests'
row builder); the rest is inserted in SQL in the shape the pipeline writes it (migrations 0003,
0005, 0011).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg

from erpsync import audit, exceptions_queue
from erpsync.console import insights
from erpsync.reconcile import run_reconcile
from erpsync.reconcile.rows import Rows
from erpsync.sync.spec import RunInfo

CLIENT_CRM_ID = "001BRWSR0000000001"
CLIENT_NAME = "Northwind Advisory Ltd"
#: Northwind's capped project (10 hours): its fourth 3-hour entry goes over the cap
CAPPED_PROJECT = "pNW"
SECOND_CRM_ID = "001BRWSR0000000003"
SECOND_NAME = "Contoso Legal LLP"
#: A value planted in a quarantined payload under a secret-looking key: no page may show it.
PLANTED_SECRET = "planted-secret-value-7f3a"
SYNC_ENTITIES = ("clients", "time_entries")


@dataclass(frozen=True)
class _Run:
    run_id: str
    actor: str = "airflow:scheduled"

    def audit_source(self) -> audit.Source:
        return audit.Source(run_id=self.run_id)


@dataclass
class Scenario:
    client_crm_id: str = CLIENT_CRM_ID
    client_name: str = CLIENT_NAME
    #: exception ids by a short name: "over_cap" and "unknown_project" (open, raised by the
    #: reconciliation), "tax_id" (open), "waived" (waived in the scenario)
    exceptions: dict[str, int] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    quarantine_id: int = 0


def load(warehouse_url: str) -> Scenario:
    out = Scenario()
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(warehouse_url, autocommit=False) as conn:
        _work(conn, now.date())
        run_reconcile(conn, RunInfo.local("browser_scenario"), as_of=now.date(), workers=1)
        insights.refresh_summaries(conn)  # as the reconciliation task does after the run
        for reason in ("over_cap", "unknown_project"):
            out.exceptions[reason] = conn.execute(
                "SELECT exception_id FROM ops.exceptions "
                "WHERE reason_code = %s AND status = 'open'",
                (reason,),
            ).fetchone()[0]
        run = _Run("scheduled__2026-11-30T02:00:00+00:00")
        raised = {
            "tax_id": (
                exceptions_queue.INVALID_TAX_ID,
                "client",
                CLIENT_CRM_ID,
                "finance_ops",
                {"account_id": CLIENT_CRM_ID, "vat_id": "GB000000000"},
                None,
                None,
            ),
            "waived": (
                "zero_amount",
                "time_entry",
                "TE-90017",
                "billing_ops",
                {"account_id": CLIENT_CRM_ID},
                Decimal("0.0000"),
                "GBP",
            ),
        }
        for name, (reason, etype, key, owner, detail, amount, currency) in raised.items():
            outcome = exceptions_queue.raise_exception(
                conn,
                reason,
                etype,
                key,
                owner,
                detail,
                run,
                amount_at_stake=amount,
                currency=currency,
            )
            out.exceptions[name] = outcome.exception_id
        exceptions_queue.waive(
            conn,
            out.exceptions["waived"],
            by="approver",
            comment="internal training entry, never billable",
            run=_Run("manual__console", actor="approver"),
        )
        # invoice batches: one waiting for approval, one rejected
        for name, status, decided in (
            ("awaiting", "awaiting_approval", None),
            ("rejected", "rejected", "approver"),
        ):
            out.batches[name] = conn.execute(
                """INSERT INTO billing.invoice_batches (kind, period_start, period_end, scope_key,
                       status, content_hash, summary, prepared_by, prepared_run_id, decided_by,
                       decided_at, decision_comment)
                   VALUES ('period', '2026-11-01', '2026-11-30', %s, %s, %s, %s::jsonb, 'admin',
                           'manual__2026-12-01', %s, %s, %s)
                   RETURNING batch_id""",
                (
                    f"scope-{name}",
                    status,
                    f"hash-{name}",
                    json.dumps({"invoices": 1, "net": {"GBP": "9800.00"}}),
                    decided,
                    now if decided else None,
                    "wrong period" if decided else None,
                ),
            ).fetchone()[0]
        # sync runs: six daily runs per entity, the last one with a quarantined record
        for entity in SYNC_ENTITIES:
            system = "crm" if entity == "clients" else "psa"
            for day in range(6, 0, -1):
                started = now - dt.timedelta(days=day)
                conn.execute(
                    """INSERT INTO ops.run_stats (dag_id, run_id, task_id, entity, status,
                           started_at, finished_at, records_read, records_loaded,
                           records_unchanged, records_quarantined, records_deleted,
                           records_written_back)
                       VALUES (%s, %s, %s, %s, 'success', %s, %s, %s, %s, %s, %s, 0, %s)""",
                    (
                        f"erpsync_sync_{system}",
                        f"scheduled__{started:%Y-%m-%dT02:00:00}",
                        f"sync_{entity}",
                        entity,
                        started,
                        started + dt.timedelta(minutes=2),
                        100 + 10 * day,
                        20 + day,
                        80 + 9 * day,
                        1 if day == 1 and entity == "clients" else 0,
                        day % 3,
                    ),
                )
            conn.execute(
                """INSERT INTO ops.sync_watermarks (source_system, entity, cursor_ts, cursor_id,
                       updated_by_run)
                   VALUES (%s, %s, %s, 'last', 'scenario')""",
                (system, entity, now - dt.timedelta(days=1)),
            )
        out.quarantine_id = conn.execute(
            """INSERT INTO ops.quarantine (run_id, source_system, entity, record_key, reason_code,
                   reason_detail, payload)
               VALUES (%s, 'crm', 'clients', '001BRWSR0000000002', 'invalid_country',
                       'BillingCountry "Atlantis" is not an ISO 3166 country', %s::jsonb)
               RETURNING quarantine_id""",
            (
                f"scheduled__{now - dt.timedelta(days=1):%Y-%m-%dT02:00:00}",
                json.dumps(
                    {
                        "Id": "001BRWSR0000000002",
                        "Name": "Atlantis Partners",
                        "BillingCountry": "Atlantis",
                        "api_key": PLANTED_SECRET,
                    }
                ),
            ),
        ).fetchone()[0]
        conn.commit()
    return out


def _client(conn, crm_id: str, name: str, currency: str, country: str) -> None:
    canonical = conn.execute(
        "INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', %s) "
        "RETURNING canonical_id",
        (crm_id,),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country, currency,
               payment_terms_days, source_record_id, row_hash, first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, %s, 30, %s, 'h', 'scenario', 'scenario')""",
        (crm_id, canonical, name, country, currency, crm_id),
    )


def _work(conn, today: dt.date) -> None:
    """Two clients, their contracts and three months of time (dates relative to ``today``)."""
    r = Rows(conn)
    r.person("u1", "ann.lee@firm.example")
    r.person("u2", "raj.patel@firm.example")
    _client(conn, CLIENT_CRM_ID, CLIENT_NAME, "GBP", "GB")
    _client(conn, SECOND_CRM_ID, SECOND_NAME, "EUR", "NL")
    starts, ends = today - dt.timedelta(days=365), today + dt.timedelta(days=365)
    r.contract(
        "006NW1",
        CAPPED_PROJECT,
        account_id=CLIENT_CRM_ID,
        currency="GBP",
        starts_on=starts,
        ends_on=ends,
        cap_type="hours",
        cap_value="10",
    )
    r.contract("006CT1", "pCT", account_id=SECOND_CRM_ID, starts_on=starts, ends_on=ends)
    for i, days in enumerate((95, 70, 40, 10)):  # 12 h on a 10 h cap: the last is over it
        day = today - dt.timedelta(days=days)
        r.time(f"nw-{i}", "u1", CAPPED_PROJECT, day, "3", rate="150", currency="GBP", client="cNW")
    for key, person, days, hours, status in (
        ("ct-1", "u1", 65, "1", "approved"),
        ("ct-2", "u2", 20, "4", "approved"),
        ("ct-3", "u2", 5, "2", "submitted"),
        ("ct-4", "u1", 33, "2.5", "approved"),
    ):
        day = today - dt.timedelta(days=days)
        r.time(key, person, "pCT", day, hours, rate="120", status=status, client="cCT")
    r.billed("time:ct-4")
    r.time("x-1", "u2", "pX", today - dt.timedelta(days=12), "1", rate="100", client="cX")
