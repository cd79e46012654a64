"""The sandbox's shared state: :class:`SandboxContext` and its :class:`SandboxConfig`.

:class:`SandboxContext` holds what every service needs: the state directory, one
:class:`~erpsync_sandbox.store.Store` per system (``crm``, ``psa``, ``erp``), the shared change
log, the live fault state per service, the business clock and the credentials/ports
(:class:`SandboxConfig`, read from ``ERPSYNC_SANDBOX_*`` env vars with the sandbox defaults).

This module sits at the bottom of the sandbox: it imports only the clock, the store and the
fault state. What changes a whole firm (generate, reset, advance) builds on it in
:mod:`erpsync_sandbox.lifecycle`; the HTTP apps on top of that (:mod:`erpsync_sandbox.common`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erpsync_sandbox.clock import BusinessClock
from erpsync_sandbox.faults import FaultConfig, Faults, faults_from_env
from erpsync_sandbox.store import ChangeLog, Store

__all__ = [
    "DEFAULT_PORTS",
    "SERVICES",
    "STAMP",
    "SandboxConfig",
    "SandboxContext",
    "read_info",
    "write_info",
]

SERVICES = ("crm", "psa", "erp")

#: Vendor modstamp field and body format per service.
STAMP: dict[str, tuple[str, str]] = {
    "crm": ("SystemModstamp", "salesforce"),
    "psa": ("updated_at", "harvest"),
    "erp": ("lastModifiedDateTime", "bc"),
}

DEFAULT_PORTS = {"crm": 18001, "psa": 18002, "erp": 18003}


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
        info = read_info(state_dir)
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
        company_id = self.stores["erp"].meta_get("company_id")
        return None if company_id is None else str(company_id)

    @property
    def info(self) -> dict[str, Any]:
        """``sandbox.json``: size, seed, generator version, generation time."""
        return read_info(self.state_dir)

    def is_generated(self) -> bool:
        return bool(self.info.get("generated"))

    def manifest(self) -> dict[str, Any]:
        path = self.state_dir / "manifest.json"
        if not path.exists():
            return {"generated": False, "problems": [], "counts": {}}
        manifest: dict[str, Any] = json.loads(path.read_text())
        return manifest

    # ------------------------------------------------------------------ state

    def wipe(self) -> None:
        """Drop all records, the change log, the manifest; clock back to its start."""
        with self.lock:
            for store in self.stores.values():
                store.reset()
            self.changes.reset()
            self.clock.reset()
            for name in ("manifest.json", "sandbox.json"):
                (self.state_dir / name).unlink(missing_ok=True)

    def close(self) -> None:
        self.clock.save()
        for store in self.stores.values():
            store.close()
        self.changes.close()


def read_info(state_dir: Path) -> dict[str, Any]:
    """``sandbox.json`` of ``state_dir`` (empty before the firm is generated)."""
    path = state_dir / "sandbox.json"
    if not path.exists():
        return {}
    info: dict[str, Any] = json.loads(path.read_text())
    return info


def write_info(state_dir: Path, info: dict[str, Any]) -> None:
    """Write ``sandbox.json`` atomically."""
    tmp = state_dir / "sandbox.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    tmp.replace(state_dir / "sandbox.json")
