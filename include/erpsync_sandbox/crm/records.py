"""sObject writes of the sandbox CRM: create, update, soft delete and external-id matching.

Validation follows Salesforce REST's error codes: unknown field ``INVALID_FIELD``, read-only field
``INVALID_FIELD_FOR_INSERT_UPDATE``, missing required field ``REQUIRED_FIELD_MISSING``, bad value
``JSON_PARSER_ERROR``. Every write moves ``SystemModstamp`` (stamped by the store) and
``LastModifiedDate``/``LastModifiedById``; a delete is a soft delete (``IsDeleted = true``, kept for
``queryAll``, logged for ``/sobjects/{type}/deleted``).

Salesforce docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
"""

from __future__ import annotations

import re
import secrets
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from erpsync_sandbox.store import Store, format_stamp

from . import countries
from .auth import USER_ID
from .schema import (
    BOOLEAN_TYPES,
    NUMBER_TYPES,
    SCHEMAS,
    TEXT_TYPES,
    FieldDef,
    SObjectSchema,
    salesforce_id,
)

__all__ = ["SfError", "create", "find_by_external_id", "soft_delete", "update"]

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_READ_ONLY_ALWAYS = frozenset({"Id", "attributes"})


class SfError(Exception):
    """An error answered as Salesforce's array body ``[{message, errorCode, fields}]``."""

    def __init__(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []

    def body(self) -> list[dict[str, Any]]:
        """``[{message, errorCode}]``, with ``fields`` when the error names fields."""
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            entry["fields"] = self.fields
        return [entry]


def new_id(store: Store, schema: SObjectSchema) -> str:
    """A fresh 18-character id with the object's key prefix."""
    while True:
        rid = salesforce_id(
            schema.key_prefix + "Sb" + "".join(secrets.choice(_ALNUM) for _ in range(10))
        )
        if store.get_row(schema.name, rid, include_deleted=True) is None:
            return rid


def _coerce(schema: SObjectSchema, data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Validate names and values of a request body; returns canonical-name -> value."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    read_only: list[str] = []
    for key, value in data.items():
        if key == "attributes":
            continue
        f = schema.lookup(key)
        if f is None:
            unknown.append(key)
            continue
        allowed = f.createable if creating else f.updateable
        if not allowed or f.name in _READ_ONLY_ALWAYS:
            read_only.append(f.name)
            continue
        out[f.name] = _value(f.name, f.type, value)
        _check_value(f, out[f.name])
    if unknown:
        raise SfError(
            400,
            "INVALID_FIELD",
            f"No such column '{unknown[0]}' on sobject of type {schema.name}",
        )
    if read_only:
        raise SfError(
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {', '.join(read_only)}. Please check the security"
            " settings of this field and verify that it is read/write for your profile or"
            " permission set.",
            read_only,
        )
    return out


def _check_value(f: FieldDef, value: Any) -> None:
    """What Salesforce refuses after parsing: a value not in a restricted picklist
    (``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``), a text longer than the field
    (``STRING_TOO_LONG``)."""
    if value is None:
        if f.restricted and not f.nillable:
            raise SfError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{f.label or f.name}: bad value for restricted picklist field: null",
                [f.name],
            )
        return
    if f.restricted and value not in f.picklist:
        raise SfError(
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{f.label or f.name}: bad value for restricted picklist field: {value}",
            [f.name],
        )
    if f.type == "string" and f.length and isinstance(value, str) and len(value) > f.length:
        raise SfError(
            400,
            "STRING_TOO_LONG",
            f"{f.label or f.name}: data value too large: {value} (max length={f.length})",
            [f.name],
        )


def _bad(name: str, kind: str, value: Any) -> SfError:
    shown = orjson.dumps(value).decode() if not isinstance(value, Decimal) else str(value)
    return SfError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from VALUE_{type(value).__name__.upper()} value"
        f" {shown} or request may be missing a required field",
        [name],
    )


