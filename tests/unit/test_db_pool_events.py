"""The pool's handling of a connection given back and taken again: a rollback only of what the
server says is open, a ping only after it sat idle."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import PoolResetState

from giftmarket.adapters.db import (
    SERVER_STATUS_IN_TRANS,
    _mark_returned,
    _ping_if_idle,
    _reset_on_return,
)

AUTOCOMMIT = 2  # another status flag: not a transaction


class Connection:
    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)
        self.rollbacks = 0

    def rollback(self) -> None:
        self.rollbacks += 1


STATE = PoolResetState(transaction_was_reset=False, terminate_only=False, asyncio_safe=True)


@pytest.mark.parametrize(
    ("attributes", "rollbacks"),
    [
        ({"server_status": 0}, 0),  # committed: the server's last OK says no transaction
        ({"server_status": AUTOCOMMIT}, 0),
        ({"server_status": SERVER_STATUS_IN_TRANS}, 1),
        ({"server_status": SERVER_STATUS_IN_TRANS | AUTOCOMMIT}, 1),
        ({"server_status": None}, 1),  # no OK packet read yet
        ({}, 1),  # a driver that does not say
    ],
)
def test_rolls_back_unless_the_server_says_no_transaction_is_open(
    attributes: dict[str, Any], rollbacks: int
) -> None:
    connection = Connection(**attributes)
    _reset_on_return(connection, None, STATE)  # type: ignore[arg-type]
    assert connection.rollbacks == rollbacks


class Record:
    def __init__(self) -> None:
        self.info: dict[str, Any] = {}


class Pinged(Connection):
    def __init__(self, *, fails: bool = False) -> None:
        super().__init__()
        self.pings = 0
        self.fails = fails

    def ping(self, reconnect: bool) -> None:
        assert reconnect is False  # the pool, not the driver, replaces a dead connection
        self.pings += 1
        if self.fails:
            raise ConnectionResetError("gone")


def test_a_connection_given_back_just_now_is_used_without_a_ping() -> None:
    connection, record = Pinged(), Record()
    _mark_returned(connection, record)  # type: ignore[arg-type]
    _ping_if_idle(connection, record, None)  # type: ignore[arg-type]
    assert connection.pings == 0


def test_a_connection_idle_longer_is_pinged_and_a_dead_one_is_given_up() -> None:
    record = Record()
    record.info["giftmarket_returned_at"] = 0.0  # long ago
    alive = Pinged()
    _ping_if_idle(alive, record, None)  # type: ignore[arg-type]
    assert alive.pings == 1
    with pytest.raises(DisconnectionError, match="failed its ping: gone"):
        _ping_if_idle(Pinged(fails=True), record, None)  # type: ignore[arg-type]
    unknown = Pinged()
    _ping_if_idle(unknown, Record(), None)  # type: ignore[arg-type]
    assert unknown.pings == 1  # no record of its return: pinged
