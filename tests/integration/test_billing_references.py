"""Every id a person types in the billing form is checked before the run starts (issue 14): an
unknown or deleted client and an unknown invoice to credit are refused, naming the value."""

from __future__ import annotations

import psycopg
import pytest

from erpsync.airflow import billing_tasks
from erpsync.invoicing.references import unknown_references
from erpsync.warehouse import connection


@pytest.fixture
def warehouse(warehouse_db):
    with psycopg.connect(warehouse_db, autocommit=True) as conn:
        for n, (crm_id, deleted) in enumerate((("001KNOWN", False), ("001GONE", True)), 1):
            canon = conn.execute(
                "INSERT INTO core.id_map (entity_type, crm_id) VALUES ('client', %s) "
                "RETURNING canonical_id",
                (crm_id,),
            ).fetchone()[0]
            conn.execute(
                """INSERT INTO core.clients (crm_id, canonical_id, legal_name, billing_country,
                        currency, source_record_id, row_hash, first_run_id, last_run_id,
                        deleted_at)
                    VALUES (%s, %s, %s, 'DE', 'EUR', %s, 'h', 'seed', 'seed',
                            CASE WHEN %s THEN now() END)""",
                (crm_id, canon, f"Client {n}", crm_id, deleted),
            )
    return warehouse_db


def test_known_clients_pass_and_unknown_ones_are_named(warehouse):
    with psycopg.connect(warehouse) as conn:
        assert unknown_references(conn, {"clients": ["001KNOWN"]}) == []
        assert unknown_references(conn, {"clients": []}) == []  # empty: every client
        problems = unknown_references(conn, {"clients": ["001KNOWN", "001NOPE", "001GONE"]})
    assert len(problems) == 2
    assert "unknown client id(s) ['001NOPE']" in problems[0]
    assert "['001GONE'] were deleted" in problems[1]


def test_an_unknown_invoice_to_credit_is_named(warehouse):
    with psycopg.connect(warehouse) as conn:
        problems = unknown_references(conn, {"credit_note_for": "PSI-404"})
    assert problems == [
        "no invoice 'PSI-404' to credit: enter the document number, the ERP invoice number "
        "or the invoice id of a posted invoice"
    ]


def test_the_plan_task_refuses_the_run_before_it_starts(warehouse, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setattr(connection, "connect", lambda: psycopg.connect(warehouse))
    request = {"kind": "period", "clients": ["001KNOWN"], "billing_types": [], "dry_run": False}
    assert billing_tasks.check_references(request) is request
    with pytest.raises(AirflowFailException, match=r"unknown client id\(s\) \['001X'\]"):
        billing_tasks.check_references({**request, "clients": ["001KNOWN", "001X"]})
