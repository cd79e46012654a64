"""Hand-built warehouse rows for the invoicing tests (seeding data only: the tables are the
migrated warehouse's, from the ``warehouse_db`` fixture or ``erpsync.warehouse.migrate``).

The ``add_*`` helpers insert master data with the bookkeeping columns filled, so a golden
test reads like its scenario. The ERP tax setup is the invoicing benchmark's
(:func:`erpsync.bench.invoicing.add_tax_setup`), re-exported here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from typing import Any

from erpsync.bench.invoicing import TAX_CODES, TAX_RATES, add_tax_setup

__all__ = [
    "TAX_CODES",
    "TAX_RATES",
    "add_client",
    "add_contract",
    "add_dq_block",
    "add_item",
    "add_person",
    "add_rate_override",
    "add_tax_setup",
]

RUN = "devdata"


def _h(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def add_client(
    conn,
    crm_id: str,
    *,
    name: str | None = None,
    country: str = "NL",
    currency: str = "EUR",
    exempt: bool = False,
    exemption_reason: str | None = None,
    reverse_charge: bool = False,
    vat_id: str | None = None,
    vat_valid: bool | None = True,
    erp_customer_no: str | None = None,
    erp_id: str | None = None,
    tax_profile: bool = True,
) -> None:
    canonical = conn.execute(
        "INSERT INTO core.id_map (entity_type, crm_id, erp_id) VALUES ('client', %s, %s) "
        "RETURNING canonical_id",
        (crm_id, erp_id or f"erp-{crm_id}"),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country, currency,
               erp_customer_no, source_record_id, row_hash, first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            crm_id,
            canonical,
            name or f"Client {crm_id}",
            country,
            currency,
            erp_customer_no or f"C{crm_id}",
            crm_id,
            _h(crm_id),
            RUN,
            RUN,
        ),
    )
    if tax_profile:
        conn.execute(
            """INSERT INTO core.tax_profiles (crm_account_id, country, vat_id, vat_id_normalized,
                   vat_id_valid, tax_exempt, exemption_reason, reverse_charge, source_record_id,
                   row_hash, first_run_id, last_run_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                crm_id,
                country,
                vat_id,
                vat_id,
                vat_valid if vat_id else None,
                exempt,
                exemption_reason if exempt else None,
                reverse_charge,
                crm_id,
                _h(crm_id, "tax"),
                RUN,
                RUN,
            ),
        )


def add_contract(
    conn,
    opportunity_id: str,
    account_id: str,
    *,
    version: int = 1,
    currency: str = "EUR",
    billing_model: str = "time_and_materials",
    po_number: str | None = None,
    status: str = "complete",
) -> None:
    conn.execute(
        """INSERT INTO core.contracts (opportunity_id, version, account_id, name, billing_model,
               currency, po_number, project_code, status, payload, first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, '{}'::jsonb, %s, %s)""",
        (
            opportunity_id,
            version,
            account_id,
            f"Contract {opportunity_id}",
            billing_model,
            currency,
            po_number,
            f"P-{opportunity_id}-{version}",
            status,
            RUN,
            RUN,
        ),
    )


def add_person(conn, psa_id: str, email: str, role: str | None = None) -> None:
    canonical = conn.execute(
        "INSERT INTO core.id_map (entity_type, psa_id) VALUES ('person', %s) "
        "RETURNING canonical_id",
        (psa_id,),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO core.people (psa_id, canonical_id, first_name, last_name, email, role,
               source_record_id, row_hash, first_run_id, last_run_id)
           VALUES (%s, %s, 'Test', %s, %s, %s, %s, %s, %s, %s)""",
        (psa_id, canonical, psa_id, email, role, psa_id, _h(psa_id), RUN, RUN),
    )


def add_rate_override(conn, opportunity_id: str, email: str, rate: Decimal, currency: str) -> None:
    conn.execute(
        """INSERT INTO core.contract_rate_overrides (opportunity_id, user_email, rate, currency,
               source_record_id, row_hash, first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            opportunity_id,
            email,
            rate,
            currency,
            opportunity_id,
            _h(opportunity_id, email),
            RUN,
            RUN,
        ),
    )


def add_item(
    conn,
    item_key: str,
    *,
    account_id: str,
    opportunity_id: str | None,
    currency: str,
    item_date: dt.date | str,
    item_type: str | None = None,
    state: str = "ready",
    hours: Decimal | str | None = None,
    rate: Decimal | str | None = None,
    amount: Decimal | str | None = None,
    quantity: Decimal | str | None = None,
    role: str | None = None,
    task_name: str | None = None,
    user_psa_id: str | None = None,
    contract_version: int = 1,
    reason_code: str | None = None,
) -> None:
    """One recon.items row; for time, ``amount`` defaults to hours x rate (unrounded)."""
    item_type = item_type or item_key.split(":", 1)[0]
    hours_d = None if hours is None else Decimal(str(hours))
    rate_d = None if rate is None else Decimal(str(rate))
    if amount is None and hours_d is not None and rate_d is not None:
        amount_d = hours_d * rate_d
    else:
        amount_d = None if amount is None else Decimal(str(amount))
    day = dt.date.fromisoformat(item_date) if isinstance(item_date, str) else item_date
    conn.execute(
        """INSERT INTO recon.items (item_key, item_type, source_id, account_id, opportunity_id,
               contract_version, user_psa_id, task_name, role, item_date, period_start, hours,
               quantity, rate, currency, amount, approved, state, reason_code, reason_detail,
               first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true, %s, %s,
                   %s::jsonb, %s, %s)""",
        (
            item_key,
            item_type,
            item_key.split(":")[-1],
            account_id,
            opportunity_id,
            contract_version,
            user_psa_id,
            task_name,
            role,
            day,
            day.replace(day=1),
            hours_d,
            None if quantity is None else Decimal(str(quantity)),
            rate_d,
            currency,
            amount_d,
            state,
            reason_code,
            json.dumps({}) if reason_code else None,
            RUN,
            RUN,
        ),
    )


def add_dq_block(conn, scope_type: str, scope_key: str, *, expectation: str = "test") -> None:
    conn.execute(
        """INSERT INTO ops.dq_blocks (scope_type, scope_key, suite, expectation, detail, status,
               first_run_id, last_run_id)
           VALUES (%s, %s, 'core', %s, '{}'::jsonb, 'active', %s, %s)""",
        (scope_type, scope_key, expectation, RUN, RUN),
    )
