"""A task that fails after its last retry alerts the data engineers with its log link: a real
``airflow dags test`` run of a DAG built with erpsync's house defaults (``default_args()``: the
``on_failure_callback`` is :class:`erpsync.notify.alerts.TaskFailureNotifier`), its retries cut
to one with a 1 s delay so the test is quick. The first failure (a retry follows) sends nothing;
the last one sends one mail, with the error's first line scrubbed of secrets, to the loopback
SMTP server. With the mail server down the task's outcome is the task's own (failed, for its
own error), the failure to notify is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import psycopg
import pytest

from tests.integration.notify_harness import MailServer, airflow_env, free_port

DAG = "erpsync_notify_failure_probe"
PEOPLE = {"data_engineers": "data-eng@firm.example"}

DAG_FILE = textwrap.dedent(
    '''
    """A task that always fails (the notification tests' probe)."""
    from datetime import timedelta

    import pendulum
    from airflow.sdk import dag, task

    from erpsync.airflow.dag_defaults import default_args, tags

    @dag(
        dag_id="erpsync_notify_failure_probe",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        default_args={
            **default_args(),
            "retries": 1,
            "retry_delay": timedelta(seconds=1),
            "retry_exponential_backoff": False,
        },
        tags=tags("ops"),
        doc_md=__doc__,
    )
    def probe():
        @task
        def push_invoice():
            raise RuntimeError("ERP said 503\\nAuthorization: Bearer abc.def.ghi password=hunter2")

        @task
        def after():
            return "never"

        push_invoice() >> after()

    probe()
    '''
)


def _dags_test(env, dag_file) -> subprocess.CompletedProcess:
    # the probe's own folder is the DAG bundle of this run (dags test parses files inside it)
    env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent)}
    return subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", DAG, "-f", str(dag_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.timeout(400)
def test_failure_after_the_last_retry_mails_the_log_link(airflow_runtime, tmp_path):
    dag_file = tmp_path / "probe_dag.py"
    dag_file.write_text(DAG_FILE)
    smtp = MailServer().start()
    port = free_port()
    env = airflow_env(
        airflow_runtime, port, smtp, AIRFLOW_VAR_ERPSYNC_NOTIFICATIONS=json.dumps(PEOPLE)
    )
    try:
        result = _dags_test(env, dag_file)
        output = result.stdout + result.stderr
        assert "push_invoice" in output, output[-4000:]
        mails = smtp.wait_for(1, timeout=30)
        assert len(mails) == 1, (mails, output[-4000:])  # the retry sent nothing
        mail = mails[0]
        assert mail.to == ["data-eng@firm.example"]
        assert mail.subject == f"Failed: {DAG}.push_invoice after its last retry"
        assert mail.headers["X-Erpsync-Notification"] == "task_failed"
        assert f'href="http://localhost:{port}/dags/{DAG}/runs/' in mail.html
        assert "/tasks/push_invoice?try_number=2" in mail.html
        assert "failed on try 2 (its last)" in mail.html
        assert "RuntimeError ERP said 503" in mail.html
        assert "hunter2" not in mail.html and "abc.def.ghi" not in mail.html
        with psycopg.connect(airflow_runtime.warehouse_url) as c:
            row = c.execute(
                """SELECT status, recipients, detail ->> 'log_url' FROM ops.notifications_sent
                    WHERE kind = 'task_failed' AND source_dag_id = %s
                    ORDER BY notification_id DESC LIMIT 1""",
                (DAG,),
            ).fetchone()
        assert row[0] == "sent" and row[1] == ["data-eng@firm.example"]
        assert row[2].endswith("/tasks/push_invoice?try_number=2")
    finally:
        smtp.stop()

    # the mail server is down: the task fails for its own reason, the alert is recorded failed
    down = airflow_env(
        airflow_runtime,
        port,
        smtp,
        AIRFLOW_VAR_ERPSYNC_NOTIFICATIONS=json.dumps(PEOPLE),
    )
    down["AIRFLOW_CONN_ERPSYNC_SMTP"] = down["AIRFLOW_CONN_ERPSYNC_SMTP"].replace(
        str(smtp.port), str(free_port())
    )
    try:
        result = _dags_test(down, dag_file)
    finally:  # leave the session's Airflow without the probe DAG
        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "delete", "-y", DAG],
            env=down,
            capture_output=True,
            timeout=120,
        )
    output = result.stdout + result.stderr
    assert "ERP said 503" in output
    with psycopg.connect(airflow_runtime.warehouse_url) as c:
        status, error = c.execute(
            """SELECT status, last_error FROM ops.notifications_sent
                WHERE kind = 'task_failed' AND source_dag_id = %s
                ORDER BY notification_id DESC LIMIT 1""",
            (DAG,),
        ).fetchone()
    assert status == "failed" and "Connection refused" in error
