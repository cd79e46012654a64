"""Sandbox apps served by uvicorn in a thread of the test process."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


def start_server(server: uvicorn.Server) -> tuple[threading.Thread, int]:
    """Run ``server`` in a daemon thread and wait (10 s at most) until it listens; its thread
    and the port it bound (configs use ``port=0``)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    return thread, server.servers[0].sockets[0].getsockname()[1]


def serve(app: Any, **config: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    """``app`` served on a free loopback port (no lifespan, quick shutdown; ``config`` on top):
    the server, its thread and its port."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            **config,
        )
    )
    thread, port = start_server(server)
    return server, thread, port
