"""One contract, two implementations: the SQL unit of work on the real primary, and the
in-memory fake the functional tests use. Whatever a command can observe must be the same.

The database is shared by the whole session, so every test makes its own users, products
and keys with fresh ids and never assumes a table is empty.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from tests.support.fakes import FakeStore, FakeUnitOfWork

from giftmarket.adapters import tables
from giftmarket.adapters.db import Database
from giftmarket.adapters.unit_of_work import SqlAlchemyUnitOfWork
from giftmarket.commands.ports import (
    IdempotencyKeyReused,
    StoredResponse,
    TransientConflict,
    UnitOfWork,
)
from giftmarket.domain import ledger, marketplace
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon, CouponKind
from giftmarket.domain.errors import EmailTaken, VoucherDuplicate
from giftmarket.domain.ids import new_id
from giftmarket.domain.image_cleanup import (
    CleanupCandidate,
    CleanupReason,
    CleanupRules,
    ImageUsage,
)
from giftmarket.domain.images import Image
from giftmarket.domain.ledger import Bucket
from giftmarket.domain.orderbook import BidStatus, BuyBid, SellBid, best_ask, best_bid
from giftmarket.domain.orders import DisputeDecision, Order, OrderStatus, OrderVia
from giftmarket.domain.settlement import KST, Settlement, business_date_of
from giftmarket.domain.users import User
from giftmarket.domain.vouchers import Fingerprint, Voucher

NOW = datetime(2025, 3, 14, 12, 34, 56, 789_012, tzinfo=UTC)
HOUR = timedelta(hours=1)
OutboxRow = tuple[str, str, int, str]  # aggregate type, aggregate id, version, event type


@dataclass
class Backend:
    name: str
    new_uow: Callable[[], UnitOfWork]
    new_uow_with_ttl: Callable[[timedelta], UnitOfWork]
    outbox_rows: Callable[[Sequence[str]], list[OutboxRow]]
    ledger_balances: Callable[[str], dict[Bucket, int]]


def sql_backend(database: Database) -> Backend:
    def outbox_rows(ids: Sequence[str]) -> list[OutboxRow]:
        t = tables.outbox
        query = (
            select(t.c.aggregate_type, t.c.aggregate_id, t.c.aggregate_version, t.c.event_type)
            .where(t.c.id.in_(list(ids)))
            .order_by(t.c.id)
        )
        with database.writer_connection() as session:
            return [(a, b, int(c), d) for a, b, c, d in session.execute(query)]

    def ledger_balances(owner: str) -> dict[Bucket, int]:
        t = tables.ledger_entries
        query = (
            select(t.c.bucket, func.sum(t.c.amount))
            .where(t.c.account_owner == owner)
            .group_by(t.c.bucket)
        )
        with database.writer_connection() as session:
            return {Bucket(bucket): int(total) for bucket, total in session.execute(query)}

    return Backend(
        "sql",
        lambda: SqlAlchemyUnitOfWork(database),
        lambda ttl: SqlAlchemyUnitOfWork(database, idempotency_ttl=ttl),
        outbox_rows,
        ledger_balances,
    )


def fake_backend() -> Backend:
    store = FakeStore()

    def outbox_rows(ids: Sequence[str]) -> list[OutboxRow]:
        wanted = set(ids)
        return [
            (r.event.aggregate_type, r.event.aggregate_id, r.event.version, r.event.event_type)
            for r in sorted(store.outbox, key=lambda r: r.id)
            if r.id in wanted
        ]

    def ledger_balances(owner: str) -> dict[Bucket, int]:
        sums = ledger.balances(store.ledger)
        return {account.bucket: total for account, total in sums.items() if account.owner == owner}

    return Backend(
        "fake",
        lambda: FakeUnitOfWork(store),
        lambda ttl: FakeUnitOfWork(store, idempotency_ttl=ttl),
        outbox_rows,
        ledger_balances,
    )


@pytest.fixture(params=["sql", "fake"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "sql":
        # Only the SQL half needs the servers: the fake half runs anywhere.
        yield sql_backend(request.getfixturevalue("database"))
    else:
        yield fake_backend()


# --- building aggregates -------------------------------------------------------------------


def a_user(now: datetime = NOW, email: str | None = None) -> User:
    return User.sign_up(
        user_id=new_id(),
        email=email or f"{uuid.uuid4().hex}@example.com",
        nickname="nick",
        password_hash="hash:1",
        admin_emails=(),
        now=now,
    )


def a_welcome_coupon(user: User) -> Coupon:
    return Coupon.issue_welcome(coupon_id=new_id(), user_id=user.id, discount_amount=1000, now=NOW)


def a_product(now: datetime = NOW) -> Product:
    return Product.register(
        product_id=new_id(), name="Americano", brand="Starbucks", category="coffee",
        face_value=4500, now=now,
    )  # fmt: skip


def an_image(owner: User, now: datetime = NOW) -> Image:
    return Image.request(image_id=new_id(), owner_id=owner.id, content_type="image/png", now=now)


# Far enough ahead that buy-now may take every ask of these tests.
VALID_UNTIL = date(2090, 12, 31)


def a_voucher(expires_on: date = VALID_UNTIL, kids: tuple[str, ...] = ("test-1",)) -> Voucher:
    """Voucher facts with fresh fingerprints: no other voucher of the session collides."""
    digest = uuid.uuid4().hex * 2
    return Voucher("7890", expires_on, tuple(Fingerprint(kid, digest) for kid in kids))


def an_ask(
    product: Product,
    seller: User,
    image: Image,
    price: int,
    now: datetime = NOW,
    ask_id: str | None = None,
    expires_on: date = VALID_UNTIL,
) -> SellBid:
    return SellBid.place(
        sell_bid_id=ask_id or new_id(), product_id=product.id, seller_id=seller.id,
        price=price, image_id=image.id, voucher=a_voucher(expires_on), now=now,
    )  # fmt: skip


def a_bid(
    product: Product, buyer: User, price: int, now: datetime = NOW, bid_id: str | None = None
) -> BuyBid:
    return BuyBid.place(
        buy_bid_id=bid_id or new_id(), product_id=product.id, buyer_id=buyer.id,
        price=price, now=now,
    )  # fmt: skip


def repository(uow: UnitOfWork, aggregate: object) -> Any:
    return {
        User: uow.users,
        Product: uow.products,
        Image: uow.images,
        SellBid: uow.sell_bids,
        BuyBid: uow.buy_bids,
        Order: uow.orders,
        Coupon: uow.coupons,
        Settlement: uow.settlements,
    }[type(aggregate)]


def committed(backend: Backend, *aggregates: object) -> None:
    with backend.new_uow() as uow:
        for aggregate in aggregates:
            repository(uow, aggregate).add(aggregate)
        uow.commit()


def columns(aggregate: object) -> dict[str, object]:
    return {
        f.name: getattr(aggregate, f.name)
        for f in dataclasses.fields(aggregate)  # type: ignore[arg-type]
        if f.name != "events"
    }


def reloaded(backend: Backend, get: Callable[[UnitOfWork], Any]) -> Any:
    with backend.new_uow() as uow:
        found = get(uow)
    assert found is not None
    return found


def assert_round_trip(original: object, loaded: object) -> None:
    assert loaded is not original
    assert columns(loaded) == columns(original)
    # A StrEnum equals its value and True equals 1: the types must match as well.
    assert {name: type(value) for name, value in columns(loaded).items()} == {
        name: type(value) for name, value in columns(original).items()
    }
    for name, value in columns(loaded).items():
        if isinstance(value, datetime):
            assert value.utcoffset() == timedelta(0), f"{name} is not UTC-aware"
    assert loaded.events == []  # type: ignore[attr-defined]


def open_ask(
    backend: Backend,
    product: Product,
    price: int,
    seller: User | None = None,
    *,
    now: datetime = NOW,
    ask_id: str | None = None,
    expires_on: date | None = VALID_UNTIL,
) -> SellBid:
    """An open ask with its image; a new seller with it unless an existing one is given.
    `expires_on` None makes an ask from before vouchers had facts."""
    new_seller = [] if seller else [a_user()]
    seller = seller or new_seller[0]
    image = an_image(seller)
    ask = an_ask(product, seller, image, price, now, ask_id, expires_on or VALID_UNTIL)
    ask.expires_on = expires_on
    committed(backend, *new_seller, image, ask)
    return ask


# --- round trips ---------------------------------------------------------------------------


def test_a_user_round_trips_with_every_field_and_utc_microseconds(backend: Backend) -> None:
    signed_up_in_seoul = datetime(2025, 3, 14, 21, 0, 0, 123_456, tzinfo=KST)
    user = a_user(signed_up_in_seoul)
    committed(backend, user)
    loaded = reloaded(backend, lambda uow: uow.users.get(user.id))
    assert_round_trip(user, loaded)
    assert loaded.created_at == datetime(2025, 3, 14, 12, 0, 0, 123_456, tzinfo=UTC)


def test_a_product_image_and_bids_round_trip(backend: Backend) -> None:
    seller, buyer, product = a_user(), a_user(), a_product()
    image = an_image(seller)
    ask = an_ask(product, seller, image, 4000)
    bid = a_bid(product, buyer, 3000)
    committed(backend, seller, buyer, product, image, ask, bid)
    assert_round_trip(product, reloaded(backend, lambda uow: uow.products.get(product.id)))
    assert_round_trip(image, reloaded(backend, lambda uow: uow.images.get(image.id)))
    assert_round_trip(ask, reloaded(backend, lambda uow: uow.sell_bids.get(ask.id)))
    assert_round_trip(bid, reloaded(backend, lambda uow: uow.buy_bids.get(bid.id)))


def test_a_coupon_round_trips_with_its_issue_key(backend: Backend) -> None:
    user = a_user()
    coupon = Coupon.issue_welcome(
        coupon_id=new_id(), user_id=user.id, discount_amount=1000, now=NOW
    )
    committed(backend, user, coupon)
    loaded = reloaded(backend, lambda uow: uow.coupons.get(coupon.id))
    assert_round_trip(coupon, loaded)
    assert loaded.kind is CouponKind.WELCOME


def test_an_order_round_trips_through_payment_completion_and_settlement(
    backend: Backend,
) -> None:
    seller, buyer, product = a_user(), a_user(), a_product()
    image = an_image(seller)
    ask = an_ask(product, seller, image, 4000)
    order = Order.place(
        order_id=new_id(), product_id=product.id, buyer_id=buyer.id, seller_id=seller.id,
        price=4000, discount=500, via=OrderVia.BUY_NOW, image_id=image.id, now=NOW,
        sell_bid_id=ask.id, barcode_last4="7890", expires_on=VALID_UNTIL, inspect=False,
    )  # fmt: skip
    committed(backend, seller, buyer, product, image, ask, order)
    assert_round_trip(order, reloaded(backend, lambda uow: uow.orders.get(order.id)))

    with backend.new_uow() as uow:
        paid = uow.orders.get(order.id, lock=True)
        assert paid is not None
        paid.confirm(buyer.id, NOW + HOUR)
        settlement = Settlement.of_orders(
            settlement_id=new_id(), seller_id=seller.id, business_date=business_date_of(NOW),
            orders=[paid], fee_bps=500, now=NOW + 2 * HOUR,
        )  # fmt: skip
        uow.settlements.add(settlement)
        paid.settle(settlement.id, NOW + 2 * HOUR)
        written = uow.commit()
    assert written.versions == {f"order:{order.id}": 3, f"settlement:{settlement.id}": 1}
    assert_round_trip(paid, reloaded(backend, lambda uow: uow.orders.get(order.id)))


# --- identity map and isolation ------------------------------------------------------------


def test_one_unit_of_work_gives_one_object_per_aggregate(backend: Backend) -> None:
    product, seller, buyer = a_product(), a_user(), a_user()
    committed(backend, product, seller, buyer)
    ask = open_ask(backend, product, 4000, seller)
    with backend.new_uow() as uow:
        user = uow.users.get(seller.id)
        assert user is not None
        assert uow.users.get(seller.id) is user
        assert uow.users.get(seller.id, lock=True) is user
        assert seller.email is not None
        assert uow.users.get_by_email(seller.email) is user
        assert uow.users.lock_many([buyer.id, seller.id])[seller.id] is user
        taken = uow.sell_bids.take_best(product.id, 5000, buyer.id, NOW.date())
        assert taken is not None
        assert uow.sell_bids.get(ask.id) is taken


def test_an_added_aggregate_is_the_object_later_reads_return(backend: Backend) -> None:
    user = a_user()
    assert user.email is not None
    with backend.new_uow() as uow:
        uow.users.add(user)
        assert uow.users.get(user.id) is user
        assert uow.users.get_by_email(user.email.upper()) is user


def test_each_unit_of_work_loads_its_own_copy(backend: Backend) -> None:
    product = a_product()
    committed(backend, product)
    first = reloaded(backend, lambda uow: uow.products.get(product.id))
    second = reloaded(backend, lambda uow: uow.products.get(product.id))
    assert first is not second
    assert first is not product


def test_uncommitted_changes_are_invisible_to_the_next_unit_of_work(backend: Backend) -> None:
    product, user, stranger = a_product(), a_user(), a_user()
    committed(backend, product, user)
    with backend.new_uow() as uow:
        liked = uow.products.get(product.id, lock=True)
        assert liked is not None
        liked.like(user.id, False, NOW)
        uow.products.add_like(product.id, user.id, NOW)
        uow.users.add(stranger)
        uow.flush()
    with backend.new_uow() as uow:
        assert uow.users.get(stranger.id) is None
        assert uow.products.is_liked(product.id, user.id) is False
        unchanged = uow.products.get(product.id)
        assert unchanged is not None
        assert (unchanged.like_count, unchanged.version) == (0, 1)


def test_a_committed_change_is_saved_with_its_new_version(backend: Backend) -> None:
    seller, product = a_user(), a_product()
    image = an_image(seller)
    committed(backend, seller, product, image)
    ask = an_ask(product, seller, image, 4000)
    with backend.new_uow() as uow:
        pending = uow.images.get(image.id, lock=True)
        assert pending is not None
        pending.attach(
            by_user=seller.id, object_size=5 * 1024 * 1024, object_content_type="image/png",
            now=NOW + HOUR, sell_bid_id=ask.id,
        )  # fmt: skip
        uow.sell_bids.add(ask)
        uow.commit()
    loaded = reloaded(backend, lambda uow: uow.images.get(image.id))
    assert_round_trip(pending, loaded)
    assert (loaded.version, loaded.size_bytes, loaded.attached_at) == (2, 5242880, NOW + HOUR)


def test_saving_a_copy_that_changed_meanwhile_is_a_transient_conflict(backend: Backend) -> None:
    product, first_fan, second_fan = a_product(), a_user(), a_user()
    committed(backend, product, first_fan, second_fan)
    with pytest.raises(TransientConflict), backend.new_uow() as slow:
        stale = slow.products.get(product.id)
        assert stale is not None
        with backend.new_uow() as fast:
            fresh = fast.products.get(product.id)
            assert fresh is not None
            fresh.like(first_fan.id, False, NOW)
            fast.commit()
        stale.like(second_fan.id, False, NOW)
        slow.commit()
    kept = reloaded(backend, lambda uow: uow.products.get(product.id))
    assert (kept.like_count, kept.version) == (1, 2)


def product_in(uow: UnitOfWork, product_id: str) -> Product | None:
    return uow.products.get(product_id)


def ask_in(uow: UnitOfWork, ask_id: str) -> SellBid | None:
    return uow.sell_bids.get(ask_id)


def liked_products(backend: Backend) -> tuple[Product, Product, User]:
    """Two products, the first liked once already: liking both again in one unit of work
    changes each in its own way, from versions of its own."""
    liked, plain, fan, other = a_product(), a_product(), a_user(), a_user()
    committed(backend, liked, plain, fan, other)
    with backend.new_uow() as uow:
        once = uow.products.get(liked.id)
        assert once is not None
        once.like(other.id, False, NOW)
        uow.commit()
    return liked, plain, fan


def test_aggregates_of_one_table_changed_each_its_own_way_are_each_saved(
    backend: Backend,
) -> None:
    liked, plain, fan = liked_products(backend)
    with backend.new_uow() as uow:
        for product in (liked, plain):
            loaded = uow.products.get(product.id)
            assert loaded is not None
            loaded.like(fan.id, False, NOW + HOUR)
        uow.commit()
    for product, count in ((liked, 2), (plain, 1)):
        kept = reloaded(backend, partial(product_in, product_id=product.id))
        assert (kept.like_count, kept.version) == (count, count + 1)


def test_more_aggregates_changed_each_its_own_way_than_one_update_takes_are_all_saved(
    backend: Backend,
) -> None:
    seller, product = a_user(), a_product()
    committed(backend, seller, product)
    asks = [open_ask(backend, product, 4000 + i, seller) for i in range(11)]
    with backend.new_uow() as uow:
        for i, ask in enumerate(asks):
            loaded = uow.sell_bids.get(ask.id)
            assert loaded is not None
            loaded.cancel(seller.id, NOW + i * HOUR)
        uow.commit()
    kept = [reloaded(backend, partial(ask_in, ask_id=a.id)) for a in asks]
    assert [(a.status, a.updated_at, a.version) for a in kept] == [
        (BidStatus.CANCELLED, NOW + i * HOUR, 2) for i in range(11)
    ]


def test_one_of_them_changed_meanwhile_is_a_transient_conflict_and_neither_is_saved(
    backend: Backend,
) -> None:
    liked, plain, fan = liked_products(backend)
    with pytest.raises(TransientConflict), backend.new_uow() as slow:
        stale = [slow.products.get(product.id) for product in (liked, plain)]
        with backend.new_uow() as fast:
            fresh = fast.products.get(plain.id)
            assert fresh is not None
            fresh.like(fan.id, False, NOW)
            fast.commit()
        for product in stale:
            assert product is not None
            product.like(fan.id, False, NOW + HOUR)
        slow.commit()
    kept = [reloaded(backend, partial(product_in, product_id=p.id)) for p in (liked, plain)]
    assert [(p.like_count, p.version) for p in kept] == [(1, 2), (1, 2)]


def test_a_locked_read_of_an_aggregate_changed_meanwhile_is_a_transient_conflict(
    backend: Backend,
) -> None:
    product, fan = a_product(), a_user()
    committed(backend, product, fan)
    with pytest.raises(TransientConflict), backend.new_uow() as slow:
        assert slow.products.get(product.id) is not None
        with backend.new_uow() as fast:
            fresh = fast.products.get(product.id)
            assert fresh is not None
            fresh.like(fan.id, False, NOW)
            fast.commit()
        slow.products.get(product.id, lock=True)


def test_setting_a_password_hash_keeps_the_version(backend: Backend) -> None:
    user = a_user()
    committed(backend, user)
    with backend.new_uow() as uow:
        uow.users.set_password_hash(user.id, "hash:2")
        uow.commit()
    loaded = reloaded(backend, lambda uow: uow.users.get(user.id))
    assert (loaded.password_hash, loaded.version) == ("hash:2", 1)


def test_admin_rights_changes_are_saved_with_the_user_and_listed_newest_first(
    backend: Backend,
) -> None:
    user = a_user()
    committed(backend, user)
    for is_admin, later in ((True, 0), (False, 1), (True, 2)):
        with backend.new_uow() as uow:
            loaded = uow.users.get(user.id, lock=True)
            assert loaded is not None
            change = loaded.set_admin(is_admin, actor="ops", now=NOW + later * HOUR)
            assert change is not None
            uow.admin_rights.record(change)
            uow.commit()
    with backend.new_uow() as uow:
        admins = {admin.id for admin in uow.users.list_admins()}
        history = [c for c in uow.admin_rights.history(1000) if c.user_id == user.id]
    assert user.id in admins
    assert [(c.action.value, c.recorded_at) for c in history] == [
        ("grant", NOW + 2 * HOUR),
        ("revoke", NOW + HOUR),
        ("grant", NOW),
    ]
    assert {(c.email, c.actor) for c in history} == {(user.email, "ops")}
    assert reloaded(backend, lambda uow: uow.users.get(user.id)).version == 4


# --- users by email ------------------------------------------------------------------------


def test_a_taken_email_in_another_case_is_email_taken_and_the_rest_still_commits(
    backend: Backend,
) -> None:
    local = uuid.uuid4().hex
    first = a_user(email=f"{local}@Example.com")
    committed(backend, first)
    other = a_user()
    with backend.new_uow() as uow:
        with pytest.raises(EmailTaken):
            uow.users.add(a_user(email=f"{local.upper()}@EXAMPLE.COM"))
        uow.users.add(other)
        uow.commit()
    assert reloaded(backend, lambda uow: uow.users.get(other.id)).email == other.email


def test_get_by_email_ignores_case_and_surrounding_spaces(backend: Backend) -> None:
    user = a_user()
    assert user.email is not None
    email = user.email
    committed(backend, user)
    found = reloaded(backend, lambda uow: uow.users.get_by_email(f" {email.upper()} "))
    assert found.id == user.id
    with backend.new_uow() as uow:
        assert uow.users.get_by_email(f"missing-{user.email}") is None


def test_lock_many_returns_the_users_that_exist_by_id(backend: Backend) -> None:
    first, second = a_user(), a_user()
    committed(backend, first, second)
    with backend.new_uow() as uow:
        locked = uow.users.lock_many([second.id, new_id(), first.id, second.id])
        assert sorted(locked) == sorted([first.id, second.id])
        assert all(user.id == user_id for user_id, user in locked.items())


# --- coupons -------------------------------------------------------------------------------


def test_a_coupon_with_a_used_issue_key_is_not_added_and_the_rest_still_commits(
    backend: Backend,
) -> None:
    user = a_user()
    first = a_welcome_coupon(user)
    committed(backend, user, first)
    again = a_welcome_coupon(user)
    admin_coupons = [
        Coupon.issue(
            coupon_id=new_id(),
            user_id=user.id,
            name="Sale",
            discount_amount=500,
            expires_at=NOW + HOUR,
            kind=CouponKind.ADMIN,
            now=NOW,
        )  # fmt: skip
        for _ in range(2)
    ]
    with backend.new_uow() as uow:
        assert uow.coupons.add(again) is False
        assert again.events == []
        assert [uow.coupons.add(coupon) for coupon in admin_coupons] == [True, True]
        written = uow.commit()
    assert set(written.versions) == {f"coupon:{coupon.id}" for coupon in admin_coupons}
    with backend.new_uow() as uow:
        assert uow.coupons.get(again.id) is None
        assert all(uow.coupons.get(coupon.id) is not None for coupon in admin_coupons)


def test_an_issue_key_used_earlier_in_the_same_unit_of_work_is_refused(backend: Backend) -> None:
    user = a_user()
    committed(backend, user)
    with backend.new_uow() as uow:
        first, second = a_welcome_coupon(user), a_welcome_coupon(user)
        assert (uow.coupons.add(first), uow.coupons.add(second)) == (True, False)


# --- the order book ------------------------------------------------------------------------


def test_take_best_ask_is_cheapest_then_oldest_then_lowest_id_never_own_and_only_open(
    backend: Backend,
) -> None:
    product, other_product, buyer = a_product(), a_product(), a_user()
    committed(backend, product, other_product, buyer)
    open_ask(backend, other_product, 100)
    own = open_ask(backend, product, 1000, buyer)
    cancelled = open_ask(backend, product, 1000)
    with backend.new_uow() as uow:
        ask = uow.sell_bids.get(cancelled.id, lock=True)
        assert ask is not None
        ask.cancel(cancelled.seller_id, NOW)
        uow.commit()
    cancelled.cancel(cancelled.seller_id, NOW)
    # Ids run against the expected order, so only price, then time, then id can give it.
    ids = sorted(new_id() for _ in range(4))
    newest = open_ask(backend, product, 2000, now=NOW + 2 * HOUR, ask_id=ids[1])
    second = open_ask(backend, product, 2000, now=NOW + HOUR, ask_id=ids[3])
    first = open_ask(backend, product, 2000, now=NOW + HOUR, ask_id=ids[2])
    dearest = open_ask(backend, product, 3000, now=NOW - HOUR, ask_id=ids[0])
    book = {a.id: a for a in (own, cancelled, newest, second, first, dearest)}  # as it stands

    taken: list[str | None] = []
    for max_price in (5000, 5000, 5000, 2999, 3000, 5000):
        by_rule = best_ask(book.values(), buyer.id, max_price, NOW.date())  # the fake's rule
        with backend.new_uow() as uow:
            best = uow.sell_bids.take_best(product.id, max_price, buyer.id, NOW.date())
            assert (best and best.id) == (by_rule and by_rule.id)
            if best is not None:
                taken.append(best.id)
                best.match(new_id(), NOW)
                uow.commit()
                book[best.id].match(new_id(), NOW)
            else:
                taken.append(None)
    assert taken == [first.id, second.id, newest.id, None, dearest.id, None]


def test_take_best_bid_is_dearest_then_oldest_then_lowest_id_never_own_and_only_open(
    backend: Backend,
) -> None:
    product, other_product, seller = a_product(), a_product(), a_user()
    ids = sorted(new_id() for _ in range(4))
    buyers = [a_user() for _ in range(6)]
    cheapest = a_bid(product, buyers[0], 1000, NOW - HOUR, bid_id=ids[0])
    first = a_bid(product, buyers[1], 3000, NOW + HOUR, bid_id=ids[2])
    second = a_bid(product, buyers[2], 3000, NOW + HOUR, bid_id=ids[3])
    newest = a_bid(product, buyers[3], 3000, NOW + 2 * HOUR, bid_id=ids[1])
    cancelled = a_bid(product, buyers[4], 9000)
    elsewhere = a_bid(other_product, buyers[5], 9999)
    own = a_bid(product, seller, 8000)
    cancelled.cancel(buyers[4].id, NOW)
    committed(backend, product, other_product, seller, *buyers)
    committed(backend, newest, second, first, cheapest, cancelled, elsewhere, own)
    book = {b.id: b for b in (newest, second, first, cheapest, cancelled, own)}  # as it stands

    taken: list[str | None] = []
    for min_price in (1, 1, 1, 1001, 1000, 1):
        by_rule = best_bid(book.values(), seller.id, min_price)  # the rule the fake applies
        with backend.new_uow() as uow:
            best = uow.buy_bids.take_best(product.id, min_price, seller.id)
            assert (best and best.id) == (by_rule and by_rule.id)
            if best is not None:
                taken.append(best.id)
                best.match(new_id(), NOW)
                uow.commit()
                book[best.id].match(new_id(), NOW)
            else:
                taken.append(None)
    assert taken == [first.id, second.id, newest.id, None, cheapest.id, None]


def test_lowest_and_highest_open_prices_count_only_open_bids_of_the_product(
    backend: Backend,
) -> None:
    product, other_product, trader = a_product(), a_product(), a_user()
    committed(backend, product, other_product, trader)
    with backend.new_uow() as uow:
        assert uow.sell_bids.lowest_open_price(product.id) is None
        assert uow.buy_bids.highest_open_price(product.id) is None
    cheap = open_ask(backend, product, 1500)
    open_ask(backend, product, 2500)
    open_ask(backend, other_product, 100)
    dear = a_bid(product, trader, 1200)
    committed(backend, dear, a_bid(product, trader, 1100), a_bid(other_product, trader, 9000))
    with backend.new_uow() as uow:
        assert uow.sell_bids.lowest_open_price(product.id) == 1500
        assert uow.buy_bids.highest_open_price(product.id) == 1200
        closed_ask, closed_bid = uow.sell_bids.get(cheap.id), uow.buy_bids.get(dear.id)
        assert closed_ask is not None and closed_bid is not None
        closed_ask.cancel(cheap.seller_id, NOW)
        closed_bid.cancel(trader.id, NOW)
        uow.commit()
    with backend.new_uow() as uow:
        assert uow.sell_bids.lowest_open_price(product.id) == 2500
        assert uow.buy_bids.highest_open_price(product.id) == 1100


# --- likes ---------------------------------------------------------------------------------


def test_likes_are_added_seen_and_removed_per_user(backend: Backend) -> None:
    product, fan, other = a_product(), a_user(), a_user()
    committed(backend, product, fan, other)
    with backend.new_uow() as uow:
        assert uow.products.is_liked(product.id, fan.id) is False
        uow.products.add_like(product.id, fan.id, NOW)
        assert uow.products.is_liked(product.id, fan.id) is True
        uow.commit()
    with backend.new_uow() as uow:
        assert uow.products.is_liked(product.id, fan.id) is True
        assert uow.products.is_liked(product.id, other.id) is False
        uow.products.remove_like(product.id, other.id)  # not liked: nothing to remove
        uow.products.remove_like(product.id, fan.id)
        assert uow.products.is_liked(product.id, fan.id) is False
    with backend.new_uow() as uow:
        assert uow.products.is_liked(product.id, fan.id) is True  # that removal rolled back
        uow.products.remove_like(product.id, fan.id)
        uow.commit()
    with backend.new_uow() as uow:
        assert uow.products.is_liked(product.id, fan.id) is False


# --- idempotency ---------------------------------------------------------------------------

PATH = "/api/points/charge"


def test_a_completed_claim_is_replayed_and_reuse_with_another_request_is_refused(
    backend: Backend,
) -> None:
    scope, key = new_id(), uuid.uuid4().hex
    response = StoredResponse(201, '{"order_id":"x"}', {"X-Consistency-Token": "abc"})
    with backend.new_uow() as uow:
        assert uow.idempotency.claim(scope, key, "POST", PATH, "a" * 64, NOW) is None
        uow.idempotency.complete(scope, key, response)
        uow.commit()
    with backend.new_uow() as uow:
        assert uow.idempotency.claim(scope, key, "POST", PATH, "a" * 64, NOW + HOUR) == response
    for method, path, request_hash in [
        ("POST", PATH, "b" * 64),
        ("POST", "/api/images", "a" * 64),
        ("DELETE", PATH, "a" * 64),
    ]:
        with pytest.raises(IdempotencyKeyReused), backend.new_uow() as uow:
            uow.idempotency.claim(scope, key, method, path, request_hash, NOW + HOUR)
    with backend.new_uow() as uow:
        assert uow.idempotency.claim(new_id(), key, "POST", PATH, "b" * 64, NOW) is None


def test_a_claim_that_was_not_committed_leaves_the_key_free(backend: Backend) -> None:
    scope, key = new_id(), uuid.uuid4().hex
    with backend.new_uow() as uow:
        assert uow.idempotency.claim(scope, key, "POST", PATH, "a" * 64, NOW) is None
        uow.idempotency.complete(scope, key, StoredResponse(200, "{}", {}))
    with backend.new_uow() as uow:
        assert uow.idempotency.claim(scope, key, "POST", PATH, "b" * 64, NOW) is None


def test_an_expired_claim_is_taken_afresh(backend: Backend) -> None:
    scope, key = new_id(), uuid.uuid4().hex
    with backend.new_uow_with_ttl(timedelta(hours=2)) as uow:
        assert uow.idempotency.claim(scope, key, "POST", PATH, "a" * 64, NOW) is None
        uow.idempotency.complete(scope, key, StoredResponse(200, "{}", {}))
        uow.commit()
    with pytest.raises(IdempotencyKeyReused), backend.new_uow() as uow:
        uow.idempotency.claim(scope, key, "POST", PATH, "b" * 64, NOW + HOUR)
    with backend.new_uow() as uow:
        assert uow.idempotency.claim(scope, key, "POST", PATH, "b" * 64, NOW + 3 * HOUR) is None
        uow.commit()
    with backend.new_uow() as uow:
        replay = uow.idempotency.claim(scope, key, "POST", PATH, "b" * 64, NOW + 3 * HOUR)
        assert replay is not None


# --- commit, outbox and ledger -------------------------------------------------------------


def test_commit_returns_the_outbox_ids_and_versions_of_every_event_it_wrote(
    backend: Backend,
) -> None:
    user, product = a_user(), a_product()
    with backend.new_uow() as uow:
        uow.users.add(user)
        flushed = uow.flush()
        charge = marketplace.charge(user, 7000, new_id, NOW)
        uow.ledger.record(charge)
        uow.products.add(product)
        written = uow.commit()
        again = uow.commit()
    assert len(flushed.outbox_ids) == 1
    assert written.outbox_ids[:1] == flushed.outbox_ids
    assert len(set(written.outbox_ids)) == 4
    assert list(written.outbox_ids) == sorted(written.outbox_ids)
    assert written.versions == {f"user:{user.id}": 2, f"product:{product.id}": 1}
    assert again == written
    assert (user.events, product.events) == ([], [])
    assert backend.outbox_rows(written.outbox_ids) == [
        ("user", user.id, 1, "UserSignedUp"),
        ("user", user.id, 2, "PointsCharged"),
        ("user", user.id, 2, "UserBalancesChanged"),
        ("product", product.id, 1, "ProductRegistered"),
    ]
    assert backend.ledger_balances(user.id) == {Bucket.AVAILABLE: 7000}


def test_events_of_fetched_aggregates_are_written_in_the_order_they_were_seen(
    backend: Backend,
) -> None:
    product, fan = a_product(), a_user()
    committed(backend, product, fan)
    with backend.new_uow() as uow:
        liked = uow.products.get(product.id, lock=True)
        user = uow.users.get(fan.id, lock=True)
        assert liked is not None and user is not None
        uow.ledger.record(marketplace.charge(user, 100, new_id, NOW))
        liked.like(fan.id, False, NOW)
        written = uow.commit()
    assert backend.outbox_rows(written.outbox_ids) == [
        ("product", product.id, 2, "ProductLiked"),
        ("user", fan.id, 2, "PointsCharged"),
        ("user", fan.id, 2, "UserBalancesChanged"),
    ]


def test_without_commit_nothing_reaches_the_outbox_or_the_ledger(backend: Backend) -> None:
    user = a_user()
    committed(backend, user)
    with backend.new_uow() as uow:
        loaded = uow.users.get(user.id, lock=True)
        assert loaded is not None
        uow.ledger.record(marketplace.charge(loaded, 5000, new_id, NOW))
        flushed = uow.flush()
    assert len(flushed.outbox_ids) == 2
    assert backend.outbox_rows(flushed.outbox_ids) == []
    assert backend.ledger_balances(user.id) == {}
    assert reloaded(backend, lambda uow: uow.users.get(user.id)).available_points == 0


# --- what the settlement job reads ---------------------------------------------------------

# Far ahead of every other test's trades (and of today), so the settlement runs of other
# tests never take these orders, and the global reads below see ours where expected.
FUTURE = datetime(2090, 6, 1, 12, 0, tzinfo=UTC)


def an_order(
    backend: Backend,
    seller: User,
    paid_at: datetime,
    completed_at: datetime | None,
    *,
    delivered_at: datetime | None = None,
    inspect: bool = False,
) -> Order:
    """A committed order of `seller`'s, paid at `paid_at` (delivered then, unless inspected:
    then at `delivered_at`, if given), completed then if given."""
    buyer, product = a_user(), a_product()
    image = an_image(seller)
    order = Order.place(
        order_id=new_id(), product_id=product.id, buyer_id=buyer.id, seller_id=seller.id,
        price=4000, discount=0, via=OrderVia.SELL_NOW, image_id=image.id, now=paid_at,
        barcode_last4="7890", expires_on=VALID_UNTIL, inspect=inspect,
    )  # fmt: skip
    if inspect and delivered_at is not None:
        order.pass_inspection("admin", delivered_at)
    if completed_at is not None:
        order.confirm(buyer.id, completed_at)
    order.events.clear()
    committed(backend, buyer, product, image, order)
    return order


def test_settleable_orders_are_a_sellers_completed_ones_before_the_instant_in_id_order(
    backend: Backend,
) -> None:
    seller, other = a_user(), a_user()
    committed(backend, seller, other)
    end = FUTURE + 12 * HOUR
    early = an_order(backend, seller, FUTURE - 80 * HOUR, FUTURE)
    last = an_order(backend, seller, FUTURE, end - timedelta(microseconds=1))
    an_order(backend, seller, FUTURE, end)  # completed at the instant: not before it
    an_order(backend, seller, FUTURE, None)  # still PAID
    an_order(backend, other, FUTURE, FUTURE)

    with backend.new_uow() as uow:
        locked = uow.orders.lock_settleable(seller.id, end)
        assert [o.id for o in locked] == sorted([early.id, last.id])
        assert uow.orders.get(early.id) is next(o for o in locked if o.id == early.id)
        sellers = uow.orders.sellers_with_settleable(end)
    assert {seller.id, other.id} <= set(sellers)
    assert sellers == sorted(sellers)
    with backend.new_uow() as uow:
        assert other.id not in uow.orders.sellers_with_settleable(FUTURE)
        assert seller.id in uow.orders.sellers_with_settleable(FUTURE + timedelta(microseconds=1))


def test_orders_due_for_completion_are_paid_ones_up_to_the_instant_oldest_first(
    backend: Backend,
) -> None:
    seller = a_user()
    committed(backend, seller)
    oldest = an_order(backend, seller, FUTURE - 2 * HOUR, None)
    at_cutoff = an_order(backend, seller, FUTURE, None)
    an_order(backend, seller, FUTURE + timedelta(microseconds=1), None)
    completed = an_order(backend, seller, FUTURE - 3 * HOUR, FUTURE - HOUR)

    with backend.new_uow() as uow:
        due = uow.orders.lock_due_for_completion(FUTURE, 100_000)
    mine = [o.id for o in due if o.seller_id == seller.id]
    assert mine == [oldest.id, at_cutoff.id]
    assert completed.id not in {o.id for o in due}
    delivered = [o.delivered_at for o in due]
    assert None not in delivered
    assert delivered == sorted(d for d in delivered if d is not None)
    with backend.new_uow() as uow:
        assert len(uow.orders.lock_due_for_completion(FUTURE, 1)) == 1


def test_a_settlement_is_found_by_seller_and_business_date(backend: Backend) -> None:
    seller = a_user()
    committed(backend, seller)
    order = an_order(backend, seller, FUTURE - HOUR, FUTURE)
    day = business_date_of(FUTURE)
    settlement = Settlement.of_orders(
        settlement_id=new_id(), seller_id=seller.id, business_date=day, orders=[order],
        fee_bps=500, now=FUTURE + HOUR,
    )  # fmt: skip
    committed(backend, settlement)

    found = reloaded(backend, lambda uow: uow.settlements.find(seller.id, day))
    assert_round_trip(settlement, found)
    with backend.new_uow() as uow:
        assert uow.settlements.find(seller.id, day + timedelta(days=1)) is None
        assert uow.settlements.find(a_user().id, day) is None


# --- the image cleanup's reads -------------------------------------------------------------


def attached_to_an_ask(seller: User, product: Product, at: datetime) -> tuple[Image, SellBid]:
    image = an_image(seller, at)
    ask = an_ask(product, seller, image, 5000, at)
    image.attach(
        by_user=seller.id, object_size=1024, object_content_type="image/png", now=at,
        sell_bid_id=ask.id,
    )  # fmt: skip
    return image, ask


def test_cleanup_candidates_are_old_uploads_unfinished_deletions_and_long_cancelled_asks(
    backend: Backend,
) -> None:
    seller, product = a_user(), a_product()
    rules = CleanupRules(NOW)
    day, tick = timedelta(days=1), timedelta(microseconds=1)
    old_upload, young_upload = an_image(seller, NOW - day - tick), an_image(seller, NOW - day)
    deleting = an_image(seller, NOW)
    deleting.begin_deletion(reason="abandoned_upload", now=NOW)
    long_cancelled, ask_long = attached_to_an_ask(seller, product, NOW - 30 * day)
    ask_long.cancel(seller.id, NOW - 7 * day - tick)
    lately_cancelled, ask_late = attached_to_an_ask(seller, product, NOW - 30 * day)
    ask_late.cancel(seller.id, NOW - 7 * day)
    still_open, ask_open = attached_to_an_ask(seller, product, NOW - 30 * day)
    images = (old_upload, young_upload, deleting, long_cancelled, lately_cancelled, still_open)
    committed(backend, seller, product, *images, ask_long, ask_late, ask_open)
    mine = {image.id for image in images}

    with backend.new_uow() as uow:
        found = [
            c
            for c in uow.images.cleanup_candidates(rules, after="", limit=10**6)
            if c.image_id in mine
        ]
        after_first = uow.images.cleanup_candidates(rules, after=found[0].image_id, limit=1)

    assert found == sorted(
        [
            CleanupCandidate(old_upload.id, old_upload.s3_key, CleanupReason.ABANDONED_UPLOAD),
            CleanupCandidate(deleting.id, deleting.s3_key, CleanupReason.UNFINISHED_DELETION),
            CleanupCandidate(long_cancelled.id, long_cancelled.s3_key, CleanupReason.CANCELLED_ASK),
        ],
        key=lambda c: c.image_id,
    )
    assert len(after_first) == 1 and after_first[0].image_id > found[0].image_id


def test_image_usage_names_the_ask_and_orders_and_leaves_out_unused_images(
    backend: Backend,
) -> None:
    seller, buyer, product = a_user(), a_user(), a_product()
    unused = an_image(seller)
    in_ask, ask = attached_to_an_ask(seller, product, NOW - HOUR)
    sold_now = an_image(seller)
    order = Order.place(
        order_id=new_id(), product_id=product.id, buyer_id=buyer.id, seller_id=seller.id,
        price=4000, discount=0, via=OrderVia.SELL_NOW, image_id=sold_now.id, now=NOW,
        barcode_last4="7890", expires_on=VALID_UNTIL, inspect=False,
    )  # fmt: skip
    committed(backend, seller, buyer, product, unused, in_ask, ask, sold_now, order)

    with backend.new_uow() as uow:
        usage = uow.images.usage([unused.id, in_ask.id, sold_now.id])
        many = uow.images.get_many([sold_now.id, unused.id, new_id()], lock=True)
        same = uow.images.get(unused.id)
        keys = uow.images.existing_keys([unused.s3_key, f"images/{seller.id}/{new_id()}"])

    assert usage == {
        in_ask.id: ImageUsage(BidStatus.OPEN, NOW - HOUR, in_order=False),
        sold_now.id: ImageUsage(in_order=True),
    }
    assert list(many) == sorted([sold_now.id, unused.id]) and many[unused.id] is same
    assert keys == {unused.s3_key}


def an_order_in(uow: UnitOfWork, order_id: str) -> Order | None:
    return uow.orders.get(order_id)


def test_orders_changed_alike_are_all_saved_and_one_changed_meanwhile_fails_them_all(
    backend: Backend,
) -> None:
    seller = a_user()
    committed(backend, seller)
    orders = [an_order(backend, seller, FUTURE, None) for _ in range(4)]
    due = FUTURE + 72 * HOUR
    with backend.new_uow() as uow:
        for order in orders[:2]:
            loaded = uow.orders.get(order.id)
            assert loaded is not None and loaded.complete_if_due(due)
        uow.commit()
    saved = [reloaded(backend, partial(an_order_in, order_id=o.id)) for o in orders[:2]]
    assert {(o.status, o.version, o.completed_at) for o in saved} == {
        (OrderStatus.COMPLETED, 2, due)
    }

    with pytest.raises(TransientConflict), backend.new_uow() as slow:
        stale = [slow.orders.get(o.id) for o in orders[2:]]
        with backend.new_uow() as fast:
            confirmed = fast.orders.get(orders[3].id, lock=True)
            assert confirmed is not None
            confirmed.confirm(orders[3].buyer_id, FUTURE + HOUR)
            fast.commit()
        for stale_order in stale:
            assert stale_order is not None and stale_order.complete_if_due(due)
        slow.commit()
    kept = [reloaded(backend, partial(an_order_in, order_id=o.id)) for o in orders[2:]]
    assert [(o.status, o.completed_at) for o in kept] == [
        (OrderStatus.PAID, None),
        (OrderStatus.COMPLETED, FUTURE + HOUR),
    ]


# --- vouchers ------------------------------------------------------------------------------


def test_take_best_ask_skips_vouchers_not_valid_on_the_takeable_day(backend: Backend) -> None:
    product, buyer = a_product(), a_user()
    committed(backend, product, buyer)
    day = date(2090, 6, 1)
    last_day = open_ask(backend, product, 1000, expires_on=day - timedelta(days=1))
    unknown = open_ask(backend, product, 1000, expires_on=None)
    on_day = open_ask(backend, product, 2000, expires_on=day)
    later = open_ask(backend, product, 3000, expires_on=day + timedelta(days=1))
    book = [last_day, unknown, on_day, later]

    for takeable_from, expected in [
        (day - timedelta(days=1), last_day),
        (day, on_day),
        (day + timedelta(days=1), later),
        (day + timedelta(days=2), None),
    ]:
        by_rule = best_ask(book, buyer.id, 5000, takeable_from)  # the fake's rule
        with backend.new_uow() as uow:
            best = uow.sell_bids.take_best(product.id, 5000, buyer.id, takeable_from)
        assert (best and best.id) == (by_rule and by_rule.id) == (expected and expected.id)


def test_lock_expiring_locks_open_asks_not_valid_on_the_day_and_those_of_unknown_expiry(
    backend: Backend,
) -> None:
    product = a_product()
    committed(backend, product)
    # Before every other test's vouchers, so the global read below sees ours where expected.
    day = date(2000, 1, 1)
    expired = open_ask(backend, product, 1000, expires_on=day - timedelta(days=1))
    unknown = open_ask(backend, product, 1000, expires_on=None)
    open_ask(backend, product, 1000, expires_on=day)
    cancelled = open_ask(backend, product, 1000, expires_on=day - timedelta(days=5))
    with backend.new_uow() as uow:
        ask = uow.sell_bids.get(cancelled.id, lock=True)
        assert ask is not None
        ask.cancel(cancelled.seller_id, NOW)
        uow.commit()

    with backend.new_uow() as uow:
        locked = uow.sell_bids.lock_expiring(day, 100_000)
        mine = [a.id for a in locked if a.product_id == product.id]
        assert mine == sorted([expired.id, unknown.id])
        assert uow.sell_bids.get(expired.id) is next(a for a in locked if a.id == expired.id)
        assert [a.id for a in locked] == sorted(a.id for a in locked)
        assert {a.status for a in locked} == {BidStatus.OPEN}
    with backend.new_uow() as uow:
        assert len(uow.sell_bids.lock_expiring(day, 1)) == 1


def test_orders_due_for_completion_count_from_delivery_and_skip_undelivered_ones(
    backend: Backend,
) -> None:
    seller = a_user()
    committed(backend, seller)
    paid_long_ago = FUTURE - 100 * HOUR
    delivered_in_time = an_order(
        backend, seller, paid_long_ago, None, delivered_at=FUTURE - HOUR, inspect=True
    )
    delivered_late = an_order(
        backend, seller, paid_long_ago, None, delivered_at=FUTURE + HOUR, inspect=True
    )
    still_inspecting = an_order(backend, seller, paid_long_ago, None, inspect=True)
    delivered_at_once = an_order(backend, seller, FUTURE - 2 * HOUR, None)

    with backend.new_uow() as uow:
        due = uow.orders.lock_due_for_completion(FUTURE, 100_000)
    mine = [o.id for o in due if o.seller_id == seller.id]
    # Oldest delivery first, whenever they were paid.
    assert mine == [delivered_at_once.id, delivered_in_time.id]
    assert delivered_late.id not in mine and still_inspecting.id not in mine
    with backend.new_uow() as uow:
        assert reloaded_status(uow, still_inspecting.id) is OrderStatus.INSPECTING


def reloaded_status(uow: UnitOfWork, order_id: str) -> OrderStatus:
    order = uow.orders.get(order_id)
    assert order is not None
    return order.status


def test_an_order_round_trips_through_inspection_dispute_and_refund(backend: Backend) -> None:
    seller = a_user()
    committed(backend, seller)
    order = an_order(backend, seller, NOW, None, inspect=True)
    assert_round_trip(order, reloaded(backend, partial(an_order_in, order_id=order.id)))

    with backend.new_uow() as uow:
        loaded = uow.orders.get(order.id, lock=True)
        assert loaded is not None
        loaded.pass_inspection("admin-1", NOW + HOUR)
        loaded.open_dispute(order.buyer_id, "the code was already used", NOW + 2 * HOUR)
        uow.commit()
    disputed = reloaded(backend, partial(an_order_in, order_id=order.id))
    assert (disputed.status, disputed.delivered_at, disputed.dispute_opened_at) == (
        OrderStatus.DISPUTED,
        NOW + HOUR,
        NOW + 2 * HOUR,
    )

    with backend.new_uow() as uow:
        loaded = uow.orders.get(order.id, lock=True)
        assert loaded is not None
        loaded.resolve_dispute("admin-2", DisputeDecision.REFUND, "upheld", NOW + 3 * HOUR)
        uow.commit()
        refunded = loaded
    assert_round_trip(refunded, reloaded(backend, partial(an_order_in, order_id=order.id)))


def registered(backend: Backend, voucher: Voucher, **listing: str) -> None:
    with backend.new_uow() as uow:
        uow.vouchers.register(voucher, now=NOW, **listing)
        uow.commit()


def test_a_registered_voucher_is_a_duplicate_for_any_other_listing(backend: Backend) -> None:
    product, seller = a_product(), a_user()
    committed(backend, product, seller)
    first, second = open_ask(backend, product, 4000), open_ask(backend, product, 4000)
    sold = an_order(backend, seller, NOW, None)
    voucher = a_voucher(kids=("k1", "k2"))
    registered(backend, voucher, sell_bid_id=first.id)

    for listing in ({"sell_bid_id": second.id}, {"order_id": sold.id}):
        with pytest.raises(VoucherDuplicate), backend.new_uow() as uow:
            uow.vouchers.register(voucher, now=NOW, **listing)
    # One fingerprint in common is enough: a listing after a rotation (a new key first).
    (_, old) = voucher.fingerprints
    rotated = Voucher("7890", VALID_UNTIL, (Fingerprint("k3", uuid.uuid4().hex * 2), old))
    with pytest.raises(VoucherDuplicate), backend.new_uow() as uow:
        uow.vouchers.register(rotated, now=NOW, sell_bid_id=second.id)
    # Another voucher is no duplicate, for an ask or for an order.
    registered(backend, a_voucher(kids=("k1", "k2")), sell_bid_id=second.id)
    registered(backend, a_voucher(kids=("k1", "k2")), order_id=sold.id)


def test_a_released_voucher_may_be_registered_again_and_an_order_keeps_its_own(
    backend: Backend,
) -> None:
    product, seller = a_product(), a_user()
    committed(backend, product, seller)
    first, second = open_ask(backend, product, 4000), open_ask(backend, product, 4000)
    sold = an_order(backend, seller, NOW, None)
    listed, kept = a_voucher(), a_voucher()
    registered(backend, listed, sell_bid_id=first.id)
    registered(backend, kept, order_id=sold.id)

    with backend.new_uow() as uow:  # released but not committed: still registered
        uow.vouchers.release(first.id)
    with pytest.raises(VoucherDuplicate), backend.new_uow() as uow:
        uow.vouchers.register(listed, now=NOW, sell_bid_id=second.id)

    with backend.new_uow() as uow:
        uow.vouchers.release(first.id)
        uow.vouchers.release(second.id)  # nothing registered for it: no error
        uow.commit()
    registered(backend, listed, sell_bid_id=second.id)

    with pytest.raises(VoucherDuplicate), backend.new_uow() as uow:
        uow.vouchers.register(kept, now=NOW, sell_bid_id=first.id)


def test_a_voucher_released_and_registered_again_in_one_unit_of_work(backend: Backend) -> None:
    product = a_product()
    committed(backend, product)
    first, second = open_ask(backend, product, 4000), open_ask(backend, product, 4000)
    voucher = a_voucher()
    registered(backend, voucher, sell_bid_id=first.id)

    with backend.new_uow() as uow:
        uow.vouchers.release(first.id)
        uow.vouchers.register(voucher, now=NOW, sell_bid_id=second.id)
        uow.commit()

    with pytest.raises(VoucherDuplicate), backend.new_uow() as uow:
        uow.vouchers.register(voucher, now=NOW, sell_bid_id=first.id)


def test_the_registry_table_refuses_a_duplicate_fingerprint_even_from_raw_sql(
    database: Database,
) -> None:
    backend = sql_backend(database)
    product = a_product()
    committed(backend, product)
    first, second = open_ask(backend, product, 4000), open_ask(backend, product, 4000)
    voucher = a_voucher()
    registered(backend, voucher, sell_bid_id=first.id)
    (fingerprint,) = voucher.fingerprints
    row = {
        "kid": fingerprint.kid,
        "digest": fingerprint.digest,
        "sell_bid_id": second.id,
        "order_id": None,
        "expires_on": VALID_UNTIL,
        "registered_at": NOW.replace(tzinfo=None),
    }

    with database.writer_connection() as session, pytest.raises(IntegrityError) as refused:
        session.execute(insert(tables.voucher_registry).values(**row))
    assert "1062" in str(refused.value.orig)  # ER_DUP_ENTRY: the unique key, not the code

    with database.writer_connection() as session:  # the same row for a new voucher goes in
        session.execute(
            insert(tables.voucher_registry).values(**row | {"digest": uuid.uuid4().hex * 2})
        )
        session.rollback()
