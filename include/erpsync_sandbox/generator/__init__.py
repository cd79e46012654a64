"""Deterministic generator of the sandbox firm (CRM, PSA and ERP data plus problem manifest).

``generate_firm(ctx, size=..., seed=...)`` fills ``ctx.stores`` and writes
``<state_dir>/manifest.json``; see :mod:`erpsync_sandbox.generator.firm` for what it builds and
which problems it plants. Sizes: :data:`SIZES` (``small``, ``medium``, ``large``).
"""

from __future__ import annotations

from typing import Any

from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.generator.firm import GENERATOR_VERSION, SIZES, FirmGenerator, generate_into

__all__ = ["GENERATOR_VERSION", "SIZES", "FirmGenerator", "generate_firm"]

#: Manifest problem kinds the generator plants.
PROBLEM_KINDS = (
    "invalid_vat_id",
    "missing_rate",
    "time_on_closed_project",
    "duplicate_time_entry",
    "over_cap_hours",
    "expense_missing_receipt",
    "expense_over_policy",
    "contract_missing_field",
    "rate_differs_from_contract",
    "currency_differs_from_contract",
)


def generate_firm(ctx: SandboxContext, *, size: str = "small", seed: int = 0) -> dict[str, Any]:
    """Generate the firm into ``ctx`` (stores must be empty); returns the manifest."""
    return generate_into(ctx, size=size, seed=seed)
