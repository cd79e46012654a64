"""Which tax code an invoice gets, and the legal note printed with it.

Rules as data (docs/invoicing.md "Tax"): the client's tax profile (``core.tax_profiles``,
from the CRM) picks one ERP tax code (``core.tax_codes``, the ERP's taxGroups) per invoice;
the rate comes from ``core.tax_rates`` on the invoice date: the periods erpsync dates itself
from the ERP's VAT Posting Setup (erpsync.sync.vat_rates), for the tax code and the client's
VAT Business Posting Group (its tax area, :func:`tax_area_for`):

1. ``tax_exempt``                              -> ``EXEMPT``   (note: the exemption reason)
2. ``reverse_charge``                          -> ``REVERSE``  (note: reverse-charge wording
   with the customer's VAT id; a reverse-charge client without a valid VAT id is held,
   reason ``invalid_vat_id``)
3. client country = the firm's home country    -> ``STANDARD`` at the home country's rate
4. anything else (outside the EU VAT area)     -> ``EXPORT``   (note: outside the scope)

A country-specific rate row (``country`` = home country) wins over a generic one
(``country`` = ''), and a row of the client's tax area over one for any area (''). Tax is
computed per invoice and tax code (erpsync.money).

Tax areas (Business Central ``taxAreas``; in VAT countries the VAT Business Posting Groups a
customer's ``taxAreaId`` sets): exempt clients by country, reverse-charge clients ``EU``, home
country ``DOMESTIC``, everything else ``EXPORT``. The codes are the tenant's: override them with
``ERPSYNC_TAX_AREA_DOMESTIC``, ``ERPSYNC_TAX_AREA_EU`` and ``ERPSYNC_TAX_AREA_EXPORT``.
"""

from __future__ import annotations

import os

#: The firm's own country (the sandbox firm is Dutch). ``ERPSYNC_HOME_COUNTRY`` overrides it.
DEFAULT_HOME_COUNTRY = "NL"

STANDARD = "STANDARD"
EXEMPT = "EXEMPT"
REVERSE = "REVERSE"
EXPORT = "EXPORT"

#: Legal notes per tax code; ``{reason}`` and ``{vat_id}`` are filled from the tax profile.
LEGAL_NOTES: dict[str, str | None] = {
    STANDARD: None,
    EXEMPT: "VAT exempt supply: {reason}",
    REVERSE: (
        "Reverse charge: VAT to be accounted for by the recipient "
        "(Article 196, Council Directive 2006/112/EC). Customer VAT ID: {vat_id}"
    ),
    EXPORT: "Supply of services outside the scope of VAT in the supplier's country.",
}

#: Default tax area (VAT Business Posting Group) codes, as in the CRONUS demo company.
DEFAULT_TAX_AREAS = {"domestic": "DOMESTIC", "eu": "EU", "export": "EXPORT"}


def tax_areas() -> dict[str, str]:
    """The tenant's tax area codes by kind (``domestic``, ``eu``, ``export``)."""
    return {
        kind: (os.environ.get(f"ERPSYNC_TAX_AREA_{kind.upper()}") or code).strip()
        for kind, code in DEFAULT_TAX_AREAS.items()
    }


def eu_countries() -> list[str]:
    """ISO codes of the EU member states (python-stdnum's list)."""
    from stdnum.eu import vat as eu_vat

    return sorted(cc.upper() for cc in eu_vat.MEMBER_STATES if len(cc) == 2 and cc != "xi")


def tax_area_kind(
    country: str | None, *, exempt: bool, reverse_charge: bool, home: str | None = None
) -> str:
    """``domestic`` | ``eu`` | ``export``: which tax area a client belongs to (same rule as the
    billing SQL below, so BC taxes the invoice lines with the rate erpsync computed)."""
    cc = (country or "").strip().upper()
    if exempt:
        if cc == home_country(home):
            return "domestic"
        return "eu" if cc in eu_countries() else "export"
    if reverse_charge:
        return "eu"
    return "domestic" if cc == home_country(home) else "export"


def tax_area_for(
    country: str | None, *, exempt: bool, reverse_charge: bool, home: str | None = None
) -> str:
    """The tax area code (``taxAreas.code``) of a client."""
    kind = tax_area_kind(country, exempt=exempt, reverse_charge=reverse_charge, home=home)
    return tax_areas()[kind]


#: Hold reasons the builder adds to RECON's catalogue when an invoice cannot be taxed.
HOLD_UNKNOWN_CLIENT = "unknown_client"
HOLD_MISSING_TAX_PROFILE = "missing_tax_profile"
HOLD_MISSING_TAX_RATE = "missing_tax_rate"
HOLD_INVALID_VAT_ID = "invalid_vat_id"


