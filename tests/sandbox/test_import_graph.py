"""The sandbox's modules import each other without a cycle, and each imports on its own.

The graph counts every import of a sandbox module, wherever it is written: at module level,
under ``if TYPE_CHECKING:`` and inside functions. A cycle hidden by a deferred import is still a
cycle (it only moves the failure to run time), so none of them may close a loop. Importing a
submodule also runs its parent packages' ``__init__``, so those are edges too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import erpsync_sandbox

PACKAGE = "erpsync_sandbox"
ROOT = Path(erpsync_sandbox.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([PACKAGE, *parts])] = path
    return found


def _with_parents(name: str, modules: dict[str, Path]) -> set[str]:
    """``name`` and the packages whose ``__init__`` importing it runs (only sandbox modules)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & modules.keys()


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every sandbox module ``name`` imports, at any depth of its syntax tree."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets |= _with_parents(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets |= _with_parents(source, modules)
            for alias in node.names:  # ``from pkg import submodule``
                targets |= _with_parents(f"{source}.{alias.name}", modules)
    targets.discard(name)
    # a package's own __init__ is run before its submodules, never the other way round
    return {t for t in targets if not name.startswith(f"{t}.")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_sandbox_modules() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 30  # the walk found the package
    assert _cycles(graph) == []


def test_cycle_detector_sees_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_sandbox_module_imports_in_a_fresh_interpreter() -> None:
    """Each module imported first, alone, in a new interpreter: no order dependence."""
    names = sorted(_modules())
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('erpsync_sandbox')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
