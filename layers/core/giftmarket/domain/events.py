"""Domain events, named in the past tense.

They are also the outbox schema: `to_payload()` is what consumers receive and
`from_payload()` reads it back, so field names are part of the contract. Add fields freely;
never rename or remove one. A field added later must admit None (what an older payload
without it means), or its class says in `_older_payload` what an older payload means.
`version` is the aggregate's version after the change; one change may record several
events, which then share that version (consumers tell them apart by `event_type`).
"""

import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints


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
    if isinstance(value, tuple):
        return [_json_safe(item) for item in value]
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

    @classmethod
    def from_payload(cls, payload: Mapping[str, object]) -> Self:
        """The event `to_payload()` wrote: `E.from_payload(e.to_payload()) == e`.

        Keys no field names are ignored (a newer writer may have added them). A field the
        payload lacks is None where its type admits None; lacking any other field, the
        payload is not this event (ValueError)."""
        payload = cls._older_payload(payload)
        values: dict[str, Any] = {}
        for name, parse, optional in _schema(cls):
            if name in payload:
                value = payload[name]
                values[name] = value if value is None or parse is None else parse(value)
            elif optional:
                values[name] = None
            else:
                raise ValueError(f"a {cls.__name__} payload without {name!r}")
        return cls(**values)

    @staticmethod
    def _older_payload(payload: Mapping[str, object]) -> Mapping[str, object]:
        """`payload` as it would be written today, for an event whose later fields cannot
        be None. Events that had every field from the start leave it as it is."""
        return payload


_FIELD_NAMES: dict[type[DomainEvent], tuple[str, ...]] = {}


