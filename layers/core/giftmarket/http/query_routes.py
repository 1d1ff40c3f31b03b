"""Routes of the query API: validate the request, answer it, return the answer.

Every answer comes through `Reads.answer`: the query's Redis reader first, its SQL reader
(beside it in `queries.products`, `queries.account` or `queries.trades`) on the replica
when Redis cannot give it, and on the primary when the caller's consistency token is not
projected yet. Both return the response's JSON already; the models of `http.schemas`
describe it for OpenAPI and keep it to the documented fields.

The query modules are lazy (giftmarket/lazy.py), imported when a route first uses one: they
bring SQLAlchemy and redis, which importing the handler (a cold start) need not pay for; the
parameters' types come from `queries.params`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query
from fastapi.exceptions import RequestValidationError

from giftmarket.consistency import HEADER as CONSISTENCY_HEADER
from giftmarket.consistency import ConsistencyToken
from giftmarket.domain.errors import Forbidden, NotDelivered, NotFound
from giftmarket.http import schemas as s
from giftmarket.http.auth import Caller, CurrentUser, Tokens, authenticate
from giftmarket.http.deps import ContainerDep
from giftmarket.http.problems import QUERY_ERRORS, problem_responses, with_conflicts
from giftmarket.lazy import lazy
from giftmarket.queries import params

if TYPE_CHECKING:
    import redis
    from sqlalchemy import Connection

    from giftmarket.bootstrap import Container
    from giftmarket.queries import account, admin, products, trades
    from giftmarket.read_ports import ReadModelReader
else:
    account = lazy("giftmarket.queries.account")
    admin = lazy("giftmarket.queries.admin")
    products = lazy("giftmarket.queries.products")
    trades = lazy("giftmarket.queries.trades")
    redis = lazy("redis")


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

T = TypeVar("T")

router = APIRouter()


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


@router.get("/api/products", response_model=s.ProductPagePublic, responses=QUERY_ERRORS)
async def list_products(
    container: ContainerDep,
    token: Consistency,
    category: s.Category = None,
    sort: Annotated[params.ProductSort, Query(description="Order of the list.")] = "popular",
    cursor: s.Cursor = None,
    limit: s.Limit = 20,
) -> Any:
    """Products, most liked, newest or cheapest first, a page at a time."""
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
        read_model=lambda: products.product_list_from_read_model(
            container.read_models, sort=sort, category=category, after=after, limit=limit
        ),
        sql=lambda session: products.product_list_from_sql(
            session, sort=sort, category=category, after=after, limit=limit
        ),
        token=token,
    )


@router.get(
    "/api/products/{product_id}", response_model=s.ProductDetailPublic, responses=QUERY_ERRORS
)
async def product_detail(product_id: str, container: ContainerDep, token: Consistency) -> Any:
    """One product with its quotes, order count and the newest trades."""
    if not params.is_entity_id(product_id):
        raise NotFound("product")
    answer = container.reads.answer(
        read_model=lambda: products.product_detail_from_read_model(
            container.read_models, product_id
        ),
        sql=lambda session: products.product_detail_from_sql(session, product_id),
        token=token,
    )
    return _found(answer, "product")


@router.get("/api/rankings", response_model=s.RankingsPublic, responses=QUERY_ERRORS)
async def rankings(
    container: ContainerDep,
    token: Consistency,
    by: Annotated[params.RankingBy, Query(description="Rank by likes or by orders.")] = "likes",
    limit: s.Limit = 20,
) -> Any:
    """Products ranked by like count or by order count."""
    return container.reads.answer(
        read_model=lambda: products.rankings_from_read_model(
            container.read_models, by=by, limit=limit
        ),
        sql=lambda session: products.rankings_from_sql(session, by=by, limit=limit),
        token=token,
    )


@router.get("/api/search", response_model=s.SearchResultsPublic, responses=QUERY_ERRORS)
async def search(
    q: s.SearchText,
    container: ContainerDep,
    caller: MaybeUser,
    token: Consistency,
    limit: s.Limit = 20,
) -> Any:
    """Products whose name or brand contains `q`, most liked first. A token is optional (and
    checked if sent): a signed-in caller's search goes into their search history."""
    answer = container.reads.sql_only(
        lambda session: products.search_from_sql(session, q, limit=limit), token=token
    )
    if caller is not None:
        try:
            container.read_models.record_search(caller.user_id, q, datetime.now(UTC))
        except redis.RedisError as exc:
            # The search itself is answered; only its place in the history is lost.
            log.warning("search history not recorded: %s", exc)
    return answer


