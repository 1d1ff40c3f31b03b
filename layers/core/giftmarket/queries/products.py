"""The product queries: GET /api/products, /api/products/{id}, /api/rankings, /api/search.

Each query has its two readers side by side: `*_from_read_model` answers from the Redis read
models (None when they cannot: not projected, no generation; the caller then asks SQL, see
`Reads.answer`), `*_from_sql` from the database, with plain SQLAlchemy Core on the session it
is given (the replica, or the primary read-only: `Database.run_query` chooses). Both hand
what they read to the same shaping functions here, so both give the same body. Search has
no read model: it is SQL only.

Ties in every ordering are broken by product id, so pages are stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, func, or_, select

from giftmarket.adapters.tables import buy_bids, orders, products, sell_bids
from giftmarket.queries.params import (
    Answer,
    InvalidCursor,
    ProductCursor,
    ProductSort,
    RankingBy,
    day,
    is_entity_id,
    iso,
    list_member,
    product_page,
)
from giftmarket.read_ports import ReadModelReader

RECENT_TRADES = 10
# The open asks' price ladder of a product's detail: this many prices, cheapest first. It
# lists every open ask, as lowest_ask does, those inside the expiry margin included (the
# daily expiry job closes them).
LADDER_PRICES = 10
OPEN = "OPEN"

_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


# -- shaping (both readers) ------------------------------------------------------------------


def summary(fields: Mapping[str, Any]) -> Answer:
    """A product's list item from its fields (`id`, `name`, ..., quotes None when none)."""
    return {
        "product_id": fields["id"],
        "name": fields["name"],
        "brand": fields["brand"],
        "category": fields["category"],
        "face_value": int(fields["face_value"]),
        "lowest_ask": _optional_int(fields["lowest_ask"]),
        "highest_bid": _optional_int(fields["highest_bid"]),
        "like_count": int(fields["like_count"]),
    }


def _detail(
    fields: Mapping[str, Any],
    order_count: int,
    trades: Iterable[tuple[Any, str | None]],
    ladder: Iterable[tuple[Any, Any, str | None]],
) -> Answer:
    recent = [{"price": int(price), "traded_at": at} for price, at in trades]
    return {
        **summary(fields),
        "order_count": int(order_count),
        "last_trade_price": recent[0]["price"] if recent else None,
        "recent_trades": recent,
        "asks": [
            {"price": int(price), "count": int(count), "earliest_expires_on": earliest}
            for price, count, earliest in ladder
        ],
    }


def _ranking(rows: Iterable[Mapping[str, Any]]) -> Answer:
    return {
        "items": [
            {"rank": rank, "product_id": r["id"], "name": r["name"], "score": int(r["score"])}
            for rank, r in enumerate(rows, start=1)
        ]
    }


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


# -- GET /api/products -----------------------------------------------------------------------


def product_list_from_read_model(
    rm: ReadModelReader,
    *,
    sort: ProductSort,
    category: str | None,
    after: ProductCursor | None,
    limit: int,
) -> Answer | None:
    member = None if after is None else list_member(after)
    docs = rm.products(sort=sort, category=category, after=member, limit=limit + 1)
    if docs is None:
        return None
    return product_page(sort, [(summary(d), int(d["created_us"])) for d in docs], limit)


def product_list_from_sql(
    session: Connection,
    *,
    sort: ProductSort = "popular",
    category: str | None = None,
    after: ProductCursor | None = None,
    limit: int = 20,
) -> Answer:
    """One page, `limit` products after the cursor, and the next cursor.

    popular: like_count desc; latest: created_at desc; price: lowest open ask asc, products
    without an ask last. Ties: product id (ascending; descending for latest, newest first).
    """
    if after is not None and after.sort != sort:
        raise InvalidCursor("The cursor belongs to another sort order.")
    page = select(*_SUMMARY_COLUMNS)
    if category is not None:
        page = page.where(_p.c.category == category)
    order_by: list[str]
    if sort == "popular":
        if after is not None:
            page = page.where(
                or_(
                    _p.c.like_count < after.key,
                    and_(_p.c.like_count == after.key, _p.c.id > after.product_id),
                )
            )
        page = page.order_by(_p.c.like_count.desc(), _p.c.id.asc())
        order_by = ["-like_count", "id"]
    elif sort == "latest":
        page = page.add_columns(_p.c.created_at)
        if after is not None:
            assert after.key is not None
            at = _from_micros(after.key)
            page = page.where(
                or_(
                    _p.c.created_at < at,
                    and_(_p.c.created_at == at, _p.c.id < after.product_id),
                )
            )
        # Both descending: a backward scan of the (category, created_at[, id]) index.
        page = page.order_by(_p.c.created_at.desc(), _p.c.id.desc())
        order_by = ["-created_at", "-id"]
    else:
        open_asks = (
            select(sell_bids.c.product_id, func.min(sell_bids.c.price).label("lowest_ask"))
            .where(sell_bids.c.status == OPEN)
            .group_by(sell_bids.c.product_id)
            .subquery("open_asks")
        )
        lowest = open_asks.c.lowest_ask
        no_ask = lowest.is_(None)
        page = page.add_columns(lowest, no_ask.label("no_ask")).select_from(
            _p.outerjoin(open_asks, open_asks.c.product_id == _p.c.id)
        )
        if after is not None:
            if after.key is None:
                page = page.where(no_ask, _p.c.id > after.product_id)
            else:
                page = page.where(
                    or_(
                        no_ask,
                        lowest > after.key,
                        and_(lowest == after.key, _p.c.id > after.product_id),
                    )
                )
        page = page.order_by(no_ask.asc(), lowest.asc(), _p.c.id.asc())
        order_by = ["no_ask", "lowest_ask", "id"]
    rows = _summaries(session, page.limit(limit + 1), order_by)
    created = [_micros(r.created_at) if sort == "latest" else 0 for r in rows]
    return product_page(
        sort, [(summary(dict(r._mapping)), c) for r, c in zip(rows, created, strict=True)], limit
    )


