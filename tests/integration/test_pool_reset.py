"""A connection given back to the pool and taken again, on the real primary: a committed unit
of work costs no ROLLBACK, a transaction left open is still rolled back, and a connection the
server ended is replaced."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from tests.support.stack import settings_for

from giftmarket.adapters import db
from giftmarket.adapters.db import Database
from giftmarket.adapters.unit_of_work import SqlAlchemyUnitOfWork
from giftmarket_local.stack import Stack


@pytest.fixture
def one_connection(stack: Stack) -> Iterator[Database]:
    """A Database whose writer has exactly one connection: every checkout is the same one."""
    db = Database.from_settings(settings_for(stack, db_pool_size=1, db_max_overflow=0))
    try:
        yield db
    finally:
        db.dispose()


def rollbacks_so_far(writer: Engine) -> int:
    """The session's ROLLBACK count, read on the pool's one connection (the read's own
    transaction adds one, as it ends)."""
    with writer.connect() as conn:
        row = conn.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'")).one()
    return int(row[1])


def test_a_committed_unit_of_work_sends_no_rollback(one_connection: Database) -> None:
    writer = one_connection.writer
    before = rollbacks_so_far(writer)
    for _ in range(5):
        with SqlAlchemyUnitOfWork(one_connection) as uow:
            uow.session.execute(text("SELECT 1"))
            uow.commit()
    # Only the first read's own transaction ended by a rollback; the 5 commits, none.
    assert rollbacks_so_far(writer) - before == 1


def test_a_transaction_left_open_is_rolled_back_when_the_connection_returns(
    one_connection: Database,
) -> None:
    writer = one_connection.writer
    table = f"reset_probe_{os.urandom(4).hex()}"
    with writer.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id INT PRIMARY KEY) ENGINE=InnoDB"))
    try:
        raw = writer.raw_connection()  # what a caller below the Connection API holds
        cursor = raw.cursor()
        cursor.execute("START TRANSACTION")
        cursor.execute(f"INSERT INTO {table} VALUES (1)")
        cursor.close()
        raw.close()  # back to the pool, uncommitted
        with writer.connect() as conn:  # the same connection (pool of one)
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() == 0
            assert conn.execute(text("SELECT @@in_transaction")).scalar_one() == 1  # its own
    finally:
        with writer.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}"))


def test_an_idle_connection_whose_server_session_died_is_replaced_unseen(
    one_connection: Database, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = one_connection.writer
    with writer.connect() as conn:
        first = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
    stack.primary.sql(f"KILL CONNECTION {int(first)}")  # the server ends it: a failover, a timeout
    # Given back just now: taken without a ping, so its first statement meets the dead session.
    with pytest.raises(OperationalError), writer.connect() as conn:
        conn.execute(text("SELECT 1"))
    with writer.connect() as conn:  # the pool dropped it: a new session answers
        second = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
    stack.primary.sql(f"KILL CONNECTION {int(second)}")
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # as after a second of idleness
    with writer.connect() as conn:  # pinged, found dead, replaced before any statement
        third = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
    assert len({first, second, third}) == 3
