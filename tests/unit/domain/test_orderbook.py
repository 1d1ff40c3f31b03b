from datetime import UTC, datetime, timedelta

import pytest
from tests.unit.domain.factories import voucher

from giftmarket.domain import events
from giftmarket.domain.errors import BidNotOpen, CrossesBook, InvalidAmount, NotFound
from giftmarket.domain.orderbook import (
    BidStatus,
    BuyBid,
    SellBid,
    best_ask,
    best_bid,
    ensure_ask_does_not_cross,
    ensure_bid_does_not_cross,
)
from giftmarket.domain.vouchers import VoucherRules

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 14, 3, 0, tzinfo=UTC)
TAKEABLE_FROM = VoucherRules().takeable_from(T0)  # every ask's voucher is valid 30 days


def ask(ask_id: str, price: int, at: datetime, seller: str = "sally") -> SellBid:
    return SellBid.place(
        sell_bid_id=ask_id,
        product_id="product-1",
        seller_id=seller,
        price=price,
        image_id=f"image-{ask_id}",
        voucher=voucher(at),
        now=at,
    )


def bid(bid_id: str, price: int, at: datetime, buyer: str = "bob") -> BuyBid:
    return BuyBid.place(
        buy_bid_id=bid_id, product_id="product-1", buyer_id=buyer, price=price, now=at
    )


def _id(chosen: SellBid | BuyBid | None) -> str | None:
    return None if chosen is None else chosen.id


# --- lifecycle ---------------------------------------------------------------------------


@pytest.mark.parametrize("price", [0, -1, 10**9 + 1])
def test_bids_refuse_prices_outside_1_to_10_to_the_9(price: int, now: datetime) -> None:
    with pytest.raises(InvalidAmount):
        ask("a", price, now)
    with pytest.raises(InvalidAmount):
        bid("b", price, now)


def test_owner_cancels_an_open_sell_bid(now: datetime) -> None:
    sell_bid = ask("a", 5_000, now)

    sell_bid.cancel("sally", now + timedelta(minutes=1))

    assert (sell_bid.status, sell_bid.version) == (BidStatus.CANCELLED, 2)
    assert sell_bid.updated_at == now + timedelta(minutes=1)
    cancelled = sell_bid.events[-1]
    assert isinstance(cancelled, events.SellBidCancelled)
    assert (cancelled.product_id, cancelled.price) == ("product-1", 5_000)


def test_owner_cancels_an_open_buy_bid(now: datetime) -> None:
    buy_bid = bid("b", 4_000, now)

    buy_bid.cancel("bob", now)

    assert (buy_bid.status, buy_bid.version) == (BidStatus.CANCELLED, 2)
    assert isinstance(buy_bid.events[-1], events.BuyBidCancelled)


def test_cancelling_someone_elses_bid_is_not_found(now: datetime) -> None:
    with pytest.raises(NotFound):
        ask("a", 5_000, now).cancel("mallory", now)
    with pytest.raises(NotFound):
        bid("b", 4_000, now).cancel("mallory", now)


def test_cancelling_a_cancelled_bid_is_refused(now: datetime) -> None:
    buy_bid = bid("b", 4_000, now)
    buy_bid.cancel("bob", now)

    with pytest.raises(BidNotOpen):
        buy_bid.cancel("bob", now)
    assert buy_bid.version == 2


def test_cancelling_a_matched_bid_is_refused(now: datetime) -> None:
    sell_bid = ask("a", 5_000, now)
    sell_bid.match("order-1", now)

    with pytest.raises(BidNotOpen):
        sell_bid.cancel("sally", now)


def test_matching_records_the_order(now: datetime) -> None:
    buy_bid = bid("b", 4_000, now)

    buy_bid.match("order-1", now)

    matched = buy_bid.events[-1]
    assert isinstance(matched, events.BuyBidMatched)
    assert (matched.order_id, matched.price, buy_bid.status) == (
        "order-1",
        4_000,
        BidStatus.MATCHED,
    )


def test_a_bid_matches_only_once(now: datetime) -> None:
    sell_bid = ask("a", 5_000, now)
    sell_bid.match("order-1", now)

    with pytest.raises(BidNotOpen):
        sell_bid.match("order-2", now)


# --- choosing the ask a buy-now takes ----------------------------------------------------


def test_buy_now_takes_the_cheapest_ask_at_or_below_its_price(now: datetime) -> None:
    asks = [ask("a", 5_000, now), ask("b", 4_000, now), ask("c", 4_500, now)]

    assert _id(best_ask(asks, "bob", 5_000, TAKEABLE_FROM)) == "b"


def test_ask_priced_exactly_at_the_limit_is_taken(now: datetime) -> None:
    assert _id(best_ask([ask("a", 5_000, now)], "bob", 5_000, TAKEABLE_FROM)) == "a"


