"""The local stack: idempotent bring-up, the migrated schema, health of each part."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from tests.support.stack import redis_stopped

from giftmarket.adapters.db import Database
from giftmarket.adapters.tables import metadata
from giftmarket.bootstrap import bootstrap
from giftmarket.queries.health import system_health
from giftmarket.settings import Settings
from giftmarket_local.processes import ManagedProcess, ProcessError
from giftmarket_local.stack import Stack


def test_bringing_the_stack_up_twice_starts_nothing_new(stack: Stack) -> None:
    before = stack.status()
    assert all(pid is not None for pid in before.values()), before
    assert stack.up() == []
    assert stack.status() == before


def test_migrated_schema_equals_the_table_metadata(database: Database) -> None:
    with database.writer.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert diff == []


def test_migrated_schema_reaches_the_replica(database: Database, stack: Stack) -> None:
    stack.wait_replica_caught_up()
    tables = set(stack.replica.sql("SHOW TABLES FROM giftmarket").split())
    assert {t.name for t in metadata.sorted_tables} <= tables


def test_waiting_for_a_replica_whose_replication_stopped_fails_at_once(stack: Stack) -> None:
    stack.replica.sql("STOP SLAVE SQL_THREAD")
    try:
        # Anything the primary logs moves its position past what the replica applied.
        stack.primary.sql("DROP TABLE IF EXISTS giftmarket.no_such_table")
        with pytest.raises(ProcessError, match="replication stopped before"):
            stack.wait_replica_caught_up(timeout=600)
    finally:
        stack.replica.sql("START SLAVE SQL_THREAD")
    stack.wait_replica_caught_up()


def test_health_reports_every_part_ok(settings: Settings) -> None:
    container = bootstrap(settings)
    try:
        report = system_health(container.database, container.redis)
    finally:
        container.close()
    assert report["status"] == "ok"
    assert (report["primary"], report["replica"], report["cache"]) == ("ok", "ok", "ok")
    assert report["replica_lag_seconds"] is not None
    assert 0 <= report["replica_lag_seconds"] < 5


def test_health_names_the_cache_down_while_redis_is_stopped(
    settings: Settings, stack: Stack
) -> None:
    container = bootstrap(settings)
    try:
        with redis_stopped(stack):
            report = system_health(container.database, container.redis)
        assert report["status"] == "degraded"
        assert report["cache"].startswith("unavailable")
        assert report["primary"] == report["replica"] == "ok"
        assert system_health(container.database, container.redis)["cache"] == "ok"
    finally:
        container.close()


def test_a_port_taken_by_someone_else_is_named_in_the_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        process = ManagedProcess(
            name="redis",
            argv=["/usr/bin/redis-server", "--port", str(port)],
            run_dir=tmp_path,
            log_dir=tmp_path,
            ready=lambda: True,
            port=port,
        )
        with pytest.raises(ProcessError, match=f"port {port} is already used"):
            process.start()
    assert not process.pid_file.exists()
