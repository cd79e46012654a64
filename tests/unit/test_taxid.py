"""VAT / tax id validation: real valid and invalid ids, country prefix rules, the distinct
``missing`` and ``not_validated`` states."""

from __future__ import annotations

import pytest

from erpsync import taxid


@pytest.mark.parametrize(
    ("country", "vat_id", "normalized"),
    [
        ("DE", "DE136695976", "DE136695976"),
        ("DE", "136 695 976", "DE136695976"),  # prefix added for the client's country
        ("de", "de136695976", "DE136695976"),
        ("NL", "NL004495445B01", "NL004495445B01"),
        ("BE", "BE 0403.019.261", "BE0403019261"),
        ("FR", "FR 40 303 265 045", "FR40303265045"),
        ("GR", "EL094259216", "EL094259216"),  # Greece uses the EL prefix
        ("GR", "094259216", "EL094259216"),
        ("GB", "GB 980 7806 84", "GB980780684"),
        ("GB", "980780684", "GB980780684"),
        ("CH", "CHE-107.787.577 IVA", "CHE107787577IVA"),  # via stdnum.get_cc_module
        ("NO", "NO 995 525 828 MVA", "995525828MVA"),
    ],
)
def test_real_valid_ids_are_valid_and_normalized(country, vat_id, normalized):
    result = taxid.validate(country, vat_id)
    assert result.valid is True
    assert result.status == "valid"
    assert result.normalized == normalized
    assert result.reason is None
    assert not result.blocks_write_back


@pytest.mark.parametrize(
    ("country", "vat_id", "reason_part"),
    [
        ("DE", "DE136695977", "check digit"),
        ("NL", "NL004495446B01", "check digit"),
        ("BE", "BE0403019262", "BE VAT id failed"),
        ("GB", "GB980780685", "check digit"),
        ("CH", "CHE-107.787.578 IVA", "check digit"),
        ("DE", "DE12345", "length"),
        ("DE", "FR40303265045", "prefix FR does not match the client country DE"),
        ("GB", "DE136695976", "prefix DE does not match the client country GB"),
    ],
)
def test_real_invalid_ids_are_invalid_with_a_reason_and_block_write_back(
    country, vat_id, reason_part
):
    result = taxid.validate(country, vat_id)
    assert result.valid is False
    assert result.status == "invalid"
    assert result.normalized is None
    assert reason_part in result.reason
    assert result.blocks_write_back


def test_a_country_without_a_validator_is_not_validated_not_a_silent_pass():
    result = taxid.validate("US", "12-3456789")
    assert result.status == "not_validated"
    assert result.valid is False
    assert "no VAT validator for US" in result.reason
    assert not result.blocks_write_back


@pytest.mark.parametrize("vat_id", [None, "", "   "])
def test_a_missing_id_is_its_own_state(vat_id):
    result = taxid.validate("NL", vat_id)
    assert (result.status, result.valid, result.normalized) == ("missing", False, None)
    assert not result.blocks_write_back


def test_no_country_means_not_validated():
    assert taxid.validate(None, "DE136695976").status == "not_validated"


def test_the_sandbox_generator_ids_agree_with_the_validator():
    """The sandbox plants ids with a broken check digit; every one must be caught, and every
    generated good id must pass (the same python-stdnum the generator uses)."""
    import random

    from erpsync_sandbox.generator.ids import invalid_vat, valid_vat

    rng = random.Random(4)
    for country in ("NL", "DE", "FR", "BE", "AT", "IT", "IE", "DK", "PL", "GB"):
        for _ in range(5):
            assert taxid.validate(country, valid_vat(country, rng)).status == "valid", country
            assert taxid.validate(country, invalid_vat(country, rng)).status == "invalid", country
