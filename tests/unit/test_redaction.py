"""One secret rule: the connectors, the relay's error texts and the console's pages agree."""

import re

import pytest

from erpsync import redaction
from erpsync.connectors.http import sensitive_extra_names
from erpsync.console import exceptions as console_exceptions
from erpsync.console import sync_health
from erpsync.models.billing_terms import (
    BillingModel,
    ItemType,
    milestone_item_key,
    milestone_item_key_sql,
)
from erpsync.models.reference import CURRENCY_MINOR_UNITS, FIRM_CURRENCIES
from erpsync.writeback import relay

SECRET = ["client_secret", "access_token", "Authorization", "api-key", "password", "Cookie"]
NOT_SECRET = ["token_url", "private_key_path", "auth_type", "account_id", "item_key", "user_agent"]


@pytest.mark.parametrize("name", SECRET)
def test_a_secret_name_is_secret_everywhere(name):
    assert redaction.is_secret_name(name)
    assert sensitive_extra_names({name: "x"}) == [name]
    assert console_exceptions.mask_secrets({name: "value"}) == {name: console_exceptions.MASK}
    assert sync_health.mask({name: "value"}) == {name: sync_health.MASK}


@pytest.mark.parametrize("name", NOT_SECRET)
def test_where_a_secret_lives_and_ordinary_keys_are_not_secret(name):
    assert not redaction.is_secret_name(name)
    assert sensitive_extra_names({name: "x"}) == []
    assert console_exceptions.mask_secrets({name: "value"}) == {name: "value"}


def test_scrub_cuts_credentials_out_of_text_the_same_for_relay_and_console():
    text = (
        "401 from https://x/api?client_secret=s3cr3t-value&x=1 "
        "Authorization: Bearer abc.def.ghi password='hunter22' known-canary-1234"
    )
    out = redaction.scrub(text, ("known-canary-1234",))
    for leaked in ("s3cr3t-value", "abc.def.ghi", "hunter22", "known-canary-1234"):
        assert leaked not in out
    # the names stay readable (unless Airflow's masker also holds one of their words)
    assert re.search(r"client_\S*=\*\*\*&x=1", out)
    assert relay.scrub is redaction.scrub
    assert sync_health.mask_text(text) == redaction.scrub(text)
    assert len(redaction.scrub("x" * 5000)) == redaction.MAX_TEXT


def test_the_firm_bills_only_in_currencies_with_a_rounding_rule():
    assert FIRM_CURRENCIES <= set(CURRENCY_MINOR_UNITS)


def test_the_milestone_item_key_is_built_one_way_in_python_and_sql():
    assert milestone_item_key("006A", 2, 3) == "milestone:006A:2:3"
    assert milestone_item_key_sql("m") == (
        "'milestone:' || m.opportunity_id || ':' || m.version || ':' || m.seq"
    )
    with pytest.raises(ValueError):
        milestone_item_key_sql("m; DROP TABLE x")
    assert ItemType.MILESTONE == "milestone" and BillingModel.FIXED_FEE == "fixed_fee"
