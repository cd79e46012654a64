"""What the Harvest routers share: errors, replies, request bodies, auth and the service state.

Every ``/v2/**`` route depends on :func:`authenticate` (User-Agent, token, account, rate limit,
in that order: see :mod:`erpsync_sandbox.psa.app`). The routes reach the service's store,
writer, fault state and page positions through :class:`PsaState` (``app.state.psa``, set by
:func:`erpsync_sandbox.psa.app.create_app`), never through closures.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response

from erpsync_sandbox.context import SandboxConfig
from erpsync_sandbox.contract import state_dependency, undocumented
from erpsync_sandbox.faults import Faults
from erpsync_sandbox.psa.paging import PagePositions
from erpsync_sandbox.psa.ratelimit import TokenBuckets
from erpsync_sandbox.psa.resources import BODY_PARAMS
from erpsync_sandbox.psa.writes import PsaWriter
from erpsync_sandbox.store import Store, dumps

__all__ = [
    "INVALID_TOKEN",
    "JSON",
    "NOT_FOUND",
    "HarvestError",
    "PsaState",
    "State",
    "authenticate",
    "body_doc",
    "deleted",
    "int_id",
    "json_reply",
    "note_undocumented",
    "payload",
    "psa_state",
    "raw_reply",
    "v2_router",
]

INVALID_TOKEN = {
    "error": "invalid_token",
    "error_description": (
        "The access token provided is expired, revoked, malformed or invalid for other reasons."
    ),
}
NOT_FOUND = {"status": 404, "error": "Not Found"}
PAGING_PARAMS = frozenset({"page", "per_page", "cursor", "ref"})
JSON = "application/json; charset=utf-8"


#: Request body examples shown on the OpenAPI page (Harvest's parameter names).
EXAMPLES: dict[str, dict[str, Any]] = {
    "create_clients": {"name": "Newco AG", "currency": "CHF", "address": "Bahnhofstr. 1, Zurich"},
    "create_contacts": {"client_id": 5100001, "first_name": "Nina", "email": "nina@newco.test"},
    "create_projects": {
        "client_id": 5100001,
        "name": "Newco rollout",
        "code": "PRJ-20001",
        "is_billable": True,
        "bill_by": "People",
        "budget_by": "project",
        "starts_on": "2026-11-01",
    },
    "create_tasks": {"name": "Consulting", "default_hourly_rate": 175.0},
    "create_task_assignments": {"task_id": 8000001, "hourly_rate": 190.0, "billable": True},
    "create_user_assignments": {
        "user_id": 3100001,
        "use_default_rates": False,
        "hourly_rate": 210.0,
    },
    "create_time_entry": {
        "project_id": 6400001,
        "task_id": 8000001,
        "spent_date": "2026-11-02",
        "hours": 1.5,
        "notes": "Workshop",
    },
    "update_time_entry": {"hours": 2.0, "notes": "Workshop and write-up"},
    "import_invoice": {
        "client_id": 5100001,
        "number": "PSI-2026-0077",
        "issue_date": "2026-11-30",
        "line_items_import": {
            "project_ids": [6400001],
            "time": {"summary_type": "detailed", "from": "2026-11-01", "to": "2026-11-30"},
            "expenses": {"summary_type": "detailed", "from": "2026-11-01", "to": "2026-11-30"},
        },
    },
    "create_invoice": {
        "client_id": 5100001,
        "subject": "November 2026",
        "currency": "EUR",
        "issue_date": "2026-11-30",
        "payment_term": "net 30",
        "tax": 19.0,
        "line_items": [
            {
                "kind": "Service",
                "description": "Consulting",
                "quantity": 10,
                "unit_price": 150.0,
                "project_id": 6400001,
                "taxed": True,
            }
        ],
    },
    "create_billable_rates": {"amount": 160.0, "start_date": "2026-12-01"},
}


def body_doc(name: str) -> dict[str, Any] | None:
    example = EXAMPLES.get(name)
    if example is None:
        return None
    content = {"application/json": {"schema": {"type": "object"}, "example": example}}
    return {"requestBody": {"content": content}}


class HarvestError(Exception):
    """An error answered in Harvest's shape."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def json_reply(data: Any, status: int = 200) -> Response:
    return Response(content=dumps(data).encode(), status_code=status, media_type=JSON)


def raw_reply(text: str, status: int = 200) -> Response:
    return Response(content=text.encode(), status_code=status, media_type=JSON)


def int_id(value: str) -> int:
    """Harvest ids are integers; anything else is simply not found."""
    try:
        return int(value)
    except ValueError:
        raise HarvestError(404, NOT_FOUND) from None


