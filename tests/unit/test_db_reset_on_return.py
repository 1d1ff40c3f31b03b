"""The pool's reset of a connection given back rolls back only what the server says is open."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.pool import PoolResetState

from giftmarket.adapters.db import SERVER_STATUS_IN_TRANS, _reset_on_return

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
