"""Run the three sandbox services (CRM, PSA, ERP) in one process.

:func:`start_sandbox` opens (and if needed generates) the firm in a state directory, builds each
service's FastAPI app with ``erpsync_sandbox.<service>.app.create_app(ctx)`` and runs each on
its own uvicorn server in a background thread (loopback by default, ephemeral ports for tests).
The returned :class:`SandboxHandle` has ``.urls``, ``.ctx`` and ``.stop()``; it is also a
context manager. :func:`serve_forever` is what ``erpsync sandbox serve`` runs: it blocks until
SIGINT/SIGTERM and then stops the servers cleanly.

Vendor API shapes the services emulate: docs/reference/vendor-apis.md.
"""

from __future__ import annotations

import importlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from erpsync_sandbox import lifecycle
from erpsync_sandbox.context import SERVICES, SandboxConfig, SandboxContext
from erpsync_sandbox.faults import FaultConfig

__all__ = [
    "PortTakenError",
    "SandboxHandle",
    "default_state_dir",
    "prepare_firm",
    "serve_forever",
    "start_sandbox",
]

log = logging.getLogger("erpsync_sandbox.serve")


def default_state_dir(cwd: Path | None = None) -> Path:
    """``.erpsync/sandbox`` under the project dir (nearest ancestor with a pyproject.toml,
    else the current directory)."""
    here = (cwd or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").exists():
            return candidate / ".erpsync" / "sandbox"
    return here / ".erpsync" / "sandbox"


@dataclass
class SandboxHandle:
    """A running sandbox: base URLs per service, the shared context, and ``stop()``."""

    ctx: SandboxContext
    urls: dict[str, str]
    ports: dict[str, int]
    skipped: dict[str, str] = field(default_factory=dict)
    _servers: dict[str, uvicorn.Server] = field(default_factory=dict, repr=False)
    _threads: dict[str, threading.Thread] = field(default_factory=dict, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every server, wait for its thread, close the stores (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        for server in self._servers.values():
            server.should_exit = True
        deadline = time.monotonic() + timeout
        for thread in self._threads.values():
            thread.join(max(0.1, deadline - time.monotonic()))
        for server in self._servers.values():
            if not server.should_exit:  # pragma: no cover - defensive
                server.force_exit = True
        self.ctx.close()

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PortTakenError(OSError):
    """A sandbox service's port is in use: the message names the service, port and the way to
    move it."""


def _check_port_free(service: str, host: str, port: int) -> None:
    if not port:
        return  # ephemeral: always free
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortTakenError(
                f"sandbox {service.upper()}: port {port} on {host} is taken ({exc.strerror}); "
                f"move it with --{service}-port or ERPSYNC_SANDBOX_{service.upper()}_PORT"
            ) from None


def _load_create_app(service: str) -> Any:
    module = importlib.import_module(f"erpsync_sandbox.{service}.app")
    return module.create_app


def start_sandbox(
    state_dir: Path | str,
    size: str | None = None,
    seed: int | None = None,
    ports: int | Mapping[str, int] | None = 0,
    *,
    host: str = "127.0.0.1",
    faults: Mapping[str, FaultConfig] | None = None,
    config: SandboxConfig | None = None,
    reset: bool = False,
    services: tuple[str, ...] = SERVICES,
    log_level: str = "warning",
    startup_timeout: float = 30.0,
) -> SandboxHandle:
    """Start the sandbox services in this process and return a handle.

    ``ports``: ``0`` or ``None`` = ephemeral ports for every service (tests), an int = that port
    for every service (only sensible with one service), or ``{"crm": 18001, ...}``.
    The firm is generated if ``state_dir`` holds none (or on ``reset=True``); otherwise the
    persisted state is served as it is. A service whose ``create_app`` cannot be imported is
    skipped with a log line (``handle.skipped`` says why).
    """
    ctx = SandboxContext.open(state_dir, size=size, seed=seed, config=config, faults=faults)
    info = ctx.info
    if info.get("generated") and not reset:
        wanted = (size or info["size"], info["seed"] if seed is None else seed)
        if wanted != (info["size"], info["seed"]):
            ctx.close()
            raise ValueError(
                f"state dir {state_dir} holds the {info['size']!r} firm of seed {info['seed']};"
                f" asked for {wanted[0]!r}/{wanted[1]}: use reset=True (--reset) to regenerate"
            )
    if reset or not info.get("generated"):
        t0 = time.monotonic()
        lifecycle.generate(ctx, size=size or "small", seed=0 if seed is None else seed)
        log.info("generated %s firm (seed %s) in %.1fs", ctx.size, ctx.seed, time.monotonic() - t0)
    ctx.config.host = host
    handle = SandboxHandle(ctx=ctx, urls={}, ports={})
    try:
        for service in services:
            try:
                create_app = _load_create_app(service)
            except (ImportError, AttributeError) as exc:
                handle.skipped[service] = f"{type(exc).__name__}: {exc}"
                log.warning("sandbox: not mounting %s service (%s)", service, exc)
                continue
            if isinstance(ports, Mapping):
                port = int(ports.get(service, 0))
            else:
                port = int(ports or 0)
            _check_port_free(service, host, port)
            app = create_app(ctx)
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    host=host,
                    port=port,
                    log_level=log_level,
                    access_log=False,
                    lifespan="auto",
                    timeout_graceful_shutdown=2,
                )
            )
            thread = threading.Thread(target=server.run, name=f"sandbox-{service}", daemon=True)
            thread.start()
            handle._servers[service] = server
            handle._threads[service] = thread
        deadline = time.monotonic() + startup_timeout
        for service, server in handle._servers.items():
            while not server.started:
                if not handle._threads[service].is_alive():
                    raise RuntimeError(f"sandbox {service} server failed to start")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sandbox {service} server did not start")
                time.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            handle.ports[service] = port
            handle.urls[service] = f"http://{host}:{port}"
        ctx.config.ports.update(handle.ports)
        ctx.config.base_urls.update(handle.urls)
    except BaseException:
        handle.stop()
        raise
    return handle


def prepare_firm(state_dir: Path | str, size: str, seed: int, reuse: bool) -> dict[str, Any]:
    """Generate the firm into ``state_dir`` unless ``reuse`` and that firm is already there
    (benchmarks keep the large firm between runs). Returns what was done and the PSA's
    time-entry count."""
    ctx = SandboxContext.open(state_dir, size=size, seed=seed)
    try:
        info = ctx.info
        same = info.get("generated") and info.get("size") == size and info.get("seed") == seed
        seconds = 0.0
        if not (reuse and same):
            started = time.perf_counter()
            lifecycle.generate(ctx, size=size, seed=seed)
            seconds = time.perf_counter() - started
        store = ctx.stores["psa"]
        store.checkpoint()
        return {
            "generated": not (reuse and same),
            "generate_seconds": round(seconds, 2),
            "time_entries": store.count("time_entries"),
        }
    finally:
        ctx.close()


def serve_forever(handle: SandboxHandle) -> None:
    """Block until SIGINT or SIGTERM, then stop the sandbox."""
    done = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("sandbox: signal %s, stopping", signum)
        done.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.5):
            if not any(t.is_alive() for t in handle._threads.values()):
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        handle.stop()
