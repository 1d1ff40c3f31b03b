"""Inspection (검수, PRODUCT.md "Vouchers") on the commands: under manual inspection an order
waits INSPECTING with the money moved; an admin passes it (delivered, PAID) or fails it
(REFUNDED: the buyer paid back, the coupon restored, the seller's pending and the subsidy
reversed, the barcode kept blocked). On the in-memory fakes (tests/support/market.py)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from tests.support.fakes import fresh_barcode
from tests.support.market import Market, money_is_conserved

from giftmarket.commands import orders, trading
from giftmarket.domain import events, ledger
from giftmarket.domain.coupons import CouponStatus
from giftmarket.domain.errors import (
    CouponUnavailable,
    Forbidden,
    InvalidField,
    NotFound,
    OrderNotConfirmable,
    OrderNotDisputable,
    OrderNotPending,
    VoucherDuplicate,
)
from giftmarket.domain.ledger import LedgerReason
from giftmarket.domain.orders import AUTO_COMPLETE_AFTER, InspectionResult, OrderStatus
from giftmarket.domain.settlement import KST
from giftmarket.jobs.settlement import settle_business_date

PASS, FAIL = InspectionResult.PASS, InspectionResult.FAIL


pytestmark = pytest.mark.usefixtures("money_checked")


def sold_now(market: Market, price: int = 4_000) -> tuple[str, str, str]:
    """(order, buyer, seller) of a sell-now into a fresh buy bid at `price`."""
    product_id, buyer_id = market.new_product(), market.signed_up(points=price)
    market.open_bid(product_id, price, buyer_id)
    seller_id = market.signed_up()
    order_id = market.sell_now(product_id, price, seller_id).order_id
    return order_id, buyer_id, seller_id


def settle(market: Market, day: date) -> None:
    now = datetime.combine(day + timedelta(days=1), time(0, 10), tzinfo=KST)
    settle_business_date(market.executor(), business_date=day, now=now, fee_bps=500)


# --- placement under manual inspection ------------------------------------------------


def test_buy_now_under_manual_inspection_waits_inspecting_with_the_money_moved(
    manual: Market,
) -> None:
    order_id, buyer_id, seller_id, _ = manual.traded()

    order = manual.order(order_id)
    assert (order.status, order.delivered_at, order.barcode_last4) == (
        OrderStatus.INSPECTING,
        None,
        order.barcode_last4,
    )
    assert order.barcode_last4 is not None and len(order.barcode_last4) == 4
    assert manual.balances(buyer_id) == (6_000, 0, 0)
    assert manual.balances(seller_id) == (0, 0, 4_000)
    money_is_conserved(manual)


def test_sell_now_under_manual_inspection_waits_inspecting(manual: Market) -> None:
    order_id, buyer_id, seller_id = sold_now(manual)

    assert manual.order(order_id).status is OrderStatus.INSPECTING
    assert manual.balances(buyer_id) == (0, 0, 0)
    assert manual.balances(seller_id) == (0, 0, 4_000)
    money_is_conserved(manual)


def test_under_automatic_inspection_orders_are_delivered_at_once(market: Market) -> None:
    order_id, *_ = market.traded()

    order = market.order(order_id)
    assert (order.status, order.delivered_at) == (OrderStatus.PAID, order.created_at)


def test_an_order_being_inspected_can_be_neither_confirmed_nor_disputed(manual: Market) -> None:
    order_id, buyer_id, *_ = manual.traded()

    manual.refused(
        trading.confirm_order, trading.ConfirmOrder(buyer_id, order_id), OrderNotConfirmable
    )
    manual.refused(
        orders.open_dispute, orders.OpenDispute(buyer_id, order_id, "used"), OrderNotDisputable
    )


# --- pass -------------------------------------------------------------------------------


def test_a_passed_inspection_delivers_the_order(manual: Market) -> None:
    order_id, buyer_id, seller_id, _ = manual.traded()
    admin_id = manual.admin()
    manual.clock.advance(timedelta(hours=2))

    state, committed = manual.commit(
        orders.decide_inspection, orders.DecideInspection(admin_id, order_id, PASS)
    )

    assert (state.order_id, state.status) == (order_id, OrderStatus.PAID)
    order = manual.order(order_id)
    assert (order.delivered_at, order.inspected_by, order.version) == (
        manual.clock(),
        admin_id,
        2,
    )
    assert manual.written(committed) == {("OrderDelivered", order_id, 2)}
    assert manual.balances(buyer_id) == (6_000, 0, 0)
    assert manual.balances(seller_id) == (0, 0, 4_000)
    money_is_conserved(manual)


def test_a_delivered_order_auto_completes_72_hours_after_delivery_not_payment(
    manual: Market,
) -> None:
    order_id, *_ = manual.traded()
    paid_at = manual.clock()
    manual.clock.advance(timedelta(days=2))
    manual.inspected(order_id, PASS)
    delivered_at = manual.clock()

    # 72 hours after payment the order is still PAID: its clock started at delivery.
    settle(manual, (paid_at + AUTO_COMPLETE_AFTER).astimezone(KST).date())
    assert manual.order(order_id).status is OrderStatus.PAID

    settle(manual, (delivered_at + AUTO_COMPLETE_AFTER).astimezone(KST).date())
    order = manual.order(order_id)
    assert (order.status, order.completed_at) == (
        OrderStatus.SETTLED,
        delivered_at + AUTO_COMPLETE_AFTER,
    )
    money_is_conserved(manual)


# --- fail -------------------------------------------------------------------------------


def test_a_failed_inspection_refunds_the_buyer_and_reverses_the_sellers_pending(
    manual: Market,
) -> None:
    order_id, buyer_id, seller_id, _ = manual.traded()
    admin_id = manual.admin()
    manual.clock.advance(timedelta(hours=2))

    state, committed = manual.commit(
        orders.decide_inspection,
        orders.DecideInspection(admin_id, order_id, FAIL, "barcode already redeemed"),
    )

    assert state.status is OrderStatus.REFUNDED
    order = manual.order(order_id)
    assert (order.refunded_at, order.inspection_failure, order.delivered_at) == (
        manual.clock(),
        "barcode already redeemed",
        None,
    )
    assert manual.balances(buyer_id) == (10_000, 0, 0)
    assert manual.balances(seller_id) == (0, 0, 0)
    refund = manual.last_ledger_transaction()
    assert (refund.reason, refund.ref_id) == (LedgerReason.REFUND, order_id)
    assert manual.written(committed) == {
        ("OrderInspectionFailed", order_id, 2),
        ("OrderRefunded", order_id, 2),
        ("UserBalancesChanged", buyer_id, manual.user(buyer_id).version),
        ("UserBalancesChanged", seller_id, manual.user(seller_id).version),
    }
    money_is_conserved(manual)


def test_a_failed_inspection_restores_the_coupon_with_its_expiry_and_the_subsidy(
    manual: Market,
) -> None:
    order_id, buyer_id, seller_id, coupon_id = manual.traded(4_000, points=3_000, coupon=1_000)
    assert coupon_id is not None
    before = manual.coupon(coupon_id)
    assert manual.balances(buyer_id) == (0, 0, 0)
    subsidy = ledger.balances(manual.store.ledger)[ledger.COUPON_SUBSIDY]

    manual.inspected(order_id, FAIL, "used")

    coupon = manual.coupon(coupon_id)
    assert (coupon.status, coupon.order_id, coupon.used_at, coupon.expires_at) == (
        CouponStatus.AVAILABLE,
        None,
        None,
        before.expires_at,
    )
    assert manual.balances(buyer_id) == (3_000, 0, 0)
    assert manual.balances(seller_id) == (0, 0, 0)
    assert subsidy == -1_000
    assert ledger.balances(manual.store.ledger).get(ledger.COUPON_SUBSIDY, 0) == 0
    assert any(isinstance(e, events.CouponRestored) for e in manual.store.events)
    money_is_conserved(manual)


def test_a_fully_discounted_order_refunds_only_the_subsidy(manual: Market) -> None:
    order_id, buyer_id, seller_id, coupon_id = manual.traded(800, points=0, coupon=1_000)
    assert coupon_id is not None and manual.order(order_id).paid == 0

    manual.inspected(order_id, FAIL, "used")

    assert manual.balances(buyer_id) == (0, 0, 0)
    assert manual.balances(seller_id) == (0, 0, 0)
    assert manual.coupon(coupon_id).status is CouponStatus.AVAILABLE
    money_is_conserved(manual)


def test_the_restored_coupon_pays_for_a_new_order(manual: Market) -> None:
    order_id, buyer_id, _, coupon_id = manual.traded(4_000, points=3_000, coupon=1_000)
    assert coupon_id is not None
    manual.inspected(order_id, FAIL, "used")
    product_id = manual.new_product()
    manual.open_ask(product_id, 2_000)

    again = manual.run(trading.buy_now, trading.BuyNow(buyer_id, product_id, 2_000, coupon_id))

    assert (again.discount, again.paid) == (1_000, 1_000)
    coupon = manual.coupon(coupon_id)
    assert (coupon.status, coupon.order_id) == (CouponStatus.USED, again.order_id)
    assert manual.order(order_id).coupon_id == coupon_id  # the refunded order keeps its record
    assert manual.balances(buyer_id) == (2_000, 0, 0)
    money_is_conserved(manual)


def test_a_restored_coupon_that_expired_meanwhile_stays_unusable(manual: Market) -> None:
    product_id, seller_id = manual.new_product(), manual.signed_up()
    manual.open_ask(product_id, 4_000, seller_id)
    buyer_id = manual.signed_up(points=4_000)
    coupon_id = manual.coupon_for(buyer_id, 1_000, manual.clock() + timedelta(hours=1))
    order_id = manual.run(
        trading.buy_now, trading.BuyNow(buyer_id, product_id, 4_000, coupon_id)
    ).order_id
    manual.clock.advance(timedelta(hours=2))
    manual.inspected(order_id, FAIL, "used")
    manual.open_ask(product_id, 2_000)

    assert manual.coupon(coupon_id).status is CouponStatus.AVAILABLE
    manual.refused(
        trading.buy_now,
        trading.BuyNow(buyer_id, product_id, 2_000, coupon_id),
        CouponUnavailable,
    )


def test_a_failed_sell_now_pays_the_buyer_back_to_available_points(manual: Market) -> None:
    order_id, buyer_id, seller_id = sold_now(manual)

    manual.inspected(order_id, FAIL, "used")

    assert manual.balances(buyer_id) == (4_000, 0, 0)
    assert manual.balances(seller_id) == (0, 0, 0)
    money_is_conserved(manual)


def test_a_failed_inspection_keeps_the_barcode_blocked(manual: Market) -> None:
    product_id, seller_id, barcode = manual.new_product(), manual.signed_up(), fresh_barcode()
    manual.open_ask(product_id, 4_000, seller_id, barcode=barcode)
    order_id = manual.bought(product_id, manual.signed_up(points=4_000), 4_000).order_id

    manual.inspected(order_id, FAIL, "used")

    image_id = manual.uploaded_image(seller_id)
    _, expires_on = manual.voucher()
    command = trading.PlaceSellBid(seller_id, product_id, 4_000, image_id, barcode, expires_on)
    manual.refused(trading.place_sell_bid, command, VoucherDuplicate)


@pytest.mark.parametrize("reason", [None, "", "   ", "x" * 501])
def test_a_fail_needs_a_reason_and_nothing_is_written_without_one(
    manual: Market, reason: str | None
) -> None:
    order_id, *_ = manual.traded()

    manual.refused(
        orders.decide_inspection,
        orders.DecideInspection(manual.admin(), order_id, FAIL, reason),
        InvalidField,
    )
    assert manual.order(order_id).status is OrderStatus.INSPECTING


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("first", [PASS, FAIL])
@pytest.mark.parametrize("second", [PASS, FAIL])
def test_an_order_is_inspected_once(
    manual: Market, first: InspectionResult, second: InspectionResult
) -> None:
    order_id, buyer_id, seller_id, _ = manual.traded()
    manual.inspected(order_id, first, "used")
    money_is_conserved(manual)

    manual.refused(
        orders.decide_inspection,
        orders.DecideInspection(manual.admin(), order_id, second, "used again"),
        OrderNotPending,
    )
    money_is_conserved(manual)


@pytest.mark.parametrize("result", [PASS, FAIL])
def test_an_order_never_inspected_is_not_pending_inspection(
    market: Market, result: InspectionResult
) -> None:
    order_id, *_ = market.traded()

    market.refused(
        orders.decide_inspection,
        orders.DecideInspection(market.admin(), order_id, result, "used"),
        OrderNotPending,
    )


@pytest.mark.parametrize("result", [PASS, FAIL])
def test_a_settled_order_is_not_pending_inspection(
    market: Market, result: InspectionResult
) -> None:
    order_id, buyer_id, seller_id, _ = market.traded()
    market.run(trading.confirm_order, trading.ConfirmOrder(buyer_id, order_id))
    settle(market, market.clock().astimezone(KST).date())
    assert market.order(order_id).status is OrderStatus.SETTLED
    assert market.balances(seller_id).pending == 0

    market.refused(
        orders.decide_inspection,
        orders.DecideInspection(market.admin(), order_id, result, "used"),
        OrderNotPending,
    )


@pytest.mark.parametrize("who", ["buyer", "seller", "stranger"])
def test_only_an_admin_decides_an_inspection(manual: Market, who: str) -> None:
    order_id, buyer_id, seller_id, _ = manual.traded()
    user_id = {"buyer": buyer_id, "seller": seller_id, "stranger": manual.signed_up()}[who]

    manual.refused(
        orders.decide_inspection, orders.DecideInspection(user_id, order_id, PASS), Forbidden
    )


def test_inspecting_an_unknown_order_is_not_found(manual: Market) -> None:
    manual.refused(
        orders.decide_inspection,
        orders.DecideInspection(manual.admin(), "01HF7YAT0B00000000000000ZZ", PASS),
        NotFound,
    )


# --- settlement -------------------------------------------------------------------------


def test_settlement_leaves_inspecting_and_refunded_orders_alone(manual: Market) -> None:
    waiting, _, waiting_seller, _ = manual.traded()
    refunded, _, refunded_seller, _ = manual.traded()
    manual.inspected(refunded, FAIL, "used")
    manual.clock.advance(timedelta(days=10))

    settle(manual, manual.clock().astimezone(KST).date() - timedelta(days=1))

    assert manual.order(waiting).status is OrderStatus.INSPECTING
    assert manual.order(refunded).status is OrderStatus.REFUNDED
    assert manual.balances(waiting_seller) == (0, 0, 4_000)
    assert manual.balances(refunded_seller) == (0, 0, 0)
    assert not manual.store.rows["settlements"]
    money_is_conserved(manual)
