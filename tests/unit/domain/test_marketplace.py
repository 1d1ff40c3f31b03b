import copy
from datetime import date, datetime, timedelta

import pytest
from tests.unit.domain.factories import voucher

from giftmarket.domain import ledger, marketplace
from giftmarket.domain.coupons import Coupon, CouponKind, CouponStatus
from giftmarket.domain.errors import (
    BidNotOpen,
    CouponUnavailable,
    CrossesBook,
    ImageUnusable,
    InsufficientPoints,
    InvalidAmount,
    NoMatchingBid,
    NotFound,
)
from giftmarket.domain.ids import IdGenerator
from giftmarket.domain.images import MAX_IMAGE_BYTES, Image, ImageStatus
from giftmarket.domain.ledger import COUPON_SUBSIDY, FEES, Bucket, LedgerReason
from giftmarket.domain.orderbook import BidStatus, BuyBid, SellBid
from giftmarket.domain.orders import AUTO_COMPLETE_AFTER, Order, OrderStatus, OrderVia
from giftmarket.domain.settlement import business_date_of
from giftmarket.domain.users import Balances, User
from giftmarket.domain.vouchers import VoucherRules

pytestmark = pytest.mark.unit

PRODUCT = "product-1"
IMAGE_SIZE = 200_000
PNG = "image/png"
RULES = VoucherRules()  # automatic inspection: orders are delivered when placed


def member(user_id: str, now: datetime, ids: IdGenerator, points: int = 0) -> User:
    user = User.sign_up(
        user_id=user_id,
        email=f"{user_id}@example.com",
        nickname=user_id,
        password_hash="argon2-hash",
        admin_emails=(),
        now=now,
    )
    if points:
        marketplace.charge(user, points, ids, now)
    return user


def image_of(owner: User, ids: IdGenerator, now: datetime) -> Image:
    return Image.request(image_id=ids(), owner_id=owner.id, content_type=PNG, now=now)


def open_ask(seller: User, price: int, ids: IdGenerator, now: datetime) -> SellBid:
    return marketplace.place_sell_bid(
        seller.id,
        PRODUCT,
        price,
        image_of(seller, ids, now),
        IMAGE_SIZE,
        PNG,
        voucher(now),
        None,
        ids,
        now,
    )


def coupon_for(user: User, discount: int, ids: IdGenerator, now: datetime) -> Coupon:
    return Coupon.issue(
        coupon_id=ids(),
        user_id=user.id,
        name="spring sale",
        discount_amount=discount,
        expires_at=now + timedelta(days=7),
        kind=CouponKind.ADMIN,
        now=now,
    )


def snapshot(*aggregates: object) -> list[dict[str, object]]:
    return [copy.deepcopy(vars(aggregate)) for aggregate in aggregates]


# --- charge ------------------------------------------------------------------------------


def test_charge_adds_to_available_points(ids: IdGenerator, now: datetime) -> None:
    alice = member("alice", now, ids)

    transaction = marketplace.charge(alice, 5_000, ids, now)

    assert alice.balances == Balances(5_000, 0, 0)
    assert transaction.reason is LedgerReason.CHARGE
    assert transaction.changes_for("alice") == {Bucket.AVAILABLE: 5_000}


@pytest.mark.parametrize("amount", [0, -1, 10**9 + 1])
def test_charge_refuses_non_positive_or_absurd_amounts(
    amount: int, ids: IdGenerator, now: datetime
) -> None:
    alice = member("alice", now, ids)
    before = snapshot(alice)

    with pytest.raises(InvalidAmount):
        marketplace.charge(alice, amount, ids, now)

    assert snapshot(alice) == before


def test_charge_accepts_the_largest_amount(ids: IdGenerator, now: datetime) -> None:
    alice = member("alice", now, ids)

    marketplace.charge(alice, 10**9, ids, now)

    assert alice.available_points == 10**9


# --- buy bids ----------------------------------------------------------------------------


def test_placing_a_buy_bid_escrows_its_price(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)

    bid, escrow = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)

    assert bid.status is BidStatus.OPEN
    assert (bid.buyer_id, bid.price, bid.product_id) == ("bob", 4_000, PRODUCT)
    assert bob.balances == Balances(6_000, 4_000, 0)
    assert escrow.ref_id == bid.id


