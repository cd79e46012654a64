"""Business Central write-back payload rules (audit B5, B6 and the tax area), without I/O."""

from __future__ import annotations

import pytest

from erpsync.invoicing import tax
from erpsync.writeback import targets


def test_the_patch_diff_compares_only_fields_the_get_returns():
    """A field the target's GET does not return cannot be compared: sending it on every run
    would never settle (B5: the customer GET has no paymentTermsCode)."""
    current = {"id": "1", "displayName": "Acme", "paymentTermsId": "t-30"}
    wanted = {"displayName": "Acme BV", "paymentTermsId": "t-30", "paymentTermsCode": "30 DAYS"}
    assert targets.diff(current, wanted) == {"displayName": "Acme BV"}
    assert targets.diff(current, {"paymentTermsId": "t-30"}) == {}


class _Codes:
    def __init__(self, known: dict[tuple[str, str], str]) -> None:
        self.known, self.asked = known, []

    def erp_code_id(self, entity: str, code: str) -> str | None:
        self.asked.append((entity, code))
        return self.known.get((entity, code))


def test_codes_resolve_to_ids_and_a_missing_one_says_what_to_set_up():
    payload = {"number": "C1", "_paymentTerms": "30 DAYS", "_taxArea": "EU"}
    codes = _Codes({("paymentTerms", "30 DAYS"): "t-30", ("taxAreas", "EU"): "a-eu"})
    out = targets._resolve_erp_codes(payload, codes)
    assert out == {"number": "C1", "paymentTermsId": "t-30", "taxAreaId": "a-eu"}
    with pytest.raises(targets.DeliveryError, match="VAT Business Posting Group"):
        targets._resolve_erp_codes({**payload, "_taxArea": "EU2"}, codes)


@pytest.mark.parametrize(
    ("country", "exempt", "reverse", "area"),
    [
        ("NL", False, False, "DOMESTIC"),
        ("DE", False, True, "EU"),
        ("DE", True, False, "EU"),  # exempt: by country
        ("NL", True, False, "DOMESTIC"),
        ("US", True, False, "EXPORT"),
        ("GB", False, False, "EXPORT"),
    ],
)
def test_tax_area_of_a_client(country, exempt, reverse, area, monkeypatch):
    monkeypatch.delenv("ERPSYNC_HOME_COUNTRY", raising=False)
    assert tax.tax_area_for(country, exempt=exempt, reverse_charge=reverse) == area


def test_tax_area_codes_are_the_tenants(monkeypatch):
    monkeypatch.setenv("ERPSYNC_TAX_AREA_EU", "EU-RC")
    assert tax.tax_area_for("FR", exempt=False, reverse_charge=True) == "EU-RC"
