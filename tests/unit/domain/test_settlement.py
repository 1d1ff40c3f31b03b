from datetime import UTC, date, datetime, timedelta

import pytest
from tests.unit.domain.factories import placed_order

from giftmarket.domain import events
from giftmarket.domain.errors import InvalidField
from giftmarket.domain.orders import Order
from giftmarket.domain.settlement import (
    KST,
    SettleableOrder,
    Settlement,
    business_date_of,
    business_day_bounds,
    default_business_date,
    fee_for,
    settleable,
)

pytestmark = pytest.mark.unit


def kst(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=KST)


def completed_order(completed_at: datetime, price: int = 10_000) -> Order:
    order = placed_order(price, completed_at - timedelta(hours=1))
    order.confirm("bob", completed_at)
    return order


# --- fees --------------------------------------------------------------------------------


def test_fee_is_floored() -> None:
    assert fee_for(19, 500) == 0
    assert fee_for(20, 500) == 1
    assert fee_for(10_000, 500) == 500
    assert fee_for(10**9, 10_000) == 10**9


@pytest.mark.parametrize("fee_bps", [-1, 10_001])
def test_fee_rate_must_lie_between_0_and_100_percent(fee_bps: int) -> None:
    with pytest.raises(ValueError):
        fee_for(1_000, fee_bps)


def test_settlement_floors_the_fee_per_order_not_on_the_sum(now: datetime) -> None:
    orders = [placed_order(19, now), placed_order(19, now)]

    settlement = Settlement.of_orders(
        settlement_id="s",
        seller_id="sally",
        business_date=date(2025, 3, 14),
        orders=orders,
        fee_bps=500,
        now=now,
    )

    # floor(38 × 5%) would be 1; per order it is 0 + 0.
    assert (settlement.gross, settlement.fee, settlement.net) == (38, 0, 38)


def test_settlement_records_its_amounts(now: datetime) -> None:
    orders = [placed_order(10_000, now), placed_order(4_999, now)]

    settlement = Settlement.of_orders(
        settlement_id="s",
        seller_id="sally",
        business_date=date(2025, 3, 14),
        orders=orders,
        fee_bps=500,
        now=now,
    )

    assert settlement.events == [
        events.SettlementCompleted(
            aggregate_id="s",
            version=1,
            occurred_at=now,
            settlement_id="s",
            seller_id="sally",
            business_date=date(2025, 3, 14),
            order_count=2,
            gross=14_999,
            fee=500 + 249,
            net=14_999 - 749,
        )
    ]


def sales(count: int, completed_at: datetime, seller_id: str = "sally") -> list[SettleableOrder]:
    return [
        SettleableOrder(
            id=f"o{i:03}",
            seller_id=seller_id,
            buyer_id=f"b{i % 3}",
            product_id=f"p{i % 5}",
            price=1_000 + i,
            completed_at=completed_at + timedelta(seconds=i),
            version=3 + i % 2,
        )
        for i in range(count)
    ]


def test_a_settlement_announces_its_orders_in_slices_as_each_would_be_settled(
    now: datetime,
) -> None:
    orders = sales(5, now - timedelta(hours=1))
    settlement = Settlement.of_orders(
        settlement_id="s", seller_id="sally", business_date=date(2025, 3, 14),
        orders=orders, fee_bps=500, now=now,
    )  # fmt: skip

    settlement.announce_settled(orders, now, per_event=2)

    announced = [e for e in settlement.events if isinstance(e, events.OrdersSettled)]
    assert settlement.events[1:] == announced
    assert [len(e.order_ids) for e in announced] == [2, 2, 1]
    assert all(
        (e.aggregate_id, e.version, e.settlement_id, e.seller_id, e.settled_at, e.occurred_at)
        == ("s", 1, "s", "sally", now, now)
        for e in announced
    )
    each = [order for e in announced for order in e.each_order()]
    # In the order given, each one version up, as Order.settle leaves it.
    assert each == [(o.id, o.version + 1, o.product_id, o.buyer_id, o.completed_at) for o in orders]


