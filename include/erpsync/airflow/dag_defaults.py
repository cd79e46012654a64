"""House defaults for every erpsync DAG, set in one place (STYLE.md habit 7).

DAG files call :func:`dag_kwargs` (start date, catchup, one active run, :func:`default_args`)
and :func:`tags` instead of repeating owner, retries and tags; the DAG integrity suite
(tests/dags) holds every DAG to the same rules. This module is imported at parse time, so it
imports nothing heavy.

Time zone: DAG files cannot read the ``erpsync_firm_timezone`` Variable at parse time, so the
schedules use :data:`FIRM_TIMEZONE`, which defaults to the value in ``airflow_settings.yaml``
(``America/New_York``) and can be overridden per deployment with the environment variable
``ERPSYNC_FIRM_TIMEZONE`` (read at parse time, no database access). Changing the firm's zone
means changing both the Variable and that environment variable (a unit test checks the default
matches airflow_settings.yaml).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum

if TYPE_CHECKING:
    from airflow.sdk.definitions.deadline import DeadlineAlert

OWNER = "erpsync"

DEFAULT_FIRM_TIMEZONE = "America/New_York"  # = airflow_settings.yaml erpsync_firm_timezone
FIRM_TIMEZONE = os.environ.get("ERPSYNC_FIRM_TIMEZONE", DEFAULT_FIRM_TIMEZONE)

#: the first logical date of every erpsync DAG (catchup is off: no run is made for the past)
START_DATE = (2026, 1, 1)

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


def default_args(**overrides: Any) -> dict[str, Any]:
    """Owner, retries with exponential backoff, an alert to the data engineers when a task fails
    after its last retry (with its log link: erpsync.notify.alerts), and anything a DAG
    overrides."""
    from erpsync.notify.alerts import TaskFailureNotifier

    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": TaskFailureNotifier(),
    }
    args.update(overrides)
    if int(args["retries"]) < MIN_RETRIES:
        raise ValueError(f"erpsync DAGs retry at least {MIN_RETRIES} times")
    return args


def dag_kwargs(*, timezone: str | None = None, **default_arg_overrides: Any) -> dict[str, Any]:
    """The ``@dag(...)`` keywords every erpsync DAG shares: ``start_date`` (midnight of
    :data:`START_DATE` in the firm's time zone, or ``timezone``), ``catchup=False``,
    ``max_active_runs=1`` and :func:`default_args` (with ``default_arg_overrides``). A DAG file
    adds what is its own: ``dag_id``, ``schedule``, ``tags``, ``doc_md``, ``params``."""
    return {
        "start_date": pendulum.datetime(*START_DATE, tz=timezone or FIRM_TIMEZONE),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": default_args(**default_arg_overrides),
    }


def tags(*names: str) -> list[str]:
    """``["erpsync", *names]`` after checking every name is in the vocabulary."""
    unknown = sorted(set(names) - TAG_VOCABULARY)
    if unknown:
        raise ValueError(f"tags not in the erpsync vocabulary: {unknown}")
    return ["erpsync", *[n for n in names if n != "erpsync"]]


def deadline(kind: str, what: str) -> DeadlineAlert | None:
    """The deadline alert of a nightly sync (``kind="sync"``) or of the monthly billing run
    (``"billing"``): the data engineers are told when a run has not finished in time
    (erpsync.notify.alerts.deadline_alert; None when turned off)."""
    from erpsync.notify.alerts import deadline_alert

    alert: DeadlineAlert | None = deadline_alert(kind, what)
    return alert
