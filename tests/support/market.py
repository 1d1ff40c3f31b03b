"""A market on the in-memory fakes, run the way the command API runs its commands: each
command through the same executor, on one FakeUnitOfWork (tests/functional/test_commands_*.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TypeVar

import pytest
from tests.support.fakes import (
    ADMIN_EMAIL,
    FakeClock,
    FakeImageStore,
    FakePasswords,
    FakeStore,
    FakeUnitOfWork,
    fresh_barcode,
    make_context,
    valid_until,
)

from giftmarket.commands import accounts, catalog, orders, trading
from giftmarket.commands.context import CommandContext
from giftmarket.commands.executor import CommandExecutor
from giftmarket.commands.handlers import COMMAND_HANDLERS
from giftmarket.commands.ports import Committed, UnitOfWork
from giftmarket.domain import ledger
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.images import Image, s3_key_for
from giftmarket.domain.ledger import LedgerTransaction
from giftmarket.domain.orderbook import BuyBid, SellBid
from giftmarket.domain.orders import DisputeDecision, InspectionResult, Order
from giftmarket.domain.users import Balances, User

C = TypeVar("C")
R = TypeVar("R")
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

PASSWORD = "password123"
Handler = Callable[[UnitOfWork, C, CommandContext], R]


def present(value: T | None) -> T:
    assert value is not None
    return value


@dataclass
class Market:
    uow: FakeUnitOfWork
    ctx: CommandContext
    clock: FakeClock
    images: FakeImageStore
    passwords: FakePasswords
    _emails: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def store(self) -> FakeStore:
        return self.uow.store

    # --- running commands ----------------------------------------------------------------

    def commit(self, handler: Handler[C, R], command: C) -> tuple[R, Committed]:
        with self.uow:
            result = handler(self.uow, command, self.ctx)
            committed = self.uow.commit()
        return result, committed

    def run(self, handler: Handler[C, R], command: C) -> R:
        return self.commit(handler, command)[0]

    def refused(self, handler: Handler[C, object], command: C, error: type[E]) -> E:
        before = self.store.state()
        with pytest.raises(error) as caught, self.uow:
            handler(self.uow, command, self.ctx)
            self.uow.commit()
        assert self.store.state() == before, "a refused command wrote something"
        return caught.value

    def written(self, committed: Committed) -> set[tuple[str, str, int]]:
        return {(e.event_type, e.aggregate_id, e.version) for e in self.events(committed)}

    def events(self, committed: Committed) -> list[DomainEvent]:
        return self.store.events_of(committed)

    # --- reading what was committed ------------------------------------------------------

    def read(self, query: Callable[[UnitOfWork], T | None]) -> T:
        with self.uow:
            return present(query(self.uow))

    def user(self, user_id: str) -> User:
        return self.read(lambda uow: uow.users.get(user_id))

    def balances(self, user_id: str) -> Balances:
        return self.user(user_id).balances

    def product(self, product_id: str) -> Product:
        return self.read(lambda uow: uow.products.get(product_id))

    def image(self, image_id: str) -> Image:
        return self.read(lambda uow: uow.images.get(image_id))

    def ask(self, sell_bid_id: str) -> SellBid:
        return self.read(lambda uow: uow.sell_bids.get(sell_bid_id))

    def bid(self, buy_bid_id: str) -> BuyBid:
        return self.read(lambda uow: uow.buy_bids.get(buy_bid_id))

    def order(self, order_id: str) -> Order:
        return self.read(lambda uow: uow.orders.get(order_id))

    def coupon(self, coupon_id: str) -> Coupon:
        return self.read(lambda uow: uow.coupons.get(coupon_id))

    def last_ledger_transaction(self) -> LedgerTransaction:
        return self.store.ledger[-1]

    # --- arranging a market --------------------------------------------------------------

    def signed_up(self, email: str | None = None, *, points: int = 0) -> str:
        email = email or f"user{next(self._emails)}@example.com"
        user_id = self.run(accounts.sign_up, accounts.SignUp(email, PASSWORD, "nick")).user_id
        if points:
            self.run(accounts.charge_points, accounts.ChargePoints(user_id, points))
        return user_id

    def admin(self) -> str:
        with self.uow:
            admin = self.uow.users.get_by_email(ADMIN_EMAIL)
        return admin.id if admin else self.signed_up(ADMIN_EMAIL)

    def new_product(self, face_value: int = 5000) -> str:
        command = catalog.RegisterProduct(
            self.admin(), "Americano", "Starbucks", "coffee", face_value
        )
        return self.run(catalog.register_product, command)

    def requested_image(self, owner_id: str, content_type: str = "image/png") -> str:
        command = catalog.RequestImageUpload(owner_id, content_type)
        return self.run(catalog.request_image_upload, command).image_id

    def uploaded_image(
        self, owner_id: str, *, size: int = 2048, content_type: str = "image/png"
    ) -> str:
        image_id = self.requested_image(owner_id)
        self.images.put(s3_key_for(owner_id, image_id), size=size, content_type=content_type)
        return image_id

    def voucher(self, days: int = 30) -> tuple[str, date]:
        """A fresh barcode, and an expiry `days` after today in Korea."""
        return fresh_barcode(), valid_until(self.clock(), days)

    def open_ask(
        self,
        product_id: str,
        price: int,
        seller_id: str | None = None,
        *,
        barcode: str | None = None,
        valid_days: int = 30,
    ) -> str:
        seller_id = seller_id or self.signed_up()
        image_id = self.uploaded_image(seller_id)
        expires_on = valid_until(self.clock(), valid_days)
        command = trading.PlaceSellBid(
            seller_id, product_id, price, image_id, barcode or fresh_barcode(), expires_on
        )
        return self.run(trading.place_sell_bid, command).bid_id

    def sell_now(
        self, product_id: str, price: int, seller_id: str, *, barcode: str | None = None
    ) -> trading.Sale:
        image_id = self.uploaded_image(seller_id)
        barcode, expires_on = (barcode or fresh_barcode()), valid_until(self.clock())
        command = trading.SellNow(seller_id, product_id, price, image_id, barcode, expires_on)
        return self.run(trading.sell_now, command)

    def open_bid(self, product_id: str, price: int, buyer_id: str | None = None) -> str:
        buyer_id = buyer_id or self.signed_up(points=price)
        command = trading.PlaceBuyBid(buyer_id, product_id, price)
        return self.run(trading.place_buy_bid, command).bid_id

    def coupon_for(
        self, user_id: str, discount: int = 1000, expires_at: datetime | None = None
    ) -> str:
        expires_at = expires_at or self.clock() + timedelta(days=7)
        command = catalog.IssueCoupon(self.admin(), user_id, "Spring sale", discount, expires_at)
        return self.run(catalog.issue_coupon, command)

    def traded(
        self, price: int = 4_000, *, points: int = 10_000, coupon: int = 0
    ) -> tuple[str, str, str, str | None]:
        """(order, buyer, seller, coupon) of a buy-now of a fresh ask at `price` by a new
        buyer holding `points`, with a new coupon of `coupon` points if not 0."""
        product_id, seller_id = self.new_product(), self.signed_up()
        self.open_ask(product_id, price, seller_id)
        buyer_id = self.signed_up(points=points)
        coupon_id = self.coupon_for(buyer_id, coupon) if coupon else None
        command = trading.BuyNow(buyer_id, product_id, price, coupon_id)
        order_id = self.run(trading.buy_now, command).order_id
        return order_id, buyer_id, seller_id, coupon_id

    def bought(self, product_id: str, buyer_id: str, price: int) -> trading.Purchase:
        return self.run(trading.buy_now, trading.BuyNow(buyer_id, product_id, price))

    # --- after the match: inspection, disputes, the jobs ---------------------------------

    def inspected(
        self, order_id: str, result: InspectionResult, reason: str | None = None
    ) -> orders.OrderState:
        command = orders.DecideInspection(self.admin(), order_id, result, reason)
        return self.run(orders.decide_inspection, command)

    def disputed(self, order_id: str, buyer_id: str, reason: str = "already used") -> str:
        command = orders.OpenDispute(buyer_id, order_id, reason)
        return self.run(orders.open_dispute, command).status

    def resolved(
        self, order_id: str, decision: DisputeDecision, note: str | None = None
    ) -> orders.OrderState:
        command = orders.ResolveDispute(self.admin(), order_id, decision, note)
        return self.run(orders.resolve_dispute, command)

    def executor(self) -> CommandExecutor:
        """The market's store and context behind an executor, as the jobs take them."""
        return CommandExecutor(lambda: FakeUnitOfWork(self.store), self.ctx, COMMAND_HANDLERS)


