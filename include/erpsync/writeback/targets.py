"""Write-back operations: what erpsync owes each system, built from core tables, and how one
outbox row is delivered (look up by a stable external reference, then create or patch).

* ``erp.customer``: core.clients + core.tax_profiles -> Business Central ``customers``, looked
  up by ``number`` (the CRM's ``ERP_Customer_No__c`` when the account has one, else ``ES-C`` +
  the canonical id). The customer has no payment-terms or tax-area code, only ids: the payload
  keeps the codes (``_paymentTerms`` = ``"<days> DAYS"``, ``_taxArea`` = the client's tax
  area, :func:`erpsync.invoicing.tax.tax_area_for`) and delivery turns them into
  ``paymentTermsId`` / ``taxAreaId`` with ``GET paymentTerms|taxAreas?$filter=code eq '..'``
  (once per relay run). A code the tenant lacks fails the row into the exceptions queue with
  what to set up in Business Central (never a 400 retried forever).
* ``psa.client``: core.clients -> Harvest ``clients``, looked up by the PSA id in core.id_map,
  else by the exact client name.
* ``erp.employee``: core.people -> Business Central ``employees``, looked up by ``number`` (the
  PSA employee number; ``ES-E`` + the canonical id when it has none). ``displayName`` is
  read-only (computed from the names) and never sent.
* ``psa.assignment_rate``: core.contract_rate_overrides -> the ``hourly_rate`` of the person's
  Harvest user assignment on the contract's PSA project (PATCH only when it differs).

Every delivery reads the target first and writes only the fields that differ (among those the
target's GET returns: a field it does not return cannot be compared), so a replay of a
row that already landed (a dropped connection after the ERP committed, a rerun) writes nothing
and never creates a second record. Business Central has no idempotency key and no upsert
(docs/reference/vendor-apis.md, "Business Central"): the ``number`` lookup is the guard, and the
ERP's own unique ``number`` turns a lost race into ``Internal_EntityWithSameKeyExists``, which is
answered by looking up again.

Vendor docs: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_customer
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_employee
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_paymentterm
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_taxarea
and https://help.getharvest.com/api-v2/clients-api/clients/clients/
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from erpsync import taxid
from erpsync.invoicing import tax

__all__ = [
    "OPERATIONS",
    "Built",
    "Delivery",
    "Operation",
    "client_number",
    "employee_number",
    "operations_for",
]

FINANCE_OPS = "finance ops"


def client_number(canonical_id: int) -> str:
    """The stable erpsync customer number for a client without an ERP number yet."""
    return f"ES-C{int(canonical_id):06d}"


def employee_number(canonical_id: int) -> str:
    return f"ES-E{int(canonical_id):06d}"


@dataclass(frozen=True)
class Built:
    """One payload owed to a target, built from core tables."""

    entity_key: str
    canonical_id: int | None
    external_ref: str | None
    payload: dict[str, Any]
    blocked_reason: str | None = None  # set: the row is stored ``blocked``, never sent
    block_detail: dict[str, Any] = field(default_factory=dict)
    owner: str = FINANCE_OPS


@dataclass
class Delivery:
    """What one delivery did: ``action`` is created | updated | unchanged | absent (a block
    or archive of a record the target never had: nothing to do)."""

    action: str
    target_id: str | None
    writes: int
    detail: dict[str, Any] = field(default_factory=dict)
    #: the target's own number for the record as the target answered it (Business Central
    #: ``number``); recorded in ``core.id_map.erp_number`` next to the id
    target_number: str | None = None


class DeliveryError(RuntimeError):
    """A delivery that cannot succeed without a person (bad data, missing prerequisite)."""


@dataclass(frozen=True)
class Operation:
    name: str
    target_system: str
    entity_type: str  # the entity type in core.id_map / ops.exceptions
    id_map_column: str | None  # which core.id_map column the target id goes to
    build: Callable[[Any, list[str]], list[Built]]
    deliver: Callable[[Any, Built | dict, Any], Delivery]


# ------------------------------------------------------------------ builders (SQL on core)

_CLIENT_SQL = """
SELECT c.crm_id, c.canonical_id, c.legal_name, c.billing_street, c.billing_city,
       c.billing_postal_code, c.billing_country, c.currency, c.payment_terms_days,
       c.erp_customer_no, t.country, t.vat_id, t.tax_exempt, t.reverse_charge
  FROM core.clients c
  LEFT JOIN core.tax_profiles t ON t.crm_account_id = c.crm_id AND t.deleted_at IS NULL
 WHERE c.crm_id = ANY(%s) AND c.deleted_at IS NULL
   AND t.crm_account_id IS NOT NULL  -- no write before the tax profile is known (VAT check)
 ORDER BY c.canonical_id
