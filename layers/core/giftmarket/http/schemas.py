"""Request and response schemas of both APIs, named by role: the command API's bodies, then
the query API's parameters and answers.

Inputs are strict: amounts are JSON integers 1..10^9 (no strings, floats or booleans),
strings have limits, unknown fields are refused, and text that cannot be stored (lone
surrogates, NUL) is a 422 here rather than an error in the database driver.

The query API's answers are built by `giftmarket.queries` as JSON already; the models here
describe them for OpenAPI and keep them to the documented fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from giftmarket.domain.validation import MAX_POINTS


def storable_text(value: str) -> str:
    """`value` if the database can store it: valid Unicode (no lone surrogates), no NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
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


class SellBidCreate(Request):
    price: Points
    image_id: Reference


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


class SalePublic(BaseModel):
    order_id: str
    price: int
    status: str


class OrderStatusPublic(BaseModel):
    order_id: str
    status: str


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


class ProductDetailPublic(ProductSummaryPublic):
    order_count: int
    last_trade_price: int | None
    recent_trades: list[TradePublic] = Field(description="The newest trades, newest first.")


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
    email: str
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


class SellBidItemPublic(HistoryItemPublic):
    sell_bid_id: str


class SaleItemPublic(HistoryItemPublic):
    order_id: str
    via: Literal["buy_now", "sell_now"]
    completed_at: Instant | None
    settled_at: Instant | None


class PurchaseItemPublic(SaleItemPublic):
    discount: int
    paid: int


class BuyHistoryPublic(BaseModel):
    items: list[BuyBidItemPublic | PurchaseItemPublic]


class SellHistoryPublic(BaseModel):
    items: list[SellBidItemPublic | SaleItemPublic]


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
    completed_at: Instant | None
    settled_at: Instant | None


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