def home_country(explicit: str | None = None) -> str:
    return (explicit or os.environ.get("ERPSYNC_HOME_COUNTRY") or DEFAULT_HOME_COUNTRY).upper()


def legal_note(
    tax_code: str, *, reason: str | None = None, vat_id: str | None = None
) -> str | None:
    template = LEGAL_NOTES.get(tax_code)
    if template is None:
        return None
    return template.format(reason=reason or "exempt", vat_id=vat_id or "missing")


# SQL: one row per account in ``_inv_accounts`` with its tax code, rate, note and hold reason.
# Parameters: home, inv_date, note_exempt, note_reverse, note_export, area_domestic, area_eu,
# area_export, eu_countries (see :func:`tax_sql_params`).
TAX_RESOLUTION_SQL = """
CREATE TEMP TABLE _inv_tax ON COMMIT DROP AS
WITH prof AS (
    SELECT a.account_id, cl.legal_name,
           coalesce(im.erp_number, nullif(cl.erp_customer_no, '')) AS erp_customer_no,
           im.erp_id AS erp_customer_id,
           cl.crm_id IS NOT NULL AS client_known, tp.crm_account_id IS NOT NULL AS has_profile,
           tp.tax_exempt, tp.exemption_reason, tp.reverse_charge, tp.country,
           coalesce(tp.vat_id_normalized, tp.vat_id) AS vat_id, tp.vat_id_valid,
           CASE WHEN tp.crm_account_id IS NULL THEN NULL
                WHEN tp.tax_exempt THEN 'EXEMPT'
                WHEN tp.reverse_charge THEN 'REVERSE'
                WHEN tp.country = %(home)s THEN 'STANDARD'
                ELSE 'EXPORT' END AS tax_code,
           CASE WHEN tp.tax_exempt AND tp.country = %(home)s THEN %(area_domestic)s
                WHEN tp.tax_exempt AND tp.country = ANY(%(eu_countries)s) THEN %(area_eu)s
                WHEN tp.tax_exempt THEN %(area_export)s
                WHEN tp.reverse_charge THEN %(area_eu)s
                WHEN tp.country = %(home)s THEN %(area_domestic)s
                ELSE %(area_export)s END AS tax_area
    FROM _inv_accounts a
    LEFT JOIN core.clients cl ON cl.crm_id = a.account_id AND cl.deleted_at IS NULL
    LEFT JOIN core.id_map im ON im.canonical_id = cl.canonical_id
    LEFT JOIN core.tax_profiles tp ON tp.crm_account_id = a.account_id AND tp.deleted_at IS NULL
)
SELECT p.*, rr.rate_percent AS tax_rate,
       CASE p.tax_code
            WHEN 'EXEMPT'
                THEN replace(%(note_exempt)s, '{reason}', coalesce(p.exemption_reason, 'exempt'))
            WHEN 'REVERSE' THEN replace(%(note_reverse)s, '{vat_id}', coalesce(p.vat_id, 'missing'))
            WHEN 'EXPORT' THEN %(note_export)s
       END AS legal_note,
       CASE WHEN NOT p.client_known THEN 'unknown_client'
            WHEN NOT p.has_profile THEN 'missing_tax_profile'
            WHEN p.tax_code = 'REVERSE' AND (p.vat_id IS NULL OR p.vat_id_valid IS NOT TRUE)
                 THEN 'invalid_vat_id'
            WHEN rr.rate_percent IS NULL THEN 'missing_tax_rate'
       END AS hold_reason
FROM prof p
LEFT JOIN LATERAL (
    SELECT r.rate_percent
    FROM core.tax_rates r
    JOIN core.tax_codes tc ON tc.code = r.tax_code AND tc.deleted_at IS NULL
    WHERE r.tax_code = p.tax_code AND r.deleted_at IS NULL
      AND r.country IN (%(home)s, '')
      AND r.vat_bus_posting_group IN (p.tax_area, '')
      AND r.valid_from <= %(inv_date)s AND (r.valid_to IS NULL OR r.valid_to >= %(inv_date)s)
    ORDER BY (r.country = '') ASC, (r.vat_bus_posting_group = '') ASC, r.valid_from DESC
    LIMIT 1
) rr ON true
"""


def tax_sql_params() -> dict[str, str | list[str]]:
    """The tax-area parameters of :data:`TAX_RESOLUTION_SQL`."""
    areas = tax_areas()
    return {
        "area_domestic": areas["domestic"],
        "area_eu": areas["eu"],
        "area_export": areas["export"],
        "eu_countries": eu_countries(),
    }
