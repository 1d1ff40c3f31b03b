"""A market on the in-memory fakes, run the way the command API runs its commands: each
command through the same executor, on one FakeUnitOfWork (tests/functional/test_commands_*.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import pytest
from tests.support.fakes import (
    ADMIN_EMAIL,
    FakeClock,
    FakeImageStore,
    FakePasswords,
    FakeStore,
    FakeUnitOfWork,
)

from giftmarket.commands import accounts, catalog, trading
from giftmarket.commands.context import CommandContext
from giftmarket.commands.ports import Committed, UnitOfWork
from giftmarket.domain import ledger
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.images import Image, s3_key_for
from giftmarket.domain.ledger import LedgerTransaction
from giftmarket.domain.orderbook import BuyBid, SellBid
from giftmarket.domain.orders import Order
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

    def open_ask(self, product_id: str, price: int, seller_id: str | None = None) -> str:
        seller_id = seller_id or self.signed_up()
        image_id = self.uploaded_image(seller_id)
        command = trading.PlaceSellBid(seller_id, product_id, price, image_id)
        return self.run(trading.place_sell_bid, command).bid_id

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

    def bought(self, product_id: str, buyer_id: str, price: int) -> trading.Purchase:
        return self.run(trading.buy_now, trading.BuyNow(buyer_id, product_id, price))


def ledger_balances_agree_with_users(market: Market, *user_ids: str) -> None:
    sums = ledger.balances(market.store.ledger)
    for user_id in user_ids:
        assert market.balances(user_id) == (
            sums.get(ledger.available(user_id), 0),
            sums.get(ledger.escrowed(user_id), 0),
            sums.get(ledger.pending(user_id), 0),
        )
