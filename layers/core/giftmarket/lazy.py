"""Modules imported on first use, declared at the top of a module like every other import.

A Lambda function pays for each import at a cold start, and most modules are needed only on
some paths: SQLAlchemy by the query API only when it falls back to SQL, the adapters only when
the container builds them (a test's fake never), PyJWT only when a token is read. Such a
module is declared with this one mechanism, not imported inside the functions that use it:

    if TYPE_CHECKING:
        from giftmarket.adapters import db
    else:
        db = lazy("giftmarket.adapters.db")

mypy checks the uses against the real module; at run time the first attribute read
(`db.Database`) imports it, once: the import system's own lock makes concurrent first uses
from several threads safe. tests/unit/test_import_graph.py sees these names as imports.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module `name` until one of its attributes is read."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        # Called only for what this object lacks: every name of the module.
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    @property
    def loaded(self) -> bool:
        return self._module is not None

    def __repr__(self) -> str:
        state = "imported" if self.loaded else "not imported yet"
        return f"<lazy module {self._name!r}, {state}>"


# Every lazy module declared so far: what a SnapStart snapshot imports ahead (snapstart.py).
_declared: list[LazyModule] = []


def lazy(name: str) -> Any:
    """The module `name`, imported the first time one of its names is read."""
    module = LazyModule(name)
    _declared.append(module)
    return module


def import_declared() -> list[str]:
    """Import every lazy module declared, and those their imports declare in turn; the
    names imported now. Only for an init that is paid once and kept (a SnapStart
    snapshot): a plain cold start would pay here for paths its requests never take."""
    imported: list[str] = []
    while pending := [m for m in _declared if not m.loaded]:
        for module in pending:
            module.__getattr__("__name__")  # the import, as a first use would do it
            imported.append(module._name)
    return imported