"""

# Clients deleted in the CRM: the ERP customer is blocked and the PSA client archived (never
# deleted: invoices and time still point at them), and only where erpsync knows one exists.
_DELETED_CLIENT_SQL = """
SELECT c.crm_id, c.canonical_id, c.legal_name, c.erp_customer_no, m.erp_id, m.psa_id
  FROM core.clients c
  JOIN core.id_map m ON m.canonical_id = c.canonical_id
 WHERE c.crm_id = ANY(%s) AND c.deleted_at IS NOT NULL
 ORDER BY c.canonical_id
"""

#: Business Central's ``blocked`` values: blank = open, "All" = no sales or invoices at all.
ERP_OPEN, ERP_BLOCKED = " ", "All"

#: The Payment Terms code erpsync expects in Business Central for "Net <days>" CRM terms.
PAYMENT_TERMS_CODE = "{days} DAYS"
#: Payload keys holding codes that delivery resolves to Business Central ids: key -> (entity
#: listing the codes, id property on the customer, what the admin sets up where).
ERP_CODE_REFS = {
    "_paymentTerms": (
        "paymentTerms",
        "paymentTermsId",
        "Payment Terms",
        "create it on the Payment Terms page (Due Date Calculation <days>D)",
    ),
    "_taxArea": (
        "taxAreas",
        "taxAreaId",
        "VAT Business Posting Group (tax area)",
        "create it on the VAT Business Posting Groups page with its VAT Posting Setup rows,"
        " or name the tenant's code in ERPSYNC_TAX_AREA_DOMESTIC/_EU/_EXPORT",
    ),
}


def _rows(conn, query: str, keys: list[str]) -> list[dict[str, Any]]:
    cur = conn.execute(query, (keys,))
    names = [c.name for c in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _client_rows(conn, keys: list[str]) -> list[dict[str, Any]]:
    return _rows(conn, _CLIENT_SQL, keys)


def _crm_owner(conn, crm_id: str) -> str | None:
    """The account's CRM owner (Salesforce ``OwnerId``) from its last landed payload."""
    hit = conn.execute(
        """SELECT payload ->> 'OwnerId' FROM raw.vendor_records
            WHERE source_system = 'crm' AND record_key = %s ORDER BY raw_id DESC LIMIT 1""",
        (crm_id,),
    ).fetchone()
    return hit[0] if hit else None


def _tax_block(conn, row: dict[str, Any]) -> tuple[str | None, dict[str, Any], str]:
    """(reason, detail, owner) when the client's VAT id fails validation, else (None, {}, ..)."""
    result = taxid.validate(row.get("country") or row["billing_country"], row.get("vat_id"))
    if not result.blocks_write_back:
        return None, {}, FINANCE_OPS
    crm_owner = _crm_owner(conn, row["crm_id"])
    owner = f"{FINANCE_OPS} / CRM owner {crm_owner}" if crm_owner else FINANCE_OPS
    detail = {
        "client": row["legal_name"],
        "crm_id": row["crm_id"],
        "country": row.get("country") or row["billing_country"],
        "vat_id": row.get("vat_id"),
        "reason": result.reason,
    }
    return f"invalid VAT id: {result.reason}", detail, owner


def _vat_for_target(row: dict[str, Any]) -> str:
    result = taxid.validate(row.get("country") or row["billing_country"], row.get("vat_id"))
    return result.normalized or (row.get("vat_id") or "").strip()


