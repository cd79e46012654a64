"""Data quality: Great Expectations suites on the warehouse and the invoicing blocks
that critical failures open.

* :func:`run_suites` runs the version-controlled suites (``great_expectations/expectations``)
  inside a task and applies the blocks; GX is imported only there.
* :func:`active_blocks`, ``ops.dq_active_blocks`` and ``ops.dq_blocked(account_id,
  opportunity_id)`` / :func:`blocked_scope_sql` tell invoicing what to hold (reason
  ``dq_blocked``).
"""

from __future__ import annotations

from erpsync.quality.blocks import Block, active_blocks, blocked_scope_sql, is_blocked
from erpsync.quality.runner import DQResult, run_suites
from erpsync.quality.suites import ALL_SUITES, CORE_SUITES, RECON_SUITES

__all__ = [
    "ALL_SUITES",
    "CORE_SUITES",
    "RECON_SUITES",
    "Block",
    "DQResult",
    "active_blocks",
    "blocked_scope_sql",
    "is_blocked",
    "run_suites",
]
