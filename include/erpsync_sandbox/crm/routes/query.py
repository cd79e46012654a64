"""SOQL: ``query`` and ``queryAll`` (first batch) and their ``nextRecordsUrl`` locators.

SOQL subset: :mod:`erpsync_sandbox.crm.soql`; batches, cursors and their limits:
:mod:`erpsync_sandbox.crm.query`.
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
(``queryAll`` also returns soft-deleted rows); batch size:
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_queryoptions.htm
"""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from erpsync_sandbox.contract import undocumented
from erpsync_sandbox.crm import soql
from erpsync_sandbox.crm.query import (
    batch_size_from,
    page_payload,
    render_bodies,
    render_ids,
    run_query,
)
from erpsync_sandbox.crm.records import SfError
from erpsync_sandbox.crm.routes.base import (
    State,
    api_version,
    json_reply,
    schema_for,
)
from erpsync_sandbox.crm.schema import resolve_sobject
from erpsync_sandbox.store import to_iso

__all__ = ["router"]

router = APIRouter()


def start_query(
    state: State,
    request: Request,
    version: str,
    q: str | None,
    options: str | None,
    include_deleted: bool,
) -> Response:
    v = api_version(version)
    if q is None:
        raise SfError(400, "MALFORMED_QUERY", "A query string must be provided.")
    parsed = soql.parse(q)
    for note in parsed.undocumented:
        undocumented(request, note)
    canon = resolve_sobject(parsed.sobject)
    if canon is None:
        raise soql.error_at(
            q,
            parsed.sobject_pos,
            f"sObject type '{parsed.sobject}' is not supported. If you are attempting to"
            " use a custom object, be sure to append the '__c' after the entity name."
            " Please reference your WSDL or the describe call for the appropriate names.",
            "INVALID_TYPE",
        )
    schema = schema_for(canon)
    compiled = soql.compile_query(q, schema, parsed, today=state.now_dt().date())
    batch = batch_size_from(options)
    purged = to_iso(state.earliest_available()) if include_deleted else None
    result = run_query(
        state.store,
        compiled,
        include_deleted=include_deleted,
        first_batch=batch,
        purged_before=purged,
    )
    if result.count_only:
        if result.aggregate is None:
            return json_reply({"totalSize": result.total, "done": True, "records": []})
        return json_reply(
            {
                "totalSize": 1,
                "done": True,
                "records": [{"attributes": {"type": "AggregateResult"}, "expr0": result.aggregate}],
            }
        )
    cursor = None
    next_offset = None
    if result.total > batch:
        cursor = state.cursors.open(
            canon,
            compiled.fields,
            result.ids,
            batch=batch,
            version=v,
            include_deleted=include_deleted,
        )
        next_offset = batch
    if result.first is not None:
        records = render_bodies(result.first, canon, compiled.fields, v)
    else:
        records = render_ids(state.store, canon, compiled.fields, v, result.ids[:batch])
    payload = page_payload(cursor, result.total, records, version=v, next_offset=next_offset)
    state.faults.after_page(canon, state.store)
    return json_reply(payload)


def continue_query(state: State, version: str, locator: str) -> Response:
    v = api_version(version)
    loc, sep, off = locator.rpartition("-")
    cursor = state.cursors.get(loc) if sep else None
    if cursor is None or not off.isdigit() or int(off) >= len(cursor.ids):
        raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    offset = int(off)
    ids = cursor.ids[offset : offset + cursor.batch]
    records = render_ids(state.store, cursor.sobject, cursor.fields, v, ids)
    end = offset + len(ids)
    payload = page_payload(
        cursor,
        len(cursor.ids),
        records,
        version=v,
        next_offset=end if end < len(cursor.ids) else None,
    )
    state.faults.after_page(cursor.sobject, state.store)
    return json_reply(payload)


Q_PARAM = Query(
    None,
    description="SOQL, e.g. SELECT Id, Name FROM Account "
    "WHERE SystemModstamp > 2026-01-01T00:00:00Z ORDER BY SystemModstamp",
)
OPTIONS_HEADER = Header(
    None, alias="Sforce-Query-Options", description="batchSize=200..2000 (default 2000)"
)


@router.get(
    "/services/data/{version}/query",
    tags=["Query"],
    summary="Run a SOQL query (first batch; follow nextRecordsUrl)",
)
@router.get("/services/data/{version}/query/", tags=["Query"], include_in_schema=False)
def query(
    state: State,
    request: Request,
    version: str,
    q: str | None = Q_PARAM,
    sforce_query_options: str | None = OPTIONS_HEADER,
) -> Response:
    return start_query(state, request, version, q, sforce_query_options, include_deleted=False)


@router.get(
    "/services/data/{version}/queryAll",
    tags=["Query"],
    summary="Run a SOQL query including soft-deleted rows (IsDeleted = true)",
)
@router.get("/services/data/{version}/queryAll/", tags=["Query"], include_in_schema=False)
def query_all(
    state: State,
    request: Request,
    version: str,
    q: str | None = Q_PARAM,
    sforce_query_options: str | None = OPTIONS_HEADER,
) -> Response:
    return start_query(state, request, version, q, sforce_query_options, include_deleted=True)


@router.get(
    "/services/data/{version}/query/{locator}",
    tags=["Query"],
    summary="Next batch of a query (the nextRecordsUrl locator)",
)
def query_more(state: State, version: str, locator: str) -> Response:
    return continue_query(state, version, locator)


@router.get(
    "/services/data/{version}/queryAll/{locator}",
    tags=["Query"],
    summary="Next batch of a queryAll",
)
def query_all_more(state: State, version: str, locator: str) -> Response:
    return continue_query(state, version, locator)
