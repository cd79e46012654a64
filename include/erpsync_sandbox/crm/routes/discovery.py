"""Discovery: API versions, the resources of a version, org limits, describe global.

The REST resources table (Versions, Resources by Version, Limits, Describe Global):
https://developer.salesforce.com/docs/atlas.en-us.214.0.api_rest.meta/api_rest/resources_list.htm
and https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_describeGlobal.htm
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from erpsync_sandbox.crm.routes.base import (
    VERSIONS,
    State,
    api_version,
    json_reply,
    schema_for,
)
from erpsync_sandbox.crm.schema import SCHEMAS

__all__ = ["router"]

router = APIRouter()


def release_label(version: str) -> str:
    """Salesforce's release name of API ``version`` (60.0 is Spring '24)."""
    k = int(float(version)) - 60
    season = ("Spring", "Summer", "Winter")[k % 3]
    year = 24 + k // 3 + (1 if season == "Winter" else 0)
    return f"{season} '{year:02d}"


@router.get(
    "/services/data", tags=["Versions"], summary="List API versions", include_in_schema=False
)
@router.get("/services/data/", tags=["Versions"], summary="List API versions")
def versions() -> Response:
    return json_reply(
        [{"label": release_label(v), "url": f"/services/data/v{v}", "version": v} for v in VERSIONS]
    )


@router.get("/services/data/{version}", tags=["Versions"], include_in_schema=False)
@router.get(
    "/services/data/{version}/",
    tags=["Versions"],
    summary="List the resources of an API version",
)
def resources(version: str) -> Response:
    v = api_version(version)
    base = f"/services/data/v{v}"
    names = ["sobjects", "query", "queryAll", "limits"]
    return json_reply({n: f"{base}/{n}" for n in names})


@router.get("/services/data/{version}/limits", tags=["Limits"], include_in_schema=False)
@router.get(
    "/services/data/{version}/limits/",
    tags=["Limits"],
    summary="Org limits (DailyApiRequests reflects the sandbox quota)",
)
def limits(version: str, state: State) -> Response:
    api_version(version)
    used = state.quota.current()
    return json_reply(
        {
            "DailyApiRequests": {
                "Max": state.settings.daily_limit,
                "Remaining": max(0, state.settings.daily_limit - used),
            },
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 1024, "Remaining": 1000},
            "SingleEmail": {"Max": 5000, "Remaining": 5000},
        }
    )


@router.get("/services/data/{version}/sobjects", tags=["SObjects"], include_in_schema=False)
@router.get(
    "/services/data/{version}/sobjects/",
    tags=["SObjects"],
    summary="Describe global: the sObjects the sandbox serves",
)
def describe_global(version: str) -> Response:
    v = api_version(version)
    return json_reply(
        {
            "encoding": "UTF-8",
            "maxBatchSize": 200,
            "sobjects": [schema_for(name).summary(v) for name in SCHEMAS],
        }
    )
