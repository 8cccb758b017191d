"""The house's rules, checked on the source: wings import downwards only, and nothing imports in a circle.

Every ``import`` statement counts, including relative ones (resolved against the module's package)
and those inside functions (a lazy import still couples two modules). Layers, lowest first: the
entrance's own modules (errors, params, version), ``engine`` (where the work runs and the output
folder's life: any wing may use it, it uses none), ``dataset``, ``audit``, then ``sharing`` and
``training`` side by side; ``cli`` and the package ``__init__`` sit on top and only they may reach
across.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "patchpack"

# What each wing may import from patchpack, besides itself.
ALLOWED = {
    "base": {"base"},
    "engine": {"base"},
    "dataset": {"base", "engine"},
    "audit": {"base", "engine", "dataset"},
    "sharing": {"base", "engine", "dataset", "audit"},
    "training": {"base", "engine", "dataset"},
    "entrance": {"base", "engine", "dataset", "audit", "sharing", "training"},
}
WINGS = ("engine", "dataset", "audit", "sharing", "training")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "torch"):  # patchpack.torch: a public entrance
        return "entrance"
    if parts[1] in WINGS:
        return parts[1]
    return "base"


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_names(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every dotted name an ``import`` in ``source`` (the code of ``module``) may bind.

    A relative import is resolved against the module's package, as Python resolves it (the package
    is the module itself for an ``__init__``): ``from ..training import loader`` in
    ``patchpack.audit.verify`` names ``patchpack.training`` and ``patchpack.training.loader``.
    """
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def imports_of(module: str) -> set[str]:
    """The patchpack modules that ``module`` imports anywhere in its body, relatively or not."""
    path = MODULES[module]
    names = imported_names(
        path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
    )
    return {name for name in names if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_the_graph_sees_the_package() -> None:
    assert {"patchpack.cli", "patchpack.dataset.extract", "patchpack.audit.verify"} <= set(GRAPH)
    assert "patchpack.dataset.manifest" in GRAPH["patchpack.dataset.extract"]
    assert "patchpack.engine.output" in GRAPH["patchpack.dataset.extract"]
    assert {wing("patchpack.engine"), wing("patchpack.engine.executors")} == {"engine"}


def test_the_engine_needs_nothing_but_the_errors() -> None:
    """Where the work runs decides no byte: the engine imports no wing, and of the entrance's own
    modules only the errors (not params), so every wing may use it and no cycle can pass through it."""
    used = {t for m in GRAPH if wing(m) == "engine" for t in GRAPH[m] if wing(t) != "engine"}
    assert used == {"patchpack.errors"}


@pytest.mark.parametrize(
    ("statement", "module", "is_package", "expected"),
    [
        (
            "from ..training import loader",
            "patchpack.audit.verify",
            False,
            "patchpack.training.loader",
        ),
        ("from .. import cli", "patchpack.audit.verify", False, "patchpack.cli"),
        (
            "from ..sharing.pull import pull",
            "patchpack.dataset.plan",
            False,
            "patchpack.sharing.pull",
        ),
        (
            "from .plan import cut_shards",
            "patchpack.dataset.extract",
            False,
            "patchpack.dataset.plan",
        ),
        ("from . import verify", "patchpack.audit", True, "patchpack.audit.verify"),
        ("from .training import loader", "patchpack", True, "patchpack.training.loader"),
        ("from patchpack.dataset import io", "patchpack.audit.info", False, "patchpack.dataset.io"),
        ("import patchpack.dataset.io", "patchpack.audit.info", False, "patchpack.dataset.io"),
    ],
)
def test_relative_imports_resolve_against_the_module_package(
    statement: str, module: str, is_package: bool, expected: str
) -> None:
    assert expected in imported_names(statement, module, is_package=is_package)


def test_a_relative_upward_import_breaks_the_rule() -> None:
    names = imported_names(
        "def f():\n    from ..training import loader\n", "patchpack.audit.verify"
    )
    upward = sorted(
        n for n in names if n in MODULES and wing(n) not in ALLOWED["audit"] | {"audit"}
    )
    assert upward == ["patchpack.training", "patchpack.training.loader"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_only(module: str) -> None:
    own = wing(module)
    upward = sorted(t for t in GRAPH[module] if wing(t) != own and wing(t) not in ALLOWED[own])
    assert not upward, f"{module} ({wing(module)}) imports from a higher or sibling wing: {upward}"


def in_cli(module: str) -> bool:
    return module == "patchpack.cli" or module.startswith("patchpack.cli.")


def test_nothing_imports_the_cli() -> None:
    """The cli package is the entrance: only its own modules (``__main__`` runs it) import it or
    its verb modules."""
    importers = sorted(
        m for m, targets in GRAPH.items() if not in_cli(m) and any(map(in_cli, targets))
    )
    assert importers == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_patchpack_stays_light() -> None:
    code = (
        "import sys, patchpack; "
        "heavy = sorted(m for m in ('keras', 'tensorflow', 'torch', 'dvc', 'boto3') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
