"""Adding an entity works in one try, the README's way ("Adding an entity"): its four snippets
(migration, model, mapper, spec), run exactly as written where the README says they go and
registered at runtime, give an entity that the derived entity lists of the tests, the sync
DAG (task, pool, asset, docs) and a real sync against the sandbox all pick up, with no other
edit. The snippets are ruff-formatted, as the rest of the code."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pydantic import TypeAdapter

from erpsync.models import canonical, mappings
from erpsync.sync import specs
from erpsync.sync.spec import RunInfo
from erpsync.warehouse import migrate
from tests import entity_lists
from tests.integration.test_sync_engine import connection_env, store_bodies
from tests.sync_calls import run_sync

REPO = Path(__file__).resolve().parents[2]


def readme_snippets() -> dict[str, str]:
    """The code blocks of the README's "Adding an entity" section, by what they hold."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Adding an entity\n", 1)[1].split("\n## ", 1)[0]
    blocks = [
        (lang, re.sub(r"(?m)^   ", "", body))  # the blocks are indented under list items
        for lang, body in re.findall(r"```(\w+)\n(.*?)\n\s*```", section, re.S)
    ]
    found = {
        "migration": [b for lang, b in blocks if lang == "sql"],
        "model": [b for lang, b in blocks if lang == "python" and b.startswith("class ")],
        "mapper": [b for lang, b in blocks if lang == "python" and b.startswith("def ")],
        "spec": [b for lang, b in blocks if lang == "python" and "= EntitySpec(" in b],
        "commands": [b for lang, b in blocks if lang == "bash"],
    }
    assert all(len(v) >= 1 for v in found.values()), found
    return {k: "\n".join(v) + "\n" for k, v in found.items()}


def _exec_in(module, code: str) -> dict:
    """Run a snippet in the namespace of the module the README says it goes into."""
    namespace = dict(vars(module))
    exec(compile(code, f"README snippet for {module.__name__}", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.fixture
def new_entity(monkeypatch):
    """The README's entity, registered at runtime: model in ADAPTERS, spec in MASTER_DATA."""
    snippets = readme_snippets()
    model = _exec_in(canonical, snippets["model"])["ExpenseCategory"]
    monkeypatch.setitem(canonical.ADAPTERS, model, TypeAdapter(model))
    mapper = _exec_in(mappings, snippets["mapper"])["harvest_expense_category"]
    monkeypatch.setattr(mappings, "harvest_expense_category", mapper, raising=False)
    # specs.py imports the model with the other canonical models
    namespace = dict(vars(specs), ExpenseCategory=model)
    exec(compile(snippets["spec"], "README snippet for specs", "exec"), namespace)  # noqa: S102
    spec = namespace["EXPENSE_CATEGORIES"]
    monkeypatch.setattr(specs, "EXPENSE_CATEGORIES", spec, raising=False)
    monkeypatch.setattr(specs, "MASTER_DATA", (*specs.MASTER_DATA, spec))
    monkeypatch.setitem(specs.ALL, spec.name, spec)
    return spec, snippets


def test_the_readme_snippets_are_ruff_formatted():
    snippets = readme_snippets()
    for name in ("model", "mapper", "spec"):
        result = subprocess.run(
            [str(Path(sys.executable).parent / "ruff"), "format", "--diff", "-"],
            input=snippets[name],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert result.returncode == 0, f"README {name} snippet:\n{result.stdout}{result.stderr}"
    # the test command runs what `make test` runs for an entity, lint and types included
    commands = snippets["commands"]
    for part in ("make lint typecheck", "tests/integration/test_sync_dags.py", "tests/dags"):
        assert part in commands, part


def test_a_new_entity_is_in_every_derived_list_and_its_dag(new_entity):
    spec, _ = new_entity
    assert specs.get("expense_categories") is spec
    assert spec in entity_lists.every_spec() and spec in entity_lists.nightly_specs()
    assert spec.model in entity_lists.models()
    assert set(canonical.ADAPTERS) == entity_lists.models()  # test_models' registry check
    assert "core.expense_categories" in entity_lists.core_tables(specs.ALL.values())
    assert "sync_expense_categories" in entity_lists.sync_task_ids(specs.MASTER_DATA)

    # the mapper and the model: a Harvest record in, a canonical row out; a missing id is a
    # reason code (the safe id helper), not a KeyError
    row = canonical.adapter_for(spec.model).validate_python(
        spec.mapper({"id": 7, "name": "Mileage", "unit_name": "mile", "unit_price": 0.655})[0]
    )
    assert (row.psa_id, str(row.unit_price)) == ("7", "0.655")
    assert spec.mapper({"name": "no id"})[0]["psa_id"] is None

    # the master data DAG file, parsed as Airflow parses it, has the task and lists the entity
    path = REPO / "dags" / "erpsync_master_data_sync.py"
    module_spec = importlib.util.spec_from_file_location("_dag_new_entity", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    dag = module.dag
    task = dag.get_task("sync_expense_categories")
    assert task.pool == "psa_api"
    assert [a.uri for a in task.outlets] == ["erpsync://warehouse/core/expense_categories"]
    assert "sync_expense_categories" in dag.get_task("write_back_erp").upstream_task_ids
    assert "`sync_expense_categories` (PSA to `core.expense_categories`)" in dag.doc_md
    assert spec.description in dag.doc_md


@pytest.fixture
def sandbox(tmp_path):
    from erpsync_sandbox.serve import start_sandbox

    handle = start_sandbox(tmp_path / "sandbox", size="small", seed=0)
    yield handle
    handle.stop()


def test_a_new_entity_migrates_and_syncs_against_the_sandbox(
    new_entity, fresh_db, sandbox, monkeypatch
):
    spec, snippets = new_entity
    # the migration, numbered as the README says: the next number after the last file
    packaged = migrate.available()
    number = packaged[-1].version + 1
    extra = migrate.Migration(number, "expense_categories", snippets["migration"])
    monkeypatch.setattr(migrate, "available", lambda: [*packaged, extra])
    assert [m.version for m in migrate.migrate(fresh_db)][-1] == number
    with psycopg.connect(fresh_db) as conn:
        tables = {
            f"{s}.{t}"
            for s, t in conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        }
    assert set(entity_lists.core_tables(entity_lists.every_spec())) <= tables

    for key, value in connection_env(sandbox, fresh_db).items():
        monkeypatch.setenv(key, value)
    first = run_sync(spec, fresh_db, run=RunInfo.local("entity"))
    categories = {str(r["id"]): r for r in store_bodies(sandbox, "psa", spec.source.resource)}
    assert categories and first.inserted == len(categories) and first.quarantined == 0
    with psycopg.connect(fresh_db) as conn:
        loaded = conn.execute(
            "SELECT psa_id, name, unit_name, unit_price, is_active FROM core.expense_categories"
        ).fetchall()
    assert {r[0]: (r[1], r[2], r[4]) for r in loaded} == {
        i: (c["name"], c.get("unit_name"), c.get("is_active", True)) for i, c in categories.items()
    }
    second = run_sync(spec, fresh_db, run=RunInfo.local("entity-again"))
    assert (second.inserted, second.updated, second.deleted) == (0, 0, 0)
    assert second.read == len(categories)
