"""The SQL side of every query: one function per route, answering in the response's shape.

Each view runs plain SQLAlchemy Core on the session it is given (the replica, or the primary
read-only: `Database.run_query` chooses) and only reads. What it returns is the JSON body of
the response (ints, strings, ISO-8601 times, ids as strings), so the Redis read models in
front of these views and the views themselves give the same answer; the small pure helpers
here (`present_order`, `coupon_status`, `iso`, and the cursors of `queries.params`, which
this module re-exports) exist so both paths can share them.

Times are UTC with an explicit offset, `datetime.isoformat()` style ("...+00:00"), which is
how the outbox events carry them too. Ties in every ordering are broken by entity id, so
pages are stable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, func, or_, select
from sqlalchemy.orm import Session

from giftmarket.adapters.tables import (
    buy_bids,
    coupons,
    images,
    orders,
    products,
    sell_bids,
    settlements,
    users,
)
from giftmarket.queries.params import PRODUCT_SORTS as PRODUCT_SORTS
from giftmarket.queries.params import Answer as Answer
from giftmarket.queries.params import HistoryState as HistoryState
from giftmarket.queries.params import InvalidCursor as InvalidCursor
from giftmarket.queries.params import ProductCursor as ProductCursor
from giftmarket.queries.params import ProductSort as ProductSort
from giftmarket.queries.params import RankingBy as RankingBy
from giftmarket.queries.params import decode_cursor as decode_cursor
from giftmarket.queries.params import encode_cursor as encode_cursor
from giftmarket.queries.params import is_entity_id as is_entity_id
from giftmarket.queries.params import list_member as list_member
from giftmarket.queries.params import product_page as product_page

RECENT_TRADES = 10
OPEN = "OPEN"

# Which order statuses each history state shows (PRODUCT.md, "History states").
PURCHASE_STATUSES: dict[str, tuple[str, ...]] = {
    "in_progress": ("PAID",),
    "done": ("COMPLETED", "SETTLED"),
}
SALE_STATUSES: dict[str, tuple[str, ...]] = {
    "in_progress": ("PAID", "COMPLETED"),
    "done": ("SETTLED",),
}

_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def iso(value: datetime | None) -> str | None:
    """A naive UTC time from the database as ISO-8601 with its offset."""
    return None if value is None else value.replace(tzinfo=UTC).isoformat()


def _day(value: date) -> str:
    return value.isoformat()


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _from_micros(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


# -- products --------------------------------------------------------------------------------

_p = products


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


_SUMMARY_COLUMNS = (_p.c.id, _p.c.name, _p.c.brand, _p.c.category, _p.c.face_value, _p.c.like_count)


def _summary(row: Any) -> Answer:
    return {
        "product_id": row.id,
        "name": row.name,
        "brand": row.brand,
        "category": row.category,
        "face_value": int(row.face_value),
        "lowest_ask": None if row.lowest_ask is None else int(row.lowest_ask),
        "highest_bid": None if row.highest_bid is None else int(row.highest_bid),
        "like_count": int(row.like_count),
    }


def _summaries(session: Session, page: Select[Any], order_by: Sequence[str]) -> list[Any]:
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


def product_list(
    session: Session,
    *,
    sort: ProductSort = "popular",
    category: str | None = None,
    after: ProductCursor | None = None,
    limit: int = 20,
) -> Answer:
    """GET /api/products: one page, `limit` products after the cursor, and the next cursor.

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
    return product_page(sort, [(_summary(r), c) for r, c in zip(rows, created, strict=True)], limit)


def product_detail(session: Session, product_id: str) -> Answer | None:
    """GET /api/products/{id}: the summary, order count, last trade and the newest trades."""
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
    recent = [{"price": int(t.price), "traded_at": iso(t.created_at)} for t in trades]
    return {
        **_summary(row),
        "order_count": int(row.order_count),
        "last_trade_price": recent[0]["price"] if recent else None,
        "recent_trades": recent,
    }


