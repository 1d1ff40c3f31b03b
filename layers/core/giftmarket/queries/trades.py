"""The caller's trading: GET /api/buy/history/{state}, /api/sell/history/{state},
/api/orders/{id} and /api/orders/{id}/gifticon.

As in `queries.products`, each query's Redis reader (`*_from_read_model`, None when the read
model cannot answer) and SQL reader (`*_from_sql`) sit side by side and share the shaping
(`bid_item`, `order_item`, `present_order`), so both give the same body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, or_, select
from sqlalchemy.orm import Session

from giftmarket.adapters.tables import buy_bids, images, orders, products, sell_bids
from giftmarket.queries.params import Answer, HistoryState, is_entity_id, iso
from giftmarket.read_ports import ReadModelReader

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

_p = products


# -- shaping (both readers) ------------------------------------------------------------------


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


def present_order(fields: Mapping[str, Any], viewer_id: str) -> Answer | None:
    """An order as its buyer or seller sees it; None for anyone else (→ 404).

    `fields` hold the order's fields, `buyer_id` and `seller_id` among them (times ISO-8601,
    or empty/None when not yet). The viewer learns their `role` and their own id, never the
    other party's: user ids are not public, and nothing a party can do needs the other's.
    """
    if viewer_id == fields["buyer_id"]:
        role, own = "buyer", "buyer_id"
    elif viewer_id == fields["seller_id"]:
        role, own = "seller", "seller_id"
    else:
        return None
    return {
        "order_id": fields["id"],
        "product_id": fields["product_id"],
        "product_name": fields["product_name"],
        "price": int(fields["price"]),
        "discount": int(fields["discount"]),
        "paid": int(fields["paid"]),
        "status": fields["status"],
        "via": fields["via"],
        "created_at": fields["created_at"],
        "completed_at": fields["completed_at"] or None,
        "settled_at": fields["settled_at"] or None,
        "role": role,
        own: viewer_id,
    }


def _with_iso_times(row: Any) -> dict[str, Any]:
    """A SQL row's fields, with the product's name as `product_name` and times ISO-8601."""
    fields = {**row._mapping, "product_name": row.name}
    for name in ("created_at", "completed_at", "settled_at"):
        if name in fields:
            fields[name] = iso(fields[name])
    return fields


def _items(docs: Sequence[Mapping[str, Any]] | None, shape: Any) -> Answer | None:
    return None if docs is None else {"items": [shape(d) for d in docs]}


# -- GET /api/buy/history/{state}, /api/sell/history/{state} ---------------------------------


@dataclass(frozen=True)
class Side:
    """Whose history: the buyer's (bids, purchases) or the seller's (asks, sales)."""

    name: str  # the read model's hist:<name>:<state> lists
    book: str  # the kind of document of an open bid
    bid_id: str
    bids: Table
    bid_owner: ColumnElement[str]
    order_owner: ColumnElement[str]
    statuses: Mapping[str, Sequence[str]]
    with_payment: bool  # a purchase shows what was paid, a sale does not


BUYER = Side(
    "buy", "bid", "buy_bid_id", buy_bids, buy_bids.c.buyer_id, orders.c.buyer_id,
    PURCHASE_STATUSES, with_payment=True,
)  # fmt: skip
SELLER = Side(
    "sell", "ask", "sell_bid_id", sell_bids, sell_bids.c.seller_id, orders.c.seller_id,
    SALE_STATUSES, with_payment=False,
)  # fmt: skip


def history_from_read_model(
    rm: ReadModelReader, user_id: str, state: HistoryState, *, side: Side, limit: int
) -> Answer | None:
    if state == "bidding":
        docs = rm.documents(user_id, f"hist:{side.name}:bidding", side.book, limit)
        return _items(docs, lambda d: bid_item(side.bid_id, d))
    docs = rm.documents(user_id, f"hist:{side.name}:{state}", "order", limit)
    return _items(docs, lambda d: order_item(d, with_payment=side.with_payment))


def history_from_sql(
    session: Session, user_id: str, state: HistoryState, *, side: Side, limit: int = 50
) -> Answer:
    """Open bids (or asks), or purchases (or sales), newest first."""
    if state == "bidding":
        rows = _open_bids(session, side.bids, side.bid_owner, user_id, limit)
        return {"items": [bid_item(side.bid_id, _with_iso_times(r)) for r in rows]}
    rows = _orders_of(session, side.order_owner, user_id, side.statuses[state], limit)
    return {"items": [order_item(_with_iso_times(r), with_payment=side.with_payment) for r in rows]}


def _order_columns(*parties: ColumnElement[str]) -> tuple[ColumnElement[Any], ...]:
    """An order's columns as its answers show them (with the product's name)."""
    o = orders
    return (
        o.c.id, o.c.product_id, _p.c.name, *parties, o.c.price, o.c.discount, o.c.paid,
        o.c.status, o.c.via, o.c.created_at, o.c.completed_at, o.c.settled_at,
    )  # fmt: skip


def _open_bids(
    session: Session, bids: Table, owner: ColumnElement[str], user_id: str, limit: int
) -> list[Any]:
    """The caller's open bids of one side of the book, newest first."""
    return list(
        session.execute(
            select(
                bids.c.id,
                bids.c.product_id,
                _p.c.name,
                bids.c.price,
                bids.c.status,
                bids.c.created_at,
            )
            .join(_p, _p.c.id == bids.c.product_id)
            .where(owner == user_id, bids.c.status == OPEN)
            .order_by(bids.c.created_at.desc(), bids.c.id.desc())
            .limit(limit)
        )
    )


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
            select(*_order_columns())
            .join(_p, _p.c.id == o.c.product_id)
            .where(party == user_id, o.c.status.in_(statuses))
            .order_by(o.c.created_at.desc(), o.c.id.desc())
            .limit(limit)
        )
    )


# -- GET /api/orders/{id} --------------------------------------------------------------------


def order_detail_from_read_model(
    rm: ReadModelReader, order_id: str, viewer_id: str
) -> Answer | None:
    doc = rm.order(order_id)
    return None if doc is None else present_order({**doc, "id": order_id}, viewer_id)


def order_detail_from_sql(session: Session, order_id: str, viewer_id: str) -> Answer | None:
    """The order, for its buyer or seller only (None otherwise)."""
    if not is_entity_id(order_id):
        return None
    o = orders
    row = session.execute(
        select(*_order_columns(orders.c.buyer_id, orders.c.seller_id))
        .join(_p, _p.c.id == o.c.product_id)
        .where(o.c.id == order_id, or_(o.c.buyer_id == viewer_id, o.c.seller_id == viewer_id))
    ).one_or_none()
    return None if row is None else present_order(_with_iso_times(row), viewer_id)


# -- GET /api/orders/{id}/gifticon -----------------------------------------------------------


def order_gifticon_key_from_read_model(
    rm: ReadModelReader, order_id: str, viewer_id: str
) -> str | None:
    """The S3 key of an order's voucher image, for its buyer or seller only."""
    found = rm.gifticon(order_id)
    if found is None:
        return None
    buyer_id, seller_id, key = found
    return key if viewer_id in (buyer_id, seller_id) else None


def order_gifticon_key_from_sql(session: Session, order_id: str, viewer_id: str) -> str | None:
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
