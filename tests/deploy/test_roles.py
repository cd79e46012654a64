"""The compose deployment's FAB roles: what each may do, asked of the FAB auth manager itself
after ``erpsync deploy create-roles`` created them in a real metadata database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from erpsync.deploy import roles
from erpsync.runtime import database
from tests.conftest import make_database

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def test_the_roles_cover_the_packs_dags():
    dag_ids = roles.pack_dag_ids()
    assert {"erpsync_preflight", "erpsync_master_data_sync"} <= set(dag_ids)
    assert all(d.startswith("erpsync_") for d in dag_ids)


def test_what_each_role_may_do_on_paper():
    perms = {name: set(p) for name, p in roles.role_permissions(["erpsync_x"]).items()}
    # nobody gets every DAG of the deployment, only the pack's, one by one
    for name, granted in perms.items():
        assert not {("can_read", "DAGs"), ("can_edit", "DAGs")} & granted, name
    # auditors read and change nothing
    assert {action for action, _ in perms["auditor"]} == {"can_read", "menu_access"}
    assert {("can_read", "Audit Logs"), ("can_read", "Task Logs")} <= perms["auditor"]
    # finance ops trigger and approve, but neither clear tasks nor delete anything
    assert ("can_create", "DAG Run:erpsync_x") in perms["finance_ops"]
    assert ("can_edit", "HITL Detail") in perms["finance_ops"]
    assert ("can_edit", "Task Instances") not in perms["finance_ops"]
    assert not [p for p in perms["finance_ops"] if p[0] == "can_delete"]
    assert not [p for p in perms["finance_ops"] if p[1] in ("Connections", "Variables")]
    # data engineers can do all that finance ops can, and more
    assert perms["finance_ops"] < perms["data_engineer"]


AUTHZ_SCRIPT = r"""
import json
from airflow.api_fastapi.auth.managers.models.resource_details import (
    AccessView, DagAccessEntity, DagDetails,
)
from erpsync.console.permissions import allowed_actions
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager

am = FabAuthManager()
PACK, OTHER = "erpsync_preflight", "someone_elses_dag"
questions = {
    "trigger a run": dict(method="POST", access_entity=DagAccessEntity.RUN, dag=PACK),
    "respond to an approval": dict(
        method="PUT", access_entity=DagAccessEntity.HITL_DETAIL, dag=PACK
    ),
    "read runs": dict(method="GET", access_entity=DagAccessEntity.RUN, dag=PACK),
    "read task logs": dict(method="GET", access_entity=DagAccessEntity.TASK_LOGS, dag=PACK),
    "read the audit log": dict(method="GET", access_entity=DagAccessEntity.AUDIT_LOG, dag=PACK),
    "clear a task": dict(method="PUT", access_entity=DagAccessEntity.TASK_INSTANCE, dag=PACK),
    "delete the DAG": dict(method="DELETE", access_entity=None, dag=PACK),
    "pause the DAG": dict(method="PUT", access_entity=None, dag=PACK),
    "read another DAG": dict(method="GET", access_entity=None, dag=OTHER),
}
answers, console = {}, {}
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    for role in ("finance_ops", "data_engineer", "auditor"):
        user = sm.find_user(username=role) or sm.add_user(
            role, role, "erpsync", f"{role}@example.invalid", [sm.find_role(role)], "pw-" + role
        )
        answers[role] = {
            q: am.is_authorized_dag(
                method=a["method"], user=user, access_entity=a["access_entity"],
                details=DagDetails(id=a["dag"]),
            )
            for q, a in questions.items()
        }
        answers[role]["edit connections"] = am.is_authorized_connection(method="PUT", user=user)
        console[role] = sorted(a.value for a in allowed_actions(user, am))
        console[role] += ["see plugin menus"] if am.is_authorized_view(
            access_view=AccessView.PLUGINS, user=user
        ) else []
print("ANSWERS " + json.dumps(answers))
print("CONSOLE " + json.dumps(console))
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_fab_auth_manager_grants_each_role_what_it_needs_and_no_more(pg_server_url, tmp_path):
    url = make_database(pg_server_url, "erpsync_test_fab")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(tmp_path / "airflow_home"),
                "AIRFLOW__CORE__AUTH_MANAGER": FAB,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database.to_sqlalchemy(url),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": "",
            }
        )

        def run(*cmd: str) -> str:
            result = subprocess.run(
                [sys.executable, *cmd], env=env, capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            return result.stdout

        run("-m", "airflow", "db", "migrate")

        def summary(out: str) -> list[str]:
            return [line for line in out.splitlines() if line.startswith("role ")]

        first = summary(run("-m", "erpsync.deploy.cli", "create-roles"))
        assert [line.split(":")[0] for line in first] == [
            "role finance_ops",
            "role data_engineer",
            "role auditor",
        ]
        assert summary(run("-m", "erpsync.deploy.cli", "create-roles")) == first  # idempotent
        out = run("-c", AUTHZ_SCRIPT)
        answers = json.loads(out.split("ANSWERS ", 1)[1].splitlines()[0])
        console = json.loads(out.split("CONSOLE ", 1)[1].splitlines()[0])
    finally:
        database.drop_database(url)

    allowed = {role: {q for q, ok in a.items() if ok} for role, a in answers.items()}
    assert allowed["finance_ops"] == {
        "trigger a run",
        "respond to an approval",
        "read runs",
        "read task logs",
        "pause the DAG",
    }
    assert allowed["auditor"] == {"read runs", "read task logs", "read the audit log"}
    assert allowed["data_engineer"] == set(answers["data_engineer"]) - {"read another DAG"}
    # the finance console (erpsync.console.permissions): finance ops act on exceptions and
    # batches, auditors only read, data engineers also requeue quarantined records; all three
    # see the plugin's menu, which the 3.3 UI builds from GET /api/v2/plugins (AccessView.PLUGINS)
    assert console["finance_ops"] == [
        "act_batches",
        "act_exceptions",
        "read",
        "see plugin menus",
    ]
    assert console["auditor"] == ["read", "see plugin menus"]
    assert console["data_engineer"] == [
        "act_batches",
        "act_exceptions",
        "read",
        "requeue",
        "see plugin menus",
    ]
