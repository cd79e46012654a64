"""sObject resources: basic info, describe, create, retrieve, update, delete, and retrieve or
upsert by external id.

https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_describe.htm,
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_retrieve.htm,
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
(external ids only; 201 created, 200 updated from v46.0, 300 ambiguous).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from erpsync_sandbox.contract import undocumented
from erpsync_sandbox.crm.records import SfError, create, find_by_external_id, soft_delete, update
from erpsync_sandbox.crm.routes.base import (
    JSON_BODY,
    State,
    api_version,
    field_list,
    full_id,
    full_record,
    json_reply,
    not_found,
    parse_body,
    sobject_schema,
)
from erpsync_sandbox.crm.schema import SObjectSchema, looks_like_id

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/services/data/{version}/sobjects/{sobject}/describe",
    tags=["SObjects"],
    summary="Describe an sObject (fields and their types)",
)
@router.get(
    "/services/data/{version}/sobjects/{sobject}/describe/",
    tags=["SObjects"],
    include_in_schema=False,
)
def describe(version: str, sobject: str) -> Response:
    v = api_version(version)
    return json_reply(sobject_schema(sobject).describe(v))


@router.get(
    "/services/data/{version}/sobjects/{sobject}",
    tags=["SObjects"],
    summary="Basic information about an sObject",
)
@router.get(
    "/services/data/{version}/sobjects/{sobject}/", tags=["SObjects"], include_in_schema=False
)
def sobject_info(version: str, sobject: str) -> Response:
    v = api_version(version)
    return json_reply({"objectDescribe": sobject_schema(sobject).summary(v), "recentItems": []})


@router.post(
    "/services/data/{version}/sobjects/{sobject}",
    tags=["SObjects"],
    summary="Create a record (201 {id, success, errors})",
    status_code=201,
    openapi_extra=JSON_BODY,
)
@router.post(
    "/services/data/{version}/sobjects/{sobject}/", tags=["SObjects"], include_in_schema=False
)
async def create_record(
    state: State,
    version: str,
    sobject: str,
    request: Request,
) -> Response:
    api_version(version)
    schema = sobject_schema(sobject)
    body = create(state.store, schema, parse_body(await request.body()))
    return json_reply({"id": body["Id"], "success": True, "errors": []}, 201)


@router.get(
    "/services/data/{version}/sobjects/{sobject}/{record_id}",
    tags=["SObjects"],
    summary="Get a record by id (optionally ?fields=a,b)",
)
def get_record(
    state: State,
    version: str,
    sobject: str,
    record_id: str,
    fields: str | None = Query(None, description="comma-separated field names"),
) -> Response:
    v = api_version(version)
    schema = sobject_schema(sobject)
    if not looks_like_id(record_id):
        raise SfError(
            404,
            "NOT_FOUND",
            f"Provided external ID field does not exist or is not accessible: {record_id}",
        )
    row = state.store.get_row(schema.name, full_id(record_id))
    if row is None:
        raise not_found()
    names = field_list(schema, fields)
    return json_reply(full_record(row.data(), schema, v, names))


@router.patch(
    "/services/data/{version}/sobjects/{sobject}/{record_id}",
    tags=["SObjects"],
    summary="Update a record (204)",
    status_code=204,
    openapi_extra=JSON_BODY,
)
async def update_record(
    state: State,
    version: str,
    sobject: str,
    record_id: str,
    request: Request,
) -> Response:
    api_version(version)
    schema = sobject_schema(sobject)
    data = parse_body(await request.body())
    if not looks_like_id(record_id):
        raise not_found()
    rid = full_id(record_id)
    if update(state.store, schema, rid, data) is None:
        row = state.store.get_row(schema.name, rid, include_deleted=True)
        if row is not None and row.deleted:
            raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
        raise not_found()
    return Response(status_code=204)


@router.delete(
    "/services/data/{version}/sobjects/{sobject}/{record_id}",
    tags=["SObjects"],
    summary="Delete a record (soft delete, 204)",
    status_code=204,
)
async def delete_record(state: State, version: str, sobject: str, record_id: str) -> Response:
    api_version(version)
    schema = sobject_schema(sobject)
    rid = full_id(record_id)
    row = (
        state.store.get_row(schema.name, rid, include_deleted=True)
        if looks_like_id(record_id)
        else None
    )
    if row is None:
        raise not_found()
    if row.deleted or not soft_delete(state.store, schema, rid):
        raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
    return Response(status_code=204)


def ext_field(request: Request, schema: SObjectSchema, name: str) -> str:
    f = schema.lookup(name)
    if f is not None and f.name == "Id":
        # REST upsert/retrieve by external ID takes external-ID fields only ("In REST API,
        # upsert uses external ids, not record ids"); Id is documented only for POST
        # .../{sobject}/Id (create). Update a known record with PATCH .../{sobject}/{id}.
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
        undocumented(request, f"record Id used as external ID field ({request.method})")
        f = None
    if f is None or not f.external_id:
        raise SfError(
            404,
            "NOT_FOUND",
            f"Provided external ID field does not exist or is not accessible: {name}",
        )
    return f.name


def multiple(schema: SObjectSchema, v: str, ids: list[str]) -> Response:
    return json_reply([f"/services/data/v{v}/sobjects/{schema.name}/{i}" for i in ids], 300)


@router.get(
    "/services/data/{version}/sobjects/{sobject}/{field}/{value}",
    tags=["SObjects"],
    summary="Get a record by external id (300 if several match)",
)
def get_by_external_id(
    state: State, request: Request, version: str, sobject: str, field: str, value: str
) -> Response:
    v = api_version(version)
    schema = sobject_schema(sobject)
    name = ext_field(request, schema, field)
    ids = find_by_external_id(state.store, schema, name, value)
    if not ids:
        raise not_found()
    if len(ids) > 1:
        return multiple(schema, v, ids)
    body = state.store.get(schema.name, ids[0])
    if body is None:
        raise not_found()
    return json_reply(full_record(body, schema, v))


@router.patch(
    "/services/data/{version}/sobjects/{sobject}/{field}/{value}",
    tags=["SObjects"],
    summary="Upsert by external id: 201 created, 200 updated (204 before v46), 300 ambiguous",
    responses={
        201: {"description": "created: {id, success, errors, created: true}"},
        200: {"description": "updated: {id, success, errors, created: false}"},
        300: {"description": "several records match: list of record URLs"},
        404: {"description": "updateOnly=true and nothing matches"},
    },
    openapi_extra=JSON_BODY,
)
async def upsert(
    state: State,
    version: str,
    sobject: str,
    field: str,
    value: str,
    request: Request,
    update_only: bool = Query(
        False,
        alias="updateOnly",
        description="never create; 404 when nothing matches",
    ),
) -> Response:
    v = api_version(version)
    schema = sobject_schema(sobject)
    name = ext_field(request, schema, field)
    data = parse_body(await request.body())
    for key in list(data):
        f = schema.lookup(key)
        if f is not None and f.name == name:
            if str(data[key]).casefold() != value.casefold():
                raise SfError(
                    400,
                    "INVALID_FIELD",
                    f"The value of the external ID field {name} in the body differs from"
                    " the value in the URL",
                    [name],
                )
            del data[key]
    ids = find_by_external_id(state.store, schema, name, value)
    if len(ids) > 1:
        return multiple(schema, v, ids)
    new_style = float(v) >= 46.0
    if ids:
        if update(state.store, schema, ids[0], data) is None:
            raise not_found()
        if not new_style:
            return Response(status_code=204)
        return json_reply({"id": ids[0], "success": True, "errors": [], "created": False}, 200)
    if update_only:
        raise not_found()
    body = create(state.store, schema, data, extra={name: value})
    out: dict[str, Any] = {"id": body["Id"], "success": True, "errors": []}
    if new_style:
        out["created"] = True
    return json_reply(out, 201)
