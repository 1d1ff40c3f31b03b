"""Daily settlement on the real primary: money moved exactly once, reruns and crashes that
change nothing a clean run would not, buyers trading meanwhile, and the read side showing
the result.

The database is shared by the whole session. Each test trades on business dates of its own
in 2019, going back in time test after test, so what one test leaves unsettled (an order
completed after its date) is later than any date a following test settles. Sales are made
by the real commands, with a clock set to those dates and S3 replaced by a fake (what this
tests is the money, not the upload).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import threading
import time as clock_time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from tests.support.fakes import FakeClock, FakeImageStore
from tests.support.outbox import outbox_envelopes
from tests.support.settlement_market import (
    EVENTS,
    SHAPE,
    Market,
    assert_money_is_conserved,
    balances,
    fees_of,
    kst,
    ledger_sums,
    new_market,
    order_statuses,
    rows,
    run_at,
    scalar,
    settle,
    settlement_container,
    settlement_of,
    start_from_empty_schema,
    table_counts,
)
from tests.support.stack import sqs_of

from giftmarket.adapters import outbox, repositories, tables
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import trading
from giftmarket.commands.executor import CommandExecutor
from giftmarket.commands.ports import Committed
from giftmarket.domain import marketplace
from giftmarket.domain.events import OrderSettled, event_class
from giftmarket.domain.ids import new_id
from giftmarket.domain.settlement import business_day_bounds
from giftmarket.http.auth import TokenService
from giftmarket.jobs.settlement import SettlementReport, settle_seller
from giftmarket.messages import EventEnvelope
from giftmarket.projections.projector import operations
from giftmarket.queries import account, trades
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.stack import Stack


@pytest.fixture(scope="module", autouse=True)
def empty_schema(stack: Stack) -> None:
    start_from_empty_schema(stack)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def images() -> FakeImageStore:
    return FakeImageStore()


@pytest.fixture(scope="module")
def container(
    make_settings: Callable[..., Settings], clock: FakeClock, images: FakeImageStore
) -> Iterator[Container]:
    yield from settlement_container(make_settings, clock, images)


@pytest.fixture
def market(container: Container, clock: FakeClock, images: FakeImageStore) -> Market:
    return new_market(container, clock, images)


# -- what one run does ------------------------------------------------------------------------


def test_settlement_moves_pending_to_available_and_the_fee_to_the_platform(
    container: Container, market: Market
) -> None:
    market.with_sales(SHAPE[:2])
    sally, sam = market.sellers
    before = {seller: balances(container, seller) for seller in market.sellers}

    report = settle(container, market.day)

    assert (report.sellers_settled, report.orders_settled) == (2, 4)
    mine, theirs = (
        settlement_of(container, sally, market.day),
        settlement_of(container, sam, market.day),
    )
    # 5% of 10_000, 4_999 and 19, each floored: 500 + 249 + 0.
    assert (mine.order_count, mine.gross, mine.fee, mine.net) == (3, 15_018, 749, 14_269)
    assert (theirs.order_count, theirs.gross, theirs.fee, theirs.net) == (1, 7_777, 388, 7_389)
    assert (report.gross, report.fee, report.net) == (22_795, 1_137, 21_658)
    available, escrowed, pending = before[sally]
    assert balances(container, sally) == (available + 14_269, escrowed, pending - 15_018)
    assert ledger_sums(container, sally) == {"available": 14_269, "pending": 0}
    assert fees_of(container, [mine.id, theirs.id]) == 1_137
    assert set(order_statuses(container, market.orders[sally]).values()) == {"SETTLED"}
    o = tables.orders
    assert {r.settlement_id for r in rows(container, select(o).where(o.c.seller_id == sally))} == {
        mine.id
    }
    assert_money_is_conserved(container)


def test_the_outbox_carries_the_settlement_every_order_and_the_sellers_balances(
    container: Container, market: Market
) -> None:
    market.with_sales(SHAPE[:1])
    [sally] = market.sellers

    settle(container, market.day)

    settlement = settlement_of(container, sally, market.day)
    written = outbox_envelopes(
        container.database,
        tables.outbox.c.aggregate_id.in_([settlement.id, sally, *market.orders[sally]]),
        tables.outbox.c.event_type.in_(
            ["SettlementCompleted", "OrderSettled", "OrdersSettled", "UserBalancesChanged"]
        ),
    )
    by_type: dict[str, list[EventEnvelope]] = {}
    for envelope in written:
        by_type.setdefault(envelope.event_type, []).append(envelope)
    [completed] = by_type["SettlementCompleted"]
    assert completed.payload | {"occurred_at": None} == {
        "aggregate_id": settlement.id,
        "version": 1,
        "occurred_at": None,
        "settlement_id": settlement.id,
        "seller_id": sally,
        "business_date": market.day.isoformat(),
        "order_count": 3,
        "gross": 15_018,
        "fee": 749,
        "net": 14_269,
    }
    # The orders, announced by the settlement: one event for these three, none of their own.
    assert "OrderSettled" not in by_type
    [settled] = by_type["OrdersSettled"]
    assert (settled.aggregate_id, settled.payload["settlement_id"]) == (settlement.id,) * 2
    assert sorted(settled.payload["order_ids"]) == sorted(market.orders[sally])
    assert settled.payload["order_versions"] == [3, 3, 3]
    assert all(at is not None for at in settled.payload["completed_at"])
    [balances_changed] = [
        e for e in by_type["UserBalancesChanged"] if e.payload["reason"] == "settlement"
    ]
    assert balances_changed.payload["pending_points"] == 0


def _row_id(row: dict[str, Any]) -> str:
    return str(row["id"])


def _event_key(row: dict[str, Any]) -> tuple[str, str]:
    return row["event_type"], row["aggregate_id"]


def fixed_ids(*values: str) -> Callable[[], str]:
    given = iter(values)
    return lambda: next(given)


def domain_rule(
    container: Container, seller: str, day: date, now: datetime, ids: Callable[[], str]
) -> dict[str, Any]:
    """What the aggregates' path (`marketplace.settle_seller`, each order's `settle`) would
    write for the seller's orders, as rows; rolled back."""
    orders, users, settlements = (
        repositories.SqlOrderRepository.mapper,
        repositories.SqlUserRepository.mapper,
        repositories.SqlSettlementRepository.mapper,
    )
    with container.unit_of_work() as uow:
        locked = uow.orders.lock_settleable(seller, business_day_bounds(day)[1])
        user = uow.users.get(seller, lock=True)
        assert user is not None
        fee_bps = container.settings.seller_fee_bps
        settlement, payout = marketplace.settle_seller(user, locked, fee_bps, day, ids, now)
        aggregates: list[Any] = [*locked, user, settlement]
        return {
            "orders": sorted((orders.to_row(order) for order in locked), key=_row_id),
            "user": users.to_row(user),
            "settlement": settlements.to_row(settlement),
            "payout": payout,
            "events": sorted(
                (row | {"id": None} for a in aggregates for row in event_rows(a.events)),
                key=_event_key,
            ),
        }


