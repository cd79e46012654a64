"""Small, escaped HTML for notification e-mails (every value is escaped: data is never markup)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from html import escape
from typing import Any


def text(value: Any) -> str:
    return escape("" if value is None else str(value))


def money(amount: Decimal | None, currency: str | None = None) -> str:
    """``1,234.50 EUR``, ``650,000 JPY``: the currency's minor units (erpsync.money)."""
    if amount is None:
        return "-"
    if currency:
        from erpsync.money import minor_units

        return text(f"{amount:,.{minor_units(currency)}f} {currency}")
    return text(f"{amount:,.2f}")


def link(url: str, label: Any) -> str:
    return f'<a href="{escape(url, quote=True)}">{text(label)}</a>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``rows`` hold already-escaped cells (use :func:`text`, :func:`money`, :func:`link`)."""
    head = "".join(f'<th align="left">{text(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        '<table border="1" cellpadding="4" cellspacing="0">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def page(title: str, *parts: str) -> str:
    return (
        '<html><body style="font-family: sans-serif">'
        f"<h2>{text(title)}</h2>{''.join(parts)}"
        '<p style="color:#666;font-size:small">Sent by erpsync through Airflow. '
        "Who gets which message, and how to change it: README, section Notifications.</p>"
        "</body></html>"
    )
