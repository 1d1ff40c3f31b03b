"""Request and response schemas of both APIs, named by role: the command API's bodies, then
the query API's parameters and answers.

Inputs are strict: amounts are JSON integers 1..10^9 (no strings, floats or booleans),
strings have limits, unknown fields are refused, and text that cannot be stored (lone
surrogates, NUL) is a 422 here rather than an error in the database driver.

The query API's answers are built by `giftmarket.queries` as JSON already; the models here
describe them for OpenAPI and keep them to the documented fields.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import Query
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from giftmarket.domain.orders import DisputeDecision, InspectionResult
from giftmarket.domain.validation import MAX_POINTS, storable


def storable_text(value: str) -> str:
    """`value` if the database can store it: valid Unicode (no lone surrogates), no NUL."""
    if not storable(value):
        raise ValueError("text must be valid Unicode (no lone surrogates) without NUL characters")
    return value


Points = Annotated[int, Field(strict=True, ge=1, le=MAX_POINTS)]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"
    ),
    AfterValidator(storable_text),
]
Password = Annotated[
    str, StringConstraints(min_length=8, max_length=128), AfterValidator(storable_text)
]
Nickname = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=30),
    AfterValidator(storable_text),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(storable_text),
]
ShortName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(storable_text),
]
Reference = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z]+$")
]
ContentType = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(storable_text),
]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignupRequest(Request):
    email: Email
    password: Password
    nickname: Nickname


class LoginRequest(Request):
    email: Email
    password: Annotated[
        str, StringConstraints(min_length=1, max_length=128), AfterValidator(storable_text)
    ]


class AuthPublic(BaseModel):
    user_id: str
    token: str


Nonce = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(storable_text)
]


class SocialSignInRequest(Request):
    # A compact JWS; what is wrong with one beyond its size is a 401 `invalid_token`.
    id_token: Annotated[
        str, StringConstraints(min_length=1, max_length=16384), AfterValidator(storable_text)
    ]
    # The nonce the app gave the provider's SDK, if any: the token must carry it.
    nonce: Nonce | None = None
    nickname: Nickname | None = None


class SocialSignInFingerprint(BaseModel):
    """What an Idempotency-Key remembers a social sign-in by: what names its token, never
    the token or anything computed from it."""

    provider: str
    subject: str
    issued_at: int
    nonce: str | None
    nickname: str | None


class SocialAuthPublic(AuthPublic):
    created: bool  # True (201): this sign-in created the account


class ChargeRequest(Request):
    amount: Points


class BalancePublic(BaseModel):
    available_points: int


class ProductCreate(Request):
    name: Name
    brand: ShortName
    category: ShortName
    face_value: Points


class ProductCreated(BaseModel):
    product_id: str


class ImageUploadRequest(Request):
    content_type: ContentType


class ImageUploadSlot(BaseModel):
    image_id: str
    upload_url: str


Barcode = Annotated[
    str,
    Field(
        strict=True,
        pattern=r"^[0-9]{8,32}$",
        description="The voucher's barcode, 8 to 32 digits: kept only as a keyed hash",
        json_schema_extra={"writeOnly": True},
    ),
]


def _calendar_day(value: object) -> object:
    # A JSON body reaches the model as Python values, where a strict date takes no string at
    # all; lax, it would also take a timestamp. So: a date, or exactly YYYY-MM-DD.
    if isinstance(value, date) or (isinstance(value, str) and _DAY.fullmatch(value)):
        return value
    raise ValueError("expires_on must be a date, YYYY-MM-DD")


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
ExpiresOn = Annotated[
    date,
    BeforeValidator(_calendar_day),
    Field(description="The voucher's last valid day (Asia/Seoul), YYYY-MM-DD"),
]
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(storable_text),
]
Note = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=500),
    AfterValidator(storable_text),
]


class SellBidCreate(Request):
    price: Points
    image_id: Reference
    barcode: Barcode
    expires_on: ExpiresOn


class SellBidPlaced(BaseModel):
    sell_bid_id: str
    status: str


class BuyBidCreate(Request):
    price: Points


class BuyBidPlaced(BaseModel):
    buy_bid_id: str
    status: str


class BuyNowRequest(Request):
    price: Points
    coupon_id: Reference | None = None


class PurchasePublic(BaseModel):
    order_id: str
    price: int
    discount: int
    paid: int
    status: str


class SellNowRequest(Request):
    price: Points
    image_id: Reference
    barcode: Barcode
    expires_on: ExpiresOn


class SalePublic(BaseModel):
    order_id: str
    price: int
    status: str


class OrderStatusPublic(BaseModel):
    order_id: str
    status: str


class DisputeRequest(Request):
    reason: Reason


class InspectionDecision(Request):
    result: InspectionResult
    reason: Reason | None = Field(default=None, description="Required when the result is fail")

    @model_validator(mode="after")
    def _fail_needs_reason(self) -> InspectionDecision:
        if self.result is InspectionResult.FAIL and self.reason is None:
            raise ValueError("a failed inspection needs a reason (1 to 500 characters)")
        return self


class DisputeResolution(Request):
    decision: DisputeDecision
    note: Note | None = None


def _storable_instant(value: datetime) -> datetime:
    # Bounded so that converting to UTC (for storage) cannot leave the representable range.
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("expires_at is out of range") from exc
    if not 2000 <= utc.year <= 9998:
        raise ValueError("expires_at must fall between the years 2000 and 9998 (UTC)")
    return utc


class CouponCreate(Request):
    user_id: Reference
    name: Name
    discount_amount: Points
    expires_at: Annotated[AwareDatetime, AfterValidator(_storable_instant)]


class CouponCreated(BaseModel):
    coupon_id: str


# -- the query API: parameters ---------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=100, description="How many items, 1 to 100.")]
SearchText = Annotated[
    str,
    Query(description="Text to find in product names and brands (any case)."),
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(storable_text),
]
Category = Annotated[
    str | None,
    Query(max_length=50, description="Only products of this category."),
    AfterValidator(lambda v: None if v is None else storable_text(v)),
]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="`next_cursor` of the previous page."),
]


# -- the query API: answers ------------------------------------------------------------------

Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Day = Annotated[str, Field(json_schema_extra={"format": "date"})]


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded", "down"]
    primary: str
    replica: str
    replica_lag_seconds: float | None
    cache: str


class ProductSummaryPublic(BaseModel):
    product_id: str
    name: str
    brand: str
    category: str
    face_value: int
    lowest_ask: int | None = Field(description="Lowest open ask; null when there is none.")
    highest_bid: int | None = Field(description="Highest open buy bid; null when none.")
    like_count: int


class ProductPagePublic(BaseModel):
    items: list[ProductSummaryPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class TradePublic(BaseModel):
    price: int
    traded_at: Instant


class AskStepPublic(BaseModel):
    price: int
    count: int = Field(description="Open asks at this price.")
    earliest_expires_on: Day | None = Field(
        description="The soonest last valid day of a voucher at this price (null: unknown)."
    )


class ProductDetailPublic(ProductSummaryPublic):
    order_count: int
    last_trade_price: int | None
    recent_trades: list[TradePublic] = Field(description="The newest trades, newest first.")
    asks: list[AskStepPublic] = Field(
        description="The open asks by price, at most 10 prices, cheapest first."
    )


class RankingEntryPublic(BaseModel):
    rank: int
    product_id: str
    name: str
    score: int = Field(description="Like count or order count.")


class RankingsPublic(BaseModel):
    items: list[RankingEntryPublic]


class SearchResultsPublic(BaseModel):
    items: list[ProductSummaryPublic]


class SearchHistoryEntryPublic(BaseModel):
    query: str
    searched_at: Instant


class SearchHistoryPublic(BaseModel):
    items: list[SearchHistoryEntryPublic]


class UserPublic(BaseModel):
    user_id: str
    email: str | None  # None: a social account whose provider gave no verified email
    nickname: str
    available_points: int
    escrowed_points: int
    pending_points: int


class HistoryItemPublic(BaseModel):
    product_id: str
    product_name: str
    price: int
    status: str
    created_at: Instant


class BuyBidItemPublic(HistoryItemPublic):
    buy_bid_id: str


_LAST4 = "The voucher barcode's last 4 digits (the seller's, the buyer's and admins' only)."


class SellBidItemPublic(HistoryItemPublic):
    """An open ask (bidding), or an EXPIRED one (done)."""

    sell_bid_id: str
    barcode_last4: str | None = Field(description=_LAST4)
    expires_on: Day | None = Field(description="The voucher's last valid day.")


class OrderItemPublic(HistoryItemPublic):
    order_id: str
    via: Literal["buy_now", "sell_now"]
    delivered_at: Instant | None = Field(description="Null while the order is inspected.")
    completed_at: Instant | None
    settled_at: Instant | None
    expires_on: Day | None = Field(description="The voucher's last valid day.")


class SaleItemPublic(OrderItemPublic):
    barcode_last4: str | None = Field(description=_LAST4)


class PurchaseItemPublic(OrderItemPublic):
    discount: int
    paid: int


class BuyHistoryPublic(BaseModel):
    items: list[BuyBidItemPublic | PurchaseItemPublic]


class SellHistoryPublic(BaseModel):
    items: list[SellBidItemPublic | SaleItemPublic]


class DisputePublic(BaseModel):
    reason: str
    opened_at: Instant
    decision: Literal["refund", "reject"] | None = Field(description="Null until decided.")
    decided_at: Instant | None


class OrderPublic(BaseModel):
    order_id: str
    product_id: str
    product_name: str
    price: int
    discount: int
    paid: int
    status: str
    via: Literal["buy_now", "sell_now"]
    role: Literal["buyer", "seller"] = Field(description="The caller's side of the order.")
    buyer_id: str | None = Field(None, description="Present when the caller is the buyer.")
    seller_id: str | None = Field(None, description="Present when the caller is the seller.")
    created_at: Instant
    delivered_at: Instant | None = Field(
        description="When the buyer could download the voucher; null while inspected."
    )
    completed_at: Instant | None
    settled_at: Instant | None
    refunded_at: Instant | None = None
    barcode_last4: str | None = Field(description=_LAST4)
    expires_on: Day | None = Field(description="The voucher's last valid day.")
    dispute: DisputePublic | None = Field(description="The buyer's dispute; null when none.")


class GifticonPublic(BaseModel):
    download_url: str = Field(description="A presigned S3 GET URL, valid for a few minutes.")


class CouponPublic(BaseModel):
    coupon_id: str
    name: str
    discount_amount: int
    status: Literal["AVAILABLE", "USED", "EXPIRED"]
    expires_at: Instant


class CouponsPublic(BaseModel):
    items: list[CouponPublic]


class SettlementPublic(BaseModel):
    business_date: str = Field(json_schema_extra={"format": "date"})
    order_count: int
    gross: int
    fee: int
    net: int


class SettlementsPublic(BaseModel):
    items: list[SettlementPublic]


class InspectionItemPublic(BaseModel):
    order_id: str
    product_id: str
    product_name: str
    price: int
    barcode_last4: str | None
    expires_on: Day | None
    image_url: str | None = Field(
        description="A presigned S3 GET URL of the voucher image, valid for a few minutes."
    )
    waiting_since: Instant = Field(description="When the order was placed.")


class InspectionQueuePublic(BaseModel):
    items: list[InspectionItemPublic] = Field(description="Oldest first.")


class DisputeItemPublic(BaseModel):
    order_id: str
    product_id: str
    product_name: str
    price: int
    barcode_last4: str | None
    expires_on: Day | None
    reason: str
    opened_at: Instant


class DisputeQueuePublic(BaseModel):
    items: list[DisputeItemPublic] = Field(description="The oldest dispute first.")
