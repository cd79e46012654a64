"""Replication feeds: ``sobjects/{type}/deleted`` and ``sobjects/{type}/updated``.

https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_getdeleted.htm
and https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_getupdated.htm
(seconds of ``start``/``end`` ignored; more than 600,000 ids: ``EXCEEDED_ID_LIMIT``).
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Query
from fastapi.responses import Response

from erpsync_sandbox.crm.records import SfError
from erpsync_sandbox.crm.routes.base import (
    State,
    api_version,
    json_reply,
    parse_replication_date,
    sf_datetime,
    sobject_schema,
)
from erpsync_sandbox.store import format_stamp, to_iso

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/services/data/{version}/sobjects/{sobject}/deleted",
    tags=["SObjects"],
    include_in_schema=False,
)
@router.get(
    "/services/data/{version}/sobjects/{sobject}/deleted/",
    tags=["SObjects"],
    summary="Records deleted between start and end (delete log, retention window)",
)
def deleted(
    state: State,
    version: str,
    sobject: str,
    start: str | None = Query(None, description="ISO-8601 date-time (seconds ignored)"),
    end: str | None = Query(None, description="ISO-8601 date-time (seconds ignored)"),
) -> Response:
    api_version(version)
    schema = sobject_schema(sobject)
    lo = parse_replication_date("start", start)
    hi = parse_replication_date("end", end)
    if lo > hi:
        raise SfError(
            400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate"
        )
    earliest = state.earliest_available()
    latest = min(hi, state.now_dt().replace(second=0, microsecond=0))
    lo_eff = max(lo, earliest)
    records: list[dict[str, str]] = []
    if lo_eff < latest:
        entries = state.store.deleted_since(
            schema.name, to_iso(lo_eff), to_iso(latest - dt.timedelta(microseconds=1))
        )
        if len(entries) > 600_000:
            raise SfError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 600000 records",
            )
        records = [
            {"id": e["id"], "deletedDate": format_stamp(e["deletedDate"], "salesforce")}
            for e in entries
        ]
    return json_reply(
        {
            "deletedRecords": records,
            "earliestDateAvailable": sf_datetime(earliest),
            "latestDateCovered": sf_datetime(latest),
        }
    )


@router.get(
    "/services/data/{version}/sobjects/{sobject}/updated",
    tags=["SObjects"],
    include_in_schema=False,
)
@router.get(
    "/services/data/{version}/sobjects/{sobject}/updated/",
    tags=["SObjects"],
    summary="Ids of records created or updated between start and end",
)
def updated(
    state: State,
    version: str,
    sobject: str,
    start: str | None = Query(None, description="ISO-8601 date-time (seconds ignored)"),
    end: str | None = Query(None, description="ISO-8601 date-time (seconds ignored)"),
) -> Response:
    api_version(version)
    schema = sobject_schema(sobject)
    lo = parse_replication_date("start", start)
    hi = parse_replication_date("end", end)
    if lo > hi:
        raise SfError(
            400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate"
        )
    latest = min(hi, state.now_dt().replace(second=0, microsecond=0))
    ids: list[str] = []
    if lo < latest:
        rows = state.store.scan_rows(
            schema.name, order="modstamp", modstamp_ge=to_iso(lo), modstamp_lt=to_iso(latest)
        )
        ids = [r.id for r in rows]
        if len(ids) > 600_000:
            raise SfError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 600000 records",
            )
    return json_reply({"ids": ids, "latestDateCovered": sf_datetime(latest)})
