"""The FAB roles of the compose deployment: ``finance_ops``, ``data_engineer`` and ``auditor``.

How the FAB auth manager decides (apache-airflow-providers-fab 3.x): access to a DAG needs a
permission on the DAG itself, either on all DAGs (resource ``DAGs``) or on that one
(``DAG:<dag_id>``); access to something inside a DAG (its runs, task instances, logs, HITL
responses, audit log) needs, in addition, the permission on that kind of thing (``DAG Runs``,
``Task Instances``, ``Task Logs``, ``HITL Detail``, ``Audit Logs``), where a change (trigger,
respond) needs *edit* on the DAG. So each role below gets per-DAG permissions on the pack's DAGs
only (never the global ``DAGs`` resource) plus what it may do to the things inside them:

- ``finance_ops``: read and edit the pack's DAGs (edit is what triggering and responding need;
  it also lets them pause one); trigger runs, respond to human-in-the-loop approvals, read runs,
  task instances, logs and HITL details. Nothing else.
- ``data_engineer``: read, edit and delete the pack's DAGs; everything inside them (runs, task
  instances, XComs, assets, backfills, HITL); connections, variables, pools, audit logs, config,
  plugins and providers.
- ``auditor``: read the pack's DAGs, their runs, task instances, logs, code, versions, HITL
  details and the audit log. Nothing can be changed, not even their own profile.

All three read the Airflow website and the plugins list (``can read on Plugins``), without which
the 3.3 UI shows a FAB user no plugin menu, so no finance console; what each may do inside the
console is decided by :mod:`erpsync.console.permissions` from the permissions above.

The roles cover the DAG ids found in ``dags/`` when they are created; ``airflow-init`` runs
``erpsync deploy create-roles`` on every ``docker compose up``, so a new DAG of the pack is added to
the roles on the next start. Creating them twice changes nothing (FAB's ``bulk_sync_roles``).
"""

from __future__ import annotations

import re

from erpsync import paths

# FAB's own names (airflow.providers.fab.www.security.permissions), spelled out so that this
# module can be read and tested without importing the provider.
READ, EDIT, CREATE, DELETE, MENU = "can_read", "can_edit", "can_create", "can_delete", "menu_access"

ROLE_NAMES = ("finance_ops", "data_engineer", "auditor")

_UI_BASE = [
    (READ, "Website"),
    (READ, "My Profile"),
    (MENU, "Browse"),
    (MENU, "DAGs"),
    (MENU, "DAG Runs"),
    (MENU, "Task Instances"),
    (MENU, "Assets"),
    (MENU, "Docs"),
    (MENU, "Documentation"),
    # the 3.3 UI builds plugin menus (the finance console) from GET /api/v2/plugins, which asks
    # for AccessView.PLUGINS: without these a FAB user sees no console menu at all
    (READ, "Plugins"),
    (MENU, "Plugins"),
]

_READ_INSIDE_DAGS = [
    (READ, "DAG Runs"),
    (READ, "Task Instances"),
    (READ, "Task Logs"),
    (READ, "DAG Code"),
    (READ, "DAG Versions"),
    (READ, "DAG Dependencies"),
    (READ, "DAG Warnings"),
    (READ, "HITL Detail"),
    (READ, "Assets"),
    (READ, "Asset Aliases"),
]

_FINANCE_OPS = [
    *_UI_BASE,
    *_READ_INSIDE_DAGS,
    (EDIT, "My Profile"),
    (READ, "My Password"),
    (EDIT, "My Password"),
    (READ, "XComs"),
    (EDIT, "HITL Detail"),  # respond to approvals (the run's DAG must be editable too)
    (MENU, "HITL Detail"),
]