def test_buy_bid_beyond_available_points_is_refused_and_changes_nothing(
    ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids, points=3_999)
    before = snapshot(bob)

    with pytest.raises(InsufficientPoints):
        marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)

    assert snapshot(bob) == before


def test_buy_bid_at_the_lowest_ask_crosses_the_book(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    before = snapshot(bob)

    with pytest.raises(CrossesBook):
        marketplace.place_buy_bid(bob, PRODUCT, 4_000, 4_000, ids, now)

    assert snapshot(bob) == before


def test_buy_bid_below_the_lowest_ask_is_placed(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)

    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 3_999, 4_000, ids, now)

    assert bid.status is BidStatus.OPEN


@pytest.mark.parametrize("price", [0, -5, 10**9 + 1])
def test_buy_bid_price_must_be_positive_and_sane(
    price: int, ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids, points=10_000)

    with pytest.raises(InvalidAmount):
        marketplace.place_buy_bid(bob, PRODUCT, price, None, ids, now)


def test_cancelling_a_buy_bid_returns_its_escrow(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)

    release = marketplace.cancel_buy_bid(bob, bid, ids, now)

    assert bid.status is BidStatus.CANCELLED
    assert bob.balances == Balances(10_000, 0, 0)
    assert release.reason is LedgerReason.BUY_BID_RELEASE


def test_cancelling_someone_elses_buy_bid_is_not_found_and_changes_nothing(
    ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids, points=10_000)
    mallory = member("mallory", now, ids)
    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)
    before = snapshot(bob, mallory, bid)

    with pytest.raises(NotFound):
        marketplace.cancel_buy_bid(mallory, bid, ids, now)

    assert snapshot(bob, mallory, bid) == before


def test_cancelling_a_buy_bid_twice_is_refused_and_returns_escrow_once(
    ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids, points=10_000)
    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)
    marketplace.cancel_buy_bid(bob, bid, ids, now)

    with pytest.raises(BidNotOpen):
        marketplace.cancel_buy_bid(bob, bid, ids, now)

    assert bob.balances == Balances(10_000, 0, 0)


# --- sell bids ---------------------------------------------------------------------------


def test_placing_a_sell_bid_attaches_its_image(ids: IdGenerator, now: datetime) -> None:
    sally = member("sally", now, ids)
    image = image_of(sally, ids, now)

    ask = marketplace.place_sell_bid(
        sally.id, PRODUCT, 5_000, image, IMAGE_SIZE, PNG, voucher(now), 4_000, ids, now
    )

    assert (ask.status, ask.price, ask.image_id) == (BidStatus.OPEN, 5_000, image.id)
    assert image.status is ImageStatus.ATTACHED
    assert image.size_bytes == IMAGE_SIZE


def test_sell_bid_at_the_highest_buy_bid_crosses_and_leaves_the_image_pending(
    ids: IdGenerator, now: datetime
) -> None:
    sally = member("sally", now, ids)
    image = image_of(sally, ids, now)
    before = snapshot(image)

    with pytest.raises(CrossesBook):
        marketplace.place_sell_bid(
            sally.id, PRODUCT, 4_000, image, IMAGE_SIZE, PNG, voucher(now), 4_000, ids, now
        )

    assert snapshot(image) == before


def test_sell_bid_with_an_oversized_image_is_refused(ids: IdGenerator, now: datetime) -> None:
    sally = member("sally", now, ids)
    image = image_of(sally, ids, now)

    with pytest.raises(ImageUnusable):
        marketplace.place_sell_bid(
            sally.id, PRODUCT, 5_000, image, MAX_IMAGE_BYTES + 1, PNG, voucher(now), None, ids, now
        )

    assert image.status is ImageStatus.PENDING


def test_sell_bid_with_someone_elses_image_is_not_found(ids: IdGenerator, now: datetime) -> None:
    sally = member("sally", now, ids)
    mallory = member("mallory", now, ids)
    image = image_of(sally, ids, now)

    with pytest.raises(NotFound):
        marketplace.place_sell_bid(
            mallory.id, PRODUCT, 5_000, image, IMAGE_SIZE, PNG, voucher(now), None, ids, now
        )

    assert image.status is ImageStatus.PENDING


