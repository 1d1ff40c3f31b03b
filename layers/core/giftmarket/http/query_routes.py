"""Routes of the query API: validate the request, answer it, return the answer.

Every answer comes through `Reads.answer`: the Redis read model (`queries.cached`) first,
the same answer by SQL (`queries.views`) on the replica when Redis cannot give it, and on
the primary when the caller's consistency token is not projected yet. Both return the
response's JSON already; the models here describe it for OpenAPI and keep it to the
documented fields.

Each route imports those two modules itself, when first called: they bring SQLAlchemy and
redis, which importing the handler (a cold start) need not pay for; the parameters' types
come from `queries.params`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from giftmarket.consistency import HEADER as CONSISTENCY_HEADER
from giftmarket.consistency import ConsistencyToken
from giftmarket.domain.errors import NotFound
from giftmarket.http.auth import Caller, CurrentUser, Tokens, authenticate
from giftmarket.http.deps import ContainerDep
from giftmarket.queries import params


async def consistency_token(
    token: Annotated[
        str | None,
        Header(
            alias=CONSISTENCY_HEADER,
            description="From a command's response: the answer then reflects that command.",
        ),
    ] = None,
) -> ConsistencyToken | None:
    # A token that is not one of ours is ignored (eventual consistency), never an error.
    return ConsistencyToken.decode(token) if token else None


Consistency = Annotated[ConsistencyToken | None, Depends(consistency_token)]

log = logging.getLogger(__name__)

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/problem+json": {}}}
    for code, text in {
        401: "Not signed in, or the token is invalid or expired",
        404: "Not found (including other users' orders)",
        422: "Invalid request",
        503: "No database can answer now; retry after Retry-After seconds",
    }.items()
}

Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
    return value


Limit = Annotated[int, Query(ge=1, le=100, description="How many items, 1 to 100.")]
SearchText = Annotated[
    str,
    Query(description="Text to find in product names and brands (any case)."),
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_storable),
]
Category = Annotated[
    str | None,
    Query(max_length=50, description="Only products of this category."),
    AfterValidator(lambda v: None if v is None else _storable(v)),
]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="`next_cursor` of the previous page."),
]


# -- response models -------------------------------------------------------------------------


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


# -- dependencies ----------------------------------------------------------------------------


async def optional_caller(
    tokens: Tokens, authorization: Annotated[str | None, Header()] = None
) -> Caller | None:
    """The caller when a token is sent (a bad one is still a 401), else None: anonymous."""
    if authorization is None:
        return None
    return await authenticate(tokens, authorization)


MaybeUser = Annotated[Caller | None, Depends(optional_caller)]


def _invalid_query(name: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": "value_error"}])


def _found(answer: dict[str, Any] | None, resource: str) -> dict[str, Any]:
    if answer is None:
        raise NotFound(resource)
    return answer


# -- routes ----------------------------------------------------------------------------------


@router.get("/api/products", response_model=ProductPagePublic, responses=_ERRORS)
async def list_products(
    container: ContainerDep,
    token: Consistency,
    category: Category = None,
    sort: Annotated[params.ProductSort, Query(description="Order of the list.")] = "popular",
    cursor: Cursor = None,
    limit: Limit = 20,
) -> Any:
    """Products, most liked, newest or cheapest first, a page at a time."""
    from giftmarket.queries import cached, views

    after = None
    if cursor:
        try:
            after = params.decode_cursor(cursor)
        except params.InvalidCursor as exc:
            raise _invalid_query("cursor", str(exc)) from exc
        if after.sort != sort:
            raise _invalid_query("cursor", "The cursor belongs to another sort order.")
    category = category or None
    return container.reads.answer(
        read_model=lambda: cached.product_list(
            container.read_models, sort=sort, category=category, after=after, limit=limit
        ),
        sql=lambda s: views.product_list(s, sort=sort, category=category, after=after, limit=limit),
        token=token,
    )


@router.get("/api/products/{product_id}", response_model=ProductDetailPublic, responses=_ERRORS)
async def product_detail(product_id: str, container: ContainerDep, token: Consistency) -> Any:
    """One product with its quotes, order count and the newest trades."""
    from giftmarket.queries import cached, views

    if not params.is_entity_id(product_id):
        raise NotFound("product")
    answer = container.reads.answer(
        read_model=lambda: cached.product_detail(container.read_models, product_id),
        sql=lambda s: views.product_detail(s, product_id),
        token=token,
    )
    return _found(answer, "product")


@router.get("/api/rankings", response_model=RankingsPublic, responses=_ERRORS)
async def rankings(
    container: ContainerDep,
    token: Consistency,
    by: Annotated[params.RankingBy, Query(description="Rank by likes or by orders.")] = "likes",
    limit: Limit = 20,
) -> Any:
    """Products ranked by like count or by order count."""
    from giftmarket.queries import cached, views

    return container.reads.answer(
        read_model=lambda: cached.rankings(container.read_models, by=by, limit=limit),
        sql=lambda s: views.rankings(s, by=by, limit=limit),
        token=token,
    )


@router.get("/api/search", response_model=SearchResultsPublic, responses=_ERRORS)
async def search(
    q: SearchText, container: ContainerDep, caller: MaybeUser, limit: Limit = 20
) -> Any:
    """Products whose name or brand contains `q`, most liked first. A token is optional (and
    checked if sent): a signed-in caller's search goes into their search history."""
    from redis import RedisError

    from giftmarket.queries import views

    answer = container.database.run_query(lambda s: views.search(s, q, limit=limit))
    if caller is not None:
        try:
            container.read_models.record_search(caller.user_id, q, datetime.now(UTC))
        except RedisError as exc:
            # The search itself is answered; only its place in the history is lost.
            log.warning("search history not recorded: %s", exc)
    return answer