def event_rows(events: list[Any]) -> list[dict[str, Any]]:
    return [outbox.outbox_row(event, "") for event in events]


def written(container: Container, seller: str, committed: Committed) -> dict[str, Any]:
    o, out, u, s = tables.orders, tables.outbox, tables.users, tables.settlements
    order_columns = [c for c in o.c if c.computed is None]  # the mapper writes no others
    user_row = rows(container, select(u).where(u.c.id == seller))[0]
    [settlement_row] = rows(container, select(s).where(s.c.seller_id == seller))
    return {
        "orders": sorted(
            (
                dict(r._mapping)
                for r in rows(container, select(*order_columns).where(o.c.seller_id == seller))
            ),
            key=_row_id,
        ),
        "user": dict(user_row._mapping),
        "settlement": dict(settlement_row._mapping),
        "events": sorted(
            (
                dict(r._mapping) | {"id": None}
                for r in rows(
                    container,
                    select(
                        *[c for c in out.c if c.name not in ("published_at", "publish_attempts")]
                    ).where(out.c.id.in_(committed.outbox_ids)),
                )
            ),
            key=_event_key,
        ),
    }


def as_events(rows: list[dict[str, Any]]) -> list[Any]:
    return [
        event_class(row["event_type"]).from_payload(row["payload"])  # type: ignore[union-attr]
        for row in rows
    ]


def settled_order(e: Any) -> Any:
    """What an OrderSettled says of its order, or an OrdersSettled of each of its orders."""
    if isinstance(e, OrderSettled):
        return (e.order_id, e.version, e.product_id, e.buyer_id, e.seller_id, e.settlement_id,
                e.completed_at, e.settled_at)  # fmt: skip
    return sorted(
        (order_id, version, product_id, buyer_id, e.seller_id, e.settlement_id, at, e.settled_at)
        for order_id, version, product_id, buyer_id, at in e.each_order()
    )


