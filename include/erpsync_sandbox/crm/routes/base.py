"""What the Salesforce routers share: the service state, replies, bodies, ids and dates."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response

from erpsync_sandbox.clock import BusinessClock
from erpsync_sandbox.contract import state_dependency
from erpsync_sandbox.crm.auth import SessionAuthority
from erpsync_sandbox.crm.query import CursorRegistry
from erpsync_sandbox.crm.records import SfError
from erpsync_sandbox.crm.schema import (
    SCHEMAS,
    SObjectSchema,
    resolve_sobject,
    salesforce_id,
)
from erpsync_sandbox.crm.settings import CrmSettings, Quota
from erpsync_sandbox.faults import Faults
from erpsync_sandbox.store import Store, format_stamp, parse_iso, to_iso

__all__ = [
    "JSON_BODY",
    "JSON_TYPE",
    "SERVICE",
    "VERSION_SET",
    "VERSIONS",
    "CrmState",
    "State",
    "api_version",
    "crm_state",
    "field_list",
    "full_id",
    "full_record",
    "json_reply",
    "not_found",
    "parse_body",
    "parse_replication_date",
    "schema_for",
    "sf_datetime",
    "sobject_schema",
]

SERVICE = "crm"
JSON_TYPE = "application/json;charset=UTF-8"
#: API versions the sandbox answers (``/services/data/vXX.X``).
VERSIONS = [f"{v}.0" for v in range(31, 65)]
VERSION_SET = {f"v{v}" for v in VERSIONS}


@dataclass
class CrmState:
    """The CRM service's state, shared by its routers and the edge middleware
    (``app.state.crm``)."""

    store: Store
    faults: Faults
    clock: BusinessClock
    settings: CrmSettings
    auth: SessionAuthority
    quota: Quota
    cursors: CursorRegistry

    def now_dt(self) -> dt.datetime:
        return self.clock.now_dt()

    def earliest_available(self) -> dt.datetime:
        """The start of the delete log's retention window (``earliestDateAvailable``)."""
        moment = self.now_dt() - dt.timedelta(days=self.settings.deleted_retention_days)
        if self.settings.earliest_deleted:
            moment = max(moment, parse_iso(self.settings.earliest_deleted))
        return moment.replace(second=0, microsecond=0)


@state_dependency
async def crm_state(request: Request) -> CrmState:
    """The app's :class:`CrmState`."""
    state: CrmState = request.app.state.crm
    return state


State = Annotated[CrmState, Depends(crm_state)]


def schema_for(sobject: str) -> SObjectSchema:
    # strict: only the declared fields exist; a key a stored record holds beyond them is
    # neither queryable nor returned (Salesforce: INVALID_FIELD)
    return SCHEMAS[sobject]


def sobject_schema(name: str) -> SObjectSchema:
    canon = resolve_sobject(name)
    if canon is None:
        raise not_found()
    return schema_for(canon)


JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": {"Name": "Acme GmbH", "BillingCountry": "DE"},
            }
        },
    }
}


def json_reply(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = payload if isinstance(payload, bytes) else orjson.dumps(payload, default=_default)
    return Response(content=content, status_code=status, media_type=JSON_TYPE, headers=headers)


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return orjson.Fragment(format(obj, "f"))
    raise TypeError(type(obj).__name__)


def api_version(version: str) -> str:
    if version not in VERSION_SET:
        raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
    return version[1:]


def not_found() -> SfError:
    return SfError(404, "NOT_FOUND", "The requested resource does not exist")


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SfError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None
    if not isinstance(data, dict):
        raise SfError(
            400,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of SObject out of START_ARRAY token",
        )
    return data


def full_record(
    body: dict[str, Any], schema: SObjectSchema, version: str, fields: list[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": {
            "type": schema.name,
            "url": f"/services/data/v{version}/sobjects/{schema.name}/{body.get('Id')}",
        }
    }
    for name in fields or schema.names:
        out[name] = body.get(name)
    return out


def sf_datetime(moment: dt.datetime) -> str:
    return format_stamp(to_iso(moment), "salesforce")


def parse_replication_date(name: str, value: str | None) -> dt.datetime:
    if not value:
        raise SfError(400, "MISSING_ARGUMENT", f"Missing required parameter: {name}")
    text = value.strip().replace(" ", "+").rstrip(":")
    try:
        moment = parse_iso(text)
    except ValueError:
        raise SfError(
            400, "INVALID_REPLICATION_DATE", f"Unable to parse {name} date: {value}"
        ) from None
    return moment.replace(second=0, microsecond=0)


def full_id(record_id: str) -> str:
    """A 15-character record id as its 18-character form (Salesforce accepts both)."""
    return salesforce_id(record_id) if len(record_id) == 15 else record_id


def field_list(schema: SObjectSchema, fields: str | None) -> list[str] | None:
    if not fields:
        return None
    out: list[str] = []
    for raw in fields.split(","):
        name = raw.strip()
        if not name:
            continue
        f = schema.lookup(name)
        if f is None:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on sobject of type {schema.name}",
            )
        out.append(f.name)
    return out
