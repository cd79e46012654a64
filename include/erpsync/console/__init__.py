"""The finance operations console: pages for finance ops, auditors and data engineers inside the
Airflow UI (exceptions worklist, billing cockpit, process intelligence, audit trail, sync health).

A FastAPI app (:mod:`erpsync.console.app`) mounted on Airflow's API server by the plugin in
``plugins/erpsync_console.py``; every request is authenticated by Airflow (its JWT cookie or a
bearer token) and authorized through Airflow's auth manager (:mod:`erpsync.console.permissions`).
The pages' data comes from the warehouse through one module per page, each a few named functions
taking an open connection.
"""

#: The console's pages, in menu order: (path under the console, title). The plugin's Airflow
#: navigation entries and the pages' own top bar are built from this one list (kept here, free of
#: imports, because every Airflow process loads the plugin).
PAGES: tuple[tuple[str, str], ...] = (
    ("/exceptions", "Exceptions"),
    ("/billing", "Billing"),
    ("/insights", "Insights"),
    ("/audit", "Audit trail"),
    ("/sync", "Sync health"),
)
