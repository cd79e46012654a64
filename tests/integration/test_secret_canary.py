"""Secrets never leak: unique canaries are planted in each connection's password and in a
token-ish extra; the syncs and the write-back run, on the happy path and on error paths (500s
until the retry cap, wrong credentials refused with 401); no canary appears in any captured log
line, exception text, returned (XCom-able) value, ``ops.outbox.last_error`` or anything else
the warehouse stored."""

from __future__ import annotations

import copy
import json
import logging
import traceback
import uuid

import psycopg
import pytest

from erpsync.sync import specs
from erpsync.sync.spec import RunInfo
from tests.integration import writeback_harness as h
from tests.sync_calls import run_sync

TAG = f"cnry{uuid.uuid4().hex[:10]}"
SECRETS = {
    name: {"password": f"{TAG}-{name}-password", "token": f"{TAG}-{name}-token"}
    for name in ("crm", "psa", "erp")
}
WRONG = f"{TAG}-wrong-password"
FAST_RETRIES = h.FAST_RETRIES


def _credentials(password_of=lambda name: SECRETS[name]["password"]) -> dict:
    creds = copy.deepcopy(h.SANDBOX_CREDENTIALS)
    for name, cred in creds.items():
        cred["password"] = password_of(name)
        cred["extra"] = {**cred["extra"], "api_token": SECRETS[name]["token"], **FAST_RETRIES}
    return creds


def _last_errors(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT last_error FROM ops.outbox WHERE last_error IS NOT NULL")
        return [r[0] for r in rows.fetchall()]


def _warehouse_text(url: str) -> str:
    """Every row of every table erpsync writes, as text."""
    parts = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            """SELECT table_schema, table_name FROM information_schema.tables
                WHERE table_schema IN ('ops', 'audit', 'core', 'raw')
                  AND table_type = 'BASE TABLE'"""
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(
                f'SELECT t::text FROM "{schema}"."{table}" t'  # noqa: S608 - catalogue names
            ).fetchall()
            parts.extend(r[0] for r in rows)
    return "\n".join(parts)


@pytest.fixture
def sandbox(tmp_path):
    from erpsync_sandbox.common import SandboxConfig
    from erpsync_sandbox.serve import start_sandbox

    config = SandboxConfig(
        crm_client_secret=SECRETS["crm"]["password"],
        psa_token=SECRETS["psa"]["password"],
        erp_client_secret=SECRETS["erp"]["password"],
    )
    handle = start_sandbox(tmp_path / "sandbox", size="small", seed=0, config=config)
    yield handle
    handle.stop()


def test_no_canary_in_logs_errors_returns_or_the_warehouse(sandbox, warehouse_db, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    returned: list[str] = []
    errors: list[str] = []

    def record_error(exc: BaseException) -> None:
        errors.append(str(exc))
        errors.append(repr(exc))
        errors.append("".join(traceback.format_exception(exc)))

    # happy path: the canaries are the real credentials
    run = RunInfo.local("canary")
    with h.connections(sandbox, warehouse_db, _credentials()):
        stats = h.sync_all(warehouse_db, run, only=specs.MASTER_DATA)
        returned += [json.dumps(s.as_dict()) for s in stats.values()]
        returned.append(json.dumps(h.relay_until_done(run)))

        # error path 1: 500s on every system until the retry cap, for reads and writes
        account = sandbox.ctx.stores["crm"].scan("Account")[0]
        account["Name"] = account["Name"] + " Holding"
        sandbox.ctx.stores["crm"].put("Account", account["Id"], account)
        for service in ("psa", "erp"):
            sandbox.ctx.faults_for(service).patch({"error_rate_5xx": 1.0})
        returned.append(json.dumps(run_sync(specs.CLIENTS, warehouse_db, run=run).as_dict()))
        for system in ("erp", "psa"):
            st = h.run_outbox(system, run=run)
            assert st.failed >= 1
            returned.append(json.dumps(st.as_dict()))
        last_errors = _last_errors(warehouse_db)
        for spec in (specs.PEOPLE, specs.TAX_CODES):
            with pytest.raises(Exception) as failed:
                run_sync(spec, warehouse_db, run=run, full=True)
            record_error(failed.value)
        for service in ("psa", "erp"):
            sandbox.ctx.faults_for(service).patch({"error_rate_5xx": 0.0})

    # error path 2: wrong credentials, refused by every system
    with h.connections(sandbox, warehouse_db, _credentials(lambda name: WRONG)):
        for spec in (specs.CLIENTS, specs.PEOPLE, specs.TAX_CODES):
            with pytest.raises(Exception) as refused:
                run_sync(spec, warehouse_db, run=run, full=True)
            record_error(refused.value)
        for system in ("erp", "psa"):
            st = h.run_outbox(system, run=run)
            assert st.failed >= 1
            returned.append(json.dumps(st.as_dict()))

    last_errors += _last_errors(warehouse_db)
    captured = capfd.readouterr()
    logs = "\n".join(
        [caplog.text, captured.out, captured.err]
        + [r.getMessage() for r in caplog.records]
        + [str(r.args) for r in caplog.records]
    )
    # the error paths really ran, and said something useful
    assert len(errors) == 5 * 3
    assert last_errors and any("401" in e or "Auth" in e for e in last_errors), last_errors
    assert any("HTTP 5" in e for e in last_errors), last_errors
    secrets = [WRONG, *(v for s in SECRETS.values() for v in s.values())]
    haystacks = {
        "logs": logs,
        "exceptions": "\n".join(errors),
        "returns": "\n".join(returned),
        "outbox.last_error": "\n".join(last_errors),
        "warehouse": _warehouse_text(warehouse_db),
    }
    leaks = {
        where: [s for s in secrets if s in text or TAG in text] for where, text in haystacks.items()
    }
    assert leaks == dict.fromkeys(haystacks, []), leaks