async def payload(request: Request, route: str | None = None) -> dict[str, Any]:
    """The JSON request body with money kept exact (floats parsed as Decimal).

    With ``route`` (a key of ``BODY_PARAMS``), a parameter the endpoint does not document is
    dropped (Harvest ignores it) and noted as undocumented."""
    data = await _body(request)
    documented = BODY_PARAMS.get(route or "")
    if documented is None:
        return data
    for name in [k for k in data if k not in documented]:
        undocumented(request, f"{route}: body parameter {name!r}")
        del data[name]
    return data


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal)
    except ValueError:
        raise HarvestError(422, {"message": "The request body is not valid JSON."}) from None
    if not isinstance(data, dict):
        raise HarvestError(422, {"message": "The request body must be a JSON object."})
    return data


@dataclass
class PsaState:
    """The PSA service's state, shared by its routers (``app.state.psa``)."""

    store: Store
    faults: Faults
    writer: PsaWriter
    config: SandboxConfig
    limiter: TokenBuckets
    #: Where each page of a listing ended (keyset positions for ``?page=n``).
    positions: PagePositions = field(default_factory=PagePositions)

    def serve_one(self, resource: str, rid: str, parent: int | None = None) -> Response:
        row = self.store.get_row(resource, int_id(rid))
        if row is None or (parent is not None and row.parent_id != str(parent)):
            raise HarvestError(404, NOT_FOUND)
        return raw_reply(row.body)

    def require_parent(self, resource: str, rid: str) -> int:
        pid = int_id(rid)
        if self.store.get_row(resource, pid) is None:
            raise HarvestError(404, NOT_FOUND)
        return pid

    def me(self) -> dict[str, Any]:
        rows = self.store.scan_rows("users", order="seq", limit=1)
        if not rows:
            raise HarvestError(404, NOT_FOUND)
        return rows[0].data()

    def me_ref(self) -> dict[str, Any] | None:
        try:
            user = self.me()
        except HarvestError:
            return None
        name = (
            user.get("name") or f"{user.get('first_name', '')} {user.get('last_name', '')}".strip()
        )
        return {"id": user["id"], "name": name}

    def me_id(self) -> int | None:
        ref = self.me_ref()
        return None if ref is None else int(ref["id"])


@state_dependency
async def psa_state(request: Request) -> PsaState:
    """The app's :class:`PsaState`."""
    state: PsaState = request.app.state.psa
    return state


State = Annotated[PsaState, Depends(psa_state)]


async def authenticate(
    request: Request,
    authorization: str | None = Header(None, description="Bearer <access token>"),
    harvest_account_id: str | None = Header(
        None, alias="Harvest-Account-Id", description="The Harvest account to act on"
    ),
    user_agent: str | None = Header(
        None, alias="User-Agent", description="Required: 'App name (contact email)'"
    ),
) -> str:
    """Harvest's checks on every ``/v2/**`` request; returns the access token."""
    if not (user_agent or "").strip():
        raise HarvestError(
            400,
            {
                "error": "invalid_request",
                "error_description": "A User-Agent header is required: include the name of"
                " your application and a link to it or your email address.",
            },
        )
    state: PsaState = request.app.state.psa
    cfg = state.config
    token = None
    if authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
    token = token or request.query_params.get("access_token")
    if not token or not secrets.compare_digest(token, cfg.psa_token):
        raise HarvestError(401, INVALID_TOKEN)
    account = harvest_account_id or request.query_params.get("account_id")
    if (account or "").strip() != str(cfg.psa_account_id):
        raise HarvestError(404, NOT_FOUND)
    limiter = state.limiter
    wait = limiter.acquire(token)
    if wait is not None:
        limit = limiter.limit
        described = (
            f"{limit.requests} requests per {limit.window_seconds:g} seconds" if limit else ""
        )
        raise HarvestError(
            429,
            {"message": f"Too many requests: the limit is {described}. Retry in {wait} s."},
            {"Retry-After": str(wait)},
        )
    return token


def v2_router() -> APIRouter:
    """A router for ``/v2/**`` routes, each behind :func:`authenticate`."""
    return APIRouter(prefix="/v2", dependencies=[Depends(authenticate)])


def note_undocumented(request: Request, what: str, keys: list[str]) -> None:
    """Harvest ignores body keys it does not document; the sandbox ignores them too and
    notes each for the contract check."""
    for key in keys:
        undocumented(request, f"{what}: body parameter {key!r} is not documented")


def deleted() -> Response:
    """Harvest answers a delete with 200 and an empty body."""
    return Response(status_code=200)
