from datetime import datetime, timedelta

import pytest

from giftmarket.domain import events
from giftmarket.domain.coupons import (
    WELCOME_COUPON_VALIDITY,
    Coupon,
    CouponKind,
    CouponStatus,
)
from giftmarket.domain.errors import CouponUnavailable, InvalidAmount, InvalidField

pytestmark = pytest.mark.unit


def issue(
    now: datetime, discount: int = 1_000, expires_in: timedelta = timedelta(days=7)
) -> Coupon:
    return Coupon.issue(
        coupon_id="coupon-1",
        user_id="bob",
        name="spring sale",
        discount_amount=discount,
        expires_at=now + expires_in,
        kind=CouponKind.ADMIN,
        now=now,
    )


def test_issuing_a_coupon_records_it(now: datetime) -> None:
    coupon = issue(now)

    assert (coupon.status, coupon.version) == (CouponStatus.AVAILABLE, 1)
    assert coupon.events == [
        events.CouponIssued(
            aggregate_id="coupon-1",
            version=1,
            occurred_at=now,
            coupon_id="coupon-1",
            user_id="bob",
            name="spring sale",
            discount_amount=1_000,
            expires_at=now + timedelta(days=7),
            kind="admin",
        )
    ]


@pytest.mark.parametrize("discount", [0, -1, 10**9 + 1])
def test_issuing_refuses_a_discount_outside_1_to_10_to_the_9(discount: int, now: datetime) -> None:
    with pytest.raises(InvalidAmount):
        issue(now, discount=discount)


def test_issuing_refuses_an_expiry_without_time_zone(now: datetime) -> None:
    with pytest.raises(InvalidField):
        Coupon.issue(
            coupon_id="c",
            user_id="bob",
            name="n",
            discount_amount=1,
            expires_at=datetime(2030, 1, 1),
            kind=CouponKind.ADMIN,
            now=now,
        )


def test_an_already_expired_coupon_may_be_issued_but_never_used(now: datetime) -> None:
    coupon = issue(now, expires_in=-timedelta(days=1))

    with pytest.raises(CouponUnavailable):
        coupon.discount_for("bob", now, 5_000)


def test_redeeming_gives_the_full_discount_below_the_price(now: datetime) -> None:
    coupon = issue(now, discount=1_000)

    discount = coupon.redeem(by_user="bob", now=now, price=4_000, order_id="order-1")

    assert discount == 1_000
    assert (coupon.status, coupon.order_id, coupon.used_at, coupon.version) == (
        CouponStatus.USED,
        "order-1",
        now,
        2,
    )
    used = coupon.events[-1]
    assert isinstance(used, events.CouponUsed)
    assert (used.order_id, used.discount) == ("order-1", 1_000)


def test_discount_is_capped_at_the_price(now: datetime) -> None:
    assert issue(now, discount=5_000).discount_for("bob", now, 4_000) == 4_000


def test_coupon_expiring_at_this_instant_is_unavailable(now: datetime) -> None:
    coupon = issue(now - timedelta(days=1), expires_in=timedelta(days=1))
    assert coupon.expires_at == now

    with pytest.raises(CouponUnavailable):
        coupon.discount_for("bob", now, 4_000)


def test_coupon_is_usable_until_its_last_microsecond(now: datetime) -> None:
    coupon = issue(now, expires_in=timedelta(microseconds=1))

    assert coupon.discount_for("bob", now, 4_000) == 1_000


def test_someone_elses_coupon_is_unavailable_like_a_used_one(now: datetime) -> None:
    other_users = issue(now)
    used = issue(now)
    used.redeem(by_user="bob", now=now, price=4_000, order_id="order-1")

    with pytest.raises(CouponUnavailable) as foreign:
        other_users.discount_for("mallory", now, 4_000)
    with pytest.raises(CouponUnavailable) as spent:
        used.discount_for("bob", now, 4_000)

    assert foreign.value.detail == spent.value.detail


def test_used_coupon_cannot_be_redeemed_again(now: datetime) -> None:
    coupon = issue(now)
    coupon.redeem(by_user="bob", now=now, price=4_000, order_id="order-1")

    with pytest.raises(CouponUnavailable):
        coupon.redeem(by_user="bob", now=now, price=4_000, order_id="order-2")
    assert (coupon.order_id, coupon.version) == ("order-1", 2)


def test_coupon_marked_expired_is_unavailable_even_before_its_expiry(now: datetime) -> None:
    coupon = issue(now)
    coupon.status = CouponStatus.EXPIRED

    with pytest.raises(CouponUnavailable):
        coupon.discount_for("bob", now, 4_000)


def test_welcome_coupon_is_issued_once_per_user_by_its_issue_key(now: datetime) -> None:
    coupon = Coupon.issue_welcome(coupon_id="c", user_id="bob", discount_amount=1_000, now=now)

    assert (coupon.kind, coupon.issue_key) == (CouponKind.WELCOME, "welcome:bob")
    assert coupon.expires_at == now + WELCOME_COUPON_VALIDITY
