"""Daily settlement of sellers' proceeds, by business date in Korea."""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Protocol, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from giftmarket.domain import events
from giftmarket.domain.errors import InvalidField
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.orders import Order, OrderStatus
from giftmarket.domain.validation import require_aware

BASIS_POINTS = 10_000
# Orders per OrdersSettled event: about 140 bytes of payload each, so an event stays near
# 30 KB, and ten of them fit one SendMessageBatch (256 KiB).
ORDERS_PER_EVENT = 200
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _korea() -> tzinfo:
    try:
        return ZoneInfo("Asia/Seoul")
    except ZoneInfoNotFoundError:
        # Some minimal runtimes ship no tz database. Korea has kept UTC+9 without daylight
        # saving since 1988, so the fixed offset gives the same answer for any order date.
        return timezone(timedelta(hours=9), "KST")


KST = _korea()


def fee_for(price: int, fee_bps: int) -> int:
    if not 0 <= fee_bps <= BASIS_POINTS:
        raise ValueError(f"fee_bps must lie within 0..{BASIS_POINTS}, got {fee_bps}")
    return price * fee_bps // BASIS_POINTS


def business_date_of(instant: datetime) -> date:
    return require_aware(instant, "instant").astimezone(KST).date()


def business_day_bounds(business_date: date) -> tuple[datetime, datetime]:
    """[00:00 KST of the date, 00:00 KST of the next date), in UTC."""
    start = datetime.combine(business_date, time(), tzinfo=KST)
    end = datetime.combine(business_date + timedelta(days=1), time(), tzinfo=KST)
    return start.astimezone(UTC), end.astimezone(UTC)


def default_business_date(now: datetime) -> date:
    """The day that has just ended in Korea: what the 00:10 KST run settles."""
    return business_date_of(now) - timedelta(days=1)


def parse_business_date(text: str) -> date:
    """A business date as operators and rerun events write it: YYYY-MM-DD."""
    cleaned = text.strip()
    try:
        if not _ISO_DATE.match(cleaned):
            raise ValueError(cleaned)
        return date.fromisoformat(cleaned)
    except ValueError:
        raise InvalidField(
            "business_date", f"business_date must be a date as YYYY-MM-DD, got {text!r}."
        ) from None


def require_business_day_over(business_date: date, now: datetime) -> date:
    """A day still running in Korea cannot be settled: its settlement would miss the orders
    completed later that day, and (seller, date) is settled once."""
    _, end = business_day_bounds(business_date)
    if require_aware(now, "now") < end:
        raise InvalidField(
            "business_date",
            f"business date {business_date} has not ended yet in Korea "
            f"(it ends at {end.astimezone(KST).isoformat()}).",
        )
    return business_date


class SettledSale(Protocol):
    """What a settlement reads of each order it settles: an `Order`, or a `SettleableOrder`."""

    @property
    def id(self) -> str: ...
    @property
    def seller_id(self) -> str: ...
    @property
    def price(self) -> int: ...
    @property
    def completed_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class SettleableOrder:
    """What settling takes of a COMPLETED order: the set-based path locks and reads these
    few columns, never the whole aggregate, and marks the orders SETTLED in SQL."""

    id: str
    seller_id: str
    buyer_id: str
    product_id: str
    price: int
    completed_at: datetime
    version: int


def settleable(order: Order, business_date: date) -> bool:
    _, end = business_day_bounds(business_date)
    return (
        order.status is OrderStatus.COMPLETED
        and order.completed_at is not None
        and order.completed_at < end
    )


@dataclass(eq=False, kw_only=True)
class Settlement:
    id: str
    seller_id: str
    business_date: date
    order_count: int
    gross: int
    fee: int
    net: int
    created_at: datetime
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def of_orders(
        cls,
        *,
        settlement_id: str,
        seller_id: str,
        business_date: date,
        orders: Sequence[SettledSale],
        fee_bps: int,
        now: datetime,
    ) -> Self:
        # The fee is floored per order, never on the sum: each sale is charged on its own.
        gross = sum(order.price for order in orders)
        fee = sum(fee_for(order.price, fee_bps) for order in orders)
        settlement = cls(
            id=settlement_id,
            seller_id=seller_id,
            business_date=business_date,
            order_count=len(orders),
            gross=gross,
            fee=fee,
            net=gross - fee,
            created_at=now,
            version=1,
        )
        settlement.events.append(
            events.SettlementCompleted(
                aggregate_id=settlement.id,
                version=settlement.version,
                occurred_at=now,
                settlement_id=settlement.id,
                seller_id=seller_id,
                business_date=business_date,
                order_count=settlement.order_count,
                gross=gross,
                fee=fee,
                net=settlement.net,
            )
        )
        return settlement

    def announce_settled(
        self, orders: Sequence[SettleableOrder], now: datetime, per_event: int = ORDERS_PER_EVENT
    ) -> None:
        """Record that `orders` (this settlement's, locked as read) are SETTLED by it, in
        OrdersSettled events of `per_event` orders: what `Order.settle` records one event
        per order for, when the orders are marked SETTLED set-based instead of as
        aggregates (`OrderRepository.mark_settled`)."""
        if per_event < 1:
            raise ValueError("per_event must be at least 1")
        if any(order.seller_id != self.seller_id for order in orders):
            raise ValueError(f"an order is not {self.seller_id}'s to settle")
        for start in range(0, len(orders), per_event):
            part = orders[start : start + per_event]
            self.events.append(
                events.OrdersSettled(
                    aggregate_id=self.id,
                    version=self.version,
                    occurred_at=now,
                    settlement_id=self.id,
                    seller_id=self.seller_id,
                    settled_at=now,
                    order_ids=tuple(order.id for order in part),
                    order_versions=tuple(order.version + 1 for order in part),
                    product_ids=tuple(order.product_id for order in part),
                    buyer_ids=tuple(order.buyer_id for order in part),
                    completed_at=tuple(order.completed_at for order in part),
                )
            )
