"""House defaults for every erpsync DAG, set in one place (STYLE.md habit 7).

DAG files call :func:`default_args` and :func:`tags` instead of repeating owner, retries and
tags; the DAG integrity suite (tests/dags) holds every DAG to the same rules. This module is
imported at parse time, so it imports nothing heavy.
"""

from __future__ import annotations

from datetime import timedelta

OWNER = "erpsync"

# The controlled tag vocabulary: a DAG's tags must come from here (finance users filter by them).
TAG_VOCABULARY = frozenset(
    {
        "erpsync",
        "ops",
        "master-data",
        "rates",
        "onboarding",
        "time-expense",
        "reconcile",
        "billing",
        "milestones",
        "data-quality",
        "crm",
        "psa",
        "erp",
    }
)

MIN_RETRIES = 2


def default_args(**overrides) -> dict:
    """Owner, retries with exponential backoff, an alert to the data engineers when a task fails
    after its last retry (with its log link: erpsync.notify.alerts), and anything a DAG
    overrides."""
    from erpsync.notify.alerts import TaskFailureNotifier

    args = {
        "owner": OWNER,
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": TaskFailureNotifier(),
    }
    args.update(overrides)
    if args["retries"] < MIN_RETRIES:
        raise ValueError(f"erpsync DAGs retry at least {MIN_RETRIES} times")
    return args


def tags(*names: str) -> list[str]:
    """``["erpsync", *names]`` after checking every name is in the vocabulary."""
    unknown = sorted(set(names) - TAG_VOCABULARY)
    if unknown:
        raise ValueError(f"tags not in the erpsync vocabulary: {unknown}")
    return ["erpsync", *[n for n in names if n != "erpsync"]]


def deadline(kind: str, what: str):
    """The deadline alert of a nightly sync (``kind="sync"``) or of the monthly billing run
    (``"billing"``): the data engineers are told when a run has not finished in time
    (erpsync.notify.alerts.deadline_alert; None when turned off)."""
    from erpsync.notify.alerts import deadline_alert

    return deadline_alert(kind, what)
