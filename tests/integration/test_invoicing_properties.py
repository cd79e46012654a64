"""Property: on random ready items, the set-based SQL builder prices every invoice exactly as
the Python reference (erpsync.invoicing.pricing) does, and lines + tax = total, always."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal as D

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erpsync.invoicing import build_batch
from erpsync.invoicing.pricing import amount_line_net, price_invoice, time_line_net
from erpsync.runtime import database
from erpsync.sync.spec import RunInfo
from erpsync.warehouse import migrate
from tests.conftest import make_database
from tests.support import invoicing_data as dd

CLIENTS = {"c-eur": "EUR", "c-jpy": "JPY", "c-kwd": "KWD", "c-usd": "USD"}
RUN = RunInfo(dag_id="test", run_id="prop", task_id="build", actor="alice")


@pytest.fixture(scope="module")
def conn(pg_server_url):
    url = make_database(pg_server_url, "erpsync_test_invprop")
    migrate.migrate(url)
    with psycopg.connect(url) as c:
        dd.add_tax_setup(c)
        for acc, cur in CLIENTS.items():
            dd.add_client(c, acc, country="NL", currency=cur)
            dd.add_contract(c, f"opp-{acc}", acc, currency=cur)
        c.commit()
        yield c
    database.drop_database(url)


ITEM = st.one_of(
    st.tuples(
        st.just("time"),
        st.sampled_from(["Analyst", "Manager", "Partner"]),
        st.decimals(min_value=D("0.01"), max_value=D("24"), places=4),
        st.decimals(min_value=D("1"), max_value=D("60000"), places=4),
    ),
    st.tuples(
        st.sampled_from(["expense", "retainer", "milestone"]),
        st.just(None),
        st.just(None),
        st.decimals(min_value=D("0.0001"), max_value=D("900000"), places=4),
    ),
)


class _Undo(Exception):
    pass


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(st.tuples(st.sampled_from(sorted(CLIENTS)), ITEM), min_size=1, max_size=25),
    rate_pct=st.sampled_from(["21", "19", "7.7", "0"]),
)
def test_sql_builder_matches_reference(conn, items, rate_pct):
    expected_lines: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    amounts: dict[str, list] = defaultdict(list)
    try:
        with conn.transaction():
            conn.execute(
                "UPDATE core.tax_rates SET rate_percent = %s WHERE erp_id = 'rate-nl-std'",
                (D(rate_pct),),
            )
            for n, (acc, (kind, role, hours, value)) in enumerate(items):
                cur = CLIENTS[acc]
                key = f"{kind}:p{n}"
                time = {"hours": hours, "rate": value, "role": role}
                own = time if kind == "time" else {"amount": value}
                dd.add_item(
                    conn,
                    key,
                    account_id=acc,
                    opportunity_id=f"opp-{acc}",
                    currency=cur,
                    item_date="2026-10-10",
                    **own,
                )
                if kind == "time":
                    expected_lines[acc][(role, value)].append(hours)
                else:
                    amounts[acc].append(amount_line_net(value, cur))
            result = build_batch(
                conn,
                RUN,
                period_start=dt.date(2026, 10, 1),
                period_end=dt.date(2026, 10, 31),
                prepared_by="alice",
            )
            assert {i["account_id"] for i in result.invoices} == set(expected_lines) | set(amounts)
            for inv in result.invoices:
                acc, cur = inv["account_id"], inv["currency"]
                nets = [time_line_net(h, r, cur) for (_, r), h in expected_lines[acc].items()]
                nets += amounts[acc]
                ref = price_invoice([(x, "STANDARD") for x in nets], {"STANDARD": D(rate_pct)}, cur)
                assert (D(inv["net"]), D(inv["tax"]), D(inv["total"])) == (
                    ref.net,
                    ref.tax,
                    ref.total,
                )
                got = conn.execute(
                    """SELECT i.net + i.tax = i.total,
                              i.net = (SELECT sum(net_amount) FROM billing.invoice_lines l
                                       WHERE l.invoice_id = i.invoice_id),
                              (SELECT count(*) FROM billing.invoice_lines l
                                WHERE l.invoice_id = i.invoice_id)
                       FROM billing.invoices i WHERE i.invoice_id = %s""",
                    (inv["invoice_id"],),
                ).fetchone()
                assert got == (True, True, len(nets))
            raise _Undo
    except _Undo:
        pass