def build_erp_customers(conn, keys: list[str]) -> list[Built]:
    out = []
    for row in _client_rows(conn, keys):
        number = row["erp_customer_no"] or client_number(row["canonical_id"])
        payload: dict[str, Any] = {
            "number": number,
            "displayName": row["legal_name"],
            "addressLine1": row["billing_street"] or "",
            "city": row["billing_city"] or "",
            "postalCode": row["billing_postal_code"] or "",
            "country": (row["billing_country"] or "").strip(),
            "currencyCode": (row["currency"] or "").strip(),
            "taxRegistrationNumber": _vat_for_target(row),
            "taxLiable": not bool(row.get("tax_exempt")),
            "_taxArea": tax.tax_area_for(
                row.get("country") or row["billing_country"],
                exempt=bool(row.get("tax_exempt")),
                reverse_charge=bool(row.get("reverse_charge")),
            ),
        }
        if row["payment_terms_days"] is not None:
            payload["_paymentTerms"] = PAYMENT_TERMS_CODE.format(
                days=int(row["payment_terms_days"])
            )
        payload["blocked"] = ERP_OPEN  # a client restored in the CRM is unblocked again
        reason, detail, owner = _tax_block(conn, row)
        out.append(
            Built(row["crm_id"], row["canonical_id"], number, payload, reason, detail, owner)
        )
    for row in _rows(conn, _DELETED_CLIENT_SQL, keys):
        if row["erp_id"] is None:
            continue  # never reached the ERP: nothing to block
        number = row["erp_customer_no"] or client_number(row["canonical_id"])
        payload = {"number": number, "blocked": ERP_BLOCKED}
        out.append(Built(row["crm_id"], row["canonical_id"], number, payload))
    return out


def build_psa_clients(conn, keys: list[str]) -> list[Built]:
    out = []
    for row in _client_rows(conn, keys):
        city = row["billing_city"] or ""
        country = (row["billing_country"] or "").strip()
        payload = {
            "name": row["legal_name"],
            "currency": (row["currency"] or "").strip(),
            "address": ", ".join(p for p in (city, country) if p),
            "is_active": True,
        }
        reason, detail, owner = _tax_block(conn, row)
        out.append(
            Built(
                row["crm_id"],
                row["canonical_id"],
                row["legal_name"],
                payload,
                reason,
                detail,
                owner,
            )
        )
    for row in _rows(conn, _DELETED_CLIENT_SQL, keys):
        if row["psa_id"] is None:
            continue  # never reached the PSA: nothing to archive
        payload = {"name": row["legal_name"], "is_active": False}
        out.append(Built(row["crm_id"], row["canonical_id"], row["legal_name"], payload))
    return out


def build_erp_employees(conn, keys: list[str]) -> list[Built]:
    cur = conn.execute(
        """SELECT psa_id, canonical_id, first_name, last_name, email, employee_number, role,
                  is_active
             FROM core.people WHERE psa_id = ANY(%s) AND deleted_at IS NULL
            ORDER BY canonical_id""",
        (keys,),
    )
    out = []
    for psa_id, canonical_id, first, last, email, number, role, active in cur.fetchall():
        number = number or employee_number(canonical_id)
        payload = {
            "number": number,
            "givenName": first,
            "surname": last,
            "email": email or "",
            "jobTitle": role or "",
            "status": "Active" if active else "Inactive",
        }
        out.append(Built(str(psa_id), canonical_id, number, payload))
    return out


def _split_override_key(key: str) -> tuple[str, str]:
    opportunity_id, _, email = key.partition("|")
    return opportunity_id, email


