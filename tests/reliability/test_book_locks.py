"""A trade holding a bid locks that bid alone, on the real primary.

A trade takes its bid with SKIP LOCKED, so a bid another transaction holds counts as taken.
MariaDB's `ORDER BY ... LIMIT 1 FOR UPDATE SKIP LOCKED` on the book's index also kept a lock
on the first index record past the range it read: the best bid of the next product, which a
trade there then skipped, answering no_matching_bid with a matching bid open. Here one unit
of work holds what a trade (or the expiry job) locked while another takes its own bid.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import pytest
from tests.reliability.images import uploaded_image

from giftmarket.bootstrap import Container, bootstrap
from giftmarket.commands import accounts, catalog, trading
from giftmarket.commands.context import InvalidCredentials
from giftmarket.commands.executor import Command, CommandExecutor
from giftmarket.domain.settlement import KST
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

T = TypeVar("T")
PRICE = 4_000


@pytest.fixture(scope="module")
def container(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Container]:
    settings = make_settings(
        aws_endpoint_url=stack.config.localstack_url, aws_region=stack.config.region
    )
    built = bootstrap(settings)
    yield built
    built.close()


def call(run: CommandExecutor, command: Command[T]) -> T:
    return run.execute(command)[0]


def user(run: CommandExecutor, points: int = 0) -> str:
    command = accounts.SignUp(f"{uuid.uuid4().hex}@example.com", "password123", "nick")
    user_id = call(run, command).user_id
    if points:
        call(run, accounts.ChargePoints(user_id, points))
    return user_id


def products(run: CommandExecutor, count: int) -> list[str]:
    """`count` products, in id order: each one's book is the next one's neighbour."""
    admin_id = _admin(run)
    made = [
        call(run, catalog.RegisterProduct(admin_id, "Americano", "Starbucks", "coffee", 4_500))
        for _ in range(count)
    ]
    assert made == sorted(made)
    return made


def _admin(run: CommandExecutor) -> str:
    """The test settings' admin (ADMIN_EMAILS), signed up by the first test that needs it."""
    email = sorted(run.context.admin_emails)[0]
    try:
        return call(run, accounts.SignIn(email, "password123")).user_id
    except InvalidCredentials:
        return call(run, accounts.SignUp(email, "password123", "admin")).user_id


def days_ahead(days: int) -> date:
    return datetime.now(UTC).astimezone(KST).date() + timedelta(days=days)


def ask(
    run: CommandExecutor, container: Container, seller_id: str, product_id: str, valid_days: int
) -> str:
    image_id = uploaded_image(run, container, seller_id)
    barcode = str(uuid.uuid4().int)[:20]
    command = trading.PlaceSellBid(
        seller_id, product_id, PRICE, image_id, barcode, days_ahead(valid_days)
    )
    return call(run, command).bid_id


def test_a_held_ask_leaves_the_next_products_ask_to_its_buyers(container: Container) -> None:
    run = container.command_executor
    first, second = products(run, 2)
    seller, buyer = user(run), user(run)
    asks = [ask(run, container, seller, product, valid_days=30) for product in (first, second)]
    takeable = days_ahead(1)
    with container.unit_of_work() as holder:
        held = holder.sell_bids.take_best(first, PRICE, buyer, takeable)
        assert held is not None and held.id == asks[0]
        with container.unit_of_work() as other:
            taken = other.sell_bids.take_best(second, PRICE, buyer, takeable)
            assert taken is not None and taken.id == asks[1]
            # The held ask itself is skipped, not waited for.
            assert other.sell_bids.take_best(first, PRICE, buyer, takeable) is None


def test_a_held_buy_bid_leaves_the_next_products_bid_to_its_sellers(
    container: Container,
) -> None:
    run = container.command_executor
    first, second = products(run, 2)
    seller = user(run)
    bids = [
        call(run, trading.PlaceBuyBid(user(run, points=PRICE), product, PRICE)).bid_id
        for product in (first, second)
    ]
    with container.unit_of_work() as holder:
        held = holder.buy_bids.take_best(first, PRICE, seller)
        assert held is not None and held.id == bids[0]
        with container.unit_of_work() as other:
            taken = other.buy_bids.take_best(second, PRICE, seller)
            assert taken is not None and taken.id == bids[1]
            assert other.buy_bids.take_best(first, PRICE, seller) is None


def test_the_expiry_job_locks_only_the_asks_it_expires(container: Container) -> None:
    run = container.command_executor
    (product,) = products(run, 1)
    seller, buyer = user(run), user(run)
    soon = ask(run, container, seller, product, valid_days=10)
    later = ask(run, container, seller, product, valid_days=40)
    with container.unit_of_work() as job:
        # As the job would lock them on the day the first voucher falls inside the margin.
        expiring = job.sell_bids.lock_expiring(days_ahead(11), limit=200)
        assert soon in {a.id for a in expiring} and later not in {a.id for a in expiring}
        with container.unit_of_work() as trade:
            taken = trade.sell_bids.take_best(product, PRICE, buyer, days_ahead(1))
            assert taken is not None and taken.id == later
