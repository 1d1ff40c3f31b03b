"""Buy-now, sell-now and confirming the orders they make. Every command handler runs the way the
command API runs it, on the in-memory fakes (tests/support/market.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.support.market import (
    Market,
    ledger_balances_agree_with_users,
    present,
)

from giftmarket.commands import trading
from giftmarket.commands.context import Unauthenticated
from giftmarket.domain import ledger
from giftmarket.domain.coupons import CouponStatus
from giftmarket.domain.errors import (
    CouponUnavailable,
    ImageUnusable,
    InsufficientPoints,
    NoMatchingBid,
    NotFound,
    OrderNotConfirmable,
)
from giftmarket.domain.images import ImageStatus
from giftmarket.domain.ledger import LedgerReason
from giftmarket.domain.orderbook import BidStatus
from giftmarket.domain.orders import OrderStatus, OrderVia

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
    command = trading.SellNow(seller_id, product_id, 4500, image_id, *market.voucher())
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
        command = trading.SellNow(seller_id, product_id, 4000, image_id, *market.voucher())
        taken.append(market.order(market.run(trading.sell_now, command).order_id).buy_bid_id)
    assert taken[:2] == [oldest_highest, newer_highest]
    assert market.bid(present(taken[2])).price == 4000
    image_id = market.uploaded_image(seller_id)
    command = trading.SellNow(seller_id, product_id, 4000, image_id, *market.voucher())
    market.refused(trading.sell_now, command, NoMatchingBid)


def test_sell_now_above_the_highest_bid_is_no_matching_bid(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 4000)
    image_id = market.uploaded_image(seller_id)
    command = trading.SellNow(seller_id, product_id, 4001, image_id, *market.voucher())
    market.refused(trading.sell_now, command, NoMatchingBid)


def test_sell_now_with_missing_upload_is_image_unusable_and_the_bid_stays_open(
    market: Market,
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    bid_id = market.open_bid(product_id, 4000)
    image_id = market.requested_image(seller_id)
    command = trading.SellNow(seller_id, product_id, 4000, image_id, *market.voucher())
    market.refused(trading.sell_now, command, ImageUnusable)
    assert market.bid(bid_id).status is BidStatus.OPEN


def test_sell_now_with_an_image_already_on_an_ask_is_image_unusable(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 4000)
    ask_id = market.open_ask(product_id, 9000, seller_id)
    command = trading.SellNow(
        seller_id, product_id, 4000, market.ask(ask_id).image_id, *market.voucher()
    )
    market.refused(trading.sell_now, command, ImageUnusable)


def test_sell_now_with_another_users_image_is_not_found(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 4000)
    someone_elses = market.uploaded_image(market.signed_up())
    command = trading.SellNow(seller_id, product_id, 4000, someone_elses, *market.voucher())
    assert market.refused(trading.sell_now, command, NotFound).resource == "image"


def test_sell_now_for_an_unknown_product_is_not_found(market: Market) -> None:
    seller_id = market.signed_up()
    image_id = market.uploaded_image(seller_id)
    command = trading.SellNow(
        seller_id, "01HZZZZZZZZZZZZZZZZZZZZZZZ", 4000, image_id, *market.voucher()
    )
    assert market.refused(trading.sell_now, command, NotFound).resource == "product"


def test_sell_now_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    product_id = market.new_product()
    market.open_bid(product_id, 4000)
    command = trading.SellNow(
        "01HZZZZZZZZZZZZZZZZZZZZZZZ", product_id, 4000, "01HZZZ", *market.voucher()
    )
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