def projected(events: list[Any]) -> list[Any]:
    """The read-model operations the projector makes of `events`, by order."""
    return sorted((op for e in events for op in operations(e)), key=lambda op: op["id"])


@pytest.mark.parametrize("seed", [18, 1018])
def test_the_set_based_settlement_writes_what_the_domain_rule_gives(
    container: Container, market: Market, seed: int
) -> None:
    """Random prices (the fee floored per order) and completion instants with and without
    microseconds, settled at an instant with and without: the SQL statements write exactly
    the orders, events, settlement, balances and postings the Python rule gives."""
    rng = random.Random(seed)
    prices = [rng.choice([1, 19, 20, 39, 61, 199, 9_999, rng.randint(1, 60_000)]) for _ in range(9)]
    market.with_sales([prices])
    [seller] = market.sellers
    start, _ = business_day_bounds(market.day)
    o = tables.orders
    with container.database.writer.begin() as conn:
        for order_id in market.orders[seller]:
            completed = start + timedelta(seconds=rng.randrange(86_400))
            completed += timedelta(microseconds=rng.choice([0, rng.randrange(1, 10**6)]))
            conn.execute(
                update(o)
                .where(o.c.id == order_id)
                .values(completed_at=completed.astimezone(UTC).replace(tzinfo=None))
            )
    now = run_at(market.day) + timedelta(microseconds=rng.choice([0, rng.randrange(1, 10**6)]))
    settlement_id, payout_id = new_id(), new_id()

    expected = domain_rule(container, seller, market.day, now, fixed_ids(settlement_id, payout_id))
    context = dataclasses.replace(
        container.command_context, ids=fixed_ids(settlement_id, payout_id)
    )
    result, committed = CommandExecutor(container.unit_of_work, context).transaction(
        partial(
            settle_seller,
            seller_id=seller,
            business_date=market.day,
            fee_bps=container.settings.seller_fee_bps,
            now=now,
        )
    )

    assert result.settlement is not None and result.settlement.id == settlement_id
    actual = written(container, seller, committed)
    assert actual["orders"] == expected["orders"]
    # The same events, but the orders' OrderSettled each: the settlement announces those,
    # saying of each order what its own event says, so the read models end the same.
    one_each = [row for row in expected["events"] if row["event_type"] == "OrderSettled"]
    announced = [row for row in actual["events"] if row["event_type"] == "OrdersSettled"]
    assert [row for row in actual["events"] if row not in announced] == [
        row for row in expected["events"] if row not in one_each
    ]
    assert len(announced) == 1 and len(committed.outbox_ids) == 3
    said = [settled_order(e) for e in sorted(as_events(one_each), key=lambda e: e.order_id)]
    assert [settled_order(e) for e in as_events(announced)] == [said]
    assert projected(as_events(announced)) == projected(as_events(one_each))
    assert {k: v for k, v in committed.versions.items() if k.startswith("order:")} == {
        f"order:{row['id']}": row["version"] for row in expected["orders"]
    }
    assert actual["settlement"] == expected["settlement"]
    assert actual["user"] == expected["user"]
    e = tables.ledger_entries
    postings = rows(
        container,
        select(e.c.account_owner, e.c.bucket, e.c.amount, e.c.reason, e.c.ref_id).where(
            e.c.txn_id == payout_id
        ),
    )
    payout = expected["payout"]
    assert sorted(tuple(p) for p in postings) == sorted(
        (p.account.owner, p.account.bucket.value, p.amount, payout.reason.value, settlement_id)
        for p in payout.postings
    )
    assert_money_is_conserved(container)


def test_a_second_run_for_the_same_date_changes_nothing(
    container: Container, market: Market
) -> None:
    market.with_sales(SHAPE)
    first = settle(container, market.day)
    before = table_counts(container)

    again = settle(container, market.day)

    assert first.sellers_settled == len(SHAPE)
    assert table_counts(container) == before
    assert (again.sellers_settled, again.orders_settled, again.orders_completed) == (0, 0, 0)
    assert (again.gross, again.fee, again.net) == (0, 0, 0)


