"""A minimal CSDL ``$metadata`` document for the Business Central sandbox.

OData clients that reflect the service (or validate entity types) read
``GET /v2.0/{tenant}/{environment}/api/v2.0/$metadata``. Real Business Central serves a large
CSDL document in the ``Microsoft.NAV`` namespace; this one declares only the entity types and
sets the sandbox emulates, with the same names, keys and EDM property types.

Reference: https://docs.oasis-open.org/odata/odata-csdl-xml/v4.01/odata-csdl-xml-v4.01.html
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from erpsync_sandbox.erp.entities import COMPANIES, ENTITY_SETS, EntitySet

__all__ = ["csdl"]

_NAV = {
    "salesInvoice": ("salesInvoiceLines", "salesInvoiceLine"),
    "salesCreditMemo": ("salesCreditMemoLines", "salesCreditMemoLine"),
}


def _entity_type(es: EntitySet) -> str:
    props = []
    for name, edm in es.properties.items():
        nullable = "" if name != "id" else ' Nullable="false"'
        props.append(f"<Property Name={quoteattr(name)} Type={quoteattr(edm)}{nullable}/>")
    nav = ""
    if es.entity_type in _NAV:
        seg, target = _NAV[es.entity_type]
        nav = (
            f'<NavigationProperty Name="{seg}" Type="Collection(Microsoft.NAV.{target})"'
            ' ContainsTarget="true"/>'
        )
    if es is COMPANIES:
        nav = "".join(
            f'<NavigationProperty Name="{s.segment}" Type="Collection(Microsoft.NAV.'
            f'{s.entity_type})" ContainsTarget="true"/>'
            for s in ENTITY_SETS.values()
        )
    return (
        f'<EntityType Name="{es.entity_type}"><Key><PropertyRef Name="id"/></Key>'
        + "".join(props)
        + nav
        + "</EntityType>"
    )


def csdl() -> bytes:
    """The CSDL XML for the standard API."""
    sets = [COMPANIES, *ENTITY_SETS.values()]
    types = "".join(_entity_type(es) for es in sets)
    container_sets = "".join(
        f'<EntitySet Name="{es.segment}" EntityType="Microsoft.NAV.{es.entity_type}"/>'
        for es in sets
    )
    doc = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">'
        "<edmx:DataServices>"
        '<Schema Namespace="Microsoft.NAV" xmlns="http://docs.oasis-open.org/odata/ns/edm">'
        + types
        + '<EntityContainer Name="NAV">'
        + container_sets
        + "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"
    )
    return doc.encode()