def test_a_settlement_announces_only_its_sellers_orders(now: datetime) -> None:
    settlement = Settlement.of_orders(
        settlement_id="s", seller_id="sally", business_date=date(2025, 3, 14),
        orders=sales(1, now), fee_bps=500, now=now,
    )  # fmt: skip
    with pytest.raises(ValueError, match="not sally's"):
        settlement.announce_settled([*sales(1, now), *sales(1, now, seller_id="sam")], now)
    with pytest.raises(ValueError, match="at least 1"):
        settlement.announce_settled(sales(1, now), now, per_event=0)
    assert len(settlement.events) == 1  # nothing announced


def test_an_announcement_needs_one_of_each_item_per_order(now: datetime) -> None:
    with pytest.raises(ValueError, match="one of each item per order"):
        events.OrdersSettled(
            aggregate_id="s", version=1, occurred_at=now, settlement_id="s", seller_id="sally",
            settled_at=now, order_ids=("o1", "o2"), order_versions=(2,), product_ids=("p", "p"),
            buyer_ids=("b", "b"), completed_at=(now, now),
        )  # fmt: skip


# --- business dates ----------------------------------------------------------------------


def test_korea_is_nine_hours_ahead_of_utc() -> None:
    assert kst(2025, 3, 14).utcoffset() == timedelta(hours=9)


def test_last_second_of_a_korean_day_belongs_to_that_day() -> None:
    assert business_date_of(kst(2025, 3, 14, 23, 59, 59)) == date(2025, 3, 14)


def test_korean_midnight_starts_the_next_business_day() -> None:
    assert business_date_of(kst(2025, 3, 15, 0, 0, 0)) == date(2025, 3, 15)


def test_business_date_follows_korea_when_the_utc_date_differs() -> None:
    afternoon_utc = datetime(2025, 3, 14, 15, 30, tzinfo=UTC)

    assert business_date_of(afternoon_utc) == date(2025, 3, 15)


def test_business_date_refuses_a_naive_instant() -> None:
    with pytest.raises(InvalidField):
        business_date_of(datetime(2025, 3, 14, 12, 0))


def test_business_day_runs_from_korean_midnight_to_korean_midnight_in_utc() -> None:
    start, end = business_day_bounds(date(2025, 3, 14))

    assert start == datetime(2025, 3, 13, 15, 0, tzinfo=UTC)
    assert end == datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
    assert start.tzinfo is UTC and end.tzinfo is UTC


def test_the_run_at_00_10_kst_settles_the_day_that_just_ended() -> None:
    run_at = kst(2025, 3, 15, 0, 10).astimezone(UTC)

    assert run_at.date() == date(2025, 3, 14)
    assert default_business_date(run_at) == date(2025, 3, 14)


def test_default_business_date_is_yesterday_in_korea_even_when_utc_lags() -> None:
    assert default_business_date(datetime(2025, 3, 14, 23, 0, tzinfo=UTC)) == date(2025, 3, 14)


# --- what a run settles ------------------------------------------------------------------


def test_order_completed_in_the_last_second_of_the_day_is_settleable() -> None:
    order = completed_order(kst(2025, 3, 14, 23, 59, 59))

    assert settleable(order, date(2025, 3, 14))


def test_order_completed_at_korean_midnight_waits_for_the_next_day() -> None:
    order = completed_order(kst(2025, 3, 15, 0, 0, 0))

    assert not settleable(order, date(2025, 3, 14))
    assert settleable(order, date(2025, 3, 15))


def test_order_completed_days_earlier_is_still_settleable() -> None:
    assert settleable(completed_order(kst(2025, 3, 1, 12, 0)), date(2025, 3, 14))


def test_paid_and_settled_orders_are_not_settleable(now: datetime) -> None:
    paid = placed_order(1_000, now)
    settled = completed_order(now)
    settled.settle("s", now)

    assert not settleable(paid, business_date_of(now))
    assert not settleable(settled, business_date_of(now))
