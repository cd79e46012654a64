"""erpsync dates Business Central's VAT rates itself (audit B4): VAT Posting Setup has no
validity dates, so ``erpsync.sync.vat_rates`` turns each sync's view of it into periods in
``core.tax_rates``, and billing finds the rate in force on the invoice date."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg

from erpsync.sync import vat_rates
from erpsync.sync.spec import RunInfo

D = dt.date


def _setup(conn, rows: dict[tuple[str, str], str], blocked: set | None = None) -> None:
    """core.vat_posting_setup as a tax_rates sync leaves it (deleted rows soft-deleted)."""
    conn.execute("UPDATE core.vat_posting_setup SET deleted_at = now()")
    for (bus, prod), pct in rows.items():
        conn.execute(
            """INSERT INTO core.vat_posting_setup (vat_bus_posting_group, tax_code, rate_percent,
                   blocked, source_record_id, row_hash, first_run_id, last_run_id)
               VALUES (%s, %s, %s, %s, %s, 'h', 'r', 'r')
               ON CONFLICT (vat_bus_posting_group, tax_code) DO UPDATE
               SET rate_percent = EXCLUDED.rate_percent, blocked = EXCLUDED.blocked,
                   deleted_at = NULL""",
            (bus, prod, Decimal(pct), (bus, prod) in (blocked or set()), f"{bus}|{prod}"),
        )


def _periods(conn) -> list[tuple]:
    return conn.execute(
        """SELECT vat_bus_posting_group, tax_code, rate_percent, valid_from, valid_to
             FROM core.tax_rates WHERE deleted_at IS NULL ORDER BY 1, 2, 4"""
    ).fetchall()


def test_first_seen_changed_unchanged_and_removed_rates(warehouse_db):
    run = RunInfo.local("vat")
    with psycopg.connect(warehouse_db) as conn:
        _setup(conn, {("DOMESTIC", "STANDARD"): "21", ("EU", "REVERSE"): "0"})
        first = vat_rates.date_vat_rates(conn, run, day=D(2026, 3, 1), since=D(2019, 1, 1))
        assert first == {"opened": 2, "closed": 0, "corrected": 0}
        assert _periods(conn) == [
            ("DOMESTIC", "STANDARD", Decimal("21"), D(2019, 1, 1), None),
            ("EU", "REVERSE", Decimal("0"), D(2019, 1, 1), None),
        ]
        # unchanged: nothing happens
        assert vat_rates.date_vat_rates(conn, run, day=D(2026, 3, 2)) == {
            "opened": 0,
            "closed": 0,
            "corrected": 0,
        }
        # the percentage is overwritten in BC and a new combination appears
        _setup(
            conn,
            {
                ("DOMESTIC", "STANDARD"): "22",
                ("EU", "REVERSE"): "0",
                ("EXPORT", "EXPORT"): "0",
            },
        )
        assert vat_rates.date_vat_rates(conn, run, day=D(2026, 7, 1)) == {
            "opened": 2,
            "closed": 1,
            "corrected": 0,
        }
        # a second change on the same day corrects that day's period
        _setup(conn, {("DOMESTIC", "STANDARD"): "23", ("EU", "REVERSE"): "0"})
        assert vat_rates.date_vat_rates(conn, run, day=D(2026, 7, 1)) == {
            "opened": 0,
            "closed": 0,
            "corrected": 2,  # STANDARD 22 -> 23; EXPORT removed the day it appeared
        }
        # blocked in BC: the period closes
        _setup(
            conn,
            {("DOMESTIC", "STANDARD"): "23", ("EU", "REVERSE"): "0"},
            blocked={("EU", "REVERSE")},
        )
        vat_rates.date_vat_rates(conn, run, day=D(2026, 9, 1))
        assert _periods(conn) == [
            ("DOMESTIC", "STANDARD", Decimal("21"), D(2019, 1, 1), D(2026, 6, 30)),
            ("DOMESTIC", "STANDARD", Decimal("23"), D(2026, 7, 1), None),
            ("EU", "REVERSE", Decimal("0"), D(2019, 1, 1), D(2026, 8, 31)),
        ]


def test_billing_finds_the_rate_in_force_on_the_invoice_date(warehouse_db):
    """The billing lookup (erpsync.invoicing.tax) reads the dated periods by tax area."""
    from erpsync.invoicing import tax

    run = RunInfo.local("vat")
    with psycopg.connect(warehouse_db) as conn:
        conn.execute(
            """INSERT INTO core.tax_codes (code, erp_id, display_name, tax_type, source_record_id,
                   row_hash, first_run_id, last_run_id)
               VALUES ('STANDARD', 'tg', 'Standard', 'VAT', 'tg', 'h', 'r', 'r')"""
        )
        # the same product group in another business group must not be picked up
        _setup(conn, {("DOMESTIC", "STANDARD"): "21", ("EU", "STANDARD"): "25"})
        vat_rates.date_vat_rates(conn, run, day=D(2026, 1, 1), since=D(2020, 1, 1))
        _setup(conn, {("DOMESTIC", "STANDARD"): "22", ("EU", "STANDARD"): "25"})
        vat_rates.date_vat_rates(conn, run, day=D(2026, 7, 1))

        def rate_on(day: dt.date) -> Decimal:
            conn.execute("DROP TABLE IF EXISTS _inv_accounts, _inv_tax")
            conn.execute("CREATE TEMP TABLE _inv_accounts (account_id text)")
            conn.execute("INSERT INTO _inv_accounts VALUES ('001NL')")
            conn.execute(
                """INSERT INTO core.tax_profiles (crm_account_id, country, source_record_id,
                       row_hash, first_run_id, last_run_id)
                   VALUES ('001NL', 'NL', '001NL', 'h', 'r', 'r') ON CONFLICT DO NOTHING"""
            )
            params = {
                "home": "NL",
                "inv_date": day,
                "note_exempt": "",
                "note_reverse": "",
                "note_export": "",
                **tax.tax_sql_params(),
            }
            conn.execute(tax.TAX_RESOLUTION_SQL.replace("ON COMMIT DROP", ""), params)
            return conn.execute("SELECT tax_rate FROM _inv_tax").fetchone()[0]

        assert rate_on(D(2026, 6, 30)) == Decimal("21")
        assert rate_on(D(2026, 7, 1)) == Decimal("22")
