"""Answering a billing approval through Airflow's own REST API, as a person at the UI would.

The approval step of the billing DAGs is Airflow's human-in-the-loop task: the UI's *Required
Actions* page reads and answers it through the public REST API (``/api/v2``), and so does this
module (for ``erpsync demo --once`` and the end-to-end tests):

* ``POST /auth/token`` with the user's name and password (the auth manager's login) -> a JWT;
* ``GET /api/v2/dags/{dag_id}/dagRuns/~/hitlDetails`` -> the pending requests (subject, the
  Markdown body with the batch's content hash, the options);
* ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails`` with
  ``{"chosen_options": ["Approve"], "params_input": {"comment": ...}}`` -> Airflow records who
  answered (the token's user) and resumes the task.

The answering user is the authenticated caller: nobody can answer "as" someone else, which is
what the maker-checker check in ``record_decision`` relies on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

APPROVAL_TASK_ID = "approve_batch"


@dataclass
class PendingApproval:
    dag_id: str
    run_id: str
    task_id: str
    subject: str
    body: str
    options: list[str]
    detail: dict[str, Any]


class AirflowApi:
    """A minimal REST client logged in as one Airflow user."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 30.0):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.username = username
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        token = self._http.post("/auth/token", json={"username": username, "password": password})
        if token.status_code not in (200, 201):
            raise RuntimeError(f"Airflow login as {username} failed: HTTP {token.status_code}")
        self._http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pending_approvals(self, dag_id: str, run_id: str | None = None) -> list[PendingApproval]:
        """Requests of ``dag_id`` (one run, or any) still waiting for an answer."""
        resp = self._http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id or '~'}/hitlDetails")
        resp.raise_for_status()
        found = []
        for d in resp.json().get("hitl_details", []):
            ti = d.get("task_instance") or {}
            if d.get("response_received") or ti.get("state") != "awaiting_input":
                continue
            found.append(
                PendingApproval(
                    dag_id=ti.get("dag_id", dag_id),
                    run_id=ti["dag_run_id"],
                    task_id=ti["task_id"],
                    subject=d.get("subject") or "",
                    body=d.get("body") or "",
                    options=list(d.get("options") or []),
                    detail=d,
                )
            )
        return found

    def wait_for_approval(
        self,
        dag_id: str,
        *,
        run_id: str | None = None,
        timeout: float = 300.0,
        alive: Callable[[], object] | None = None,
    ) -> PendingApproval:
        """Poll until ``dag_id`` (run ``run_id``) asks for an approval; ``alive()`` False stops."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [
                p
                for p in self.pending_approvals(dag_id, run_id)
                # approve_batch, or a later ask after a refused answer (approve_batch_2, ...)
                if p.task_id == APPROVAL_TASK_ID or p.task_id.startswith(f"{APPROVAL_TASK_ID}_")
            ]
            if pending:
                return pending[-1]
            if alive is not None and not alive():
                raise RuntimeError(f"{dag_id} stopped before asking for an approval")
            time.sleep(1.0)
        raise TimeoutError(f"{dag_id} did not ask for an approval within {timeout:.0f} s")

    def answer(
        self, pending: PendingApproval, option: str, *, comment: str | None = None
    ) -> dict[str, Any]:
        """Answer ``pending`` with ``option`` (``Approve`` / ``Reject``) as this user."""
        body: dict[str, Any] = {"chosen_options": [option], "params_input": {}}
        if comment is not None:
            body["params_input"] = {"comment": comment}
        resp = self._http.patch(
            f"/api/v2/dags/{pending.dag_id}/dagRuns/{pending.run_id}/taskInstances/"
            f"{pending.task_id}/-1/hitlDetails",
            json=body,
        )
        if resp.status_code != 200:
            raise RuntimeError(
                f"answering {pending.task_id} of {pending.run_id} as {self.username} failed: "
                f"HTTP {resp.status_code} {resp.text[:500]}"
            )
        answer: dict[str, Any] = resp.json()
        return answer


def content_hash_shown(body: str) -> str | None:
    """The content hash the approval text shows (the footer's ``Content hash `...```)."""
    import re

    match = re.search(r"Content hash `([0-9a-f]{16,})`", body)
    return match.group(1) if match else None
