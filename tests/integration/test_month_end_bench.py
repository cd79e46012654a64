"""The month-end benchmark (erpsync.bench.month_end) on the small firm: the whole billing run
against the sandbox with the vendors' limits on, every invoice pushed once, requests counted per
system at the sandbox, floors computed, and the push's Business Central requests per invoice at
the batched level (deep insert, one $expand read, post, re-read, lookups 100 per $batch)."""

from __future__ import annotations

import json


def test_month_end_bench_small_firm(tmp_path, pg_server_url, monkeypatch):
    from erpsync.bench.month_end import MONTH_END_STEPS, run_month_end_bench

    monkeypatch.setenv("ERPSYNC_DATABASE_URL", pg_server_url)
    out = tmp_path / "month_end.json"
    report = run_month_end_bench(size="small", seed=0, state_dir=tmp_path / "firm", out=out)
    assert json.loads(out.read_text()) == report
    push = report["push_result"]
    assert push["complete"] and push["failed"] == 0
    assert push["invoices"] == report["invoices"] > 0
    assert push["created"] == push["posted"] == push["billed_back"] == push["invoices"]
    assert report["billed_items"] > report["invoices"]
    assert report["undocumented_uses"] == []
    steps = {s["step"]: s for s in report["steps"]}
    assert set(MONTH_END_STEPS) <= set(steps)
    assert "psa" in steps["full_time_expense_sync"]["requests"]
    # the pack never exceeded Business Central's limits (no 429 from the ERP in any step)
    assert all("erp" not in s["responses_429"] for s in report["steps"])
    # 4 per invoice plus the token, the company lookup and the $batch reads
    per_invoice = report["push_requests_per_invoice"]["erp"]
    assert 4.0 <= per_invoice <= 4.0 + 3 / report["invoices"] + 0.01, per_invoice
    routes = steps["push"]["routes"]
    assert not any(r.endswith("/salesInvoiceLines") for r in routes)  # lines came with $expand
    month = report["month_end"]
    assert month["limiting_system"] in ("psa", "erp")
    assert month["floor_seconds"]["erp"] == round(month["requests"]["erp"] / 20, 2)
    # the batch's Harvest invoices are read ahead in one list per push, not looked up per invoice
    assert routes.get("psa GET /v2/invoices") == 1
    # the client-side limiter keeps the month-end run under every limit: no 429 received
    assert month["responses_429"] == {}
