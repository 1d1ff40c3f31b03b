"""Money and matching under real concurrency, on the real primary.

Threads race through the same command executor the API uses, each on its own connection,
so row locks, SKIP LOCKED, deadlock retries and version guards are all exercised for real.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select, text
from tests.reliability.images import uploaded_image
from tests.reliability.ledger import assert_ledger_agrees_with_balances
from tests.reliability.load import soak
from tests.support.fakes import fresh_barcode, valid_until

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container, bootstrap
from giftmarket.commands import accounts, catalog, trading
from giftmarket.commands.context import CommandContext
from giftmarket.commands.executor import Command, CommandExecutor, IdempotencyClaim
from giftmarket.commands.ports import Committed, StoredResponse, UnitOfWork
from giftmarket.domain import marketplace
from giftmarket.domain.errors import BidNotOpen, DomainError, NoMatchingBid
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

T = TypeVar("T")
ADMIN = "admin@giftmarket.local"
# max-connections is 400 on the test servers: one connection per contender.
BUYERS = soak(100, cap=300)


@pytest.fixture(scope="module")
def container(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Container]:
    # A pool big enough that every racing thread holds its own connection to the primary.
    settings = make_settings(
        db_pool_size=10,
        db_max_overflow=BUYERS + 10,
        aws_endpoint_url=stack.config.localstack_url,
        aws_region=stack.config.region,
    )
    built = bootstrap(settings)
    yield built
    built.close()


@pytest.fixture
def run(container: Container) -> CommandExecutor:
    return container.command_executor


def call(run: CommandExecutor, command: Command[T]) -> T:
    return run.execute(command)[0]


def sign_up(run: CommandExecutor, email: str | None = None) -> str:
    command = accounts.SignUp(email or f"{uuid.uuid4().hex}@example.com", "password123", "nick")
    return call(run, command).user_id


def charge(run: CommandExecutor, user_id: str, amount: int) -> int:
    command = accounts.ChargePoints(user_id, amount)
    return call(run, command).available_points


def new_product(run: CommandExecutor) -> str:
    admin = admin_id(run)
    command = catalog.RegisterProduct(admin, "Americano", "Starbucks", "coffee", 4500)
    return call(run, command)


def admin_id(run: CommandExecutor) -> str:
    command = accounts.SignIn(ADMIN, "password123")
    try:
        return call(run, command).user_id
    except DomainError:
        return sign_up(run, ADMIN)


def place_ask(
    run: CommandExecutor, container: Container, product_id: str, price: int
) -> tuple[str, str]:
    seller = sign_up(run)
    image_id = uploaded_image(run, container, seller)
    barcode, expires_on = fresh_barcode(), valid_until(container.command_context.clock())
    command = trading.PlaceSellBid(seller, product_id, price, image_id, barcode, expires_on)
    return seller, call(run, command).bid_id


def race(n: int, action: Callable[[int], T]) -> list[T | BaseException]:
    """Run `action(i)` on n threads released at the same instant."""
    start = threading.Barrier(n)

    def contender(i: int) -> T | BaseException:
        start.wait()
        try:
            return action(i)
        except BaseException as exc:  # noqa: BLE001 - the outcome is what is measured
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(contender, range(n)))


def balances(container: Container, user_id: str) -> tuple[int, int, int]:
    with container.database.writer.connect() as conn:
        row = conn.execute(
            select(
                tables.users.c.available_points,
                tables.users.c.escrowed_points,
                tables.users.c.pending_points,
            ).where(tables.users.c.id == user_id)
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def outbox_events(container: Container, aggregate_id: str) -> list[tuple[str, int]]:
    o = tables.outbox
    with container.database.writer.connect() as conn:
        rows = conn.execute(
            select(o.c.event_type, o.c.aggregate_version)
            .where(o.c.aggregate_id == aggregate_id)
            .order_by(o.c.id)
        )
        return [(str(t), int(v)) for t, v in rows]


def test_a_hundred_buyers_racing_for_one_ask_make_exactly_one_order(
    run: CommandExecutor, container: Container, figure: Callable[[str], None]
) -> None:
    product_id = new_product(run)
    seller, ask_id = place_ask(run, container, product_id, 5000)
    buyers = [sign_up(run) for _ in range(BUYERS)]
    for buyer in buyers:
        charge(run, buyer, 10_000)

    def buy(i: int) -> trading.Purchase:
        command = trading.BuyNow(buyers[i], product_id, 5000)
        return call(run, command)

    started = time.perf_counter()
    outcomes = race(BUYERS, buy)
    elapsed = time.perf_counter() - started

    winners = [i for i, o in enumerate(outcomes) if isinstance(o, trading.Purchase)]
    losers = Counter(type(o).__name__ for o in outcomes if not isinstance(o, trading.Purchase))
    assert len(winners) == 1, outcomes
    assert losers == {"NoMatchingBid": BUYERS - 1}
    with container.database.writer.connect() as conn:
        orders = conn.execute(
            select(func.count()).where(tables.orders.c.sell_bid_id == ask_id)
        ).scalar_one()
    assert orders == 1
    for i, buyer in enumerate(buyers):
        assert balances(container, buyer) == ((5000, 0, 0) if i in winners else (10_000, 0, 0))
    assert balances(container, seller) == (0, 0, 5000)
    assert [t for t, _ in outbox_events(container, ask_id)] == ["SellBidPlaced", "SellBidMatched"]
    assert_ledger_agrees_with_balances(container)
    figure(
        f"{BUYERS} concurrent buy-now on one ask in {elapsed:.2f} s: {orders} order,"
        f" {losers['NoMatchingBid']} NoMatchingBid, ledger sums to 0 and equals every balance"
    )


def test_cancel_racing_buy_now_on_one_ask_has_exactly_one_winner(
    run: CommandExecutor, container: Container
) -> None:
    for _ in range(10):
        product_id = new_product(run)
        seller, ask_id = place_ask(run, container, product_id, 3000)
        buyer = sign_up(run)
        charge(run, buyer, 3000)

        def act(
            i: int,
            seller: str = seller,
            ask_id: str = ask_id,
            buyer: str = buyer,
            product_id: str = product_id,
        ) -> object:
            if i == 0:
                cancel = trading.CancelSellBid(seller, ask_id)
                return call(run, cancel)
            purchase = trading.BuyNow(buyer, product_id, 3000)
            return call(run, purchase)

        cancelled, bought = race(2, act)
        cancel_won = not isinstance(cancelled, BaseException)
        buy_won = isinstance(bought, trading.Purchase)
        assert cancel_won != buy_won, (cancelled, bought)
        if cancel_won:
            assert isinstance(bought, NoMatchingBid)
            assert balances(container, buyer) == (3000, 0, 0)
        else:
            assert isinstance(cancelled, BidNotOpen)
            assert balances(container, buyer) == (0, 0, 0)
    assert_ledger_agrees_with_balances(container)


def test_concurrent_charges_bids_and_cancels_on_one_user_lose_no_update(
    run: CommandExecutor, container: Container
) -> None:
    user = sign_up(run)
    product_id = new_product(run)

    def act(i: int) -> int:
        if i % 2 == 0:
            charge(run, user, 1000)
            return 1000
        bid_command = trading.PlaceBuyBid(user, product_id, 100 + i)
        try:
            bid = call(run, bid_command)
        except DomainError:
            return 0  # not enough available points yet: refused, nothing changed
        if i % 4 == 1:
            cancel = trading.CancelBuyBid(user, bid.bid_id)
            call(run, cancel)
        return 0

    charged = sum(r for r in race(40, act) if isinstance(r, int))
    assert charged == 20 * 1000
    available, escrowed, pending = balances(container, user)
    with container.database.writer.connect() as conn:
        open_bids = conn.execute(
            select(func.coalesce(func.sum(tables.buy_bids.c.price), 0)).where(
                tables.buy_bids.c.buyer_id == user, tables.buy_bids.c.status == "OPEN"
            )
        ).scalar_one()
    assert (available + escrowed, escrowed, pending) == (charged, open_bids, 0)
    assert_ledger_agrees_with_balances(container)


def test_outbox_rows_exist_only_for_committed_commands(
    run: CommandExecutor, container: Container
) -> None:
    user = sign_up(run)
    assert outbox_events(container, user) == [("UserSignedUp", 1)]

    bid = trading.PlaceBuyBid(user, new_product(run), 1000)
    with pytest.raises(DomainError):  # no points: refused before anything is written
        call(run, bid)

    class Crash(Exception):
        pass

    def charge_then_crash(uow: UnitOfWork, ctx: CommandContext) -> None:
        user_row = uow.users.get(user, lock=True)
        assert user_row is not None
        uow.ledger.record(marketplace.charge(user_row, 500, ctx.ids, ctx.clock()))
        uow.flush()  # the outbox rows are written... and then the command fails
        raise Crash()

    with pytest.raises(Crash):
        run.transaction(charge_then_crash)
    assert outbox_events(container, user) == [("UserSignedUp", 1)]
    assert balances(container, user) == (0, 0, 0)

    charge(run, user, 700)
    assert outbox_events(container, user) == [
        ("UserSignedUp", 1),
        ("PointsCharged", 2),
        ("UserBalancesChanged", 2),
    ]
    assert_ledger_agrees_with_balances(container)


def test_same_idempotency_key_sent_concurrently_takes_effect_once(
    run: CommandExecutor, container: Container
) -> None:
    user = sign_up(run)
    claim = IdempotencyClaim(user, "charge-once", "POST", "/api/points/charge", "h" * 64)
    command = accounts.ChargePoints(user, 2500)

    def respond(result: accounts.Balance, written: Committed) -> StoredResponse:
        return StoredResponse(200, f'{{"available_points":{result.available_points}}}', {})

    outcomes = race(
        10,
        lambda _: run.execute_idempotent(command, claim, respond),
    )

    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert {o.response.body for o in outcomes} == {'{"available_points":2500}'}  # type: ignore[union-attr]
    assert sum(not o.replayed for o in outcomes) == 1  # type: ignore[union-attr]
    assert balances(container, user) == (2500, 0, 0)


def test_an_unlocked_read_that_went_stale_is_retried_not_lost(
    run: CommandExecutor, container: Container
) -> None:
    user = sign_up(run)
    charge(run, user, 1000)
    read_done, concurrent_done = threading.Event(), threading.Event()
    attempts: list[int] = []

    def sloppy_charge(uow: UnitOfWork, ctx: CommandContext) -> None:
        # Deliberately reads without a lock, lets another charge commit, then writes: the
        # version guard must refuse the stale write and the executor run it again.
        attempts.append(1)
        row = uow.users.get(user)
        assert row is not None
        if len(attempts) == 1:
            read_done.set()
            concurrent_done.wait(10)
        uow.ledger.record(marketplace.charge(row, 10, ctx.ids, ctx.clock()))

    worker = threading.Thread(target=lambda: run.transaction(sloppy_charge))
    worker.start()
    assert read_done.wait(10)
    charge(run, user, 100)
    concurrent_done.set()
    worker.join(10)

    assert len(attempts) == 2
    assert balances(container, user) == (1110, 0, 0)
    assert_ledger_agrees_with_balances(container)


def test_primary_reads_in_a_command_see_the_commands_own_writes(
    run: CommandExecutor, container: Container
) -> None:
    def sign_up_and_look(uow: UnitOfWork, ctx: CommandContext) -> Any:
        account = accounts.sign_up(
            uow, accounts.SignUp(f"{uuid.uuid4().hex}@x.io", "password1", "n"), ctx
        )
        session = getattr(uow, "session")  # noqa: B009 - the SQL unit of work's session
        return account.user_id, session.execute(
            text("SELECT @@server_id, COUNT(*) FROM users WHERE id = :id"), {"id": account.user_id}
        ).one()

    user_id, (server_id, count) = run.transaction(sign_up_and_look)[0]
    assert (server_id, count) == (1, 1)