# -- GET /api/products/{id} ------------------------------------------------------------------


def product_detail_from_read_model(rm: ReadModelReader, product_id: str) -> Answer | None:
    doc = rm.product(product_id, recent_trades=RECENT_TRADES, ladder=LADDER_PRICES)
    if doc is None:
        return None
    trades = ((p, at) for p, at in doc["trades"])
    return _detail(doc, doc["order_count"], trades, (tuple(step) for step in doc["ladder"]))


def product_detail_from_sql(session: Connection, product_id: str) -> Answer | None:
    """The summary, order count, last trade and the newest trades."""
    if not is_entity_id(product_id):
        return None
    order_count = select(func.count()).where(orders.c.product_id == _p.c.id).scalar_subquery()
    row = session.execute(
        select(
            *_SUMMARY_COLUMNS,
            _lowest_ask(_p.c.id).label("lowest_ask"),
            _highest_bid(_p.c.id).label("highest_bid"),
            order_count.label("order_count"),
        ).where(_p.c.id == product_id)
    ).one_or_none()
    if row is None:
        return None
    trades = session.execute(
        select(orders.c.price, orders.c.created_at)
        .where(orders.c.product_id == product_id)
        .order_by(orders.c.created_at.desc(), orders.c.id.desc())
        .limit(RECENT_TRADES)
    ).all()
    # The (product_id, status, price, ...) index again: the open asks in price order.
    ladder = session.execute(
        select(sell_bids.c.price, func.count(), func.min(sell_bids.c.expires_on))
        .where(sell_bids.c.product_id == product_id, sell_bids.c.status == OPEN)
        .group_by(sell_bids.c.price)
        .order_by(sell_bids.c.price)
        .limit(LADDER_PRICES)
    ).all()
    return _detail(
        dict(row._mapping),
        row.order_count,
        ((t.price, iso(t.created_at)) for t in trades),
        ((price, count, None if at is None else day(at)) for price, count, at in ladder),
    )


# -- GET /api/rankings -----------------------------------------------------------------------


def rankings_from_read_model(rm: ReadModelReader, *, by: RankingBy, limit: int) -> Answer | None:
    ranked = rm.rankings(by=by, limit=limit)
    return None if ranked is None else _ranking(ranked)


def rankings_from_sql(session: Connection, *, by: RankingBy, limit: int = 20) -> Answer:
    """Products by like count or order count, best first.

    Only products with a score above zero are ranked; ties go to the smaller product id.
    """
    if by == "likes":
        score: ColumnElement[int] = _p.c.like_count
        stmt = select(_p.c.id, _p.c.name, score.label("score")).where(score > 0)
    else:
        counts = (
            select(orders.c.product_id, func.count().label("score"))
            .group_by(orders.c.product_id)
            .subquery("counts")
        )
        score = counts.c.score
        stmt = select(_p.c.id, _p.c.name, score.label("score")).join(
            counts, counts.c.product_id == _p.c.id
        )
    rows = session.execute(stmt.order_by(score.desc(), _p.c.id.asc()).limit(limit)).all()
    return _ranking(dict(r._mapping) for r in rows)


# -- GET /api/search (SQL only) --------------------------------------------------------------


def search_from_sql(session: Connection, q: str, *, limit: int = 20) -> Answer:
    """Products whose name or brand contains `q`, any case, most liked first. `%`, `_` and
    the escape character in `q` match only themselves."""
    page = (
        select(*_SUMMARY_COLUMNS)
        .where(
            or_(
                _p.c.name.icontains(q, autoescape=True),
                _p.c.brand.icontains(q, autoescape=True),
            )
        )
        .order_by(_p.c.like_count.desc(), _p.c.id.asc())
        .limit(limit)
    )
    rows = _summaries(session, page, ["-like_count", "id"])
    return {"items": [summary(dict(r._mapping)) for r in rows]}


# -- SQL building blocks ---------------------------------------------------------------------

_p = products
_SUMMARY_COLUMNS = (_p.c.id, _p.c.name, _p.c.brand, _p.c.category, _p.c.face_value, _p.c.like_count)


def _lowest_ask(product_id: ColumnElement[str]) -> ColumnElement[int | None]:
    # (product_id, status, price, ...) index: one index dive per product.
    return (
        select(func.min(sell_bids.c.price))
        .where(sell_bids.c.product_id == product_id, sell_bids.c.status == OPEN)
        .scalar_subquery()
    )


def _highest_bid(product_id: ColumnElement[str]) -> ColumnElement[int | None]:
    return (
        select(func.max(buy_bids.c.price))
        .where(buy_bids.c.product_id == product_id, buy_bids.c.status == OPEN)
        .scalar_subquery()
    )


def _summaries(session: Connection, page: Select[Any], order_by: Sequence[str]) -> list[Any]:
    """Rows of `page` (a limited select of product columns) with their quotes.

    The page is chosen first, in a derived table, and the quote subqueries run only for its
    rows: never for every product the ordering had to look at.
    """
    chosen = page.subquery("page")
    quotes = [_highest_bid(chosen.c.id).label("highest_bid")]
    if "lowest_ask" not in chosen.c:
        quotes.append(_lowest_ask(chosen.c.id).label("lowest_ask"))
    ordering = [
        chosen.c[name[1:]].desc() if name.startswith("-") else chosen.c[name].asc()
        for name in order_by
    ]
    stmt = select(chosen, *quotes).order_by(*ordering)
    return list(session.execute(stmt))


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _from_micros(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND
