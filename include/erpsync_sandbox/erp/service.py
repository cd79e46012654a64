"""Business logic of the Business Central sandbox: OData reads, entity writes, invoice posting.

The FastAPI routes in :mod:`erpsync_sandbox.erp.app` are thin; this module does the work against
the ``erp`` :class:`~erpsync_sandbox.store.Store`:

* **Reads** follow OData v4 server-driven paging as BC serves it: ``{"@odata.context",
  "value": [...], "@odata.nextLink": ".../entities?...&$skiptoken=..."}``, at most 20,000
  entities a page (``Prefer: odata.maxpagesize=N`` lowers it and is echoed in
  ``Preference-Applied``). The skiptoken is a keyset position (by default the entity's ``id``,
  which never changes), so paging returns every record exactly once even while records change
  between pages. Every entity carries ``@odata.etag``.
* **ETags** are ``W/"<base64 of '<n>;<row version>1;00;'>"``, the shape BC emits, with the row
  version derived from the stored record text: any change to a record changes its ETag.
* **Writes**: POST (201, full entity), PATCH (200) and DELETE (204) with mandatory ``If-Match``
  (missing: 428; stale: 409 ``Request_EntityChanged``). No idempotency key: a repeated POST
  creates a second record.
* **Sales invoices**: deep insert of ``salesInvoiceLines``; status ``Draft`` with a draft number
  (``S-INV-100001``); ``Microsoft.NAV.post`` assigns the posted number (``PSI-000123``) and sets
  status ``Open``; ``Microsoft.NAV.cancel`` and ``Microsoft.NAV.makeCorrectiveCreditMemo``
  create ``salesCreditMemos``.

Money rule (Business Central's, for the pack's reconciliation tests): all arithmetic is
``Decimal``. Per line: ``lineAmount = quantity x unitPrice`` rounded ROUND_HALF_UP to the
currency's Amount Rounding Precision (here its ISO minor units: JPY 0, KWD/BHD/OMR/JOD/TND 3,
else 2); ``discountAmount`` = given, else ``lineAmount x discountPercent / 100`` rounded the same
way; ``amountExcludingTax = lineAmount - discountAmount``.

**VAT is rounded per document and VAT Identifier, not per line** (:meth:`ErpService._recompute`).
BaseApp's Sales Line ``UpdateVATAmounts`` (table 37, "Sales Line", SalesLine.Table.al in
github:StefanMaron/MSDyn365BC.Code.History, BaseApp/Source/Base Application/Sales/Document/)
sums the other lines of the document with the same ``VAT Identifier`` (and Tax Group Code) and
the same sign of ``Amount``, and sets ``Amount Including VAT := TotalAmount + Amount +
Round((TotalAmount + Amount) x VAT % / 100, Currency."Amount Rounding Precision",
Currency.VATRoundingDirection()) - TotalAmountInclVAT``: each line's VAT is what brings the
group's rounded VAT up to date, so the VAT of a group is ``round(sum of its line amounts x
VAT % / 100)``. Posting recomputes the same per group ("VAT Amount Line", table 290, keyed by
VAT Identifier, VAT Calculation Type, Tax Group Code, Use Tax, Positive; SalesLine
``CalcVATAmountLines``). The rounding direction is the currency's "VAT Rounding Type" (General
Ledger Setup's for LCY); the sandbox has it at its default, ``Nearest`` ("rounds up digits
that are >= 0.5", https://learn.microsoft.com/en-us/previous-versions/dynamicsnav-2016/hh171814(v=nav.90)),
i.e. half away from zero. The API's line ``totalTaxAmount`` is the line's ``Amount Including VAT
- Amount`` (so a line's VAT is its share of the group's rounded VAT, allocated in ``sequence``
order) and the document's ``totalTaxAmount`` / ``totalAmountIncludingTax`` are the sums over
its lines (APIV2 salesInvoices page, "Sales Invoice Entity Aggregate"). Invoice Rounding (Sales
& Receivables Setup) is off, its default: no rounding line is added at posting. Three lines of
191.50 at 21 % give VAT 574.50 x 21 % = 120.645 -> 120.65 (per line it would be 3 x 40.22 =
120.66; 40.215 rounds to 40.22). ``taxPercent`` comes from VAT Posting
Setup, as in a Business Central company that uses VAT: the row of the customer's VAT Business
Posting Group (the code of its ``taxAreaId``) and the line's VAT Product Posting Group (its
``taxCode``); a missing combination is refused as BC refuses it. VAT Posting Setup has no
validity dates: a line is taxed at the percentage set up when it is priced. Exempt,
reverse-charge and export lines carry their own tax codes (``EXEMPT``, ``REVERSE``, ``EXPORT``
at 0 %); the customer's ``taxLiable`` flag does not change the VAT rate.

Strictness: a body property the entity type lacks answers 400 ``BadRequest`` "The
property 'x' does not exist on type 'Microsoft.NAV.customer'. Make sure to only use property
names that are defined by the type."; a read-only one (``Editable = false`` on the API page)
answers 400 ``BadRequest_InvalidOperation`` "Control 'x' is read-only" (the codes listed on
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/webservices/dynamics-error-codes);
an unknown ``$`` query option, or a ``$filter``/``$select``/``$orderby`` on an unknown property,
answers 400 ``BadRequest``. Each of these is also noted with
:func:`erpsync_sandbox.contract.undocumented` (the error's ``note``).

Line references (APIV2SalesInvoiceLines.Page.al and the Sales Line it becomes): an ``Account``
line's ``lineObjectNumber`` must be a G/L account (``accounts``), else 400
``Application_DialogException`` "Account does not exist."; the account must be a posting account,
not blocked, with Direct Posting (``GLAccount.CheckGLAcc`` and ``TestField("Direct Posting")``
in the Sales Line's ``CopyFromGLAccount``), else 400 ``Application_FieldValidationException``
"Blocked must be equal to 'No'  in G/L Account: No.=8000. Current value is 'Yes'." (posting a
document re-checks its accounts the same way). A ``unitOfMeasureCode`` must be a Unit of Measure
(``unitsOfMeasure``; the line table's relation for non-item lines), else 400
``Internal_InvalidTableRelation``. ``accountId`` and ``unitOfMeasureId`` follow from the codes.

Reference: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import total_ordering
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from erpsync_sandbox.erp.entities import (
    COMPANIES,
    ENTITY_SETS,
    VAT_POSTING_SETUP_SERVICE,
    EntitySet,
)
from erpsync_sandbox.erp.metadata import csdl
from erpsync_sandbox.erp.odata import (
    ODataError,
    parse_filter,
    parse_orderby,
    parse_select,
    plan_filter,
    sort_key,
)
from erpsync_sandbox.store import Row, dumps, loads

__all__ = ["BCError", "ErpService", "Reply", "etag_of", "minor_units", "round_money"]

MAX_PAGE = 20000
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
EMPTY_DATE = "0001-01-01"
STAMP = "lastModifiedDateTime"
_GUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_THREE_DECIMALS = frozenset({"KWD", "BHD", "OMR", "JOD", "TND", "LYD", "IQD"})
_ZERO_DECIMALS = frozenset({"JPY", "KRW", "ISK", "CLP", "VND", "HUF"}) - {"HUF"}
_MAX_LEN = {
    "number": 20,
    "displayName": 100,
    "externalDocumentNumber": 35,
    "description": 100,
    "taxRegistrationNumber": 20,
    "customerNumber": 20,
    "city": 30,
    "postalCode": 20,
}
_ALLOWED_OPTIONS = frozenset(
    {
        "$filter",
        "$top",
        "$skip",
        "$select",
        "$orderby",
        "$expand",
        "$skiptoken",
        "$count",
        "$format",
        "$schemaversion",
        "tenant",
        "company",
    }
)
#: The VAT Bus. Posting Group a customer gets when created without ``taxAreaId`` (what a
#: customer template in Sales & Receivables Setup gives it).
DEFAULT_TAX_AREA = "DOMESTIC"
_LINE_TYPES = ("Comment", "Account", "Item", "Resource", "Value", "Charge", "Fixed Asset")
#: Field lengths of table 204 "Unit of Measure" (Code[10], Description Text[50],
#: International Standard Code Code[10], Symbol Text[10]), behind page 30030.
_UNIT_LEN = {"code": 10, "displayName": 50, "internationalStandardCode": 10, "symbol": 10}
#: The line table behind APIV2SalesInvoiceLines (its fields' table relations are checked first).
_LINE_TABLE = "Sales Invoice Line Aggregate"


class BCError(Exception):
    """An error answered in Business Central's ``{"error":{"code","message"}}`` format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        note: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        #: set when the request used something the vendor does not document (contract log)
        self.note = note

    def body(self) -> bytes:
        msg = f"{self.message}  CorrelationId:  {uuid.uuid4()}."
        return orjson.dumps({"error": {"code": self.code, "message": msg}})


@dataclass
class Reply:
    """A service result: status, JSON body (bytes or None) and headers."""

    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def minor_units(currency: str | None) -> int:
    """Decimal places of a currency's minor unit (ISO 4217)."""
    code = (currency or "").upper()
    if code in _ZERO_DECIMALS:
        return 0
    if code in _THREE_DECIMALS:
        return 3
    return 2


