"""Sign-in abuse (PRODUCT.md) end to end: API Gateway events through the command API's Lambda
handler, counters in the test stack's Redis, or in the primary's table with Redis stopped.

Each test signs in from source addresses of its own, so no test sees another's counts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select
from tests.support.handler_client import PASSWORD, MarketClient, handler_client
from tests.support.stack import redis_stopped

from giftmarket.adapters import tables
from giftmarket.settings import Settings
from giftmarket_local.invoke import Reply
from giftmarket_local.stack import Stack

WINDOW_SECONDS = 2


def new_address() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{n // 250 % 250}.{n // 62500 % 250}"


def login(client: MarketClient, email: str, password: str, address: str) -> Reply:
    body = {"email": email, "password": password}
    return client.call("POST", "/api/auth/login", body, source_ip=address)


@pytest.fixture  # one installed container at a time: each test gets its own
def client(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[MarketClient]:
    with handler_client(MarketClient, make_settings(events_queue_url=None), stack) as client:
        yield client


@pytest.fixture
def short_window(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[MarketClient]:
    settings = make_settings(events_queue_url=None, login_failure_window_seconds=WINDOW_SECONDS)
    with handler_client(MarketClient, settings, stack) as client:
        yield client


def test_sixth_wrong_password_is_429_with_retry_after(client: MarketClient) -> None:
    user, address = client.sign_up(), new_address()
    statuses = [login(client, user.email, "wrong-password", address).status for _ in range(5)]

    reply = login(client, user.email, "wrong-password", address)

    assert statuses == [401] * 5
    assert reply.status == 429, reply
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.body["code"] == "too_many_attempts"
    assert 890 <= int(reply.headers["retry-after"]) <= 900


def test_the_correct_password_does_not_bypass_the_lockout(client: MarketClient) -> None:
    user = client.sign_up()
    for _ in range(5):
        login(client, user.email, "wrong-password", new_address())

    reply = login(client, user.email, PASSWORD, new_address())

    assert reply.status == 429, reply
    assert int(reply.headers["retry-after"]) > 0


def test_fifty_failures_from_one_address_lock_it_for_every_email_but_not_other_addresses(
    client: MarketClient,
) -> None:
    user, address = client.sign_up(), new_address()
    for n in range(50):
        assert (
            login(client, f"nobody-{n}-{uuid.uuid4().hex}@x.test", "guess", address).status == 401
        )

    locked = login(client, user.email, PASSWORD, address)
    elsewhere = login(client, user.email, PASSWORD, new_address())

    assert locked.status == 429, locked
    assert locked.headers["retry-after"]
    assert elsewhere.status == 200, elsewhere


def test_login_works_again_once_the_window_has_passed(short_window: MarketClient) -> None:
    client = short_window
    user, address = client.sign_up(), new_address()
    for _ in range(5):
        login(client, user.email, "wrong-password", address)
    assert login(client, user.email, PASSWORD, address).status == 429

    time.sleep(WINDOW_SECONDS + 0.1)

    assert login(client, user.email, PASSWORD, address).status == 200


def test_attempts_during_the_lockout_do_not_extend_it(short_window: MarketClient) -> None:
    client = short_window
    user, address = client.sign_up(), new_address()
    first = time.monotonic()
    for _ in range(5):
        login(client, user.email, "wrong-password", address)
    refused = 0
    while time.monotonic() - first < WINDOW_SECONDS - 0.3:
        assert login(client, user.email, "wrong-password", address).status == 429
        refused += 1
        time.sleep(0.1)

    time.sleep(max(0.0, first + WINDOW_SECONDS + 0.1 - time.monotonic()))

    assert refused > 3
    assert login(client, user.email, PASSWORD, address).status == 200


def test_with_redis_stopped_the_primary_counts_failures_and_nothing_is_a_500(
    client: MarketClient, stack: Stack
) -> None:
    user, address = client.sign_up(), new_address()
    writer = client.container.database.writer
    with writer.connect() as conn:
        before = conn.execute(select(func.count()).select_from(tables.login_failures)).scalar()

    with redis_stopped(stack):
        failed = [login(client, user.email, "wrong-password", address) for _ in range(5)]
        sixth = login(client, user.email, "wrong-password", address)
        right = login(client, user.email, PASSWORD, address)

    with writer.connect() as conn:
        after = conn.execute(select(func.count()).select_from(tables.login_failures)).scalar()
    assert [r.status for r in failed] == [401] * 5, failed
    assert (sixth.status, right.status) == (429, 429), (sixth, right)
    assert int(right.headers["retry-after"]) > 0
    assert after == (before or 0) + 2  # the email's row and the address's
