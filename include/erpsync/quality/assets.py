"""The data each suite checks: one SQL query per GX asset (``meta.erpsync_asset`` in the suite).

Every query returns the checked columns plus two scope columns, so a failing row says what a
critical failure blocks (erpsync.quality.blocks):

* ``scope_client``: the CRM account id of the row's client (``core.clients.crm_id``);
* ``scope_contract``: the CRM opportunity id of the row's contract, where there is one.

Time entries and expenses reach their client through their project's current contract, else
through the client id map (PSA client id -> CRM account id). Referential checks are columns from
LEFT JOINs (``user_known`` is NULL when the person is unknown) so that GX checks them as plain
column expectations and reports the failing rows with their scope. Joins are hash joins on the
natural keys, so a suite reads each table once per expectation, also at a million entries.
"""

from __future__ import annotations

#: the current contract of each PSA project (latest not-superseded version)
_PROJECT_CONTRACT = """
    SELECT DISTINCT ON (psa_project_id) psa_project_id, opportunity_id, account_id
      FROM core.contracts
     WHERE psa_project_id IS NOT NULL AND status <> 'superseded'
     ORDER BY psa_project_id, version DESC"""

ASSET_SQL: dict[str, str] = {
    "clients": """
SELECT c.crm_id, c.legal_name, c.billing_country, c.currency, c.payment_terms_days,
       c.crm_id AS scope_client, NULL::text AS scope_contract
  FROM core.clients c
 WHERE c.deleted_at IS NULL""",
    "tax_profiles": """
SELECT t.crm_account_id, t.country, t.vat_id, t.vat_id_valid, t.tax_exempt, t.reverse_charge,
       c.crm_id AS client_crm_id,
       t.crm_account_id AS scope_client, NULL::text AS scope_contract
  FROM core.tax_profiles t
  LEFT JOIN core.clients c ON c.crm_id = t.crm_account_id AND c.deleted_at IS NULL
 WHERE t.deleted_at IS NULL""",
    "people": """
SELECT p.psa_id, p.email, lower(p.email) AS email_lower, p.is_active,
       NULL::text AS scope_client, NULL::text AS scope_contract
  FROM core.people p
 WHERE p.deleted_at IS NULL""",
    "rate_cards": """
SELECT r.kind, r.psa_rate_id, r.person_psa_id, r.amount, r.currency, r.valid_from, r.valid_to,
       p.psa_id AS person_known,
       NULL::text AS scope_client, NULL::text AS scope_contract
  FROM core.rate_cards r
  LEFT JOIN core.people p ON p.psa_id = r.person_psa_id
 WHERE r.deleted_at IS NULL""",
    "contracts": """
SELECT k.opportunity_id, k.version, k.account_id, k.billing_model, k.currency, k.amount,
       k.starts_on, k.ends_on, k.status, c.crm_id AS client_crm_id,
       k.account_id AS scope_client, k.opportunity_id AS scope_contract
  FROM core.contracts k
  LEFT JOIN core.clients c ON c.crm_id = k.account_id AND c.deleted_at IS NULL
 WHERE k.status IN ('pending', 'complete', 'adopted')""",
    "time_entries": f"""
SELECT t.psa_id, t.spent_date, t.hours, t.billable, t.billable_rate, t.currency,
       t.user_psa_id, t.project_psa_id, p.psa_id AS user_known,
       CASE WHEN t.billable THEN coalesce(k.account_id, m.crm_id) ELSE '(non-billable)' END
           AS billable_entry_client,
       coalesce(k.account_id, m.crm_id) AS scope_client, k.opportunity_id AS scope_contract
  FROM core.time_entries t
  LEFT JOIN core.people p ON p.psa_id = t.user_psa_id
  LEFT JOIN ({_PROJECT_CONTRACT}) k ON k.psa_project_id = t.project_psa_id
  LEFT JOIN core.id_map m ON m.entity_type = 'client' AND m.psa_id = t.client_psa_id
 WHERE t.deleted_at IS NULL""",  # noqa: S608 - constant SQL, no value interpolated
    "expenses": f"""
SELECT e.psa_id, e.spent_date, e.total_cost, e.units, e.currency, e.billable, e.has_receipt,
       e.user_psa_id, e.project_psa_id, p.psa_id AS user_known,
       coalesce(k.account_id, m.crm_id) AS scope_client, k.opportunity_id AS scope_contract
  FROM core.expenses e
  LEFT JOIN core.people p ON p.psa_id = e.user_psa_id
  LEFT JOIN ({_PROJECT_CONTRACT}) k ON k.psa_project_id = e.project_psa_id
  LEFT JOIN core.id_map m ON m.entity_type = 'client' AND m.psa_id = e.client_psa_id
 WHERE e.deleted_at IS NULL""",  # noqa: S608 - constant SQL, no value interpolated
    "recon_items": """
SELECT i.item_key, i.item_type, i.state, i.reason_code, i.hours, i.rate, i.amount, i.currency,
       i.account_id, i.opportunity_id, pg_typeof(i.amount)::text AS amount_type,
       -- a negative expense is a credit: only other negative amounts fail
       CASE WHEN i.item_type = 'expense' AND i.amount < 0 THEN 0 ELSE i.amount END
           AS amount_except_credits,
       ((i.state = 'on_hold') = (i.reason_code IS NOT NULL)) AS reason_code_iff_on_hold,
       (i.reason_code IS NULL OR r.code IS NOT NULL) AS reason_code_in_catalogue,
       (i.state <> 'ready' OR i.account_id IS NOT NULL) AS ready_has_client,
       (i.state <> 'ready' OR i.amount IS NOT NULL) AS ready_has_amount,
       i.account_id AS scope_client, i.opportunity_id AS scope_contract
  FROM recon.items i
  LEFT JOIN recon.reasons r ON r.code = i.reason_code""",
}

SCOPE_COLUMNS = {"client": "scope_client", "contract": "scope_contract"}
