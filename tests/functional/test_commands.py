"""Every command handler, run the way the command API runs it, on the in-memory fakes.

`Market.run` mirrors the executor: `with uow: result = handler(uow, ctx); uow.commit()`.
`Market.refused` runs a handler that must raise, and checks that nothing was written.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from tests.functional.fakes import (
    ADMIN_EMAIL,
    FakeClock,
    FakeImageStore,
    FakePasswords,
    FakeStore,
    FakeUnitOfWork,
    make_context,
)

from giftmarket.commands import accounts, catalog, trading
from giftmarket.commands.context import CommandContext, InvalidCredentials, Unauthenticated
from giftmarket.commands.executor import CommandExecutor, IdempotencyClaim
from giftmarket.commands.ports import Committed, IdempotencyKeyReused, StoredResponse, UnitOfWork
from giftmarket.domain import ledger
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon, CouponKind, CouponStatus
from giftmarket.domain.errors import (
    BidNotOpen,
    CouponUnavailable,
    CrossesBook,
    DomainError,
    EmailTaken,
    Forbidden,
    ImageUnusable,
    InsufficientPoints,
    InvalidAmount,
    InvalidField,
    NoMatchingBid,
    NotFound,
    OrderNotConfirmable,
)
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.images import MAX_IMAGE_BYTES, Image, ImageStatus, s3_key_for
from giftmarket.domain.ledger import LedgerReason, LedgerTransaction
from giftmarket.domain.orderbook import BidStatus, BuyBid, SellBid
from giftmarket.domain.orders import Order, OrderStatus, OrderVia
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


@pytest.fixture
def market() -> Market:
    clock, images, passwords = FakeClock(), FakeImageStore(), FakePasswords()
    ctx = make_context(clock=clock, images=images, passwords=passwords)
    return Market(FakeUnitOfWork(), ctx, clock, images, passwords)


def ledger_balances_agree_with_users(market: Market, *user_ids: str) -> None:
    sums = ledger.balances(market.store.ledger)
    for user_id in user_ids:
        assert market.balances(user_id) == (
            sums.get(ledger.available(user_id), 0),
            sums.get(ledger.escrowed(user_id), 0),
            sums.get(ledger.pending(user_id), 0),
        )


# --- signing up ----------------------------------------------------------------------------


def test_sign_up_stores_a_hashed_password_and_the_normalized_email(market: Market) -> None:
    account = market.run(accounts.sign_up, accounts.SignUp(" Alice@Example.COM ", PASSWORD, "al"))
    user = market.user(account.user_id)
    assert user.email == "alice@example.com"
    assert user.password_hash == "hashed:password123"
    assert user.balances == (0, 0, 0)
    assert (account.is_admin, user.is_admin) == (False, False)


def test_sign_up_writes_user_signed_up_at_version_1(market: Market) -> None:
    account, committed = market.commit(
        accounts.sign_up, accounts.SignUp("bob@example.com", PASSWORD, "bob")
    )
    assert market.written(committed) == {("UserSignedUp", account.user_id, 1)}
    assert committed.versions == {f"user:{account.user_id}": 1}
    assert committed.outbox_ids == tuple(record.id for record in market.store.outbox)
    [event] = market.events(committed)
    assert event.to_payload()["email"] == "bob@example.com"


def test_sign_up_with_an_admin_email_in_any_case_makes_an_admin(market: Market) -> None:
    account = market.run(accounts.sign_up, accounts.SignUp(ADMIN_EMAIL.upper(), PASSWORD, "a"))
    assert account.is_admin
    assert market.user(account.user_id).is_admin


def test_sign_up_leaves_the_welcome_coupon_to_the_event_consumer(market: Market) -> None:
    market.signed_up()
    assert market.store.rows["coupons"] == {}
    assert [e.event_type for e in market.store.events] == ["UserSignedUp"]


def test_sign_up_with_a_taken_email_in_another_case_is_email_taken(market: Market) -> None:
    market.signed_up("carol@example.com")
    command = accounts.SignUp("CAROL@example.com", PASSWORD, "carol2")
    market.refused(accounts.sign_up, command, EmailTaken)


@pytest.mark.parametrize(
    ("email", "nickname"),
    [("not-an-email", "nick"), ("dave@example.com", "n" * 31), ("dave@example.com", "   ")],
)
def test_sign_up_with_an_invalid_email_or_nickname_is_invalid_field(
    market: Market, email: str, nickname: str
) -> None:
    market.refused(accounts.sign_up, accounts.SignUp(email, PASSWORD, nickname), InvalidField)


# --- signing in ----------------------------------------------------------------------------


def test_login_with_the_right_password_in_any_email_case_returns_the_account(
    market: Market,
) -> None:
    user_id = market.signed_up("erin@example.com")
    account, committed = market.commit(
        accounts.sign_in, accounts.SignIn("Erin@Example.com", PASSWORD)
    )
    assert account == accounts.Account(user_id, False)
    assert committed == Committed((), {})


def test_login_wrong_password_is_invalid_credentials(market: Market) -> None:
    market.signed_up("frank@example.com")
    command = accounts.SignIn("frank@example.com", "password124")
    market.refused(accounts.sign_in, command, InvalidCredentials)


def test_login_with_an_unknown_email_is_invalid_credentials_after_a_dummy_hash_check(
    market: Market,
) -> None:
    command = accounts.SignIn("nobody@example.com", PASSWORD)
    market.refused(accounts.sign_in, command, InvalidCredentials)
    assert market.passwords.verified == [market.passwords.dummy_hash()]


def test_login_with_an_outdated_hash_stores_a_current_one(market: Market) -> None:
    user_id = market.signed_up("gina@example.com")
    with market.uow:
        market.uow.users.set_password_hash(user_id, "legacy:password123")
        market.uow.commit()
    market.run(accounts.sign_in, accounts.SignIn("gina@example.com", PASSWORD))
    user = market.user(user_id)
    assert user.password_hash == "hashed:password123"
    assert user.version == 1


# --- charging points -----------------------------------------------------------------------


def test_charge_adds_to_available_points_and_records_a_ledger_charge(market: Market) -> None:
    user_id = market.signed_up()
    balance, committed = market.commit(accounts.charge_points, accounts.ChargePoints(user_id, 5000))
    assert balance == accounts.Balance(5000)
    assert market.balances(user_id) == (5000, 0, 0)
    charge = market.last_ledger_transaction()
    assert charge.reason is LedgerReason.CHARGE
    assert set(charge.postings) == {
        ledger.Posting(ledger.CHARGES, -5000),
        ledger.Posting(ledger.available(user_id), 5000),
    }
    assert market.written(committed) == {
        ("PointsCharged", user_id, 2),
        ("UserBalancesChanged", user_id, 2),
    }
    assert committed.versions == {f"user:{user_id}": 2}


@pytest.mark.parametrize("amount", [0, -100, 10**9 + 1])
def test_charge_of_a_non_positive_or_absurd_amount_is_invalid_amount(
    market: Market, amount: int
) -> None:
    user_id = market.signed_up()
    market.refused(accounts.charge_points, accounts.ChargePoints(user_id, amount), InvalidAmount)


def test_charge_for_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = accounts.ChargePoints("01HZZZZZZZZZZZZZZZZZZZZZZZ", 1000)
    market.refused(accounts.charge_points, command, Unauthenticated)


# --- the welcome coupon --------------------------------------------------------------------


def test_welcome_coupon_is_issued_once(market: Market) -> None:
    user_id = market.signed_up()
    coupon_id, committed = market.commit(
        accounts.issue_welcome_coupon, accounts.IssueWelcomeCoupon(user_id)
    )
    again, committed_again = market.commit(
        accounts.issue_welcome_coupon, accounts.IssueWelcomeCoupon(user_id)
    )
    assert coupon_id is not None
    assert again is None
    coupon = market.coupon(coupon_id)
    assert (coupon.user_id, coupon.discount_amount, coupon.kind) == (
        user_id,
        1000,
        CouponKind.WELCOME,
    )
    assert coupon.expires_at == market.clock() + timedelta(days=30)
    assert list(market.store.rows["coupons"]) == [coupon_id]
    assert market.written(committed) == {("CouponIssued", coupon_id, 1)}
    assert committed_again.outbox_ids == ()


def test_welcome_coupon_for_an_unknown_user_is_not_issued(market: Market) -> None:
    command = accounts.IssueWelcomeCoupon("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert market.run(accounts.issue_welcome_coupon, command) is None
    assert market.store.rows["coupons"] == {}


def test_welcome_coupon_of_zero_points_is_not_issued(market: Market) -> None:
    user_id = market.signed_up()
    ctx = make_context(clock=market.clock, welcome_coupon_amount=0)
    with market.uow:
        assert (
            accounts.issue_welcome_coupon(market.uow, accounts.IssueWelcomeCoupon(user_id), ctx)
            is None
        )
        market.uow.commit()
    assert market.store.rows["coupons"] == {}


# --- products and likes --------------------------------------------------------------------


def test_admin_registers_a_product(market: Market) -> None:
    command = catalog.RegisterProduct(market.admin(), " Latte ", "Starbucks", "coffee", 5500)
    product_id, committed = market.commit(catalog.register_product, command)
    product = market.product(product_id)
    assert (product.name, product.brand, product.category, product.face_value) == (
        "Latte",
        "Starbucks",
        "coffee",
        5500,
    )
    assert (product.like_count, product.created_at) == (0, market.clock())
    assert market.written(committed) == {("ProductRegistered", product_id, 1)}


def test_non_admin_cannot_register_product(market: Market) -> None:
    command = catalog.RegisterProduct(market.signed_up(), "Latte", "Starbucks", "coffee", 5500)
    market.refused(catalog.register_product, command, Forbidden)


def test_register_product_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = catalog.RegisterProduct("01HZZZZZZZZZZZZZZZZZZZZZZZ", "Latte", "S", "coffee", 5500)
    market.refused(catalog.register_product, command, Unauthenticated)


def test_register_product_with_a_zero_face_value_is_invalid_amount(market: Market) -> None:
    command = catalog.RegisterProduct(market.admin(), "Latte", "Starbucks", "coffee", 0)
    market.refused(catalog.register_product, command, InvalidAmount)


def test_like_counts_once_and_writes_product_liked(market: Market) -> None:
    product_id, user_id = market.new_product(), market.signed_up()
    _, committed = market.commit(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    assert market.product(product_id).like_count == 1
    assert market.written(committed) == {("ProductLiked", product_id, 2)}
    assert market.store.likes == {(product_id, user_id): market.clock()}


def test_liking_twice_is_the_same_as_once(market: Market) -> None:
    product_id, user_id = market.new_product(), market.signed_up()
    market.run(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    _, committed = market.commit(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    product = market.product(product_id)
    assert (product.like_count, product.version) == (1, 2)
    assert committed.outbox_ids == ()


def test_likes_of_two_users_both_count(market: Market) -> None:
    product_id = market.new_product()
    for user_id in (market.signed_up(), market.signed_up()):
        market.run(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    assert market.product(product_id).like_count == 2


def test_unlike_removes_the_like_and_writes_product_unliked(market: Market) -> None:
    product_id, user_id = market.new_product(), market.signed_up()
    market.run(catalog.set_like, catalog.SetLike(user_id, product_id, True))
    _, committed = market.commit(catalog.set_like, catalog.SetLike(user_id, product_id, False))
    assert market.product(product_id).like_count == 0
    assert market.store.likes == {}
    assert market.written(committed) == {("ProductUnliked", product_id, 3)}


def test_unliking_a_product_not_liked_changes_nothing(market: Market) -> None:
    product_id, user_id = market.new_product(), market.signed_up()
    _, committed = market.commit(catalog.set_like, catalog.SetLike(user_id, product_id, False))
    assert (market.product(product_id).like_count, committed.outbox_ids) == (0, ())


def test_like_of_an_unknown_product_is_not_found(market: Market) -> None:
    command = catalog.SetLike(market.signed_up(), "01HZZZZZZZZZZZZZZZZZZZZZZZ", True)
    assert market.refused(catalog.set_like, command, NotFound).resource == "product"


def test_like_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = catalog.SetLike("01HZZZZZZZZZZZZZZZZZZZZZZZ", market.new_product(), True)
    market.refused(catalog.set_like, command, Unauthenticated)


# --- image upload slots --------------------------------------------------------------------


def test_image_upload_gives_a_presigned_put_url_for_the_owners_key(market: Market) -> None:
    owner_id = market.signed_up()
    command = catalog.RequestImageUpload(owner_id, "image/png")
    slot, committed = market.commit(catalog.request_image_upload, command)
    key = f"images/{owner_id}/{slot.image_id}"
    assert slot.upload_url == f"https://fake-s3/put/{key}?ct=image/png"
    image = market.image(slot.image_id)
    assert (image.owner_id, image.s3_key, image.status) == (owner_id, key, ImageStatus.PENDING)
    assert market.written(committed) == {("ImageRequested", slot.image_id, 1)}


def test_image_upload_normalizes_the_content_type(market: Market) -> None:
    command = catalog.RequestImageUpload(market.signed_up(), " Image/JPEG; charset=binary")
    slot = market.run(catalog.request_image_upload, command)
    assert slot.upload_url.endswith("?ct=image/jpeg")
    assert market.image(slot.image_id).content_type == "image/jpeg"


@pytest.mark.parametrize("content_type", ["application/pdf", "image/gif", ""])
def test_image_upload_of_a_type_that_is_not_png_jpeg_or_webp_is_image_unusable(
    market: Market, content_type: str
) -> None:
    command = catalog.RequestImageUpload(market.signed_up(), content_type)
    market.refused(catalog.request_image_upload, command, ImageUnusable)


def test_image_upload_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = catalog.RequestImageUpload("01HZZZZZZZZZZZZZZZZZZZZZZZ", "image/png")
    market.refused(catalog.request_image_upload, command, Unauthenticated)


# --- admin coupons -------------------------------------------------------------------------


def test_admin_issues_a_coupon_to_a_user(market: Market) -> None:
    user_id = market.signed_up()
    expires_at = datetime(2025, 4, 1, 15, 0, 0, 1, tzinfo=UTC)
    command = catalog.IssueCoupon(market.admin(), user_id, "Spring", 1500, expires_at)
    coupon_id, committed = market.commit(catalog.issue_coupon, command)
    coupon = market.coupon(coupon_id)
    assert (coupon.user_id, coupon.name, coupon.discount_amount) == (user_id, "Spring", 1500)
    assert (coupon.status, coupon.kind, coupon.expires_at) == (
        CouponStatus.AVAILABLE,
        CouponKind.ADMIN,
        expires_at,
    )
    assert market.written(committed) == {("CouponIssued", coupon_id, 1)}


def test_non_admin_cannot_issue_coupons(market: Market) -> None:
    user_id = market.signed_up()
    expires_at = market.clock() + timedelta(days=1)
    command = catalog.IssueCoupon(user_id, user_id, "Free money", 1000, expires_at)
    market.refused(catalog.issue_coupon, command, Forbidden)


def test_coupon_for_an_unknown_user_is_not_found(market: Market) -> None:
    expires_at = market.clock() + timedelta(days=1)
    command = catalog.IssueCoupon(
        market.admin(), "01HZZZZZZZZZZZZZZZZZZZZZZZ", "Spring", 1000, expires_at
    )
    assert market.refused(catalog.issue_coupon, command, NotFound).resource == "user"


def test_coupon_with_an_expiry_without_time_zone_is_invalid_field(market: Market) -> None:
    command = catalog.IssueCoupon(
        market.admin(), market.signed_up(), "Spring", 1000, datetime(2025, 4, 1)
    )
    market.refused(catalog.issue_coupon, command, InvalidField)


@pytest.mark.parametrize(
    ("name", "discount", "error"),
    [
        ("Spring", 0, InvalidAmount),
        ("Spring", 10**9 + 1, InvalidAmount),
        ("x" * 101, 10, InvalidField),
    ],
)
def test_coupon_with_a_bad_amount_or_name_is_refused(
    market: Market, name: str, discount: int, error: type[DomainError]
) -> None:
    expires_at = market.clock() + timedelta(days=1)
    command = catalog.IssueCoupon(market.admin(), market.signed_up(), name, discount, expires_at)
    market.refused(catalog.issue_coupon, command, error)


def test_coupon_issued_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    expires_at = market.clock() + timedelta(days=1)
    command = catalog.IssueCoupon(
        "01HZZZZZZZZZZZZZZZZZZZZZZZ", market.signed_up(), "Spring", 1000, expires_at
    )
    market.refused(catalog.issue_coupon, command, Unauthenticated)


# --- sell bids -----------------------------------------------------------------------------


def test_sell_bid_attaches_the_uploaded_image_and_opens_the_ask(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id, size=4096)
    market.clock.advance()
    command = trading.PlaceSellBid(seller_id, product_id, 4000, image_id)
    placed, committed = market.commit(trading.place_sell_bid, command)
    assert placed.status is BidStatus.OPEN
    ask = market.ask(placed.bid_id)
    assert (ask.product_id, ask.seller_id, ask.price, ask.image_id, ask.status) == (
        product_id,
        seller_id,
        4000,
        image_id,
        BidStatus.OPEN,
    )
    image = market.image(image_id)
    assert (image.status, image.size_bytes, image.attached_at) == (
        ImageStatus.ATTACHED,
        4096,
        market.clock(),
    )
    assert market.written(committed) == {
        ("SellBidPlaced", placed.bid_id, 1),
        ("ImageAttached", image_id, 2),
    }


def test_sell_bid_with_missing_upload_is_image_unusable(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.requested_image(seller_id)
    command = trading.PlaceSellBid(seller_id, product_id, 4000, image_id)
    market.refused(trading.place_sell_bid, command, ImageUnusable)


@pytest.mark.parametrize(
    ("size", "content_type"),
    [(MAX_IMAGE_BYTES + 1, "image/png"), (2048, "application/pdf"), (2048, None)],
)
def test_sell_bid_with_an_oversized_or_non_image_upload_is_image_unusable(
    market: Market, size: int, content_type: str | None
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.requested_image(seller_id)
    market.images.put(s3_key_for(seller_id, image_id), size=size, content_type=content_type)
    command = trading.PlaceSellBid(seller_id, product_id, 4000, image_id)
    market.refused(trading.place_sell_bid, command, ImageUnusable)


def test_sell_bid_with_an_image_of_exactly_5_mib_is_placed(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id, size=MAX_IMAGE_BYTES, content_type="image/webp")
    command = trading.PlaceSellBid(seller_id, product_id, 4000, image_id)
    assert market.run(trading.place_sell_bid, command).status is BidStatus.OPEN


def test_other_users_image_is_not_found(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    someone_elses = market.uploaded_image(market.signed_up())
    command = trading.PlaceSellBid(seller_id, product_id, 4000, someone_elses)
    assert market.refused(trading.place_sell_bid, command, NotFound).resource == "image"


def test_sell_bid_with_an_image_already_on_an_ask_is_image_unusable(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id)
    market.run(trading.place_sell_bid, trading.PlaceSellBid(seller_id, product_id, 4000, image_id))
    command = trading.PlaceSellBid(seller_id, product_id, 4500, image_id)
    market.refused(trading.place_sell_bid, command, ImageUnusable)


def test_sell_bid_for_an_unknown_product_or_image_is_not_found(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id)
    unknown = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    command = trading.PlaceSellBid(seller_id, unknown, 4000, image_id)
    assert market.refused(trading.place_sell_bid, command, NotFound).resource == "product"
    command = trading.PlaceSellBid(seller_id, product_id, 4000, unknown)
    assert market.refused(trading.place_sell_bid, command, NotFound).resource == "image"


@pytest.mark.parametrize("price", [5000, 4000])
def test_sell_bid_at_or_below_the_highest_buy_bid_crosses_the_book(
    market: Market, price: int
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 4000)
    market.open_bid(product_id, 5000)
    image_id = market.uploaded_image(seller_id)
    command = trading.PlaceSellBid(seller_id, product_id, price, image_id)
    market.refused(trading.place_sell_bid, command, CrossesBook)


def test_sell_bid_above_the_highest_buy_bid_is_placed(market: Market) -> None:
    product_id = market.new_product()
    market.open_bid(product_id, 5000)
    assert market.ask(market.open_ask(product_id, 5001)).status is BidStatus.OPEN


def test_a_cancelled_buy_bid_no_longer_blocks_a_lower_ask(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=5000)
    bid_id = market.open_bid(product_id, 5000, buyer_id)
    market.run(trading.cancel_buy_bid, trading.CancelBuyBid(buyer_id, bid_id))
    assert market.ask(market.open_ask(product_id, 4000)).price == 4000


@pytest.mark.parametrize("price", [0, -4000, 10**9 + 1])
def test_bids_at_a_non_positive_or_absurd_price_are_invalid_amount(
    market: Market, price: int
) -> None:
    product_id, trader_id = market.new_product(), market.signed_up(points=10_000)
    image_id = market.uploaded_image(trader_id)
    sell = trading.PlaceSellBid(trader_id, product_id, price, image_id)
    market.refused(trading.place_sell_bid, sell, InvalidAmount)
    buy = trading.PlaceBuyBid(trader_id, product_id, price)
    market.refused(trading.place_buy_bid, buy, InvalidAmount)


# The API refuses such prices before the handler runs; the handlers of the other commands
# re-check them (require_points), these two do not.
@pytest.mark.parametrize("price", [0, -4000])
def test_buy_now_at_a_non_positive_price_is_invalid_amount(market: Market, price: int) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=10_000)
    market.open_ask(product_id, 4000)
    market.refused(trading.buy_now, trading.BuyNow(buyer_id, product_id, price), InvalidAmount)


@pytest.mark.parametrize("price", [0, -4000])
def test_sell_now_at_a_non_positive_price_is_invalid_amount_not_a_sale(
    market: Market, price: int
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 3000)
    image_id = market.uploaded_image(seller_id)
    command = trading.SellNow(seller_id, product_id, price, image_id)
    market.refused(trading.sell_now, command, InvalidAmount)


def test_sell_bid_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id)
    command = trading.PlaceSellBid("01HZZZZZZZZZZZZZZZZZZZZZZZ", product_id, 4000, image_id)
    market.refused(trading.place_sell_bid, command, Unauthenticated)


def test_owner_cancels_an_open_sell_bid_and_its_image_stays_attached(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    ask_id = market.open_ask(product_id, 4000, seller_id)
    _, committed = market.commit(trading.cancel_sell_bid, trading.CancelSellBid(seller_id, ask_id))
    ask = market.ask(ask_id)
    assert ask.status is BidStatus.CANCELLED
    assert market.image(ask.image_id).status is ImageStatus.ATTACHED
    assert market.written(committed) == {("SellBidCancelled", ask_id, 2)}


def test_cancel_sell_bid_by_a_stranger_is_not_found(market: Market) -> None:
    ask_id = market.open_ask(market.new_product(), 4000)
    command = trading.CancelSellBid(market.signed_up(), ask_id)
    assert market.refused(trading.cancel_sell_bid, command, NotFound).resource == "sell bid"


def test_cancelling_a_sell_bid_twice_is_bid_not_open(market: Market) -> None:
    seller_id = market.signed_up()
    ask_id = market.open_ask(market.new_product(), 4000, seller_id)
    market.run(trading.cancel_sell_bid, trading.CancelSellBid(seller_id, ask_id))
    market.refused(trading.cancel_sell_bid, trading.CancelSellBid(seller_id, ask_id), BidNotOpen)


def test_cancel_of_an_unknown_sell_bid_is_not_found(market: Market) -> None:
    command = trading.CancelSellBid(market.signed_up(), "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    market.refused(trading.cancel_sell_bid, command, NotFound)


# --- buy bids ------------------------------------------------------------------------------


def test_buy_bid_escrows_its_price_from_available_points(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=10_000)
    command = trading.PlaceBuyBid(buyer_id, product_id, 4000)
    placed, committed = market.commit(trading.place_buy_bid, command)
    assert placed.status is BidStatus.OPEN
    bid = market.bid(placed.bid_id)
    assert (bid.product_id, bid.buyer_id, bid.price) == (product_id, buyer_id, 4000)
    assert market.balances(buyer_id) == (6000, 4000, 0)
    escrow = market.last_ledger_transaction()
    assert (escrow.reason, escrow.ref_id) == (LedgerReason.BUY_BID_ESCROW, placed.bid_id)
    assert market.written(committed) == {
        ("BuyBidPlaced", placed.bid_id, 1),
        ("UserBalancesChanged", buyer_id, 3),
    }
    ledger_balances_agree_with_users(market, buyer_id)


def test_buy_bid_without_enough_points_is_insufficient_points(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=3999)
    command = trading.PlaceBuyBid(buyer_id, product_id, 4000)
    market.refused(trading.place_buy_bid, command, InsufficientPoints)
    assert market.balances(buyer_id) == (3999, 0, 0)


@pytest.mark.parametrize("price", [4000, 4001])
def test_buy_bid_at_or_above_the_lowest_ask_crosses_the_book(market: Market, price: int) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=10_000)
    market.open_ask(product_id, 4500)
    market.open_ask(product_id, 4000)
    command = trading.PlaceBuyBid(buyer_id, product_id, price)
    market.refused(trading.place_buy_bid, command, CrossesBook)


def test_buy_bid_below_the_lowest_ask_is_placed(market: Market) -> None:
    product_id = market.new_product()
    market.open_ask(product_id, 4000)
    assert market.bid(market.open_bid(product_id, 3999)).status is BidStatus.OPEN


def test_buy_bid_for_an_unknown_product_is_not_found(market: Market) -> None:
    command = trading.PlaceBuyBid(market.signed_up(points=5000), "01HZZZZZZZZZZZZZZZZZZZZZZZ", 10)
    market.refused(trading.place_buy_bid, command, NotFound)


def test_buy_bid_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = trading.PlaceBuyBid("01HZZZZZZZZZZZZZZZZZZZZZZZ", market.new_product(), 10)
    market.refused(trading.place_buy_bid, command, Unauthenticated)


def test_cancelled_buy_bid_returns_escrow(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=10_000)
    bid_id = market.open_bid(product_id, 4000, buyer_id)
    _, committed = market.commit(trading.cancel_buy_bid, trading.CancelBuyBid(buyer_id, bid_id))
    assert market.bid(bid_id).status is BidStatus.CANCELLED
    assert market.balances(buyer_id) == (10_000, 0, 0)
    release = market.last_ledger_transaction()
    assert (release.reason, release.ref_id) == (LedgerReason.BUY_BID_RELEASE, bid_id)
    assert market.written(committed) == {
        ("BuyBidCancelled", bid_id, 2),
        ("UserBalancesChanged", buyer_id, 4),
    }
    ledger_balances_agree_with_users(market, buyer_id)


def test_cancel_buy_bid_by_a_stranger_is_not_found(market: Market) -> None:
    bid_id = market.open_bid(market.new_product(), 4000)
    command = trading.CancelBuyBid(market.signed_up(), bid_id)
    assert market.refused(trading.cancel_buy_bid, command, NotFound).resource == "buy bid"


def test_cancel_of_a_matched_buy_bid_is_bid_not_open(market: Market) -> None:
    product_id, buyer_id, seller_id = (
        market.new_product(),
        market.signed_up(points=5000),
        market.signed_up(),
    )
    bid_id = market.open_bid(product_id, 4000, buyer_id)
    image_id = market.uploaded_image(seller_id)
    market.run(trading.sell_now, trading.SellNow(seller_id, product_id, 4000, image_id))
    command = trading.CancelBuyBid(buyer_id, bid_id)
    market.refused(trading.cancel_buy_bid, command, BidNotOpen)
    assert market.balances(buyer_id) == (1000, 0, 0)


def test_cancel_of_an_unknown_buy_bid_is_not_found(market: Market) -> None:
    command = trading.CancelBuyBid(market.signed_up(), "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    market.refused(trading.cancel_buy_bid, command, NotFound)


# --- buy now -------------------------------------------------------------------------------


def test_buy_now_pays_the_asks_price_into_the_sellers_pending_points(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    buyer_id = market.signed_up(points=10_000)
    ask_id = market.open_ask(product_id, 4000, seller_id)
    market.clock.advance(timedelta(minutes=5))
    command = trading.BuyNow(buyer_id, product_id, 5000)
    purchase, committed = market.commit(trading.buy_now, command)
    assert (purchase.price, purchase.discount, purchase.paid, purchase.status) == (
        4000,
        0,
        4000,
        OrderStatus.PAID,
    )
    assert market.balances(buyer_id) == (6000, 0, 0)
    assert market.balances(seller_id) == (0, 0, 4000)
    ask = market.ask(ask_id)
    assert ask.status is BidStatus.MATCHED
    order = market.order(purchase.order_id)
    assert (order.buyer_id, order.seller_id, order.product_id) == (buyer_id, seller_id, product_id)
    assert (order.sell_bid_id, order.buy_bid_id, order.image_id, order.via) == (
        ask_id,
        None,
        ask.image_id,
        OrderVia.BUY_NOW,
    )
    assert order.created_at == market.clock()
    assert market.written(committed) == {
        ("SellBidMatched", ask_id, 2),
        ("OrderPlaced", purchase.order_id, 1),
        ("UserBalancesChanged", buyer_id, 3),
        ("UserBalancesChanged", seller_id, 2),
    }
    assert committed.versions == {
        f"sell_bid:{ask_id}": 2,
        f"order:{purchase.order_id}": 1,
        f"user:{buyer_id}": 3,
        f"user:{seller_id}": 2,
    }
    ledger_balances_agree_with_users(market, buyer_id, seller_id)


def test_buy_now_takes_the_cheapest_ask(market: Market) -> None:
    product_id = market.new_product()
    market.open_ask(product_id, 4500)
    cheapest = market.open_ask(product_id, 4000)
    market.open_ask(product_id, 4200)
    purchase = market.bought(product_id, market.signed_up(points=5000), 5000)
    assert market.order(purchase.order_id).sell_bid_id == cheapest


def test_buy_now_takes_the_oldest_of_equally_priced_asks(market: Market) -> None:
    product_id = market.new_product()
    market.clock.advance(timedelta(seconds=10))
    newer = market.open_ask(product_id, 4000)
    market.clock.advance(timedelta(seconds=-5))  # placed later, but created earlier
    older = market.open_ask(product_id, 4000)
    assert market.ask(older).created_at < market.ask(newer).created_at
    first = market.bought(product_id, market.signed_up(points=4000), 4000)
    second = market.bought(product_id, market.signed_up(points=4000), 4000)
    assert market.order(first.order_id).sell_bid_id == older
    assert market.order(second.order_id).sell_bid_id == newer


def test_buy_now_never_takes_the_buyers_own_ask(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=10_000)
    market.open_ask(product_id, 3000, buyer_id)
    other = market.open_ask(product_id, 4000)
    purchase = market.bought(product_id, buyer_id, 5000)
    assert market.order(purchase.order_id).sell_bid_id == other
    command = trading.BuyNow(buyer_id, product_id, 5000)
    market.refused(trading.buy_now, command, NoMatchingBid)


def test_buy_now_below_the_lowest_ask_is_no_matching_bid(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=10_000)
    ask_id = market.open_ask(product_id, 4000)
    market.refused(trading.buy_now, trading.BuyNow(buyer_id, product_id, 3999), NoMatchingBid)
    assert market.ask(ask_id).status is BidStatus.OPEN


def test_buy_now_ignores_cancelled_asks(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    ask_id = market.open_ask(product_id, 4000, seller_id)
    market.run(trading.cancel_sell_bid, trading.CancelSellBid(seller_id, ask_id))
    command = trading.BuyNow(market.signed_up(points=5000), product_id, 5000)
    market.refused(trading.buy_now, command, NoMatchingBid)


def test_buy_now_for_an_unknown_product_is_not_found(market: Market) -> None:
    command = trading.BuyNow(market.signed_up(points=5000), "01HZZZZZZZZZZZZZZZZZZZZZZZ", 5000)
    assert market.refused(trading.buy_now, command, NotFound).resource == "product"


def test_second_buyer_gets_no_matching_bid_and_keeps_points(market: Market) -> None:
    product_id = market.new_product()
    market.open_ask(product_id, 4000)
    first, second = market.signed_up(points=5000), market.signed_up(points=5000)
    market.bought(product_id, first, 4000)
    market.refused(trading.buy_now, trading.BuyNow(second, product_id, 4000), NoMatchingBid)
    assert market.balances(second) == (5000, 0, 0)


def test_buy_now_without_enough_points_is_insufficient_points_and_the_ask_stays_open(
    market: Market,
) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=3999)
    ask_id = market.open_ask(product_id, 4000)
    command = trading.BuyNow(buyer_id, product_id, 4000)
    market.refused(trading.buy_now, command, InsufficientPoints)
    assert market.ask(ask_id).status is BidStatus.OPEN
    assert market.balances(buyer_id) == (3999, 0, 0)


def test_buy_now_escrowed_points_do_not_pay_for_it(market: Market) -> None:
    product_id, other_product = market.new_product(), market.new_product()
    buyer_id = market.signed_up(points=5000)
    market.open_bid(other_product, 2000, buyer_id)
    market.open_ask(product_id, 4000)
    market.refused(trading.buy_now, trading.BuyNow(buyer_id, product_id, 4000), InsufficientPoints)


def test_buy_now_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    product_id = market.new_product()
    market.open_ask(product_id, 4000)
    command = trading.BuyNow("01HZZZZZZZZZZZZZZZZZZZZZZZ", product_id, 4000)
    market.refused(trading.buy_now, command, Unauthenticated)


def test_buy_now_with_coupon_pays_price_minus_discount_and_platform_pays_discount(
    market: Market,
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    buyer_id = market.signed_up(points=10_000)
    ask_id = market.open_ask(product_id, 4000, seller_id)
    coupon_id = market.coupon_for(buyer_id, 1000)
    command = trading.BuyNow(buyer_id, product_id, 4000, coupon_id)
    purchase, committed = market.commit(trading.buy_now, command)
    assert (purchase.price, purchase.discount, purchase.paid) == (4000, 1000, 3000)
    assert market.balances(buyer_id) == (7000, 0, 0)
    assert market.balances(seller_id) == (0, 0, 4000)
    payment = market.last_ledger_transaction()
    assert set(payment.postings) == {
        ledger.Posting(ledger.available(buyer_id), -3000),
        ledger.Posting(ledger.COUPON_SUBSIDY, -1000),
        ledger.Posting(ledger.pending(seller_id), 4000),
    }
    coupon = market.coupon(coupon_id)
    assert (coupon.status, coupon.order_id, coupon.used_at) == (
        CouponStatus.USED,
        purchase.order_id,
        market.clock(),
    )
    assert market.order(purchase.order_id).coupon_id == coupon_id
    assert market.written(committed) == {
        ("SellBidMatched", ask_id, 2),
        ("CouponUsed", coupon_id, 2),
        ("OrderPlaced", purchase.order_id, 1),
        ("UserBalancesChanged", buyer_id, 3),
        ("UserBalancesChanged", seller_id, 2),
    }


def test_coupon_discount_is_capped_at_the_price(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up()
    market.open_ask(product_id, 4000)
    coupon_id = market.coupon_for(buyer_id, 5000)
    command = trading.BuyNow(buyer_id, product_id, 4000, coupon_id)
    purchase = market.run(trading.buy_now, command)
    assert (purchase.price, purchase.discount, purchase.paid) == (4000, 4000, 0)
    assert market.balances(buyer_id) == (0, 0, 0)
    assert ledger.available(buyer_id) not in {
        posting.account for posting in market.last_ledger_transaction().postings
    }


def test_someone_elses_coupon_is_coupon_unavailable(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=5000)
    market.open_ask(product_id, 4000)
    coupon_id = market.coupon_for(market.signed_up())
    command = trading.BuyNow(buyer_id, product_id, 4000, coupon_id)
    market.refused(trading.buy_now, command, CouponUnavailable)


def test_used_coupon_is_coupon_unavailable(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=10_000)
    market.open_ask(product_id, 4000)
    market.open_ask(product_id, 4000)
    coupon_id = market.coupon_for(buyer_id)
    market.run(trading.buy_now, trading.BuyNow(buyer_id, product_id, 4000, coupon_id))
    command = trading.BuyNow(buyer_id, product_id, 4000, coupon_id)
    market.refused(trading.buy_now, command, CouponUnavailable)
    assert market.balances(buyer_id) == (7000, 0, 0)


def test_coupon_at_its_expiry_instant_is_coupon_unavailable(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=5000)
    ask_id = market.open_ask(product_id, 4000)
    coupon_id = market.coupon_for(buyer_id, expires_at=market.clock() + timedelta(hours=1))
    market.clock.advance(timedelta(hours=1))
    command = trading.BuyNow(buyer_id, product_id, 4000, coupon_id)
    market.refused(trading.buy_now, command, CouponUnavailable)
    assert market.ask(ask_id).status is BidStatus.OPEN
    assert market.coupon(coupon_id).status is CouponStatus.AVAILABLE


def test_unknown_coupon_is_coupon_unavailable(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=5000)
    market.open_ask(product_id, 4000)
    command = trading.BuyNow(buyer_id, product_id, 4000, "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    market.refused(trading.buy_now, command, CouponUnavailable)


# --- sell now ------------------------------------------------------------------------------


def test_sell_now_pays_the_bid_price_from_the_buyers_escrow(market: Market) -> None:
    product_id, buyer_id = market.new_product(), market.signed_up(points=5000)
    seller_id = market.signed_up()
    bid_id = market.open_bid(product_id, 5000, buyer_id)
    image_id = market.uploaded_image(seller_id)
    command = trading.SellNow(seller_id, product_id, 4500, image_id)
    sale, committed = market.commit(trading.sell_now, command)
    assert (sale.price, sale.status) == (5000, OrderStatus.PAID)
    assert market.balances(buyer_id) == (0, 0, 0)
    assert market.balances(seller_id) == (0, 0, 5000)
    assert market.bid(bid_id).status is BidStatus.MATCHED
    assert market.image(image_id).status is ImageStatus.ATTACHED
    order = market.order(sale.order_id)
    assert (order.buyer_id, order.seller_id, order.buy_bid_id, order.sell_bid_id) == (
        buyer_id,
        seller_id,
        bid_id,
        None,
    )
    assert (order.image_id, order.via, order.discount, order.paid) == (
        image_id,
        OrderVia.SELL_NOW,
        0,
        5000,
    )
    assert market.written(committed) == {
        ("BuyBidMatched", bid_id, 2),
        ("ImageAttached", image_id, 2),
        ("OrderPlaced", sale.order_id, 1),
        ("UserBalancesChanged", buyer_id, 4),
        ("UserBalancesChanged", seller_id, 2),
    }
    payment = market.last_ledger_transaction()
    assert (payment.reason, payment.ref_id) == (LedgerReason.SELL_NOW, sale.order_id)
    ledger_balances_agree_with_users(market, buyer_id, seller_id)


def test_sell_now_takes_the_highest_then_oldest_bid_never_the_sellers_own(
    market: Market,
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up(points=6000)
    market.open_bid(product_id, 6000, seller_id)
    market.open_bid(product_id, 4000)
    market.clock.advance()
    oldest_highest = market.open_bid(product_id, 5000)
    market.clock.advance()
    newer_highest = market.open_bid(product_id, 5000)
    taken = []
    for _ in range(3):
        image_id = market.uploaded_image(seller_id)
        command = trading.SellNow(seller_id, product_id, 4000, image_id)
        taken.append(market.order(market.run(trading.sell_now, command).order_id).buy_bid_id)
    assert taken[:2] == [oldest_highest, newer_highest]
    assert market.bid(present(taken[2])).price == 4000
    image_id = market.uploaded_image(seller_id)
    command = trading.SellNow(seller_id, product_id, 4000, image_id)
    market.refused(trading.sell_now, command, NoMatchingBid)


def test_sell_now_above_the_highest_bid_is_no_matching_bid(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 4000)
    image_id = market.uploaded_image(seller_id)
    command = trading.SellNow(seller_id, product_id, 4001, image_id)
    market.refused(trading.sell_now, command, NoMatchingBid)


def test_sell_now_with_missing_upload_is_image_unusable_and_the_bid_stays_open(
    market: Market,
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    bid_id = market.open_bid(product_id, 4000)
    image_id = market.requested_image(seller_id)
    command = trading.SellNow(seller_id, product_id, 4000, image_id)
    market.refused(trading.sell_now, command, ImageUnusable)
    assert market.bid(bid_id).status is BidStatus.OPEN


def test_sell_now_with_an_image_already_on_an_ask_is_image_unusable(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 4000)
    ask_id = market.open_ask(product_id, 9000, seller_id)
    command = trading.SellNow(seller_id, product_id, 4000, market.ask(ask_id).image_id)
    market.refused(trading.sell_now, command, ImageUnusable)


def test_sell_now_with_another_users_image_is_not_found(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 4000)
    someone_elses = market.uploaded_image(market.signed_up())
    command = trading.SellNow(seller_id, product_id, 4000, someone_elses)
    assert market.refused(trading.sell_now, command, NotFound).resource == "image"


def test_sell_now_for_an_unknown_product_is_not_found(market: Market) -> None:
    seller_id = market.signed_up()
    image_id = market.uploaded_image(seller_id)
    command = trading.SellNow(seller_id, "01HZZZZZZZZZZZZZZZZZZZZZZZ", 4000, image_id)
    assert market.refused(trading.sell_now, command, NotFound).resource == "product"


def test_sell_now_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    product_id = market.new_product()
    market.open_bid(product_id, 4000)
    command = trading.SellNow("01HZZZZZZZZZZZZZZZZZZZZZZZ", product_id, 4000, "01HZZZ")
    market.refused(trading.sell_now, command, Unauthenticated)


# --- confirming orders ---------------------------------------------------------------------


@pytest.fixture
def paid_order(market: Market) -> tuple[str, str, str]:
    """(order id, buyer id, seller id) of a PAID buy-now order."""
    product_id, seller_id = market.new_product(), market.signed_up()
    buyer_id = market.signed_up(points=4000)
    market.open_ask(product_id, 4000, seller_id)
    return market.bought(product_id, buyer_id, 4000).order_id, buyer_id, seller_id


def test_buyer_confirms_a_paid_order(market: Market, paid_order: tuple[str, str, str]) -> None:
    order_id, buyer_id, _ = paid_order
    confirmed_at = market.clock.advance(timedelta(hours=2))
    command = trading.ConfirmOrder(buyer_id, order_id)
    status, committed = market.commit(trading.confirm_order, command)
    assert status == OrderStatus.COMPLETED
    order = market.order(order_id)
    assert (order.status, order.completed_at) == (OrderStatus.COMPLETED, confirmed_at)
    assert market.written(committed) == {("OrderCompleted", order_id, 2)}
    assert market.events(committed)[0].to_payload()["automatically"] is False


def test_confirm_by_stranger_is_not_found(market: Market, paid_order: tuple[str, str, str]) -> None:
    command = trading.ConfirmOrder(market.signed_up(), paid_order[0])
    assert market.refused(trading.confirm_order, command, NotFound).resource == "order"


def test_confirm_by_the_seller_is_order_not_confirmable(
    market: Market, paid_order: tuple[str, str, str]
) -> None:
    order_id, _, seller_id = paid_order
    command = trading.ConfirmOrder(seller_id, order_id)
    market.refused(trading.confirm_order, command, OrderNotConfirmable)


def test_confirming_twice_is_order_not_confirmable(
    market: Market, paid_order: tuple[str, str, str]
) -> None:
    order_id, buyer_id, _ = paid_order
    market.run(trading.confirm_order, trading.ConfirmOrder(buyer_id, order_id))
    command = trading.ConfirmOrder(buyer_id, order_id)
    market.refused(trading.confirm_order, command, OrderNotConfirmable)


def test_confirm_of_an_unknown_order_is_not_found(market: Market) -> None:
    command = trading.ConfirmOrder(market.signed_up(), "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    market.refused(trading.confirm_order, command, NotFound)


# --- across commands -----------------------------------------------------------------------


def test_after_any_trades_balances_equal_ledger_sums_and_money_is_conserved(
    market: Market,
) -> None:
    product_id = market.new_product()
    alice, bob, carol = (market.signed_up(points=20_000) for _ in range(3))
    market.open_ask(product_id, 4000, alice)
    market.open_ask(product_id, 4200, carol)
    market.run(trading.buy_now, trading.BuyNow(bob, product_id, 4000, market.coupon_for(bob, 700)))
    bid_id = market.open_bid(product_id, 4100, alice)
    market.run(trading.cancel_buy_bid, trading.CancelBuyBid(alice, bid_id))
    market.open_bid(product_id, 4100, bob)
    image_id = market.uploaded_image(carol)
    market.run(trading.sell_now, trading.SellNow(carol, product_id, 4100, image_id))
    ledger_balances_agree_with_users(market, alice, bob, carol)
    sums = ledger.balances(market.store.ledger)
    users_total = sum(sum(market.balances(user_id)) for user_id in (alice, bob, carol))
    assert -sums[ledger.CHARGES] == 60_000
    assert users_total + sums.get(ledger.FEES, 0) + sums[ledger.COUPON_SUBSIDY] == 60_000
    assert sums[ledger.COUPON_SUBSIDY] == -700


def test_a_trade_that_fails_after_flushing_leaves_nothing_behind(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    buyer_id = market.signed_up(points=5000)
    ask_id = market.open_ask(product_id, 4000, seller_id)

    def buy_then_fail(uow: UnitOfWork, command: trading.BuyNow, ctx: CommandContext) -> None:
        trading.buy_now(uow, command, ctx)
        uow.flush()
        raise RuntimeError("storing the response failed")

    market.refused(buy_then_fail, trading.BuyNow(buyer_id, product_id, 4000), RuntimeError)
    assert market.ask(ask_id).status is BidStatus.OPEN
    assert (market.balances(buyer_id), market.balances(seller_id)) == ((5000, 0, 0), (0, 0, 0))
    assert market.store.rows["orders"] == {}


# --- idempotency, through the executor the API uses ----------------------------------------


def test_an_idempotent_retry_gets_the_first_response_and_charges_once(market: Market) -> None:
    user_id = market.signed_up()
    executor = CommandExecutor(lambda: FakeUnitOfWork(market.store), market.ctx)
    claim = IdempotencyClaim(user_id, "key-1", "POST", "/api/points/charge", "a" * 64)
    command = accounts.ChargePoints(user_id, 1000)

    def respond(balance: accounts.Balance, written: Committed) -> StoredResponse:
        return StoredResponse(
            200, str(balance.available_points), {"X-Ids": ",".join(written.outbox_ids)}
        )

    def charge(uow: UnitOfWork, ctx: CommandContext) -> accounts.Balance:
        return accounts.charge_points(uow, command, ctx)

    first = executor.execute_idempotent(charge, claim, respond)
    second = executor.execute_idempotent(charge, claim, respond)
    assert (first.replayed, second.replayed) == (False, True)
    assert second.response == first.response
    assert first.response.body == "1000"
    assert market.balances(user_id) == (1000, 0, 0)
    with pytest.raises(IdempotencyKeyReused):
        executor.execute_idempotent(
            charge,
            IdempotencyClaim(user_id, "key-1", "POST", "/api/points/charge", "b" * 64),
            respond,
        )
    assert market.balances(user_id) == (1000, 0, 0)


def test_an_idempotent_command_that_fails_leaves_the_key_free(market: Market) -> None:
    user_id = market.signed_up()
    executor = CommandExecutor(lambda: FakeUnitOfWork(market.store), market.ctx)
    claim = IdempotencyClaim(user_id, "key-2", "POST", "/api/points/charge", "c" * 64)

    def respond(balance: accounts.Balance, written: Committed) -> StoredResponse:
        return StoredResponse(200, str(balance.available_points), {})

    def charge(amount: int) -> Callable[[UnitOfWork, CommandContext], accounts.Balance]:
        return lambda uow, ctx: accounts.charge_points(
            uow, accounts.ChargePoints(user_id, amount), ctx
        )

    with pytest.raises(InvalidAmount):
        executor.execute_idempotent(charge(0), claim, respond)
    outcome = executor.execute_idempotent(charge(500), claim, respond)
    assert (outcome.replayed, outcome.response.body) == (False, "500")
