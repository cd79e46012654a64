"""The Airflow connection ids of the three vendor systems: named here once.

Each client's ``default_conn_id`` is one of these (as a provider hook names its default
connection), so code builds clients with no argument; what needs the ids themselves (the
relay's secret collection, the settings that point the connections at the sandbox, the
console's links, the deployment check) reads them from :data:`SYSTEM_CONN_IDS`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CRM_CONN_ID", "ERP_CONN_ID", "PSA_CONN_ID", "SYSTEM_CONN_IDS"]

CRM_CONN_ID: Final = "erpsync_crm"
PSA_CONN_ID: Final = "erpsync_psa"
ERP_CONN_ID: Final = "erpsync_erp"
#: system -> its Airflow connection id
SYSTEM_CONN_IDS: Final[dict[str, str]] = {
    "crm": CRM_CONN_ID,
    "psa": PSA_CONN_ID,
    "erp": ERP_CONN_ID,
}