def rankings(session: Session, *, by: RankingBy, limit: int = 20) -> Answer:
    """GET /api/rankings: products by like count or order count, best first.

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
    return {
        "items": [
            {"rank": rank, "product_id": r.id, "name": r.name, "score": int(r.score)}
            for rank, r in enumerate(rows, start=1)
        ]
    }


def search(session: Session, q: str, *, limit: int = 20) -> Answer:
    """GET /api/search: products whose name or brand contains `q`, any case, most liked
    first. `%`, `_` and the escape character in `q` match only themselves."""
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
    return {"items": [_summary(r) for r in rows]}


# -- the caller's own data -------------------------------------------------------------------


def me(session: Session, user_id: str) -> Answer | None:
    """GET /api/me: the caller's profile and balances."""
    u = users
    row = session.execute(
        select(
            u.c.id,
            u.c.email,
            u.c.nickname,
            u.c.available_points,
            u.c.escrowed_points,
            u.c.pending_points,
        ).where(u.c.id == user_id)
    ).one_or_none()
    if row is None:
        return None
    return {
        "user_id": row.id,
        "email": row.email,
        "nickname": row.nickname,
        "available_points": int(row.available_points),
        "escrowed_points": int(row.escrowed_points),
        "pending_points": int(row.pending_points),
    }


def _open_bids(
    session: Session,
    bids: Table,
    owner: ColumnElement[str],
    id_field: str,
    user_id: str,
    limit: int,
) -> Answer:
    """The caller's open bids of one side of the book, newest first."""
    rows = session.execute(
        select(
            bids.c.id, bids.c.product_id, _p.c.name, bids.c.price, bids.c.status, bids.c.created_at
        )
        .join(_p, _p.c.id == bids.c.product_id)
        .where(owner == user_id, bids.c.status == OPEN)
        .order_by(bids.c.created_at.desc(), bids.c.id.desc())
        .limit(limit)
    ).all()
    return {"items": [_bid_item(id_field, r) for r in rows]}


def buy_history(session: Session, user_id: str, state: HistoryState, *, limit: int = 50) -> Answer:
    """GET /api/buy/history/{state}: open buy bids, or purchases, newest first."""
    if state == "bidding":
        return _open_bids(session, buy_bids, buy_bids.c.buyer_id, "buy_bid_id", user_id, limit)
    rows = _orders_of(session, orders.c.buyer_id, user_id, PURCHASE_STATUSES[state], limit)
    return {"items": [_order_item(r, with_payment=True) for r in rows]}


def sell_history(session: Session, user_id: str, state: HistoryState, *, limit: int = 50) -> Answer:
    """GET /api/sell/history/{state}: open asks, or sales, newest first."""
    if state == "bidding":
        return _open_bids(session, sell_bids, sell_bids.c.seller_id, "sell_bid_id", user_id, limit)
    rows = _orders_of(session, orders.c.seller_id, user_id, SALE_STATUSES[state], limit)
    return {"items": [_order_item(r, with_payment=False) for r in rows]}


def _bid_item(id_field: str, row: Any) -> Answer:
    return bid_item(
        id_field, {**row._mapping, "product_name": row.name, "created_at": iso(row.created_at)}
    )


def bid_item(id_field: str, fields: Mapping[str, Any]) -> Answer:
    """A history item for an open bid, from its fields (times already ISO-8601)."""
    return {
        id_field: fields["id"],
        "product_id": fields["product_id"],
        "product_name": fields["product_name"],
        "price": int(fields["price"]),
        "status": fields["status"],
        "created_at": fields["created_at"],
    }


def _orders_of(
    session: Session,
    party: ColumnElement[str],
    user_id: str,
    statuses: Sequence[str],
    limit: int,
) -> list[Any]:
    o = orders
    return list(
        session.execute(
            select(
                o.c.id,
                o.c.product_id,
                _p.c.name,
                o.c.price,
                o.c.discount,
                o.c.paid,
                o.c.status,
                o.c.via,
                o.c.created_at,
                o.c.completed_at,
                o.c.settled_at,
            )
            .join(_p, _p.c.id == o.c.product_id)
            .where(party == user_id, o.c.status.in_(statuses))
            .order_by(o.c.created_at.desc(), o.c.id.desc())
            .limit(limit)
        )
    )


def _order_item(row: Any, *, with_payment: bool) -> Answer:
    fields = {
        **row._mapping,
        "product_name": row.name,
        "created_at": iso(row.created_at),
        "completed_at": iso(row.completed_at),
        "settled_at": iso(row.settled_at),
    }
    return order_item(fields, with_payment=with_payment)


def order_item(fields: Mapping[str, Any], *, with_payment: bool) -> Answer:
    """A history item for an order, from its fields (times ISO-8601 or None)."""
    item: Answer = {
        "order_id": fields["id"],
        "product_id": fields["product_id"],
        "product_name": fields["product_name"],
        "price": int(fields["price"]),
        "status": fields["status"],
        "via": fields["via"],
        "created_at": fields["created_at"],
        "completed_at": fields["completed_at"] or None,
        "settled_at": fields["settled_at"] or None,
    }
    if with_payment:
        # What the buyer paid and the coupon discount are the buyer's own business.
        item["discount"] = int(fields["discount"])
        item["paid"] = int(fields["paid"])
    return item