@router.get("/api/me/search-history", response_model=s.SearchHistoryPublic, responses=QUERY_ERRORS)
async def search_history(caller: CurrentUser, container: ContainerDep) -> Any:
    """The caller's recent searches, newest first: no repeats, at most 10."""
    return account.search_history(container.read_models, caller.user_id)


@router.get("/api/me", response_model=s.UserPublic, responses=QUERY_ERRORS)
async def me(caller: CurrentUser, container: ContainerDep, token: Consistency) -> Any:
    """The caller's profile and balances (send X-Consistency-Token to read your writes)."""
    answer = container.reads.answer(
        read_model=lambda: account.me_from_read_model(container.read_models, caller.user_id),
        sql=lambda session: account.me_from_sql(session, caller.user_id),
        token=token,
    )
    return _found(answer, "user")


@router.get("/api/buy/history/{state}", response_model=s.BuyHistoryPublic, responses=QUERY_ERRORS)
async def buy_history(
    state: params.HistoryState,
    caller: CurrentUser,
    container: ContainerDep,
    token: Consistency,
    limit: s.Limit = 50,
) -> Any:
    """The caller's open buy bids (bidding) or purchases (in_progress, done), newest first."""
    return _history(trades.BUYER, state, caller, container, token, limit)


@router.get("/api/sell/history/{state}", response_model=s.SellHistoryPublic, responses=QUERY_ERRORS)
async def sell_history(
    state: params.HistoryState,
    caller: CurrentUser,
    container: ContainerDep,
    token: Consistency,
    limit: s.Limit = 50,
) -> Any:
    """The caller's open asks (bidding) or sales (in_progress, done), newest first."""
    return _history(trades.SELLER, state, caller, container, token, limit)


def _history(
    side: trades.Side,
    state: params.HistoryState,
    caller: Caller,
    container: Container,
    token: ConsistencyToken | None,
    limit: int,
) -> Any:
    return container.reads.answer(
        read_model=lambda: trades.history_from_read_model(
            container.read_models, caller.user_id, state, side=side, limit=limit
        ),
        sql=lambda session: trades.history_from_sql(
            session, caller.user_id, state, side=side, limit=limit
        ),
        token=token,
    )


@router.get(
    "/api/orders/{order_id}",
    response_model=s.OrderPublic,
    response_model_exclude_unset=True,
    responses=QUERY_ERRORS,
)
async def order_detail(
    order_id: str, caller: CurrentUser, container: ContainerDep, token: Consistency
) -> Any:
    """One order, for its buyer or seller; anyone else gets 404."""
    readers = (trades.order_detail_from_read_model, trades.order_detail_from_sql)
    return _found(_for_a_party(order_id, caller, container, token, *readers), "order")


@router.get(
    "/api/orders/{order_id}/gifticon",
    response_model=s.GifticonPublic,
    responses=with_conflicts(QUERY_ERRORS, NotDelivered),
)
async def order_gifticon(
    order_id: str, caller: CurrentUser, container: ContainerDep, token: Consistency
) -> Any:
    """A short-lived download link for the order's voucher image: for its seller always,
    for its buyer once the voucher was delivered (409 not_delivered while inspected)."""
    readers = (trades.order_gifticon_key_from_read_model, trades.order_gifticon_key_from_sql)
    key = _for_a_party(order_id, caller, container, token, *readers)
    if key is None:
        raise NotFound("order")
    return {"download_url": container.images.presign_download(key)}


