"""Sales made by the real commands on business dates of their own, and the truth read back
after settling them: shared by the settlement job's tests and the reliability test that
kills it half way.

The database is shared by the whole session. Each test trades on business dates of its own
in 2019, going back in time test after test, so what one test leaves unsettled (an order
completed after its date) is later than any date a following test settles. Sales are made
by the real commands, with a clock set to those dates and S3 replaced by a fake (what this
tests is the money, not the upload).
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from tests.support.fakes import FakeClock, FakeImageStore, fresh_barcode, valid_until
from tests.support.stack import fresh_read_models, settings_for

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container, bootstrap
from giftmarket.commands import accounts, catalog, trading
from giftmarket.commands.executor import Command
from giftmarket.domain.errors import DomainError
from giftmarket.domain.images import s3_key_for
from giftmarket.domain.settlement import KST
from giftmarket.jobs import settlement
from giftmarket.jobs.settlement import SettlementReport
from giftmarket.settings import Settings
from giftmarket_local.migrations import reset
from giftmarket_local.stack import Stack

T = TypeVar("T")
ADMIN = "admin@giftmarket.local"
PASSWORD = "password123"
SHAPE = [
    [10_000, 4_999, 19],
    [7_777],
    [3_000, 3_000],
    [1_234, 5_678, 9_999, 20],
    [50_000],
    [39, 61],
]
EVENTS = Path(__file__).resolve().parents[2] / "functions" / "settlement" / "events"
_dates = itertools.count()


def next_business_date() -> date:
    """A date no earlier test of this module has traded on or after."""
    return date(2019, 12, 1) - timedelta(days=20 * next(_dates))


def kst(day: date, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second, micro), tzinfo=KST)


def run_at(day: date) -> datetime:
    """00:10 KST the day after: when the schedule settles `day`."""
    return kst(day + timedelta(days=1), 0, 10)


def start_from_empty_schema(stack: Stack) -> None:
    """The money checks here cover every user and ledger entry, and earlier tests seed users
    behind the ledger's back (test_query_views): a module of these starts from an empty
    schema (its autouse fixture calls this)."""
    reset(stack.config)
    stack.wait_replica_caught_up()
    fresh_read_models(settings_for(stack))


def settlement_container(
    make_settings: Callable[..., Settings], clock: FakeClock, images: FakeImageStore
) -> Iterator[Container]:
    """Commands on the test stack at the module's clock, events left in the outbox (the
    body of a module's `container` fixture)."""
    settings = make_settings(events_queue_url=None, db_pool_size=4, db_max_overflow=8)
    built = bootstrap(settings, images=images)
    built.command_context = replace(built.command_context, clock=clock)
    yield built
    built.close()


@dataclass
class Market:
    """Sellers with sales completed on one business date, made by the real commands."""

    container: Container
    clock: FakeClock
    images: FakeImageStore
    day: date
    sellers: list[str] = field(default_factory=list)
    orders: dict[str, list[str]] = field(default_factory=dict)
    product_id: str = ""
    buyer_id: str = ""

    def run(self, command: Command[T]) -> T:
        return self.container.command_executor.execute(command)[0]

    def sign_up(self, email: str | None = None) -> str:
        command = accounts.SignUp(email or f"{uuid.uuid4().hex}@settle.test", PASSWORD, "s")
        return self.run(command).user_id

    def admin(self) -> str:
        command = accounts.SignIn(ADMIN, PASSWORD)
        try:
            return self.run(command).user_id
        except DomainError:
            return self.sign_up(ADMIN)

    def open(self) -> Market:
        self.clock.now = kst(self.day - timedelta(days=10))
        register = catalog.RegisterProduct(self.admin(), "Latte", "Cafe", "settle", 60_000)
        self.product_id = self.run(register)
        self.buyer_id = self.sign_up()
        self.charge(self.buyer_id, 10**9)
        return self

    def charge(self, user_id: str, amount: int) -> None:
        command = accounts.ChargePoints(user_id, amount)
        self.run(command)

    def ask(self, seller_id: str, price: int) -> str:
        request = catalog.RequestImageUpload(seller_id, "image/png")
        image_id = self.run(request)
        self.images.put(s3_key_for(seller_id, image_id.image_id))
        place = trading.PlaceSellBid(
            seller_id,
            self.product_id,
            price,
            image_id.image_id,
            fresh_barcode(),
            valid_until(self.container.command_context.clock()),  # the commands' own clock
        )
        return self.run(place).bid_id

    def sale(
        self, seller_id: str, price: int, paid_at: datetime, confirmed_at: datetime | None
    ) -> str:
        self.clock.now = paid_at
        self.ask(seller_id, price)
        buy = trading.BuyNow(self.buyer_id, self.product_id, price)
        order_id = self.run(buy).order_id
        if confirmed_at is not None:
            self.clock.now = confirmed_at
            confirm = trading.ConfirmOrder(self.buyer_id, order_id)
            self.run(confirm)
        self.orders.setdefault(seller_id, []).append(order_id)
        return order_id

    def seller(self) -> str:
        seller_id = self.sign_up()
        self.sellers.append(seller_id)
        return seller_id

    def with_sales(self, shape: list[list[int]]) -> Market:
        """One seller per price list, each sale confirmed during the day."""
        for n, prices in enumerate(shape):
            seller_id = self.seller()
            for m, price in enumerate(prices):
                paid_at = kst(self.day, 8) + timedelta(minutes=n, seconds=m)
                self.sale(seller_id, price, paid_at, paid_at + timedelta(hours=1, minutes=7 * n))
        return self


