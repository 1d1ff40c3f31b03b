"""Vouchers, inspections, disputes and refunds under real concurrency, on the real primary
(issue 16, item 6): threads race through the command executor the API uses, each on its own
connection, and settlement runs as the scheduled function runs it. Each race has exactly one
outcome per order, and afterwards the ledger sums to zero and every balance equals its
postings (tests/reliability/ledger.py)."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from tests.reliability.images import uploaded_image
from tests.reliability.ledger import assert_ledger_agrees_with_balances

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container, bootstrap
from giftmarket.commands import accounts, catalog, orders, trading
from giftmarket.commands.executor import Command, CommandExecutor, Work
from giftmarket.commands.ports import CommandContention
from giftmarket.domain.errors import (
    DomainError,
    OrderNotConfirmable,
    OrderNotDisputable,
    OrderNotPending,
)
from giftmarket.domain.orders import DisputeDecision, InspectionResult, OrderStatus
from giftmarket.domain.settlement import KST
from giftmarket.domain.vouchers import InspectionMode
from giftmarket.jobs import settlement
from giftmarket.jobs.settlement import complete_due_orders, settle_business_date
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

T = TypeVar("T")
ADMINS = ("admin@giftmarket.local", "admin2@giftmarket.local")
CONTENDERS = 16
PRICE = 4_000
FEE_BPS = 500

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def container(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Container]:
    # Every racing thread holds its own connection to the primary.
    settings = make_settings(
        db_pool_size=10,
        db_max_overflow=CONTENDERS * 2 + 10,
        admin_emails=",".join(ADMINS),
        aws_endpoint_url=stack.config.localstack_url,
        aws_region=stack.config.region,
    )
    built = bootstrap(settings)
    yield built
    assert_ledger_agrees_with_balances(built)
    built.close()


@pytest.fixture
def run(container: Container) -> CommandExecutor:
    return container.command_executor


def executor(
    container: Container,
    *,
    inspection: InspectionMode = InspectionMode.AUTO,
    shifted: timedelta = timedelta(0),
) -> CommandExecutor:
    """The container's executor with the given inspection mode, its clock `shifted` (orders
    placed days ago, for the auto-complete)."""
    base = container.command_executor
    clock = base.context.clock
    context = dataclasses.replace(
        base.context,
        vouchers=dataclasses.replace(base.context.vouchers, inspection=inspection),
        clock=lambda: clock() + shifted,
    )
    return dataclasses.replace(base, context=context)


# --- arranging a market on the primary ------------------------------------------------


def call(run: CommandExecutor, command: Command[T]) -> T:
    return run.execute(command)[0]


def sign_up(run: CommandExecutor, email: str | None = None, points: int = 0) -> str:
    email = email or f"{uuid.uuid4().hex}@example.com"
    user_id = call(run, accounts.SignUp(email, "password123", "nick")).user_id
    if points:
        call(run, accounts.ChargePoints(user_id, points))
    return user_id


def admin(run: CommandExecutor, email: str = ADMINS[0]) -> str:
    try:
        return call(run, accounts.SignIn(email, "password123")).user_id
    except DomainError:
        return sign_up(run, email)


def new_product(run: CommandExecutor) -> str:
    command = catalog.RegisterProduct(admin(run), "Americano", "Starbucks", "coffee", 4_500)
    return call(run, command)


def barcode() -> str:
    return str(uuid.uuid4().int)[:20]


def expiry() -> date:
    return datetime.now(UTC).astimezone(KST).date() + timedelta(days=30)


def trade(
    run: CommandExecutor, container: Container, seller_id: str, buyer_id: str | None = None
) -> tuple[str, str]:
    """(order, buyer) of a buy-now of a fresh ask of `seller_id`'s at PRICE."""
    product_id = new_product(run)
    image_id = uploaded_image(run, container, seller_id)
    ask = trading.PlaceSellBid(seller_id, product_id, PRICE, image_id, barcode(), expiry())
    call(run, ask)
    buyer_id = buyer_id or sign_up(run, points=PRICE)
    order_id = call(run, trading.BuyNow(buyer_id, product_id, PRICE)).order_id
    return order_id, buyer_id


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


def status(container: Container, order_id: str) -> OrderStatus:
    o = tables.orders
    with container.database.writer.connect() as conn:
        value = conn.execute(select(o.c.status).where(o.c.id == order_id)).scalar_one()
    return OrderStatus(value)