def round_money(amount: Decimal, currency: str | None) -> Decimal:
    """ROUND_HALF_UP to the currency's minor units."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def etag_of(raw: str) -> str:
    """Weak ETag in BC's shape, derived from the stored record text (its row version)."""
    version = int.from_bytes(hashlib.blake2b(raw.encode(), digest_size=8).digest(), "big")
    digits = str(version)
    token = base64.b64encode(f"'{len(digits)};{digits}1;00;'".encode()).decode()
    return f'W/"{token}"'


def _etag_json(raw: str) -> str:
    return etag_of(raw).replace('"', '\\"')


def _with_etag(raw: str) -> str:
    """Splice ``"@odata.etag"`` into the front of a stored JSON object without parsing it."""
    tag = _etag_json(raw)
    if raw.strip() == "{}":
        return '{"@odata.etag":"' + tag + '"}'
    return '{"@odata.etag":"' + tag + '",' + raw.lstrip()[1:]


def _jdump(value: Any) -> str:
    return dumps(value)


@total_ordering
class _Desc:
    """Inverts ordering of a sort key component (``$orderby ... desc``)."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.v < self.v)

    def __hash__(self) -> int:
        return hash(self.v)


def _encode_key(key: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    for flag, val in key:
        if isinstance(val, Decimal):
            out.append([flag, "d", str(val)])
        elif isinstance(val, int):
            out.append([flag, "i", val])
        else:
            out.append([flag, "s", str(val)])
    return out


def _decode_key(data: list[Any]) -> tuple[Any, ...]:
    out = []
    for flag, kind, val in data:
        if kind == "d":
            out.append((flag, Decimal(val)))
        elif kind == "i":
            out.append((flag, int(val)))
        else:
            out.append((flag, str(val)))
    return tuple(out)


def _encode_token(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(state)).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any]:
    try:
        state = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise BCError(400, "BadRequest", f"The skip token value '{token}' is invalid.") from exc
    if not isinstance(state, dict):
        raise BCError(400, "BadRequest", f"The skip token value '{token}' is invalid.")
    return state


def _terms_days(formula: str | None) -> int:
    """Days of a simple date formula (``30D``, ``<30D>``, ``14D``); blank or other: 0 (BC then
    takes the document date as the due date)."""
    m = re.fullmatch(r"<?\s*(\d+)\s*D\s*>?", (formula or "").strip().upper())
    return int(m.group(1)) if m else 0


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null", parse_float=Decimal)
    except ValueError as exc:
        raise BCError(
            400, "BadRequest", f"The request body is not valid JSON: {exc.args[0]}"
        ) from exc


class ErpService:
    """The Business Central sandbox's request handling against the ``erp`` store."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.store = ctx.stores["erp"]
        self.faults = ctx.faults_for("erp")
        self.tenant: str = ctx.config.erp_tenant
        self.environment: str = ctx.config.erp_environment
        #: Serialises check-then-write (ETag checks, number series, totals).
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ context helpers

    def company_id(self) -> str:
        cid = self.ctx.erp_company_id or self.store.meta_get("company_id")
        if not cid:
            cid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"erpsync-sandbox-company-{self.ctx.seed}"))
            self.store.meta_set("company_id", cid)
        return str(cid).lower()

    def check_company(self, company_id: str) -> None:
        if company_id.strip("'").lower() != self.company_id():
            raise BCError(
                404,
                "BadRequest_ResourceNotFound",
                "Resource not found for the segment 'companies'.",
            )

    def check_environment(self, tenant: str, environment: str) -> None:
        if environment.lower() != self.environment.lower():
            raise BCError(
                404,
                "BadRequest_NotFound",
                f"The environment '{environment}' does not exist for tenant '{tenant}'.",
            )

    def today(self) -> str:
        return str(self.ctx.clock.now())[:10]

    def lcy(self) -> str:
        # The generated firm keeps its books in EUR (generator: functional currency EUR).
        return str(self.store.meta_get("lcy_code") or self.store.meta_get("lcy") or "EUR")

    def company_record(self) -> dict[str, Any]:
        cid = self.company_id()
        stored = self.store.get("companies", cid)
        if stored:
            return stored
        name = str(self.store.meta_get("company_name") or "erpsync Sandbox Firm")
        created = "2026-01-01T00:00:00Z"
        return {
            "id": cid,
            "systemVersion": "26.0.30643.32217",
            "timestamp": 1,
            "name": name,
            "displayName": name,
            "businessProfileId": "",
            "systemCreatedAt": created,
            "systemCreatedBy": ZERO_GUID,
            "systemModifiedAt": created,
            "systemModifiedBy": ZERO_GUID,
        }

    def api_root(self, base_url: str, api: str = "v2.0") -> str:
        return f"{base_url.rstrip('/')}/v2.0/{self.tenant}/{self.environment}/api/{api}"

    def odata_root(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/v2.0/{self.tenant}/{self.environment}/ODataV4"

    def company_name(self) -> str:
        return str(self.company_record().get("name") or "")

    def check_company_name(self, key: str) -> None:
        """``Company('<name>')`` or ``Company(Id=<guid>)`` of an OData V4 web-service URL."""
        key = key.strip()
        if key.lower().startswith("id="):
            ok = key[3:].strip("'").lower() == self.company_id()
        else:
            ok = key.strip("'").replace("''", "'") == self.company_name()
        if not ok:
            raise BCError(
                404,
                "BadRequest_ResourceNotFound",
                "Resource not found for the segment 'Company'.",
            )

    def context_url(self, base_url: str, es: EntitySet, suffix: str = "") -> str:
        if es.api == "ODataV4":
            name = quote(self.company_name().replace("'", "''"))
            return f"{self.odata_root(base_url)}/$metadata#Company('{name}')/{es.segment}{suffix}"
        root = self.api_root(base_url, es.api)
        if es is COMPANIES:
            return f"{root}/$metadata#companies{suffix}"
        return f"{root}/$metadata#companies({self.company_id()})/{es.segment}{suffix}"

    def entity_url(self, base_url: str, es: EntitySet, rid: str, parent: str = "") -> str:
        root = self.api_root(base_url, es.api)
        return f"{root}/companies({self.company_id()})/{parent}{es.segment}({rid})"

    # ------------------------------------------------------------------ serialisation

    @staticmethod
    def _headers_json(extra: Mapping[str, str] | None = None) -> dict[str, str]:
        out = {
            "Content-Type": "application/json; odata.metadata=minimal; odata.streaming=true;"
            " IEEE754Compatible=false; charset=utf-8",
            "OData-Version": "4.0",
        }
        if extra:
            out.update(extra)
        return out

    def _lines_of(self, resource: str, parent_id: str) -> list[Row]:
        rows = self.store.scan_rows(resource, where={"parent_id": parent_id})
        return sorted(rows, key=lambda r: (loads(r.body).get("sequence", 0), r.seq))

    def _render(
        self,
        row: Row,
        es: EntitySet,
        select: list[str],
        expand: str | None,
    ) -> str:
        """One entity as JSON text with ``@odata.etag`` (fast path when nothing to shape)."""
        if not select and not expand:
            return _with_etag(row.body)
        body = loads(row.body)
        out: dict[str, Any] = {"@odata.etag": etag_of(row.body)}
        if select:
            for name in select:
                out[name] = body.get(name)
        else:
            out.update(body)
        if expand:
            line_es = ENTITY_SETS[expand]
            out[expand] = [
                loads(_with_etag(r.body)) for r in self._lines_of(line_es.resource, row.id)
            ]
        return _jdump(out)

    # ------------------------------------------------------------------ query options

    def _options(self, query: Iterable[tuple[str, str]]) -> dict[str, str]:
        opts: dict[str, str] = {}
        for key, value in query:
            if key.startswith("$") and key not in _ALLOWED_OPTIONS:
                raise BCError(
                    400,
                    "BadRequest",
                    f"The query parameter '{key}' is not supported.",
                    note=f"query option {key}",
                )
            if key in opts and key.startswith("$"):
                raise BCError(
                    400,
                    "BadRequest",
                    f"Query option '{key}' was specified more than once, but it must be"
                    " specified at most once.",
                )
            opts[key] = value
        return opts

    @staticmethod
    def _int_option(opts: Mapping[str, str], name: str) -> int | None:
        raw = opts.get(name)
        if raw is None:
            return None
        if not re.fullmatch(r"\d+", raw.strip()):
            raise BCError(
                400,
                "BadRequest",
                f"Invalid value '{raw}' for {name} query option found. The {name} query option"
                " requires a non-negative integer value.",
            )
        return int(raw)

    @staticmethod
    def _expand_for(es: EntitySet, raw: str | None) -> str | None:
        if not raw:
            return None
        allowed = {"salesInvoices": "salesInvoiceLines", "salesCreditMemos": "salesCreditMemoLines"}
        name = raw.strip()
        if allowed.get(es.segment) != name:
            raise BCError(
                400,
                "BadRequest",
                f"Could not find a property named '{name}' on type"
                f" 'Microsoft.NAV.{es.entity_type}'.",
                note=f"{es.segment}: $expand={name}",
            )
        return name

    @staticmethod
    def page_size(prefer: str | None) -> tuple[int, str | None]:
        """Page size from ``Prefer: odata.maxpagesize=N`` and the Preference-Applied value."""
        if not prefer:
            return MAX_PAGE, None
        for part in re.split(r"[,;]", prefer):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
                size = max(1, min(int(value.strip()), MAX_PAGE))
                return size, f"odata.maxpagesize={size}"
        return MAX_PAGE, None

    # ------------------------------------------------------------------ collection reads

    def list(
        self,
        es: EntitySet,
        *,
        base_url: str,
        path: str,
        query: list[tuple[str, str]],
        prefer: str | None,
        parent_id: str | None = None,
        parent_segment: str = "",
    ) -> Reply:
        """A page of ``es`` (optionally the children of ``parent_id``)."""
        opts = self._options(query)
        try:
            tree = (
                parse_filter(opts["$filter"], es.properties, es.entity_type)
                if "$filter" in opts
                else None
            )
            select = (
                parse_select(opts["$select"], es.properties, es.entity_type)
                if opts.get("$select")
                else []
            )
            orderby = (
                parse_orderby(opts["$orderby"], es.properties, es.entity_type)
                if opts.get("$orderby")
                else []
            )
        except ODataError as exc:
            raise BCError(400, "BadRequest", str(exc), note=f"{es.segment}: {exc}") from exc
        expand = self._expand_for(es, opts.get("$expand"))
        if not orderby and es.segment in ("salesInvoiceLines", "salesCreditMemoLines"):
            orderby = [("sequence", False)]
        plan = plan_filter(tree, es.properties)
        conditions = list(plan.conditions)
        if parent_id is not None:
            conditions.append(("parent_id", "=", parent_id))
        size, applied = self.page_size(prefer)
        token = _decode_token(opts["$skiptoken"]) if opts.get("$skiptoken") else None
        if token is not None:
            size = int(token.get("p", size))
            top = token.get("t")
            skip = 0
        else:
            top = self._int_option(opts, "$top")
            skip = self._int_option(opts, "$skip") or 0
        limit = size if top is None else min(size, int(top))

        if orderby and orderby != [(STAMP, orderby[0][1])]:
            rows, more, next_state = self._page_in_memory(
                es, conditions, plan.residual, orderby, token, skip, limit
            )
        else:
            rows, more, next_state = self._page_keyset(
                es, conditions, plan.residual, orderby, token, skip, limit
            )

        items = [self._render(r, es, select, expand) for r in rows]
        suffix = f"({','.join(select)})" if select else ""
        ctx_url = self.context_url(base_url, es, suffix)
        if parent_segment:
            root = self.api_root(base_url, es.api)
            ctx_url = (
                f"{root}/$metadata#companies({self.company_id()})/{parent_segment}"
                f"{es.segment}{suffix}"
            )
        parts = ['{"@odata.context":', _jdump(ctx_url)]
        if opts.get("$count", "").lower() == "true":
            parts.append(',"@odata.count":')
            parts.append(str(self._count(es, conditions, plan.residual)))
        parts.append(',"value":[')
        parts.append(",".join(items))
        parts.append("]")
        remaining = None if top is None else int(top) - len(rows)
        if more and next_state is not None and (remaining is None or remaining > 0):
            next_state["p"] = size
            if remaining is not None:
                next_state["t"] = remaining
            keep = [(k, v) for k, v in query if k not in ("$skiptoken", "$skip", "$top")]
            keep.append(("$skiptoken", _encode_token(next_state)))
            link = f"{base_url.rstrip('/')}{path}?{urlencode(keep, quote_via=quote, safe='$,()')}"
            parts.append(',"@odata.nextLink":')
            parts.append(_jdump(link))
        parts.append("}")
        headers = self._headers_json()
        if applied:
            headers["Preference-Applied"] = applied
        try:
            self.faults.after_page(es.resource, self.store)
        except Exception:  # noqa: BLE001, S110 - a fault hook must never break a read
            pass
        return Reply(200, "".join(parts).encode(), headers)

    def _count(
        self,
        es: EntitySet,
        conditions: list[tuple[str, str, Any]],
        residual: Callable[[Mapping[str, Any]], bool] | None,
    ) -> int:
        if residual is None:
            return self.store.count(es.resource, conditions=conditions)
        rows = self.store.scan_rows(es.resource, conditions=conditions)
        return sum(1 for r in rows if residual(loads(r.body)))

    def _page_keyset(
        self,
        es: EntitySet,
        conditions: list[tuple[str, str, Any]],
        residual: Callable[[Mapping[str, Any]], bool] | None,
        orderby: list[tuple[str, bool]],
        token: dict[str, Any] | None,
        skip: int,
        limit: int,
    ) -> tuple[list[Row], bool, dict[str, Any] | None]:
        """Keyset paging in the store: by ``id`` (default) or ``(modstamp, id)``."""
        by_stamp = bool(orderby)
        descending = bool(orderby and orderby[0][1])
        order = "modstamp" if by_stamp else "id"
        after: tuple[Any, ...] | None = None
        if token is not None:
            after = (token["m"], token["a"]) if by_stamp else (token["a"],)
        if limit <= 0:
            return [], False, None
        need = limit + 1
        if residual is None:
            rows = self.store.scan_rows(
                es.resource,
                conditions=conditions,
                after=after,
                order=order,
                descending=descending,
                limit=need,
                offset=skip or None,
            )
        else:
            rows = []
            skipped = 0
            cursor = after
            batch = max(need, 500)
            while len(rows) < need:
                chunk = self.store.scan_rows(
                    es.resource,
                    conditions=conditions,
                    after=cursor,
                    order=order,
                    descending=descending,
                    limit=batch,
                )
                for r in chunk:
                    if residual(loads(r.body)):
                        if skipped < skip:
                            skipped += 1
                            continue
                        rows.append(r)
                        if len(rows) >= need:
                            break
                if len(chunk) < batch:
                    break
                last = chunk[-1]
                cursor = (last.modstamp, last.id) if by_stamp else (last.id,)
        more = len(rows) > limit
        rows = rows[:limit]
        state: dict[str, Any] | None = None
        if rows:
            last = rows[-1]
            state = {"a": last.id}
            if by_stamp:
                state["m"] = last.modstamp
        return rows, more, state

    def _page_in_memory(
        self,
        es: EntitySet,
        conditions: list[tuple[str, str, Any]],
        residual: Callable[[Mapping[str, Any]], bool] | None,
        orderby: list[tuple[str, bool]],
        token: dict[str, Any] | None,
        skip: int,
        limit: int,
    ) -> tuple[list[Row], bool, dict[str, Any] | None]:
        """Paging for arbitrary ``$orderby``: sort matches, keyset on (sort values, id)."""
        candidates = self.store.scan_rows(es.resource, conditions=conditions)
        keyed: list[tuple[tuple[Any, ...], Row]] = []
        for r in candidates:
            body = loads(r.body)
            if residual is not None and not residual(body):
                continue
            raw_key = tuple(sort_key(body.get(name), es.properties[name]) for name, _ in orderby)
            keyed.append((raw_key + ((1, r.id),), r))

        def cmp_key(k: tuple[Any, ...]) -> tuple[Any, ...]:
            parts = []
            for i, part in enumerate(k):
                desc = i < len(orderby) and orderby[i][1]
                parts.append(_Desc(part) if desc else part)
            return tuple(parts)

        keyed.sort(key=lambda kr: cmp_key(kr[0]))
        start = skip
        if token is not None:
            pos = cmp_key(_decode_key(token["k"]))
            start = 0
            while start < len(keyed) and not (pos < cmp_key(keyed[start][0])):
                start += 1
        window = keyed[start : start + limit + 1]
        more = len(window) > limit
        window = window[:limit]
        state = {"k": _encode_key(window[-1][0])} if window else None
        return [r for _, r in window], more, state

    # ------------------------------------------------------------------ single reads

    def _row(self, es: EntitySet, rid: str, parent_id: str | None = None) -> Row:
        row = self.store.get_row(es.resource, rid.strip("'").lower())
        if row is None or (parent_id is not None and row.parent_id != parent_id):
            raise BCError(
                404,
                "Internal_RecordNotFound",
                f"The {es.entity_type[0].upper() + es.entity_type[1:]} does not exist."
                f" Identification fields and values: Id='{rid}'",
            )
        return row

    def get(
        self,
        es: EntitySet,
        rid: str,
        *,
        base_url: str,
        query: list[tuple[str, str]],
        parent_id: str | None = None,
        parent_segment: str = "",
    ) -> Reply:
        opts = self._options(query)
        try:
            select = (
                parse_select(opts["$select"], es.properties, es.entity_type)
                if opts.get("$select")
                else []
            )
        except ODataError as exc:
            raise BCError(400, "BadRequest", str(exc), note=f"{es.segment}: {exc}") from exc
        expand = self._expand_for(es, opts.get("$expand"))
        row = self._row(es, rid, parent_id)
        return self._entity_reply(200, es, row, base_url, select, expand, parent_segment)

    def _entity_reply(
        self,
        status: int,
        es: EntitySet,
        row: Row,
        base_url: str,
        select: list[str] | None = None,
        expand: str | None = None,
        parent_segment: str = "",
        location: bool = False,
    ) -> Reply:
        text = self._render(row, es, select or [], expand)
        root = self.api_root(base_url, es.api)
        ctx_url = f"{root}/$metadata#companies({self.company_id()})/{parent_segment}{es.segment}"
        if es is COMPANIES:
            ctx_url = f"{root}/$metadata#companies"
        ctx_url += "/$entity"
        body = '{"@odata.context":' + _jdump(ctx_url) + "," + text.lstrip()[1:]
        headers = self._headers_json({"ETag": etag_of(row.body)})
        if location:
            headers["Location"] = self.entity_url(base_url, es, row.id)
        return Reply(status, body.encode(), headers)

    def companies(self, *, base_url: str, company_id: str | None = None) -> Reply:
        rec = self.company_record()
        raw = dumps(rec)
        root = self.api_root(base_url)
        if company_id is not None:
            self.check_company(company_id)
            body = (
                '{"@odata.context":'
                + _jdump(f"{root}/$metadata#companies/$entity")
                + ","
                + _with_etag(raw)[1:]
            )
            return Reply(200, body.encode(), self._headers_json({"ETag": etag_of(raw)}))
        body = (
            '{"@odata.context":'
            + _jdump(f"{root}/$metadata#companies")
            + ',"value":['
            + _with_etag(raw)
            + "]}"
        )
        return Reply(200, body.encode(), self._headers_json())

    # ------------------------------------------------------------------ validation

    def _validate(
        self, es: EntitySet, data: Any, *, allow_nav: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise BCError(400, "BadRequest", "The request body must be a JSON object.")
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key.startswith("@odata."):
                continue
            if key == allow_nav:
                out[key] = value
                continue
            edm = es.properties.get(key)
            if edm is None:
                raise BCError(
                    400,
                    "BadRequest",
                    f"The property '{key}' does not exist on type"
                    f" 'Microsoft.NAV.{es.entity_type}'. Make sure to only use property names"
                    " that are defined by the type.",
                    note=f"{es.segment}: unknown property {key}",
                )
            if key in es.read_only:
                raise BCError(
                    400,
                    "BadRequest_InvalidOperation",
                    f"Control '{key}' is read-only.",
                    note=f"{es.segment}: read-only property {key}",
                )
            out[key] = self._convert(key, edm, value)
        return out

    @staticmethod
    def _convert(key: str, edm: str, value: Any) -> Any:
        def bad() -> BCError:
            return BCError(
                400,
                "BadRequest",
                f"Cannot convert the literal '{value}' to the expected type '{edm}'.",
            )

        if value is None:
            if edm == "Edm.String":
                return ""
            raise BCError(
                400,
                "BadRequest",
                f"A null value was found for the property named '{key}', which has the expected"
                f" type '{edm}[Nullable=False]'. The expected type '{edm}[Nullable=False]' does"
                " not allow null values.",
            )
        if edm == "Edm.String":
            if not isinstance(value, str):
                raise bad()
            limit = _MAX_LEN.get(key)
            if limit is not None and len(value) > limit:
                raise BCError(
                    400,
                    "Application_StringExceededLength",
                    f"The length of the string is {len(value)}, but it must be less than or"
                    f" equal to {limit} characters. Value: {value}",
                )
            return value
        if edm in ("Edm.Decimal", "Edm.Double"):
            if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
                raise bad()
            try:
                return Decimal(str(value))
            except InvalidOperation as exc:  # pragma: no cover
                raise bad() from exc
        if edm in ("Edm.Int32", "Edm.Int64"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad()
            return value
        if edm == "Edm.Boolean":
            if not isinstance(value, bool):
                raise bad()
            return value
        if edm == "Edm.Guid":
            if not isinstance(value, str) or not _GUID_RE.match(value):
                raise bad()
            return value.lower()
        if edm == "Edm.Date":
            if not isinstance(value, str) or not _DATE_RE.match(value):
                raise bad()
            try:
                dt.date.fromisoformat(value)
            except ValueError as exc:
                raise bad() from exc
            return value
        return value

    @staticmethod
    def _defaults(es: EntitySet) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, edm in es.properties.items():
            if edm == "Edm.String":
                out[name] = ""
            elif edm in ("Edm.Decimal", "Edm.Double"):
                out[name] = Decimal(0)
            elif edm in ("Edm.Int32", "Edm.Int64"):
                out[name] = 0
            elif edm == "Edm.Boolean":
                out[name] = False
            elif edm == "Edm.Guid":
                out[name] = ZERO_GUID
            elif edm == "Edm.Date":
                out[name] = EMPTY_DATE
        return out

    # ------------------------------------------------------------------ ETags

    def _check_if_match(self, row: Row, if_match: str | None) -> None:
        if if_match is None or not if_match.strip():
            raise BCError(
                428,
                "BadRequest",
                "Could not validate the client concurrency token required by the service."
                " Please provide a valid ETag value with the If-Match header in your request.",
            )
        wanted = [t.strip() for t in if_match.split(",")]
        if "*" in wanted:
            return
        current = etag_of(row.body)
        norm = {t if t.startswith("W/") else f"W/{t}" for t in wanted}
        if current not in norm:
            raise BCError(
                409,
                "Request_EntityChanged",
                "Could not save the changes because the record has been changed by another"
                " user. Refresh the record and try again.",
            )

    # ------------------------------------------------------------------ number series

    _SERIES: dict[str, tuple[str, str, int, str | None]] = {
        # name: (resource, default prefix, width, status filter)
        "customer": ("customers", "C", 5, None),
        "project": ("projects", "PR", 5, None),
        "employee": ("employees", "E", 4, None),
        "invoice_draft": ("salesInvoices", "S-INV-", 6, "Draft"),
        "invoice_posted": ("salesInvoices", "PSI-", 6, "posted"),
        "memo_draft": ("salesCreditMemos", "S-CR-", 6, "Draft"),
        "memo_posted": ("salesCreditMemos", "PSCM-", 6, "posted"),
    }

    def next_number(self, series: str) -> str:
        """Next number of a number series (persisted in the store's metadata)."""
        resource, prefix, width, status = self._SERIES[series]
        key = f"erp.series.{series}"
        with self.lock:
            state = self.store.meta_get(key)
            if state is None:
                state = self._derive_series(resource, prefix, width, status)
            state["last"] = int(state["last"]) + 1
            self.store.meta_set(key, state)
        return f"{state['prefix']}{str(state['last']).zfill(int(state['width']))}"

    def _derive_series(
        self, resource: str, prefix: str, width: int, status: str | None
    ) -> dict[str, Any]:
        """Continue the numbering the generated data already uses, else start fresh."""
        best: tuple[int, str, int] | None = None
        for raw in self.store.scan(resource, raw=True):
            body = loads(raw)
            st = body.get("status")
            if status == "Draft" and st != "Draft":
                continue
            if status == "posted" and st == "Draft":
                continue
            m = re.fullmatch(r"(.*?)(\d+)", str(body.get("number") or ""))
            if not m:
                continue
            num = int(m.group(2))
            if best is None or num > best[0]:
                best = (num, m.group(1), len(m.group(2)))
        if best is None:
            start = 100000 if status == "Draft" else 0
            return {"prefix": prefix, "width": width, "last": start}
        return {"prefix": best[1], "width": best[2], "last": best[0]}

    # ------------------------------------------------------------------ simple entities

    def create(self, es: EntitySet, raw: bytes, *, base_url: str) -> Reply:
        data = self._validate(es, _parse_json(raw))
        with self.lock:
            body = self._defaults(es)
            body.update(data)
            body["id"] = str(uuid.uuid4())
            if es.number_series:
                if body.get("number"):
                    existing = self.store.scan_rows(
                        es.resource, where={"number": body["number"]}, limit=1
                    )
                    if existing:
                        raise BCError(
                            400,
                            "Internal_EntityWithSameKeyExists",
                            f"The record already exists. Identification fields and values:"
                            f" No.='{body['number']}'",
                        )
                else:
                    body["number"] = self.next_number(es.number_series)
            if es.segment == "unitsOfMeasure":
                self._unit_key(body)
            if es.segment == "customers":
                body["type"] = body.get("type") or "Company"
                body["blocked"] = body.get("blocked") or " "
                body["currencyCode"] = body.get("currencyCode") or ""
                if body.get("taxAreaId") in (None, "", ZERO_GUID):
                    # the customer template's VAT Bus. Posting Group
                    body["taxAreaId"] = self._tax_area_id(DEFAULT_TAX_AREA)
            self._derive(es, body)
            self.store.put(es.resource, body["id"], body, stamp_field=STAMP)
            row = self.store.get_row(es.resource, body["id"])
        assert row is not None
        return self._entity_reply(201, es, row, base_url, location=True)

    def update(
        self, es: EntitySet, rid: str, raw: bytes, if_match: str | None, *, base_url: str
    ) -> Reply:
        data = self._validate(es, _parse_json(raw))
        with self.lock:
            row = self._row(es, rid)
            self._check_if_match(row, if_match)
            body = loads(row.body)
            if "number" in data and data["number"] != body.get("number"):
                dupe = self.store.scan_rows(es.resource, where={"number": data["number"]}, limit=1)
                if dupe:
                    raise BCError(
                        400,
                        "Internal_EntityWithSameKeyExists",
                        f"The record already exists. Identification fields and values:"
                        f" No.='{data['number']}'",
                    )
            body.update(data)
            if es.segment == "unitsOfMeasure":
                self._unit_key(body, current=row.id)
            self._derive(es, body)
            self.store.put(es.resource, row.id, body, parent_id=row.parent_id, stamp_field=STAMP)
            new = self.store.get_row(es.resource, row.id)
        assert new is not None
        return self._entity_reply(200, es, new, base_url)

    def _unit_key(self, body: dict[str, Any], current: str | None = None) -> None:
        """A Unit of Measure's fields as table 204 stores them: ``code`` is a Code[10] (upper
        case) and the primary key, so a second unit with the same code is refused."""
        for name, limit in _UNIT_LEN.items():
            value = str(body.get(name) or "")
            if len(value) > limit:
                raise BCError(
                    400,
                    "Application_StringExceededLength",
                    f"The length of the string is {len(value)}, but it must be less than or"
                    f" equal to {limit} characters. Value: {value}",
                )
        body["code"] = str(body.get("code") or "").upper()
        body["internationalStandardCode"] = str(body.get("internationalStandardCode") or "").upper()
        for other in self.store.scan_rows("unitsOfMeasure", where={"code": body["code"]}):
            if other.id != current:
                raise BCError(
                    400,
                    "Internal_EntityWithSameKeyExists",
                    "The record already exists. Identification fields and values:"
                    f" Code='{body['code']}'",
                )

    def _related(self, resource: str, rid: Any, what: str) -> dict[str, Any] | None:
        """The related record a GUID property names (blank GUID: none); unknown: 400."""
        if rid in (None, "", ZERO_GUID):
            return None
        found = self.store.get(resource, str(rid).lower())
        if found is None:
            raise BCError(
                400,
                "Internal_RecordNotFound",
                f"The {what} does not exist. Identification fields and values: Id='{rid}'",
            )
        return found

    def _tax_area_id(self, code: str) -> str:
        hit = self.store.scan("taxAreas", where={"code": code}, limit=1)
        return str(hit[0]["id"]) if hit else ZERO_GUID

    def _derive(self, es: EntitySet, body: dict[str, Any]) -> None:
        """The read-only properties the API page computes (customer tax area name, employee
        display name), and the relations a write must name correctly."""
        if es.segment == "customers":
            area = self._related("taxAreas", body.get("taxAreaId"), "Tax Area")
            body["taxAreaId"] = area["id"] if area else ZERO_GUID
            body["taxAreaDisplayName"] = area.get("displayName", "") if area else ""
            self._related("paymentTerms", body.get("paymentTermsId"), "Payment Terms")
        if es.segment == "employees":
            body["status"] = body.get("status") or "Active"
            body["displayName"] = " ".join(
                p for p in (body.get("givenName"), body.get("surname")) if p
            )

    def delete(self, es: EntitySet, rid: str, if_match: str | None) -> Reply:
        with self.lock:
            row = self._row(es, rid)
            self._check_if_match(row, if_match)
            if es.segment == "customers":
                number = loads(row.body).get("number")
                for res in ("salesInvoices", "salesCreditMemos"):
                    open_docs = self.store.scan_rows(res, where={"customerId": row.id}, limit=1)
                    if open_docs:
                        raise BCError(
                            400,
                            "Application_DialogException",
                            f"You cannot delete Customer {number} because there is at least one"
                            " outstanding Sales Invoice for this customer.",
                        )
            self.store.delete(es.resource, row.id)
        return Reply(204)

    # ------------------------------------------------------------------ sales documents

    def _customer_for(self, data: Mapping[str, Any], current: Mapping[str, Any] | None = None):
        cid = data.get("customerId")
        cno = data.get("customerNumber")
        if not cid and not cno:
            if current is not None:
                cid = current.get("customerId")
            else:
                raise BCError(
                    400,
                    "Application_DialogException",
                    "A customerNumber or a customerID must be provided.",
                )
        if cid and cid != ZERO_GUID:
            cust = self.store.get("customers", cid)
            if cust is None:
                raise BCError(
                    400,
                    "Internal_RecordNotFound",
                    f"The Customer does not exist. Identification fields and values: Id='{cid}'",
                )
            if cno and cust.get("number") != cno:
                raise BCError(
                    400,
                    "Application_DialogException",
                    f"The provided customerNumber '{cno}' and customerId '{cid}' do not match.",
                )
            return cust
        found = self.store.scan("customers", where={"number": cno}, limit=1)
        if not found:
            raise BCError(
                400,
                "Internal_RecordNotFound",
                f"The Customer does not exist. Identification fields and values: No.='{cno}'",
            )
        return found[0]

    @staticmethod
    def _check_blocked(cust: Mapping[str, Any]) -> None:
        blocked = str(cust.get("blocked") or "").strip()
        if blocked in ("All", "Invoice"):
            raise BCError(
                400,
                "Application_DialogException",
                f"You cannot create this type of document when Customer {cust.get('number')}"
                f" is blocked with type {blocked}",
            )

    def vat_bus_group(self, cust: Mapping[str, Any]) -> str:
        """The customer's VAT Business Posting Group: the code of its ``taxAreaId``."""
        area = self.store.get("taxAreas", str(cust.get("taxAreaId") or ZERO_GUID))
        return str(area.get("code") or "") if area else ""

    def tax_percent(self, tax_code: str, cust: Mapping[str, Any], on_date: str) -> Decimal:
        """The VAT % for a line: VAT Posting Setup of (customer's bus. group, line's taxCode)."""
        return self.vat_setup(tax_code, cust, on_date)[0]

    def vat_setup(
        self, tax_code: str, cust: Mapping[str, Any], on_date: str
    ) -> tuple[Decimal, str]:
        """VAT % and VAT Identifier of a line (VAT Posting Setup of the customer's VAT Bus.
        Posting Group and the line's VAT Prod. Posting Group): the identifier groups the lines
        whose VAT is rounded together. A row without one is grouped by its product group."""
        del on_date  # VAT Posting Setup has no validity dates
        if not tax_code:
            return Decimal(0), ""
        groups = self.store.scan_rows("taxGroups", where={"code": tax_code}, limit=1)
        if not groups:
            raise BCError(
                400,
                "Internal_InvalidTableRelation",
                f"The field VAT Prod. Posting Group of table Sales Line contains a value"
                f" ({tax_code}) that cannot be found in the related table (VAT Product Posting"
                " Group).",
            )
        bus = self.vat_bus_group(cust)
        setup = self.store.get(VAT_POSTING_SETUP_SERVICE.resource, vat_setup_key(bus, tax_code))
        if setup is None or setup.get("Blocked"):
            raise BCError(
                400,
                "Internal_RecordNotFound",
                "The VAT Posting Setup does not exist. Identification fields and values:"
                f" VAT Bus. Posting Group='{bus}',VAT Prod. Posting Group='{tax_code}'",
            )
        identifier = str(setup.get("VAT_Identifier") or "") or tax_code
        return Decimal(str(setup.get("VAT_Percent") or 0)), identifier

    def _price_line(
        self, line: dict[str, Any], cust: Mapping[str, Any], currency: str, on_date: str
    ) -> dict[str, Any]:
        qty = Decimal(str(line.get("quantity") or 0))
        price = Decimal(str(line.get("unitPrice") or 0))
        if line.get("lineType") == "Comment":
            qty = price = Decimal(0)
        gross = round_money(qty * price, currency)
        pct = Decimal(str(line.get("discountPercent") or 0))
        given = line.pop("_discountAmountGiven", None)
        if given is None and not pct and line.get("discountAmount"):
            given = line["discountAmount"]  # an amount set earlier without a percentage
        discount = (
            round_money(Decimal(str(given)), currency)
            if given is not None
            else round_money(gross * pct / 100, currency)
        )
        excl = gross - discount
        rate, identifier = self.vat_setup(str(line.get("taxCode") or ""), cust, on_date)
        # the line's share of its VAT group's rounded VAT is set by _recompute
        tax = round_money(excl * rate / 100, currency)
        line["_vatIdentifier"] = identifier
        line.update(
            {
                "quantity": qty,
                "unitPrice": price,
                "discountAmount": discount,
                "discountPercent": pct,
                "amountExcludingTax": excl,
                "taxPercent": rate,
                "totalTaxAmount": tax,
                "amountIncludingTax": excl + tax,
                "invoiceDiscountAllocation": round_money(Decimal(0), currency),
                "netAmount": excl,
                "netTaxAmount": tax,
                "netAmountIncludingTax": excl + tax,
            }
        )
        return line

    def _new_line(
        self, es_line: EntitySet, data: Any, doc: Mapping[str, Any], sequence: int
    ) -> dict[str, Any]:
        given = data.get("discountAmount") if isinstance(data, dict) else None
        checked = self._validate(es_line, data)
        line = self._defaults(es_line)
        line.update(checked)
        if given is not None:
            line["_discountAmountGiven"] = checked.get("discountAmount")
        line["id"] = str(uuid.uuid4())
        line["documentId"] = doc["id"]
        line["sequence"] = checked.get("sequence") or sequence
        line["lineType"] = checked.get("lineType") or "Item"
        if line["lineType"] not in _LINE_TYPES:
            raise BCError(
                400,
                "BadRequest",
                f"Cannot convert the literal '{line['lineType']}' to the expected type"
                " 'Microsoft.NAV.invoiceLineAggLineType'.",
            )
        self._line_references(line, checked)
        if "shipmentDate" in es_line.properties and line.get("shipmentDate") == EMPTY_DATE:
            line["shipmentDate"] = doc.get("invoiceDate") or doc.get("creditMemoDate")
        return line

    # ------------------------------------------------------------------ line references

    @staticmethod
    def _invalid_relation(field_name: str, value: Any, table: str) -> BCError:
        return BCError(
            400,
            "Internal_InvalidTableRelation",
            f"The field {field_name} of table {_LINE_TABLE} contains a value ({value}) that"
            f" cannot be found in the related table ({table}).",
        )

    def _account(self, number: str) -> dict[str, Any] | None:
        hit = self.store.scan("accounts", where={"number": number}, limit=1)
        return hit[0] if hit else None

    @staticmethod
    def _check_posting_account(acc: Mapping[str, Any]) -> None:
        """``GLAccount.CheckGLAcc()`` (Account Type Posting, not Blocked) and the Sales Line's
        ``TestField("Direct Posting", true)``: BC's TestField errors."""

        def test_field(caption: str, wanted: str, current: str) -> BCError:
            return BCError(
                400,
                "Application_FieldValidationException",
                f"{caption} must be equal to '{wanted}'  in G/L Account: No.={acc.get('number')}."
                f" Current value is '{current}'.",
            )

        kind = str(acc.get("accountType") or "")
        if kind != "Posting":
            raise test_field("Account Type", "Posting", kind)
        if acc.get("blocked"):
            raise test_field("Blocked", "No", "Yes")
        if not acc.get("directPosting"):
            raise test_field("Direct Posting", "Yes", "No")

    def _line_references(
        self,
        line: dict[str, Any],
        given: Mapping[str, Any],
        before: Mapping[str, Any] | None = None,
    ) -> None:
        """The G/L account, item and unit of measure a line names, resolved as
        APIV2SalesInvoiceLines.Page.al and table 5476 "Sales Invoice Line Aggregate" resolve
        them (``accountId``/``unitOfMeasureId`` follow the codes), with their errors."""
        account_id = str(given.get("accountId") or ZERO_GUID)
        if account_id != ZERO_GUID:
            if str(given.get("itemId") or ZERO_GUID) != ZERO_GUID:
                raise BCError(
                    400,
                    "Application_DialogException",
                    'Both "itemId" and "accountId" are specified. Specify only one of them.',
                )
            acc = self.store.get("accounts", account_id)
            if acc is None:
                raise self._invalid_relation("Account Id", account_id, "G/L Account")
            line["lineType"] = "Account"
            if "lineObjectNumber" not in given:
                line["lineObjectNumber"] = acc.get("number", "")
        number = str(line.get("lineObjectNumber") or "").upper()
        line["lineObjectNumber"] = number
        if before is not None and "lineObjectNumber" in given:
            old = str(before.get("lineObjectNumber") or "")
            if old and old != number:
                raise BCError(
                    400,
                    "Application_DialogException",
                    'The value for "lineObjectNumber" cannot be modified.',
                )
        line["accountId"] = ZERO_GUID
        if number and line.get("lineType") == "Account":
            acc = self._account(number)
            if acc is None:
                raise BCError(400, "Application_DialogException", "Account does not exist.")
            self._check_posting_account(acc)
            line["accountId"] = acc["id"]
        elif number and line.get("lineType") == "Item":
            # the sandbox company has no items (the pack invoices to G/L accounts)
            raise BCError(400, "Application_DialogException", "Item does not exist.")
        if "unitOfMeasureId" in given and "unitOfMeasureCode" not in given:
            unit_id = str(given.get("unitOfMeasureId") or ZERO_GUID)
            unit = self.store.get("unitsOfMeasure", unit_id) if unit_id != ZERO_GUID else None
            if unit_id != ZERO_GUID and unit is None:
                raise self._invalid_relation("Unit of Measure Id", unit_id, "Unit of Measure")
            line["unitOfMeasureCode"] = unit.get("code", "") if unit else ""
        code = str(line.get("unitOfMeasureCode") or "").upper()
        line["unitOfMeasureCode"] = code
        line["unitOfMeasureId"] = ZERO_GUID
        if code:
            hit = self.store.scan("unitsOfMeasure", where={"code": code}, limit=1)
            if not hit:
                raise self._invalid_relation("Unit of Measure Code", code, "Unit of Measure")
            line["unitOfMeasureId"] = hit[0]["id"]

    def _check_line_accounts(self, lines: Iterable[Mapping[str, Any]]) -> None:
        """Posting checks each G/L account line again (an account blocked since the draft)."""
        for line in lines:
            number = str(line.get("lineObjectNumber") or "")
            if line.get("lineType") != "Account" or not number:
                continue
            acc = self._account(number)
            if acc is None:
                raise BCError(
                    400,
                    "Internal_RecordNotFound",
                    "The G/L Account does not exist. Identification fields and values:"
                    f" No.='{number}'",
                )
            self._check_posting_account(acc)

    def _recompute(
        self, doc: dict[str, Any], lines: list[dict[str, Any]], cust: Mapping[str, Any]
    ) -> None:
        currency = doc.get("currencyCode") or self.lcy()
        on_date = doc.get("postingDate") or doc.get("invoiceDate") or self.today()
        zero = round_money(Decimal(0), currency)
        excl = tax = zero
        for line in lines:
            self._price_line(line, cust, currency, on_date)
        self._allocate_vat(lines, currency)
        for line in lines:
            excl += line["amountExcludingTax"]
            tax += line["totalTaxAmount"]
        doc["totalAmountExcludingTax"] = excl
        doc["totalTaxAmount"] = tax
        doc["totalAmountIncludingTax"] = excl + tax
        doc["discountAmount"] = sum((line["discountAmount"] for line in lines), zero)
        doc["remainingAmount"] = zero if doc.get("status") == "Draft" else excl + tax

    @staticmethod
    def _allocate_vat(lines: list[dict[str, Any]], currency: str) -> None:
        """VAT per document and VAT Identifier, as BaseApp's Sales Line ``UpdateVATAmounts``
        (module docstring): the lines of one group (VAT Identifier, sign of the amount) in
        ``sequence`` order each get ``round(group base so far x VAT %) - VAT of the group's
        earlier lines``, so the group's VAT is ``round(group base x VAT %)``."""
        groups: dict[tuple[str, Decimal, bool], tuple[Decimal, Decimal]] = {}
        for line in sorted(lines, key=lambda ln: int(ln.get("sequence") or 0)):
            identifier = str(line.pop("_vatIdentifier", "") or line.get("taxCode") or "")
            excl = line["amountExcludingTax"]
            rate = line["taxPercent"]
            key = (identifier, rate, excl >= 0)
            base_before, vat_before = groups.get(key, (Decimal(0), Decimal(0)))
            base = base_before + excl
            vat = round_money(base * rate / 100, currency)
            line_vat = vat - vat_before
            groups[key] = (base, vat)
            line.update(
                {
                    "totalTaxAmount": line_vat,
                    "amountIncludingTax": excl + line_vat,
                    "netTaxAmount": line_vat,
                    "netAmountIncludingTax": excl + line_vat,
                }
            )

    def _doc_from(self, es: EntitySet, data: dict[str, Any], cust: Mapping[str, Any]):
        doc = self._defaults(es)
        doc.update({k: v for k, v in data.items() if k in es.properties})
        doc["id"] = str(uuid.uuid4())
        doc["status"] = "Draft"
        date_field = "invoiceDate" if es.segment == "salesInvoices" else "creditMemoDate"
        if doc.get(date_field) in (None, "", EMPTY_DATE):
            doc[date_field] = self.today()
        if doc.get("postingDate") in (None, "", EMPTY_DATE):
            doc["postingDate"] = doc[date_field]
        if doc.get("dueDate") in (None, "", EMPTY_DATE):
            terms = self.store.get("paymentTerms", str(cust.get("paymentTermsId") or ZERO_GUID))
            due = dt.date.fromisoformat(doc[date_field]) + dt.timedelta(
                days=_terms_days((terms or {}).get("dueDateCalculation"))
            )
            doc["dueDate"] = due.isoformat()
        self._apply_customer(doc, cust, data)
        return doc

    def _apply_customer(
        self, doc: dict[str, Any], cust: Mapping[str, Any], data: Mapping[str, Any]
    ) -> None:
        self._check_blocked(cust)
        doc["customerId"] = cust["id"]
        doc["customerNumber"] = cust.get("number", "")
        doc["customerName"] = cust.get("displayName", "")
        doc["billToName"] = cust.get("displayName", "")
        doc["billToCustomerId"] = cust["id"]
        doc["billToCustomerNumber"] = cust.get("number", "")
        if "currencyCode" not in data and not doc.get("currencyCode"):
            doc["currencyCode"] = cust.get("currencyCode") or self.lcy()
        if "paymentTermsId" in doc and "paymentTermsId" not in data:
            doc["paymentTermsId"] = cust.get("paymentTermsId") or ZERO_GUID
        if doc.get("pricesIncludeTax"):
            raise BCError(
                400,
                "Application_DialogException",
                "The sandbox supports only pricesIncludeTax = false.",
            )

    def create_invoice(self, raw: bytes, *, base_url: str) -> Reply:
        return self.create_document("salesInvoices", raw, base_url=base_url)

    def create_document(self, segment: str, raw: bytes, *, base_url: str) -> Reply:
        """``POST salesInvoices`` / ``POST salesCreditMemos`` (a draft; deep insert of its lines).

        A credit memo may name the posted invoice it corrects: ``invoiceId`` must be a posted
        sales invoice (``The "invoiceId" does not match to an Invoice.``) and an
        ``invoiceNumber`` given with it must be that invoice's number (``The "invoiceId" and
        "invoiceNumber" do not match to a specific Invoice.``): APIV2SalesCreditMemos.Page.al,
        fields invoiceId / invoiceNumber (github.com/microsoft/ALAppExtensions,
        Apps/W1/APIV2/app/src/pages); POST is documented at
        https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/api/dynamics_salescreditmemo_create
        """
        es = ENTITY_SETS[segment]
        line_segment = _LINE_SEGMENT[segment]
        line_es = ENTITY_SETS[line_segment]
        data = self._validate(es, _parse_json(raw), allow_nav=line_segment)
        line_data = data.pop(line_segment, None) or []
        if not isinstance(line_data, list):
            raise BCError(400, "BadRequest", f"{line_segment} must be a JSON array.")
        with self.lock:
            if segment == "salesCreditMemos":
                self._memo_invoice(data)
            cust = self._customer_for(data)
            doc = self._doc_from(es, data, cust)
            lines = [
                self._new_line(line_es, ld, doc, 10000 * (i + 1)) for i, ld in enumerate(line_data)
            ]
            self._recompute(doc, lines, cust)
            draft_series = "invoice_draft" if segment == "salesInvoices" else "memo_draft"
            doc["number"] = self.next_number(draft_series)
            for line in lines:
                self.store.put(
                    line_es.resource, line["id"], line, parent_id=doc["id"], stamp_field=None
                )
            self.store.put(es.resource, doc["id"], doc, stamp_field=STAMP)
            row = self.store.get_row(es.resource, doc["id"])
        assert row is not None
        expand = line_segment if line_data else None
        return self._entity_reply(201, es, row, base_url, expand=expand, location=True)

    def _memo_invoice(self, data: dict[str, Any]) -> None:
        """Resolve a credit memo's ``invoiceId`` / ``invoiceNumber`` to a posted invoice
        (APIV2SalesCreditMemos: invoiceId OnValidate, invoiceNumber OnValidate)."""
        inv_id = data.get("invoiceId")
        if inv_id not in (None, "", ZERO_GUID):
            inv = self.store.get("salesInvoices", str(inv_id))
            if inv is None or inv.get("status") in (None, "Draft"):
                raise BCError(
                    400,
                    "Application_DialogException",
                    'The "invoiceId" does not match to an Invoice.',
                )
            if data.get("invoiceNumber") not in (None, "") and data["invoiceNumber"] != inv.get(
                "number"
            ):
                raise BCError(
                    400,
                    "Application_DialogException",
                    'The "invoiceId" and "invoiceNumber" do not match to a specific Invoice.',
                )
            data["invoiceNumber"] = inv.get("number", "")
        elif data.get("invoiceNumber") not in (None, ""):
            found = self.store.scan(
                "salesInvoices", where={"number": data["invoiceNumber"]}, limit=1
            )
            if found and found[0].get("status") not in (None, "Draft"):
                data["invoiceId"] = found[0]["id"]

    def _doc_and_lines(
        self, es: EntitySet, doc_id: str
    ) -> tuple[Row, dict[str, Any], list[dict[str, Any]]]:
        row = self._row(es, doc_id)
        line_res = "salesInvoiceLines" if es.segment == "salesInvoices" else "salesCreditMemoLines"
        lines = [loads(r.body) for r in self._lines_of(line_res, row.id)]
        return row, loads(row.body), lines

    def _require_draft(self, doc: Mapping[str, Any], what: str = "changed") -> None:
        if doc.get("status") != "Draft":
            raise BCError(
                400,
                "Application_DialogException",
                f"The document {doc.get('number')} has been posted (status"
                f" {doc.get('status')}) and cannot be {what}.",
            )

    def _save_doc(
        self, es: EntitySet, doc: dict[str, Any], lines: list[dict[str, Any]], line_res: str
    ) -> None:
        for line in lines:
            self.store.put(line_res, line["id"], line, parent_id=doc["id"], stamp_field=None)
        self.store.put(es.resource, doc["id"], doc, stamp_field=STAMP)

    def update_invoice(
        self,
        doc_id: str,
        raw: bytes,
        if_match: str | None,
        *,
        base_url: str,
        segment: str = "salesInvoices",
    ) -> Reply:
        es = ENTITY_SETS[segment]
        data = self._validate(es, _parse_json(raw))
        with self.lock:
            row, doc, lines = self._doc_and_lines(es, doc_id)
            self._check_if_match(row, if_match)
            self._require_draft(doc)
            if segment == "salesCreditMemos" and ("invoiceId" in data or "invoiceNumber" in data):
                self._memo_invoice(data)
            cust = self._customer_for(data, current=doc)
            doc.update(data)
            self._apply_customer(doc, cust, data)
            self._recompute(doc, lines, cust)
            self._save_doc(es, doc, lines, _LINE_SEGMENT[segment])
            new = self.store.get_row(es.resource, row.id)
        assert new is not None
        return self._entity_reply(200, es, new, base_url)

    def delete_invoice(
        self, doc_id: str, if_match: str | None, *, segment: str = "salesInvoices"
    ) -> Reply:
        es = ENTITY_SETS[segment]
        with self.lock:
            row, doc, lines = self._doc_and_lines(es, doc_id)
            self._check_if_match(row, if_match)
            self._require_draft(doc, "deleted")
            for line in lines:
                self.store.delete(_LINE_SEGMENT[segment], line["id"])
            self.store.delete(es.resource, row.id)
        return Reply(204)

    def add_line(
        self, doc_id: str, raw: bytes, *, base_url: str, segment: str = "salesInvoices"
    ) -> Reply:
        es = ENTITY_SETS[segment]
        line_es = ENTITY_SETS[_LINE_SEGMENT[segment]]
        payload = _parse_json(raw)
        with self.lock:
            _row, doc, lines = self._doc_and_lines(es, doc_id)
            self._require_draft(doc)
            seq = max((int(line.get("sequence") or 0) for line in lines), default=0) + 10000
            line = self._new_line(line_es, payload, doc, seq)
            cust = self._customer_for({}, current=doc)
            lines.append(line)
            self._recompute(doc, lines, cust)
            self._save_doc(es, doc, lines, line_es.resource)
            new = self.store.get_row(line_es.resource, line["id"])
        assert new is not None
        return self._entity_reply(
            201,
            line_es,
            new,
            base_url,
            parent_segment=f"{segment}({doc['id']})/",
            location=True,
        )

    def update_line(
        self,
        doc_id: str,
        line_id: str,
        raw: bytes,
        if_match: str | None,
        *,
        base_url: str,
        segment: str = "salesInvoices",
    ) -> Reply:
        es = ENTITY_SETS[segment]
        line_es = ENTITY_SETS[_LINE_SEGMENT[segment]]
        payload = _parse_json(raw)
        given = payload.get("discountAmount") if isinstance(payload, dict) else None
        data = self._validate(line_es, payload)
        with self.lock:
            _row, doc, lines = self._doc_and_lines(es, doc_id)
            line_row = self._row(line_es, line_id, parent_id=doc["id"])
            self._check_if_match(line_row, if_match)
            self._require_draft(doc)
            for line in lines:
                if line["id"] == line_row.id:
                    before = dict(line)
                    line.update(data)
                    self._line_references(line, data, before)
                    if given is not None:
                        line["_discountAmountGiven"] = data.get("discountAmount")
            cust = self._customer_for({}, current=doc)
            self._recompute(doc, lines, cust)
            self._save_doc(es, doc, lines, line_es.resource)
            new = self.store.get_row(line_es.resource, line_row.id)
        assert new is not None
        return self._entity_reply(
            200, line_es, new, base_url, parent_segment=f"{segment}({doc['id']})/"
        )

    def delete_line(
        self, doc_id: str, line_id: str, if_match: str | None, *, segment: str = "salesInvoices"
    ) -> Reply:
        es = ENTITY_SETS[segment]
        line_es = ENTITY_SETS[_LINE_SEGMENT[segment]]
        with self.lock:
            _row, doc, lines = self._doc_and_lines(es, doc_id)
            line_row = self._row(line_es, line_id, parent_id=doc["id"])
            self._check_if_match(line_row, if_match)
            self._require_draft(doc)
            lines = [line for line in lines if line["id"] != line_row.id]
            self.store.delete(line_es.resource, line_row.id)
            cust = self._customer_for({}, current=doc)
            self._recompute(doc, lines, cust)
            self._save_doc(es, doc, lines, line_es.resource)
        return Reply(204)

    # ------------------------------------------------------------------ bound actions

    def post_document(self, segment: str, doc_id: str) -> Reply:
        """``Microsoft.NAV.post``: Draft to Open, posted number assigned, modstamp bumped."""
        es = ENTITY_SETS[segment]
        with self.lock:
            row, doc, lines = self._doc_and_lines(es, doc_id)
            if doc.get("status") != "Draft":
                raise BCError(
                    400,
                    "Application_DialogException",
                    f"The document {doc.get('number')} has already been posted.",
                )
            if not any(Decimal(str(line.get("amountExcludingTax") or 0)) for line in lines):
                raise BCError(400, "Application_DialogException", "There is nothing to post.")
            cust = self._customer_for({}, current=doc)
            self._check_blocked(cust)
            self._check_line_accounts(lines)
            series = "invoice_posted" if segment == "salesInvoices" else "memo_posted"
            doc["number"] = self.next_number(series)
            doc["status"] = "Open"
            currency = doc.get("currencyCode") or self.lcy()
            doc["remainingAmount"] = round_money(
                Decimal(str(doc.get("totalAmountIncludingTax") or 0)), currency
            )
            if segment == "salesCreditMemos" and doc.get("invoiceId") not in (None, ZERO_GUID):
                self._settle_invoice(str(doc["invoiceId"]), doc)
            self.store.put(es.resource, row.id, doc, stamp_field=STAMP)
        return Reply(204)

    def _settle_invoice(self, invoice_id: str, memo: Mapping[str, Any]) -> None:
        """A posted credit memo applied to the invoice lowers its ``remainingAmount``; when
        nothing remains the invoice's ledger entry is closed and the API shows ``Paid``.

        Codeunit 5477 "Sales Invoice Aggregator" (``SetStatusOptionFromSalesInvoiceHeader``):
        Cancelled -> Canceled, Corrective -> Corrective, Closed -> Paid. ``Corrective`` on an
        invoice (Sales Invoice Header field 1311) means the invoice *cancels a credit memo*
        (a "Cancelled Document" of source 114); a corrective credit memo that is posted,
        rather than the invoice canceled, records no such link (only ``CancelPostedInvoice``'s
        ``SetTrackInfoForCancellation`` does), so the fully credited invoice is Closed: Paid.
        ``lastModifiedDateTime`` moves only when the status does (``UpdateStatusIfChanged``).
        """
        row = self.store.get_row("salesInvoices", invoice_id)
        if row is None:
            return
        inv = loads(row.body)
        currency = inv.get("currencyCode") or self.lcy()
        remaining = Decimal(str(inv.get("remainingAmount") or 0)) - Decimal(
            str(memo.get("totalAmountIncludingTax") or 0)
        )
        inv["remainingAmount"] = round_money(max(remaining, Decimal(0)), currency)
        if remaining <= 0 and inv.get("status") == "Open":
            inv["status"] = "Paid"
            self.store.put("salesInvoices", invoice_id, inv, stamp_field=STAMP)
        else:
            self.store.put(
                "salesInvoices", invoice_id, inv, modstamp=row.modstamp, stamp_field=None
            )

    def _memo_from_invoice(self, inv: dict[str, Any], lines: list[dict[str, Any]]) -> dict:
        memo_es = ENTITY_SETS["salesCreditMemos"]
        line_es = ENTITY_SETS["salesCreditMemoLines"]
        memo = self._defaults(memo_es)
        for key in memo_es.properties:
            if key in inv and key not in ("id", "number", "status", STAMP):
                memo[key] = inv[key]
        memo["id"] = str(uuid.uuid4())
        memo["creditMemoDate"] = self.today()
        memo["postingDate"] = self.today()
        memo["dueDate"] = self.today()
        memo["invoiceId"] = inv["id"]
        memo["invoiceNumber"] = inv.get("number", "")
        memo["externalDocumentNumber"] = inv.get("externalDocumentNumber", "")
        memo["status"] = "Draft"
        memo["number"] = self.next_number("memo_draft")
        for line in lines:
            copy = {k: v for k, v in line.items() if k in line_es.properties}
            copy["id"] = str(uuid.uuid4())
            copy["documentId"] = memo["id"]
            self.store.put(
                line_es.resource, copy["id"], copy, parent_id=memo["id"], stamp_field=None
            )
        return memo

    def corrective_credit_memo(self, doc_id: str, *, base_url: str, cancel: bool) -> Reply:
        """``Microsoft.NAV.makeCorrectiveCreditMemo`` (draft memo) or ``Microsoft.NAV.cancel``
        (posted memo, invoice Canceled)."""
        es = ENTITY_SETS["salesInvoices"]
        memo_es = ENTITY_SETS["salesCreditMemos"]
        with self.lock:
            row, inv, lines = self._doc_and_lines(es, doc_id)
            if inv.get("status") == "Draft":
                raise BCError(
                    400,
                    "Application_DialogException",
                    "Only posted invoices can be corrected or canceled.",
                )
            if cancel and inv.get("status") not in ("Open",):
                raise BCError(
                    400,
                    "Application_DialogException",
                    f"You cannot cancel the posted sales invoice {inv.get('number')} because it"
                    f" has status {inv.get('status')}.",
                )
            if cancel:
                self._check_line_accounts(lines)
            memo = self._memo_from_invoice(inv, lines)
            if cancel:
                memo["status"] = "Open"
                memo["number"] = self.next_number("memo_posted")
                memo["remainingAmount"] = Decimal(0)
                inv["status"] = "Canceled"
                inv["remainingAmount"] = round_money(Decimal(0), inv.get("currencyCode"))
                self.store.put(es.resource, row.id, inv, stamp_field=STAMP)
            self.store.put(memo_es.resource, memo["id"], memo, stamp_field=STAMP)
        location = self.entity_url(base_url, memo_es, memo["id"])
        return Reply(204, None, {"Location": location})

    # ------------------------------------------------------------------ sandbox control: payments

    def apply_payment(
        self, *, invoice_id: str | None = None, number: str | None = None, amount: Any
    ) -> dict[str, Any]:
        """Sandbox control (``POST /__admin/payments``, not a vendor route): the client pays
        ``amount`` of a posted sales invoice, as a posted customer payment applied to it would.

        Business Central API v2.0 documents recording a payment (``customerPayments`` in a
        ``customerPaymentJournals`` batch, with ``appliesToInvoiceId``) but no action that posts
        that journal: the resource page lists none and the page source has an empty
        ``actions`` block (dynamics_customerPaymentJournal.md; APIV2CustPaymJournals.Page.al in
        microsoft/ALAppExtensions). Posting happens in the BC client, so the sandbox offers it
        as a control operation like its faults and clock.

        What follows is what BC's API shows after such a posting:

        * ``remainingAmount`` is computed at read time from the posted invoice's customer
          ledger entry (APIV2SalesInvoices.Page.al ``GetRemainingAmount`` ->
          ``SalesInvoiceHeader.GetRemainingAmount()``): it drops by the payment.
        * ``status`` becomes ``Paid`` when the ledger entry closes (codeunit 5477 "Sales Invoice
          Aggregator", ``SetStatusOptionFromSalesInvoiceHeader``: ``Closed`` -> Paid).
        * ``lastModifiedDateTime`` (the aggregate's SystemModifiedAt) moves **only when the
          status changes**: ``UpdateStatusIfChanged`` modifies the aggregate record only if
          the status differs. A partial payment changes ``remainingAmount`` and leaves
          ``lastModifiedDateTime`` as it was.

        Refused (409): an invoice that is not ``Open`` (draft, paid, canceled, corrective), an
        amount that is not positive or exceeds ``remainingAmount`` (the sandbox does not model
        overpayments or customer credit).
        """
        es = ENTITY_SETS["salesInvoices"]
        with self.lock:
            if invoice_id:
                row = self._row(es, invoice_id)
            else:
                found = self.store.scan_rows(es.resource, where={"number": number}, limit=2)
                if len(found) != 1:
                    raise BCError(404, "Internal_RecordNotFound", f"No posted invoice {number}.")
                row = found[0]
            doc = loads(row.body)
            currency = doc.get("currencyCode") or self.lcy()
            if doc.get("status") != "Open":
                raise BCError(
                    409,
                    "Application_DialogException",
                    f"Invoice {doc.get('number')} has status {doc.get('status')}: only an open"
                    " posted invoice can be paid.",
                )
            try:
                paid = Decimal(str(amount))
            except (ArithmeticError, ValueError) as exc:
                raise BCError(409, "BadRequest", f"amount {amount!r} is not a number") from exc
            if round_money(paid, currency) != paid:
                raise BCError(
                    409, "BadRequest", f"amount {paid} has more decimals than {currency} has"
                )
            remaining = Decimal(str(doc.get("remainingAmount") or 0))
            if paid <= 0 or paid > remaining:
                raise BCError(
                    409,
                    "BadRequest",
                    f"amount {paid} must be above 0 and at most the remaining {remaining}",
                )
            doc["remainingAmount"] = round_money(remaining - paid, currency)
            if doc["remainingAmount"] == 0:
                doc["status"] = "Paid"
                self.store.put(es.resource, row.id, doc, stamp_field=STAMP)
            else:  # same modstamp: the aggregate record is not modified
                self.store.put(es.resource, row.id, doc, modstamp=row.modstamp, stamp_field=None)
        return {
            "id": doc["id"],
            "number": doc.get("number"),
            "amount": paid,
            "remainingAmount": doc["remainingAmount"],
            "status": doc["status"],
            "lastModifiedDateTime": doc.get(STAMP),
        }

    # ------------------------------------------------------------------ metadata

    def metadata(self) -> bytes:
        """A minimal CSDL ``$metadata`` document for the entity sets the sandbox serves."""
        return csdl()


#: The line entity set of each sales document entity set.
_LINE_SEGMENT = {
    "salesInvoices": "salesInvoiceLines",
    "salesCreditMemos": "salesCreditMemoLines",
}


def vat_setup_key(bus_group: str, prod_group: str) -> str:
    """Store id of a VAT Posting Setup row (the page's key: both posting groups)."""
    return f"{bus_group}|{prod_group}"