def present_order(order: Mapping[str, Any], viewer_id: str) -> Answer | None:
    """An order as its buyer or seller sees it; None for anyone else (→ 404).

    `order` holds the order's fields plus `buyer_id` and `seller_id`. The viewer learns
    their `role` and their own id, never the other party's: user ids are not public, and
    nothing a party can do needs the other's.
    """
    if viewer_id == order["buyer_id"]:
        role, own = "buyer", "buyer_id"
    elif viewer_id == order["seller_id"]:
        role, own = "seller", "seller_id"
    else:
        return None
    shown = {k: v for k, v in order.items() if k not in ("buyer_id", "seller_id")}
    return {**shown, "role": role, own: viewer_id}


def order_detail(session: Session, order_id: str, viewer_id: str) -> Answer | None:
    """GET /api/orders/{id}: the order, for its buyer or seller only (None otherwise)."""
    if not is_entity_id(order_id):
        return None
    o = orders
    row = session.execute(
        select(
            o.c.id,
            o.c.product_id,
            _p.c.name,
            o.c.buyer_id,
            o.c.seller_id,
            o.c.price,
            o.c.discount,
            o.c.paid,
            o.c.status,
            o.c.via,
            o.c.created_at,
            o.c.completed_at,
            o.c.settled_at,
        )
        .join(_p, _p.c.id == o.c.product_id)
        .where(o.c.id == order_id, or_(o.c.buyer_id == viewer_id, o.c.seller_id == viewer_id))
    ).one_or_none()
    if row is None:
        return None
    return present_order(
        {
            "order_id": row.id,
            "product_id": row.product_id,
            "product_name": row.name,
            "buyer_id": row.buyer_id,
            "seller_id": row.seller_id,
            "price": int(row.price),
            "discount": int(row.discount),
            "paid": int(row.paid),
            "status": row.status,
            "via": row.via,
            "created_at": iso(row.created_at),
            "completed_at": iso(row.completed_at),
            "settled_at": iso(row.settled_at),
        },
        viewer_id,
    )


def order_gifticon_key(session: Session, order_id: str, viewer_id: str) -> str | None:
    """The S3 key of an order's voucher image, for its buyer or seller only (None
    otherwise, and for an image that is gone)."""
    if not is_entity_id(order_id):
        return None
    o, i = orders, images
    key = session.execute(
        select(i.c.s3_key)
        .join(i, i.c.id == o.c.image_id)
        .where(
            o.c.id == order_id,
            or_(o.c.buyer_id == viewer_id, o.c.seller_id == viewer_id),
            i.c.status != "DELETED",
        )
    ).scalar_one_or_none()
    return None if key is None else str(key)


def coupon_status(status: str, expires_at: datetime, now: datetime) -> str:
    """A coupon still AVAILABLE in the table but past its expiry is shown as EXPIRED
    (the same rule as using it: usable only while now < expires_at)."""
    if status == "AVAILABLE" and now >= expires_at:
        return "EXPIRED"
    return status


def my_coupons(
    session: Session, user_id: str, *, now: datetime | None = None, limit: int = 100
) -> Answer:
    """GET /api/me/coupons: the caller's coupons, newest first."""
    c = coupons
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    rows = session.execute(
        select(c.c.id, c.c.name, c.c.discount_amount, c.c.status, c.c.expires_at, c.c.created_at)
        .where(c.c.user_id == user_id)
        .order_by(c.c.created_at.desc(), c.c.id.desc())
        .limit(limit)
    ).all()
    return {
        "items": [
            {
                "coupon_id": r.id,
                "name": r.name,
                "discount_amount": int(r.discount_amount),
                "status": coupon_status(r.status, r.expires_at, at),
                "expires_at": iso(r.expires_at),
            }
            for r in rows
        ]
    }


def my_settlements(session: Session, user_id: str, *, limit: int = 100) -> Answer:
    """GET /api/me/settlements: the caller's settlements, newest business date first."""
    s = settlements
    rows = session.execute(
        select(s.c.business_date, s.c.order_count, s.c.gross, s.c.fee, s.c.net)
        .where(s.c.seller_id == user_id)
        .order_by(s.c.business_date.desc())
        .limit(limit)
    ).all()
    return {
        "items": [
            {
                "business_date": _day(r.business_date),
                "order_count": int(r.order_count),
                "gross": int(r.gross),
                "fee": int(r.fee),
                "net": int(r.net),
            }
            for r in rows
        ]
    }