def _value(name: str, ftype: str, value: Any) -> Any:
    if value is None:
        return None
    if ftype in BOOLEAN_TYPES:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _bad(name, "boolean", value)
    if ftype in NUMBER_TYPES:
        if isinstance(value, bool):
            raise _bad(name, "double", value)
        if isinstance(value, (int, Decimal)):
            return int(value) if ftype == "int" and isinstance(value, Decimal) else value
        if isinstance(value, float):
            return Decimal(repr(value))
        if isinstance(value, str):
            try:
                return Decimal(value)
            except InvalidOperation:
                raise _bad(name, "double", value) from None
        raise _bad(name, "double", value)
    if ftype == "date":
        if isinstance(value, str) and _DATE_RE.match(value):
            return value
        raise _bad(name, "date", value)
    if ftype == "datetime":
        if isinstance(value, str) and _DATETIME_RE.match(value):
            return value
        raise _bad(name, "datetime", value)
    if ftype in TEXT_TYPES or ftype in ("id", "reference"):
        if isinstance(value, (dict, list)):
            raise _bad(name, "string", value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    return value


def _country(body: dict[str, Any], values: dict[str, Any]) -> None:
    """State and Country/Territory Picklists: ``BillingCountryCode`` and ``BillingCountry``
    (the integration value, by default the ISO-standard name) always agree. A write may set
    either; an unknown code or name is refused.
    https://help.salesforce.com/s/articleView?id=xcloud.state_country_and_territory_picklist_fields.htm
    """
    code, label = values.get("BillingCountryCode"), values.get("BillingCountry")
    if code is None and label is None:
        if "BillingCountryCode" in values or "BillingCountry" in values:
            body["BillingCountryCode"] = body["BillingCountry"] = None
        return
    if code is not None:
        code = str(code).upper()
        if not countries.is_code(code):
            raise _bad_country(code, "BillingCountryCode")
        if label is not None and countries.code_for(str(label)) != code:
            raise _bad_country(str(label), "BillingCountry")
    else:
        code = countries.code_for(str(label))
        if code is None:
            raise _bad_country(str(label), "BillingCountry")
    body["BillingCountryCode"] = code
    body["BillingCountry"] = countries.label_for(code)


def _bad_country(value: str, field: str) -> SfError:
    # [mem] the message Salesforce gives for a value outside the country picklist
    message = (
        "There's a problem with this country, even though it may appear correct. Please select"
        " a country/territory from the list of valid countries."
    )
    return SfError(
        400,
        "FIELD_INTEGRITY_EXCEPTION",
        f"{message}: {value}",
        [field],
    )


def _derive(schema: SObjectSchema, body: dict[str, Any]) -> None:
    """Fields Salesforce computes: full names, closed/won flags from the stage."""
    if schema.name in ("Contact", "User") and ("LastName" in body or "FirstName" in body):
        body["Name"] = " ".join(p for p in (body.get("FirstName"), body.get("LastName")) if p)
    if schema.name == "Opportunity" and "StageName" in body:
        stage = (body.get("StageName") or "").lower()
        body["IsClosed"] = stage.startswith("closed")
        body["IsWon"] = stage == "closed won"


def create(
    store: Store,
    schema: SObjectSchema,
    data: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create a record from a request body (plus ``extra`` such as the upserted external id)."""
    values = _coerce(schema, data, creating=True)
    if extra:
        values.update(extra)
    missing = [name for name in schema.required if values.get(name) in (None, "")]
    if missing:
        raise SfError(
            400,
            "REQUIRED_FIELD_MISSING",
            f"Required fields are missing: [{', '.join(missing)}]",
            missing,
        )
    rid = new_id(store, schema)
    ms = store.now()
    stamp = format_stamp(ms, "salesforce")
    body: dict[str, Any] = {}
    for f in schema.fields:
        body[f.name] = False if (f.type in BOOLEAN_TYPES and not f.nillable) else None
        if f.default_value is not None:
            body[f.name] = f.default_value  # the picklist's default value on create
    body.update(values)
    if schema.name == "Account":
        _country(body, values)
    body.update(
        {
            "Id": rid,
            "IsDeleted": False,
            "CreatedDate": stamp,
            "CreatedById": USER_ID,
            "LastModifiedDate": stamp,
            "LastModifiedById": USER_ID,
        }
    )
    if "OwnerId" in body and body.get("OwnerId") is None:
        body["OwnerId"] = USER_ID
    if "CurrencyIsoCode" in body and body.get("CurrencyIsoCode") is None:
        body["CurrencyIsoCode"] = "USD"
    _derive(schema, body)
    store.put(schema.name, rid, body, modstamp=ms)
    return body


def update(
    store: Store, schema: SObjectSchema, rid: str, data: dict[str, Any]
) -> dict[str, Any] | None:
    """Apply a PATCH body to an existing live record; None if it does not exist."""
    values = _coerce(schema, data, creating=False)
    row = store.get_row(schema.name, rid)
    if row is None:
        return None
    body = row.data()
    body.update(values)
    if schema.name == "Account":
        _country(body, values)
    ms = store.now()
    body["LastModifiedDate"] = format_stamp(ms, "salesforce")
    body["LastModifiedById"] = USER_ID
    _derive(schema, body)
    store.put(schema.name, rid, body, modstamp=ms, parent_id=row.parent_id)
    return body


def soft_delete(store: Store, schema: SObjectSchema, rid: str) -> bool:
    """Soft-delete a live record; False if it does not exist or is already deleted. Deleting a
    master record deletes its master-detail children too (cascade delete, as Salesforce does:
    https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/relationships_among_objects.htm)."""
    if not store.delete(schema.name, rid, soft=True, set_fields={"IsDeleted": True}):
        return False
    for child in SCHEMAS.values():
        for f in child.fields:
            if f.relationship_name and schema.name in f.reference_to:
                for row in store.scan_rows(child.name, where={f.name: rid}):
                    store.delete(child.name, row.id, soft=True, set_fields={"IsDeleted": True})
    return True


def find_by_external_id(store: Store, schema: SObjectSchema, field: str, value: str) -> list[str]:
    """Ids of live records whose ``field`` equals ``value`` (case-insensitively, as Salesforce
    matches text external ids)."""
    if field == "Id":
        row = store.get_row(schema.name, value)
        if row is None and len(value) == 15:
            full = salesforce_id(value)
            row = store.get_row(schema.name, full)
        return [] if row is None else [row.id]
    wanted = value.casefold()
    needle = wanted
    plain = all(c.isalnum() or c in "-_. :/@" for c in value)
    out: list[str] = []
    for row in store.scan_rows(schema.name, order="seq"):
        # cheap text pre-check before parsing the body (only when JSON escaping cannot differ)
        if plain and needle not in row.body.casefold():
            continue
        got = orjson.loads(row.body).get(field)
        if got is not None and str(got).casefold() == wanted:
            out.append(row.id)
    return out
