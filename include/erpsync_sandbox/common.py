"""Shared plumbing of the three sandbox services: the base FastAPI app.

The state the services share, :class:`~erpsync_sandbox.context.SandboxContext` and its
:class:`~erpsync_sandbox.context.SandboxConfig`, lives in :mod:`erpsync_sandbox.context`
(re-exported here for callers outside the sandbox).

:func:`make_base_app` returns a FastAPI app with the ``/__admin/*`` routes and the fault
middleware installed; each service's ``create_app(ctx)`` adds its vendor routes to it.
Vendor API shapes: docs/reference/vendor-apis.md.
"""

from __future__ import annotations

from fastapi import FastAPI

from erpsync_sandbox import admin
from erpsync_sandbox.context import (
    DEFAULT_PORTS,
    SERVICES,
    STAMP,
    SandboxConfig,
    SandboxContext,
    write_info,
)
from erpsync_sandbox.contract import ContractRecorder
from erpsync_sandbox.faults import FaultMiddleware

__all__ = [
    "DEFAULT_PORTS",
    "SERVICES",
    "STAMP",
    "SandboxConfig",
    "SandboxContext",
    "make_base_app",
    "write_info",
]

TITLES = {
    "crm": "erpsync sandbox CRM (Salesforce REST API subset)",
    "psa": "erpsync sandbox PSA (Harvest API v2 subset)",
    "erp": "erpsync sandbox ERP (Business Central API v2.0 subset)",
}


def make_base_app(service: str, ctx: SandboxContext) -> FastAPI:
    """A FastAPI app for ``service`` with the ``/__admin`` routes and fault middleware.

    Admin routes: :mod:`erpsync_sandbox.admin` (they read ``app.state.ctx`` and
    ``app.state.service``, set here).
    """
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}")
    app = FastAPI(title=TITLES[service], version="1.0", docs_url="/docs")
    app.state.ctx = ctx
    app.state.service = service
    faults = ctx.faults_for(service)
    app.add_middleware(FaultMiddleware, faults=faults, service=service)
    # outermost: records every request, faulted or not, with what it used that is undocumented
    app.add_middleware(ContractRecorder, service=service, all_query_declared=service == "crm")

    app.include_router(admin.router)
    return app
