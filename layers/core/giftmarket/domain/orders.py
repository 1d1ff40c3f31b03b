"""Orders: PAID → COMPLETED (buyer confirms, or 72 hours pass) → SETTLED."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Self

from giftmarket.domain import events
from giftmarket.domain.errors import NotFound, OrderNotConfirmable
from giftmarket.domain.events import DomainEvent

AUTO_COMPLETE_AFTER = timedelta(hours=72)


def auto_complete_paid_before(now: datetime) -> datetime:
    """Orders paid at or before this instant are due to complete automatically at `now`."""
    return now - AUTO_COMPLETE_AFTER


class OrderStatus(StrEnum):
    PAID = "PAID"
    COMPLETED = "COMPLETED"
    SETTLED = "SETTLED"


class OrderVia(StrEnum):
    BUY_NOW = "buy_now"
    SELL_NOW = "sell_now"


@dataclass(eq=False, kw_only=True)
class Order:
    id: str
    product_id: str
    buyer_id: str
    seller_id: str
    price: int
    discount: int
    paid: int
    status: OrderStatus
    via: OrderVia
    sell_bid_id: str | None
    buy_bid_id: str | None
    coupon_id: str | None
    image_id: str
    settlement_id: str | None
    created_at: datetime
    completed_at: datetime | None
    settled_at: datetime | None
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def place(
        cls,
        *,
        order_id: str,
        product_id: str,
        buyer_id: str,
        seller_id: str,
        price: int,
        discount: int,
        via: OrderVia,
        image_id: str,
        now: datetime,
        sell_bid_id: str | None = None,
        buy_bid_id: str | None = None,
        coupon_id: str | None = None,
    ) -> Self:
        if not 0 <= discount <= price:
            raise ValueError(f"discount {discount} must lie within 0..{price}")
        order = cls(
            id=order_id,
            product_id=product_id,
            buyer_id=buyer_id,
            seller_id=seller_id,
            price=price,
            discount=discount,
            paid=price - discount,
            status=OrderStatus.PAID,
            via=via,
            sell_bid_id=sell_bid_id,
            buy_bid_id=buy_bid_id,
            coupon_id=coupon_id,
            image_id=image_id,
            settlement_id=None,
            created_at=now,
            completed_at=None,
            settled_at=None,
            version=1,
        )
        order.events.append(
            events.OrderPlaced(
                aggregate_id=order.id,
                version=order.version,
                occurred_at=now,
                order_id=order.id,
                product_id=product_id,
                buyer_id=buyer_id,
                seller_id=seller_id,
                price=price,
                discount=discount,
                paid=order.paid,
                sell_bid_id=sell_bid_id,
                buy_bid_id=buy_bid_id,
                coupon_id=coupon_id,
                image_id=image_id,
                via=via,
            )
        )
        return order

    @property
    def auto_complete_at(self) -> datetime:
        return self.created_at + AUTO_COMPLETE_AFTER

    def is_party(self, user_id: str) -> bool:
        return user_id in (self.buyer_id, self.seller_id)

    def confirm(self, by_user: str, now: datetime) -> None:
        if not self.is_party(by_user):
            raise NotFound("order")
        if by_user != self.buyer_id:
            raise OrderNotConfirmable("only the buyer can confirm an order.")
        if self.status is not OrderStatus.PAID:
            raise OrderNotConfirmable(f"the order is {self.status}, not PAID.")
        self._complete(completed_at=now, now=now, automatically=False)

    def complete_if_due(self, now: datetime) -> bool:
        """Completes a PAID order whose 72 hours are over. It counts as completed when the
        72 hours ran out, not when a job noticed, so settlement does not depend on when
        the job happened to run."""
        if self.status is not OrderStatus.PAID or now < self.auto_complete_at:
            return False
        self._complete(completed_at=self.auto_complete_at, now=now, automatically=True)
        return True

    def settle(self, settlement_id: str, now: datetime) -> None:
        if self.status is not OrderStatus.COMPLETED:
            raise ValueError(f"order {self.id} is {self.status}; only COMPLETED orders settle")
        self.status = OrderStatus.SETTLED
        self.settlement_id = settlement_id
        self.settled_at = now
        self.version += 1
        self.events.append(
            events.OrderSettled(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                order_id=self.id,
                product_id=self.product_id,
                buyer_id=self.buyer_id,
                seller_id=self.seller_id,
                settlement_id=settlement_id,
                completed_at=self.completed_at,
                settled_at=now,
            )
        )

    def _complete(self, *, completed_at: datetime, now: datetime, automatically: bool) -> None:
        self.status = OrderStatus.COMPLETED
        self.completed_at = completed_at
        self.version += 1
        self.events.append(
            events.OrderCompleted(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=now,
                order_id=self.id,
                product_id=self.product_id,
                buyer_id=self.buyer_id,
                seller_id=self.seller_id,
                price=self.price,
                automatically=automatically,
                completed_at=completed_at,
            )
        )
