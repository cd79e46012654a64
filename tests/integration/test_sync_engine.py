"""The sync engine against the sandbox firm (real HTTP, the pack's connectors) and a real
PostgreSQL warehouse: a full sync loads exactly what the systems hold, a second run changes
nothing, an incremental run after a clock advance touches exactly the change log, invalid
records are quarantined with their reason codes, and a run killed mid-load leaves nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

from erpsync.runtime.database import connection_parts
from erpsync.sync import engine, specs
from erpsync.sync.spec import RunInfo
from tests.entity_lists import core_tables
from tests.sync_calls import run_sync

REPO = Path(__file__).resolve().parents[2]


def connection_env(sandbox, warehouse_url: str) -> dict[str, str]:
    """AIRFLOW_CONN_* for the sandbox systems (sandbox credentials) and the warehouse."""

    def http(name: str, login: str, password: str, extra: dict) -> str:
        host, port = sandbox.urls[name].removeprefix("http://").split(":")
        return json.dumps(
            {
                "conn_type": "http",
                "host": host,
                "port": int(port),
                "schema": "http",
                "login": login,
                "password": password,
                "extra": extra,
            }
        )

    parts = connection_parts(warehouse_url)
    warehouse = {
        "conn_type": "postgres",
        "host": parts["host"],
        "port": parts["port"],
        "login": parts["login"],
        "schema": parts["schema"],
    }
    if parts.get("password"):
        warehouse["password"] = parts["password"]
    return {
        "AIRFLOW_CONN_ERPSYNC_CRM": http(
            "crm",
            "erpsync-sandbox",
            "sandbox-crm-secret",
            {"api_version": "v60.0", "token_path": "/services/oauth2/token"},
        ),
        "AIRFLOW_CONN_ERPSYNC_PSA": http(
            "psa",
            "",
            "sandbox-psa-token",
            # the client-side limiter off (connectors/throttle.py): the sandbox's limit stays on
            # unless a test lifts it, and the full-sync test meets its 429s as before
            {
                "account_id": "100200",
                "user_agent": "erpsync tests (ops@example.com)",
                "rate_limit": "off",
            },
        ),
        "AIRFLOW_CONN_ERPSYNC_ERP": http(
            "erp",
            "erpsync-sandbox",
            "sandbox-erp-secret",
            {
                "tenant": "sandbox",
                "environment": "production",
                "token_path": "/sandbox/oauth2/v2.0/token",
            },
        ),
        "AIRFLOW_CONN_ERPSYNC_WAREHOUSE": json.dumps(warehouse),
    }


@pytest.fixture
def systems(sandbox, warehouse_db, monkeypatch):
    for key, value in connection_env(sandbox, warehouse_db).items():
        monkeypatch.setenv(key, value)
    return sandbox


def lift_psa_rate_limit(sandbox) -> None:
    """The PSA's 100 requests / 15 s limit is exercised by the full-sync test (and the
    connectors' own tests); the other scenarios lift it so waiting does not dominate them."""
    httpx.put(
        sandbox.urls["psa"] + "/__admin/psa/rate_limit", json={"spec": "off"}, timeout=10
    ).raise_for_status()


def sync_all(label: str) -> dict[str, engine.SyncStats]:
    run = RunInfo.local(label)
    return {name: run_sync(spec, run=run) for name, spec in specs.ALL.items()}


def fingerprint(url: str) -> dict[str, list]:
    with psycopg.connect(url) as conn:
        out = {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608
            for table in (*core_tables(specs.ALL.values()), "core.id_map")
        }
        out["outbox"] = conn.execute("SELECT count(*) FROM ops.outbox").fetchall()
        return out