def build_assignment_rates(conn, keys: list[str]) -> list[Built]:
    pairs = [_split_override_key(k) for k in keys]
    cur = conn.execute(
        """SELECT o.opportunity_id, o.user_email, o.rate, o.currency, o.psa_project_id, p.psa_id
             FROM core.contract_rate_overrides o
             JOIN unnest(%s::text[], %s::text[]) AS k(opp, email)
               ON k.opp = o.opportunity_id AND lower(k.email) = lower(o.user_email)
             LEFT JOIN core.people p
                    ON lower(p.email) = lower(o.user_email) AND p.deleted_at IS NULL
            WHERE o.deleted_at IS NULL AND o.psa_project_id IS NOT NULL
            ORDER BY o.opportunity_id, o.user_email""",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )
    out = []
    for opp, email, rate, currency, project_id, user_id in cur.fetchall():
        key = f"{opp}|{email}"
        payload = {
            "project_id": str(project_id),
            "user_id": None if user_id is None else str(user_id),
            "user_email": email,
            "hourly_rate": str(Decimal(rate).normalize()),
            "currency": (currency or "").strip(),
        }
        reason = None if user_id is not None else f"no PSA user with email {email}"
        detail = {} if user_id is not None else {"opportunity": opp, "user_email": email}
        out.append(Built(key, None, f"{project_id}/{email}", payload, reason, detail))
    return out


# ------------------------------------------------------------------ delivery helpers


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(current, bool):
        return current == wanted
    if isinstance(wanted, Decimal) or isinstance(current, int | float | Decimal):
        try:
            return Decimal(str(current)) == Decimal(str(wanted))
        except Exception:  # noqa: BLE001 - not numeric: compare as text
            return str(current) == str(wanted)
    return (current if current is not None else "") == (wanted if wanted is not None else "")