def test_among_equally_priced_asks_the_oldest_is_taken(now: datetime) -> None:
    asks = [ask("a", 4_000, now + timedelta(seconds=2)), ask("b", 4_000, now)]

    assert _id(best_ask(asks, "bob", 5_000, TAKEABLE_FROM)) == "b"


def test_among_equally_priced_asks_of_the_same_instant_the_smaller_id_is_taken(
    now: datetime,
) -> None:
    asks = [ask("02", 4_000, now), ask("01", 4_000, now)]

    assert _id(best_ask(asks, "bob", 5_000, TAKEABLE_FROM)) == "01"


def test_buy_now_skips_the_buyers_own_ask(now: datetime) -> None:
    asks = [ask("own", 3_000, now, seller="bob"), ask("other", 4_000, now)]

    assert _id(best_ask(asks, "bob", 5_000, TAKEABLE_FROM)) == "other"


def test_buy_now_skips_asks_that_are_not_open(now: datetime) -> None:
    matched, cancelled, open_ = ask("m", 3_000, now), ask("c", 3_500, now), ask("o", 4_000, now)
    matched.match("order-1", now)
    cancelled.cancel("sally", now)

    assert _id(best_ask([matched, cancelled, open_], "bob", 5_000, TAKEABLE_FROM)) == "o"


@pytest.mark.parametrize(
    "asks",
    [[], [ask("a", 5_001, T0)], [ask("own", 1, T0, seller="bob")]],
    ids=["empty book", "all dearer", "only the buyer's own"],
)
def test_buy_now_without_a_matching_ask_takes_none(asks: list[SellBid]) -> None:
    assert best_ask(asks, "bob", 5_000, TAKEABLE_FROM) is None


# --- choosing the buy bid a sell-now takes -----------------------------------------------


def test_sell_now_takes_the_highest_bid_at_or_above_its_price(now: datetime) -> None:
    bids = [bid("a", 4_000, now), bid("b", 4_800, now), bid("c", 4_500, now)]

    assert _id(best_bid(bids, "sally", 4_000)) == "b"


def test_bid_priced_exactly_at_the_limit_is_taken(now: datetime) -> None:
    assert _id(best_bid([bid("a", 4_000, now)], "sally", 4_000)) == "a"


def test_among_equally_priced_bids_the_oldest_is_taken(now: datetime) -> None:
    bids = [bid("a", 4_000, now + timedelta(seconds=1)), bid("b", 4_000, now)]

    assert _id(best_bid(bids, "sally", 3_000)) == "b"


def test_among_equally_priced_bids_of_the_same_instant_the_smaller_id_is_taken(
    now: datetime,
) -> None:
    bids = [bid("02", 4_000, now), bid("01", 4_000, now)]

    assert _id(best_bid(bids, "sally", 3_000)) == "01"


def test_sell_now_skips_the_sellers_own_bid_and_bids_that_are_not_open(now: datetime) -> None:
    own, cancelled, open_ = (
        bid("own", 6_000, now, "sally"),
        bid("c", 5_500, now),
        bid("o", 5_000, now),
    )
    cancelled.cancel("bob", now)

    assert _id(best_bid([own, cancelled, open_], "sally", 4_000)) == "o"


@pytest.mark.parametrize(
    "bids",
    [[], [bid("a", 3_999, T0)], [bid("own", 9_000, T0, buyer="sally")]],
    ids=["empty book", "all cheaper", "only the seller's own"],
)
def test_sell_now_without_a_matching_bid_takes_none(bids: list[BuyBid]) -> None:
    assert best_bid(bids, "sally", 4_000) is None


# --- crossing the book -------------------------------------------------------------------


def test_ask_at_the_highest_bid_crosses_the_book() -> None:
    with pytest.raises(CrossesBook):
        ensure_ask_does_not_cross(4_000, highest_open_bid_price=4_000)


def test_ask_below_the_highest_bid_crosses_the_book() -> None:
    with pytest.raises(CrossesBook):
        ensure_ask_does_not_cross(3_999, highest_open_bid_price=4_000)


def test_ask_above_the_highest_bid_or_with_no_bids_rests_in_the_book() -> None:
    ensure_ask_does_not_cross(4_001, highest_open_bid_price=4_000)
    ensure_ask_does_not_cross(1, highest_open_bid_price=None)


def test_bid_at_the_lowest_ask_crosses_the_book() -> None:
    with pytest.raises(CrossesBook):
        ensure_bid_does_not_cross(5_000, lowest_open_ask_price=5_000)


def test_bid_above_the_lowest_ask_crosses_the_book() -> None:
    with pytest.raises(CrossesBook):
        ensure_bid_does_not_cross(5_001, lowest_open_ask_price=5_000)


def test_bid_below_the_lowest_ask_or_with_no_asks_rests_in_the_book() -> None:
    ensure_bid_does_not_cross(4_999, lowest_open_ask_price=5_000)
    ensure_bid_does_not_cross(10**9, lowest_open_ask_price=None)
