"""The daily exception digest: each owner is told what is new in their part of the queue.

For every open exception (``ops.exceptions``) the owner's addresses are resolved
(:func:`Recipients.for_owner`; no address -> the ``finance_ops`` fallback), and each address gets
one e-mail listing the exceptions it was **not told about yet** for a reason that applies now:

* ``new``: an open exception the address has never been told about;
* ``aged``: open for ``digest_age_days`` days or more;
* ``amount``: at stake at or above the amount threshold of its currency.

Grouped by reason code, with the amounts at stake per currency and a deep link to each exception
in the finance console (``{base}/erpsync/exceptions/{id}``) and to the owner's list
(``{base}/erpsync/exceptions?owner=...``). The exception's detail is not copied: only its
``message`` line (cut short), never a payload. What each address was told, and why, is kept in
``ops.notified_exceptions`` in the transaction that sends the mail, so a second run the same day
sends nothing, and a digest that failed to send is sent by the next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from erpsync.notify import html
from erpsync.notify.config import NotifySettings, unique
from erpsync.notify.delivery import Message, deliver

log = logging.getLogger(__name__)

WHY_LABEL = {"new": "new", "aged": "open past the age threshold", "amount": "above the amount"}
_EMAIL = re.compile(r"^[^@\s/]+@[^@\s/]+\.[^@\s/]+$")
MESSAGE_CHARS = 160


@dataclass(frozen=True)
class OpenException:
    exception_id: int
    reason_code: str
    reason_label: str | None
    entity_type: str
    entity_key: str
    owner: str
    amount: Decimal | None
    currency: str | None
    first_seen_at: dt.datetime
    message: str | None


@dataclass
class Digest:
    recipient: str
    owners: set[str] = field(default_factory=set)
    items: list[tuple[OpenException, tuple[str, ...]]] = field(default_factory=list)
    not_listed: int = 0
    fallback: bool = False


class Recipients:
    """Owner text -> addresses: settings first, then people, else nothing (the caller falls
    back to finance ops)."""

    def __init__(self, conn, settings: NotifySettings) -> None:
        self.settings = settings
        self.people: dict[str, str] = {}
        for email, name in conn.execute(
            """SELECT email, lower(btrim(first_name || ' ' || last_name)) FROM core.people
                WHERE is_active AND deleted_at IS NULL AND email <> ''"""
        ).fetchall():
            self.people[email.lower()] = email
            self.people.setdefault(name, email)

    def _one(self, text: str) -> tuple[str, ...]:
        text = text.strip()
        if not text:
            return ()
        configured = self.settings.owner_addresses(text)
        if configured:
            return configured
        if _EMAIL.match(text):
            return (self.people.get(text.lower(), text),)
        person = self.people.get(text.lower())
        if person:
            return (person,)
        # "opportunity owner 005...", "CRM owner 005...": the CRM user id is the last word
        last = text.split()[-1]
        if last != text:
            return self.settings.owner_addresses(last)
        return ()

    def for_owner(self, owner: str) -> tuple[str, ...]:
        found = list(self._one(owner))
        if not found:
            for part in owner.split("/"):
                found += self._one(part)
        return unique(found)


def open_exceptions(conn) -> list[OpenException]:
    rows = conn.execute(
        """SELECT e.exception_id, e.reason_code, r.label, e.entity_type, e.entity_key, e.owner,
                  e.amount_at_stake, e.currency, e.first_seen_at, e.detail ->> 'message'
             FROM ops.exceptions e
             LEFT JOIN recon.reasons r ON r.code = e.reason_code
            WHERE e.status = 'open'
            ORDER BY e.reason_code, e.exception_id"""
    ).fetchall()
    return [OpenException(*row) for row in rows]


def _applicable(exc: OpenException, settings: NotifySettings, now: dt.datetime) -> set[str]:
    whys = {"new"}
    if exc.first_seen_at <= now - dt.timedelta(days=settings.digest_age_days):
        whys.add("aged")
    if exc.amount is not None and exc.amount >= settings.amount_threshold(exc.currency):
        whys.add("amount")
    return whys


def build_digests(
    conn, settings: NotifySettings, *, now: dt.datetime | None = None
) -> list[Digest]:
    """One digest per address with something it was not told yet (none: nothing to send)."""
    now = now or conn.execute("SELECT now()").fetchone()[0]
    exceptions = open_exceptions(conn)
    if not exceptions:
        return []
    told: dict[tuple[str, int], set[str]] = defaultdict(set)
    for recipient, exception_id, why in conn.execute(
        """SELECT recipient, exception_id, why FROM ops.notified_exceptions
            WHERE exception_id = ANY(%s)""",
        ([e.exception_id for e in exceptions],),
    ).fetchall():
        told[(recipient, exception_id)].add(why)
    resolver = Recipients(conn, settings)
    by_owner: dict[str, tuple[tuple[str, ...], bool]] = {}
    digests: dict[str, Digest] = {}
    for exc in exceptions:
        if exc.owner not in by_owner:
            own = resolver.for_owner(exc.owner)
            by_owner[exc.owner] = (own, False) if own else (settings.finance_ops, True)
        addresses, fallback = by_owner[exc.owner]
        applicable = _applicable(exc, settings, now)
        for address in addresses:
            fresh = applicable - told[(address.lower(), exc.exception_id)]
            if not fresh:
                continue
            digest = digests.setdefault(address.lower(), Digest(address))
            digest.owners.add(exc.owner)
            digest.fallback = digest.fallback or fallback
            if len(digest.items) >= settings.digest_max_items:
                digest.not_listed += 1
                continue
            order = ("new", "aged", "amount")
            digest.items.append((exc, tuple(w for w in order if w in fresh)))
    return list(digests.values())


def _key(digest: Digest) -> str:
    listed = ",".join(f"{e.exception_id}:{'+'.join(w)}" for e, w in digest.items)
    return (
        f"exception_digest:{digest.recipient.lower()}:"
        f"{hashlib.sha256(listed.encode()).hexdigest()[:24]}"
    )


def render(digest: Digest, settings: NotifySettings) -> Message:
    base = settings.links_base()
    counts = {w: sum(1 for _e, ws in digest.items if w in ws) for w in ("new", "aged", "amount")}
    n = len(digest.items) + digest.not_listed
    subject = (
        f"erpsync exceptions: {n} to look at ({counts['new']} new, {counts['aged']} open "
        f"{settings.digest_age_days}+ days, {counts['amount']} above the amount threshold)"
    )
    groups: dict[str, list[tuple[OpenException, tuple[str, ...]]]] = defaultdict(list)
    for exc, whys in digest.items:
        groups[exc.reason_code].append((exc, whys))
    parts = [
        f"<p>Exceptions assigned to {html.text(', '.join(sorted(digest.owners)))}"
        + (" (no address of their own: sent to finance ops)" if digest.fallback else "")
        + ". Each is listed because it is new to you, open for "
        f"{settings.digest_age_days} days or more, or has an amount at stake above the "
        "threshold. Open one to see its detail and act on it in the finance console.</p>"
    ]
    for reason in sorted(groups):
        rows = groups[reason]
        label = rows[0][0].reason_label or reason
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for exc, _w in rows:
            if exc.amount is not None:
                totals[exc.currency or ""] += exc.amount
        total_text = ", ".join(html.money(v, c) for c, v in sorted(totals.items())) or "-"
        parts.append(
            f"<h3>{html.text(label)} ({html.text(reason)}): {len(rows)}, at stake {total_text}</h3>"
        )
        parts.append(
            html.table(
                ["Exception", "Entity", "Amount at stake", "Open since", "Why now", "What"],
                [
                    [
                        html.link(
                            f"{base}/erpsync/exceptions/{exc.exception_id}",
                            f"#{exc.exception_id}",
                        ),
                        html.text(f"{exc.entity_type} {exc.entity_key}"),
                        html.money(exc.amount, exc.currency),
                        html.text(f"{exc.first_seen_at:%Y-%m-%d}"),
                        html.text(", ".join(WHY_LABEL[w] for w in whys)),
                        html.text(_short(exc.message)),
                    ]
                    for exc, whys in rows
                ],
            )
        )
    if digest.not_listed:
        parts.append(
            f"<p>{digest.not_listed} more are not listed here (they come in the next digests).</p>"
        )
    lists = " ".join(
        html.link(f"{base}/erpsync/exceptions?{urlencode({'owner': o}, quote_via=quote)}", o)
        for o in sorted(digest.owners)
    )
    parts.append(f"<p>All open exceptions of: {lists}</p>")
    return Message(
        kind="exception_digest",
        key=_key(digest),
        recipients=(digest.recipient,),
        subject=subject,
        html=html.page("Exceptions to look at", *parts),
        detail={
            "exceptions": [e.exception_id for e, _w in digest.items],
            "not_listed": digest.not_listed,
            "owners": sorted(digest.owners),
        },
    )


def _short(message: str | None) -> str:
    if not message:
        return ""
    from erpsync.redaction import scrub

    one_line = " ".join(scrub(message).split())
    return one_line if len(one_line) <= MESSAGE_CHARS else one_line[: MESSAGE_CHARS - 1] + "…"


def send_digests(
    conn,
    settings: NotifySettings,
    *,
    send=None,
    now: dt.datetime | None = None,
    run: Any = None,
) -> dict[str, int]:
    """Build and send every digest; counts per outcome (``sent``, ``skipped``, ``failed``)."""
    counts = {"sent": 0, "skipped": 0, "failed": 0, "no_recipients": 0, "exceptions": 0}
    for digest in build_digests(conn, settings, now=now):
        message = render(digest, settings)
        if run is not None:
            message = Message(
                **{**message.__dict__, "source_dag_id": run.dag_id, "source_run_id": run.run_id}
            )
        items = [(e.exception_id, whys) for e, whys in digest.items]

        def record(c, notification_id: int, items=items, recipient=digest.recipient) -> None:
            with c.cursor() as cur:
                cur.executemany(
                    """INSERT INTO ops.notified_exceptions
                           (recipient, exception_id, why, notification_id)
                       VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    [(recipient.lower(), i, w, notification_id) for i, ws in items for w in ws],
                )

        outcome = deliver(conn, message, settings, send=send, on_sent=record)
        counts[outcome] += 1
        if outcome == "sent":
            counts["exceptions"] += len(items)
    log.info("exception digests: %s", counts)
    return counts
