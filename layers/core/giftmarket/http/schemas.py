"""Request and response bodies of the command API, named by role.

Inputs are strict: amounts are JSON integers 1..10^9 (no strings, floats or booleans),
strings have limits, unknown fields are refused, and text that cannot be stored (lone
surrogates) is a 422 here rather than an error in the database driver.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from giftmarket.domain.validation import MAX_POINTS


def _storable(value: str) -> str:
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
    AfterValidator(_storable),
]
Password = Annotated[
    str, StringConstraints(min_length=8, max_length=128), AfterValidator(_storable)
]
Nickname = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=30),
    AfterValidator(_storable),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_storable),
]
ShortName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(_storable),
]
Reference = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z]+$")
]
ContentType = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_storable),
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
        str, StringConstraints(min_length=1, max_length=128), AfterValidator(_storable)
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
