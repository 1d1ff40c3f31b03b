"""Disputes (PRODUCT.md, "Vouchers") on the commands: the buyer of a delivered order reports
the voucher unusable (DISPUTED); an admin refunds it (REFUNDED, the money moved back) or
rejects the dispute (COMPLETED, then settled). A disputed order is never auto-completed nor
settled. On the in-memory fakes (tests/support/market.py)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from tests.support.market import Market, money_is_conserved

from giftmarket.commands import orders, trading
from giftmarket.domain import ledger
from giftmarket.domain.coupons import CouponStatus
from giftmarket.domain.errors import (
    Forbidden,
    InvalidField,
    NotFound,
    OrderNotConfirmable,
    OrderNotDisputable,
    OrderNotPending,
)
from giftmarket.domain.ledger import LedgerReason
from giftmarket.domain.orders import (
    AUTO_COMPLETE_AFTER,
    DisputeDecision,
    InspectionResult,
    OrderStatus,
)
from giftmarket.domain.settlement import KST
from giftmarket.jobs.settlement import settle_business_date

REFUND, REJECT = DisputeDecision.REFUND, DisputeDecision.REJECT


pytestmark = pytest.mark.usefixtures("money_checked")


def business_day(instant: datetime) -> date:
    return instant.astimezone(KST).date()


def settle(market: Market, day: date) -> None:
    now = datetime.combine(day + timedelta(days=1), time(0, 10), tzinfo=KST)
    settle_business_date(market.executor(), business_date=day, now=now, fee_bps=500)


# --- opening a dispute ----------------------------------------------------------------


def test_the_buyer_disputes_a_delivered_order(market: Market) -> None:
    order_id, buyer_id, seller_id, _ = market.traded()
    market.clock.advance(timedelta(hours=1))

    state, committed = market.commit(
        orders.open_dispute, orders.OpenDispute(buyer_id, order_id, "  the code was used  ")
    )

    assert (state.order_id, state.status) == (order_id, OrderStatus.DISPUTED)
    order = market.order(order_id)
    assert (order.dispute_reason, order.dispute_opened_at) == ("the code was used", market.clock())
    assert market.written(committed) == {("OrderDisputed", order_id, 2)}
    # No money moves until an admin decides.
    assert market.balances(buyer_id) == (6_000, 0, 0)
    assert market.balances(seller_id) == (0, 0, 4_000)
    money_is_conserved(market)


def test_the_seller_cannot_dispute(market: Market) -> None:
    order_id, _, seller_id, _ = market.traded()

    market.refused(
        orders.open_dispute, orders.OpenDispute(seller_id, order_id, "used"), OrderNotDisputable
    )


def test_a_stranger_disputing_is_told_the_order_does_not_exist(market: Market) -> None:
    order_id, *_ = market.traded()

    market.refused(
        orders.open_dispute, orders.OpenDispute(market.signed_up(), order_id, "used"), NotFound
    )


def test_disputing_an_unknown_order_is_not_found(market: Market) -> None:
    market.refused(
        orders.open_dispute,
        orders.OpenDispute(market.signed_up(), "01HF7YAT0B00000000000000ZZ", "used"),
        NotFound,
    )


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_a_dispute_needs_a_reason(market: Market, reason: str) -> None:
    order_id, buyer_id, *_ = market.traded()

    market.refused(
        orders.open_dispute, orders.OpenDispute(buyer_id, order_id, reason), InvalidField
    )


def test_a_confirmed_order_is_not_disputable(market: Market) -> None:
    order_id, buyer_id, *_ = market.traded()
    market.run(trading.confirm_order, trading.ConfirmOrder(buyer_id, order_id))

    market.refused(
        orders.open_dispute, orders.OpenDispute(buyer_id, order_id, "used"), OrderNotDisputable
    )


def test_a_dispute_once_the_72_hours_are_over_is_refused(market: Market) -> None:
    order_id, buyer_id, *_ = market.traded()
    market.clock.advance(AUTO_COMPLETE_AFTER)

    market.refused(
        orders.open_dispute, orders.OpenDispute(buyer_id, order_id, "used"), OrderNotDisputable
    )


def test_a_dispute_is_opened_once(market: Market) -> None:
    order_id, buyer_id, *_ = market.traded()
    market.disputed(order_id, buyer_id)

    market.refused(
        orders.open_dispute, orders.OpenDispute(buyer_id, order_id, "again"), OrderNotDisputable
    )


def test_a_disputed_order_cannot_be_confirmed(market: Market) -> None:
    order_id, buyer_id, *_ = market.traded()
    market.disputed(order_id, buyer_id)

    market.refused(
        trading.confirm_order, trading.ConfirmOrder(buyer_id, order_id), OrderNotConfirmable
    )


def test_a_manually_inspected_order_is_disputable_72_hours_from_its_delivery(
    manual: Market,
) -> None:
    order_id, buyer_id, *_ = manual.traded()
    manual.clock.advance(timedelta(days=2))
    manual.inspected(order_id, InspectionResult.PASS)
    manual.clock.advance(timedelta(hours=71))

    assert manual.disputed(order_id, buyer_id) == OrderStatus.DISPUTED


# --- resolving it: refund -------------------------------------------------------------


def test_an_upheld_dispute_refunds_the_buyer_the_coupon_and_the_subsidy(market: Market) -> None:
    order_id, buyer_id, seller_id, coupon_id = market.traded(4_000, points=3_000, coupon=1_000)
    assert coupon_id is not None
    expires_at = market.coupon(coupon_id).expires_at
    market.disputed(order_id, buyer_id)
    admin_id = market.admin()
    market.clock.advance(timedelta(hours=3))

    state, committed = market.commit(
        orders.resolve_dispute, orders.ResolveDispute(admin_id, order_id, REFUND, "confirmed used")
    )

    assert state.status is OrderStatus.REFUNDED
    order = market.order(order_id)
    assert (order.dispute_decision, order.dispute_note, order.dispute_decided_by) == (
        REFUND,
        "confirmed used",
        admin_id,
    )
    assert order.refunded_at == order.dispute_decided_at == market.clock()
    assert market.balances(buyer_id) == (3_000, 0, 0)
    assert market.balances(seller_id) == (0, 0, 0)
    coupon = market.coupon(coupon_id)
    assert (coupon.status, coupon.expires_at) == (CouponStatus.AVAILABLE, expires_at)
    assert ledger.balances(market.store.ledger).get(ledger.COUPON_SUBSIDY, 0) == 0
    assert market.last_ledger_transaction().reason is LedgerReason.REFUND
    assert {("OrderDisputeResolved", order_id, 3), ("OrderRefunded", order_id, 3)} <= (
        market.written(committed)
    )
    money_is_conserved(market)


def test_a_refunded_order_is_never_settled(market: Market) -> None:
    order_id, buyer_id, seller_id, _ = market.traded()
    market.disputed(order_id, buyer_id)
    market.resolved(order_id, REFUND)
    market.clock.advance(timedelta(days=10))

    settle(market, business_day(market.clock()) - timedelta(days=1))

    assert market.order(order_id).status is OrderStatus.REFUNDED
    assert market.balances(seller_id) == (0, 0, 0)
    assert not market.store.rows["settlements"]
    money_is_conserved(market)


# --- resolving it: reject -------------------------------------------------------------


def test_a_rejected_dispute_completes_the_order_and_it_settles(market: Market) -> None:
    order_id, buyer_id, seller_id, _ = market.traded()
    market.disputed(order_id, buyer_id)
    market.clock.advance(timedelta(days=5))

    state = market.resolved(order_id, REJECT, "the code works")

    assert state.status is OrderStatus.COMPLETED
    order = market.order(order_id)
    assert (order.completed_at, order.dispute_decision) == (market.clock(), REJECT)
    assert market.balances(buyer_id) == (6_000, 0, 0)

    settle(market, business_day(market.clock()))

    assert market.order(order_id).status is OrderStatus.SETTLED
    assert market.balances(seller_id) == (3_800, 0, 0)
    money_is_conserved(market)


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("first", [REFUND, REJECT])
@pytest.mark.parametrize("second", [REFUND, REJECT])
def test_a_dispute_is_resolved_once(
    market: Market, first: DisputeDecision, second: DisputeDecision
) -> None:
    order_id, buyer_id, *_ = market.traded()
    market.disputed(order_id, buyer_id)
    market.resolved(order_id, first)

    market.refused(
        orders.resolve_dispute,
        orders.ResolveDispute(market.admin(), order_id, second),
        OrderNotPending,
    )
    money_is_conserved(market)


@pytest.mark.parametrize("state", ["paid", "completed", "settled"])
@pytest.mark.parametrize("decision", [REFUND, REJECT])
def test_resolving_an_order_never_disputed_is_not_pending(
    market: Market, state: str, decision: DisputeDecision
) -> None:
    order_id, buyer_id, seller_id, _ = market.traded()
    if state != "paid":
        market.run(trading.confirm_order, trading.ConfirmOrder(buyer_id, order_id))
    if state == "settled":
        settle(market, business_day(market.clock()))
        assert market.balances(seller_id).pending == 0

    market.refused(
        orders.resolve_dispute,
        orders.ResolveDispute(market.admin(), order_id, decision),
        OrderNotPending,
    )


def test_resolving_an_order_still_inspecting_is_not_pending(manual: Market) -> None:
    order_id, *_ = manual.traded()

    manual.refused(
        orders.resolve_dispute,
        orders.ResolveDispute(manual.admin(), order_id, REFUND),
        OrderNotPending,
    )


def test_an_inspection_decision_on_a_disputed_order_is_not_pending(market: Market) -> None:
    order_id, buyer_id, *_ = market.traded()
    market.disputed(order_id, buyer_id)

    market.refused(
        orders.decide_inspection,
        orders.DecideInspection(market.admin(), order_id, InspectionResult.FAIL, "used"),
        OrderNotPending,
    )


@pytest.mark.parametrize("who", ["buyer", "seller", "stranger"])
def test_only_an_admin_resolves_a_dispute(market: Market, who: str) -> None:
    order_id, buyer_id, seller_id, _ = market.traded()
    market.disputed(order_id, buyer_id)
    user_id = {"buyer": buyer_id, "seller": seller_id, "stranger": market.signed_up()}[who]

    market.refused(
        orders.resolve_dispute, orders.ResolveDispute(user_id, order_id, REFUND), Forbidden
    )


# --- the jobs -------------------------------------------------------------------------


def test_a_disputed_order_is_never_auto_completed_nor_settled(market: Market) -> None:
    disputed, buyer_id, disputed_seller, _ = market.traded()
    market.disputed(disputed, buyer_id)
    quiet, _, quiet_seller, _ = market.traded()
    market.clock.advance(timedelta(days=10))

    settle(market, business_day(market.clock()) - timedelta(days=1))

    assert market.order(disputed).status is OrderStatus.DISPUTED
    assert market.balances(disputed_seller) == (0, 0, 4_000)
    assert market.order(quiet).status is OrderStatus.SETTLED
    assert market.balances(quiet_seller) == (3_800, 0, 0)
    money_is_conserved(market)


def test_a_dispute_still_open_after_weeks_can_be_refunded(market: Market) -> None:
    order_id, buyer_id, seller_id, _ = market.traded()
    market.disputed(order_id, buyer_id)
    for _ in range(3):
        market.clock.advance(timedelta(days=7))
        settle(market, business_day(market.clock()) - timedelta(days=1))

    market.resolved(order_id, REFUND)

    assert market.balances(buyer_id) == (10_000, 0, 0)
    assert market.balances(seller_id) == (0, 0, 0)
    money_is_conserved(market)
