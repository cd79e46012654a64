"""Anomaly flags stay readable: at most MAX_FLAGS_PER_KIND of one kind per invoice are listed,
the rest are counted in one summary flag with the numbers."""

from __future__ import annotations

from erpsync.invoicing.anomalies import MAX_FLAGS_PER_KIND, _cap


def flag(code: str, n: int, groups: int = 0) -> dict:
    return {"code": code, "message": f"{code} {n}", "numbers": {"groups_on_invoice": groups}}


def test_flags_are_capped_per_kind_with_a_count_of_the_rest():
    found = [flag("possible_duplicate", i, groups=57) for i in range(MAX_FLAGS_PER_KIND)]
    found += [flag("rate_off_contract", i) for i in range(3)]
    _cap(found)
    dups = [f for f in found if f["code"] == "possible_duplicate"]
    assert len(dups) == MAX_FLAGS_PER_KIND + 1
    assert dups[-1]["numbers"] == {"total": 57, "listed": MAX_FLAGS_PER_KIND}
    assert dups[-1]["message"].startswith(f"{57 - MAX_FLAGS_PER_KIND} more possible_duplicate")
    assert [f["message"] for f in found if f["code"] == "rate_off_contract"] == [
        "rate_off_contract 0",
        "rate_off_contract 1",
        "rate_off_contract 2",
    ]


def test_few_flags_are_kept_as_they_are():
    found = [flag("hours_spike", 1), flag("amount_vs_history", 2)]
    before = [dict(f) for f in found]
    _cap(found)
    assert found == before


def test_negative_expenses_are_flagged_as_credits_with_their_amount(pg_server_url):
    """Issue 14: a negative Harvest expense is billed as a credit line, never silently: the
    approver sees each invoice's credits counted and summed per currency."""
    import psycopg

    from erpsync.invoicing.anomalies import credit_flags

    with psycopg.connect(pg_server_url) as conn:
        conn.execute(
            "CREATE TEMP TABLE _inv_billable (invoice_id bigint, item_key text, item_type text,"
            " amount numeric, currency text)"
        )
        conn.execute(
            """INSERT INTO _inv_billable VALUES
               (1, 'expense:e1', 'expense', -55.000, 'EUR'),
               (1, 'expense:e2', 'expense', -10, 'EUR'),
               (1, 'expense:e3', 'expense', 22.00, 'EUR'),
               (1, 'time:t1', 'time', 100, 'EUR'),
               (2, 'expense:e4', 'expense', 12, 'JPY')"""
        )
        flags = credit_flags(conn)
        conn.rollback()
    assert list(flags) == [1]
    assert flags[1] == [
        {
            "code": "expense_credit",
            "message": "2 negative expense(s) billed as credit lines: -65.00 EUR (refunds "
            "entered in the PSA; check they belong on this invoice)",
            "numbers": {
                "items": 2,
                "amount": "-65.00",
                "currency": "EUR",
                "item_keys": ["expense:e1", "expense:e2"],
            },
        }
    ]
