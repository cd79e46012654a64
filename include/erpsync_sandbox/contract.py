"""Recording what clients send against the vendors' documented contracts.

The sandbox answers an undocumented request the way the vendor does: Business Central refuses an
unknown or read-only property with 400, Salesforce refuses an unknown field with
``INVALID_FIELD``, Harvest silently ignores a parameter it does not document. An ignored
parameter makes no visible error, so a client can rely on it and pass every test while a real
tenant does nothing with it. To make such drift visible, a handler that meets anything outside
the documented contract calls :func:`undocumented` (whatever it then answers), and
:class:`ContractRecorder` (installed on every sandbox app by ``make_base_app``) notes it:

* a request that matches no route at all is undocumented by definition ("no such route");
* a route whose handler declares its query parameters (FastAPI ``Query`` arguments, and no raw
  ``Request`` that could read others) documents exactly those: any other query parameter is
  noted ("query parameter 'x'"), as FastAPI itself would silently drop it; a dependency
  marked with :func:`state_dependency` takes the ``Request`` only to reach the app's state
  object, so it does not count as reading raw query parameters;
* when ``ERPSYNC_SANDBOX_CONTRACT_LOG`` names a file, every non-admin request is appended to it
  as one JSON line ``{service, method, route, path, status, user_agent, undocumented}``.

The test suite sets the variable for the whole session and checks the log at the end: a request
sent by erpsync's own connectors (their User-Agent names erpsync) that is undocumented fails the
suite (``tests/contract_log.py``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTRACT_LOG_ENV",
    "ContractRecorder",
    "declared_query_params",
    "is_pack_request",
    "read_log",
    "state_dependency",
    "undocumented",
    "violations",
]

CONTRACT_LOG_ENV = "ERPSYNC_SANDBOX_CONTRACT_LOG"

_STATE_KEY = "erpsync.undocumented"
_write_lock = threading.Lock()

_F = TypeVar("_F", bound=Callable[..., Any])

#: Dependencies that take the raw ``Request`` only to return ``request.app.state``'s objects.
_STATE_ONLY: set[Callable[..., Any]] = set()


def state_dependency(fn: _F) -> _F:
    """Mark ``fn`` (a FastAPI dependency) as reading only the app's state, never the query.

    The service routers reach their shared state (context, store, limiters) through such a
    dependency; without the mark, its ``Request`` parameter would make every route look as if
    it read query parameters by hand and switch the undeclared-parameter check off."""
    _STATE_ONLY.add(fn)
    return fn


def undocumented(request: Any, what: str) -> None:
    """Note that ``request`` used something the vendor does not document (``what`` says which).

    ``request`` is a Starlette/FastAPI ``Request`` (or anything with a ``scope`` dict). Call it
    before answering; the answer itself stays the vendor's (ignore or refuse)."""
    scope = request.scope if hasattr(request, "scope") else request
    scope.setdefault("state", {}).setdefault(_STATE_KEY, []).append(what)


def _route_template(scope: Scope) -> str | None:
    route = scope.get("route")
    return getattr(route, "path", None) if route is not None else None


def _reads_raw_request(dependant: Any) -> bool:
    if dependant.call in _STATE_ONLY:
        return False
    if dependant.request_param_name or dependant.http_connection_param_name:
        return True
    return any(_reads_raw_request(sub) for sub in dependant.dependencies)


def _declared_query(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _declared_query(sub)
    return names


def declared_query_params(route: Any, *, all_declared: bool = False) -> frozenset[str] | None:
    """The query parameters a route declares, or None when its handler may read others itself
    (it takes the raw ``Request``, unless the service declares every parameter it reads:
    ``all_declared``) or it is not a FastAPI route."""
    dependant = getattr(route, "dependant", None)
    if dependant is None or (not all_declared and _reads_raw_request(dependant)):
        return None
    return frozenset(_declared_query(dependant))


def _unknown_query_params(scope: Scope, all_declared: bool) -> list[str]:
    declared = declared_query_params(scope.get("route"), all_declared=all_declared)
    if declared is None:
        return []
    raw = scope.get("query_string", b"").decode("latin-1")
    names = {unquote_plus(pair.partition("=")[0]) for pair in raw.split("&") if pair}
    return [f"query parameter {name!r}" for name in sorted(names - declared)]


class ContractRecorder:
    """Pure ASGI middleware: records each request's route and its undocumented parts."""

    def __init__(self, app: ASGIApp, service: str, all_query_declared: bool = False) -> None:
        self.app = app
        self.service = service
        #: the service's routes declare every query parameter they read, even those whose
        #: handler takes the raw Request (the CRM's: it reads ``q`` but notes SOQL forms)
        self.all_query_declared = all_query_declared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/__admin"):
            await self.app(scope, receive, send)
            return
        state = {"status": 0, "recorded": False}

        def record() -> None:
            if not state["recorded"]:
                state["recorded"] = True
                self._record(scope, int(state["status"]))

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # written before the client can see the end of the answer, so a test that
                # reads the log right after a call always finds the call in it
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            record()

    def _record(self, scope: Scope, status: int) -> None:
        path = os.environ.get(CONTRACT_LOG_ENV)
        if not path:
            return
        notes = list(scope.get("state", {}).get(_STATE_KEY, []))
        notes.extend(_unknown_query_params(scope, self.all_query_declared))
        route = _route_template(scope)
        if route is None and status in (404, 405):
            notes.append(f"no such route: {scope['method']} {scope['path']}")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        line = {
            "service": self.service,
            "method": scope["method"],
            "route": route,
            "path": scope["path"],
            "status": status,
            "user_agent": headers.get("user-agent", ""),
            "undocumented": notes,
        }
        with _write_lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The recorded requests of a contract log (missing file: none)."""
    p = Path(path)
    if not p.exists():
        return
    with p.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def is_pack_request(record: dict[str, Any]) -> bool:
    """Whether erpsync's own connectors sent the request (their User-Agent names erpsync)."""
    return "erpsync" in record.get("user_agent", "").lower()


def violations(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pack's requests that used something undocumented, one entry per distinct finding."""
    seen: set[tuple[str, str, str, str]] = set()
    found: list[dict[str, Any]] = []
    for rec in records:
        if not is_pack_request(rec):
            continue
        for what in rec.get("undocumented", []):
            key = (rec["service"], rec["method"], rec.get("route") or rec["path"], what)
            if key in seen:
                continue
            seen.add(key)
            found.append(
                {
                    "service": rec["service"],
                    "method": rec["method"],
                    "route": rec.get("route") or rec["path"],
                    "undocumented": what,
                }
            )
    return found