def _field_names(event_type: type[DomainEvent]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(event_type)
    if names is None:
        names = _FIELD_NAMES[event_type] = tuple(f.name for f in fields(event_type))
    return names


_Parse = Callable[[object], object]
_SCHEMAS: dict[type[DomainEvent], tuple[tuple[str, _Parse | None, bool], ...]] = {}


def _schema(event_type: type[DomainEvent]) -> tuple[tuple[str, _Parse | None, bool], ...]:
    """Each field's name, how its JSON value becomes the field's type (None: as it is), and
    whether the field admits None."""
    schema = _SCHEMAS.get(event_type)
    if schema is None:
        hints = get_type_hints(event_type)
        schema = _SCHEMAS[event_type] = tuple(
            (name, *_parser(hints[name])) for name in _field_names(event_type)
        )
    return schema


def _parser(hint: object) -> tuple[_Parse | None, bool]:
    kinds: tuple[object, ...] = (hint,)
    if get_origin(hint) in (Union, types.UnionType):
        kinds = get_args(hint)
    optional = type(None) in kinds
    (kind,) = [k for k in kinds if k is not type(None)]
    if get_origin(kind) is tuple:
        item, more = get_args(kind)
        if more is not Ellipsis:
            raise TypeError(f"a tuple field is tuple[X, ...], not {kind}")
        return _items(_parser(item)[0]), optional
    if kind is datetime:
        return _instant, optional
    if kind is date:
        return _date, optional
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind, optional
    return None, optional


def _items(parse: _Parse | None) -> _Parse:
    def items(value: object) -> tuple[object, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"not a list: {value!r}")
        return tuple(value) if parse is None else tuple(parse(item) for item in value)

    return items


def _instant(value: object) -> datetime:
    if not isinstance(value, str | datetime):
        raise TypeError(f"not an instant: {value!r}")
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _date(value: object) -> date:
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise TypeError(f"not a date: {value!r}")
    return date.fromisoformat(value)


# --- users -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UserSignedUp(DomainEvent):
    aggregate_type = "user"
    user_id: str
    email: str | None  # None: a social account with no verified email
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
    # The voucher's facts (never its barcode); None in payloads written before vouchers.
    barcode_last4: str | None
    expires_on: date | None


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
class SellBidExpired(DomainEvent):
    """The voucher got too close to its last valid day for buy-now to take the ask."""

    aggregate_type = "sell_bid"
    sell_bid_id: str
    product_id: str
    seller_id: str
    price: int
    image_id: str
    expires_on: date | None


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
    # Added with vouchers; `_older_payload` says what a payload without them meant.
    status: str
    delivered_at: datetime | None
    barcode_last4: str | None
    expires_on: date | None

    @staticmethod
    def _older_payload(payload: Mapping[str, object]) -> Mapping[str, object]:
        # Before inspection every order was PAID, and delivered, when it was placed.
        if payload.get("status") is None:
            return {**payload, "status": "PAID", "delivered_at": payload.get("occurred_at")}
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDelivered(DomainEvent):
    """The order passed inspection: the buyer may download the voucher, and the 72 hours
    to confirm or dispute start."""

    aggregate_type = "order"
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str
    delivered_at: datetime
    inspected_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderInspectionFailed(DomainEvent):
    """Recorded with the OrderRefunded it causes."""

    aggregate_type = "order"
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str
    reason: str
    inspected_by: str
    decided_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDisputed(DomainEvent):
    aggregate_type = "order"
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str
    price: int
    reason: str
    opened_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDisputeResolved(DomainEvent):
    """Recorded with the OrderRefunded (refund) or OrderCompleted (reject) it causes."""

    aggregate_type = "order"
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str
    decision: str
    note: str | None
    decided_by: str
    decided_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRefunded(DomainEvent):
    aggregate_type = "order"
    order_id: str
    product_id: str
    buyer_id: str
    seller_id: str
    price: int
    discount: int
    paid: int
    coupon_id: str | None
    cause: str  # inspection_failed, dispute_upheld
    refunded_at: datetime


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

    @staticmethod
    def _older_payload(payload: Mapping[str, object]) -> Mapping[str, object]:
        # The first settlements' events carried neither time: they settled when recorded.
        if payload.get("settled_at") is None:
            return {**payload, "settled_at": payload.get("occurred_at")}
        return payload


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


@dataclass(frozen=True, slots=True, kw_only=True)
class CouponRestored(DomainEvent):
    """The order it paid for was refunded: the coupon is usable again until its expiry."""

    aggregate_type = "coupon"
    coupon_id: str
    user_id: str
    order_id: str
    expires_at: datetime


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


@dataclass(frozen=True, slots=True, kw_only=True)
class OrdersSettled(DomainEvent):
    """Orders a settlement marked SETTLED, a slice of them per event: what an OrderSettled
    says of each order, for many orders at once. The daily settlement records these (one
    outbox row and one message per slice, not per order: 10^5 orders settled a night
    would otherwise be 10^5 messages queued ahead of everyone's events). The i-th item of
    each tuple is the i-th order's; `order_versions` are the orders' versions once
    settled, which their read models are guarded by."""

    aggregate_type = "settlement"
    settlement_id: str
    seller_id: str
    settled_at: datetime
    order_ids: tuple[str, ...]
    order_versions: tuple[int, ...]
    product_ids: tuple[str, ...]
    buyer_ids: tuple[str, ...]
    completed_at: tuple[datetime, ...]

    def __post_init__(self) -> None:
        sizes = {
            len(items)
            for items in (
                self.order_ids,
                self.order_versions,
                self.product_ids,
                self.buyer_ids,
                self.completed_at,
            )
        }
        if len(sizes) != 1:
            raise ValueError("an OrdersSettled event needs one of each item per order")

    def each_order(self) -> Iterator[tuple[str, int, str, str, datetime]]:
        """Each order's (id, version once settled, product id, buyer id, completed_at)."""
        return zip(
            self.order_ids,
            self.order_versions,
            self.product_ids,
            self.buyer_ids,
            self.completed_at,
            strict=True,
        )


# --- by name -------------------------------------------------------------------------------

_CLASSES: dict[str, type[DomainEvent]] = {
    value.__name__: value
    for value in list(globals().values())
    if isinstance(value, type) and issubclass(value, DomainEvent) and value is not DomainEvent
}


def event_class(event_type: str) -> type[DomainEvent] | None:
    """The class an `event_type` names; None for a type this code does not know (a newer
    writer's)."""
    return _CLASSES.get(event_type)
