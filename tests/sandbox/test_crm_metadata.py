"""The Salesforce metadata the pack ships (vendor/salesforce, Salesforce DX source format) and the
sandbox CRM's schema cannot drift: every custom object and field of either is in the other with
the same type, length, precision/scale, picklist values, external-ID flag and label; the files
have the Metadata API shape; the permission set grants the Run-As user read on every field the
pack's SOQL selects and edit on every field it writes.

Generic over every ``objects/<Object>/fields/*.field-meta.xml`` and ``objects/<Object>/
<Object>.object-meta.xml``, so a new custom object (e.g. a contract's milestones) is covered by
adding its files and its sandbox schema.

Metadata API: CustomField https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customfield.htm,
CustomObject https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customobject.htm,
PermissionSet https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_permissionset.htm,
sfdx-project.json https://developer.salesforce.com/docs/atlas.en-us.sfdx_dev.meta/sfdx_dev/sfdx_dev_ws_config.htm
"""

# The XML parsed here is the repository's own metadata, not untrusted input.
# ruff: noqa: S314
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from erpsync_sandbox.crm.schema import SCHEMAS, FieldDef

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "vendor" / "salesforce"
DEFAULT = PROJECT / "force-app" / "main" / "default"
NS = "http://soap.sforce.com/2006/04/metadata"
Q = f"{{{NS}}}"

#: Metadata API field type -> the type ``describe`` (and the sandbox schema) reports.
DESCRIBE_TYPE = {
    "Text": "string",
    "TextArea": "textarea",
    "LongTextArea": "textarea",
    "Picklist": "picklist",
    "Checkbox": "boolean",
    "Date": "date",
    "DateTime": "datetime",
    "Number": "double",
    "Currency": "currency",
    "Percent": "percent",
    "Email": "email",
    "Phone": "phone",
    "Url": "url",
    "MasterDetail": "reference",
    "Lookup": "reference",
}
#: Elements each metadata type needs to deploy.
REQUIRED_ELEMENTS = {
    "Text": ("length",),
    "LongTextArea": ("length", "visibleLines"),
    "Number": ("precision", "scale"),
    "Currency": ("precision", "scale"),
    "Percent": ("precision", "scale"),
    "Checkbox": ("defaultValue",),
    "Picklist": ("valueSet",),
    "MasterDetail": ("referenceTo", "relationshipName"),
    "Lookup": ("referenceTo", "relationshipName"),
}
#: Elements a custom object needs to deploy.
CUSTOM_OBJECT_ELEMENTS = ("label", "pluralLabel", "nameField", "deploymentStatus", "sharingModel")
#: Standard fields with no field-level security (always readable when the object is): the record
#: id, name, audit fields, owner, currency and required/derived opportunity fields [mem].
ALWAYS_READABLE = frozenset(
    {
        "Id",
        "Name",
        "IsDeleted",
        "SystemModstamp",
        "CreatedDate",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "OwnerId",
        "CurrencyIsoCode",
        "StageName",
        "CloseDate",
        "IsWon",
        "IsClosed",
    }
)
#: Address components are secured as their compound field.
COMPOUND = {
    f"Billing{part}": "BillingAddress"
    for part in ("Street", "City", "PostalCode", "State", "StateCode", "Country", "CountryCode")
}
#: What the pack writes to the CRM (onboarding's write-back of the PSA project id).
PACK_WRITES: dict[str, set[str]] = {
    "Opportunity": {"PSA_Project_Id__c"},
    # the bill-back of a fixed-fee milestone (invoicing/push_crm.py)
    "Contract_Milestone__c": {"Status__c", "Invoice_Number__c"},
}


def _text(el: ET.Element, name: str) -> str | None:
    child = el.find(Q + name)
    return None if child is None else (child.text or "")


