"""Notifications: tell the right person, through Airflow's notifier interface.

* :mod:`erpsync.notify.digest`: the daily exception digest per owner (``erpsync_notifications``
  DAG);
* :mod:`erpsync.notify.approvals`: an invoice batch waits for approval: the approvers are told at
  once, reminded, and a second group is told before the timeout rejects it;
* :mod:`erpsync.notify.alerts`: deadline alerts on the nightly syncs and the monthly billing run,
  task failures after the last retry;
* :mod:`erpsync.notify.delivery`: one message, sent at most once (``ops.notifications_sent``),
  through the SMTP provider's notifier; a failing mail server is recorded, never raised;
* :mod:`erpsync.notify.config`: who gets what (the ``erpsync_notifications`` Variable).
"""
