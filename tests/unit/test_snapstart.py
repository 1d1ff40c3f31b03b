"""SnapStart's hooks (giftmarket/snapstart.py): what the snapshot keeps holds no connection,
and a restored environment builds its connections and reads its secrets anew."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

from giftmarket import bootstrap, snapstart
from giftmarket import lazy as lazy_modules
from giftmarket.adapters.db import Database
from giftmarket.http.lambda_entry import lambda_handler
from giftmarket.http.query_app import create_query_app
from giftmarket.lazy import import_declared, lazy
from giftmarket.settings import Settings

pytestmark = pytest.mark.unit


class PooledDatabase:
    """Stands for the engines' pools: records whether anything talked to it."""

    def __init__(self) -> None:
        self.disposed = False

    def dispose(self) -> None:
        self.disposed = True


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the hooks a test registers run; the process's container is restored after."""
    monkeypatch.setattr(snapstart, "_before_snapshot", [])
    monkeypatch.setattr(snapstart, "_after_restore", [bootstrap.forget_connections])
    yield
    bootstrap.set_container(None)


def test_a_restored_environment_builds_its_own_container(hooks: None) -> None:
    pooled = PooledDatabase()
    snapshotted = bootstrap.Container(Settings(), database=cast(Database, pooled))
    bootstrap.set_container(snapshotted)

    snapstart.run_after_restore()

    container = bootstrap.get_container()
    assert container is not snapshotted
    assert "database" not in container.__dict__  # built anew at its first use
    # The snapshot's connections are dropped, not closed: their peers are gone.
    assert not pooled.disposed


def test_cached_secrets_are_read_again_after_a_restore(hooks: None) -> None:
    DEFAULT_PROVIDERS["secrets"] = object()  # Powertools' provider, its cache and client
    snapstart.run_after_restore()
    assert "secrets" not in DEFAULT_PROVIDERS


def test_before_the_snapshot_every_lazy_module_is_imported(
    hooks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lazy_modules, "_declared", [])  # not other tests' declarations
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    declared = lazy("colorsys")
    assert not declared.loaded

    assert "colorsys" in import_declared()
    assert declared.loaded and "colorsys" in sys.modules


def test_the_warm_up_request_touches_no_store(hooks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    connects: list[Any] = []
    monkeypatch.setattr(socket.socket, "connect", lambda _, address: connects.append(address))
    bootstrap.set_container(None)
    lambda_handler(create_query_app(), service="giftmarket-query-api")

    snapstart.run_before_snapshot()  # the tracer (disabled here) and the request

    assert connects == []
    assert bootstrap._container is None  # nor was any part built to touch one


def test_a_warm_up_request_that_is_answered_fails_the_snapshot(hooks: None) -> None:
    app = create_query_app()

    @app.get("/snapstart/prime")
    async def answered() -> dict[str, str]:
        return {"status": "ok"}

    lambda_handler(app, service="giftmarket-query-api")
    with pytest.raises(RuntimeError, match="answered 200"):
        snapstart.run_before_snapshot()
