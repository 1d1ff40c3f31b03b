"""What the Lambdas run imports only what the layer installs.

The layer's package is built by layers/core/Makefile's `layer-package` (the step `sam build`
runs), into a temporary folder; every module it ships, and every function's own code
(CodeUri), is read for its imports, including those inside functions (a lazy import fails
at the first request that needs it, not at cold start). Each must be the standard library,
a module the layer ships, a distribution requirements.lock installs, or one of the few the
managed runtime itself provides (RUNTIME_MODULES). Imports under `if TYPE_CHECKING:` never
run and are not counted.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from tests.support.scripts import load_script

from giftmarket_local.template import TEMPLATE_PATH, load_template

REPO_ROOT = TEMPLATE_PATH.parent
LAYER_SOURCE = REPO_ROOT / "layers" / "core"
LOCK = LAYER_SOURCE / "requirements.lock"
# Shipped by Lambda's python3.12 runtime, not by the layer: SnapStart's runtime hooks
# (giftmarket/snapstart.py imports it only where it is there).
RUNTIME_MODULES = frozenset({"snapshot_restore_py"})


def locked_distributions(lock_text: str) -> set[str]:
    names: set[str] = set()
    for line in lock_text.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement and not requirement.startswith("-"):
            names.add(canonicalize_name(requirement.split("==", 1)[0].split("[", 1)[0]))
    return names


def build_layer_package(artifacts: Path, *targets: str) -> Path:
    """The giftmarket package as the layer's Makefile ships it (then `targets`, with this
    interpreter as the build's Python); returns the layer's python/."""
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(LAYER_SOURCE), "layer-package", *targets],
        env={"PATH": "/usr/bin:/bin", "ARTIFACTS_DIR": str(artifacts), "PYTHON": sys.executable},
        check=True,
        capture_output=True,
        text=True,
    )
    return artifacts / "python"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str, bool]]:
    """(line, absolute name, whether it must be a module) of every import that can run, at
    any depth. `from a import b` gives ("a", True) and ("a.b", False): b may be a module or a
    name defined in a."""
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[tuple[int, str, bool]]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.orelse:
                yield from visit(statement)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, True
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                prefix = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{prefix}.{base}" if base else prefix
            yield node.lineno, base, True
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}", False
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(source))


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def shipped_modules(root: Path) -> set[str]:
    """The modules and packages under `root` (a folder of modules is a namespace package)."""
    modules = {module_name(p, root)[0] for p in root.rglob("*.py")}
    return modules | {name.rpartition(".")[0] for name in modules if "." in name}


def problems(
    code_roots: list[tuple[Path, Path]], shipped: set[str], left_out: set[str], locked: set[str]
) -> list[str]:
    """Every import in the files under each (folder, import root) pair that the Lambda
    runtime could not satisfy: `shipped` are the first-party modules present, `left_out` the
    source modules the build leaves out, `locked` the distributions the layer installs."""
    top_level = {name.split(".")[0] for name in shipped}
    distributions = importlib.metadata.packages_distributions()
    found: list[str] = []
    for folder, import_root in code_roots:
        for path in sorted(folder.rglob("*.py")):
            module, is_package = module_name(path, import_root)
            where = path.relative_to(import_root)
            for line, name, must_be_module in runtime_imports(path.read_text(), module, is_package):
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__" or top in RUNTIME_MODULES:
                    continue
                if top in top_level:
                    # First-party: a shipped module, or a name defined in one.
                    missing = name in left_out or (
                        name not in shipped
                        and (must_be_module or name.rpartition(".")[0] not in shipped)
                    )
                    if missing:
                        found.append(f"{where}:{line} imports {name}, which is not shipped")
                    continue
                if not must_be_module:
                    continue  # `from x import y`: x is checked on its own
                owners = {canonicalize_name(d) for d in distributions.get(top, [])}
                if not owners:
                    found.append(f"{where}:{line} imports {name}, from no installed distribution")
                elif not owners & locked:
                    found.append(
                        f"{where}:{line} imports {name} ({', '.join(sorted(owners))}),"
                        " which requirements.lock does not install"
                    )
    return found


def function_code_folders() -> list[Path]:
    return sorted(
        {
            (REPO_ROOT / resource["Properties"]["CodeUri"]).resolve()
            for resource in load_template()["Resources"].values()
            if resource["Type"] == "AWS::Serverless::Function"
        }
    )


def test_the_layer_ships_no_module_that_imports_what_the_layer_lacks(tmp_path: Path) -> None:
    layer = build_layer_package(tmp_path)
    package = layer / "giftmarket"
    assert (package / "__init__.py").is_file() and (package / "py.typed").is_file()
    assert not list(package.rglob("__pycache__"))
    shipped = shipped_modules(layer)
    left_out = shipped_modules(LAYER_SOURCE) - shipped
    assert "giftmarket.cli" in left_out
    # Lambda puts the function's code folder and the layer's python/ on sys.path.
    roots = [(layer, layer)] + [(folder, folder) for folder in function_code_folders()]
    assert problems(roots, shipped, left_out, locked_distributions(LOCK.read_text())) == []


def test_the_cli_is_left_out_of_the_layer_and_still_installed_for_developers(
    tmp_path: Path,
) -> None:
    layer = build_layer_package(tmp_path)
    assert (LAYER_SOURCE / "giftmarket" / "cli.py").is_file()
    assert not (layer / "giftmarket" / "cli.py").exists()
    # The console script of the dev install (pyproject's [project.scripts]) still resolves.
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="giftmarket")
    assert script.value == "giftmarket.cli:main"
    assert callable(script.load())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import typer\n", "imports typer (typer), which requirements.lock does not install"),
        (
            "def later():\n    from rich.console import Console\n",
            "imports rich.console (rich), which requirements.lock does not install",
        ),
        ("from giftmarket import cli\n", "imports giftmarket.cli, which is not shipped"),
        ("from . import cli\n", "imports giftmarket.cli, which is not shipped"),
        ("import no_such_module_anywhere\n", "from no installed distribution"),
    ],
)
def test_the_check_finds_an_import_the_layer_cannot_satisfy(
    tmp_path: Path, source: str, expected: str
) -> None:
    package = tmp_path / "giftmarket"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fine.py").write_text(
        "from typing import TYPE_CHECKING\nimport redis\nfrom .settings import x\n"
        "if TYPE_CHECKING:\n    import typer\n"
    )
    (package / "settings.py").write_text("x = 1\n")
    (package / "bad.py").write_text(source)
    found = problems(
        [(tmp_path, tmp_path)],
        shipped_modules(tmp_path),
        {"giftmarket.cli"},
        locked_distributions(LOCK.read_text()),
    )
    assert len(found) == 1 and found[0].startswith("giftmarket/bad.py:")
    assert expected in found[0]


def test_the_lock_is_read_as_distribution_names() -> None:
    locked = locked_distributions(LOCK.read_text())
    assert {"fastapi", "redis", "pyjwt", "sqlalchemy", "alembic"} <= locked
    assert not {"typer", "rich", "pytest"} & locked


def test_the_layer_build_compiles_every_module_it_ships_last() -> None:
    makefile = (LAYER_SOURCE / "Makefile").read_text()
    build = makefile.split("\nbuild-CoreLayer:", 1)[1].split("\n\n", 1)[0]
    assert build.rstrip().endswith("layer-bytecode")


def test_the_bytecode_the_build_makes_is_what_the_layer_check_wants(tmp_path: Path) -> None:
    check_layer = load_script("infra/build/check_layer.py", "check_layer")
    layer = build_layer_package(tmp_path, "layer-bytecode")
    modules, uncompiled = check_layer.check_bytecode(layer)
    assert modules > 50 and uncompiled == []
