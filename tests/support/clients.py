"""Core client rows as the CRM sync would leave them: what the exception and write-back
tests seed their clients with."""

from __future__ import annotations


def seed_client(conn, crm_id: str, name: str, vat: str | None, country: str = "DE") -> None:
    """A CRM client in core.id_map, core.clients (Berlin, EUR, 30 days) and core.tax_profiles
    (``vat`` on ``country``); seeding it again renames it and replaces its VAT id."""
    canonical = conn.execute(
        "INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', %s) "
        "ON CONFLICT (entity_type, crm_id) WHERE crm_id IS NOT NULL DO UPDATE "
        "SET updated_at = now() RETURNING canonical_id",
        (crm_id,),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_city,
               billing_country, currency, payment_terms_days, source_record_id, row_hash,
               first_run_id, last_run_id)
           VALUES (%s, %s, %s, 'Berlin', %s, 'EUR', 30, %s, 'h', 'r', 'r')
           ON CONFLICT (crm_id) DO UPDATE SET legal_name = EXCLUDED.legal_name""",
        (crm_id, canonical, name, country, crm_id),
    )
    conn.execute(
        """INSERT INTO core.tax_profiles (crm_account_id, country, vat_id, source_record_id,
               row_hash, first_run_id, last_run_id)
           VALUES (%s, %s, %s, %s, 'h', 'r', 'r')
           ON CONFLICT (crm_account_id) DO UPDATE SET vat_id = EXCLUDED.vat_id""",
        (crm_id, country, vat, crm_id),
    )
