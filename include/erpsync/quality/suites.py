"""The version-controlled GX suites (``great_expectations/expectations/<suite>.json``) and the
rules erpsync reads from them.

Each expectation carries, besides its GX ``type`` and ``kwargs``:

* ``severity`` (GX's own field) and ``meta.severity``: ``critical`` or ``warning``;
* ``meta.scope``: what a critical failure blocks: ``client``, ``contract`` or ``all``;
* ``meta.name``: a stable, readable name, unique in its suite (the block key);
* ``notes``: what is checked, in a finance user's words (shown in Data Docs).

Each suite's ``meta.erpsync_asset`` names the query it runs on (erpsync.quality.assets).
This module reads JSON only: it never imports great_expectations.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erpsync import paths

SEVERITIES = ("critical", "warning")
SCOPES = ("client", "contract", "all")

CORE_SUITES = (
    "core_clients",
    "core_tax_profiles",
    "core_people",
    "core_rate_cards",
    "core_contracts",
    "core_time_entries",
    "core_expenses",
)
RECON_SUITES = ("recon_items",)
ALL_SUITES = CORE_SUITES + RECON_SUITES


class SuiteError(ValueError):
    """A suite file is missing or breaks the erpsync rules (severity, scope, name)."""


@dataclass(frozen=True)
class Rule:
    suite: str
    name: str
    type: str
    severity: str
    scope: str
    description: str

    @property
    def label(self) -> str:
        return f"{self.suite}.{self.name}"


def gx_project_dir() -> Path:
    """The committed GX file context (``great_expectations/`` in the project)."""
    return Path(
        os.environ.get("ERPSYNC_GX_PROJECT_DIR", paths.project_dir() / "great_expectations")
    )


def suite_path(name: str) -> Path:
    return gx_project_dir() / "expectations" / f"{name}.json"


def load_suite(name: str) -> dict[str, Any]:
    """The suite's JSON document, checked against the erpsync rules."""
    if name not in ALL_SUITES:
        raise SuiteError(f"unknown suite {name!r}; known: {', '.join(ALL_SUITES)}")
    path = suite_path(name)
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise SuiteError(f"suite file {path} is missing") from None
    if doc.get("name") != name:
        raise SuiteError(f"{path}: name is {doc.get('name')!r}, expected {name!r}")
    rules(name, doc)  # validates
    return doc


def rules(name: str, doc: dict[str, Any] | None = None) -> list[Rule]:
    """The suite's expectations as erpsync rules (severity, scope, name), in file order."""
    doc = doc if doc is not None else load_suite(name)
    out: list[Rule] = []
    for i, exp in enumerate(doc.get("expectations", [])):
        meta = exp.get("meta") or {}
        where = f"{name} expectation #{i + 1} ({meta.get('name') or exp.get('type')})"
        severity = meta.get("severity")
        if severity not in SEVERITIES:
            raise SuiteError(f"{where}: meta.severity must be one of {SEVERITIES}")
        if exp.get("severity", severity) != severity:
            raise SuiteError(f"{where}: severity and meta.severity disagree")
        if meta.get("scope") not in SCOPES:
            raise SuiteError(f"{where}: meta.scope must be one of {SCOPES}")
        if not meta.get("name"):
            raise SuiteError(f"{where}: meta.name is required")
        out.append(
            Rule(name, meta["name"], exp["type"], severity, meta["scope"], exp.get("notes") or "")
        )
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise SuiteError(f"{name}: expectation names (meta.name) must be unique")
    if not out:
        raise SuiteError(f"{name}: the suite has no expectations")
    return out


def asset_of(name: str, doc: dict[str, Any] | None = None) -> str:
    doc = doc if doc is not None else load_suite(name)
    return str(doc["meta"]["erpsync_asset"])
