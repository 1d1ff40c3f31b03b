"""Commands on the primary, queries on the replica, and the fallbacks, on real MariaDB servers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import OperationalError

from giftmarket.adapters.db import Database, DatabaseUnavailable, build_engine, resolve_credentials
from giftmarket.adapters.tables import products
from giftmarket.adapters.unit_of_work import SqlAlchemyUnitOfWork
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

SettingsFactory = Callable[..., Settings]

PRIMARY_ID, REPLICA_ID = 1, 2


def new_id() -> str:
    return os.urandom(13).hex().upper()


def insert_product(uow: SqlAlchemyUnitOfWork, name: str) -> str:
    product_id = new_id()
    uow.session.execute(
        products.insert().values(
            id=product_id,
            name=name,
            brand="brand",
            category="coffee",
            face_value=5000,
            created_at=datetime.now(UTC).replace(tzinfo=None),
        )
    )
    return product_id


def server_and_name(product_id: str) -> Callable[[Connection], tuple[int, str | None]]:
    def query(session: Connection) -> tuple[int, str | None]:
        server = session.execute(text("SELECT @@server_id")).scalar_one()
        name = session.execute(
            select(products.c.name).where(products.c.id == product_id)
        ).scalar_one_or_none()
        return int(server), name

    return query


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


@contextmanager
def replica_sql(stack: Stack, before: str, after: str) -> Iterator[None]:
    stack.replica.sql(before)
    try:
        yield
    finally:
        stack.replica.sql(after)
        stack.wait_replica_caught_up()


def test_row_written_by_a_command_reaches_queries_through_the_replica(
    database: Database, stack: Stack
) -> None:
    with SqlAlchemyUnitOfWork(database) as uow:
        product_id = insert_product(uow, "americano")
        uow.commit()
    committed = time.monotonic()

    # Polled until the replica answers with the row: under load the replica monitor may
    # rightly send a read or two to the primary first, which would find the row at once.
    wait_until(lambda: database.run_query(server_and_name(product_id)) == (REPLICA_ID, "americano"))
    lag_ms = (time.monotonic() - committed) * 1000
    print(f"\nreplication: row visible on the replica {lag_ms:.1f} ms after commit")


def test_rolled_back_unit_of_work_leaves_nothing(database: Database) -> None:
    with SqlAlchemyUnitOfWork(database) as uow:
        product_id = insert_product(uow, "never committed")
    assert database.run_query(server_and_name(product_id))[1] is None
    with database.writer.connect() as conn:
        found = conn.execute(select(products.c.id).where(products.c.id == product_id)).first()
    assert found is None


def test_query_falls_back_to_primary_while_the_replica_process_is_stopped(
    database: Database, stack: Stack
) -> None:
    with SqlAlchemyUnitOfWork(database) as uow:
        product_id = insert_product(uow, "latte")
        uow.commit()
    stack.wait_replica_caught_up()
    assert database.run_query(server_and_name(product_id)) == (REPLICA_ID, "latte")

    assert stack.replica.process.stop(), "the replica was not running"
    try:
        assert database.run_query(server_and_name(product_id)) == (PRIMARY_ID, "latte")
        assert database.monitor is not None
        assert database.monitor.state().status.startswith("unreachable")
    finally:
        stack.replica.process.start()

    # Replication resumes by itself and queries go back to the replica, no restart needed.
    stack.wait_replica_caught_up()
    wait_until(lambda: database.run_query(server_and_name(product_id))[0] == REPLICA_ID)


def test_replica_dying_between_health_check_and_query_costs_no_failed_query(
    stack: Stack, make_settings: SettingsFactory
) -> None:
    # Health readings cached for a minute: the query finds out the hard way, mid-flight.
    db = Database.from_settings(make_settings(replica_check_interval_seconds=60))
    try:
        with SqlAlchemyUnitOfWork(db) as uow:
            product_id = insert_product(uow, "mocha")
            uow.commit()
        stack.wait_replica_caught_up()
        assert db.run_query(server_and_name(product_id)) == (REPLICA_ID, "mocha")
        stack.replica.process.stop()
        try:
            assert db.run_query(server_and_name(product_id)) == (PRIMARY_ID, "mocha")
        finally:
            stack.replica.process.start()
        stack.wait_replica_caught_up()
    finally:
        db.dispose()


def test_command_reads_its_writes_on_the_primary_while_replication_is_paused(
    database: Database, stack: Stack
) -> None:
    with replica_sql(stack, "STOP SLAVE", "START SLAVE"):
        with SqlAlchemyUnitOfWork(database) as uow:
            product_id = insert_product(uow, "cold brew")
            uow.commit()
        with SqlAlchemyUnitOfWork(database) as uow:
            server = uow.session.execute(text("SELECT @@server_id")).scalar_one()
            name = uow.session.execute(
                select(products.c.name).where(products.c.id == product_id).with_for_update()
            ).scalar_one()
        assert (server, name) == (PRIMARY_ID, "cold brew")
        # Queries notice the stopped replication and read the primary instead of stale data.
        assert database.run_query(server_and_name(product_id)) == (PRIMARY_ID, "cold brew")
        assert database.monitor is not None
        assert database.monitor.probe().status.startswith("replication stopped")


def test_queries_leave_a_replica_lagging_beyond_the_bound(
    stack: Stack, make_settings: SettingsFactory
) -> None:
    db = Database.from_settings(
        make_settings(replica_max_lag_seconds=1, replica_check_interval_seconds=0)
    )
    assert db.monitor is not None
    try:
        # Delayed replication: a real replica, really behind, by a known amount.
        with replica_sql(
            stack,
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=4; START SLAVE",
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=0; START SLAVE",
        ):
            with SqlAlchemyUnitOfWork(db) as uow:
                product_id = insert_product(uow, "flat white")
                uow.commit()
            monitor = db.monitor
            wait_until(lambda: (monitor.probe().lag_seconds or 0) > 1, timeout=8)
            assert monitor.probe().status.startswith("lagging")
            assert db.run_query(server_and_name(product_id)) == (PRIMARY_ID, "flat white")
    finally:
        db.dispose()


def test_read_only_error_from_a_demoted_primary_discards_the_pooled_connection(
    make_settings: SettingsFactory,
) -> None:
    # A writer engine pointed at the read-only replica stands in for a primary that was
    # demoted by a failover while our connections to it sat in the pool.
    s = make_settings()
    engine = build_engine(
        s, resolve_credentials(s), s.db_replica_host, s.db_replica_port, read_only=False
    )

    def pooled_connection_id() -> int:
        # Asked of the driver: any transaction of the writer, even a read, starts READ WRITE
        # (adapters/db.py), which a read-only server refuses with 1290 as it does a write.
        with engine.connect() as conn:
            dbapi_connection: Any = conn.connection.dbapi_connection
            return int(dbapi_connection.thread_id())

    try:
        pooled = pooled_connection_id()
        assert pooled_connection_id() == pooled
        with pytest.raises(OperationalError) as raised, engine.begin() as conn:
            conn.execute(text("DELETE FROM products WHERE id = 'nothing'"))
        assert raised.value.orig is not None and raised.value.orig.args[0] == 1290
        assert raised.value.connection_invalidated
        # The connection that hit the read-only server is not handed out again.
        assert pooled_connection_id() != pooled
    finally:
        engine.dispose()


def test_unreachable_primary_is_reported_as_unavailable_not_as_an_error(
    stack: Stack, make_settings: SettingsFactory
) -> None:
    closed_port = stack.config.primary_port + 1000
    db = Database.from_settings(
        make_settings(db_primary_port=closed_port, db_replica_port=closed_port)
    )
    try:
        with pytest.raises(DatabaseUnavailable):
            db.run_query(lambda session: session.execute(text("SELECT 1")).scalar())
        with pytest.raises(DatabaseUnavailable), SqlAlchemyUnitOfWork(db) as uow:
            uow.session.execute(text("SELECT 1"))
            uow.commit()
        assert db.ping_primary().startswith("unavailable")
    finally:
        db.dispose()
