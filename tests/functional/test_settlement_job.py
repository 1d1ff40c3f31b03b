"""The settlement job through `Container.settle`, wired with the in-memory fakes: what it
settles, what it leaves, and that running it again (or after it stopped half way) changes
nothing that a clean run would not have done."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.support.fakes import (
    ADMIN_EMAIL,
    FakeClock,
    FakeImageStore,
    FakeStore,
    FakeUnitOfWork,
    fresh_barcode,
    make_context,
    valid_until,
)
from typer.testing import CliRunner

from giftmarket import cli
from giftmarket.bootstrap import Container, set_container
from giftmarket.commands import accounts, catalog, trading
from giftmarket.commands.executor import Command
from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain import events, ledger
from giftmarket.domain.errors import InvalidField
from giftmarket.domain.images import s3_key_for
from giftmarket.domain.orders import OrderStatus
from giftmarket.domain.settlement import KST, Settlement
from giftmarket.domain.users import Balances, User
from giftmarket.jobs.settlement import (
    Outcome,
    SellerResult,
    SettlementIncomplete,
    seller_lanes,
    settle,
    settle_business_date,
)
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker

T = TypeVar("T")
D = date(2025, 3, 14)
PASSWORD = "password123"


def kst(day: date, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second, micro), tzinfo=KST)


RUN_AT = kst(D + timedelta(days=1), 0, 10)  # the scheduled run that settles D


class Stop(Exception):
    """The fault a test injects into a run."""


@dataclass
class World:
    store: FakeStore
    clock: FakeClock
    images: FakeImageStore
    container: Container
    product_id: str = ""
    buyer_id: str = ""

    @classmethod
    def new(cls) -> World:
        store, clock, images = FakeStore(), FakeClock(kst(D - timedelta(days=10))), FakeImageStore()
        container = Container(
            # One seller at a time: the fakes are not made for threads.
            Settings(environment="test", settlement_workers=1),
            unit_of_work=lambda: FakeUnitOfWork(store),
            command_context=make_context(clock=clock, images=images),
        )
        world = cls(store, clock, images, container)
        admin = world.sign_up(ADMIN_EMAIL)
        command = catalog.RegisterProduct(admin, "Americano", "Starbucks", "coffee", 50_000)
        world.product_id = world.run(command)
        world.buyer_id = world.sign_up(points=10**9)
        return world

    def run(self, command: Command[T]) -> T:
        return self.container.command_executor.execute(command)[0]

    def read(self, query: Callable[[UnitOfWork], T]) -> T:
        with FakeUnitOfWork(self.store) as uow:
            return query(uow)

    def sign_up(self, email: str | None = None, *, points: int = 0) -> str:
        email = email or f"user{len(self.store.rows['users'])}@example.com"
        command = accounts.SignUp(email, PASSWORD, "nick")
        user_id = self.run(command).user_id
        if points:
            charge = accounts.ChargePoints(user_id, points)
            self.run(charge)
        return user_id

    def sale(
        self, seller_id: str, price: int, paid_at: datetime, confirmed_at: datetime | None
    ) -> str:
        """An order of `seller_id`'s, paid at `paid_at` and confirmed then, if at all."""
        self.clock.now = paid_at
        image = catalog.RequestImageUpload(seller_id, "image/png")
        image_id = self.run(image).image_id
        self.images.put(s3_key_for(seller_id, image_id))
        voucher = fresh_barcode(), valid_until(paid_at)
        ask = trading.PlaceSellBid(seller_id, self.product_id, price, image_id, *voucher)
        self.run(ask)
        buy = trading.BuyNow(self.buyer_id, self.product_id, price)
        order_id = self.run(buy).order_id
        if confirmed_at is not None:
            self.clock.now = confirmed_at
            confirm = trading.ConfirmOrder(self.buyer_id, order_id)
            self.run(confirm)
        return order_id

    def settle(self, day: date | None = D, now: datetime = RUN_AT) -> Any:
        return settle(self.container.command_executor, self.container.settings, day, now)

    def order_status(self, order_id: str) -> OrderStatus:
        return self.store.rows["orders"][order_id].status  # type: ignore[no-any-return]

    def user(self, user_id: str) -> User:
        return self.store.rows["users"][user_id]  # type: ignore[no-any-return]

    def settlements(self) -> dict[tuple[str, date], Settlement]:
        rows = self.store.rows["settlements"].values()
        return {(s.seller_id, s.business_date): s for s in rows}

    def events_of(self, event_type: type[events.DomainEvent]) -> list[Any]:
        return [e for e in self.store.events if isinstance(e, event_type)]