@router.get("/api/me/search-history", response_model=SearchHistoryPublic, responses=_ERRORS)
async def search_history(caller: CurrentUser, container: ContainerDep) -> Any:
    """The caller's recent searches, newest first: no repeats, at most 10."""
    return {"items": container.read_models.search_history(caller.user_id)}


@router.get("/api/me", response_model=UserPublic, responses=_ERRORS)
async def me(caller: CurrentUser, container: ContainerDep, token: Consistency) -> Any:
    """The caller's profile and balances (send X-Consistency-Token to read your writes)."""
    from giftmarket.queries import views

    answer = container.reads.answer(
        read_model=lambda: container.read_models.user(caller.user_id),
        sql=lambda s: views.me(s, caller.user_id),
        token=token,
    )
    return _found(answer, "user")


HistoryLimit = Annotated[int, Query(ge=1, le=100, description="How many items, 1 to 100.")]


@router.get("/api/buy/history/{state}", response_model=BuyHistoryPublic, responses=_ERRORS)
async def buy_history(
    state: params.HistoryState,
    caller: CurrentUser,
    container: ContainerDep,
    token: Consistency,
    limit: HistoryLimit = 50,
) -> Any:
    """The caller's open buy bids (bidding) or purchases (in_progress, done), newest first."""
    from giftmarket.queries import cached, views

    return container.reads.answer(
        read_model=lambda: cached.buy_history(
            container.read_models, caller.user_id, state, limit=limit
        ),
        sql=lambda s: views.buy_history(s, caller.user_id, state, limit=limit),
        token=token,
    )


@router.get("/api/sell/history/{state}", response_model=SellHistoryPublic, responses=_ERRORS)
async def sell_history(
    state: params.HistoryState,
    caller: CurrentUser,
    container: ContainerDep,
    token: Consistency,
    limit: HistoryLimit = 50,
) -> Any:
    """The caller's open asks (bidding) or sales (in_progress, done), newest first."""
    from giftmarket.queries import cached, views

    return container.reads.answer(
        read_model=lambda: cached.sell_history(
            container.read_models, caller.user_id, state, limit=limit
        ),
        sql=lambda s: views.sell_history(s, caller.user_id, state, limit=limit),
        token=token,
    )


@router.get(
    "/api/orders/{order_id}",
    response_model=OrderPublic,
    response_model_exclude_unset=True,
    responses=_ERRORS,
)
async def order_detail(
    order_id: str, caller: CurrentUser, container: ContainerDep, token: Consistency
) -> Any:
    """One order, for its buyer or seller; anyone else gets 404."""
    from giftmarket.queries import cached, views

    if not params.is_entity_id(order_id):
        raise NotFound("order")
    answer = container.reads.answer(
        read_model=lambda: cached.order_detail(container.read_models, order_id, caller.user_id),
        sql=lambda s: views.order_detail(s, order_id, caller.user_id),
        token=token,
    )
    return _found(answer, "order")


@router.get("/api/orders/{order_id}/gifticon", response_model=GifticonPublic, responses=_ERRORS)
async def order_gifticon(
    order_id: str, caller: CurrentUser, container: ContainerDep, token: Consistency
) -> Any:
    """A short-lived download link for the order's voucher image, for its buyer or seller."""
    from giftmarket.queries import cached, views

    if not params.is_entity_id(order_id):
        raise NotFound("order")
    key = container.reads.answer(
        read_model=lambda: cached.order_gifticon_key(
            container.read_models, order_id, caller.user_id
        ),
        sql=lambda s: views.order_gifticon_key(s, order_id, caller.user_id),
        token=token,
    )
    if key is None:
        raise NotFound("order")
    return {"download_url": container.images.presign_download(key)}


@router.get("/api/me/coupons", response_model=CouponsPublic, responses=_ERRORS)
async def my_coupons(
    caller: CurrentUser, container: ContainerDep, token: Consistency, limit: Limit = 100
) -> Any:
    """The caller's coupons, newest first; expired ones say EXPIRED."""
    from giftmarket.queries import cached, views

    return container.reads.answer(
        read_model=lambda: cached.my_coupons(container.read_models, caller.user_id, limit=limit),
        sql=lambda s: views.my_coupons(s, caller.user_id, limit=limit),
        token=token,
    )


@router.get("/api/me/settlements", response_model=SettlementsPublic, responses=_ERRORS)
async def my_settlements(
    caller: CurrentUser, container: ContainerDep, token: Consistency, limit: Limit = 100
) -> Any:
    """The caller's daily settlements, newest business date first."""
    from giftmarket.queries import cached, views

    return container.reads.answer(
        read_model=lambda: cached.my_settlements(
            container.read_models, caller.user_id, limit=limit
        ),
        sql=lambda s: views.my_settlements(s, caller.user_id, limit=limit),
        token=token,
    )
