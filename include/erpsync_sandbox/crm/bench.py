"""Serving benchmark of the sandbox CRM's paged SOQL (``python -m erpsync_sandbox.crm.bench``).

Seeds ``--records`` synthetic Accounts into a throw-away state dir, serves the CRM app with
uvicorn in a child process (so client and server do not share a GIL), and reads every record
with three typical query shapes, following ``nextRecordsUrl`` with 2000-record batches:

* ``incremental``: ``WHERE SystemModstamp > ... ORDER BY SystemModstamp, Id`` (the replication
  cursor query; answered from the store's modstamp column without parsing bodies up front);
* ``full``: all records, no WHERE;
* ``filtered``: a WHERE on a body field plus ORDER BY Name (every body parsed at query time).

Prints records/second per shape (HTTP, JSON parsed by the client with orjson) and, on Linux,
records per CPU-second of the server process (less sensitive to other load on the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import socket
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from erpsync_sandbox.context import SandboxContext
from erpsync_sandbox.store import format_stamp, to_iso

from .app import create_app
from .schema import salesforce_id

QUERIES = {
    "incremental": (
        "SELECT Id, Name, AccountNumber, BillingCountry, CurrencyIsoCode, VAT_Id__c, "
        "Tax_Exempt__c, Reverse_Charge__c, ERP_Customer_No__c, SystemModstamp FROM Account "
        "WHERE SystemModstamp > 2026-01-01T00:00:00Z ORDER BY SystemModstamp, Id"
    ),
    "full": (
        "SELECT Id, Name, AccountNumber, BillingCountry, CurrencyIsoCode, VAT_Id__c, "
        "Tax_Exempt__c, Reverse_Charge__c, ERP_Customer_No__c, SystemModstamp FROM Account"
    ),
    "filtered": (
        "SELECT Id, Name, AccountNumber, BillingCountry, CurrencyIsoCode, VAT_Id__c, "
        "Tax_Exempt__c, Reverse_Charge__c, ERP_Customer_No__c, SystemModstamp FROM Account "
        "WHERE IsDeleted = false AND BillingCountry != 'XX' ORDER BY Name"
    ),
}


def seed(state_dir: Path, records: int) -> None:
    """Write ``records`` synthetic Accounts into ``state_dir``'s CRM store."""
    ctx = SandboxContext.open(state_dir)
    base = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    rows = []
    for i in range(records):
        rid = salesforce_id(f"0015g{i:010d}")
        ms = to_iso(base + dt.timedelta(seconds=i * 13))
        sf = format_stamp(ms, "salesforce")
        rows.append(
            (
                rid,
                {
                    "Id": rid,
                    "IsDeleted": False,
                    "Name": f"Account {i:07d}",
                    "AccountNumber": f"ACC-{i:07d}",
                    "Type": "Customer",
                    "Industry": "Consulting",
                    "BillingStreet": f"{i % 250} Main Street",
                    "BillingCity": "Berlin",
                    "BillingPostalCode": "10115",
                    "BillingCountry": ("DE", "FR", "US", "JP")[i % 4],
                    "CurrencyIsoCode": ("EUR", "EUR", "USD", "JPY")[i % 4],
                    "Payment_Terms__c": "Net 30",
                    "VAT_Id__c": f"DE{100000000 + i}",
                    "Tax_Exempt__c": False,
                    "Tax_Exemption_Reason__c": None,
                    "Reverse_Charge__c": i % 4 == 1,
                    "PO_Required__c": i % 3 == 0,
                    "ERP_Customer_No__c": f"C{i:07d}",
                    "CreatedDate": sf,
                    "LastModifiedDate": sf,
                },
                ms,
                None,
            )
        )
    ctx.stores["crm"].put_many("Account", rows)
    ctx.close()


def _serve(state_dir: str, port: int) -> None:
    import uvicorn  # only in the server process

    ctx = SandboxContext.open(state_dir)
    uvicorn.run(create_app(ctx), host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU time of process ``pid`` (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def read_all(http: httpx.Client, query: str, headers: dict[str, str]) -> int:
    """Follow a query to the end; returns the number of records read."""
    r = http.get("/services/data/v60.0/query", params={"q": query}, headers=headers)
    r.raise_for_status()
    page = orjson.loads(r.content)
    n = len(page["records"])
    while not page["done"]:
        r = http.get(page["nextRecordsUrl"], headers=headers)
        r.raise_for_status()
        page = orjson.loads(r.content)
        n += len(page["records"])
    return n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        started = time.perf_counter()
        seed(state, args.records)
        print(f"seeded {args.records} accounts in {time.perf_counter() - started:.1f}s")
        port = _free_port()
        proc = mp.get_context("spawn").Process(target=_serve, args=(str(state), port))
        proc.start()
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=60) as http:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        http.get("/__admin/health")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                token = http.post(
                    "/services/oauth2/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": "erpsync-sandbox",
                        "client_secret": "sandbox-crm-secret",
                    },
                ).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                for name, query in QUERIES.items():
                    read_all(http, query, headers)  # warm-up
                    cpu0 = _cpu_seconds(proc.pid or 0)
                    t0 = time.perf_counter()
                    total = sum(read_all(http, query, headers) for _ in range(args.rounds))
                    rate = total / (time.perf_counter() - t0)
                    cpu1 = _cpu_seconds(proc.pid or 0)
                    per_cpu = (
                        f"  {total / (cpu1 - cpu0):10,.0f} records per server CPU-second"
                        if cpu0 is not None and cpu1 is not None and cpu1 > cpu0
                        else ""
                    )
                    print(f"{name:12s} {total:8d} records  {rate:10,.0f} records/s{per_cpu}")
        finally:
            proc.terminate()
            proc.join(10)


if __name__ == "__main__":
    main()
