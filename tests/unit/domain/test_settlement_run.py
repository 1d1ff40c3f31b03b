"""The rules a settlement run stands on: which date it settles, when that date may be
settled, which orders are due to complete, and the fee of many orders."""

from datetime import UTC, date, datetime, time, timedelta

import pytest
from tests.unit.domain.factories import placed_order

from giftmarket.domain.errors import InvalidField
from giftmarket.domain.orders import OrderStatus, auto_complete_delivered_before
from giftmarket.domain.settlement import (
    KST,
    Settlement,
    business_day_bounds,
    default_business_date,
    fee_for,
    parse_business_date,
    require_business_day_over,
    settleable,
)

pytestmark = pytest.mark.unit

D = date(2025, 3, 14)


def kst(day: date, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second, micro), tzinfo=KST)


# --- fees ----------------------------------------------------------------------------------


def test_the_fee_of_many_small_orders_is_the_sum_of_their_floored_fees() -> None:
    orders = [placed_order(19, kst(D, 9), n) for n in range(100)]

    settlement = Settlement.of_orders(
        settlement_id="s", seller_id="sally", business_date=D, orders=orders,
        fee_bps=500, now=kst(D + timedelta(days=1), 0, 10),
    )  # fmt: skip

    # 5% of the 1900 total would be 95; each 19-point sale is charged floor(0.95) = 0.
    assert (settlement.gross, settlement.fee, settlement.net) == (1_900, 0, 1_900)


@pytest.mark.parametrize(
    ("prices", "fee_bps", "fee"),
    [
        ([10_000, 4_999, 19, 20], 500, 500 + 249 + 0 + 1),
        ([1, 2, 3], 10_000, 6),
        ([10**9, 10**9], 500, 2 * 5 * 10**7),
        ([999, 1_001], 0, 0),
        ([333, 333, 334], 3_333, 110 + 110 + 111),
    ],
)
def test_fee_is_floored_per_order_and_net_is_gross_minus_fee(
    prices: list[int], fee_bps: int, fee: int
) -> None:
    orders = [placed_order(p, kst(D, 9), n) for n, p in enumerate(prices)]

    settlement = Settlement.of_orders(
        settlement_id="s", seller_id="sally", business_date=D, orders=orders,
        fee_bps=fee_bps, now=kst(D + timedelta(days=1), 0, 10),
    )  # fmt: skip

    assert settlement.fee == fee == sum(fee_for(p, fee_bps) for p in prices)
    assert (settlement.gross, settlement.net) == (sum(prices), sum(prices) - fee)


# --- which date a run settles, and when it may -----------------------------------------------


def test_at_00_10_kst_the_default_date_is_the_korean_yesterday_though_utc_is_still_on_it() -> None:
    run_at = kst(D + timedelta(days=1), 0, 10)

    assert run_at.astimezone(UTC).date() == D  # 15:10 UTC, still D in UTC
    assert default_business_date(run_at) == D


@pytest.mark.parametrize(
    "run_at",
    [kst(D + timedelta(days=1)), kst(D + timedelta(days=1), 23, 59, 59)],
    ids=["00:00:00 KST", "23:59:59 KST"],
)
def test_any_run_during_a_korean_day_defaults_to_the_day_before(run_at: datetime) -> None:
    assert default_business_date(run_at) == D


def test_a_date_may_be_settled_from_korean_midnight_on() -> None:
    assert require_business_day_over(D, kst(D + timedelta(days=1))) == D
    assert require_business_day_over(D, datetime(2025, 3, 14, 15, 0, tzinfo=UTC)) == D


@pytest.mark.parametrize(
    "now",
    [kst(D, 23, 59, 59, 999_999), kst(D, 12), datetime(2025, 3, 14, 14, 59, 59, tzinfo=UTC)],
)
def test_a_date_still_running_in_korea_cannot_be_settled(now: datetime) -> None:
    with pytest.raises(InvalidField, match="has not ended yet") as refused:
        require_business_day_over(D, now)
    assert refused.value.field == "business_date"


def test_a_run_needs_an_instant_with_a_time_zone() -> None:
    with pytest.raises(InvalidField):
        require_business_day_over(D, datetime(2025, 3, 16, 0, 10))


def test_an_order_completed_in_the_last_microsecond_of_d_is_settled_with_d() -> None:
    _, end = business_day_bounds(D)
    order = placed_order(1_000, kst(D, 9))
    order.confirm("bob", end - timedelta(microseconds=1))

    assert settleable(order, D)
    assert order.completed_at is not None
    assert order.completed_at.astimezone(KST).date() == D


# --- dates as operators write them -----------------------------------------------------------


@pytest.mark.parametrize("text", ["2025-03-14", " 2025-03-14 ", "2025-03-14\n"])
def test_a_business_date_is_written_yyyy_mm_dd(text: str) -> None:
    assert parse_business_date(text) == D


@pytest.mark.parametrize(
    "text", ["2025-3-14", "20250314", "2025-02-30", "", "2025-03-14T00:00", "14/03/2025", "yday"]
)
def test_anything_else_is_refused_naming_the_expected_form(text: str) -> None:
    with pytest.raises(InvalidField, match="YYYY-MM-DD") as refused:
        parse_business_date(text)
    assert refused.value.field == "business_date"


# --- which orders complete on their own ------------------------------------------------------


def test_an_order_paid_72_hours_before_the_run_is_due_and_one_paid_later_is_not() -> None:
    run_at = kst(D + timedelta(days=1), 0, 10)
    cutoff = auto_complete_delivered_before(run_at)
    due = placed_order(1_000, cutoff)
    not_yet = placed_order(1_000, cutoff + timedelta(microseconds=1))

    assert due.complete_if_due(run_at) and due.status is OrderStatus.COMPLETED
    assert due.completed_at == cutoff + timedelta(hours=72) == run_at
    assert not not_yet.complete_if_due(run_at)
    assert not_yet.status is OrderStatus.PAID