@pytest.fixture
def world() -> World:
    return World.new()


def test_each_seller_gets_one_settlement_with_the_fee_floored_per_order(world: World) -> None:
    sally, sam = world.sign_up(), world.sign_up()
    world.sale(sally, 10_000, kst(D, 9), kst(D, 12))
    world.sale(sally, 4_999, kst(D, 9), kst(D, 13))
    world.sale(sally, 19, kst(D, 9), kst(D, 14))
    world.sale(sam, 39, kst(D, 10), kst(D, 11))

    report = world.settle()

    settlements = world.settlements()
    assert set(settlements) == {(sally, D), (sam, D)}
    mine = settlements[(sally, D)]
    # 5% of 10_000, 4_999 and 19, each floored: 500 + 249 + 0 (not floor(751.9) = 751).
    assert (mine.order_count, mine.gross, mine.fee, mine.net) == (3, 15_018, 749, 14_269)
    theirs = settlements[(sam, D)]
    assert (theirs.order_count, theirs.gross, theirs.fee, theirs.net) == (1, 39, 1, 38)
    assert report.as_dict() | {"elapsed_seconds": 0} == {
        "business_date": "2025-03-14",
        "orders_completed": 0,
        "sellers_settled": 2,
        "orders_settled": 4,
        "sellers_deferred": 0,
        "sellers_failed": 0,
        "failed_sellers": {},
        "gross": 15_057,
        "fee": 750,
        "net": 14_307,
        "elapsed_seconds": 0,
    }


def test_settling_moves_pending_to_available_and_the_fee_to_the_platform(world: World) -> None:
    sally = world.sign_up()
    orders = [world.sale(sally, price, kst(D, 9), kst(D, 12)) for price in (10_000, 6_000)]
    assert world.user(sally).balances == Balances(0, 0, 16_000)

    world.settle()

    assert world.user(sally).balances == Balances(available=15_200, escrowed=0, pending=0)
    sums = ledger.balances(world.store.ledger)
    assert sums[ledger.FEES] == 800
    assert (sums[ledger.available(sally)], sums[ledger.pending(sally)]) == (15_200, 0)
    assert all(world.order_status(o) is OrderStatus.SETTLED for o in orders)
    settlement = world.settlements()[(sally, D)]
    [payout] = [t for t in world.store.ledger if t.reason is ledger.LedgerReason.SETTLEMENT]
    assert (payout.ref_type, payout.ref_id) == (ledger.RefType.SETTLEMENT, settlement.id)


def test_the_outbox_carries_the_settlement_each_order_and_the_sellers_balances(
    world: World,
) -> None:
    sally = world.sign_up()
    orders = [world.sale(sally, 5_000, kst(D, 9), kst(D, 12)) for _ in range(2)]

    world.settle()

    settlement = world.settlements()[(sally, D)]
    [completed] = world.events_of(events.SettlementCompleted)
    assert (completed.seller_id, completed.business_date, completed.gross, completed.fee) == (
        sally,
        D,
        10_000,
        500,
    )
    # The orders are announced by the settlement, not one event each.
    assert world.events_of(events.OrderSettled) == []
    [settled] = world.events_of(events.OrdersSettled)
    assert (settled.aggregate_id, settled.settlement_id) == (settlement.id, settlement.id)
    assert (settled.seller_id, settled.settled_at) == (sally, RUN_AT)
    assert sorted(settled.order_ids) == sorted(orders)
    assert settled.completed_at == (kst(D, 12), kst(D, 12))
    versions = {o: world.store.rows["orders"][o].version for o in orders}
    assert dict(zip(settled.order_ids, settled.order_versions, strict=True)) == versions
    balances = [e for e in world.events_of(events.UserBalancesChanged) if e.reason == "settlement"]
    assert [(b.user_id, b.available_points, b.pending_points) for b in balances] == [
        (sally, 9_500, 0)
    ]


