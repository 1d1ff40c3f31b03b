"""The one lazy-import mechanism (giftmarket/lazy.py): a module declared lazy is imported at
its first use, once, and the handlers' imports leave the heavy libraries for later."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from giftmarket import lazy as lazy_modules
from giftmarket.lazy import LazyModule, lazy

pytestmark = pytest.mark.unit


@pytest.fixture
def module_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of its own that leaves a mark in `executions` each time it is executed."""
    name = f"gm_lazy_probe_{tmp_path.name.replace('-', '_')}"
    marks = tmp_path / "executions"
    marks.write_text("")
    (tmp_path / f"{name}.py").write_text(
        f"with open({str(marks)!r}, 'a') as marks:\n    marks.write('x')\nANSWER = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def executions(module_name: str) -> int:
    path = Path(sys.modules[module_name].__file__ or "").with_name("executions")
    return len(path.read_text())


def test_a_lazy_module_is_imported_at_its_first_use_only(module_on_path: str) -> None:
    module = lazy(module_on_path)
    assert isinstance(module, LazyModule) and not module.loaded
    assert module_on_path not in sys.modules
    assert module.ANSWER == 42
    assert module.loaded and module_on_path in sys.modules
    assert module.ANSWER == 42
    assert executions(module_on_path) == 1


def test_threads_using_a_lazy_module_at_once_import_it_once(module_on_path: str) -> None:
    module = lazy(module_on_path)
    start = threading.Barrier(8)
    answers: list[int] = []

    def use() -> None:
        start.wait(timeout=10)
        answers.append(module.ANSWER)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert answers == [42] * 8
    assert executions(module_on_path) == 1


def test_a_missing_module_fails_at_its_first_use_with_the_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Declared in a list of its own: left in the process's, it would fail every later
    # import_declared() (a runner's init, a SnapStart snapshot) in the same test session.
    monkeypatch.setattr(lazy_modules, "_declared", [])
    module = lazy("giftmarket.no_such_module")
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        _ = module.anything


@pytest.mark.parametrize(
    ("entry", "not_loaded"),
    [
        # The query API answers from Redis through its handler; SQL only on a fallback.
        ("giftmarket.http.query_app", ["sqlalchemy", "redis", "jwt", "giftmarket.queries.trades"]),
        ("giftmarket.bootstrap", ["sqlalchemy", "redis", "boto3", "giftmarket.adapters.db"]),
    ],
)
def test_importing_an_entry_point_leaves_what_it_may_not_need_unimported(
    entry: str, not_loaded: list[str]
) -> None:
    probe = f"import sys, {entry}\nprint(','.join(m for m in {not_loaded!r} if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