def new_market(**context: object) -> Market:
    """A market on fresh fakes; `context` overrides `make_context`'s arguments (the voucher
    rules, the barcode keys, ...)."""
    clock, images, passwords = FakeClock(), FakeImageStore(), FakePasswords()
    ctx = make_context(clock=clock, images=images, passwords=passwords, **context)  # type: ignore[arg-type]
    return Market(FakeUnitOfWork(), ctx, clock, images, passwords)


def ledger_balances_agree_with_users(market: Market, *user_ids: str) -> None:
    sums = ledger.balances(market.store.ledger)
    for user_id in user_ids:
        assert market.balances(user_id) == (
            sums.get(ledger.available(user_id), 0),
            sums.get(ledger.escrowed(user_id), 0),
            sums.get(ledger.pending(user_id), 0),
        )


def money_is_conserved(market: Market) -> None:
    """PRODUCT.md's conservation rule over everything committed: every user's balances equal
    their postings, and charges = the users' balances + platform fees − coupon subsidies."""
    sums = ledger.balances(market.store.ledger)
    users: list[User] = list(market.store.rows["users"].values())
    ledger_balances_agree_with_users(market, *(user.id for user in users))
    held = sum(sum(user.balances) for user in users)
    subsidies = -sums.get(ledger.COUPON_SUBSIDY, 0)
    assert -sums.get(ledger.CHARGES, 0) == held + sums.get(ledger.FEES, 0) - subsidies
    assert sum(sums.values()) == 0