def test_a_second_run_for_the_same_date_changes_nothing(world: World) -> None:
    sally, sam = world.sign_up(), world.sign_up()
    world.sale(sally, 10_000, kst(D, 9), kst(D, 12))
    world.sale(sam, 20_000, kst(D - timedelta(days=5), 9), None)  # auto-completes
    first = world.settle()
    before = world.store.state()

    again = world.settle()

    assert world.store.state() == before
    assert (first.sellers_settled, first.orders_completed) == (2, 1)
    assert (again.sellers_settled, again.orders_settled, again.orders_completed) == (0, 0, 0)
    assert (again.gross, again.fee, again.net, again.sellers_deferred) == (0, 0, 0, 0)


def test_orders_paid_72_hours_ago_are_completed_then_settled_but_younger_ones_wait(
    world: World,
) -> None:
    sally = world.sign_up()
    within_d = world.sale(sally, 10_000, kst(D - timedelta(days=3), 0, 10), None)
    due_at_run = world.sale(sally, 8_000, kst(D - timedelta(days=2), 0, 10), None)
    young = world.sale(sally, 7_000, kst(D - timedelta(days=2), 0, 10, 1), None)

    report = world.settle()

    assert report.orders_completed == 2
    assert world.order_status(within_d) is OrderStatus.SETTLED
    # Its 72 hours ran out at the run, after the end of D: the next date settles it.
    assert world.order_status(due_at_run) is OrderStatus.COMPLETED
    assert world.order_status(young) is OrderStatus.PAID
    completions = {e.order_id: e for e in world.events_of(events.OrderCompleted)}
    assert set(completions) == {within_d, due_at_run}
    # Completed when its 72 hours ran out (within D), not when the job noticed.
    assert completions[within_d].automatically
    assert completions[within_d].completed_at == kst(D, 0, 10)
    assert world.settlements()[(sally, D)].gross == 10_000


def test_an_order_completed_at_korean_midnight_waits_for_the_next_date(world: World) -> None:
    sally = world.sign_up()
    last = world.sale(sally, 3_000, kst(D, 9), kst(D, 23, 59, 59, 999_999))
    next_day = world.sale(sally, 4_000, kst(D, 9), kst(D + timedelta(days=1)))

    world.settle(D, now=kst(D + timedelta(days=1), 0, 10))

    assert world.order_status(last) is OrderStatus.SETTLED
    assert world.order_status(next_day) is OrderStatus.COMPLETED
    world.settle(D + timedelta(days=1), now=kst(D + timedelta(days=2), 0, 10))
    assert world.order_status(next_day) is OrderStatus.SETTLED
    settled = world.settlements()
    assert (settled[(sally, D)].gross, settled[(sally, D + timedelta(days=1))].gross) == (
        3_000,
        4_000,
    )


def test_orders_found_for_a_date_already_settled_go_to_the_next_date(world: World) -> None:
    sally = world.sign_up()
    world.sale(sally, 10_000, kst(D, 9), kst(D, 12))
    world.settle()
    # A confirmation stamped within D but arriving after D's settlement (a late commit).
    late = world.sale(sally, 2_000, kst(D, 9), kst(D, 23, 59))
    before = world.store.state()

    rerun = world.settle()

    assert (rerun.sellers_deferred, rerun.sellers_settled) == (1, 0)
    assert world.store.state() == before
    assert world.order_status(late) is OrderStatus.COMPLETED
    world.settle(D + timedelta(days=1), now=RUN_AT + timedelta(days=1))
    assert world.order_status(late) is OrderStatus.SETTLED
    assert world.settlements()[(sally, D + timedelta(days=1))].gross == 2_000


def market_of_five_sellers(world: World) -> list[str]:
    sellers = [world.sign_up() for _ in range(5)]
    for n, seller in enumerate(sellers):
        for price in range(1_000 + n, 1_000 + n + 3 * 777, 777):
            world.sale(seller, price, kst(D, 9), kst(D, 10 + n))
    return sellers


def outcome(world: World, sellers: list[str]) -> list[tuple[object, ...]]:
    """Per seller, in order: what a clean run leaves, free of ids and times."""
    rows = world.settlements()
    result: list[tuple[object, ...]] = []
    for seller in sellers:
        s = rows[(seller, D)]
        result.append((s.order_count, s.gross, s.fee, s.net, world.user(seller).balances))
    sums = ledger.balances(world.store.ledger)
    result.append((sums[ledger.FEES], len(world.store.ledger), len(world.store.outbox)))
    return result