def rows(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def store_bodies(sandbox, system: str, resource: str) -> list[dict]:
    return [r.data() for r in sandbox.ctx.stores[system].iter_rows(resource)]


def expected_overrides(sandbox) -> set[tuple[str, str, Decimal]]:
    out = set()
    for opp in store_bodies(sandbox, "crm", "Opportunity"):
        if opp.get("IsDeleted") or not (opp.get("IsWon") and opp.get("IsClosed")):
            continue
        # one row per person: the latest rate (the last effective_from; none: the start)
        latest: dict[str, Decimal] = {}
        items = json.loads(opp.get("Rate_Overrides__c") or "[]")
        for item in sorted(items, key=lambda i: i.get("effective_from") or ""):
            latest[item["user_email"].lower()] = Decimal(str(item["rate"]))
        out |= {(opp["Id"], email, rate) for email, rate in latest.items()}
    return out


def test_full_sync_loads_exactly_the_sandbox_and_a_second_run_changes_nothing(
    systems, warehouse_db
):
    sandbox = systems
    first = sync_all("full")
    assert all(s.mode == "full" for s in first.values())

    accounts = {a["Id"]: a for a in store_bodies(sandbox, "crm", "Account")}
    clients = dict(rows(warehouse_db, "SELECT crm_id, legal_name FROM core.clients"))
    assert clients == {i: a["Name"] for i, a in accounts.items()}
    assert first["clients"].inserted == len(accounts)

    # the planted invalid VAT ids (manifest) are exactly the profiles marked invalid
    manifest = sandbox.ctx.manifest()
    planted_vat = {
        p["id"]
        for p in manifest["problems"]
        if p["kind"] == "invalid_vat_id" and p["resource"] == "Account"
    }
    invalid = {
        r[0]
        for r in rows(
            warehouse_db, "SELECT crm_account_id FROM core.tax_profiles WHERE NOT vat_id_valid"
        )
    }
    assert planted_vat and invalid == planted_vat

    groups = store_bodies(sandbox, "erp", "taxGroups")
    assert {r[0] for r in rows(warehouse_db, "SELECT code FROM core.tax_codes")} == {
        g["code"] for g in groups
    }
    # VAT Posting Setup (no dates in BC): on the first sync every rate opens a period from
    # ERPSYNC_TAX_RATES_SINCE (default 2000-01-01)
    setup = {
        (t["VAT_Bus_Posting_Group"], t["VAT_Prod_Posting_Group"]): Decimal(str(t["VAT_Percent"]))
        for t in store_bodies(sandbox, "erp", "vatPostingSetup")
    }
    loaded_setup = {
        (r[0], r[1]): r[2]
        for r in rows(
            warehouse_db,
            "SELECT vat_bus_posting_group, tax_code, rate_percent FROM core.vat_posting_setup",
        )
    }
    assert loaded_setup == setup
    periods = {
        (r[0], r[1]): (r[2], r[3].isoformat(), r[4])
        for r in rows(
            warehouse_db,
            "SELECT vat_bus_posting_group, tax_code, rate_percent, valid_from, valid_to"
            " FROM core.tax_rates",
        )
    }
    assert periods == {key: (pct, "2000-01-01", None) for key, pct in setup.items()}

    users = store_bodies(sandbox, "psa", "users")
    assert {r[0] for r in rows(warehouse_db, "SELECT psa_id FROM core.people")} == {
        str(u["id"]) for u in users
    }
    for kind in ("billable", "cost"):
        expected = {
            (str(r["id"]), Decimal(str(r["amount"])))
            for r in store_bodies(sandbox, "psa", f"{kind}_rates")
        }
        loaded = set(
            rows(
                warehouse_db,
                "SELECT psa_rate_id, amount FROM core.rate_cards WHERE kind = %s",
                (kind,),
            )
        )
        assert loaded == expected, kind
    overrides = set(
        rows(
            warehouse_db,
            "SELECT opportunity_id, user_email, rate FROM core.contract_rate_overrides",
        )
    )
    assert overrides == expected_overrides(sandbox) and overrides

    # one canonical id per client and per person
    id_map = dict(rows(warehouse_db, "SELECT entity_type, count(*) FROM core.id_map GROUP BY 1"))
    assert id_map == {"client": len(accounts), "person": len(users)}

    # nothing planted for these entities is a validation failure: quarantine stays empty
    assert rows(warehouse_db, "SELECT entity, record_key, reason_code FROM ops.quarantine") == []

    stats = rows(
        warehouse_db,
        "SELECT entity, status, records_read, records_loaded, records_unchanged "
        "FROM ops.run_stats ORDER BY run_stat_id",
    )
    assert [(e, s) for e, s, *_ in stats] == [(name, "success") for name in specs.ALL]
    assert stats[0][2:] == (len(accounts), len(accounts), 0)

    before = fingerprint(warehouse_db)
    second = sync_all("again")
    for name, s in second.items():
        assert (s.inserted, s.updated, s.deleted, s.written_back) == (0, 0, 0, 0), name
        assert s.read > 0, name
    assert fingerprint(warehouse_db) == before


def test_incremental_run_touches_exactly_the_change_log(systems, warehouse_db):
    sandbox = systems
    lift_psa_rate_limit(sandbox)
    sync_all("initial")
    admin = httpx.Client(base_url=sandbox.urls["crm"], timeout=30)
    seq = admin.get("/__admin/changes").json()["last_seq"]

    admin.post("/__admin/advance", json={"steps": 2, "seed": 3}).raise_for_status()
    # deletions the advance does not make: a CRM account (soft, recycle bin) and a PSA rate (hard)
    crm, psa = sandbox.ctx.stores["crm"], sandbox.ctx.stores["psa"]
    gone_account = crm.ids("Account")[3]
    assert crm.delete("Account", gone_account, soft=True, set_fields={"IsDeleted": True})
    gone_rate = psa.ids("billable_rates")[5]
    assert psa.delete("billable_rates", gone_rate)

    changes = admin.get("/__admin/changes", params={"since": seq}).json()["changes"]

    def changed(system: str, resource: str) -> set[str]:
        return {c["id"] for c in changes if c["system"] == system and c["resource"] == resource}

    stats = sync_all("incremental")
    assert stats["clients"].mode == "incremental"
    assert stats["contract_rate_overrides"].mode == "incremental"

    accounts = changed("crm", "Account")
    assert gone_account in accounts and len(accounts) >= 2
    assert set(stats["clients"].changed_keys) == accounts
    assert set(stats["tax_profiles"].changed_keys) == accounts
    assert stats["clients"].deleted == 1 and stats["tax_profiles"].deleted == 1
    assert rows(
        warehouse_db,
        "SELECT deleted_at IS NOT NULL FROM core.clients WHERE crm_id = %s",
        (gone_account,),
    ) == [(True,)]
    # an incremental read re-reads only the boundary record(s) besides the changes
    assert stats["clients"].read <= len(accounts) + 2

    assert set(stats["tax_rates"].changed_keys) == changed("erp", "vatPostingSetup")
    assert stats["tax_rates"].changed_keys == ["DOMESTIC|REDUCED"], "the advance raises it"
    assert stats["tax_codes"].changed_keys == sorted(changed("erp", "taxGroups"))
    assert set(stats["people"].changed_keys) == changed("psa", "users")
    for kind in ("billable", "cost"):
        keys = {k.split("|", 1)[1] for k in stats[f"{kind}_rates"].changed_keys}
        assert keys == changed("psa", f"{kind}_rates"), kind
    assert stats["billable_rates"].deleted == 1

    # overrides: exactly the changed opportunities that carry overrides (amendments bump the
    # contract version of every override row)
    opportunities = {
        o["Id"]: o
        for o in store_bodies(sandbox, "crm", "Opportunity")
        if o["Id"] in changed("crm", "Opportunity")
    }
    with_overrides = {
        i for i, o in opportunities.items() if o.get("Rate_Overrides__c") and o.get("IsWon")
    }
    touched = {k.split("|", 1)[0] for k in stats["contract_rate_overrides"].changed_keys}
    assert touched == with_overrides

    # erpsync dates the change itself: the old period closes the day before the sync date and
    # a new one opens on it (BC's VAT Posting Setup was simply overwritten)
    today = dt.datetime.now(dt.UTC).date()
    reduced = rows(
        warehouse_db,
        "SELECT valid_from, valid_to, rate_percent FROM core.tax_rates "
        "WHERE vat_bus_posting_group = 'DOMESTIC' AND tax_code = 'REDUCED'"
        " AND deleted_at IS NULL ORDER BY 1",
    )
    assert reduced == [
        (dt.date(2000, 1, 1), today - dt.timedelta(days=1), Decimal("9")),
        (today, None, Decimal("10")),
    ]

    # and the next run after that changes nothing
    again = sync_all("settled")
    assert all(s.changed == 0 for s in again.values())


def test_invalid_records_are_quarantined_with_reason_codes_once(systems, warehouse_db):
    sandbox = systems
    lift_psa_rate_limit(sandbox)
    crm, psa, erp = (sandbox.ctx.stores[s] for s in ("crm", "psa", "erp"))
    account = dict(crm.get("Account", crm.ids("Account")[0]))
    bad_account = "001BADCURRENCY0001"
    crm.put("Account", bad_account, {**account, "Id": bad_account, "CurrencyIsoCode": "XYZ"})
    user = dict(psa.get("users", psa.ids("users")[0]))
    psa.put("users", 3199999, {**user, "id": 3199999, "email": "not an email"})
    some_user = psa.ids("users")[1]
    psa.put(
        "billable_rates",
        5299999,
        {
            "id": 5299999,
            "amount": -5,
            "currency": "EUR",
            "start_date": "2026-01-01",
            "end_date": None,
            "created_at": "2026-10-01T00:00:00Z",
        },
        parent_id=some_user,
    )
    rate = dict(erp.get("vatPostingSetup", "DOMESTIC|STANDARD"))
    erp.put(
        "vatPostingSetup",
        "BAD|RATE",
        {
            **rate,
            "VAT_Bus_Posting_Group": "BAD",
            "VAT_Prod_Posting_Group": "RATE",
            "VAT_Percent": 150,
        },
        stamp_field=None,
    )
    won = next(o for o in store_bodies(sandbox, "crm", "Opportunity") if o.get("Rate_Overrides__c"))
    crm.put("Opportunity", won["Id"], {**won, "Rate_Overrides__c": "[{not json"})

    planted = {
        ("clients", bad_account, "invalid_currency"),
        ("people", "3199999", "invalid_email"),
        ("billable_rates", "5299999", "negative_rate"),
        ("tax_rates", "BAD|RATE", "rate_out_of_range"),
        ("contract_rate_overrides", won["Id"], "malformed_json_field"),
    }
    first = sync_all("planted")
    quarantined = set(
        rows(warehouse_db, "SELECT entity, record_key, reason_code FROM ops.quarantine")
    )
    assert quarantined == planted
    payload = rows(
        warehouse_db,
        "SELECT payload->>'CurrencyIsoCode', run_id FROM ops.quarantine WHERE record_key = %s",
        (bad_account,),
    )
    assert payload == [("XYZ", first["clients"].run_id)]
    assert {n: s.quarantined for n, s in first.items() if s.quarantined} == {
        e: 1 for e, _k, _c in planted
    }
    assert rows(warehouse_db, "SELECT 1 FROM core.clients WHERE crm_id = %s", (bad_account,)) == []
    # the tax profile of the same account is valid and loads: quarantine is per entity
    assert rows(
        warehouse_db, "SELECT 1 FROM core.tax_profiles WHERE crm_account_id = %s", (bad_account,)
    ) == [(1,)]
    # the override rows of the broken opportunity keep their last good version (none yet)
    assert (
        rows(
            warehouse_db,
            "SELECT 1 FROM core.contract_rate_overrides WHERE opportunity_id = %s",
            (won["Id"],),
        )
        == []
    )

    # a rerun does not pile up copies
    sync_all("planted-again")
    assert rows(warehouse_db, "SELECT count(*) FROM ops.quarantine") == [(len(planted),)]

    # fixed at the source: it loads and its quarantine row is resolved
    crm.put("Account", bad_account, {**account, "Id": bad_account, "CurrencyIsoCode": "EUR"})
    fixed = run_sync(specs.CLIENTS, run=RunInfo.local("fixed"))
    assert fixed.inserted == 1 and bad_account in fixed.changed_keys
    assert rows(
        warehouse_db,
        "SELECT resolved_by_run IS NOT NULL FROM ops.quarantine WHERE record_key = %s",
        (bad_account,),
    ) == [(True,)]


def test_a_failure_mid_load_leaves_nothing_and_the_rerun_loads_once(systems, warehouse_db):
    from erpsync.sync import sources

    psa = specs.PEOPLE.source.client()
    lift_psa_rate_limit(systems)

    def failing_pages():
        records = [r for page in specs.PEOPLE.source.pages(psa, sources.Read(None)) for r in page]
        yield records[:10]
        yield records[10:20]
        raise ConnectionError("network dropped mid-read")

    with pytest.raises(ConnectionError):
        run_sync(specs.PEOPLE, run=RunInfo.local("broken"), pages=failing_pages())
    for table in ("core.people", "core.id_map", "raw.vendor_records", "ops.sync_watermarks"):
        assert rows(warehouse_db, f"SELECT count(*) FROM {table}") == [(0,)], table  # noqa: S608
    assert rows(warehouse_db, "SELECT entity, status FROM ops.run_stats") == [("people", "failed")]

    stats = run_sync(specs.PEOPLE, run=RunInfo.local("rerun"))
    users = len(store_bodies(systems, "psa", "users"))
    assert (stats.read, stats.inserted) == (users, users)
    assert rows(warehouse_db, "SELECT count(*) FROM raw.vendor_records") == [(users,)]
    assert rows(warehouse_db, "SELECT count(*) FROM core.people") == [(users,)]


KILLED_SYNC = textwrap.dedent(
    """
    import sys, time
    import psycopg
    from erpsync.sync import engine, sources, specs
    from erpsync.sync.spec import RunInfo

    crm = specs.CLIENTS.source.client()

    def pages():
        records = [r for p in specs.CLIENTS.source.pages(crm, sources.Read(None)) for r in p]
        for i in range(0, len(records), 5):
            yield records[i:i + 5]
            if i == 10:
                print("LOADING", flush=True)
                time.sleep(120)

    from erpsync.warehouse import connection

    with connection.connect() as conn:
        engine.run_entity_sync(
            conn, specs.CLIENTS, run=RunInfo.local("killed"), client=crm, pages=pages()
        )
    """
)


def test_a_process_killed_mid_load_leaves_nothing_and_the_rerun_loads_once(systems, warehouse_db):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "LOADING", proc.stderr.read()
        # 15 records are in raw and staging inside the open transaction: kill it there
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    for table in ("core.clients", "raw.vendor_records", "ops.sync_watermarks", "ops.run_stats"):
        assert rows(warehouse_db, f"SELECT count(*) FROM {table}") == [(0,)], table  # noqa: S608

    stats = run_sync(specs.CLIENTS, run=RunInfo.local("after-kill"))
    accounts = len(store_bodies(systems, "crm", "Account"))
    assert (stats.read, stats.inserted, stats.updated) == (accounts, accounts, 0)
    assert rows(warehouse_db, "SELECT count(*) FROM raw.vendor_records") == [(accounts,)]
    assert rows(warehouse_db, "SELECT count(DISTINCT crm_id), count(*) FROM core.clients") == [
        (accounts, accounts)
    ]
    assert rows(warehouse_db, "SELECT cursor_ts IS NOT NULL FROM ops.sync_watermarks") == [(True,)]


def test_account_country_code_label_fallback_owner_and_documented_soql(
    systems, warehouse_db, tmp_path, monkeypatch
):
    """S2: the country comes from ``BillingCountryCode`` (a picklist org keeps the label in
    ``BillingCountry``), a label-only account is mapped to its ISO code, ``OwnerId`` lands for
    the VAT-exception owner; S2a: the incremental SOQL uses only documented literals."""
    from erpsync_sandbox.contract import CONTRACT_LOG_ENV, read_log

    sandbox = systems
    store = sandbox.ctx.stores["crm"]
    accounts = sorted(store_bodies(sandbox, "crm", "Account"), key=lambda a: a["Id"])
    assert all(a["BillingCountry"] != a["BillingCountryCode"] for a in accounts)  # labels
    legacy = accounts[0]  # converted from a free-text org: the label only
    store.put("Account", legacy["Id"], {**legacy, "BillingCountryCode": None})
    only = (specs.CLIENTS, specs.TAX_PROFILES)
    run = RunInfo.local("country-full")
    for spec in only:
        run_sync(spec, run=run)

    countries = dict(rows(warehouse_db, "SELECT crm_id, billing_country FROM core.clients"))
    assert countries == {a["Id"]: a["BillingCountryCode"] for a in accounts}
    tax_countries = dict(
        rows(warehouse_db, "SELECT crm_account_id, country FROM core.tax_profiles")
    )
    assert tax_countries == countries
    assert rows(warehouse_db, "SELECT count(*) FROM ops.quarantine") == [(0,)]
    owners = dict(
        rows(
            warehouse_db,
            "SELECT DISTINCT ON (record_key) record_key, payload ->> 'OwnerId' "
            "FROM raw.vendor_records WHERE source_system = 'crm' ORDER BY record_key, raw_id DESC",
        )
    )
    assert owners == {a["Id"]: a["OwnerId"] for a in accounts} and all(owners.values())

    log = tmp_path / "contract.jsonl"
    monkeypatch.setenv(CONTRACT_LOG_ENV, str(log))
    edited = accounts[1]
    store.put("Account", edited["Id"], {**edited, "Name": edited["Name"] + " Renamed"})
    run = RunInfo.local("country-incremental")
    stats = [run_sync(spec, run=run) for spec in only]
    assert [s.mode for s in stats] == ["incremental", "incremental"]
    assert stats[0].updated == 1
    time.sleep(0.2)  # the recorder writes each line just after the answer
    crm = [r for r in read_log(log) if r["service"] == "crm" and "erpsync" in r["user_agent"]]
    assert any(r["route"] == "/services/data/{version}/queryAll" for r in crm)
    assert [n for r in crm for n in r["undocumented"]] == []