def diff(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``wanted`` whose value differs in ``current``, among the fields ``current``
    (the target's GET) returns: one it does not return cannot be compared, and sending it on
    every run would be a write that never settles (or a 400 for a property the type lacks)."""
    return {k: v for k, v in wanted.items() if k in current and not _same(current[k], v)}


def _odata_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _is_same_key_exists(exc: Exception) -> bool:
    return getattr(exc, "code", None) == "Internal_EntityWithSameKeyExists"


def _is_stale_etag(exc: Exception) -> bool:
    code, status = getattr(exc, "code", None), getattr(exc, "status", None)
    return code == "Request_EntityChanged" or status in (409, 412)


def _deliver_bc_by_number(entity: str, row: Built | dict, clients: Any) -> Delivery:
    """Check-then-create on Business Central by ``number``; patch the differing fields with
    If-Match, re-reading once on a stale etag. A block (client deleted in the CRM) never
    creates: a customer the ERP does not have is left absent."""
    bc = clients.erp
    payload = row["payload"] if isinstance(row, dict) else row.payload
    flt = f"number eq {_odata_literal(payload['number'])}"
    if payload.get("blocked") != ERP_BLOCKED:
        payload = _resolve_erp_codes(payload, clients)
    current = bc.find_one(entity, flt)
    if current is None and payload.get("blocked") == ERP_BLOCKED:
        return Delivery("absent", None, 0, {"number": payload["number"]})
    if current is None:
        try:
            created = bc.create(entity, payload)
        except Exception as exc:
            if not _is_same_key_exists(exc):
                raise
            current = bc.find_one(entity, flt)  # another writer (or a lost reply) got there first
            if current is None:
                raise
        else:
            number = _answered_number(created, payload)
            return Delivery("created", str(created["id"]), 1, {"number": number}, number)
    changes = diff(current, payload)
    number = _answered_number(current, payload)
    if not changes:
        return Delivery("unchanged", str(current["id"]), 0, {"number": number}, number)
    try:
        bc.patch(entity, current["id"], changes, current.get("@odata.etag"))
    except Exception as exc:
        if not _is_stale_etag(exc):
            raise
        current = bc.find_one(entity, flt)
        if current is None:
            raise
        changes = diff(current, payload)
        number = _answered_number(current, payload)
        if not changes:
            return Delivery("unchanged", str(current["id"]), 0, {"number": number}, number)
        bc.patch(entity, current["id"], changes, current.get("@odata.etag"))
    return Delivery(
        "updated", str(current["id"]), 1, {"number": number, "fields": sorted(changes)}, number
    )


def _answered_number(record: dict[str, Any] | None, payload: dict[str, Any]) -> str | None:
    """The ``number`` Business Central answered for the record (customers and employees return
    it on create and read: https://learn.microsoft.com/en-us/dynamics365/business-central/
    dev-itpro/api-reference/v2.0/resources/dynamics_customer), else the one erpsync sent."""
    number = (record or {}).get("number") or payload.get("number")
    return str(number) if number else None


def _resolve_erp_codes(payload: dict[str, Any], clients: Any) -> dict[str, Any]:
    """The payload with its code references (:data:`ERP_CODE_REFS`) replaced by the ids
    Business Central has for them; a code the tenant lacks raises :class:`DeliveryError`."""
    out = {k: v for k, v in payload.items() if k not in ERP_CODE_REFS}
    for key, (entity, prop, what, fix) in ERP_CODE_REFS.items():
        code = payload.get(key)
        if not code:
            continue
        found = clients.erp_code_id(entity, str(code))
        if found is None:
            raise DeliveryError(
                f"Business Central has no {what} '{code}' (needed by customer"
                f" {payload.get('number')}): {fix}; then retry the write-back"
            )
        out[prop] = found
    return out


def deliver_erp_customer(conn, row, clients) -> Delivery:
    return _deliver_bc_by_number("customers", row, clients)


def deliver_erp_employee(conn, row, clients) -> Delivery:
    """The person's ERP employee. Harvest users have no employee number
    (https://help.getharvest.com/api-v2/users-api/users/users/), so the number erpsync builds
    is its own (``ES-E<canonical id>``); an employee the ERP already has for the person is found
    by e-mail first and keeps its number, so nobody gets a second employee."""
    payload = row["payload"] if isinstance(row, dict) else row.payload
    email = payload.get("email")
    if email:
        found = clients.erp.find_one("employees", f"email eq {_odata_literal(email)}")
        if found is not None and found.get("number") and found["number"] != payload["number"]:
            payload = {**payload, "number": found["number"]}
            row = (
                {**row, "payload": payload}
                if isinstance(row, dict)
                else replace(row, payload=payload)
            )
    return _deliver_bc_by_number("employees", row, clients)


def _find_psa_client(conn, row: dict, clients) -> dict | None:
    harvest = clients.psa
    known = None
    if row.get("canonical_id") is not None:
        hit = conn.execute(
            "SELECT psa_id FROM core.id_map WHERE canonical_id = %s", (row["canonical_id"],)
        ).fetchone()
        known = hit[0] if hit else None
    if known:
        found = harvest.get(f"clients/{known}")
        if found:
            return found
    return clients.psa_client_by_name(row["payload"]["name"])


def deliver_psa_client(conn, row, clients) -> Delivery:
    harvest = clients.psa
    payload = row["payload"]
    current = _find_psa_client(conn, row, clients)
    if current is None and payload.get("is_active") is False:
        return Delivery("absent", None, 0, {"name": payload["name"]})  # archive, never create
    if current is None:
        clients.forget_psa_clients()  # a failed create must be looked up afresh next time
        created = harvest.create("clients", payload)
        clients.remember_psa_client(created)
        return Delivery("created", str(created["id"]), 1, {"name": payload["name"]})
    changes = diff(current, payload)
    if not changes:
        return Delivery("unchanged", str(current["id"]), 0, {"name": payload["name"]})
    updated = harvest.update(f"clients/{current['id']}", changes)
    clients.remember_psa_client(updated or {**current, **changes})
    return Delivery("updated", str(current["id"]), 1, {"fields": sorted(changes)})


def deliver_assignment_rate(conn, row, clients) -> Delivery:
    """The contracted rate on the person's PSA user assignment.

    Harvest applies an assignment's ``hourly_rate`` only "when the project's bill_by is People
    and use_default_rates is false"
    (https://help.getharvest.com/api-v2/projects-api/projects/user-assignments/): the rate is
    written together with ``use_default_rates: false``, a project billed otherwise cannot take
    it (a DeliveryError: the relay raises it as an exception for finance), and the answer is
    checked to carry both."""
    harvest = clients.psa
    payload = row["payload"]
    project_id, user_id = payload["project_id"], payload["user_id"]
    project = harvest.get(f"projects/{project_id}")
    if project is None:
        raise DeliveryError(f"PSA project {project_id} does not exist")
    if project.get("bill_by") != "People":
        raise DeliveryError(
            f"PSA project {project_id} bills by {project.get('bill_by')!r}, not 'People': Harvest"
            f" applies a person's contracted rate ({payload['user_email']},"
            f" {payload['hourly_rate']}) only on projects billed by People; change the project's"
            " billing to People or bill the rate another way"
        )
    assignment = clients.psa_user_assignments(project_id).get(str(user_id))
    if assignment is None:
        raise DeliveryError(
            f"PSA user {user_id} ({payload['user_email']}) is not assigned to PSA project "
            f"{project_id}: the contracted rate cannot be applied"
        )
    target_id = str(assignment["id"])
    wanted = Decimal(payload["hourly_rate"])
    current = assignment.get("hourly_rate")
    same_rate = current is not None and Decimal(str(current)) == wanted
    if same_rate and assignment.get("use_default_rates") is False:
        return Delivery("unchanged", target_id, 0, {"hourly_rate": payload["hourly_rate"]})
    updated = harvest.update(
        f"projects/{project_id}/user_assignments/{target_id}",
        {"hourly_rate": payload["hourly_rate"], "use_default_rates": False},
    )
    got = (updated or {}).get("hourly_rate")
    if (
        not updated
        or updated.get("use_default_rates") is not False
        or got is None
        or Decimal(str(got)) != wanted
    ):
        raise DeliveryError(
            f"PSA user assignment {target_id} did not take the contracted rate {wanted}"
            f" (answer: hourly_rate {got}, use_default_rates"
            f" {None if not updated else updated.get('use_default_rates')})"
        )
    clients.psa_user_assignments(project_id)[str(user_id)] = updated
    return Delivery(
        "updated",
        target_id,
        1,
        {
            "hourly_rate": payload["hourly_rate"],
            "was": None if current is None else str(current),
            "use_default_rates_was": assignment.get("use_default_rates"),
        },
    )


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "erp.customer", "erp", "client", "erp_id", build_erp_customers, deliver_erp_customer
        ),
        Operation("psa.client", "psa", "client", "psa_id", build_psa_clients, deliver_psa_client),
        Operation(
            "erp.employee", "erp", "person", "erp_id", build_erp_employees, deliver_erp_employee
        ),
        Operation(
            "psa.assignment_rate",
            "psa",
            "contract_rate_override",
            None,
            build_assignment_rates,
            deliver_assignment_rate,
        ),
    )
}

#: What each core table owes when its rows change (used when a spec names no operations).
DEFAULT_OPERATIONS: dict[str, tuple[str, ...]] = {
    "core.clients": ("erp.customer", "psa.client"),
    "core.tax_profiles": ("erp.customer", "psa.client"),
    "core.people": ("erp.employee",),
    "core.contract_rate_overrides": ("psa.assignment_rate",),
}


def operations_for(spec: Any) -> list[Operation]:
    """The operations a spec's changes enqueue (its ``write_back`` names)."""
    names = tuple(getattr(spec, "write_back", ()) or ())
    unknown = [n for n in names if n not in OPERATIONS]
    if unknown:
        raise ValueError(
            f"entity spec {getattr(spec, 'name', spec)!r} names unknown write-back operations "
            f"{unknown}; known: {sorted(OPERATIONS)}"
        )
    # A client's write-back is blocked or released as a whole: a tax profile change (a VAT id
    # fixed in the CRM) must also release the PSA client, whose payload has no VAT id.
    if getattr(spec, "core_table", None) == "core.tax_profiles" and "erp.customer" in names:
        names = (*names, *(n for n in ("psa.client",) if n not in names))
    return [OPERATIONS[n] for n in names]
