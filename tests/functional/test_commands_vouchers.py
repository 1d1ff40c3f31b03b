"""Voucher facts on the commands (PRODUCT.md, "Vouchers"): one barcode is on sale or sold once,
whoever lists it and under whichever key; an expiring voucher is refused, and buy-now and the
expiry job leave the vouchers inside the margin alone. On the in-memory fakes
(tests/support/market.py)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from tests.support.fakes import FakeBarcodes, fresh_barcode, valid_until
from tests.support.market import (
    Market,
    ledger_balances_agree_with_users,
)

from giftmarket.commands import trading
from giftmarket.domain import events
from giftmarket.domain.errors import (
    BidNotOpen,
    InvalidField,
    NoMatchingBid,
    VoucherDuplicate,
    VoucherExpiring,
)
from giftmarket.domain.images import ImageStatus
from giftmarket.domain.orderbook import BidStatus
from giftmarket.domain.orders import DisputeDecision, InspectionResult, OrderStatus
from giftmarket.jobs.expiry import expire_asks

pytestmark = pytest.mark.usefixtures("money_checked")


def listing(
    market: Market, product_id: str, seller_id: str, barcode: str, *, price: int = 4_000
) -> trading.PlaceSellBid:
    image_id = market.uploaded_image(seller_id)
    expires_on = valid_until(market.clock())
    return trading.PlaceSellBid(seller_id, product_id, price, image_id, barcode, expires_on)


def selling_now(
    market: Market, product_id: str, seller_id: str, barcode: str, *, price: int = 4_000
) -> trading.SellNow:
    image_id = market.uploaded_image(seller_id)
    expires_on = valid_until(market.clock())
    return trading.SellNow(seller_id, product_id, price, image_id, barcode, expires_on)


def registered_for(market: Market, *, sell_bid_id: str | None = None) -> int:
    return sum(1 for e in market.store.vouchers.values() if e.sell_bid_id == sell_bid_id)


# --- listing keeps the facts, never the barcode -------------------------------------------


def test_an_ask_keeps_the_last_four_digits_and_the_expiry_never_the_barcode(
    market: Market,
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    command = listing(market, product_id, seller_id, "8801234567890")

    placed, committed = market.commit(trading.place_sell_bid, command)

    ask = market.ask(placed.bid_id)
    assert (ask.barcode_last4, ask.expires_on) == ("7890", command.expires_on)
    assert "8801234567890" not in repr(ask) and "8801234567890" not in repr(command)
    (event,) = [e for e in market.events(committed) if isinstance(e, events.SellBidPlaced)]
    assert (event.barcode_last4, event.expires_on) == ("7890", command.expires_on)
    assert "8801234567890" not in str(event.to_payload())
    assert registered_for(market, sell_bid_id=ask.id) == 1
    assert all("8801234567890" not in digest for _, digest in market.store.vouchers)


@pytest.mark.parametrize("barcode", ["1234567", "1" * 33, "١٢٣٤٥٦٧٨٩", "12345678x"])
def test_a_malformed_barcode_is_refused_and_nothing_is_written(
    market: Market, barcode: str
) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()

    market.refused(
        trading.place_sell_bid, listing(market, product_id, seller_id, barcode), InvalidField
    )


# --- no double sale ------------------------------------------------------------------------


def test_the_same_seller_listing_one_barcode_twice_is_refused(market: Market) -> None:
    product_id, seller_id, barcode = market.new_product(), market.signed_up(), fresh_barcode()
    market.open_ask(product_id, 4_000, seller_id, barcode=barcode)

    market.refused(
        trading.place_sell_bid,
        listing(market, product_id, seller_id, barcode, price=5_000),
        VoucherDuplicate,
    )
    ledger_balances_agree_with_users(market, seller_id)


def test_another_seller_listing_a_listed_barcode_is_refused_even_on_another_product(
    market: Market,
) -> None:
    barcode = fresh_barcode()
    market.open_ask(market.new_product(), 4_000, market.signed_up(), barcode=barcode)
    other_product, other_seller = market.new_product(), market.signed_up()

    market.refused(
        trading.place_sell_bid,
        listing(market, other_product, other_seller, barcode),
        VoucherDuplicate,
    )


def test_selling_now_a_barcode_on_an_open_ask_is_refused_and_the_bid_stays_open(
    market: Market,
) -> None:
    product_id, barcode = market.new_product(), fresh_barcode()
    market.open_ask(product_id, 9_000, barcode=barcode)
    bid_id = market.open_bid(product_id, 4_000)
    seller_id = market.signed_up()

    market.refused(
        trading.sell_now, selling_now(market, product_id, seller_id, barcode), VoucherDuplicate
    )
    assert market.bid(bid_id).status is BidStatus.OPEN


def test_listing_a_barcode_sold_now_is_refused(market: Market) -> None:
    product_id, barcode = market.new_product(), fresh_barcode()
    buyer_id = market.signed_up(points=4_000)
    market.open_bid(product_id, 4_000, buyer_id)
    seller_id = market.signed_up()
    market.sell_now(product_id, 4_000, seller_id, barcode=barcode)

    market.refused(
        trading.place_sell_bid, listing(market, product_id, seller_id, barcode), VoucherDuplicate
    )
    ledger_balances_agree_with_users(market, buyer_id, seller_id)


def test_a_cancelled_ask_releases_its_barcode(market: Market) -> None:
    product_id, seller_id, barcode = market.new_product(), market.signed_up(), fresh_barcode()
    ask_id = market.open_ask(product_id, 4_000, seller_id, barcode=barcode)

    market.run(trading.cancel_sell_bid, trading.CancelSellBid(seller_id, ask_id))
    assert registered_for(market, sell_bid_id=ask_id) == 0
    relisted = market.open_ask(product_id, 4_500, market.signed_up(), barcode=barcode)

    assert market.ask(relisted).status is BidStatus.OPEN


def test_a_refused_cancel_keeps_the_barcode_registered(market: Market) -> None:
    product_id, seller_id, barcode = market.new_product(), market.signed_up(), fresh_barcode()
    ask_id = market.open_ask(product_id, 4_000, seller_id, barcode=barcode)
    market.bought(product_id, market.signed_up(points=4_000), 4_000)

    market.refused(
        trading.cancel_sell_bid,
        trading.CancelSellBid(seller_id, ask_id),
        BidNotOpen,
    )
    assert registered_for(market, sell_bid_id=ask_id) == 1


def test_a_matched_ask_keeps_its_barcode_blocked(market: Market) -> None:
    product_id, seller_id, barcode = market.new_product(), market.signed_up(), fresh_barcode()
    market.open_ask(product_id, 4_000, seller_id, barcode=barcode)
    buyer_id = market.signed_up(points=4_000)
    order_id = market.bought(product_id, buyer_id, 4_000).order_id
    market.run(trading.confirm_order, trading.ConfirmOrder(buyer_id, order_id))

    market.refused(
        trading.place_sell_bid, listing(market, product_id, buyer_id, barcode), VoucherDuplicate
    )


def test_a_refunded_voucher_stays_blocked(manual: Market) -> None:
    market = manual
    product_id, seller_id, barcode = market.new_product(), market.signed_up(), fresh_barcode()
    market.open_ask(product_id, 4_000, seller_id, barcode=barcode)
    buyer_id = market.signed_up(points=4_000)
    order_id = market.bought(product_id, buyer_id, 4_000).order_id
    market.inspected(order_id, InspectionResult.FAIL, "already used")
    assert market.order(order_id).status is OrderStatus.REFUNDED

    for who in (seller_id, buyer_id, market.signed_up()):
        market.refused(
            trading.place_sell_bid, listing(market, product_id, who, barcode), VoucherDuplicate
        )
    ledger_balances_agree_with_users(market, buyer_id, seller_id)


def test_a_voucher_refunded_after_a_dispute_stays_blocked(market: Market) -> None:
    product_id, seller_id, barcode = market.new_product(), market.signed_up(), fresh_barcode()
    market.open_ask(product_id, 4_000, seller_id, barcode=barcode)
    buyer_id = market.signed_up(points=4_000)
    order_id = market.bought(product_id, buyer_id, 4_000).order_id
    market.disputed(order_id, buyer_id)
    market.resolved(order_id, DisputeDecision.REFUND)
    market.open_bid(product_id, 4_000)

    market.refused(
        trading.sell_now,
        selling_now(market, product_id, market.signed_up(), barcode),
        VoucherDuplicate,
    )


# --- key rotation --------------------------------------------------------------------------


def test_a_voucher_listed_under_the_old_key_is_found_after_a_rotation(market: Market) -> None:
    market.ctx = dataclasses.replace(market.ctx, barcodes=FakeBarcodes("k1"))
    product_id, barcode = market.new_product(), fresh_barcode()
    market.open_ask(product_id, 4_000, market.signed_up(), barcode=barcode)

    market.ctx = dataclasses.replace(market.ctx, barcodes=FakeBarcodes("k2", "k1"))

    market.refused(
        trading.place_sell_bid,
        listing(market, product_id, market.signed_up(), barcode),
        VoucherDuplicate,
    )


def test_a_voucher_listed_after_a_rotation_is_found_under_the_new_key_alone(
    market: Market,
) -> None:
    market.ctx = dataclasses.replace(market.ctx, barcodes=FakeBarcodes("k2", "k1"))
    product_id, barcode = market.new_product(), fresh_barcode()
    market.open_ask(product_id, 4_000, market.signed_up(), barcode=barcode)
    assert {kid for kid, _ in market.store.vouchers} == {"k1", "k2"}

    # The old key retired: the new key's fingerprint alone still collides.
    market.ctx = dataclasses.replace(market.ctx, barcodes=FakeBarcodes("k2"))

    market.refused(
        trading.place_sell_bid,
        listing(market, product_id, market.signed_up(), barcode),
        VoucherDuplicate,
    )


def test_an_unrelated_key_does_not_see_the_voucher(market: Market) -> None:
    market.ctx = dataclasses.replace(market.ctx, barcodes=FakeBarcodes("k1"))
    product_id, barcode = market.new_product(), fresh_barcode()
    market.open_ask(product_id, 4_000, market.signed_up(), barcode=barcode)

    market.ctx = dataclasses.replace(market.ctx, barcodes=FakeBarcodes("k9"))

    # Proof the duplicate check is the fingerprint's, not something else's: a key the
    # first listing never used cannot find it (why a rotation keeps the old key).
    assert market.open_ask(product_id, 4_000, market.signed_up(), barcode=barcode)


# --- expiring vouchers ---------------------------------------------------------------------


@pytest.mark.parametrize("days", [-1, 0, 1, 2])
def test_a_voucher_valid_for_less_than_three_days_is_refused(market: Market, days: int) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    command = dataclasses.replace(
        listing(market, product_id, seller_id, fresh_barcode()),
        expires_on=valid_until(market.clock(), days),
    )

    market.refused(trading.place_sell_bid, command, VoucherExpiring)


def test_selling_now_an_expiring_voucher_is_refused_and_the_bid_stays_open(
    market: Market,
) -> None:
    product_id = market.new_product()
    bid_id = market.open_bid(product_id, 4_000)
    command = dataclasses.replace(
        selling_now(market, product_id, market.signed_up(), fresh_barcode()),
        expires_on=valid_until(market.clock(), 2),
    )

    market.refused(trading.sell_now, command, VoucherExpiring)
    assert market.bid(bid_id).status is BidStatus.OPEN


def test_a_voucher_valid_exactly_three_days_is_listed(market: Market) -> None:
    ask_id = market.open_ask(market.new_product(), 4_000, valid_days=3)

    assert market.ask(ask_id).status is BidStatus.OPEN


def test_buy_now_takes_a_voucher_the_day_before_its_last_valid_day(market: Market) -> None:
    product_id = market.new_product()
    soon = market.open_ask(product_id, 3_000, valid_days=3)
    market.open_ask(product_id, 4_000, valid_days=30)
    market.clock.advance(timedelta(days=2))  # `soon` is valid until tomorrow in Korea

    assert market.bought(product_id, market.signed_up(points=10_000), 5_000).price == 3_000
    assert market.ask(soon).status is BidStatus.MATCHED


def test_buy_now_skips_an_ask_inside_the_margin_for_a_dearer_one(market: Market) -> None:
    product_id = market.new_product()
    soon = market.open_ask(product_id, 3_000, valid_days=3)
    later = market.open_ask(product_id, 4_000, valid_days=30)
    buyer_id = market.signed_up(points=10_000)
    market.clock.advance(timedelta(days=3))  # `soon`'s last valid day in Korea

    purchase = market.bought(product_id, buyer_id, 5_000)

    assert (purchase.price, market.order(purchase.order_id).sell_bid_id) == (4_000, later)
    assert market.ask(soon).status is BidStatus.OPEN
    ledger_balances_agree_with_users(market, buyer_id)


def test_buy_now_never_takes_a_voucher_on_its_last_valid_day(market: Market) -> None:
    product_id = market.new_product()
    soon = market.open_ask(product_id, 3_000, valid_days=3)
    buyer_id = market.signed_up(points=10_000)
    market.clock.advance(timedelta(days=3))  # `soon`'s last valid day in Korea

    market.refused(trading.buy_now, trading.BuyNow(buyer_id, product_id, 5_000), NoMatchingBid)
    assert market.ask(soon).status is BidStatus.OPEN
    assert market.balances(buyer_id) == (10_000, 0, 0)


def test_the_expiry_job_expires_what_buy_now_may_not_take_and_releases_it(
    market: Market,
) -> None:
    product_id, barcode = market.new_product(), fresh_barcode()
    seller_id = market.signed_up()
    soon = market.open_ask(product_id, 3_000, seller_id, barcode=barcode, valid_days=3)
    later = market.open_ask(product_id, 4_000, valid_days=5)
    market.clock.advance(timedelta(days=2))

    assert expire_asks(market.executor(), now=market.clock()).expired == 0
    market.clock.advance(timedelta(days=1))
    report = expire_asks(market.executor(), now=market.clock())

    assert report.expired == 1
    expired = market.ask(soon)
    assert (expired.status, expired.updated_at) == (BidStatus.EXPIRED, market.clock())
    assert market.ask(later).status is BidStatus.OPEN
    assert market.image(expired.image_id).status is ImageStatus.ATTACHED
    assert [e for e in market.store.events if isinstance(e, events.SellBidExpired)][
        0
    ].sell_bid_id == soon
    assert registered_for(market, sell_bid_id=soon) == 0

    # Idempotent, and the voucher is free, though too short-lived to list again.
    assert expire_asks(market.executor(), now=market.clock()).expired == 0
    market.refused(
        trading.place_sell_bid,
        dataclasses.replace(
            listing(market, product_id, seller_id, barcode),
            expires_on=market.voucher(days=0)[1],
        ),
        VoucherExpiring,
    )


def test_an_expired_ask_cannot_be_cancelled_or_bought(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    ask_id = market.open_ask(product_id, 3_000, seller_id, valid_days=3)
    market.clock.advance(timedelta(days=3))
    expire_asks(market.executor(), now=market.clock())
    buyer_id = market.signed_up(points=3_000)

    market.refused(trading.buy_now, trading.BuyNow(buyer_id, product_id, 3_000), NoMatchingBid)
    market.refused(trading.cancel_sell_bid, trading.CancelSellBid(seller_id, ask_id), Exception)
    assert market.ask(ask_id).status is BidStatus.EXPIRED


def test_the_expiry_job_works_in_batches_until_done(market: Market) -> None:
    product_id = market.new_product()
    asks = [market.open_ask(product_id, 3_000 + n, valid_days=3) for n in range(7)]
    market.clock.advance(timedelta(days=3))

    report = expire_asks(market.executor(), now=market.clock(), batch=2)

    assert report.expired == 7
    assert {market.ask(a).status for a in asks} == {BidStatus.EXPIRED}