def test_cancelling_a_sell_bid_keeps_its_image_attached(ids: IdGenerator, now: datetime) -> None:
    sally = member("sally", now, ids)
    image = image_of(sally, ids, now)
    ask = marketplace.place_sell_bid(
        sally.id, PRODUCT, 5_000, image, IMAGE_SIZE, PNG, voucher(now), None, ids, now
    )

    marketplace.cancel_sell_bid(sally.id, ask, now)

    assert ask.status is BidStatus.CANCELLED
    assert image.status is ImageStatus.ATTACHED


def test_cancelling_someone_elses_sell_bid_is_not_found(ids: IdGenerator, now: datetime) -> None:
    sally = member("sally", now, ids)
    ask = open_ask(sally, 5_000, ids, now)

    with pytest.raises(NotFound):
        marketplace.cancel_sell_bid("mallory", ask, now)

    assert ask.status is BidStatus.OPEN


# --- buy now -----------------------------------------------------------------------------


def test_buy_now_charges_the_asks_price_not_the_buyers_limit(
    ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids, points=10_000)
    sally = member("sally", now, ids)
    ask = open_ask(sally, 4_000, ids, now)

    order, payment = marketplace.buy_now(bob, sally, ask, None, RULES, ids, now)

    assert bob.balances == Balances(6_000, 0, 0)
    assert sally.balances == Balances(0, 0, 4_000)
    assert ask.status is BidStatus.MATCHED
    assert (order.status, order.via) == (OrderStatus.PAID, OrderVia.BUY_NOW)
    assert (order.price, order.discount, order.paid) == (4_000, 0, 4_000)
    assert (order.buyer_id, order.seller_id, order.sell_bid_id) == ("bob", "sally", ask.id)
    assert order.image_id == ask.image_id
    assert payment.ref_id == order.id


def test_buy_now_with_a_coupon_has_the_platform_pay_the_discount(
    ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids, points=10_000)
    sally = member("sally", now, ids)
    ask = open_ask(sally, 4_000, ids, now)
    coupon = coupon_for(bob, 1_000, ids, now)

    order, payment = marketplace.buy_now(bob, sally, ask, coupon, RULES, ids, now)

    assert (order.price, order.discount, order.paid) == (4_000, 1_000, 3_000)
    assert order.coupon_id == coupon.id
    assert bob.available_points == 7_000
    assert sally.pending_points == 4_000
    assert ledger.balances([payment])[COUPON_SUBSIDY] == -1_000
    assert (coupon.status, coupon.order_id) == (CouponStatus.USED, order.id)


def test_coupon_bigger_than_the_price_makes_the_purchase_free(
    ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids)
    sally = member("sally", now, ids)
    ask = open_ask(sally, 800, ids, now)
    coupon = coupon_for(bob, 1_000, ids, now)

    order, _ = marketplace.buy_now(bob, sally, ask, coupon, RULES, ids, now)

    assert (order.discount, order.paid) == (800, 0)
    assert bob.balances == Balances(0, 0, 0)
    assert sally.pending_points == 800


def test_buyer_cannot_buy_own_ask(ids: IdGenerator, now: datetime) -> None:
    sally = member("sally", now, ids, points=10_000)
    ask = open_ask(sally, 4_000, ids, now)
    before = snapshot(sally, ask)

    with pytest.raises(NoMatchingBid):
        marketplace.buy_now(sally, sally, ask, None, RULES, ids, now)

    assert snapshot(sally, ask) == before


def test_buy_now_without_enough_points_changes_nothing(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=2_999)
    sally = member("sally", now, ids)
    ask = open_ask(sally, 4_000, ids, now)
    coupon = coupon_for(bob, 1_000, ids, now)
    before = snapshot(bob, sally, ask, coupon)

    with pytest.raises(InsufficientPoints):
        marketplace.buy_now(bob, sally, ask, coupon, RULES, ids, now)

    assert snapshot(bob, sally, ask, coupon) == before


def test_escrowed_points_cannot_pay_for_buy_now(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=5_000)
    sally = member("sally", now, ids)
    marketplace.place_buy_bid(bob, PRODUCT, 3_000, None, ids, now)
    ask = open_ask(sally, 4_000, ids, now)

    with pytest.raises(InsufficientPoints):
        marketplace.buy_now(bob, sally, ask, None, RULES, ids, now)

    assert bob.balances == Balances(2_000, 3_000, 0)


