"""The entity lists tests enumerate, derived from the spec registry (``erpsync.sync.specs``,
``erpsync.sync.specs_time``) and the model registry (``erpsync.models.canonical.ADAPTERS``),
never typed out: adding an entity the README's way (a spec in its DAG's tuple, its model in
``ADAPTERS``) needs no test edit. Functions, not constants, so that an entity registered at
runtime (tests/integration/test_adding_an_entity.py) is in them."""

from __future__ import annotations

from collections.abc import Iterable

from erpsync.sync import specs, specs_time
from erpsync.sync.spec import EntitySpec

#: Core tables a spec writes besides its ``core_table``: the VAT rates' after-merge step dates
#: each rate into core.tax_rates (erpsync.sync.vat_rates).
ALSO_WRITTEN: dict[str, tuple[str, ...]] = {"tax_rates": ("core.tax_rates",)}


def nightly_specs() -> tuple[EntitySpec, ...]:
    """The specs of the nightly sync DAGs (master data, then rates), in DAG order."""
    return (*specs.MASTER_DATA, *specs.RATES)


def every_spec() -> tuple[EntitySpec, ...]:
    """Every entity spec: the nightly DAGs', the milestones' and the hourly time & expense."""
    return (*specs.ALL.values(), *specs_time.BY_NAME.values())


def core_tables(entity_specs: Iterable[EntitySpec]) -> tuple[str, ...]:
    """The core tables the specs write (their ``core_table`` and :data:`ALSO_WRITTEN`)."""
    tables: list[str] = []
    for spec in entity_specs:
        for table in (spec.core_table, *ALSO_WRITTEN.get(spec.name, ())):
            if table not in tables:
                tables.append(table)
    return tuple(tables)


def sync_task_ids(entity_specs: Iterable[EntitySpec]) -> set[str]:
    """The ``sync_<entity>`` task ids the sync DAG factory makes for the specs."""
    return {f"sync_{spec.name}" for spec in entity_specs}


def models() -> set[type]:
    """The canonical models of every spec (each has one prebuilt validator in ADAPTERS)."""
    return {spec.model for spec in every_spec()}