def _shipped_fields() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(DEFAULT.glob("objects/*/fields/*.field-meta.xml")):
        obj = path.parent.parent.name
        root = ET.parse(path).getroot()
        assert root.tag == Q + "CustomField", path
        name = _text(root, "fullName")
        assert name == path.name.removesuffix(".field-meta.xml"), path
        assert name.endswith("__c"), f"{path}: only custom fields are shipped"
        kind = _text(root, "type")
        assert kind in DESCRIBE_TYPE, (path, kind)
        for element in REQUIRED_ELEMENTS.get(kind, ()):
            assert root.find(Q + element) is not None, f"{path}: {kind} needs <{element}>"
        assert _text(root, "label"), path
        picklist: tuple[str, ...] = ()
        if kind == "Picklist":
            values = root.findall(f"{Q}valueSet/{Q}valueSetDefinition/{Q}value")
            assert values, path
            for v in values:
                assert _text(v, "fullName") and _text(v, "label") and _text(v, "default"), path
            picklist = tuple(_text(v, "fullName") or "" for v in values)
        number = kind in ("Number", "Currency", "Percent")
        out[(obj, name)] = {
            "type": DESCRIBE_TYPE[kind],
            "label": _text(root, "label"),
            "length": int(_text(root, "length") or 0),
            "precision": int(_text(root, "precision") or 0) if number else 0,
            "scale": int(_text(root, "scale") or 0) if number else 0,
            "picklist": picklist,
            "external_id": _text(root, "externalId") == "true",
            "reference_to": tuple(r.text or "" for r in root.findall(Q + "referenceTo")),
            "required": _text(root, "required") == "true" or kind == "MasterDetail",
        }
    return out


def _sandbox_props(f: FieldDef) -> dict[str, Any]:
    number = f.type in ("double", "currency", "percent")
    return {
        "type": f.type,
        "label": f.label,
        "length": f.length if f.type in ("string", "textarea") else 0,
        "precision": f.precision if number else 0,
        "scale": f.scale if number else 0,
        "picklist": f.picklist,
        "external_id": f.external_id,
        "reference_to": f.reference_to,
        "required": not f.nillable and f.type != "boolean",
    }


def _sandbox_fields() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (name, f.name): _sandbox_props(f)
        for name, schema in SCHEMAS.items()
        for f in schema.fields
        if f.custom
    }


def test_sfdx_project_is_source_format_on_api_60() -> None:
    config = json.loads((PROJECT / "sfdx-project.json").read_text())
    assert config["sourceApiVersion"] == "60.0"
    assert config["packageDirectories"] == [{"path": "force-app", "default": True}]
    assert (PROJECT / "README.md").is_file()


def test_custom_fields_shipped_equal_the_sandbox_schema_both_ways() -> None:
    shipped, sandbox = _shipped_fields(), _sandbox_fields()
    assert shipped, "no custom fields shipped"
    missing_in_metadata = sorted(set(sandbox) - set(shipped))
    assert missing_in_metadata == [], "sandbox fields an admin could not create"
    missing_in_sandbox = sorted(set(shipped) - set(sandbox))
    assert missing_in_sandbox == [], "shipped fields the sandbox does not serve"
    differing = {
        key: (shipped[key], sandbox[key]) for key in shipped if shipped[key] != sandbox[key]
    }
    assert differing == {}


def test_custom_objects_shipped_equal_the_sandbox_schema_both_ways() -> None:
    shipped: dict[str, ET.Element] = {}
    for path in sorted(DEFAULT.glob("objects/*/*.object-meta.xml")):
        obj = path.parent.name
        assert path.name == f"{obj}.object-meta.xml", path
        root = ET.parse(path).getroot()
        assert root.tag == Q + "CustomObject", path
        if obj.endswith("__c"):
            for element in (
                "label",
                "pluralLabel",
                "nameField",
                "deploymentStatus",
                "sharingModel",
            ):
                assert root.find(Q + element) is not None, f"{path}: needs <{element}>"
        shipped[obj] = root
    custom_sandbox = {name for name in SCHEMAS if name.endswith("__c")}
    assert {o for o in shipped if o.endswith("__c")} == custom_sandbox
    for obj in custom_sandbox:
        assert _text(shipped[obj], "label") == SCHEMAS[obj].label, obj
    for folder in DEFAULT.glob("objects/*"):
        # a folder without an object file only adds fields to a standard object
        assert folder.name in shipped or not folder.name.endswith("__c"), folder
        assert folder.name in SCHEMAS, f"{folder.name}: not an object the sandbox serves"


