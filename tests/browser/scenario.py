"""The known warehouse the browser tests look at: a client, exceptions (open and waived, with
their audit rows), invoice batches, sync runs with counts and watermarks, and a quarantined
record whose payload holds a secret the pages must mask.

Exceptions are raised and waived through :mod:`erpsync.exceptions_queue` (the same calls the
reconciliation and the write-back make, so the audit trail gets its real rows); the rest is
inserted in SQL in the shape the pipeline writes it (migrations 0003, 0005, 0011).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg

from erpsync import exceptions_queue

CLIENT_CRM_ID = "001BRWSR0000000001"
CLIENT_NAME = "Northwind Advisory Ltd"
#: A value planted in a quarantined payload under a secret-looking key: no page may show it.
PLANTED_SECRET = "planted-secret-value-7f3a"
SYNC_ENTITIES = ("clients", "time_entries")


@dataclass(frozen=True)
class _Run:
    run_id: str
    actor: str = "airflow:scheduled"


@dataclass
class Scenario:
    client_crm_id: str = CLIENT_CRM_ID
    client_name: str = CLIENT_NAME
    #: exception ids by a short name: "over_cap" (open, to be waived in the test), "tax_id"
    #: (open), "rate" (open), "waived" (waived in the scenario)
    exceptions: dict[str, int] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    quarantine_id: int = 0


def load(warehouse_url: str) -> Scenario:
    out = Scenario()
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(warehouse_url, autocommit=False) as conn:
        canonical = conn.execute(
            "INSERT INTO core.id_map (entity_type, crm_id, psa_id, erp_id) "
            "VALUES ('client', %s, '4001', 'C00042') RETURNING canonical_id",
            (CLIENT_CRM_ID,),
        ).fetchone()[0]
        conn.execute(
            """INSERT INTO core.clients (crm_id, canonical_id, legal_name, account_number,
                   billing_country, currency, payment_terms_days, erp_customer_no,
                   source_record_id, row_hash, first_run_id, last_run_id)
               VALUES (%s, %s, %s, 'ACC-0042', 'GB', 'GBP', 30, 'C00042', %s, 'h1',
                       'scenario', 'scenario')""",
            (CLIENT_CRM_ID, canonical, CLIENT_NAME, CLIENT_CRM_ID),
        )
        run = _Run("scheduled__2026-11-30T02:00:00+00:00")
        raised = {
            "over_cap": (
                "over_cap",
                "project",
                "PRJ-NW-001",
                "billing_ops",
                {"account_id": CLIENT_CRM_ID, "cap": "10000.00", "billed": "11250.00"},
                Decimal("1250.0000"),
                "GBP",
            ),
            "tax_id": (
                exceptions_queue.INVALID_TAX_ID,
                "client",
                CLIENT_CRM_ID,
                "finance_ops",
                {"account_id": CLIENT_CRM_ID, "vat_id": "GB000000000"},
                None,
                None,
            ),
            "rate": (
                "rate_differs_from_contract",
                "user_assignment",
                "PRJ-NW-001/ann.lee@example.com",
                "project_manager",
                {"account_id": CLIENT_CRM_ID, "contract_rate": "150", "psa_rate": "140"},
                Decimal("480.0000"),
                "GBP",
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
