from datetime import date, datetime, timedelta

import pytest
from tests.unit.domain.factories import placed_order

from giftmarket.domain import events
from giftmarket.domain.errors import NotFound, OrderNotConfirmable
from giftmarket.domain.orders import AUTO_COMPLETE_AFTER, Order, OrderStatus, OrderVia

pytestmark = pytest.mark.unit


def paid_order(now: datetime) -> Order:
    return placed_order(4_000, now, 1, discount=1_000, sell_bid_id="ask-1", coupon_id="coupon-1")


def test_placed_order_is_paid_and_records_what_the_read_side_needs(now: datetime) -> None:
    order = paid_order(now)

    assert (order.status, order.paid, order.created_at, order.version) == (
        OrderStatus.PAID,
        3_000,
        now,
        1,
    )
    assert order.delivered_at == now  # inspection is automatic: delivered when placed
    (placed,) = order.events
    assert isinstance(placed, events.OrderPlaced)
    assert placed.to_payload() | {"occurred_at": None} == {
        "aggregate_id": "order-1",
        "version": 1,
        "occurred_at": None,
        "order_id": "order-1",
        "product_id": "product-1",
        "buyer_id": "bob",
        "seller_id": "sally",
        "price": 4_000,
        "discount": 1_000,
        "paid": 3_000,
        "sell_bid_id": "ask-1",
        "buy_bid_id": None,
        "coupon_id": "coupon-1",
        "image_id": "image-1",
        "via": "buy_now",
        "status": "PAID",
        "delivered_at": now.isoformat(),
        "barcode_last4": "7890",
        "expires_on": "2099-12-31",
    }


def test_buyer_confirms_a_paid_order(now: datetime) -> None:
    order = paid_order(now)
    later = now + timedelta(hours=1)

    order.confirm("bob", later)

    assert (order.status, order.completed_at, order.version) == (OrderStatus.COMPLETED, later, 2)
    completed = order.events[-1]
    assert isinstance(completed, events.OrderCompleted)
    assert not completed.automatically


def test_seller_cannot_confirm_the_order(now: datetime) -> None:
    order = paid_order(now)

    with pytest.raises(OrderNotConfirmable):
        order.confirm("sally", now)
    assert order.status is OrderStatus.PAID


def test_stranger_confirming_an_order_is_told_it_does_not_exist(now: datetime) -> None:
    with pytest.raises(NotFound):
        paid_order(now).confirm("mallory", now)


def test_confirming_twice_is_refused(now: datetime) -> None:
    order = paid_order(now)
    order.confirm("bob", now)

    with pytest.raises(OrderNotConfirmable):
        order.confirm("bob", now)
    assert order.version == 2


def test_order_is_not_due_before_72_hours(now: datetime) -> None:
    order = paid_order(now)

    assert not order.complete_if_due(now + AUTO_COMPLETE_AFTER - timedelta(microseconds=1))
    assert (order.status, order.version) == (OrderStatus.PAID, 1)


def test_order_completes_automatically_when_72_hours_have_passed(now: datetime) -> None:
    order = paid_order(now)
    job_ran_at = now + AUTO_COMPLETE_AFTER + timedelta(hours=5)

    assert order.complete_if_due(job_ran_at)

    # It completed when its 72 hours ran out, not when the job noticed.
    assert (order.status, order.completed_at) == (OrderStatus.COMPLETED, now + AUTO_COMPLETE_AFTER)
    completed = order.events[-1]
    assert isinstance(completed, events.OrderCompleted)
    assert completed.automatically
    assert completed.occurred_at == job_ran_at


def test_exactly_72_hours_after_payment_the_order_is_due(now: datetime) -> None:
    assert paid_order(now).complete_if_due(now + AUTO_COMPLETE_AFTER)


def test_confirmed_order_is_not_completed_again(now: datetime) -> None:
    order = paid_order(now)
    order.confirm("bob", now)

    assert not order.complete_if_due(now + timedelta(days=10))
    assert (order.completed_at, order.version) == (now, 2)


def test_completed_order_settles(now: datetime) -> None:
    order = paid_order(now)
    order.confirm("bob", now)

    order.settle("settlement-1", now + timedelta(days=1))

    assert (order.status, order.settlement_id, order.settled_at, order.version) == (
        OrderStatus.SETTLED,
        "settlement-1",
        now + timedelta(days=1),
        3,
    )
    assert isinstance(order.events[-1], events.OrderSettled)


def test_paid_order_cannot_settle(now: datetime) -> None:
    with pytest.raises(ValueError):
        paid_order(now).settle("settlement-1", now)


def test_settled_order_cannot_settle_again(now: datetime) -> None:
    order = paid_order(now)
    order.confirm("bob", now)
    order.settle("settlement-1", now)

    with pytest.raises(ValueError):
        order.settle("settlement-2", now)
    assert order.settlement_id == "settlement-1"


@pytest.mark.parametrize("discount", [-1, 4_001])
def test_order_refuses_a_discount_outside_its_price(discount: int, now: datetime) -> None:
    with pytest.raises(ValueError):
        Order.place(
            order_id="o",
            product_id="p",
            buyer_id="b",
            seller_id="s",
            price=4_000,
            discount=discount,
            via=OrderVia.BUY_NOW,
            image_id="i",
            barcode_last4="7890",
            expires_on=date(2099, 12, 31),
            inspect=False,
            now=now,
        )