def _permission_set() -> ET.Element:
    path = DEFAULT / "permissionsets" / "erpsync_integration.permissionset-meta.xml"
    root = ET.parse(path).getroot()
    assert root.tag == Q + "PermissionSet"
    assert _text(root, "label")
    return root


def _pack_reads() -> dict[str, set[str]]:
    """Every object and field the pack's SOQL selects (sync specs and onboarding)."""
    from erpsync.onboarding.contracts import OPPORTUNITY_FIELDS
    from erpsync.sync import specs
    from erpsync.sync.sources import SalesforceQuery

    reads: dict[str, set[str]] = {"Opportunity": set(OPPORTUNITY_FIELDS)}
    for spec in specs.ALL.values():
        if isinstance(spec.source, SalesforceQuery):
            fields = {"Id", "IsDeleted", spec.source.modstamp_field, *spec.source.fields}
            reads.setdefault(spec.source.sobject, set()).update(fields)
    return reads


def _secured(field: str) -> str | None:
    if field in ALWAYS_READABLE:
        return None
    return COMPOUND.get(field, field)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_the_permission_set_covers_what_the_pack_reads_and_writes(mode: str) -> None:
    root = _permission_set()
    perms = {
        _text(p, "field"): (_text(p, "readable") == "true", _text(p, "editable") == "true")
        for p in root.findall(Q + "fieldPermissions")
    }
    objects = {
        _text(p, "object"): {c.tag.removeprefix(Q): c.text == "true" for c in p}
        for p in root.findall(Q + "objectPermissions")
    }
    wanted = _pack_reads() if mode == "read" else PACK_WRITES
    assert wanted
    for obj, fields in wanted.items():
        assert obj in SCHEMAS, obj
        grant = objects.get(obj, {})
        assert grant.get("allowRead"), f"{obj}: the Run-As user needs Read"
        if mode == "write":
            assert grant.get("allowEdit"), f"{obj}: the Run-As user needs Edit"
        for field in sorted(fields):
            found = SCHEMAS[obj].lookup(field)
            assert found is not None, f"{obj}.{field} is not in the schema"
            if found.custom and not found.nillable and found.type != "boolean":
                continue  # a required field has no field-level security: the object's grant
            secured = _secured(field)
            if secured is None:
                assert mode == "read", f"{obj}.{field} cannot be written"
                continue
            readable, editable = perms.get(f"{obj}.{secured}", (False, False))
            assert readable, f"{obj}.{secured} is not readable by the permission set"
            if mode == "write":
                assert editable, f"{obj}.{secured} is not editable by the permission set"


def test_the_permission_set_names_only_existing_fields_and_edits_only_what_is_written() -> None:
    root = _permission_set()
    written = {f"{o}.{f}" for o, fs in PACK_WRITES.items() for f in fs}
    for p in root.findall(Q + "fieldPermissions"):
        obj, _, field = (_text(p, "field") or "").partition(".")
        assert obj in SCHEMAS, obj
        assert SCHEMAS[obj].lookup(field) is not None or field in set(COMPOUND.values()), field
        if _text(p, "editable") == "true":
            assert f"{obj}.{field}" in written, f"{obj}.{field}: edit without a write"
        custom = SCHEMAS[obj].lookup(field)
        assert custom is None or custom.nillable or custom.type == "boolean", (
            f"{obj}.{field}: a required field cannot be in a permission set"
        )