def test_orders_paid_72_hours_before_the_run_are_completed_then_settled(
    container: Container, market: Market
) -> None:
    sally = market.seller()
    within_day = market.sale(sally, 10_000, kst(market.day - timedelta(days=3), 9), None)
    due_after_day = market.sale(sally, 6_000, kst(market.day - timedelta(days=2), 0, 5), None)
    not_due = market.sale(sally, 5_000, kst(market.day - timedelta(days=2), 0, 11), None)

    report = settle(container, market.day)

    assert report.orders_completed == 2
    assert order_statuses(container, [within_day, due_after_day, not_due]) == {
        within_day: "SETTLED",
        due_after_day: "COMPLETED",  # its 72 hours ended at 00:05 the next day
        not_due: "PAID",
    }
    o = tables.orders
    completed_at = scalar(container, select(o.c.completed_at).where(o.c.id == within_day))
    assert completed_at == kst(market.day, 9).astimezone(UTC).replace(tzinfo=None)
    assert settlement_of(container, sally, market.day).gross == 10_000
    [auto] = outbox_envelopes(
        container.database,
        tables.outbox.c.aggregate_id == within_day,
        tables.outbox.c.event_type == "OrderCompleted",
    )
    assert auto.payload["automatically"] is True


def test_orders_completed_after_the_end_of_the_date_are_left_for_the_next(
    container: Container, market: Market
) -> None:
    sally = market.seller()
    day = market.day
    last = market.sale(sally, 3_000, kst(day, 9), kst(day, 23, 59, 59, 999_999))
    midnight = market.sale(sally, 4_000, kst(day, 9), kst(day + timedelta(days=1)))

    settle(container, day)

    assert order_statuses(container, [last, midnight]) == {last: "SETTLED", midnight: "COMPLETED"}
    assert settlement_of(container, sally, day).gross == 3_000
    assert balances(container, sally)[2] == 4_000


def test_orders_found_for_a_date_already_settled_wait_for_the_next_date(
    container: Container, market: Market
) -> None:
    sally = market.seller()
    day = market.day
    market.sale(sally, 3_000, kst(day, 9), kst(day, 10))
    settle(container, day)
    late = market.sale(sally, 2_000, kst(day, 9), kst(day, 23))  # committed after the run
    before = table_counts(container)

    rerun = settle(container, day)

    assert (rerun.sellers_deferred, rerun.sellers_settled) == (1, 0)
    assert table_counts(container) == before
    settle(container, day + timedelta(days=1))
    assert order_statuses(container, [late]) == {late: "SETTLED"}
    assert settlement_of(container, sally, day + timedelta(days=1)).gross == 2_000


# -- buyers trading while it runs -------------------------------------------------------------


def test_buyers_trading_with_the_sellers_while_they_are_settled_lose_nothing(
    container: Container, market: Market, make_settings: Callable[..., Settings]
) -> None:
    shape = [[1_000 + n, 2_000 + n] for n in range(30)]
    market.with_sales(shape)
    # What buyers trade during the run, at today's real time: an open ask of every seller,
    # and a paid order of every seller to confirm.
    traders = bootstrap(
        make_settings(events_queue_url=None, db_pool_size=2, db_max_overflow=4),
        images=market.images,
    )
    live = Market(traders, market.clock, market.images, market.day, product_id=market.product_id)
    live.buyer_id = market.buyer_id
    asks, paid = [], []
    for seller in market.sellers:
        asks.append(live.ask(seller, 5_000))
        paid.append(live.sale(seller, 4_000, datetime.now(UTC), None))
    start = threading.Barrier(2)
    done = threading.Event()

    def run_settlement() -> SettlementReport:
        start.wait()
        try:
            return settle(container, market.day)
        finally:
            done.set()

    def trade() -> tuple[list[str], int]:
        start.wait()
        bought, during = [], 0
        buy = trading.BuyNow(market.buyer_id, market.product_id, 5_000)
        for order_id in paid:
            confirm = trading.ConfirmOrder(market.buyer_id, order_id)
            live.run(confirm)
            bought.append(live.run(buy).order_id)
            during += not done.is_set()
        return bought, during

    try:
        with ThreadPoolExecutor(2) as pool:
            settling, trading_ = pool.submit(run_settlement), pool.submit(trade)
            report, (bought, during) = settling.result(timeout=120), trading_.result(timeout=120)
    finally:
        traders.close()

    assert during > 0, "no trade happened while the settlement ran"
    assert report.sellers_settled == len(shape)
    assert report.orders_settled == 2 * len(shape)
    assert report.gross == sum(map(sum, shape))
    assert len(bought) == len(asks)
    statuses = order_statuses(container, paid + bought)
    assert {statuses[o] for o in paid} == {"COMPLETED"}  # completed today, not on the date
    assert {statuses[o] for o in bought} == {"PAID"}
    for seller in market.sellers:
        assert balances(container, seller)[2] == 4_000 + 5_000  # what was sold meanwhile
    assert_money_is_conserved(container)


