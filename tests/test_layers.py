"""The shape of the code (docs/ARCHITECTURE.md), read with `ast` from every module of
autotune/ and trainer/: imports only go down the layers, no two modules import each other
(directly or round a circle, imports inside functions included), no module imports another
one's private names, the trainer knows nothing above it, and the trial's logic in
autotune/search/ stands below the study's infrastructure in autotune/search/study/."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("autotune", "trainer")
# Lowest first; modules at the top of autotune/ (events, jsonio, errors, atomic) are the floor.
LAYERS = ["detect", "recovery", "diagnose", "search", "report", "integrations", "cli"]
# In autotune/search/: what runs a study (`outcome`, and `__init__`, the package's API) sits
# on both halves; every other module there is a trial's logic and uses of the study's
# infrastructure only the leaf that tells a trial whether it is still its own.
SEARCH_FACADES = {"autotune.search", "autotune.search.outcome", "autotune.search.api"}
TRIAL_MAY_USE = {"autotune.search.study.ownership"}


@dataclass(frozen=True)
class Import:
    """One import in a module: the module it names, and the names it takes from it."""

    line: int
    module: str
    names: tuple[str, ...]
    alias: str | None
    """The local name bound to the module itself (`import a.b as c`, `from a import b`)."""


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


@cache
def imports(module: str) -> tuple[Import, ...]:
    """Every import of `module` (at any depth: in functions too), resolved to the module it
    names: `from a import b` names the module `a.b` when that is a module, else `a`."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.append(Import(node.lineno, a.name, (), a.asname or a.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules():
                    found.append(Import(node.lineno, sub, (), a.asname or a.name))
                else:
                    found.append(Import(node.lineno, base, (a.name,), None))
    return tuple(found)


def _layer(module: str) -> str:
    """`search` for autotune.search.study.plan; "" for the floor (autotune.events, ...)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "autotune" and len(parts) > 1 and parts[1] in LAYERS else ""


def _rank(layer: str) -> int:
    return LAYERS.index(layer) if layer in LAYERS else -1


def test_autotune_imports_only_go_down() -> None:
    upward = []
    for module in modules():
        if not module.startswith("autotune.") or module == "autotune.__main__":
            continue  # the public API (`autotune`) and the entry point stand above every layer
        mine = _layer(module)
        for imp in imports(module):
            if imp.module.startswith("autotune.") and _rank(_layer(imp.module)) > _rank(mine):
                upward.append(f"{module}:{imp.line} imports {imp.module}")
    assert upward == []


def test_the_trainer_knows_nothing_of_autotune_or_optuna() -> None:
    found = [f"{m}:{i.line} imports {i.module}" for m in modules() if m.startswith("trainer")
             for i in imports(m) if i.module.split(".")[0] in ("autotune", "optuna")]
    assert found == []


def test_the_trial_logic_does_not_import_the_study_infrastructure() -> None:
    found = [f"{m}:{i.line} imports {i.module}" for m in modules()
             if m.startswith("autotune.search") and not m.startswith("autotune.search.study")
             and m not in SEARCH_FACADES
             for i in imports(m)
             if i.module.startswith("autotune.search.study") and i.module not in TRIAL_MAY_USE]
    assert found == []


def circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The circles of a graph of imports (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.get(m, []):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for m in graph:
        if m not in index:
            visit(m)
    return circles


def import_graph() -> dict[str, list[str]]:
    return {m: sorted({i.module for i in imports(m) if i.module in modules() and i.module != m})
            for m in modules()}


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_circles_are_found() -> None:
    assert circles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert circles({"a": ["b"], "b": []}) == []


def private_uses(module: str, tree: ast.AST, found: tuple[Import, ...]) -> list[str]:
    """Where `module` takes another of our modules' private names: `from m import _x`, or
    `m._x` through a name bound to the module."""
    aliases = {i.alias: i.module for i in found
               if i.alias is not None and _ours(i.module) and i.module != module}
    out = [f"{module}:{i.line} imports {i.module}.{n}" for i in found
           if _ours(i.module) and i.module != module
           for n in i.names if n.startswith("_") and not n.startswith("__")]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            out.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return out


def test_no_module_imports_another_ones_private_names() -> None:
    found = [use for module, path in modules().items()
             for use in private_uses(module, ast.parse(path.read_text()), imports(module))]
    assert found == []


def test_private_uses_are_found() -> None:
    """What the code did before: `from tally import _finished`, `workers._open(...)`."""
    tree = ast.parse("from autotune.search.study import workers\n"
                     "from autotune.search.tally import _finished\n"
                     "workers._open(plan)\nworkers.work(plan)\n")
    found = (Import(1, "autotune.search.study.workers", (), "workers"),
             Import(2, "autotune.search.tally", ("_finished",), None))
    assert private_uses("autotune.search.outcome", tree, found) == [
        "autotune.search.outcome:2 imports autotune.search.tally._finished",
        "autotune.search.outcome:3 uses autotune.search.study.workers._open"]


def test_imports_inside_functions_are_seen() -> None:
    """The circle plan <-> workers hid one import in a function."""
    assert any(i.module == "autotune.search.study.plan"
               for i in imports("autotune.search.study.workers"))
    assert any(i.module == "autotune.search.study.packing" and i.alias == "packing"
               for i in imports("autotune.search.study.plan"))
    assert any(i.module == "sqlalchemy.engine" for i in imports("autotune.search.study.storage"))
