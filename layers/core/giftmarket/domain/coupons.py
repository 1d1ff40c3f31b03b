"""Discount coupons, paid for by the platform."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Self

from giftmarket.domain import events
from giftmarket.domain.errors import CouponUnavailable
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.validation import require_aware, require_points, require_text

MAX_COUPON_NAME_LENGTH = 100
WELCOME_COUPON_NAME = "Welcome coupon"
WELCOME_COUPON_VALIDITY = timedelta(days=30)


class CouponStatus(StrEnum):
    AVAILABLE = "AVAILABLE"
    USED = "USED"
    EXPIRED = "EXPIRED"


class CouponKind(StrEnum):
    WELCOME = "welcome"
    ADMIN = "admin"


def welcome_issue_key(user_id: str) -> str:
    return f"welcome:{user_id}"


@dataclass(eq=False, kw_only=True)
class Coupon:
    id: str
    user_id: str
    name: str
    discount_amount: int
    status: CouponStatus
    expires_at: datetime
    kind: CouponKind
    issue_key: str | None
    order_id: str | None
    created_at: datetime
    used_at: datetime | None
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def issue(
        cls,
        *,
        coupon_id: str,
        user_id: str,
        name: str,
        discount_amount: int,
        expires_at: datetime,
        kind: CouponKind,
        now: datetime,
        issue_key: str | None = None,
    ) -> Self:
        # An already expired coupon may be issued: it is simply never usable.
        coupon = cls(
            id=coupon_id,
            user_id=user_id,
            name=require_text(name, "name", MAX_COUPON_NAME_LENGTH),
            discount_amount=require_points(discount_amount, "discount_amount"),
            status=CouponStatus.AVAILABLE,
            expires_at=require_aware(expires_at, "expires_at"),
            kind=kind,
            issue_key=issue_key,
            order_id=None,
            created_at=now,
            used_at=None,
            version=1,
        )
        coupon.events.append(
            events.CouponIssued(
                aggregate_id=coupon.id,
                version=coupon.version,
                occurred_at=now,
                coupon_id=coupon.id,
                user_id=user_id,
                name=coupon.name,
                discount_amount=coupon.discount_amount,
                expires_at=coupon.expires_at,
                kind=kind,
            )
        )
        return coupon

    @classmethod
    def issue_welcome(
        cls, *, coupon_id: str, user_id: str, discount_amount: int, now: datetime
    ) -> Self:
        """`issue_key` is unique per user, which makes retried issuing harmless."""
        return cls.issue(
            coupon_id=coupon_id,
            user_id=user_id,
            name=WELCOME_COUPON_NAME,
            discount_amount=discount_amount,
            expires_at=now + WELCOME_COUPON_VALIDITY,
            kind=CouponKind.WELCOME,
            now=now,
            issue_key=welcome_issue_key(user_id),
        )

    def is_usable(self, now: datetime) -> bool:
        return self.status is CouponStatus.AVAILABLE and now < self.expires_at

    def discount_for(self, by_user: str, now: datetime, price: int) -> int:
        # Someone else's coupon gets the same answer as a used one: existence is not revealed.
        if by_user != self.user_id or not self.is_usable(now):
            raise CouponUnavailable()
        return min(self.discount_amount, price)

    def redeem(self, *, by_user: str, now: datetime, price: int, order_id: str) -> int:
        discount = self.discount_for(by_user, now, price)
        self.status = CouponStatus.USED
        self.order_id = order_id
        self.used_at = now
        self.version += 1
        self.events.append(
            events.CouponUsed(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                coupon_id=self.id,
                user_id=self.user_id,
                order_id=order_id,
                discount=discount,
            )
        )
        return discount

    def restore(self, *, order_id: str, now: datetime) -> None:
        """The order it paid for was refunded: AVAILABLE again, with its expiry unchanged
        (an expired coupon comes back, and simply stays unusable)."""
        if self.status is not CouponStatus.USED or self.order_id != order_id:
            raise ValueError(f"coupon {self.id} was not used for order {order_id}")
        self.status = CouponStatus.AVAILABLE
        self.order_id = None
        self.used_at = None
        self.version += 1
        self.events.append(
            events.CouponRestored(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                coupon_id=self.id,
                user_id=self.user_id,
                order_id=order_id,
                expires_at=self.expires_at,
            )
        )
