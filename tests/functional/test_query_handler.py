"""The query Lambda handler with a recorded API Gateway event and a container of fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from giftmarket.adapters.db import Database, ReplicaState
from giftmarket.bootstrap import Container, set_container
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker

EVENTS = Path(__file__).resolve().parents[2] / "functions" / "query_api" / "events"


class FakeMonitor:
    def __init__(self, state: ReplicaState) -> None:
        self.reading = state

    def probe(self) -> ReplicaState:
        return self.reading


class FakeDatabase(Database):
    def __init__(self, primary: str, replica: ReplicaState) -> None:
        self.primary = primary
        self.monitor = cast(Any, FakeMonitor(replica))

    def ping_primary(self) -> str:
        return self.primary

    def dispose(self) -> None:
        pass


class FakeRedis:
    def __init__(self, up: bool) -> None:
        self.up = up

    def ping(self) -> bool:
        if not self.up:
            raise redis.ConnectionError("Connection refused")
        return True

    def close(self) -> None:
        pass


def invoke(event_name: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    event = json.loads((EVENTS / event_name).read_text())
    reply = LocalInvoker().invoke_event("QueryApiFunction", event)
    return reply.status, reply.headers, reply.body


@pytest.fixture
def install() -> Iterator[Any]:
    def _install(primary: str, replica: ReplicaState, cache_up: bool) -> None:
        database = FakeDatabase(primary, replica)
        client = cast(redis.Redis, FakeRedis(cache_up))
        set_container(Container(Settings(), database=database, redis=client))

    yield _install
    set_container(None)


def test_health_is_ok_when_every_part_is(install: Any) -> None:
    install("ok", ReplicaState(True, "ok", 0.0), cache_up=True)
    status, headers, body = invoke("health.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body == {
        "status": "ok",
        "primary": "ok",
        "replica": "ok",
        "replica_lag_seconds": 0.0,
        "cache": "ok",
    }


def test_health_is_degraded_but_200_when_only_the_replica_lags(install: Any) -> None:
    install("ok", ReplicaState(False, "lagging 9s (bound 5s)", 9.0), cache_up=True)
    status, _, body = invoke("health.json")
    assert status == 200
    assert body["status"] == "degraded"
    assert body["replica"] == "lagging 9s (bound 5s)"


def test_health_is_503_with_retry_after_when_no_database_can_answer(install: Any) -> None:
    install("unavailable (2003: refused)", ReplicaState(False, "unreachable", None), cache_up=False)
    status, headers, body = invoke("health.json")
    assert status == 503
    assert headers["retry-after"] == "2"
    assert body["status"] == "down"
    assert body["cache"].startswith("unavailable (ConnectionError")
