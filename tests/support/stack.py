"""The test stack as tests use it: its settings, its read models, its Redis stopped for a
while, the `giftmarket` console script run against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from subprocess import CompletedProcess
from typing import Any

import boto3

from giftmarket.bootstrap import bootstrap
from giftmarket.projections.rebuild import rebuild_read_models
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack


def settings_for(stack: Stack, **overrides: object) -> Settings:
    """The test stack's settings. A container a test builds in its own process has no relay
    loop beside it (the runner has one, on the relay's schedule), so its commands send their
    own events before answering, as EVENTS_PUBLISH=in_request does; the deployed way, the
    relay's loop, is tested in tests/integration/test_relay_loop.py and end to end through
    the runner (tests/e2e)."""
    return stack.config.app_settings(
        **{"environment": "test", "events_publish": "in_request", **overrides}
    )


SettingsFactory = Callable[..., Settings]


def sqs_of(stack: Stack) -> Any:
    """An SQS client of the stack's LocalStack."""
    return boto3.client(
        "sqs", endpoint_url=stack.config.localstack_url, region_name=stack.config.region
    )


def fresh_read_models(settings: Settings, *, flush: bool = True) -> None:
    """The test Redis emptied, and the read models rebuilt from the database, so queries
    read a generation, as after `make run`."""
    container = bootstrap(settings)
    try:
        if flush:
            container.redis.flushdb(asynchronous=True)  # a benchmark may have left 10^6 keys
        rebuild_read_models(container.settings, container.database)
    finally:
        container.close()


def redis_started_again(stack: Stack) -> None:
    """Redis started after a stop. The test Redis keeps nothing across a restart (like a
    replaced cache node), so the read models come back by a rebuild."""
    stack.redis.start()
    fresh_read_models(settings_for(stack), flush=False)


@contextmanager
def redis_stopped(stack: Stack) -> Iterator[None]:
    """Redis stopped for the body, then started again (`redis_started_again`)."""
    assert stack.redis.stop()
    try:
        yield
    finally:
        redis_started_again(stack)


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


def sign_up_directly(stack: Stack, email: str) -> str:
    """An account made through the signup command, on a container with no ADMIN_EMAILS."""
    from giftmarket.bootstrap import bootstrap
    from giftmarket.commands import accounts

    container = bootstrap(settings_for(stack, admin_emails="", events_queue_url=None))
    try:
        command = accounts.SignUp(email, "operator-password-1", "op")
        account, _ = container.command_executor.execute(command)
    finally:
        container.close()
    return account.user_id