_DATA_ENGINEER = [
    *_FINANCE_OPS,
    (CREATE, "DAG Runs"),
    (EDIT, "DAG Runs"),
    (DELETE, "DAG Runs"),
    (CREATE, "Task Instances"),
    (EDIT, "Task Instances"),
    (DELETE, "Task Instances"),
    (CREATE, "XComs"),
    (EDIT, "XComs"),
    (DELETE, "XComs"),
    (CREATE, "Assets"),
    (EDIT, "Assets"),
    (DELETE, "Assets"),
    *[(a, "Backfills") for a in (READ, CREATE, EDIT, DELETE)],
    *[(a, r) for r in ("Connections", "Variables", "Pools") for a in (READ, CREATE, EDIT, DELETE)],
    *[(MENU, r) for r in ("Admin", "Connections", "Variables", "Pools", "XComs", "Audit Logs")],
    *[(MENU, r) for r in ("Configurations", "Plugins", "Providers", "Jobs", "Cluster Activity")],
    (READ, "Audit Logs"),
    (READ, "ImportError"),
    (READ, "Jobs"),
    (READ, "Cluster Activity"),
    (READ, "Configurations"),
    (READ, "Plugins"),
    (READ, "Providers"),
]

_AUDITOR = [
    *_UI_BASE,
    *_READ_INSIDE_DAGS,
    (READ, "Audit Logs"),
    (MENU, "Audit Logs"),
]

#: per role: (global permissions, actions on DAG:<id>, actions on DAG Run:<id>)
ROLE_SPECS: dict[str, tuple[list[tuple[str, str]], tuple[str, ...], tuple[str, ...]]] = {
    "finance_ops": (_FINANCE_OPS, (READ, EDIT), (READ, CREATE, MENU)),
    "data_engineer": (_DATA_ENGINEER, (READ, EDIT, DELETE), (READ, CREATE, DELETE, MENU)),
    "auditor": (_AUDITOR, (READ,), (READ, MENU)),
}

_DAG_ID = re.compile(r"""\bdag_id\s*=\s*["'](erpsync_[A-Za-z0-9_]+)["']""")


class RolesError(RuntimeError):
    """The roles cannot be created here (wrong auth manager, no DAGs found)."""


def pack_dag_ids() -> list[str]:
    """The pack's DAG ids, read from the DAG files in ``dags/`` (no Airflow import)."""
    found: set[str] = set()
    for path in sorted(paths.dags_dir().glob("*.py")):
        found.update(_DAG_ID.findall(path.read_text(errors="replace")))
    return sorted(found)


def role_permissions(dag_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Every (action, resource) pair of every role, for these DAG ids."""
    out: dict[str, list[tuple[str, str]]] = {}
    for role, (globals_, dag_actions, run_actions) in ROLE_SPECS.items():
        perms = list(dict.fromkeys(globals_))
        for dag_id in dag_ids:
            perms += [(a, f"DAG:{dag_id}") for a in dag_actions]
            perms += [(a, f"DAG Run:{dag_id}") for a in run_actions]
        out[role] = perms
    return out


def create_roles(dag_ids: list[str] | None = None) -> dict[str, int]:
    """Create or update the roles with FAB's security manager (idempotent); returns the number
    of permissions per role. Permissions a role has beyond these are removed."""
    from airflow.configuration import conf

    auth_manager = conf.get("core", "auth_manager", fallback="")
    if "FabAuthManager" not in auth_manager:
        raise RolesError(
            "the roles are FAB roles: set AIRFLOW__CORE__AUTH_MANAGER="
            "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager "
            f"(now {auth_manager or 'unset'})"
        )
    dag_ids = dag_ids if dag_ids is not None else pack_dag_ids()
    if not dag_ids:
        raise RolesError(f"no erpsync DAG found in {paths.dags_dir()}")
    wanted = role_permissions(dag_ids)

    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.bulk_sync_roles([{"role": name, "perms": perms} for name, perms in wanted.items()])
        for name, perms in wanted.items():
            role = sm.find_role(name)
            keep = set(perms)
            for perm in list(role.permissions):
                if (perm.action.name, perm.resource.name) not in keep:
                    sm.remove_permission_from_role(role, perm)
    return {name: len(perms) for name, perms in wanted.items()}


def current_permissions() -> dict[str, set[tuple[str, str]]]:
    """The roles' permissions as stored in the metadata database (for checks and docs)."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        out = {}
        for name in ROLE_NAMES:
            role = appbuilder.sm.find_role(name)
            out[name] = (
                {(p.action.name, p.resource.name) for p in role.permissions} if role else set()
            )
        return out