def new_market(container: Container, clock: FakeClock, images: FakeImageStore) -> Market:
    return Market(container, clock, images, next_business_date()).open()


# -- reading the truth ------------------------------------------------------------------------


def scalar(container: Container, query: Any) -> Any:
    with container.database.writer.connect() as conn:
        return conn.execute(query).scalar()


def rows(container: Container, query: Any) -> list[Any]:
    with container.database.writer.connect() as conn:
        return list(conn.execute(query).all())


def balances(container: Container, user_id: str) -> tuple[int, int, int]:
    u = tables.users
    [row] = rows(
        container,
        select(u.c.available_points, u.c.escrowed_points, u.c.pending_points).where(
            u.c.id == user_id
        ),
    )
    return int(row[0]), int(row[1]), int(row[2])


def ledger_sums(container: Container, owner: str) -> dict[str, int]:
    e = tables.ledger_entries
    query = (
        select(e.c.bucket, func.sum(e.c.amount))
        .where(e.c.account_owner == owner)
        .group_by(e.c.bucket)
    )
    return {bucket: int(total) for bucket, total in rows(container, query)}


def settlement_of(container: Container, seller_id: str, day: date) -> Any:
    s = tables.settlements
    found = rows(container, select(s).where(s.c.seller_id == seller_id, s.c.business_date == day))
    return found[0] if found else None


def order_statuses(container: Container, order_ids: list[str]) -> dict[str, str]:
    o = tables.orders
    return dict(rows(container, select(o.c.id, o.c.status).where(o.c.id.in_(order_ids))))


def fees_of(container: Container, settlement_ids: list[str]) -> int:
    e = tables.ledger_entries
    query = select(func.coalesce(func.sum(e.c.amount), 0)).where(
        e.c.account_owner == "platform", e.c.bucket == "fees", e.c.ref_id.in_(settlement_ids)
    )
    return int(scalar(container, query))


def table_counts(container: Container) -> dict[str, int]:
    counts = {}
    for table in (tables.ledger_entries, tables.outbox, tables.settlements):
        counts[table.name] = int(scalar(container, select(func.count()).select_from(table)))
    o, u = tables.orders, tables.users
    counts["order_versions"] = int(scalar(container, select(func.sum(o.c.version))))
    counts["user_versions"] = int(scalar(container, select(func.sum(u.c.version))))
    return counts


def outcome(container: Container, market: Market) -> list[Any]:
    """What settling the market left, seller by seller in creation order, free of ids and
    times: settlement amounts, balances, ledger sums, the fees booked and the events."""
    result: list[Any] = []
    settlement_ids = []
    for seller_id in market.sellers:
        s = settlement_of(container, seller_id, market.day)
        settlement_ids.append(s.id)
        statuses = sorted(order_statuses(container, market.orders[seller_id]).values())
        result.append(
            (
                (s.order_count, s.gross, s.fee, s.net),
                statuses,
                balances(container, seller_id),
                ledger_sums(container, seller_id),
            )
        )
    o = tables.outbox
    aggregate_ids = settlement_ids + [oid for ids in market.orders.values() for oid in ids]
    events = rows(
        container,
        select(o.c.event_type).where(
            o.c.aggregate_id.in_(aggregate_ids + market.sellers),
            o.c.event_type.in_(
                ["SettlementCompleted", "OrderSettled", "OrdersSettled", "UserBalancesChanged"]
            ),
            o.c.occurred_at >= run_at(market.day).astimezone(UTC).replace(tzinfo=None),
        ),
    )
    result.append((fees_of(container, settlement_ids), Counter(e[0] for e in events)))
    return result


def assert_money_is_conserved(container: Container) -> None:
    """charges = users' balances + platform fees − coupon subsidies, and every user's
    balances are the sums of their postings."""
    e, u = tables.ledger_entries, tables.users
    assert scalar(container, select(func.coalesce(func.sum(e.c.amount), 0))) == 0
    sums = {
        (owner, bucket): int(total)
        for owner, bucket, total in rows(
            container,
            select(e.c.account_owner, e.c.bucket, func.sum(e.c.amount)).group_by(
                e.c.account_owner, e.c.bucket
            ),
        )
    }
    users_total = 0
    for user_id, available, escrowed, pending in rows(
        container, select(u.c.id, u.c.available_points, u.c.escrowed_points, u.c.pending_points)
    ):
        assert (available, escrowed, pending) == (
            sums.get((user_id, "available"), 0),
            sums.get((user_id, "escrowed"), 0),
            sums.get((user_id, "pending"), 0),
        ), user_id
        users_total += available + escrowed + pending
    charges = -sums.get(("external", "charges"), 0)
    fees = sums.get(("platform", "fees"), 0)
    subsidies = -sums.get(("platform", "coupon_subsidy"), 0)
    assert charges == users_total + fees - subsidies


def settle(container: Container, day: date, now: datetime | None = None) -> SettlementReport:
    executor, settings = container.command_executor, container.settings
    return settlement.settle(executor, settings, day, now or run_at(day))