def test_buy_now_with_someone_elses_coupon_changes_nothing(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    carol = member("carol", now, ids)
    sally = member("sally", now, ids)
    ask = open_ask(sally, 4_000, ids, now)
    coupon = coupon_for(carol, 1_000, ids, now)
    before = snapshot(bob, sally, ask, coupon)

    with pytest.raises(CouponUnavailable):
        marketplace.buy_now(bob, sally, ask, coupon, RULES, ids, now)

    assert snapshot(bob, sally, ask, coupon) == before


def test_buy_now_with_an_expired_coupon_changes_nothing(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    sally = member("sally", now, ids)
    ask = open_ask(sally, 4_000, ids, now)
    coupon = coupon_for(bob, 1_000, ids, now - timedelta(days=7))
    before = snapshot(bob, sally, ask, coupon)

    with pytest.raises(CouponUnavailable):
        marketplace.buy_now(bob, sally, ask, coupon, RULES, ids, now)

    assert snapshot(bob, sally, ask, coupon) == before


def test_second_buyer_of_the_same_ask_is_refused_and_keeps_points(
    ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids, points=10_000)
    carol = member("carol", now, ids, points=10_000)
    sally = member("sally", now, ids)
    ask = open_ask(sally, 4_000, ids, now)
    marketplace.buy_now(bob, sally, ask, None, RULES, ids, now)
    before = snapshot(carol, sally, ask)

    with pytest.raises(BidNotOpen):
        marketplace.buy_now(carol, sally, ask, None, RULES, ids, now)

    assert snapshot(carol, sally, ask) == before


def test_buy_now_refuses_a_seller_who_does_not_own_the_ask(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    sally = member("sally", now, ids)
    carol = member("carol", now, ids)
    ask = open_ask(sally, 4_000, ids, now)

    with pytest.raises(ValueError):
        marketplace.buy_now(bob, carol, ask, None, RULES, ids, now)

    assert ask.status is BidStatus.OPEN


# --- sell now ----------------------------------------------------------------------------


def test_sell_now_is_paid_from_the_bids_escrow(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    sally = member("sally", now, ids)
    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)
    image = image_of(sally, ids, now)

    order, payment = marketplace.sell_now(
        sally, bob, bid, image, IMAGE_SIZE, PNG, voucher(now), RULES, ids, now
    )

    assert bob.balances == Balances(6_000, 0, 0)
    assert sally.balances == Balances(0, 0, 4_000)
    assert bid.status is BidStatus.MATCHED
    assert image.status is ImageStatus.ATTACHED
    assert (order.via, order.buy_bid_id, order.image_id) == (OrderVia.SELL_NOW, bid.id, image.id)
    assert (order.price, order.discount, order.paid) == (4_000, 0, 4_000)
    assert payment.reason is LedgerReason.SELL_NOW


def test_seller_cannot_sell_into_own_buy_bid(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)
    image = image_of(bob, ids, now)
    before = snapshot(bob, bid, image)

    with pytest.raises(NoMatchingBid):
        marketplace.sell_now(bob, bob, bid, image, IMAGE_SIZE, PNG, voucher(now), RULES, ids, now)

    assert snapshot(bob, bid, image) == before


def test_sell_now_with_a_missing_upload_changes_nothing(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    sally = member("sally", now, ids)
    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)
    image = image_of(sally, ids, now)
    before = snapshot(bob, sally, bid, image)

    with pytest.raises(ImageUnusable):
        marketplace.sell_now(sally, bob, bid, image, None, None, voucher(now), RULES, ids, now)

    assert snapshot(bob, sally, bid, image) == before


def test_sell_now_into_a_cancelled_bid_changes_nothing(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=10_000)
    sally = member("sally", now, ids)
    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)
    marketplace.cancel_buy_bid(bob, bid, ids, now)
    image = image_of(sally, ids, now)
    before = snapshot(bob, sally, bid, image)

    with pytest.raises(BidNotOpen):
        marketplace.sell_now(sally, bob, bid, image, IMAGE_SIZE, PNG, voucher(now), RULES, ids, now)

    assert snapshot(bob, sally, bid, image) == before


# --- completion and settlement -----------------------------------------------------------


def sold(price: int, ids: IdGenerator, now: datetime) -> tuple[User, User, Order]:
    bob = member("bob", now, ids, points=price)
    sally = member("sally", now, ids)
    order, _ = marketplace.buy_now(
        bob, sally, open_ask(sally, price, ids, now), None, RULES, ids, now
    )
    return bob, sally, order


def test_complete_due_orders_completes_only_orders_past_72_hours(
    ids: IdGenerator, now: datetime
) -> None:
    _, _, due = sold(1_000, ids, now)
    _, _, fresh = sold(1_000, ids, now + timedelta(hours=1))

    completed = marketplace.complete_due_orders([due, fresh], now + AUTO_COMPLETE_AFTER)

    assert completed == [due]
    assert fresh.status is OrderStatus.PAID


def test_settling_moves_pending_to_available_minus_the_fee(ids: IdGenerator, now: datetime) -> None:
    bob, sally, order = sold(10_000, ids, now)
    order.confirm(bob.id, now)

    settlement, payout = marketplace.settle_seller(
        sally, [order], 500, business_date_of(now), ids, now + timedelta(days=1)
    )

    assert (settlement.gross, settlement.fee, settlement.net) == (10_000, 500, 9_500)
    assert (settlement.order_count, settlement.seller_id) == (1, "sally")
    assert sally.balances == Balances(9_500, 0, 0)
    assert ledger.balances([payout])[FEES] == 500
    assert (order.status, order.settlement_id) == (OrderStatus.SETTLED, settlement.id)


def test_settling_an_unconfirmed_order_is_refused_and_changes_nothing(
    ids: IdGenerator, now: datetime
) -> None:
    _, sally, order = sold(10_000, ids, now)
    before = snapshot(sally, order)

    with pytest.raises(ValueError):
        marketplace.settle_seller(sally, [order], 500, business_date_of(now), ids, now)

    assert snapshot(sally, order) == before


def test_settling_refuses_orders_completed_after_the_business_date(
    ids: IdGenerator, now: datetime
) -> None:
    bob, sally, order = sold(10_000, ids, now)
    order.confirm(bob.id, now)

    with pytest.raises(ValueError):
        marketplace.settle_seller(sally, [order], 500, date(2025, 3, 13), ids, now)

    assert order.status is OrderStatus.COMPLETED


def test_settling_refuses_another_sellers_order_and_changes_nothing(
    ids: IdGenerator, now: datetime
) -> None:
    bob, sally, order = sold(10_000, ids, now)
    order.confirm(bob.id, now)
    before = snapshot(bob, order)

    with pytest.raises(ValueError):
        marketplace.settle_seller(bob, [order], 500, business_date_of(now), ids, now)

    assert snapshot(bob, order) == before


def test_settling_the_same_order_twice_in_one_run_is_refused(
    ids: IdGenerator, now: datetime
) -> None:
    bob, sally, order = sold(10_000, ids, now)
    order.confirm(bob.id, now)

    with pytest.raises(ValueError):
        marketplace.settle_seller(sally, [order, order], 500, business_date_of(now), ids, now)

    assert order.status is OrderStatus.COMPLETED
    assert sally.pending_points == 10_000


def test_settlement_fee_is_floored_per_order(ids: IdGenerator, now: datetime) -> None:
    bob = member("bob", now, ids, points=38)
    sally = member("sally", now, ids)
    orders = [
        marketplace.buy_now(bob, sally, open_ask(sally, 19, ids, now), None, RULES, ids, now)[0]
        for _ in range(2)
    ]
    for order in orders:
        order.confirm(bob.id, now)

    settlement, payout = marketplace.settle_seller(
        sally, orders, 500, business_date_of(now), ids, now
    )

    assert (settlement.gross, settlement.fee, settlement.net) == (38, 0, 38)
    assert FEES not in ledger.balances([payout])
    assert sally.balances == Balances(38, 0, 0)


def test_buy_bid_placed_by_the_service_matches_the_bids_own_events(
    ids: IdGenerator, now: datetime
) -> None:
    bob = member("bob", now, ids, points=10_000)

    bid, _ = marketplace.place_buy_bid(bob, PRODUCT, 4_000, None, ids, now)

    assert isinstance(bid, BuyBid)
    assert [event.event_type for event in bid.events] == ["BuyBidPlaced"]
    assert [event.event_type for event in bob.events][-1] == "UserBalancesChanged"
