"""Asks and bids: placing them on the book and cancelling them. Every command handler runs the way
the command API runs it, on the in-memory fakes (tests/support/market.py).
"""

from __future__ import annotations

import pytest
from tests.support.market import (
    Market,
    ledger_balances_agree_with_users,
)

from giftmarket.commands import trading
from giftmarket.commands.context import Unauthenticated
from giftmarket.domain.errors import (
    BidNotOpen,
    CrossesBook,
    ImageUnusable,
    InsufficientPoints,
    InvalidAmount,
    NotFound,
)
from giftmarket.domain.images import MAX_IMAGE_BYTES, ImageStatus, s3_key_for
from giftmarket.domain.ledger import LedgerReason
from giftmarket.domain.orderbook import BidStatus

# --- sell bids -----------------------------------------------------------------------------


def test_sell_bid_attaches_the_uploaded_image_and_opens_the_ask(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id, size=4096)
    market.clock.advance()
    barcode, expires_on = market.voucher()
    command = trading.PlaceSellBid(seller_id, product_id, 4000, image_id, barcode, expires_on)
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
    # The voucher's facts, never its barcode.
    assert (ask.barcode_last4, ask.expires_on) == (barcode[-4:], expires_on)
    assert barcode not in repr(vars(ask))
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
    command = trading.PlaceSellBid(seller_id, product_id, 4000, image_id, *market.voucher())
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
    command = trading.PlaceSellBid(seller_id, product_id, 4000, image_id, *market.voucher())
    market.refused(trading.place_sell_bid, command, ImageUnusable)


def test_sell_bid_with_an_image_of_exactly_5_mib_is_placed(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id, size=MAX_IMAGE_BYTES, content_type="image/webp")
    command = trading.PlaceSellBid(seller_id, product_id, 4000, image_id, *market.voucher())
    assert market.run(trading.place_sell_bid, command).status is BidStatus.OPEN


def test_other_users_image_is_not_found(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    someone_elses = market.uploaded_image(market.signed_up())
    command = trading.PlaceSellBid(seller_id, product_id, 4000, someone_elses, *market.voucher())
    assert market.refused(trading.place_sell_bid, command, NotFound).resource == "image"


def test_sell_bid_with_an_image_already_on_an_ask_is_image_unusable(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id)
    market.run(
        trading.place_sell_bid,
        trading.PlaceSellBid(seller_id, product_id, 4000, image_id, *market.voucher()),
    )
    command = trading.PlaceSellBid(seller_id, product_id, 4500, image_id, *market.voucher())
    market.refused(trading.place_sell_bid, command, ImageUnusable)


def test_sell_bid_for_an_unknown_product_or_image_is_not_found(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id)
    unknown = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    command = trading.PlaceSellBid(seller_id, unknown, 4000, image_id, *market.voucher())
    assert market.refused(trading.place_sell_bid, command, NotFound).resource == "product"
    command = trading.PlaceSellBid(seller_id, product_id, 4000, unknown, *market.voucher())
    assert market.refused(trading.place_sell_bid, command, NotFound).resource == "image"


@pytest.mark.parametrize("price", [5000, 4000])
def test_sell_bid_at_or_below_the_highest_buy_bid_crosses_the_book(
    market: Market, price: int
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    market.open_bid(product_id, 4000)
    market.open_bid(product_id, 5000)
    image_id = market.uploaded_image(seller_id)
    command = trading.PlaceSellBid(seller_id, product_id, price, image_id, *market.voucher())
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
    sell = trading.PlaceSellBid(trader_id, product_id, price, image_id, *market.voucher())
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
    command = trading.SellNow(seller_id, product_id, price, image_id, *market.voucher())
    market.refused(trading.sell_now, command, InvalidAmount)


def test_sell_bid_by_a_vanished_account_is_unauthenticated(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    image_id = market.uploaded_image(seller_id)
    command = trading.PlaceSellBid(
        "01HZZZZZZZZZZZZZZZZZZZZZZZ", product_id, 4000, image_id, *market.voucher()
    )
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
    market.run(
        trading.sell_now, trading.SellNow(seller_id, product_id, 4000, image_id, *market.voucher())
    )
    command = trading.CancelBuyBid(buyer_id, bid_id)
    market.refused(trading.cancel_buy_bid, command, BidNotOpen)
    assert market.balances(buyer_id) == (1000, 0, 0)


def test_cancel_of_an_unknown_buy_bid_is_not_found(market: Market) -> None:
    command = trading.CancelBuyBid(market.signed_up(), "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    market.refused(trading.cancel_buy_bid, command, NotFound)
