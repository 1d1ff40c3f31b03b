"""Queries with Redis unreachable: after one query found it so, the next ones go straight to
SQL for the pause (adapters/cache.py RedisBreaker), then one tries Redis again.

Without a server: the read model is a function that raises what redis-py raises, the
database a recorder of where each query went, the clock a counter moved by the test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, cast

import pytest
import redis
from tests.support.fakes import SecondsClock

from giftmarket.adapters.cache import RedisBreaker
from giftmarket.adapters.db import Database
from giftmarket.consistency import ConsistencyToken
from giftmarket.queries.reads import Reads
from giftmarket.read_ports import ReadModelReader


class Database_:
    """Where each query's SQL ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run_query(self, sql: Callable[[Any], Any]) -> Any:
        self.ran.append("replica")
        return sql(None)

    def run_on_primary(self, sql: Callable[[Any], Any]) -> Any:
        self.ran.append("primary")
        return sql(None)


class Redis_:
    """The read model: answers `value`, or raises `error`; counts the calls it got."""

    def __init__(self) -> None:
        self.error: redis.RedisError | None = None
        self.value: dict[str, str] | None = {"from": "redis"}
        self.seen = True
        self.calls = 0

    def read(self) -> dict[str, str] | None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value

    def all_seen(self, outbox_ids: Iterable[str]) -> bool:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.seen


def sql(_: Any) -> dict[str, str]:
    return {"from": "sql"}


@pytest.fixture
def clock() -> SecondsClock:
    return SecondsClock()


@pytest.fixture
def store() -> Redis_:
    return Redis_()


@pytest.fixture
def db() -> Database_:
    return Database_()


@pytest.fixture
def reads(clock: SecondsClock, store: Redis_, db: Database_) -> Reads:
    return Reads(
        cast(ReadModelReader, store),
        cast(Database, db),
        consistency_wait_seconds=0.0,
        breaker=RedisBreaker(2.0, clock=clock),
    )


def ask(reads: Reads, store: Redis_, token: ConsistencyToken | None = None) -> Any:
    return reads.answer(read_model=store.read, sql=sql, token=token)


@pytest.mark.parametrize(
    "error",
    [redis.ConnectionError("Connection refused"), redis.TimeoutError("Timeout reading")],
    ids=["refused", "timed out"],
)
def test_after_redis_failed_queries_skip_it_for_the_pause_then_try_again(
    reads: Reads, store: Redis_, db: Database_, clock: SecondsClock, error: redis.RedisError
) -> None:
    store.error = error
    assert ask(reads, store) == {"from": "sql"}
    assert store.calls == 1
    clock.now += 1.9
    for _ in range(5):
        assert ask(reads, store) == {"from": "sql"}
    assert store.calls == 1, "Redis was tried during the pause"
    assert db.ran == ["replica"] * 6
    clock.now += 0.1
    store.error = None
    assert ask(reads, store) == {"from": "redis"}
    assert store.calls == 2
    assert ask(reads, store) == {"from": "redis"}
    assert store.calls == 3 and db.ran == ["replica"] * 6


def test_a_failure_after_the_pause_starts_another(
    reads: Reads, store: Redis_, db: Database_, clock: SecondsClock
) -> None:
    store.error = redis.TimeoutError("Timeout connecting")
    ask(reads, store)
    clock.now += 2.0
    ask(reads, store)  # tries, fails again
    assert store.calls == 2
    clock.now += 1.5
    ask(reads, store)
    assert store.calls == 2, "the second failure did not start a pause of its own"
    clock.now += 0.5
    ask(reads, store)
    assert store.calls == 3


def test_an_error_in_what_redis_was_asked_does_not_stop_the_next_queries(
    reads: Reads, store: Redis_, db: Database_
) -> None:
    store.error = redis.ResponseError("WRONGTYPE Operation against a key")
    assert ask(reads, store) == {"from": "sql"}
    store.error = None
    assert ask(reads, store) == {"from": "redis"}
    assert store.calls == 2


def test_a_token_during_the_pause_is_answered_by_the_primary_without_waiting_on_redis(
    reads: Reads, store: Redis_, db: Database_, clock: SecondsClock
) -> None:
    token = ConsistencyToken(outbox_ids=("01KAQ3Y4MA7T2N5Q8R1S4V6X9Z",))
    store.error = redis.ConnectionError("Connection refused")
    assert ask(reads, store, token) == {"from": "sql"}
    assert store.calls == 1 and db.ran == ["primary"]
    assert ask(reads, store, token) == {"from": "sql"}
    assert ask(reads, store) == {"from": "sql"}
    assert store.calls == 1, "Redis was tried during the pause"
    assert db.ran == ["primary", "primary", "replica"]


def test_a_pause_of_zero_tries_redis_on_every_query(
    clock: SecondsClock, store: Redis_, db: Database_
) -> None:
    reads = Reads(
        cast(ReadModelReader, store),
        cast(Database, db),
        breaker=RedisBreaker(0.0, clock=clock),
    )
    store.error = redis.ConnectionError("Connection refused")
    for _ in range(3):
        ask(reads, store)
    assert store.calls == 3


def test_an_outage_is_logged_once_per_pause_and_its_end_once(
    reads: Reads, store: Redis_, clock: SecondsClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="giftmarket")
    store.error = redis.ConnectionError("Connection refused")
    for _ in range(20):
        ask(reads, store)
    clock.now += 2.0
    store.error = None
    for _ in range(3):
        ask(reads, store)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "read models unreachable; queries answer from SQL for 2 s: Connection refused",
        "Redis answers again",
    ]