def test_a_run_stopped_after_two_sellers_is_finished_by_the_next_run(world: World) -> None:
    clean = World.new()
    clean_sellers = market_of_five_sellers(clean)
    clean.settle()
    sellers = market_of_five_sellers(world)
    seen: list[SellerResult] = []

    def stop_after_two(result: SellerResult) -> None:
        seen.append(result)
        if len(seen) == 2:
            raise Stop()

    with pytest.raises(Stop):
        settle_business_date(
            world.container.command_executor,
            business_date=D,
            now=RUN_AT,
            fee_bps=500,
            after_seller=stop_after_two,
        )
    assert len(world.settlements()) == 2
    resumed = world.settle()

    assert resumed.sellers_settled == 3
    assert outcome(world, sellers) == outcome(clean, clean_sellers)


@pytest.mark.parametrize(("sellers", "workers"), [(0, 4), (1, 4), (7, 3), (8, 4), (5, 1)])
def test_the_sellers_are_cut_into_one_contiguous_run_per_worker(sellers: int, workers: int) -> None:
    ids = [f"s{n:02d}" for n in range(sellers)]
    lanes = seller_lanes(ids, workers)
    assert [seller for lane in lanes for seller in lane] == ids
    assert len(lanes) <= workers and all(lanes)


def test_with_several_workers_each_lane_settles_its_sellers_one_after_the_other(
    world: World,
) -> None:
    sellers = sorted(market_of_five_sellers(world) + market_of_five_sellers(world))
    finished: list[str] = []

    report = settle_business_date(
        world.container.command_executor,
        business_date=D,
        now=RUN_AT,
        fee_bps=500,
        workers=3,
        after_seller=lambda result: finished.append(result.seller_id),
    )

    assert report.sellers_settled == len(sellers) == len(finished)
    for lane in seller_lanes(sellers, 3):
        assert [seller for seller in finished if seller in lane] == lane


def test_a_seller_the_domain_refuses_is_reported_and_the_others_are_still_settled(
    world: World,
) -> None:
    sally, sam = world.sign_up(), world.sign_up()
    world.sale(sally, 10_000, kst(D, 9), kst(D, 12))
    world.sale(sam, 8_000, kst(D, 9), kst(D, 12))
    # Balances that disagree with the orders: pending no longer covers the gross.
    broken = world.store.rows["users"][sally]
    world.store.rows["users"][sally] = dataclasses.replace(broken, pending_points=5)

    report = world.settle()

    assert list(report.failed_sellers) == [sally]
    assert "pending points are 5" in report.failed_sellers[sally]
    assert report.failed and report.sellers_settled == 1
    assert set(world.settlements()) == {(sam, D)}


def test_a_business_date_that_has_not_ended_in_korea_is_refused(world: World) -> None:
    sally = world.sign_up()
    world.sale(sally, 10_000, kst(D, 9), kst(D, 12))
    before = world.store.state()

    with pytest.raises(InvalidField, match="has not ended"):
        world.settle(D, now=kst(D, 23, 59, 59))

    assert world.store.state() == before


def test_without_a_date_the_run_settles_the_day_that_just_ended_in_korea(world: World) -> None:
    sally = world.sign_up()
    world.sale(sally, 10_000, kst(D, 9), kst(D, 12))

    report = world.settle(None, now=RUN_AT)

    assert report.business_date == D
    assert set(world.settlements()) == {(sally, D)}


def test_each_settled_seller_is_reported_to_the_hook_after_its_commit(world: World) -> None:
    sellers = sorted(world.sign_up() for _ in range(3))
    for seller in sellers:
        world.sale(seller, 1_000, kst(D, 9), kst(D, 12))
    committed_before_hook: list[bool] = []

    def hook(result: SellerResult) -> None:
        committed_before_hook.append((result.seller_id, D) in world.settlements())
        assert result.outcome is Outcome.SETTLED

    settle_business_date(
        world.container.command_executor,
        business_date=D,
        now=RUN_AT,
        fee_bps=500,
        after_seller=hook,
    )
    assert committed_before_hook == [True, True, True]


# --- the Lambda handler with the sample events, and the CLI ----------------------------------

EVENTS = Path(__file__).resolve().parents[2] / "functions" / "settlement" / "events"


def sample_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def invoke(world: World, event: dict[str, Any]) -> Any:
    set_container(world.container)
    try:
        return LocalInvoker().invoke_event_raw("SettlementFunction", event)
    finally:
        set_container(None)


