"""Shared plumbing of the three sandbox services: the context and the base FastAPI app.

:class:`SandboxContext` holds what every service needs: the state directory, one
:class:`~erpsync_sandbox.store.Store` per system (``crm``, ``psa``, ``erp``), the shared change
log, the live fault state per service, the business clock and the credentials/ports
(:class:`SandboxConfig`, read from ``ERPSYNC_SANDBOX_*`` env vars with the sandbox defaults).

:func:`make_base_app` returns a FastAPI app with the ``/__admin/*`` routes and the fault
middleware installed; each service's ``create_app(ctx)`` adds its vendor routes to it.
Vendor API shapes: docs/reference/vendor-apis.md.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from erpsync_sandbox.clock import BusinessClock
from erpsync_sandbox.contract import ContractRecorder
from erpsync_sandbox.faults import FaultConfig, FaultMiddleware, Faults, faults_from_env
from erpsync_sandbox.store import ChangeLog, Store, change_source

__all__ = [
    "SERVICES",
    "STAMP",
    "SandboxConfig",
    "SandboxContext",
    "make_base_app",
]

SERVICES = ("crm", "psa", "erp")

#: Vendor modstamp field and body format per service.
STAMP: dict[str, tuple[str, str]] = {
    "crm": ("SystemModstamp", "salesforce"),
    "psa": ("updated_at", "harvest"),
    "erp": ("lastModifiedDateTime", "bc"),
}

DEFAULT_PORTS = {"crm": 18001, "psa": 18002, "erp": 18003}

TITLES = {
    "crm": "erpsync sandbox CRM (Salesforce REST API subset)",
    "psa": "erpsync sandbox PSA (Harvest API v2 subset)",
    "erp": "erpsync sandbox ERP (Business Central API v2.0 subset)",
}


@dataclass
class SandboxConfig:
    """Credentials, ports and host the sandbox accepts (sandbox-only values)."""

    crm_client_id: str = "erpsync-sandbox"
    crm_client_secret: str = "sandbox-crm-secret"  # noqa: S105 - public sandbox default
    psa_token: str = "sandbox-psa-token"  # noqa: S105 - public sandbox default
    psa_account_id: str = "100200"
    erp_client_id: str = "erpsync-sandbox"
    erp_client_secret: str = "sandbox-erp-secret"  # noqa: S105 - public sandbox default
    erp_tenant: str = "sandbox"
    erp_environment: str = "production"
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    #: Filled in by serve/start_sandbox once the services listen: service -> base URL.
    base_urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SandboxConfig:
        """Defaults overridden by ``ERPSYNC_SANDBOX_<NAME>`` env vars (e.g.
        ``ERPSYNC_SANDBOX_PSA_TOKEN``, ``ERPSYNC_SANDBOX_CRM_PORT``)."""
        env = os.environ if env is None else env
        cfg = cls()
        for name in (
            "crm_client_id",
            "crm_client_secret",
            "psa_token",
            "psa_account_id",
            "erp_client_id",
            "erp_client_secret",
            "erp_tenant",
            "erp_environment",
            "host",
        ):
            value = env.get(f"ERPSYNC_SANDBOX_{name.upper()}")
            if value:
                setattr(cfg, name, value)
        for svc in SERVICES:
            value = env.get(f"ERPSYNC_SANDBOX_{svc.upper()}_PORT")
            if value:
                cfg.ports[svc] = int(value)
        return cfg


@dataclass
class SandboxContext:
    """Everything a sandbox service needs; one per running sandbox (shared by the 3 apps)."""

    state_dir: Path
    stores: dict[str, Store]
    faults: dict[str, Faults]
    clock: BusinessClock
    config: SandboxConfig
    changes: ChangeLog
    size: str = "small"
    seed: int = 0
    #: Serialises whole-firm operations (advance, reset, generate).
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: Free-form per-service state the services may keep (rate-limit buckets, tokens ...).
    extras: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction

    @classmethod
    def open(
        cls,
        state_dir: Path | str,
        *,
        size: str | None = None,
        seed: int | None = None,
        config: SandboxConfig | None = None,
        faults: Mapping[str, FaultConfig] | None = None,
    ) -> SandboxContext:
        """Open (or create) the state in ``state_dir``; does not generate data.

        ``size``/``seed`` default to what the state dir was generated with (``sandbox.json``),
        else ``small``/``0``. Fault configs default to the env (:func:`faults_from_env`).
        """
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        info = _read_info(state_dir)
        clock = BusinessClock(state_dir / "clock.json")
        changes = ChangeLog(state_dir / "changes.sqlite3")
        stores: dict[str, Store] = {}
        fault_states: dict[str, Faults] = {}
        for svc in SERVICES:
            stamp_field, style = STAMP[svc]
            stores[svc] = Store(
                state_dir / f"{svc}.sqlite3",
                system=svc,
                stamp_field=stamp_field,
                stamp_style=style,
                now=clock.now,
                changelog=changes,
            )
            fcfg = (faults or {}).get(svc) or faults_from_env(svc)
            fault_states[svc] = Faults(svc, fcfg, stores[svc])
        return cls(
            state_dir=state_dir,
            stores=stores,
            faults=fault_states,
            clock=clock,
            config=config or SandboxConfig.from_env(),
            changes=changes,
            size=size or info.get("size", "small"),
            seed=info.get("seed", 0) if seed is None else seed,
        )

    # ------------------------------------------------------------------ accessors

    def store(self, service: str) -> Store:
        return self.stores[service]

    def faults_for(self, service: str) -> Faults:
        """The live fault state (config + hooks such as ``after_page``) of ``service``."""
        return self.faults[service]

    @property
    def erp_company_id(self) -> str | None:
        """The Business Central company id (GUID) the generator created."""
        return self.stores["erp"].meta_get("company_id")

    @property
    def info(self) -> dict[str, Any]:
        """``sandbox.json``: size, seed, generator version, generation time."""
        return _read_info(self.state_dir)

    def is_generated(self) -> bool:
        return bool(self.info.get("generated"))

    def manifest(self) -> dict[str, Any]:
        path = self.state_dir / "manifest.json"
        if not path.exists():
            return {"generated": False, "problems": [], "counts": {}}
        return json.loads(path.read_text())

    # ------------------------------------------------------------------ whole-firm operations

    def generate(self, *, size: str | None = None, seed: int | None = None) -> dict[str, Any]:
        """(Re)generate the firm into the stores; returns the manifest."""
        from erpsync_sandbox.generator import generate_firm

        with self.lock:
            self.size = size or self.size
            self.seed = self.seed if seed is None else seed
            self.wipe()
            token = change_source.set("generate")
            try:
                return generate_firm(self, size=self.size, seed=self.seed)
            finally:
                change_source.reset(token)

    def ensure_generated(self) -> bool:
        """Generate the firm if the state dir holds none; True if it generated."""
        with self.lock:
            if self.is_generated():
                return False
            self.generate()
            return True

    def wipe(self) -> None:
        """Drop all records, the change log, the manifest; clock back to its start."""
        with self.lock:
            for store in self.stores.values():
                store.reset()
            self.changes.reset()
            self.clock.reset()
            for name in ("manifest.json", "sandbox.json"):
                (self.state_dir / name).unlink(missing_ok=True)

    def reset(self, *, regenerate: bool = True) -> dict[str, Any]:
        """Back to the freshly generated firm (or empty with ``regenerate=False``)."""
        if regenerate:
            return self.generate()
        self.wipe()
        return {"generated": False}

    def advance(self, steps: int = 1, seed: int | None = None) -> list[dict[str, Any]]:
        """Simulate ``steps`` business days; returns the change-log entries it made."""
        from erpsync_sandbox.clock import advance

        return advance(self, steps, self.seed if seed is None else seed)

    def close(self) -> None:
        self.clock.save()
        for store in self.stores.values():
            store.close()
        self.changes.close()


def _read_info(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "sandbox.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def write_info(state_dir: Path, info: dict[str, Any]) -> None:
    """Write ``sandbox.json`` atomically."""
    tmp = state_dir / "sandbox.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    tmp.replace(state_dir / "sandbox.json")


# --------------------------------------------------------------------------- base app


def make_base_app(service: str, ctx: SandboxContext) -> FastAPI:
    """A FastAPI app for ``service`` with the ``/__admin`` routes and fault middleware.

    Admin routes: ``GET /__admin/health``, ``GET|PUT|PATCH /__admin/faults``,
    ``POST /__admin/advance`` (``{"steps": n, "seed": s}``), ``GET /__admin/changes?since=``,
    ``POST /__admin/reset`` (``{"regenerate": true}``), ``GET /__admin/manifest``,
    ``GET /__admin/clock``.
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

    @app.get("/__admin/health", tags=["admin"])
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "service": service,
            "now": ctx.clock.now(),
            "size": ctx.size,
            "seed": ctx.seed,
            "generated": ctx.is_generated(),
        }

    @app.get("/__admin/faults", tags=["admin"])
    def get_faults() -> dict[str, Any]:
        return faults.snapshot()

    @app.put("/__admin/faults", tags=["admin"])
    def put_faults(config: FaultConfig) -> dict[str, Any]:
        faults.set(config)
        return faults.snapshot()

    @app.patch("/__admin/faults", tags=["admin"])
    def patch_faults(changes: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
        try:
            faults.patch(changes)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return faults.snapshot()

    @app.post("/__admin/advance", tags=["admin"])
    def post_advance(body: dict[str, Any] | None = Body(None)) -> dict[str, Any]:  # noqa: B008
        body = body or {}
        steps = int(body.get("steps", 1))
        seed = body.get("seed")
        changes = ctx.advance(steps, None if seed is None else int(seed))
        return {"now": ctx.clock.now(), "count": len(changes), "changes": changes}

    @app.get("/__admin/changes", tags=["admin"])
    def get_changes(
        since: int = Query(0, ge=0),
        limit: int | None = Query(None, ge=1),
        source: str | None = None,
    ) -> dict[str, Any]:
        rows = ctx.changes.since(since, limit=limit, source=source)
        return {"last_seq": ctx.changes.last_seq(), "changes": rows}

    @app.post("/__admin/reset", tags=["admin"])
    def post_reset(body: dict[str, Any] | None = Body(None)) -> dict[str, Any]:  # noqa: B008
        regenerate = bool((body or {}).get("regenerate", True))
        ctx.reset(regenerate=regenerate)
        return {"status": "reset", "generated": ctx.is_generated(), "now": ctx.clock.now()}

    @app.get("/__admin/manifest", tags=["admin"])
    def get_manifest() -> dict[str, Any]:
        return ctx.manifest()

    @app.get("/__admin/clock", tags=["admin"])
    def get_clock(request: Request) -> dict[str, Any]:
        return {"now": ctx.clock.now(), "frozen": ctx.clock.frozen}

    return app
