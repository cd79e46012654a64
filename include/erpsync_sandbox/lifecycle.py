"""Whole-firm operations on a :class:`~erpsync_sandbox.context.SandboxContext`.

Generate the firm, reset it, simulate business days: each takes the context's lock, so one
operation at a time changes the firm. They sit above the context, the generator and the
simulation (which all build on :mod:`erpsync_sandbox.context`), so none of those imports this.
"""

from __future__ import annotations

from typing import Any

from erpsync_sandbox import simulate
from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.generator import generate_firm
from erpsync_sandbox.store import change_source

__all__ = ["advance", "ensure_generated", "generate", "reset"]


def generate(
    ctx: SandboxContext, *, size: str | None = None, seed: int | None = None
) -> dict[str, Any]:
    """(Re)generate the firm into the stores; returns the manifest."""
    with ctx.lock:
        ctx.size = size or ctx.size
        ctx.seed = ctx.seed if seed is None else seed
        ctx.wipe()
        token = change_source.set("generate")
        try:
            return generate_firm(ctx, size=ctx.size, seed=ctx.seed)
        finally:
            change_source.reset(token)


def ensure_generated(ctx: SandboxContext) -> bool:
    """Generate the firm if the state dir holds none; True if it generated."""
    with ctx.lock:
        if ctx.is_generated():
            return False
        generate(ctx)
        return True


def reset(ctx: SandboxContext, *, regenerate: bool = True) -> dict[str, Any]:
    """Back to the freshly generated firm (or empty with ``regenerate=False``)."""
    if regenerate:
        return generate(ctx)
    ctx.wipe()
    return {"generated": False}


def advance(ctx: SandboxContext, steps: int = 1, seed: int | None = None) -> list[dict[str, Any]]:
    """Simulate ``steps`` business days (seed: the firm's own by default); returns the
    change-log entries it made (see :func:`erpsync_sandbox.simulate.advance`)."""
    return simulate.advance(ctx, steps, ctx.seed if seed is None else seed)