@pytest.fixture
def sample_day_sale(world: World) -> tuple[date, str]:
    """A sale completed on the sample events' business date, and the clock at 00:10 KST
    the day after (the schedule's fire time), as the scheduled run sees it."""
    day = date.fromisoformat(sample_event("rerun.json")["business_date"])
    order_id = world.sale(world.sign_up(), 10_000, kst(day, 9), kst(day, 12))
    world.clock.now = kst(day + timedelta(days=1), 0, 10)
    return day, order_id


@pytest.mark.parametrize("name", ["scheduled.json", "rerun.json"])
def test_both_sample_events_settle_the_day_that_just_ended(
    world: World, sample_day_sale: tuple[date, str], name: str
) -> None:
    day, order_id = sample_day_sale

    answer = invoke(world, sample_event(name))

    assert answer["business_date"] == day.isoformat()
    assert (answer["sellers_settled"], answer["orders_settled"], answer["fee"]) == (1, 1, 500)
    assert world.order_status(order_id) is OrderStatus.SETTLED


def test_the_scheduled_date_follows_the_fire_time_not_the_retry_time(
    world: World, sample_day_sale: tuple[date, str]
) -> None:
    day, _ = sample_day_sale
    world.clock.now += timedelta(days=1, hours=3)  # an asynchronous retry, a day late

    answer = invoke(world, sample_event("scheduled.json"))

    assert answer["business_date"] == day.isoformat()


def test_a_rerun_date_may_come_under_detail_and_a_repeat_changes_nothing(
    world: World, sample_day_sale: tuple[date, str]
) -> None:
    day, _ = sample_day_sale
    invoke(world, sample_event("rerun.json"))
    before = world.store.state()

    answer = invoke(world, {"detail": {"business_date": day.isoformat()}})

    assert (answer["business_date"], answer["sellers_settled"]) == (day.isoformat(), 0)
    assert world.store.state() == before


@pytest.mark.parametrize(
    "event",
    [
        {"business_date": "2026-13-01"},
        {"business_date": "21/11/2026"},
        {"business_date": 20261121},
        {"detail": {"business_date": ""}},
        {"time": "yesterday"},
    ],
)
def test_an_event_with_a_bad_date_is_refused_with_a_clear_error(
    world: World, event: dict[str, Any]
) -> None:
    before = world.store.state()

    with pytest.raises(InvalidField) as refused:
        invoke(world, event)

    assert refused.value.field in ("business_date", "time")
    assert world.store.state() == before


def test_a_run_that_left_a_seller_unsettled_fails_the_invocation_for_a_retry(
    world: World, sample_day_sale: tuple[date, str]
) -> None:
    day, order_id = sample_day_sale
    seller = world.store.rows["orders"][order_id].seller_id
    broken = world.store.rows["users"][seller]
    world.store.rows["users"][seller] = dataclasses.replace(broken, pending_points=0)

    with pytest.raises(SettlementIncomplete, match=seller):
        invoke(world, sample_event("rerun.json"))


def test_cli_settle_prints_the_report_of_the_given_date(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sally = world.sign_up()
    world.sale(sally, 10_000, kst(D, 9), kst(D, 12))
    world.clock.now = RUN_AT
    monkeypatch.setattr(cli, "bootstrap", lambda: world.container)

    result = CliRunner().invoke(cli.app, ["jobs", "settle", "--date", D.isoformat()])

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["business_date"], report["gross"], report["net"]) == (
        "2025-03-14",
        10_000,
        9_500,
    )
    assert set(world.settlements()) == {(sally, D)}


@pytest.mark.parametrize("given", ["2025-02-30", "tomorrow", "2025-3-14"])
def test_cli_settle_with_a_bad_date_exits_2_and_says_why(
    world: World, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setattr(cli, "bootstrap", lambda: world.container)

    result = CliRunner().invoke(cli.app, ["jobs", "settle", "--date", given])

    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output
    assert world.settlements() == {}


def test_cli_settle_refuses_a_date_that_has_not_ended_and_exits_2(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.clock.now = kst(D, 18)
    monkeypatch.setattr(cli, "bootstrap", lambda: world.container)

    result = CliRunner().invoke(cli.app, ["jobs", "settle", "--date", D.isoformat()])

    assert result.exit_code == 2
    assert "has not ended yet" in result.output