def _for_a_party(
    order_id: str,
    caller: Caller,
    container: Container,
    token: ConsistencyToken | None,
    from_read_model: Callable[[ReadModelReader, str, str], T | None],
    from_sql: Callable[[Connection, str, str], T | None],
) -> T | None:
    """What `order_id` shows its buyer or seller, None for anyone else (or no such order)."""
    if not params.is_entity_id(order_id):
        raise NotFound("order")
    answer: T | None = container.reads.answer(
        read_model=lambda: from_read_model(container.read_models, order_id, caller.user_id),
        sql=lambda session: from_sql(session, order_id, caller.user_id),
        token=token,
    )
    return answer


@router.get("/api/me/coupons", response_model=s.CouponsPublic, responses=QUERY_ERRORS)
async def my_coupons(
    caller: CurrentUser, container: ContainerDep, token: Consistency, limit: s.Limit = 100
) -> Any:
    """The caller's coupons, newest first; expired ones say EXPIRED."""
    return container.reads.answer(
        read_model=lambda: account.my_coupons_from_read_model(
            container.read_models, caller.user_id, limit=limit
        ),
        sql=lambda session: account.my_coupons_from_sql(session, caller.user_id, limit=limit),
        token=token,
    )


@router.get("/api/me/settlements", response_model=s.SettlementsPublic, responses=QUERY_ERRORS)
async def my_settlements(
    caller: CurrentUser, container: ContainerDep, token: Consistency, limit: s.Limit = 100
) -> Any:
    """The caller's daily settlements, newest business date first."""
    return container.reads.answer(
        read_model=lambda: account.my_settlements_from_read_model(
            container.read_models, caller.user_id, limit=limit
        ),
        sql=lambda session: account.my_settlements_from_sql(session, caller.user_id, limit=limit),
        token=token,
    )


# -- the admins' queues ----------------------------------------------------------------------

ADMIN_QUERY_ERRORS = QUERY_ERRORS | problem_responses({403: "Signed in, but not an admin"})


async def current_admin(caller: CurrentUser, container: ContainerDep) -> Caller:
    """The caller, if they hold admin rights now: read from the primary on every request,
    as admin commands read them, so a revoke takes effect at once (403 otherwise)."""
    if not container.database.run_on_primary(
        lambda session: admin.is_admin_from_sql(session, caller.user_id)
    ):
        raise Forbidden()
    return caller


CurrentAdmin = Annotated[Caller, Depends(current_admin)]


@router.get(
    "/api/admin/inspections", response_model=s.InspectionQueuePublic, responses=ADMIN_QUERY_ERRORS
)
async def inspection_queue(
    admin_caller: CurrentAdmin, container: ContainerDep, token: Consistency, limit: s.Limit = 50
) -> Any:
    """Orders waiting for inspection, oldest first (admins only), each with a short-lived
    download link for its voucher image."""
    answer = container.reads.answer(
        read_model=lambda: admin.inspections_from_read_model(container.read_models, limit=limit),
        sql=lambda session: admin.inspections_from_sql(session, limit=limit),
        token=token,
    )
    assert answer is not None  # the SQL reader always answers
    for item in answer["items"]:
        key = item.pop("image_key")
        item["image_url"] = None if key is None else container.images.presign_download(key)
    return answer


@router.get(
    "/api/admin/disputes", response_model=s.DisputeQueuePublic, responses=ADMIN_QUERY_ERRORS
)
async def dispute_queue(
    admin_caller: CurrentAdmin, container: ContainerDep, token: Consistency, limit: s.Limit = 50
) -> Any:
    """Open disputes, the oldest first (admins only)."""
    return container.reads.answer(
        read_model=lambda: admin.disputes_from_read_model(container.read_models, limit=limit),
        sql=lambda session: admin.disputes_from_sql(session, limit=limit),
        token=token,
    )
