"""Shared fixtures. Tests are marked by folder: unit, functional, integration, e2e.

The integration and e2e tests get the `test` profile of the local stack (its own ports and
data folder): the first test that needs it starts it, and the session stops it by PID at the
end. GM_KEEP_TEST_STACK=1 leaves it running between runs for a faster edit-test loop.

`make test` runs the suite on two pytest-xdist workers, a file at a time each; every worker
past the first gets a stack of its own (ports 10 apart, a folder of its own), so no test
shares a database, a cache or a queue with a test running beside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import coverage
import pytest
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from moto import mock_aws
from tests.support.stack import SettingsFactory, fresh_read_models, settings_for, sqs_of

from giftmarket.adapters.db import Database
from giftmarket.settings import Settings
from giftmarket_local.migrations import reset
from giftmarket_local.stack import Stack, StackConfig

LEVELS = ("unit", "functional", "integration", "e2e", "reliability")


# Added to each of the test profile's ports for xdist worker gwN (N > 0).
WORKER_PORT_STEP = 10
STACK_SERVICES = ("primary", "replica", "redis", "localstack", "oidc")


def _stack_of_its_own(worker: str) -> None:
    """Point this worker (and every process it starts, which inherit the environment) at a
    stack folder and ports of its own."""
    number = int(worker.removeprefix("gw"))
    if number == 0:
        return
    config = StackConfig.for_profile("test")
    for service in STACK_SERVICES:
        base: int = getattr(config, f"{service}_port")
        os.environ[f"GM_TEST_{service.upper()}_PORT"] = str(base + WORKER_PORT_STEP * number)
    local = Path(os.environ.get("GM_LOCAL_DIR", Path(__file__).parents[1] / ".local"))
    os.environ["GM_LOCAL_DIR"] = str(local / f"xdist-{worker}")


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        _stack_of_its_own(worker)
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


@pytest.fixture(autouse=True)
def untraced_when_timing_matters(request: pytest.FixtureRequest) -> Iterator[None]:
    """The reliability tests run without coverage's tracer in this process: their goals are
    latencies and ratios under load (a tracer doubles the CPU time of the code it traces and
    would measure itself), and they are the slowest of the suite. What they start as
    processes (relays, workers, the runner) is still measured."""
    cov = coverage.Coverage.current()
    if cov is None or request.node.get_closest_marker("reliability") is None:
        yield
        return
    cov.stop()
    try:
        yield
    finally:
        cov.start()


FIGURES = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Records what a test measured (the reliability suite's figures): printed in the test's
    captured output and again in the session's summary."""

    def record(text: str) -> None:
        print(text)
        request.config.stash.setdefault(FIGURES, []).append((request.node.nodeid, text))

    return record


def pytest_sessionfinish(session: pytest.Session) -> None:
    # On an xdist worker: hand the figures to the controller, which prints the summary.
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["figures"] = session.config.stash.get(FIGURES, [])


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown to a run without it
def pytest_testnodedown(node: Any, error: Any) -> None:
    figures = getattr(node, "workeroutput", {}).get("figures", [])
    node.config.stash.setdefault(FIGURES, []).extend(tuple(f) for f in figures)


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


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return settings_for(stack)


@pytest.fixture(scope="session")
def make_settings(stack: Stack) -> SettingsFactory:
    """Settings for the test stack with some values overridden."""
    return lambda **overrides: settings_for(stack, **overrides)


@pytest.fixture(scope="session")
def sqs(stack: Stack) -> Any:
    """An SQS client of the test stack's LocalStack."""
    return sqs_of(stack)


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
