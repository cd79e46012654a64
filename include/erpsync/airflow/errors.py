"""Turning the library's "this will not fix itself" errors into Airflow's no-retry failure.

Retries are for transient trouble (a system briefly down, a 5xx). A wrong schema version or a
missing connection fails the same way on every retry, so tasks raise it as
``AirflowFailException``: the run fails at once with the message that says what to fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def fail_without_retry(*error_types: type[BaseException]) -> Iterator[None]:
    """Re-raise the given error types as ``AirflowFailException`` (same message, no retry)."""
    try:
        yield
    except error_types as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc
