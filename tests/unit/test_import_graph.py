"""The layering of the `giftmarket` package, checked on its import graph (issue 15).

Every module is parsed (not imported) and every import counts wherever it is written: at
module level, inside a function (the cold-start-friendly lazy imports), under
`TYPE_CHECKING`, and a string naming a giftmarket module exactly (`importlib.import_module`
and other lazy-import helpers). A module belongs to its top-level part (`giftmarket.commands.
ports` to `commands`, `giftmarket.settings` to `settings`), and each part sits in one layer:

    0  domain                          pure: entities, rules, events, errors
    1  settings, messages,             the shared kernel: configuration, the outbox/SQS
       consistency, observability,     envelope, the read-your-writes token, metrics, the
       lazy, snapstart                 one way to import a module on first use, and
                                       SnapStart's runtime hooks
    2  commands, read_ports            the write side, its ports in `commands/ports.py`,
                                       and the read side's ports (`read_ports.py`)
    3  adapters                        what implements the ports (SQL, Redis, S3, SQS)
    4  queries, projections, jobs      the read side and the jobs, on the adapters
    5  http, cli, bootstrap            entry points and the composition root

This is issue 15's `domain <- commands <- adapters / queries / projections / jobs <- http /
cli / bootstrap`, with the adapters put under their neighbours: queries, projections and
jobs use the tables and engines, and the adapters import none of them (they used to, for
types that now live in the ports). The kernel modules import nothing of giftmarket but the
domain, so every layer above may use them.

A part imports only its own layer or those below it, never upward; the parts never form a
cycle, not even within a layer; and from the commands' layer the adapters import only the
ports (`commands.ports`, `read_ports`), never a handler or the executor.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "giftmarket"

LAYERS: dict[str, int] = {
    "domain": 0,
    "settings": 1,
    "messages": 1,
    "consistency": 1,
    "observability": 1,
    "lazy": 1,
    "snapstart": 1,
    "commands": 2,
    "read_ports": 2,
    "adapters": 3,
    "queries": 4,
    "projections": 4,
    "jobs": 4,
    "http": 5,
    "cli": 5,
    "bootstrap": 5,
}

# The only modules of the commands' layer that `adapters` may import.
PORTS = frozenset({"giftmarket.commands.ports", "giftmarket.read_ports"})


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the imported module (or package)
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} -> {self.target}"


def part(module: str) -> str:
    """`giftmarket.commands.ports` -> `commands`; the package's own `__init__` -> ``."""
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


def modules(root: Path, package: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        names = [package, *path.relative_to(root).with_suffix("").parts]
        if names[-1] == "__init__":
            names.pop()
        found[".".join(names)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` (a module, or a name inside one) names."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported(module: str, path: Path, tree: ast.AST) -> Iterator[tuple[str, int]]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                # `from giftmarket.commands import ports` imports a module; `from
                # giftmarket.domain.errors import NotFound`, a name of one.
                yield f"{base}.{alias.name}", node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith(f"{PACKAGE}.") and " " not in node.value:
                yield node.value, node.lineno


def import_graph(root: Path, package: str = PACKAGE) -> list[Edge]:
    """Every import of a module of `package` by a module of `package` under `root`."""
    known = modules(root, package)
    edges: set[Edge] = set()
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name, line in _imported(module, path, tree):
            target = _resolve(name, known) if name.startswith(package) else None
            if target is not None and target != module and target != package:
                edges.add(Edge(module, target, line))
    return sorted(edges, key=lambda e: (e.source, e.line, e.target))


def upward(edges: list[Edge], layers: dict[str, int]) -> list[Edge]:
    return [e for e in edges if layers[part(e.target)] > layers[part(e.source)]]


def adapters_reaching_out(edges: list[Edge], layers: dict[str, int]) -> list[Edge]:
    """Imports by `adapters` of a module of the ports' layer that is not a port."""
    return [
        e
        for e in edges
        if part(e.source) == "adapters"
        and layers[part(e.target)] == layers["commands"]
        and e.target not in PORTS
    ]


def part_cycles(edges: list[Edge]) -> list[list[str]]:
    """The cycles between parts: each strongly connected set of more than one part."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        source, target = part(e.source), part(e.target)
        if source != target:
            graph.setdefault(source, set()).add(target)
            graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _edges_within(edges: list[Edge], cycle: list[str]) -> list[Edge]:
    members = set(cycle)
    return [
        e
        for e in edges
        if part(e.source) in members
        and part(e.target) in members
        and part(e.source) != part(e.target)
    ]


def _listing(edges: list[Edge]) -> str:
    return "\n".join(f"  {e}" for e in edges)


# -- the package itself --------------------------------------------------------------------


@pytest.fixture(scope="module")
def root() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="module")
def edges(root: Path) -> list[Edge]:
    return import_graph(root)


def test_every_part_of_the_package_has_a_layer(root: Path) -> None:
    parts = {part(m) for m in modules(root, PACKAGE)} - {""}
    assert parts - set(LAYERS) == set(), "place the new part in LAYERS, in its layer"
    # Stale entries would let a rule go unchecked without anyone noticing.
    assert set(LAYERS) - parts == set()


def test_the_graph_sees_lazy_imports(edges: list[Edge]) -> None:
    # The composition root imports its adapters inside the methods that build them.
    assert any(e.source == "giftmarket.bootstrap" and part(e.target) == "adapters" for e in edges)


def test_nothing_imports_upward(edges: list[Edge]) -> None:
    wrong = upward(edges, LAYERS)
    assert not wrong, f"imports from a lower layer to a higher one:\n{_listing(wrong)}"


def test_adapters_take_only_the_ports_from_the_commands_layer(edges: list[Edge]) -> None:
    wrong = adapters_reaching_out(edges, LAYERS)
    assert not wrong, f"adapters importing more than the ports:\n{_listing(wrong)}"


def test_the_domain_imports_nothing_but_the_domain(edges: list[Edge]) -> None:
    wrong = [e for e in edges if part(e.source) == "domain" and part(e.target) != "domain"]
    assert not wrong, _listing(wrong)


def test_no_cycle_between_the_parts_of_the_package(edges: list[Edge]) -> None:
    cycles = part_cycles(edges)
    detail = "\n".join(f"{' <-> '.join(c)}:\n{_listing(_edges_within(edges, c))}" for c in cycles)
    assert not cycles, f"import cycles between parts:\n{detail}"


# -- the checker, on a package made for it ---------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "giftmarket" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "giftmarket"


def test_the_checker_finds_upward_lazy_and_relative_imports_and_cycles(tmp_path: Path) -> None:
    package = write(
        tmp_path,
        {
            "__init__.py": "",
            "domain/__init__.py": "",
            "domain/orders.py": "def f():\n    from giftmarket.adapters import db\n",
            "commands/__init__.py": "",
            "commands/ports.py": "from ..domain import orders\n",
            "commands/trading.py": "from . import ports\n",
            "adapters/__init__.py": "",
            "adapters/db.py": (
                "import giftmarket.jobs.purge\n"
                "from giftmarket.commands import ports\n"
                "from giftmarket.commands.trading import y\n"
            ),
            "jobs/__init__.py": "",
            "jobs/purge.py": (
                "M = 'giftmarket.adapters.db'\nfrom giftmarket.commands.trading import x\n"
            ),
        },
    )
    edges = import_graph(package)
    assert [str(e) for e in edges] == [
        "giftmarket.adapters.db:1 -> giftmarket.jobs.purge",
        "giftmarket.adapters.db:2 -> giftmarket.commands.ports",
        "giftmarket.adapters.db:3 -> giftmarket.commands.trading",
        "giftmarket.commands.ports:1 -> giftmarket.domain.orders",
        "giftmarket.commands.trading:1 -> giftmarket.commands.ports",
        "giftmarket.domain.orders:2 -> giftmarket.adapters.db",
        "giftmarket.jobs.purge:1 -> giftmarket.adapters.db",
        "giftmarket.jobs.purge:2 -> giftmarket.commands.trading",
    ]
    assert [str(e) for e in upward(edges, LAYERS)] == [
        "giftmarket.adapters.db:1 -> giftmarket.jobs.purge",
        "giftmarket.domain.orders:2 -> giftmarket.adapters.db",
    ]
    assert [str(e) for e in adapters_reaching_out(edges, LAYERS)] == [
        "giftmarket.adapters.db:3 -> giftmarket.commands.trading"
    ]
    assert part_cycles(edges) == [["adapters", "commands", "domain", "jobs"]]


def test_the_checker_passes_a_package_that_keeps_its_layers(tmp_path: Path) -> None:
    package = write(
        tmp_path,
        {
            "__init__.py": "",
            "domain/__init__.py": "",
            "domain/orders.py": "",
            "commands/__init__.py": "",
            "commands/ports.py": "from giftmarket.domain.orders import Order\n",
            "adapters/__init__.py": "",
            "adapters/db.py": "from giftmarket.commands.ports import UnitOfWork\n",
            "jobs/__init__.py": "",
            "jobs/purge.py": "from giftmarket.adapters import db\n",
        },
    )
    edges = import_graph(package)
    assert len(edges) == 3
    assert upward(edges, LAYERS) == [] and adapters_reaching_out(edges, LAYERS) == []
    assert part_cycles(edges) == []
