"""Build warehouse rows directly (contracts, people, rate cards, time, expenses, milestones,
retainer schedules) for hand-computed reconciliation scenarios: the golden and property tests
use it, and it documents the minimum each reconciliation input needs.

Only for tests and benchmarks; production rows come from the syncs and project setup.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

from erpsync.models.billing_terms import milestone_item_key

RUN = "rows"
_ids = itertools.count(1)


def _next() -> int:
    return next(_ids)


class Rows:
    """Inserts rows on ``conn`` (the caller commits)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def person(self, psa_id: str, email: str | None = None, role: str = "Consultant") -> str:
        email = email or f"{psa_id}@firm.example"
        ((canonical,),) = self.conn.execute(
            "INSERT INTO core.id_map (entity_type, psa_id) VALUES ('person', %s) "
            "RETURNING canonical_id",
            (psa_id,),
        ).fetchall()
        self.conn.execute(
            """INSERT INTO core.people (psa_id, canonical_id, first_name, last_name, email, role,
                   source_record_id, row_hash, first_run_id, last_run_id)
               VALUES (%s, %s, 'P', %s, %s, %s, %s, 'h', %s, %s)""",
            (psa_id, canonical, psa_id, email, role, psa_id, RUN, RUN),
        )
        return psa_id

    def rate_card(
        self,
        person: str,
        amount: str | Decimal,
        valid_from: dt.date,
        valid_to: dt.date | None = None,
        currency: str = "EUR",
    ) -> None:
        rid = f"r{_next()}"
        self.conn.execute(
            """INSERT INTO core.rate_cards (kind, psa_rate_id, person_psa_id, amount, currency,
                   valid_from, valid_to, source_record_id, row_hash, first_run_id, last_run_id)
               VALUES ('billable', %s, %s, %s, %s, %s, %s, %s, 'h', %s, %s)""",
            (rid, person, Decimal(amount), currency, valid_from, valid_to, rid, RUN, RUN),
        )

    def contract(
        self,
        opportunity_id: str,
        project: str,
        *,
        model: str = "time_and_materials",
        currency: str = "EUR",
        version: int = 1,
        account_id: str = "001ACME",
        starts_on: dt.date = dt.date(2026, 1, 1),
        ends_on: dt.date | None = dt.date(2026, 12, 31),
        cap_type: str | None = None,
        cap_value: str | Decimal | None = None,
        overrides: list[dict[str, str]] | None = None,
        status: str = "complete",
        retainer_amount: str | Decimal | None = None,
        payload: dict[str, Any] | None = None,
        effective_from: dt.date | None = None,
        problems: list[dict[str, Any]] | None = None,
    ) -> None:
        """``effective_from``: a change order's effective day; ``problems``: a version that was
        invalid (what an invalid CRM record leaves)."""
        self.conn.execute(
            """INSERT INTO core.contracts (opportunity_id, version, account_id, name,
                   billing_model, currency, starts_on, ends_on, cap_type, cap_value,
                   retainer_amount, retainer_period, rate_overrides, project_code, status,
                   psa_project_id, payload, first_run_id, last_run_id, effective_from, problems)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s,
                       %s::jsonb, %s, %s, %s, %s::jsonb)""",
            (
                opportunity_id,
                version,
                account_id,
                f"Contract {opportunity_id}",
                model,
                currency,
                starts_on,
                ends_on,
                cap_type,
                None if cap_value is None else Decimal(cap_value),
                None if retainer_amount is None else Decimal(retainer_amount),
                "monthly" if model == "retainer" else None,
                json.dumps(overrides or []),
                f"CODE-{project}",
                status,
                project,
                json.dumps(payload or {}),
                RUN,
                RUN,
                effective_from,
                json.dumps(problems or []),
            ),
        )

    def time(
        self,
        psa_id: str,
        person: str,
        project: str,
        day: dt.date,
        hours: str | Decimal,
        *,
        rate: str | Decimal | None = None,
        currency: str = "EUR",
        billable: bool = True,
        status: str = "approved",
        billed: bool = False,
        task: str = "t1",
        notes: str | None = None,
        created_at: dt.datetime | None = None,
        assignment: str | None = None,
        client: str = "c1",
    ) -> str:
        self.conn.execute(
            """INSERT INTO core.time_entries (psa_id, spent_date, hours, notes, billable,
                   approval_status, is_locked, is_billed, billable_rate, currency, user_psa_id,
                   client_psa_id, project_psa_id, project_code, task_psa_id,
                   user_assignment_psa_id, created_at, source_record_id, row_hash,
                   first_run_id, last_run_id)
               VALUES (%s, %s, %s, %s, %s, %s, false, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       %s, 'h', %s, %s)""",
            (
                psa_id,
                day,
                Decimal(hours),
                notes if notes is not None else f"note {psa_id}",
                billable,
                status,
                billed,
                None if rate is None else Decimal(rate),
                currency,
                person,
                client,
                project,
                f"CODE-{project}",
                task,
                assignment or f"ua-{project}-{person}",
                created_at
                or dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=_next()),
                psa_id,
                RUN,
                RUN,
            ),
        )
        return psa_id

    def expense(
        self,
        psa_id: str,
        person: str,
        project: str,
        day: dt.date,
        total: str | Decimal,
        *,
        category: str = "Meals",
        units: int = 1,
        currency: str = "EUR",
        receipt: bool = True,
        billable: bool = True,
        status: str = "approved",
        billed: bool = False,
    ) -> str:
        self.conn.execute(
            """INSERT INTO core.expenses (psa_id, spent_date, total_cost, units, currency,
                   billable, approval_status, is_locked, is_billed, has_receipt, user_psa_id,
                   client_psa_id, project_psa_id, project_code, expense_category_name,
                   source_record_id, row_hash, first_run_id, last_run_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, false, %s, %s, %s, 'c1', %s, %s, %s, %s,
                       'h', %s, %s)""",
            (
                psa_id,
                day,
                Decimal(total),
                units,
                currency,
                billable,
                status,
                billed,
                receipt,
                person,
                project,
                f"CODE-{project}",
                category,
                psa_id,
                RUN,
                RUN,
            ),
        )
        return psa_id

    def milestone(
        self,
        opportunity_id: str,
        seq: int,
        amount: str | Decimal,
        due: dt.date,
        *,
        version: int = 1,
        currency: str = "EUR",
        accepted: bool = False,
        crm_id: str | None = None,
        name: str | None = None,
    ) -> str:
        self.conn.execute(
            """INSERT INTO core.contract_milestones (opportunity_id, version, seq, name, amount,
                   currency, due_date, crm_milestone_id, status, accepted_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                opportunity_id,
                version,
                seq,
                name or f"Milestone {seq}",
                Decimal(amount),
                currency,
                due,
                crm_id,
                "accepted" if accepted else "open",
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC) if accepted else None,
            ),
        )
        return milestone_item_key(opportunity_id, version, seq)

    def retainer_schedule(
        self,
        opportunity_id: str,
        amount: str | Decimal,
        dues: list[dt.date],
        *,
        version: int = 1,
        currency: str = "EUR",
    ) -> list[str]:
        ((sid,),) = self.conn.execute(
            """INSERT INTO billing.schedules (opportunity_id, version, billing_model, currency,
                   status, created_run_id)
               VALUES (%s, %s, 'retainer', %s, 'active', %s) RETURNING schedule_id""",
            (opportunity_id, version, currency, RUN),
        ).fetchall()
        keys = []
        for seq, due in enumerate(dues, 1):
            start = due.replace(day=1)
            self.conn.execute(
                """INSERT INTO billing.schedule_lines (schedule_id, seq, kind, description,
                       period_start, period_end, due_date, amount, currency)
                   VALUES (%s, %s, 'retainer', %s, %s, %s, %s, %s, %s)""",
                (sid, seq, f"Retainer {start:%Y-%m}", start, due, due, Decimal(amount), currency),
            )
            keys.append(f"retainer:{sid}:{seq}")
        return keys

    def billed(self, item_key: str) -> None:
        self.conn.execute(
            "INSERT INTO billing.billed_items (item_key, run_id) VALUES (%s, %s)", (item_key, RUN)
        )