def balances(container: Container, user_id: str) -> tuple[int, int, int]:
    u = tables.users
    with container.database.writer.connect() as conn:
        row = conn.execute(
            select(u.c.available_points, u.c.escrowed_points, u.c.pending_points).where(
                u.c.id == user_id
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def refund_entries(container: Container, order_id: str) -> int:
    """How many refund transactions the ledger holds for the order."""
    e = tables.ledger_entries
    with container.database.writer.connect() as conn:
        return int(
            conn.execute(
                select(func.count(func.distinct(e.c.txn_id))).where(
                    e.c.ref_type == "order", e.c.ref_id == order_id, e.c.reason == "refund"
                )
            ).scalar_one()
        )


def rerun_on_contention(job: Callable[[], T], runs: int = 5) -> T:
    """A job run again while it loses its races, as its schedule retries it: a locking read
    of many orders can deadlock with the commands changing them, and each batch is retried
    only a few times before the run gives up (and the next run finishes it)."""
    for _ in range(runs - 1):
        try:
            return job()
        except CommandContention:
            continue
    return job()


def kinds(outcomes: list[Any]) -> Counter[str]:
    return Counter(type(outcome).__name__ for outcome in outcomes)


# --- no double sale -------------------------------------------------------------------


def test_racing_listings_of_one_barcode_have_exactly_one_winner(
    run: CommandExecutor, container: Container
) -> None:
    # Half list it (on one product), half sell it now, each into a bid of its own product,
    # so that only the voucher is contended. The bids' products are neighbours in the
    # book's index: a sell-now holding its bid must not hide the next product's.
    product_id = new_product(run)
    bids: dict[int, tuple[str, str]] = {}
    for i in range(0, CONTENDERS, 2):
        bidder, bid_product = sign_up(run, points=PRICE), new_product(run)
        call(run, trading.PlaceBuyBid(bidder, bid_product, PRICE))
        bids[i] = bidder, bid_product
    sellers = [sign_up(run) for _ in range(CONTENDERS)]
    images = [uploaded_image(run, container, seller) for seller in sellers]
    code, expires_on = barcode(), expiry()

    def list_it(i: int) -> trading.Sale | trading.PlacedBid:
        if i % 2:
            ask = trading.PlaceSellBid(sellers[i], product_id, PRICE, images[i], code, expires_on)
            return call(run, ask)
        sale = trading.SellNow(sellers[i], bids[i][1], PRICE, images[i], code, expires_on)
        return call(run, sale)

    outcomes = race(CONTENDERS, list_it)

    (win,) = [o for o in outcomes if isinstance(o, trading.Sale | trading.PlacedBid)]
    assert kinds(outcomes)["VoucherDuplicate"] == CONTENDERS - 1, kinds(outcomes)
    sold = isinstance(win, trading.Sale)
    v = tables.voucher_registry
    listing = v.c.order_id if sold else v.c.sell_bid_id
    winner_id = win.order_id if isinstance(win, trading.Sale) else win.bid_id
    with container.database.writer.connect() as conn:
        (row,) = conn.execute(select(v.c.expires_on).where(listing == winner_id)).all()
    assert row.expires_on == expires_on
    # The losers' sell-nows took nothing: every bid but the winner's is still open, and
    # its buyer's points still escrowed.
    b = tables.buy_bids
    with container.database.writer.connect() as conn:
        open_bids = conn.execute(
            select(func.count()).where(
                b.c.product_id.in_([p for _, p in bids.values()]), b.c.status == "OPEN"
            )
        ).scalar_one()
    assert open_bids == len(bids) - sold
    escrowed = [balances(container, bidder)[1] for bidder, _ in bids.values()]
    assert sorted(escrowed) == [0] * sold + [PRICE] * (len(bids) - sold)
    assert_ledger_agrees_with_balances(container)


def test_a_cancel_racing_a_relisting_never_leaves_the_voucher_live_twice(
    run: CommandExecutor, container: Container
) -> None:
    product_id, seller = new_product(run), sign_up(run)
    code, expires_on = barcode(), expiry()
    image = uploaded_image(run, container, seller)
    ask_id = call(
        run, trading.PlaceSellBid(seller, product_id, PRICE, image, code, expires_on)
    ).bid_id
    others = [sign_up(run) for _ in range(CONTENDERS - 1)]
    images = [uploaded_image(run, container, other) for other in others]

    def act(i: int) -> object:
        if i == 0:
            return call(run, trading.CancelSellBid(seller, ask_id))
        command = trading.PlaceSellBid(
            others[i - 1], product_id, PRICE, images[i - 1], code, expires_on
        )
        return call(run, command)

    outcomes = race(CONTENDERS, act)

    assert outcomes[0] is None  # the cancel always succeeds
    relisted = [o for o in outcomes[1:] if not isinstance(o, BaseException)]
    assert len(relisted) <= 1, kinds(outcomes)
    assert set(kinds(outcomes[1:])) <= {"PlacedBid", "VoucherDuplicate"}
    s = tables.sell_bids
    with container.database.writer.connect() as conn:
        live = conn.execute(
            select(func.count()).where(s.c.product_id == product_id, s.c.status == "OPEN")
        ).scalar_one()
    assert live == len(relisted)


# --- confirm, dispute, decisions --------------------------------------------------------


def test_confirm_racing_dispute_has_exactly_one_outcome_per_order(
    run: CommandExecutor, container: Container
) -> None:
    seller = sign_up(run)
    trades = [trade(run, container, seller) for _ in range(CONTENDERS // 2)]

    def act(i: int) -> object:
        order_id, buyer_id = trades[i // 2]
        if i % 2:
            return call(run, trading.ConfirmOrder(buyer_id, order_id))
        return call(run, orders.OpenDispute(buyer_id, order_id, "the code was already used"))

    outcomes = race(len(trades) * 2, act)

    for n, (order_id, _) in enumerate(trades):
        disputed, confirmed = outcomes[2 * n], outcomes[2 * n + 1]
        final = status(container, order_id)
        if final is OrderStatus.DISPUTED:
            assert isinstance(confirmed, OrderNotConfirmable), confirmed
            assert not isinstance(disputed, BaseException)
        else:
            assert final is OrderStatus.COMPLETED
            assert isinstance(disputed, OrderNotDisputable), disputed
            assert not isinstance(confirmed, BaseException)
    assert balances(container, seller)[2] == PRICE * len(trades)
    assert_ledger_agrees_with_balances(container)


@pytest.mark.parametrize(
    "results",
    [
        (InspectionResult.PASS, InspectionResult.FAIL),
        (InspectionResult.FAIL, InspectionResult.FAIL),
    ],
    ids=["pass-vs-fail", "fail-vs-fail"],
)
def test_two_admins_deciding_one_inspection_make_one_decision(
    container: Container, results: tuple[InspectionResult, InspectionResult]
) -> None:
    manual = executor(container, inspection=InspectionMode.MANUAL)
    admins = [admin(manual, email) for email in ADMINS]
    seller = sign_up(manual)
    trades = [trade(manual, container, seller) for _ in range(CONTENDERS // 2)]
    assert {status(container, order_id) for order_id, _ in trades} == {OrderStatus.INSPECTING}

    def decide(i: int) -> object:
        order_id, _ = trades[i // 2]
        command = orders.DecideInspection(admins[i % 2], order_id, results[i % 2], "checked")
        return call(manual, command)

    outcomes = race(len(trades) * 2, decide)

    refunded = 0
    for n, (order_id, buyer_id) in enumerate(trades):
        pair = outcomes[2 * n : 2 * n + 2]
        assert kinds(pair)["OrderNotPending"] == 1, pair
        final = status(container, order_id)
        assert final in (OrderStatus.PAID, OrderStatus.REFUNDED)
        assert refund_entries(container, order_id) == (final is OrderStatus.REFUNDED)
        assert balances(container, buyer_id) == (
            (PRICE, 0, 0) if final is OrderStatus.REFUNDED else (0, 0, 0)
        )
        refunded += final is OrderStatus.REFUNDED
    assert balances(container, seller)[2] == PRICE * (len(trades) - refunded)
    assert_ledger_agrees_with_balances(container)


@pytest.mark.parametrize(
    "decisions",
    [
        (DisputeDecision.REFUND, DisputeDecision.REFUND),
        (DisputeDecision.REFUND, DisputeDecision.REJECT),
    ],
    ids=["refund-vs-refund", "refund-vs-reject"],
)
def test_two_admins_resolving_one_dispute_make_one_decision(
    run: CommandExecutor,
    container: Container,
    decisions: tuple[DisputeDecision, DisputeDecision],
) -> None:
    admins = [admin(run, email) for email in ADMINS]
    seller = sign_up(run)
    trades = [trade(run, container, seller) for _ in range(CONTENDERS // 2)]
    for order_id, buyer_id in trades:
        call(run, orders.OpenDispute(buyer_id, order_id, "the code was already used"))

    def resolve(i: int) -> object:
        order_id, _ = trades[i // 2]
        command = orders.ResolveDispute(admins[i % 2], order_id, decisions[i % 2], "checked")
        return call(run, command)

    outcomes = race(len(trades) * 2, resolve)

    refunded = 0
    for n, (order_id, buyer_id) in enumerate(trades):
        pair = outcomes[2 * n : 2 * n + 2]
        assert kinds(pair)["OrderNotPending"] == 1, pair
        final = status(container, order_id)
        assert final in (OrderStatus.REFUNDED, OrderStatus.COMPLETED)
        assert refund_entries(container, order_id) == (final is OrderStatus.REFUNDED)
        assert balances(container, buyer_id)[0] == (PRICE if final is OrderStatus.REFUNDED else 0)
        refunded += final is OrderStatus.REFUNDED
    assert balances(container, seller)[2] == PRICE * (len(trades) - refunded)
    assert_ledger_agrees_with_balances(container)


# --- disputes and refunds against settlement ------------------------------------------


def settlement_at(now: datetime) -> date:
    """The business date a run at `now` settles: the Korean day before."""
    return now.astimezone(KST).date() - timedelta(days=1)


def test_dispute_racing_settlement_never_pays_a_disputed_order(
    run: CommandExecutor, container: Container
) -> None:
    sellers = [sign_up(run) for _ in range(3)]
    trades = [(seller, *trade(run, container, seller)) for seller in sellers for _ in range(4)]
    # A run four days on: every order is due to complete, unless its dispute got in first.
    at = datetime.now(UTC) + timedelta(days=4)
    day = settlement_at(at)

    def act(i: int) -> object:
        if i == len(trades):
            # One order per completion batch, so the disputes interleave with the run.
            run_it = partial(
                settle_business_date,
                run,
                business_date=day,
                now=at,
                fee_bps=FEE_BPS,
                workers=2,
                completion_batch=1,
            )
            return rerun_on_contention(run_it)
        _, order_id, buyer_id = trades[i]
        return call(run, orders.OpenDispute(buyer_id, order_id, "the code was already used"))

    outcomes = race(len(trades) + 1, act)

    assert not isinstance(outcomes[-1], BaseException), outcomes[-1]
    pending: Counter[str] = Counter()
    for (seller, order_id, _), outcome in zip(trades, outcomes, strict=False):
        final = status(container, order_id)
        if final is OrderStatus.DISPUTED:
            assert not isinstance(outcome, BaseException), outcome
            pending[seller] += PRICE
        else:
            assert final is OrderStatus.SETTLED, final
            assert isinstance(outcome, OrderNotDisputable), outcome
    for seller in sellers:
        assert balances(container, seller)[2] == pending[seller]
    assert_ledger_agrees_with_balances(container)


class HeldSettlement:
    """Settlement's executor held before it lists the sellers to settle (after its
    completion phase), until `release`."""

    def __init__(self, run: CommandExecutor) -> None:
        self.held, self.go = threading.Event(), threading.Event()
        outer = self

        class Held(CommandExecutor):
            def transaction(self, work: Work[T]) -> Any:
                if isinstance(work, partial) and work.func is settlement._settleable_sellers:
                    outer.held.set()
                    assert outer.go.wait(60), "never released"
                return super().transaction(work)

        self.executor = Held(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})

    def release(self) -> None:
        self.go.set()


def test_a_dispute_opened_while_settlement_runs_is_not_paid(
    run: CommandExecutor, container: Container
) -> None:
    seller = sign_up(run)
    # Delivered 80 hours ago: the run completes and settles them. Delivered now: still
    # disputable while the run is in progress.
    old = [trade(executor(container, shifted=-timedelta(hours=80)), container, seller)]
    old += [trade(executor(container, shifted=-timedelta(hours=80)), container, seller)]
    fresh = [trade(run, container, seller) for _ in range(3)]
    at = datetime.now(UTC) + timedelta(days=1)
    held = HeldSettlement(run)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            settle_business_date,
            held.executor,
            business_date=settlement_at(at),
            now=at,
            fee_bps=FEE_BPS,
        )
        assert held.held.wait(60), running.exception(timeout=1)
        for order_id, buyer_id in old:
            with pytest.raises(OrderNotDisputable):
                call(run, orders.OpenDispute(buyer_id, order_id, "too late"))
        for order_id, buyer_id in fresh:
            call(run, orders.OpenDispute(buyer_id, order_id, "the code was already used"))
        held.release()
        report = running.result(timeout=120)

    assert report.orders_settled >= len(old)
    assert {status(container, order_id) for order_id, _ in old} == {OrderStatus.SETTLED}
    assert {status(container, order_id) for order_id, _ in fresh} == {OrderStatus.DISPUTED}
    assert balances(container, seller) == (
        len(old) * (PRICE - PRICE * FEE_BPS // 10_000),
        0,
        len(fresh) * PRICE,
    )
    assert_ledger_agrees_with_balances(container)


def test_refund_racing_the_auto_complete_has_exactly_one_outcome_per_order(
    run: CommandExecutor, container: Container
) -> None:
    seller = sign_up(run)
    trades = [trade(run, container, seller) for _ in range(CONTENDERS)]
    admin_id = admin(run)
    # Disputed already: the auto-complete must leave them to the refund.
    for order_id, buyer_id in trades[: CONTENDERS // 2]:
        call(run, orders.OpenDispute(buyer_id, order_id, "the code was already used"))
    at = datetime.now(UTC) + timedelta(days=4)

    def act(i: int) -> object:
        if i == len(trades):
            return rerun_on_contention(partial(complete_due_orders, run, now=at, batch=3))
        order_id, buyer_id = trades[i]
        if i >= CONTENDERS // 2:  # still PAID: a dispute and its refund race the completion
            call(run, orders.OpenDispute(buyer_id, order_id, "the code was already used"))
        command = orders.ResolveDispute(admin_id, order_id, DisputeDecision.REFUND, "refund")
        return call(run, command)

    outcomes = race(len(trades) + 1, act)

    assert not isinstance(outcomes[-1], BaseException), outcomes[-1]
    completed = 0
    for i, (order_id, buyer_id) in enumerate(trades):
        final = status(container, order_id)
        if i < CONTENDERS // 2:
            assert final is OrderStatus.REFUNDED, (i, final, outcomes[i])
        if final is OrderStatus.REFUNDED:
            assert not isinstance(outcomes[i], BaseException), outcomes[i]
            assert balances(container, buyer_id) == (PRICE, 0, 0)
            assert refund_entries(container, order_id) == 1
        else:
            assert final is OrderStatus.COMPLETED, final
            assert isinstance(outcomes[i], OrderNotDisputable), outcomes[i]
            assert balances(container, buyer_id) == (0, 0, 0)
            assert refund_entries(container, order_id) == 0
            completed += 1
    assert isinstance(outcomes[-1], int), outcomes[-1]
    assert balances(container, seller)[2] == PRICE * completed
    assert_ledger_agrees_with_balances(container)


def test_failed_inspections_racing_the_auto_complete_are_refunded_and_never_completed(
    container: Container,
) -> None:
    manual = executor(container, inspection=InspectionMode.MANUAL)
    admin_id = admin(manual)
    seller = sign_up(manual)
    waiting = [trade(manual, container, seller) for _ in range(CONTENDERS // 2)]
    run_auto = executor(container)
    delivered = [trade(run_auto, container, seller) for _ in range(4)]
    at = datetime.now(UTC) + timedelta(days=4)

    def act(i: int) -> object:
        if i == len(waiting):
            return rerun_on_contention(partial(complete_due_orders, run_auto, now=at, batch=2))
        order_id, _ = waiting[i]
        command = orders.DecideInspection(admin_id, order_id, InspectionResult.FAIL, "used")
        return call(manual, command)

    outcomes = race(len(waiting) + 1, act)

    assert isinstance(outcomes[-1], int), outcomes[-1]
    assert {status(container, order_id) for order_id, _ in waiting} == {OrderStatus.REFUNDED}
    assert {status(container, order_id) for order_id, _ in delivered} == {OrderStatus.COMPLETED}
    assert balances(container, seller)[2] == PRICE * len(delivered)
    assert_ledger_agrees_with_balances(container)


def test_a_refused_decision_never_touches_the_money(
    run: CommandExecutor, container: Container
) -> None:
    seller = sign_up(run)
    order_id, buyer_id = trade(run, container, seller)
    call(run, trading.ConfirmOrder(buyer_id, order_id))
    before = balances(container, buyer_id), balances(container, seller)

    with pytest.raises(OrderNotPending):
        call(run, orders.DecideInspection(admin(run), order_id, InspectionResult.FAIL, "used"))
    with pytest.raises(OrderNotPending):
        call(run, orders.ResolveDispute(admin(run), order_id, DisputeDecision.REFUND))

    assert (balances(container, buyer_id), balances(container, seller)) == before
    assert refund_entries(container, order_id) == 0
