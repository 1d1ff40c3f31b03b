"""When queries may use the replica: reachable, replicating, lag within the bound."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from tests.support.fakes import SecondsClock

from giftmarket.adapters.db import ReplicaMonitor


class FakeResult:
    def __init__(self, row: dict[str, Any] | None) -> None:
        self.row = row

    def mappings(self) -> FakeResult:
        return self

    def first(self) -> dict[str, Any] | None:
        return self.row


class FakeReplica:
    """Stands in for the reader engine: answers SHOW REPLICA STATUS with `row`."""

    def __init__(self, row: dict[str, Any] | None) -> None:
        self.row = row
        self.down = False
        self.probes = 0

    @contextmanager
    def connect(self) -> Iterator[FakeReplica]:
        self.probes += 1
        if self.down:
            raise OperationalError("connect", {}, Exception(2003, "Can't connect"))
        yield self

    def exec_driver_sql(self, sql: str) -> FakeResult:
        assert sql == "SHOW REPLICA STATUS"
        return FakeResult(self.row)


def mariadb_status(lag: int | None, sql: str = "Yes", io: str = "Yes") -> dict[str, Any]:
    return {"Slave_IO_Running": io, "Slave_SQL_Running": sql, "Seconds_Behind_Master": lag}


def monitor_for(replica: FakeReplica, clock: SecondsClock | None = None) -> ReplicaMonitor:
    return ReplicaMonitor(
        cast(Engine, replica),
        max_lag_seconds=5,
        interval_seconds=1,
        clock=clock or SecondsClock(),
    )


def test_replica_within_the_lag_bound_is_usable() -> None:
    state = monitor_for(FakeReplica(mariadb_status(lag=5))).state()
    assert (state.usable, state.status, state.lag_seconds) == (True, "ok", 5.0)


def test_replica_beyond_the_lag_bound_is_not_used() -> None:
    state = monitor_for(FakeReplica(mariadb_status(lag=6))).state()
    assert not state.usable
    assert state.status == "lagging 6s (bound 5s)"


def test_mysql8_column_names_are_understood() -> None:
    row = {"Replica_IO_Running": "Yes", "Replica_SQL_Running": "Yes", "Seconds_Behind_Source": 0}
    assert monitor_for(FakeReplica(row)).state().usable


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (mariadb_status(lag=None, sql="No"), "replication stopped"),
        (mariadb_status(lag=None, io="Connecting"), "replication broken"),
        (None, "not replicating"),
    ],
)
def test_replica_that_is_not_replicating_is_not_used(
    row: dict[str, Any] | None, reason: str
) -> None:
    state = monitor_for(FakeReplica(row)).state()
    assert not state.usable
    assert state.status.startswith(reason)


def test_unreachable_replica_is_not_used() -> None:
    replica = FakeReplica(mariadb_status(lag=0))
    replica.down = True
    state = monitor_for(replica).state()
    assert not state.usable and state.status.startswith("unreachable")


def test_reading_is_reused_within_the_interval_and_retaken_after() -> None:
    replica, clock = FakeReplica(mariadb_status(lag=0)), SecondsClock()
    monitor = monitor_for(replica, clock)
    monitor.state()
    clock.now += 0.5
    monitor.state()
    assert replica.probes == 1
    clock.now += 0.6
    monitor.state()
    assert replica.probes == 2


def test_failed_query_marks_the_replica_unusable_until_the_next_reading() -> None:
    replica, clock = FakeReplica(mariadb_status(lag=0)), SecondsClock()
    monitor = monitor_for(replica, clock)
    assert monitor.state().usable
    monitor.mark_unusable("unreachable (2013: Lost connection)")
    assert not monitor.state().usable
    clock.now += 1
    assert monitor.state().usable
