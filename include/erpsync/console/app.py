"""The console's FastAPI app, mounted by the Airflow plugin at ``/erpsync`` on the API server.

Security, in the order a request meets it:

1. Cross-site requests are refused before any route runs: a request that changes something (any
   method but GET/HEAD/OPTIONS) must carry ``X-Erpsync-Request: 1`` and a JSON body, which a form
   on another site cannot send without a CORS preflight this app never answers, and its ``Origin``
   / ``Sec-Fetch-Site`` headers, when the browser sends them, must say same origin. Airflow's
   ``_token`` cookie is also ``SameSite=Lax``.
2. Every route depends on :func:`erpsync.console.web.console_context`: Airflow authenticates the
   caller (401 without a token, 403 with a bad one; a browser asking for a page is redirected to
   Airflow's login instead), and the auth manager must let them read the console (403).
3. Routes that change something also depend on ``require(Action.X)`` (403).

Airflow documents that a plugin's FastAPI app is not authenticated by Airflow
(https://github.com/apache/airflow/pull/72655): this module is where it is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException as FastAPIHTTPException
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from erpsync.console.web import STATIC_DIR, ConsoleSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-erpsync-request"

#: Sent with every answer: the pages may be framed by the Airflow UI only, load nothing from
#: elsewhere and run no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'self'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def settings_of(request: Request) -> ConsoleSettings:
    settings: ConsoleSettings = request.app.state.console_settings
    return settings


def _same_origin(request: Request) -> bool:
    """Origin checks for a state change: a browser says where the request comes from."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser, or a same-origin request of an older one
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https"):
        return False  # "null" (sandboxed or file origins) included
    return parts.netloc in _own_hosts(request)


def _own_hosts(request: Request) -> set[str]:
    from airflow.configuration import conf

    hosts = {request.headers.get("host", "")}
    configured = urlsplit(conf.get("api", "base_url", fallback="") or "").netloc
    if configured:
        hosts.add(configured)
    return hosts


class CrossSiteGuard(BaseHTTPMiddleware):
    """Refuse state-changing requests that a page on another site could have sent."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method not in SAFE_METHODS:
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            reason = None
            if request.headers.get(CSRF_HEADER) != "1":
                reason = "missing X-Erpsync-Request header"
            elif content_type != "application/json":
                reason = "the body must be JSON"
            elif not _same_origin(request):
                reason = "cross-site request"
            if reason is not None:
                return JSONResponse(
                    {"detail": f"Forbidden: {reason} (state changes come from the console only)"},
                    status_code=403,
                )
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def _login_redirect(request: Request) -> Response:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.configuration import conf

    base_path = urlsplit(conf.get("api", "base_url", fallback="/") or "/").path.rstrip("/")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = get_auth_manager().get_url_login(next_url=target)
    if login.startswith("/"):
        login = base_path + login
    return RedirectResponse(login, status_code=303)


async def _http_error(request: Request, exc: Any) -> Response:
    code = getattr(exc, "status_code", 500)
    if code == 401 and _wants_html(request):
        return _login_redirect(request)
    headers = getattr(exc, "headers", None)
    return JSONResponse({"detail": exc.detail}, status_code=code, headers=headers)


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    """The console app. Tests pass settings naming their warehouse; the plugin uses Airflow's."""
    from erpsync.console.pages import audit, billing, exceptions, home, sync
    from erpsync.console.pages import insights as insights_page

    app = FastAPI(
        title="erpsync finance console",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.console_settings = settings or ConsoleSettings()
    app.add_middleware(CrossSiteGuard)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(FastAPIHTTPException, _http_error)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.include_router(home.router)
    app.include_router(billing.router)
    app.include_router(exceptions.router)
    app.include_router(insights_page.router)
    app.include_router(audit.router)
    app.include_router(sync.router)
    return app
