"""Writes of the firm's set-up records: clients, contacts, projects, tasks, project task and
user assignments.

Harvest: POST/PATCH/DELETE per resource:
https://help.getharvest.com/api-v2/clients-api/clients/clients/,
https://help.getharvest.com/api-v2/projects-api/projects/projects/,
https://help.getharvest.com/api-v2/tasks-api/tasks/tasks/,
https://help.getharvest.com/api-v2/projects-api/projects/task-assignments/ and
https://help.getharvest.com/api-v2/projects-api/projects/user-assignments/. Rate cards:
:mod:`.rates`. Validation and storage: :class:`erpsync_sandbox.psa.writes.PsaWriter`.
"""

from __future__ import annotations

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from erpsync_sandbox.psa.routes.base import (
    NOT_FOUND,
    HarvestError,
    State,
    body_doc,
    deleted,
    int_id,
    json_reply,
    payload,
    v2_router,
)

__all__ = ["router"]

router = v2_router()

#: resource -> (OpenAPI tag, PsaWriter create, update, delete method; None: the store's delete)
SIMPLE: dict[str, tuple[str, str, str, str | None]] = {
    "clients": ("Clients", "create_client", "update_client", "delete_client"),
    "contacts": ("Clients", "create_contact", "update_contact", None),
    "projects": ("Projects", "create_project", "update_project", "delete_project"),
    "tasks": ("Tasks", "create_task", "update_task", "delete_task"),
}

#: project assignment resource -> PsaWriter create, update method
ASSIGNMENTS: dict[str, tuple[str, str]] = {
    "task_assignments": ("create_task_assignment", "update_task_assignment"),
    "user_assignments": ("create_user_assignment", "update_user_assignment"),
}


def add_writes(name: str) -> None:
    tag, create, update, remove = SIMPLE[name]
    label = name.rstrip("s").replace("_", " ")

    async def post(request: Request, state: State) -> Response:
        data = await payload(request, f"create_{name}")
        return json_reply(await run_in_threadpool(getattr(state.writer, create), data), 201)

    async def patch(request: Request, id: str, state: State) -> Response:
        data = await payload(request, f"update_{name}")
        return json_reply(await run_in_threadpool(getattr(state.writer, update), int_id(id), data))

    def delete(id: str, state: State) -> Response:
        rid = int_id(id)
        if remove is None:
            if not state.store.delete(name, rid):
                raise HarvestError(404, NOT_FOUND)
        else:
            getattr(state.writer, remove)(rid)
        return deleted()

    router.add_api_route(
        f"/{name}",
        post,
        methods=["POST"],
        status_code=201,
        tags=[tag],
        summary=f"Create a {label}",
        name=f"create_{name}",
        openapi_extra=body_doc(f"create_{name}"),
    )
    router.add_api_route(
        f"/{name}/{{id}}",
        patch,
        methods=["PATCH"],
        tags=[tag],
        summary=f"Update a {label}",
        name=f"update_{name}",
        openapi_extra=body_doc(f"update_{name}"),
    )
    router.add_api_route(
        f"/{name}/{{id}}",
        delete,
        methods=["DELETE"],
        tags=[tag],
        summary=f"Delete a {label}",
        name=f"delete_{name}",
    )


for _name in SIMPLE:
    add_writes(_name)


def add_assignment_writes(name: str) -> None:
    create, update = ASSIGNMENTS[name]
    label = name.rstrip("s").replace("_", " ")

    async def post(request: Request, parent_id: str, state: State) -> Response:
        pid = state.require_parent("projects", parent_id)
        data = await payload(request, f"create_{name}")
        return json_reply(await run_in_threadpool(getattr(state.writer, create), pid, data), 201)

    async def patch(request: Request, parent_id: str, id: str, state: State) -> Response:
        pid = state.require_parent("projects", parent_id)
        data = await payload(request, f"update_{name}")
        return json_reply(
            await run_in_threadpool(getattr(state.writer, update), pid, int_id(id), data)
        )

    def delete(parent_id: str, id: str, state: State) -> Response:
        state.writer.delete_child(name, state.require_parent("projects", parent_id), int_id(id))
        return deleted()

    path = f"/projects/{{parent_id}}/{name}"
    router.add_api_route(
        path,
        post,
        methods=["POST"],
        status_code=201,
        tags=["Projects"],
        summary=f"Create a {label} (with hourly_rate)",
        name=f"create_{name}",
        openapi_extra=body_doc(f"create_{name}"),
    )
    router.add_api_route(
        f"{path}/{{id}}",
        patch,
        methods=["PATCH"],
        tags=["Projects"],
        summary=f"Update a {label}",
        name=f"update_{name}",
    )
    router.add_api_route(
        f"{path}/{{id}}",
        delete,
        methods=["DELETE"],
        tags=["Projects"],
        summary=f"Delete a {label}",
        name=f"delete_{name}",
    )


for _name in ASSIGNMENTS:
    add_assignment_writes(_name)
