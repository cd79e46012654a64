"""The time-entry raw codec (``encode_time_entry``) against the pydantic path it stands in for:
for every record it accepts, the same COPY values and the same row hash; every record it cannot
guarantee equal is declined (None), so the engine sends it through the mapper and the model
(which decide validity and the quarantine reason code)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal

import pytest

from erpsync.models.canonical import adapter_for
from erpsync.models.time_expense import TimeEntry, encode_time_entry, harvest_time_entry
from erpsync.sync import engine

COLUMNS = list(TimeEntry.model_fields)

BASE = {
    "id": 2000000001,
    "spent_date": "2026-05-01",
    "hours": 4.0,
    "hours_without_timer": 4.0,
    "rounded_hours": 4.25,
    "notes": "Stakeholder interviews",
    "is_locked": True,
    "locked_reason": "Item Invoiced",
    "is_closed": True,
    "is_billed": True,
    "is_running": False,
    "timer_started_at": None,
    "billable": True,
    "budgeted": True,
    "billable_rate": 75,
    "cost_rate": 40.5,
    "created_at": "2026-05-01T16:34:49Z",
    "updated_at": "2026-11-01T18:02:00Z",
    "user": {"id": 3100001, "name": "Katrin Jansen"},
    # Harvest's time entry: client and project are {id, name}
    "client": {"id": 5100839, "name": "Bluefield Analytics 91 GmbH"},
    "project": {"id": 6401208, "name": "Bluefield ERP Rollout 1207"},
    "task": {"id": 8000004, "name": "Project Management"},
    "user_assignment": {"id": 7204807},
    "task_assignment": {"id": 7105980},
    "invoice": {"id": 1300001, "number": "202600001"},
    "external_reference": None,
}


def variant(**changes) -> dict:
    rec = copy.deepcopy(BASE)
    for name, value in changes.items():
        if value is ...:
            rec.pop(name, None)
        else:
            rec[name] = value
    return rec


def pydantic_row(rec: dict) -> dict:
    return adapter_for(TimeEntry).validate_python(harvest_time_entry(rec)[0]).__dict__


def parse_copy_field(text: str):
    if text == "\\N":
        return None
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def assert_same(rec: dict) -> None:
    body = json.dumps(rec).encode()
    encoded = encode_time_entry(body)
    assert encoded is not None, rec
    key, modstamp, columns, digest = encoded
    row = pydantic_row(json.loads(body))
    assert key == str(rec["id"])
    assert parse_copy_field(modstamp) == rec.get("updated_at")
    assert digest == engine.row_hash(row)
    fields = columns.split("\t")
    assert len(fields) == len(COLUMNS)
    for name, text in zip(COLUMNS, fields, strict=True):
        value, got = row[name], parse_copy_field(text)
        if value is None or got is None:
            assert value is None and got is None, name
        elif isinstance(value, bool):
            assert got == ("t" if value else "f"), name
        elif isinstance(value, Decimal):
            assert got == str(value), name  # the text psycopg sends, so the same numeric scale
        elif isinstance(value, dt.datetime):
            assert dt.datetime.fromisoformat(got) == value, name
            assert dt.datetime.fromisoformat(got).utcoffset() == value.utcoffset(), name
        elif isinstance(value, dt.date):
            assert got == value.isoformat(), name
        else:
            assert got == value, name


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"hours": 0, "rounded_hours": None, "billable_rate": None, "cost_rate": None},
        {"hours": 0.1, "billable_rate": 194.62, "cost_rate": 1e-7},
        {"hours": 1e2, "billable_rate": 12345678901234567890},
        {"hours": -0.0},
        {"notes": "tab\there, new\nline, back\\slash, cr\r and ünïcødé ✓"},
        {"notes": None, "locked_reason": None, "client": None, "task": None, "invoice": None},
        {"notes": ""},
        {"client": {"id": 5, "currency": None}, "project": {"id": 6, "code": None}},
        {
            "client": ...,
            "task": ...,
            "user_assignment": ...,
            "task_assignment": ...,
            "invoice": ...,
        },
        {"is_closed": None, "is_running": None},
        {"is_closed": ..., "is_running": ..., "rounded_hours": ..., "created_at": ...},
        {"external_reference": {"id": "ABC-1", "group_id": 77, "permalink": "https://x.test/a"}},
        {"external_reference": {"id": "", "group_id": None, "permalink": None}},
        {"external_reference": {}},
        {"updated_at": None},
        {"updated_at": ...},
        {"is_closed": False, "billable": False, "is_locked": False},
        # older shapes: a currency or code the vendor happens to send is kept
        {"client": {"id": 5, "currency": "EUR"}, "project": {"id": 6, "code": "PRJ-1"}},
        # an approval_status is not Harvest's: ignored, approval comes from is_closed
        {"approval_status": "approved", "is_closed": False},
        {"id": 7, "user": {"id": 0}},
    ],
)
def test_accepted_records_match_the_pydantic_path(changes):
    assert_same(variant(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"hours": "4.0"},  # quoted number: pydantic parses it, the codec leaves it to pydantic
        {"hours": -1},  # negative: quarantined (negative_rate) by the model
        {"hours": None},
        {"hours": ...},
        {"hours": True},
        {"billable_rate": -0.5},
        {"id": "2000000001"},
        {"id": None},
        {"id": ...},
        {"user": None},
        {"user": {"id": "3100001"}},
        {"user": {"id": None}},
        {"user": {}},
        {"project": ...},
        {"client": {"currency": "EUR"}},
        {"notes": "  padded  "},
        {"notes": "trailing\n"},
        {"locked_reason": " x"},
        {"client": {"id": 1, "currency": " EUR"}},
        {"project": {"id": 1, "code": "C "}},
        {"external_reference": {"id": " 1"}},
        {"billable": 1},
        {"billable": "true"},
        {"is_closed": 1},
        {"is_closed": "true"},
        {"spent_date": "2026-02-30"},
        {"spent_date": "2026-05-01T00:00:00"},
        {"spent_date": None},
        {"created_at": "2026-05-01T16:34:49+02:00"},
        {"created_at": "2026-05-01 16:34:49Z"},
        {"created_at": "2026-05-01T16:34:49.5Z"},
        {"created_at": "2026-13-01T16:34:49Z"},
        {"updated_at": 5},
        {"_erpsync_deleted": True},
    ],
)
def test_records_it_cannot_vouch_for_are_declined(changes):
    body = json.dumps(variant(**changes)).encode()
    assert encode_time_entry(body) is None


def test_declined_records_still_validate_as_before():
    """Declining is not rejecting: a quoted number is valid for the model (and loads through
    the pydantic path), a negative one is quarantined with the model's reason code."""
    assert pydantic_row(variant(hours="4.5"))["hours"] == Decimal("4.5")
    from pydantic import ValidationError

    from erpsync.models.reasons import from_validation_error

    with pytest.raises(ValidationError) as info:
        pydantic_row(variant(hours=-1))
    assert from_validation_error(info.value).reason_code == "invalid_value"


def test_malformed_json_is_declined_not_raised():
    assert encode_time_entry(b'{"id": 1, "hours": NaN}') is None
    assert encode_time_entry(b"[1, 2]") is None
    assert encode_time_entry(b"5") is None


@pytest.mark.parametrize(("is_closed", "status"), [(True, "approved"), (False, "unapproved")])
def test_approval_comes_from_is_closed_on_both_paths(is_closed, status):
    """Audit H3: Harvest has no approval_status; a real entry (without one) is not quarantined
    and its approval is is_closed, the same on the codec and the pydantic path."""
    rec = variant(is_closed=is_closed)
    assert "approval_status" not in rec
    encoded = encode_time_entry(json.dumps(rec).encode())
    assert encoded is not None
    assert encoded[2].split("\t")[COLUMNS.index("approval_status")] == status
    row = harvest_time_entry(rec)[0]
    assert adapter_for(TimeEntry).validate_python(row).approval_status == status
    assert row["currency"] is None  # no client currency on the entry: reconcile takes the client's
