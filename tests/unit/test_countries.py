"""Salesforce country labels -> ISO codes (issue 13, S2): the pack reads ``BillingCountryCode``
and maps the ``BillingCountry`` label when a record has no code."""

from __future__ import annotations

import pytest

from erpsync.countries import iso_from_label
from erpsync.models.mappings import salesforce_account_to_client, salesforce_country
from erpsync_sandbox.crm import countries as org


@pytest.mark.parametrize(
    ("label", "code"),
    [
        ("Germany", "DE"),
        ("United States", "US"),
        ("United Kingdom", "GB"),
        ("Korea, Republic of", "KR"),  # Salesforce's ISO-standard name
        ("South Korea", "KR"),  # CLDR's name
        ("Viet Nam", "VN"),
        ("Côte d’Ivoire", "CI"),
        ("Cote d'Ivoire", "CI"),
        ("  germany ", "DE"),
        ("de", "DE"),  # a free-text org holding the code
        ("USA", "US"),
        ("Atlantis", None),
        ("", None),
        (None, None),
    ],
)
def test_labels_map_to_iso_codes(label, code):
    assert iso_from_label(label) == code


def test_every_label_the_org_stores_maps_back_to_its_code():
    # the sandbox's picklist (Salesforce's standard list) and the pack's table agree
    codes = [c for c in org._cldr()]
    assert len(codes) > 200
    assert [c for c in codes if iso_from_label(org.label_for(c)) != c] == []


def test_the_code_wins_and_the_label_is_the_fallback():
    assert salesforce_country({"BillingCountryCode": "fr", "BillingCountry": "Germany"}) == "FR"
    assert salesforce_country({"BillingCountryCode": None, "BillingCountry": "Germany"}) == "DE"
    # an unmappable label is kept as it is, so the model quarantines it as INVALID_COUNTRY
    assert salesforce_country({"BillingCountry": "Atlantis"}) == "Atlantis"
    client = salesforce_account_to_client(
        {"Id": "001000000000001AAA", "Name": "X", "BillingCountry": "Netherlands"}
    )[0]
    assert client["billing_country"] == "NL"