def innodb_counter(container: Container, name: str) -> int:
    """One of the primary's InnoDB status counters (Innodb_deadlocks, ...)."""
    with container.database.writer.connect() as conn:
        row = conn.execute(text("SHOW GLOBAL STATUS LIKE :name"), {"name": name}).one()
    return int(row[1])


def test_sellers_who_bought_from_each_other_are_settled_at_once_without_deadlocks(
    container: Container, market: Market
) -> None:
    traders = [market.seller() for _ in range(8)]
    for trader in traders:
        market.charge(trader, 7 * 1_000)
    for n, seller in enumerate(traders):
        for m, buyer in enumerate(traders):
            if buyer != seller:
                market.buyer_id = buyer
                paid_at = kst(market.day, 8) + timedelta(minutes=n, seconds=m)
                market.sale(seller, 1_000, paid_at, paid_at + timedelta(hours=1))
    assert container.settings.settlement_workers > 1
    before = innodb_counter(container, "Innodb_deadlocks")

    report = settle(container, market.day)

    assert (report.sellers_settled, report.orders_settled) == (8, 8 * 7)
    # Each seller's buyers are the other sellers, settled four at a time: each locks its
    # own row and, if settling locked buyers, the others'. A deadlock would be retried, so
    # it is counted, not awaited.
    assert innodb_counter(container, "Innodb_deadlocks") == before
    assert_money_is_conserved(container)


def test_sellers_settled_at_once_never_wait_for_each_others_locks(
    container: Container, market: Market
) -> None:
    sellers = [market.seller() for _ in range(24)]
    for n, seller in enumerate(sellers):
        for m in range(6):
            paid_at = kst(market.day, 8) + timedelta(minutes=n, seconds=m)
            market.sale(seller, 1_000 + m, paid_at, paid_at + timedelta(hours=1))
    assert container.settings.settlement_workers > 1
    before = innodb_counter(container, "Innodb_row_lock_waits")

    report = settle(container, market.day)

    assert (report.sellers_settled, report.orders_settled) == (24, 24 * 6)
    # Settled at once, sellers next to each other in id order would: each one's locking
    # read ends on the next seller's first order, locked by that seller's settlement.
    assert innodb_counter(container, "Innodb_row_lock_waits") == before


def test_a_buyer_whose_row_is_locked_does_not_hold_up_their_sellers_settlement(
    container: Container, market: Market
) -> None:
    sellers = [market.seller() for _ in range(3)]
    for n, seller in enumerate(sellers):
        paid_at = kst(market.day, 8) + timedelta(minutes=n)
        market.sale(seller, 1_000 + n, paid_at, paid_at + timedelta(hours=1))
    # The buyer's row held for update, as a command of theirs (a buy, a charge) holds it.
    with container.database.writer.connect() as holder, holder.begin():
        holder.execute(
            select(tables.users.c.id).where(tables.users.c.id == market.buyer_id).with_for_update()
        ).one()
        with ThreadPoolExecutor(1) as pool:
            # Far below the server's lock wait timeout: a settlement waiting on the buyer
            # would still be waiting when this gives up.
            report = pool.submit(settle, container, market.day).result(timeout=20)
        holder.rollback()

    assert (report.sellers_settled, report.orders_settled) == (3, 3)
    assert_money_is_conserved(container)


# -- the read side ----------------------------------------------------------------------------


