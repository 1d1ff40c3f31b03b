"""Domain events, named in the past tense.

They are also the outbox schema: `to_payload()` is what consumers receive, so field names
are part of the contract. Add fields freely; never rename or remove one.
`version` is the aggregate's version after the change; one change may record several
events, which then share that version (consumers tell them apart by `event_type`).
"""

from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from enum import Enum
from typing import ClassVar


def _json_safe(value: object) -> object:
    # Exact types first: most values are strings and integers, and a settlement writes
    # one event per order it settles.
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    aggregate_type: ClassVar[str]
    aggregate_id: str
    version: int
    occurred_at: datetime

    @property
    def event_type(self) -> str:
        return type(self).__name__

    def to_payload(self) -> dict[str, object]:
        return {name: _json_safe(getattr(self, name)) for name in _field_names(type(self))}


_FIELD_NAMES: dict[type[DomainEvent], tuple[str, ...]] = {}


def _field_names(event_type: type[DomainEvent]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(event_type)
    if names is None:
        names = _FIELD_NAMES[event_type] = tuple(f.name for f in fields(event_type))
    return names


# --- users -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UserSignedUp(DomainEvent):
    aggregate_type = "user"
    user_id: str
    email: str
    nickname: str
    is_admin: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PointsCharged(DomainEvent):
    aggregate_type = "user"
    user_id: str
    amount: int
    available_points: int
    transaction_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UserBalancesChanged(DomainEvent):
    aggregate_type = "user"
    user_id: str
    available_points: int
    escrowed_points: int
    pending_points: int
    reason: str
    transaction_id: str


# --- catalog -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductRegistered(DomainEvent):
    aggregate_type = "product"
    product_id: str
    name: str
    brand: str
    category: str
    face_value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductLiked(DomainEvent):
    aggregate_type = "product"
    product_id: str
    user_id: str
    like_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductUnliked(DomainEvent):
    aggregate_type = "product"
    product_id: str
    user_id: str
    like_count: int


# --- images ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRequested(DomainEvent):
    aggregate_type = "image"
    image_id: str
    owner_id: str
    s3_key: str
    content_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageAttached(DomainEvent):
    aggregate_type = "image"
    image_id: str
    owner_id: str
    sell_bid_id: str | None
    order_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageDeletionStarted(DomainEvent):
    """The cleanup decided the image goes: it can no longer be attached."""

    aggregate_type = "image"
    image_id: str
    owner_id: str
    s3_key: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageDeleted(DomainEvent):
    aggregate_type = "image"
    image_id: str
    owner_id: str
    s3_key: str


# --- order book --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SellBidPlaced(DomainEvent):
    aggregate_type = "sell_bid"
    sell_bid_id: str
    product_id: str
    seller_id: str
    price: int
    image_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SellBidCancelled(DomainEvent):
    aggregate_type = "sell_bid"
    sell_bid_id: str
    product_id: str
    seller_id: str
    price: int
    image_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SellBidMatched(DomainEvent):
    aggregate_type = "sell_bid"
    sell_bid_id: str
    product_id: str
    seller_id: str
    price: int
    order_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BuyBidPlaced(DomainEvent):
    aggregate_type = "buy_bid"
    buy_bid_id: str
    product_id: str
    buyer_id: str
    price: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BuyBidCancelled(DomainEvent):
    aggregate_type = "buy_bid"
    buy_bid_id: str
    product_id: str
    buyer_id: str
    price: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BuyBidMatched(DomainEvent):
    aggregate_type = "buy_bid"
    buy_bid_id: str
    product_id: str
    buyer_id: str
    price: int
    order_id: str


# --- orders ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPlaced(DomainEvent):
    aggregate_type = "order"
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str
    price: int
    discount: int
    paid: int
    sell_bid_id: str | None
    buy_bid_id: str | None
    coupon_id: str | None
    image_id: str
    via: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCompleted(DomainEvent):
    aggregate_type = "order"
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str
    price: int
    automatically: bool
    completed_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSettled(DomainEvent):
    aggregate_type = "order"
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str
    settlement_id: str
    # The order's full state, so a projection that sees this before OrderCompleted (an
    # out-of-order delivery) still shows when the order was completed.
    completed_at: datetime | None
    settled_at: datetime


# --- coupons -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CouponIssued(DomainEvent):
    aggregate_type = "coupon"
    coupon_id: str
    user_id: str
    name: str
    discount_amount: int
    expires_at: datetime
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CouponUsed(DomainEvent):
    aggregate_type = "coupon"
    coupon_id: str
    user_id: str
    order_id: str
    discount: int


# --- settlement --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementCompleted(DomainEvent):
    aggregate_type = "settlement"
    settlement_id: str
    seller_id: str
    business_date: date
    order_count: int
    gross: int
    fee: int
    net: int
