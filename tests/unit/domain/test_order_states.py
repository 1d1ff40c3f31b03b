"""The order's states after the match (PRODUCT.md, "Vouchers"): INSPECTING → PAID (delivered)
→ COMPLETED → SETTLED, DISPUTED and REFUNDED; every transition, every refusal, the events
each records and the refund's ledger entries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from giftmarket.domain import events, ledger
from giftmarket.domain.errors import (
    InvalidField,
    NotDelivered,
    NotFound,
    OrderNotConfirmable,
    OrderNotDisputable,
    OrderNotPending,
)
from giftmarket.domain.ledger import COUPON_SUBSIDY, LedgerReason, LedgerTransaction
from giftmarket.domain.orders import (
    AUTO_COMPLETE_AFTER,
    DisputeDecision,
    Order,
    OrderStatus,
    OrderVia,
    RefundCause,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 14, 3, 0, tzinfo=UTC)
ADMIN = "admin-1"


def order(*, inspect: bool, at: datetime = T0, **terms: Any) -> Order:
    fields: dict[str, Any] = {
        "order_id": "order-1",
        "product_id": "product-1",
        "buyer_id": "bob",
        "seller_id": "sally",
        "price": 4_000,
        "discount": 1_000,
        "via": OrderVia.BUY_NOW,
        "image_id": "image-1",
        "barcode_last4": "7890",
        "expires_on": date(2025, 4, 1),
        "sell_bid_id": "ask-1",
        "coupon_id": "coupon-1",
    }
    return Order.place(**(fields | terms), inspect=inspect, now=at)


def inspecting() -> Order:
    return order(inspect=True)


def delivered(at: datetime = T0) -> Order:
    return order(inspect=False, at=at)


def disputed(at: datetime = T0) -> Order:
    placed = delivered(at)
    placed.open_dispute("bob", "the barcode was already used", at + timedelta(hours=1))
    return placed


def kinds(order_: Order) -> list[tuple[str, int]]:
    return [(type(event).__name__, event.version) for event in order_.events]


# --- placement --------------------------------------------------------------------------


def test_under_manual_inspection_an_order_waits_undelivered() -> None:
    placed = inspecting()

    assert (placed.status, placed.delivered_at, placed.auto_complete_at, placed.version) == (
        OrderStatus.INSPECTING,
        None,
        None,
        1,
    )
    (event,) = placed.events
    assert isinstance(event, events.OrderPlaced)
    assert (event.status, event.delivered_at, event.barcode_last4, event.expires_on) == (
        OrderStatus.INSPECTING,
        None,
        "7890",
        date(2025, 4, 1),
    )


def test_under_automatic_inspection_an_order_is_delivered_when_placed() -> None:
    placed = delivered()

    assert (placed.status, placed.delivered_at, placed.auto_complete_at) == (
        OrderStatus.PAID,
        T0,
        T0 + AUTO_COMPLETE_AFTER,
    )
    (event,) = placed.events
    assert isinstance(event, events.OrderPlaced)
    assert (event.status, event.delivered_at) == (OrderStatus.PAID, T0)


# --- inspection -------------------------------------------------------------------------


def test_passing_inspection_delivers_the_order_and_starts_its_72_hours() -> None:
    placed = inspecting()
    later = T0 + timedelta(hours=5)

    placed.pass_inspection(ADMIN, later)

    assert (placed.status, placed.delivered_at, placed.inspected_by, placed.version) == (
        OrderStatus.PAID,
        later,
        ADMIN,
        2,
    )
    assert placed.auto_complete_at == later + AUTO_COMPLETE_AFTER
    assert kinds(placed) == [("OrderPlaced", 1), ("OrderDelivered", 2)]
    delivered_event = placed.events[-1]
    assert isinstance(delivered_event, events.OrderDelivered)
    assert (delivered_event.delivered_at, delivered_event.inspected_by) == (later, ADMIN)


def test_failing_inspection_refunds_the_order_with_its_reason() -> None:
    placed = inspecting()
    later = T0 + timedelta(hours=5)

    placed.fail_inspection(ADMIN, "  barcode already redeemed ", later)

    assert (placed.status, placed.refunded_at, placed.delivered_at, placed.version) == (
        OrderStatus.REFUNDED,
        later,
        None,
        2,
    )
    assert (placed.inspected_by, placed.inspection_failure) == (ADMIN, "barcode already redeemed")
    assert kinds(placed) == [("OrderPlaced", 1), ("OrderInspectionFailed", 2), ("OrderRefunded", 2)]
    failed, refunded = placed.events[1:]
    assert isinstance(failed, events.OrderInspectionFailed)
    assert failed.reason == "barcode already redeemed"
    assert isinstance(refunded, events.OrderRefunded)
    assert (refunded.cause, refunded.paid, refunded.discount, refunded.coupon_id) == (
        RefundCause.INSPECTION_FAILED,
        3_000,
        1_000,
        "coupon-1",
    )


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_a_failed_inspection_needs_a_reason_of_1_to_500_characters(reason: str) -> None:
    placed = inspecting()

    with pytest.raises(InvalidField):
        placed.fail_inspection(ADMIN, reason, T0)
    assert (placed.status, placed.version, len(placed.events)) == (OrderStatus.INSPECTING, 1, 1)


def test_a_reason_of_500_characters_is_enough() -> None:
    placed = inspecting()

    placed.fail_inspection(ADMIN, "x" * 500, T0)

    assert placed.status is OrderStatus.REFUNDED


def transitions() -> dict[str, Any]:
    def confirmed() -> Order:
        placed = delivered()
        placed.confirm("bob", T0)
        return placed

    def settled() -> Order:
        placed = confirmed()
        placed.settle("settlement-1", T0)
        return placed

    def refunded() -> Order:
        placed = inspecting()
        placed.fail_inspection(ADMIN, "used", T0)
        return placed

    def rejected() -> Order:
        placed = disputed()
        placed.resolve_dispute(ADMIN, DisputeDecision.REJECT, None, T0 + timedelta(hours=2))
        return placed

    return {
        "inspecting": inspecting,
        "paid": delivered,
        "disputed": disputed,
        "completed": confirmed,
        "settled": settled,
        "refunded": refunded,
        "rejected": rejected,
    }


STATES = transitions()


@pytest.mark.parametrize("state", [s for s in STATES if s != "inspecting"])
@pytest.mark.parametrize("passed", [True, False], ids=["pass", "fail"])
def test_an_inspection_decision_on_an_order_not_inspecting_is_not_pending(
    state: str, passed: bool
) -> None:
    placed = STATES[state]()
    before = (placed.status, placed.version, len(placed.events))

    with pytest.raises(OrderNotPending):
        if passed:
            placed.pass_inspection(ADMIN, T0)
        else:
            placed.fail_inspection(ADMIN, "used", T0)
    assert (placed.status, placed.version, len(placed.events)) == before


@pytest.mark.parametrize("state", [s for s in STATES if s != "disputed"])
@pytest.mark.parametrize("decision", list(DisputeDecision))
def test_a_resolution_on_an_order_not_disputed_is_not_pending(
    state: str, decision: DisputeDecision
) -> None:
    placed = STATES[state]()
    before = (placed.status, placed.version, len(placed.events))

    with pytest.raises(OrderNotPending):
        placed.resolve_dispute(ADMIN, decision, "note", T0)
    assert (placed.status, placed.version, len(placed.events)) == before


# --- download ---------------------------------------------------------------------------


def test_the_buyer_cannot_download_before_delivery_but_the_seller_can() -> None:
    placed = inspecting()

    with pytest.raises(NotDelivered):
        placed.ensure_downloadable_by("bob")
    placed.ensure_downloadable_by("sally")


def test_the_buyer_downloads_once_delivered() -> None:
    placed = inspecting()
    placed.pass_inspection(ADMIN, T0)

    placed.ensure_downloadable_by("bob")


def test_after_a_failed_inspection_the_buyer_never_downloads_the_seller_still_does() -> None:
    placed = STATES["refunded"]()

    with pytest.raises(NotDelivered):
        placed.ensure_downloadable_by("bob")
    placed.ensure_downloadable_by("sally")


@pytest.mark.parametrize("state", list(STATES))
def test_a_stranger_downloading_is_told_the_order_does_not_exist(state: str) -> None:
    with pytest.raises(NotFound):
        STATES[state]().ensure_downloadable_by("mallory")


@pytest.mark.parametrize("state", ["paid", "disputed", "completed", "settled", "rejected"])
def test_a_delivered_order_stays_downloadable_by_both_parties(state: str) -> None:
    placed = STATES[state]()

    placed.ensure_downloadable_by("bob")
    placed.ensure_downloadable_by("sally")


# --- disputes ---------------------------------------------------------------------------


def test_the_buyer_disputes_a_delivered_order() -> None:
    placed = delivered()
    later = T0 + timedelta(hours=1)

    placed.open_dispute("bob", "  already used  ", later)

    assert (placed.status, placed.dispute_reason, placed.dispute_opened_at, placed.version) == (
        OrderStatus.DISPUTED,
        "already used",
        later,
        2,
    )
    assert kinds(placed) == [("OrderPlaced", 1), ("OrderDisputed", 2)]
    opened = placed.events[-1]
    assert isinstance(opened, events.OrderDisputed)
    assert (opened.reason, opened.opened_at, opened.price) == ("already used", later, 4_000)


def test_a_dispute_a_second_before_the_72_hours_end_is_accepted() -> None:
    placed = delivered()

    placed.open_dispute("bob", "used", T0 + AUTO_COMPLETE_AFTER - timedelta(seconds=1))

    assert placed.status is OrderStatus.DISPUTED


@pytest.mark.parametrize("after", [timedelta(0), timedelta(days=30)], ids=["at-72h", "later"])
def test_a_dispute_after_the_72_hours_is_refused(after: timedelta) -> None:
    placed = delivered()

    with pytest.raises(OrderNotDisputable):
        placed.open_dispute("bob", "used", T0 + AUTO_COMPLETE_AFTER + after)
    assert (placed.status, placed.version) == (OrderStatus.PAID, 1)


def test_the_72_hours_to_dispute_count_from_delivery_not_from_payment() -> None:
    placed = inspecting()
    delivery = T0 + timedelta(days=2)
    placed.pass_inspection(ADMIN, delivery)

    placed.open_dispute("bob", "used", T0 + AUTO_COMPLETE_AFTER + timedelta(hours=1))

    assert placed.status is OrderStatus.DISPUTED


def test_the_seller_cannot_dispute() -> None:
    placed = delivered()

    with pytest.raises(OrderNotDisputable):
        placed.open_dispute("sally", "used", T0)
    assert placed.status is OrderStatus.PAID


def test_a_stranger_disputing_is_told_the_order_does_not_exist() -> None:
    with pytest.raises(NotFound):
        delivered().open_dispute("mallory", "used", T0)


@pytest.mark.parametrize("state", [s for s in STATES if s != "paid"])
def test_only_a_delivered_paid_order_is_disputable(state: str) -> None:
    placed = STATES[state]()
    before = (placed.status, placed.version)

    with pytest.raises(OrderNotDisputable):
        placed.open_dispute("bob", "used", T0 + timedelta(hours=3))
    assert (placed.status, placed.version) == before


@pytest.mark.parametrize("reason", ["", "  ", "x" * 501])
def test_a_dispute_needs_a_reason_of_1_to_500_characters(reason: str) -> None:
    placed = delivered()

    with pytest.raises(InvalidField):
        placed.open_dispute("bob", reason, T0)
    assert placed.status is OrderStatus.PAID


def test_an_upheld_dispute_refunds_the_order() -> None:
    placed = disputed()
    decided = T0 + timedelta(hours=2)

    placed.resolve_dispute(ADMIN, DisputeDecision.REFUND, "  seller agreed ", decided)

    assert (placed.status, placed.refunded_at, placed.completed_at, placed.version) == (
        OrderStatus.REFUNDED,
        decided,
        None,
        3,
    )
    assert (placed.dispute_decision, placed.dispute_note, placed.dispute_decided_by) == (
        DisputeDecision.REFUND,
        "seller agreed",
        ADMIN,
    )
    assert placed.dispute_decided_at == decided
    assert kinds(placed)[2:] == [("OrderDisputeResolved", 3), ("OrderRefunded", 3)]
    refunded = placed.events[-1]
    assert isinstance(refunded, events.OrderRefunded)
    assert refunded.cause is RefundCause.DISPUTE_UPHELD


def test_a_rejected_dispute_completes_the_order_at_the_decision() -> None:
    placed = disputed()
    decided = T0 + timedelta(hours=2)

    placed.resolve_dispute(ADMIN, DisputeDecision.REJECT, "   ", decided)

    assert (placed.status, placed.completed_at, placed.refunded_at, placed.version) == (
        OrderStatus.COMPLETED,
        decided,
        None,
        3,
    )
    assert placed.dispute_note is None
    assert kinds(placed)[2:] == [("OrderDisputeResolved", 3), ("OrderCompleted", 3)]
    completed = placed.events[-1]
    assert isinstance(completed, events.OrderCompleted)
    assert not completed.automatically


def test_a_rejected_dispute_settles_like_any_completed_order() -> None:
    placed = STATES["rejected"]()

    placed.settle("settlement-1", T0 + timedelta(days=1))

    assert placed.status is OrderStatus.SETTLED


@pytest.mark.parametrize("state", ["disputed", "refunded", "inspecting", "paid"])
def test_only_completed_orders_settle(state: str) -> None:
    with pytest.raises(ValueError):
        STATES[state]().settle("settlement-1", T0)


# --- confirmation and the auto-complete -------------------------------------------------


@pytest.mark.parametrize("state", ["inspecting", "disputed", "refunded", "completed"])
def test_only_a_delivered_paid_order_is_confirmable(state: str) -> None:
    placed = STATES[state]()
    status = placed.status

    with pytest.raises(OrderNotConfirmable):
        placed.confirm("bob", T0 + timedelta(hours=3))
    assert placed.status is status


def test_the_auto_complete_counts_72_hours_from_delivery() -> None:
    placed = inspecting()
    delivery = T0 + timedelta(days=2)
    placed.pass_inspection(ADMIN, delivery)

    assert not placed.complete_if_due(T0 + AUTO_COMPLETE_AFTER + timedelta(hours=1))
    assert not placed.complete_if_due(delivery + AUTO_COMPLETE_AFTER - timedelta(seconds=1))
    assert placed.complete_if_due(delivery + AUTO_COMPLETE_AFTER + timedelta(days=1))

    assert (placed.status, placed.completed_at, placed.version) == (
        OrderStatus.COMPLETED,
        delivery + AUTO_COMPLETE_AFTER,
        3,
    )
    completed = placed.events[-1]
    assert isinstance(completed, events.OrderCompleted)
    assert completed.automatically


def test_an_order_still_inspecting_never_auto_completes() -> None:
    placed = inspecting()

    assert not placed.is_due_for_completion(T0 + timedelta(days=365))
    assert not placed.complete_if_due(T0 + timedelta(days=365))
    assert placed.status is OrderStatus.INSPECTING


def test_a_disputed_order_never_auto_completes() -> None:
    placed = disputed()

    assert not placed.is_due_for_completion(T0 + timedelta(days=365))
    assert not placed.complete_if_due(T0 + timedelta(days=365))
    assert (placed.status, placed.version) == (OrderStatus.DISPUTED, 2)


def test_a_refunded_order_never_auto_completes() -> None:
    placed = STATES["refunded"]()

    assert not placed.complete_if_due(T0 + timedelta(days=365))
    assert placed.status is OrderStatus.REFUNDED


# --- the refund's ledger entries --------------------------------------------------------


def owner_sums(*transactions: LedgerTransaction) -> dict[ledger.Account, int]:
    sums: dict[ledger.Account, int] = {}
    for transaction in transactions:
        for posting in transaction.postings:
            sums[posting.account] = sums.get(posting.account, 0) + posting.amount
    return {account: amount for account, amount in sums.items() if amount}


@pytest.mark.parametrize(
    ("price", "discount"), [(4_000, 0), (4_000, 1_000), (4_000, 4_000), (1, 1), (1, 0)]
)
def test_a_refund_is_the_exact_reverse_of_a_buy_now_payment(price: int, discount: int) -> None:
    paid = ledger.buy_now_payment("tx-1", "order-1", "bob", "sally", price, discount, T0)
    refund = ledger.refund("tx-2", "order-1", "bob", "sally", price, discount, T0)

    assert sum(p.amount for p in refund.postings) == 0
    assert (refund.reason, refund.ref_id) == (LedgerReason.REFUND, "order-1")
    assert {(p.account, -p.amount) for p in paid.postings} == {
        (p.account, p.amount) for p in refund.postings
    }
    assert owner_sums(paid, refund) == {}


def test_a_fully_discounted_refund_posts_no_zero_to_the_buyer() -> None:
    refund = ledger.refund("tx-2", "order-1", "bob", "sally", 4_000, 4_000, T0)

    assert {(p.account, p.amount) for p in refund.postings} == {
        (ledger.pending("sally"), -4_000),
        (COUPON_SUBSIDY, 4_000),
    }


def test_a_refund_of_a_sell_now_pays_the_escrowed_price_back_to_available_points() -> None:
    paid = ledger.sell_now_payment("tx-1", "order-1", "bob", "sally", 4_000, T0)
    refund = ledger.refund("tx-2", "order-1", "bob", "sally", 4_000, 0, T0)

    # The bid it paid from is closed: the money comes back to spend, not to escrow.
    assert owner_sums(paid, refund) == {
        ledger.escrowed("bob"): -4_000,
        ledger.available("bob"): 4_000,
    }
    assert {(p.account, p.amount) for p in refund.postings} == {
        (ledger.pending("sally"), -4_000),
        (ledger.available("bob"), 4_000),
    }


@pytest.mark.parametrize(("price", "discount"), [(0, 0), (-5, 0), (100, 101), (100, -1)])
def test_a_refund_of_an_impossible_payment_is_refused(price: int, discount: int) -> None:
    with pytest.raises(ValueError):
        ledger.refund("tx-2", "order-1", "bob", "sally", price, discount, T0)
