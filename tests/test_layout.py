"""The layering rules of sbt_batch/ (docs/architecture.md), checked over the source itself.

A static import graph (ast over every module, imports at module level, in functions and under
``if TYPE_CHECKING:`` alike; ``from pkg import submodule`` resolves to the submodule) gives: no
import cycles, the allowed directions between subpackages, no private name imported across
modules. Fresh interpreters check what importing the light entry points actually loads. Fast: no
services, nothing heavy imported in this process.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sbt_batch"
HEAVY = ("sbt_batch.cnn", "sbt_batch.tabular", "tensorflow", "keras")  # what the conversion and job side never load


def module_name(path: Path) -> str:
    """The dotted name of a source file under sbt_batch/ (a package's __init__.py is the package)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


@dataclass(frozen=True)
class Import:
    """One import statement's target in module ``source``: the module it loads and the name taken from it."""

    source: str
    target: str  # a dotted module name (an sbt_batch module resolved to the deepest existing one, or a third-party name)
    name: str | None  # the name imported from ``target`` (``from target import name``), None for ``import target``
    line: int

    def __str__(self) -> str:
        what = f"from {self.target} import {self.name}" if self.name else f"import {self.target}"
        return f"{MODULES[self.source].relative_to(REPO)}:{self.line}: {what}"


def _resolve(name: str) -> str:
    """The deepest sbt_batch module that ``name`` (a dotted module path) names; other names unchanged."""
    if not (name == "sbt_batch" or name.startswith("sbt_batch.")):
        return name
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def imports_of(module: str) -> list[Import]:
    """Every import in ``module``, wherever it stands (module level, function body, TYPE_CHECKING block)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))
    package = module if module in PACKAGES else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, _resolve(alias.name), None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                if submodule in MODULES:  # `from pkg import submodule` loads the submodule
                    found.append(Import(module, submodule, None, node.lineno))
                else:
                    found.append(Import(module, _resolve(origin), alias.name, node.lineno))
    return found


IMPORTS: dict[str, list[Import]] = {m: imports_of(m) for m in MODULES}


def all_imports() -> Iterator[Import]:
    """Every import of every module."""
    for found in IMPORTS.values():
        yield from found


def within(name: str, *packages: str) -> bool:
    """True when module ``name`` is one of ``packages`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def first_party(imp: Import) -> bool:
    """True for an import of an sbt_batch module."""
    return within(imp.target, "sbt_batch")


def violations(sources: tuple[str, ...], forbidden: tuple[str, ...], allow: tuple[str, ...] = ()) -> list[str]:
    """Imports made in ``sources`` of a module in ``forbidden`` (``allow``: exempt source modules)."""
    return [str(i) for i in all_imports()
            if within(i.source, *sources) and i.source not in allow and within(i.target, *forbidden)]


# ---------------------------------------------------------------------------------------------
# What importing the light entry points loads
# ---------------------------------------------------------------------------------------------


def loaded_by(*modules: str) -> list[str]:
    """The modules a fresh interpreter holds in sys.modules after importing ``modules``."""
    code = ("import importlib, json, sys\n"
            f"for name in {list(modules)!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


CONVERT_MODULES = tuple(sorted(m for m in MODULES if within(m, "sbt_batch.convert")))


@pytest.mark.parametrize("modules", [("sbt_batch.convert",), CONVERT_MODULES, ("sbt_batch.batch.task",)],
                         ids=["sbt_batch.convert", "every convert module", "sbt_batch.batch.task"])
def test_light_imports_load_no_training_code(modules: tuple[str, ...]) -> None:
    """Conversion and the job wrapper run where TensorFlow is not installed: they load no cnn, tabular, TF or Keras."""
    heavy = [m for m in loaded_by(*modules) if within(m, *HEAVY)]
    assert not heavy, f"importing {', '.join(modules)} loads {heavy}"


# ---------------------------------------------------------------------------------------------
# The static import graph
# ---------------------------------------------------------------------------------------------


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def import_graph() -> dict[str, set[str]]:
    """Module -> the sbt_batch modules it imports; a package's re-exports of its own submodules are left out."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in all_imports():
        if not first_party(imp) or imp.target == imp.source:
            continue
        if imp.source in PACKAGES and within(imp.target, imp.source):
            continue  # an __init__ re-exporting its own submodules: loading them is what a package does
        graph[imp.source].add(imp.target)
    return graph


def test_strongly_connected_finds_cycles() -> None:
    """The cycle finder itself: a cycle, a self-contained chain, a longer loop."""
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": set(), "d": {"e"}, "e": {"f"}, "f": {"d"}}
    assert strongly_connected(graph) == [["a", "b"], ["d", "e", "f"]]


def test_import_graph_resolves_submodules() -> None:
    """``from pkg import submodule`` counts as an import of the submodule, relative imports included."""
    assert "sbt_batch.convert.driver" in {i.target for i in IMPORTS["sbt_batch.convert"]}
    assert "sbt_batch.cli.convert" in {i.target for i in IMPORTS["sbt_batch.cli"]}  # `from sbt_batch.cli import demo, convert, ...`
    assert "sbt_batch.convert.driver" not in import_graph()["sbt_batch.convert"]  # a package's own re-exports are no edge


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or around a loop, even inside function bodies."""
    graph = import_graph()
    cycles = strongly_connected(graph)
    explained = []
    for component in cycles:
        members = set(component)
        edges = list(dict.fromkeys(f"{MODULES[m].relative_to(REPO)}:{i.line}: imports {i.target}"
                                   for m in component for i in IMPORTS[m] if i.target in members and i.target in graph[m]))
        explained.append(f"{' <-> '.join(component)}:\n      " + "\n      ".join(edges))
    assert not cycles, "import cycles:\n  " + "\n  ".join(explained)


def test_batch_imports_no_stage() -> None:
    """The batch layer runs any command line: it knows nothing of conversion, the CNNs or the tabular classifier."""
    found = violations(("sbt_batch.batch",), ("sbt_batch.convert", "sbt_batch.cnn", "sbt_batch.tabular", "tensorflow", "keras"))
    assert not found, "batch/ imports a stage:\n  " + "\n  ".join(found)


def test_common_imports_no_other_package() -> None:
    """common/ is the bottom layer: it imports only itself (and the version in sbt_batch/__init__.py)."""
    found = [str(i) for i in all_imports()
             if within(i.source, "sbt_batch.common") and first_party(i) and not within(i.target, "sbt_batch.common")
             and not (i.target == "sbt_batch" and i.name == "__version__")]
    assert not found, "common/ imports another sbt_batch package:\n  " + "\n  ".join(found)


def test_convert_imports_no_training_code() -> None:
    """convert/ runs on grid nodes without TensorFlow: no cnn, tabular, TensorFlow or Keras, not even in a function."""
    found = violations(("sbt_batch.convert",), HEAVY)
    assert not found, "convert/ imports training code:\n  " + "\n  ".join(found)


def test_only_cli_imports_cli() -> None:
    """The commands sit on top: no library module imports sbt_batch.cli (``python -m sbt_batch`` runs it)."""
    found = [str(i) for i in all_imports()
             if within(i.target, "sbt_batch.cli") and not within(i.source, "sbt_batch.cli") and i.source != "sbt_batch.__main__"]
    assert not found, "library modules import the CLI:\n  " + "\n  ".join(found)


def private(name: str) -> bool:
    """True for ``_x`` (a private name), False for public names and dunders (``__version__``)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_names_across_modules() -> None:
    """A name another module needs is public: no ``from m import _x``, no ``m._x`` on an imported sbt_batch module."""
    found = [str(i) for i in all_imports() if first_party(i) and i.name is not None and private(i.name)]
    for module, path in MODULES.items():  # underscore modules hold a package's internals: only that package imports them
        for imp in IMPORTS[module]:
            leaf = imp.target.rpartition(".")[2]
            if first_party(imp) and private(leaf) and not within(module, imp.target.rpartition(".")[0]):
                found.append(f"{imp} (an internal module of another package)")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}  # local name -> the sbt_batch module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("sbt_batch.")})
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sbt_batch"):
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                                if f"{node.module}.{a.name}" in MODULES and f"{node.module}.{a.name}" != module})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and private(node.attr)):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value.id}.{node.attr} "
                             f"({aliases[node.value.id]})")
    assert not found, "private names used across modules:\n  " + "\n  ".join(found)


# ---------------------------------------------------------------------------------------------
# Public surface and printing
# ---------------------------------------------------------------------------------------------


def declared_all(package: str) -> list[str] | None:
    """The names in ``package``'s module-level ``__all__`` (a literal list or tuple of strings), None without one."""
    tree = ast.parse(MODULES[package].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, expr = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, expr = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = ast.literal_eval(expr)
            assert isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), f"{package}.__all__ is not a list of names"
            return list(value)
    return None


SUBPACKAGES = sorted(p for p in PACKAGES if p != "sbt_batch")


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_subpackage_declares_its_public_surface(package: str) -> None:
    """Each subpackage's __init__.py declares ``__all__``, without repeats, and every name in it exists."""
    names = declared_all(package)
    assert names is not None, f"{MODULES[package].relative_to(REPO)} declares no __all__"
    assert len(set(names)) == len(names), f"{package}.__all__ repeats a name"
    pkg = importlib.import_module(package)
    missing = [n for n in names if not hasattr(pkg, n) and f"{package}.{n}" not in MODULES]
    assert not missing, f"{package}.__all__ names what does not exist: {missing}"


def test_library_does_not_print() -> None:
    """Only sbt_batch/cli/ writes to the terminal; the library returns results, logs and raises (ruff's T20 too)."""
    found = []
    for module, path in MODULES.items():
        if within(module, "sbt_batch.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: print(")
    assert not found, "the library prints:\n  " + "\n  ".join(found)
