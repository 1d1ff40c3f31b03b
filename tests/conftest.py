"""Shared fixtures. Tests are marked by folder: unit, functional, integration, e2e.

The integration and e2e tests get the `test` profile of the local stack (its own ports and
data folder): the first test that needs it starts it, and the session stops it by PID at the
end. GM_KEEP_TEST_STACK=1 leaves it running between runs for a faster edit-test loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from moto import mock_aws
from sqlalchemy import ColumnElement, Engine, delete, select, text

from giftmarket.adapters import tables
from giftmarket.adapters.db import Database
from giftmarket.bootstrap import bootstrap
from giftmarket.messages import EventEnvelope
from giftmarket.settings import Settings
from giftmarket_local.migrations import reset
from giftmarket_local.stack import Stack, StackConfig

LEVELS = ("unit", "functional", "integration", "e2e", "reliability")


def pytest_configure(config: pytest.Config) -> None:
    # argon2 at production cost takes ~100 ms a hash; tests (and the servers they start,
    # which inherit the environment) hash with the cheapest parameters instead.
    os.environ.setdefault("PASSWORD_HASH_TIME_COST", "1")
    os.environ.setdefault("PASSWORD_HASH_MEMORY_KIB", "1024")
    # Dummy credentials: a test can only ever talk to LocalStack or moto, never to a real
    # AWS account that happens to be configured on the machine.
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[key] = value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for level in LEVELS:
            if level in parts:
                item.add_marker(getattr(pytest.mark, level))


FIGURES = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Records what a test measured (the reliability suite's figures): printed in the test's
    captured output and again in the session's summary."""

    def record(text: str) -> None:
        print(text)
        request.config.stash.setdefault(FIGURES, []).append((request.node.nodeid, text))

    return record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("figures measured")
        for nodeid, text in figures:
            terminalreporter.write_line(f"{nodeid.rsplit('::', 1)[-1]}: {text}")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    test_stack = Stack(StackConfig.for_profile("test"))
    test_stack.up()
    # Every session starts from an empty schema, and proves the migrations both ways.
    reset(test_stack.config)
    test_stack.wait_replica_caught_up()
    fresh_read_models(settings_for(test_stack))
    yield test_stack
    if not os.environ.get("GM_KEEP_TEST_STACK"):
        test_stack.stop()


def fresh_read_models(settings: Settings, *, flush: bool = True) -> None:
    """The test Redis emptied, and the read models rebuilt from the database, so queries
    read a generation, as after `make run`."""
    container = bootstrap(settings)
    try:
        if flush:
            container.redis.flushdb(asynchronous=True)  # a benchmark may have left 10^6 keys
        container.rebuild_read_models()
    finally:
        container.close()


@contextmanager
def redis_stopped(stack: Stack) -> Iterator[None]:
    """Redis stopped for the body, then started again. The test Redis keeps nothing across
    a restart (like a replaced cache node), so the read models come back by a rebuild."""
    assert stack.redis.stop()
    try:
        yield
    finally:
        stack.redis.start()
        fresh_read_models(settings_for(stack), flush=False)


def giftmarket_cli(stack: Stack, *args: str, timeout: float = 120) -> CompletedProcess[str]:
    """The `giftmarket` console script run as a real process against the test stack."""
    return subprocess.run(
        [sys.executable, "-m", "giftmarket.cli", *args],
        env={**os.environ, **stack.config.app_env()},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def outbox_envelopes(database: Database, *where: ColumnElement[bool]) -> list[EventEnvelope]:
    """The outbox rows matching `where` as the messages the relay would send, in id order."""
    o = tables.outbox
    with database.writer.connect() as conn:
        rows = conn.execute(select(o).where(*where).order_by(o.c.id)).all()
    return [EventEnvelope.from_outbox_row(row) for row in rows]


def mark_outbox_published(database: Database) -> None:
    """Every row earlier tests left unpublished marked published: a relay run then sends
    only the rows written after this."""
    with database.writer.begin() as conn:
        conn.execute(
            text("UPDATE outbox SET published_at = UTC_TIMESTAMP(6) WHERE published_at IS NULL")
        )


@contextmanager
def outbox_of_its_own(database: Database, aggregate_type: str) -> Iterator[Engine]:
    """The writer, with every row earlier tests left unpublished marked published (so a
    relay sends only the caller's rows), and the rows of `aggregate_type` the caller wrote
    deleted afterwards."""
    mark_outbox_published(database)
    yield database.writer
    with database.writer.begin() as conn:
        conn.execute(delete(tables.outbox).where(tables.outbox.c.aggregate_type == aggregate_type))


def drain_queue(sqs: Any, url: str, expected: int, *, timeout: float = 15) -> list[dict[str, Any]]:
    """Every message on the queue, each deleted as read (with its system attributes): until
    `expected` arrived (bounded by `timeout`), then one more empty poll to be sure nothing
    else is there."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if batch:
            entries = [
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)
            ]
            sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        messages += batch
        if not batch and len(messages) >= expected:
            break
    return messages


def settings_for(stack: Stack, **overrides: object) -> Settings:
    return stack.config.app_settings(**{"environment": "test", **overrides})


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return settings_for(stack)


SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def make_settings(stack: Stack) -> SettingsFactory:
    """Settings for the test stack with some values overridden."""
    return lambda **overrides: settings_for(stack, **overrides)


@pytest.fixture
def database(stack: Stack) -> Iterator[Database]:
    """A Database that re-reads the replica's health on every query (no caching)."""
    db = Database.from_settings(settings_for(stack, replica_check_interval_seconds=0))
    yield db
    db.dispose()


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    """A moto Secrets Manager, and Powertools parameter providers built inside it: Powertools
    keeps its providers (their boto3 clients, their caches) per process, so fresh ones here
    and none left behind for other tests."""
    DEFAULT_PROVIDERS.clear()
    try:
        with mock_aws():
            yield boto3.client("secretsmanager", region_name="us-east-1")
    finally:
        DEFAULT_PROVIDERS.clear()
