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
