"""Business Central's OData JSON ``$batch`` endpoint for the ERP sandbox.

``POST /v2.0/{tenant}/{environment}/api/v2.0/$batch`` with ``Content-Type: application/json``
and a body ``{"requests": [{"id", "method", "url", "headers", "body"}, ...]}``; the answer is
``200`` with ``{"responses": [{"id", "status", "headers", "body"}, ...]}``, one per operation in
request order, each carrying its own status (an operation that fails does not fail the
others). Documented at
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/use-odata-batch
(example request and response; source: MicrosoftDocs/dynamics365smb-devitpro-pb
``dev-itpro/webservices/use-odata-batch.md``) and
``dev-itpro/api-reference/v2.0/api/dynamics_salesInvoiceLine_create.md`` ("Add multiple lines
to an existing sales invoice by using $batch": inner ``url`` relative to ``api/v2.0``, e.g.
``companies({id})/salesInvoices({id})/salesInvoiceLines``).

What the sandbox refuses, as Business Central does:

* more than 100 operations ("Max batch size ... 100", operational-limits-online.md, OData
  request limits) -> 400;
* a body that is not a JSON batch (no ``requests`` array, an operation without ``method`` or
  ``url``, a method other than GET/POST/PATCH/PUT/DELETE) -> 400;
* a nested ``$batch`` -> that operation answers 400.

Limits: the batch is one request to the rate and concurrency limiter
(:mod:`erpsync_sandbox.erp.limits`, which sits in front of this route); Microsoft's pages list
batching among the ways to make fewer calls (api-reference/v2.0/dynamics-rate-limits.md, item 3)
but do not say how the operations of a batch count against the 6,000 requests per 5 minutes, so
that is an assumption of this sandbox (docs/benchmarks.md says so next to the floors it
computes). Each operation is handled by the app's own routes (same validation, same business
rules) and meets the service's fault settings like a request of its own, so a test can have a
batch answered partly; the contract recorder records the ``$batch`` request with whatever its
operations used that is undocumented.

Not emulated: ``Isolation: snapshot`` (all operations in one transaction, rolled back together
on a failure) for batches with writes: the sandbox store has no rollback, so such a batch is
answered ``501`` rather than pretending to be atomic (a batch of reads may carry the header).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from fastapi import FastAPI, Request, Response

from erpsync_sandbox.erp.service import BCError
from erpsync_sandbox.faults import Faults, error_body

__all__ = ["MAX_OPERATIONS", "register"]

#: "Max batch size: The maximum number of operations in an OData V4 $batch request." (100)
MAX_OPERATIONS = 100
_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
#: characters left as they are in an inner URL's query (OData syntax, already-encoded %XX)
_QUERY_SAFE = "=&$,()'/:;@%+*!"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def _bad(message: str) -> BCError:
    return BCError(400, "BadRequest", message)


def _operations(raw: bytes) -> list[dict[str, Any]]:
    try:
        payload = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        raise _bad("The batch request body is not valid JSON.") from None
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        raise _bad("A JSON batch request needs a non-empty 'requests' array.")
    if len(requests) > MAX_OPERATIONS:
        raise _bad(
            f"The batch request contains {len(requests)} operations; the maximum is"
            f" {MAX_OPERATIONS}."
        )
    out: list[dict[str, Any]] = []
    for n, op in enumerate(requests):
        if not isinstance(op, dict) or not op.get("method") or not op.get("url"):
            raise _bad(f"Operation {n} of the batch needs 'method' and 'url'.")
        method = str(op["method"]).upper()
        if method not in _METHODS:
            raise _bad(f"Operation {n} of the batch has an unsupported method '{method}'.")
        headers = op.get("headers") or {}
        if not isinstance(headers, dict):
            raise _bad(f"Operation {n} of the batch has headers that are not an object.")
        out.append({**op, "method": method, "headers": headers})
    return out


def _inner_target(api_root: str, url: str) -> tuple[str, bytes]:
    """The path and query string of an operation's ``url`` (relative to ``api/v2.0``, or an
    absolute path or URL)."""
    parts = urlsplit(url)
    path = parts.path
    if not path.startswith("/"):
        path = f"{api_root}/{path}"
    return path, quote(parts.query, safe=_QUERY_SAFE).encode("latin-1")


async def _call(
    app: FastAPI,
    outer: Scope,
    method: str,
    path: str,
    query: bytes,
    headers: dict[str, str],
    body: bytes,
) -> tuple[int, dict[str, str], bytes]:
    """Run one operation through the app's router (not its middleware: the batch already went
    through authentication, limits and faults) and collect its answer."""
    inner_headers = [
        (k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()
    ]
    for name in (b"authorization", b"user-agent"):
        value = dict(outer.get("headers") or []).get(name)
        if value is not None and not any(k == name for k, _ in inner_headers):
            inner_headers.append((name, value))
    if body:
        inner_headers.append((b"content-length", str(len(body)).encode()))
    scope: Scope = {
        **{k: v for k, v in outer.items() if k not in ("path_params", "endpoint", "route")},
        "method": method,
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query,
        "headers": inner_headers,
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # no disconnect while the operation runs
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 500
    out_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for k, v in message.get("headers") or []:
                out_headers[k.decode("latin-1").lower()] = v.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body") or b"")

    router: Callable[[Scope, Callable[[], Awaitable[Message]], Any], Awaitable[None]] = app.router
    try:
        await router(scope, receive, send)
    except BCError as exc:
        return exc.status, {"content-type": "application/json; charset=utf-8"}, exc.body()
    return status, out_headers, b"".join(chunks)


def register(app: FastAPI, api: str, faults: Faults) -> None:
    """Add ``POST {api}/$batch`` to the ERP app.

    ``api`` is the API root route, ``/v2.0/{tenant}/{environment}/api/v2.0``."""

    async def batch(request: Request, tenant: str, environment: str) -> Response:
        ops = _operations(await request.body())
        if request.headers.get("isolation", "").lower() == "snapshot" and any(
            op["method"] != "GET" for op in ops
        ):
            raise BCError(
                501,
                "NotImplemented",
                "The sandbox does not emulate transactional (Isolation: snapshot) batches with"
                " writes.",
            )
        api_root = api.replace("{tenant}", tenant).replace("{environment}", environment)
        responses: list[dict[str, Any]] = []
        for op in ops:
            path, query = _inner_target(api_root, str(op["url"]))
            answer: dict[str, Any] = {"id": op.get("id")}
            if path.rstrip("/").endswith("/$batch"):
                status, headers, raw = (
                    400,
                    {},
                    BCError(400, "BadRequest", "A batch cannot contain a batch.").body(),
                )
            else:
                # each operation meets the service's faults like a request of its own
                decision = faults.decide(op["method"], path)
                if decision["status"] is not None:
                    status = int(decision["status"])
                    headers = {"content-type": "application/json"}
                    if decision["retry_after"] is not None:
                        headers["retry-after"] = str(decision["retry_after"])
                    raw = error_body("erp", status, f"Injected error {status} (sandbox fault).")
                else:
                    body = op.get("body")
                    encoded = b"" if body is None else orjson.dumps(body)
                    status, headers, raw = await _call(
                        app, request.scope, op["method"], path, query, op["headers"], encoded
                    )
            answer["status"] = status
            answer["headers"] = {
                k: v
                for k, v in headers.items()
                if k in ("content-type", "etag", "location", "retry-after")
            }
            if raw:
                try:
                    answer["body"] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    answer["body"] = raw.decode("utf-8", "replace")
            responses.append(answer)
        return Response(
            orjson.dumps({"responses": responses}),
            status_code=200,
            media_type="application/json; odata.metadata=minimal",
        )

    app.add_api_route(
        f"{api}/$batch",
        batch,
        methods=["POST"],
        tags=["batch"],
        summary="OData JSON batch: up to 100 operations, one answer each",
        operation_id="batch",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