def test_a_settlement_reaches_the_read_models_and_the_query_api(
    stack: Stack, container: Container, market: Market, make_settings: Callable[..., Settings]
) -> None:
    market.with_sales(SHAPE[:1])
    [sally] = market.sellers
    sqs = sqs_of(stack)
    queue_url = sqs.create_queue(
        QueueName=f"settle-{uuid.uuid4().hex[:10]}.fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    publishing = bootstrap(make_settings(events_queue_url=queue_url))
    o = tables.outbox
    # The sales so far reach the read side first, as they would have when they were made.
    for envelope in outbox_envelopes(container.database):
        if envelope.aggregate_id in {sally, market.product_id, *market.orders[sally]}:
            container.projector.handle(envelope)
    start = scalar(container, select(func.max(o.c.id)))
    try:
        report = settle(publishing, market.day)
        assert report.sellers_settled == 1

        # Published right after each seller's commit: what the run wrote is in the queue.
        written = {e.outbox_id for e in outbox_envelopes(container.database, o.c.id > start)}
        assert (
            scalar(
                container,
                select(func.count()).where(o.c.id.in_(written), o.c.published_at.is_(None)),
            )
            == 0
        )
        received: dict[str, EventEnvelope] = {}
        deadline = clock_time.monotonic() + 30
        while not written <= received.keys() and clock_time.monotonic() < deadline:
            for message in sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", []):
                envelope = EventEnvelope.from_json(message["Body"])
                received[envelope.outbox_id] = envelope
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        assert written <= received.keys()
        for outbox_id in sorted(written):
            container.projector.handle(received[outbox_id])
    finally:
        publishing.close()
        sqs.delete_queue(QueueUrl=queue_url)
        sqs.close()

    expected = {
        "items": [
            {
                "business_date": market.day.isoformat(),
                "order_count": 3,
                "gross": 15_018,
                "fee": 749,
                "net": 14_269,
            }
        ]
    }
    rm = container.read_models
    assert account.my_settlements_from_read_model(rm, sally, limit=100) == expected
    done = trades.history_from_read_model(rm, sally, "done", side=trades.SELLER, limit=100)
    assert done is not None
    assert sorted(item["order_id"] for item in done["items"]) == sorted(market.orders[sally])
    assert {item["status"] for item in done["items"]} == {"SETTLED"}
    assert trades.history_from_read_model(
        rm, sally, "in_progress", side=trades.SELLER, limit=100
    ) == {"items": []}

    tokens = TokenService(container.jwt_secret, timedelta(hours=1))
    headers = {"authorization": f"Bearer {tokens.issue(sally)}"}
    set_container(container)
    try:
        invoker = LocalInvoker()
        answer = invoker.http("GET", "/api/me/settlements", headers=headers)
        history = invoker.http("GET", "/api/sell/history/done", headers=headers)
    finally:
        set_container(None)
    assert (answer.status, answer.body) == (200, expected)
    assert history.status == 200 and history.body == done


# -- the CLI and the Lambda handler -----------------------------------------------------------


def settle_by_cli(env: dict[str, str], day: date) -> subprocess.CompletedProcess[str]:
    """`giftmarket jobs settle --date` as a real process (publishing off: the outbox keeps
    the events, and the stack's shared queue stays clean)."""
    command = [sys.executable, "-m", "giftmarket.cli", "jobs", "settle", "--date", str(day)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_the_cli_and_the_handler_with_the_sample_event_settle_alike(
    stack: Stack, container: Container, clock: FakeClock, images: FakeImageStore
) -> None:
    # The handler's date comes first: the CLI's run settles everything before its date.
    by_cli = new_market(container, clock, images).with_sales(SHAPE[:3])
    by_handler = new_market(container, clock, images).with_sales(SHAPE[:3])
    assert by_handler.day < by_cli.day
    env = {**os.environ, **stack.config.app_env(), "EVENTS_QUEUE_URL": ""}

    event = json.loads((EVENTS / "rerun.json").read_text())
    event["business_date"] = by_handler.day.isoformat()
    clock.now = datetime.now(UTC)  # the handler runs at the real time, as the CLI does
    set_container(container)
    try:
        answer = LocalInvoker().invoke_event_raw("SettlementFunction", event)
    finally:
        set_container(None)
    cli = settle_by_cli(env, by_cli.day)

    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    assert printed["business_date"] == by_cli.day.isoformat()
    assert answer["business_date"] == by_handler.day.isoformat()
    for report in (printed, answer):
        assert (report["sellers_settled"], report["orders_settled"]) == (3, 6)
        assert (report["gross"], report["fee"], report["net"]) == (28_795, 1_437, 27_358)
    assert outcome_now(container, by_cli) == outcome_now(container, by_handler)
    again = settle_by_cli(env, by_cli.day)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["sellers_settled"] == 0


def outcome_now(container: Container, market: Market) -> list[Any]:
    """The money a run moved for the market's sellers, in creation order."""
    return [
        (
            (s.order_count, s.gross, s.fee, s.net),
            balances(container, seller_id),
            ledger_sums(container, seller_id),
            fees_of(container, [s.id]),
        )
        for seller_id in market.sellers
        if (s := settlement_of(container, seller_id, market.day)) is not None
    ]
