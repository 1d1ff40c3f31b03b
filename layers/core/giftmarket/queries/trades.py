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

from sqlalchemy import ColumnElement, Connection, Table, or_, select

from giftmarket.adapters.tables import buy_bids, images, orders, products, sell_bids
from giftmarket.domain.orders import may_download
from giftmarket.queries.params import Answer, HistoryState, day, is_entity_id, iso
from giftmarket.read_ports import ReadModelReader

OPEN = "OPEN"

EXPIRED = "EXPIRED"

_p = products


# -- shaping (both readers) ------------------------------------------------------------------


def _known(fields: Mapping[str, Any], name: str) -> Any:
    """A field that may not be known (absent, empty or None in either store): None then."""
    return fields.get(name) or None


def bid_item(id_field: str, fields: Mapping[str, Any], *, voucher: bool = False) -> Answer:
    """A history item for a bid, from its fields (times already ISO-8601); an ask's item
    (`voucher`) shows its seller the voucher's last digits and last valid day."""
    item: Answer = {
        id_field: fields["id"],
        "product_id": fields["product_id"],
        "product_name": fields["product_name"],
        "price": int(fields["price"]),
        "status": fields["status"],
        "created_at": fields["created_at"],
    }
    if voucher:
        item["barcode_last4"] = _known(fields, "barcode_last4")
        item["expires_on"] = _known(fields, "expires_on")
    return item


def order_item(fields: Mapping[str, Any], *, with_payment: bool) -> Answer:
    """A history item for an order, from its fields (times ISO-8601 or None). A purchase
    (`with_payment`) shows what was paid; a sale, the voucher's last digits."""
    item: Answer = {
        "order_id": fields["id"],
        "product_id": fields["product_id"],
        "product_name": fields["product_name"],
        "price": int(fields["price"]),
        "status": fields["status"],
        "via": fields["via"],
        "created_at": fields["created_at"],
        "delivered_at": _known(fields, "delivered_at"),
        "completed_at": fields["completed_at"] or None,
        "settled_at": fields["settled_at"] or None,
        "expires_on": _known(fields, "expires_on"),
    }
    if with_payment:
        # What the buyer paid and the coupon discount are the buyer's own business.
        item["discount"] = int(fields["discount"])
        item["paid"] = int(fields["paid"])
    else:
        item["barcode_last4"] = _known(fields, "barcode_last4")
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
    dispute = None
    if _known(fields, "dispute_reason") is not None:
        dispute = {
            "reason": fields["dispute_reason"],
            "opened_at": _known(fields, "dispute_opened_at"),
            "decision": _known(fields, "dispute_decision"),
            "decided_at": _known(fields, "dispute_decided_at"),
        }
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
        "delivered_at": _known(fields, "delivered_at"),
        "completed_at": fields["completed_at"] or None,
        "settled_at": fields["settled_at"] or None,
        "refunded_at": _known(fields, "refunded_at"),
        "barcode_last4": _known(fields, "barcode_last4"),
        "expires_on": _known(fields, "expires_on"),
        "dispute": dispute,
        "role": role,
        own: viewer_id,
    }


_INSTANTS = ("created_at", "delivered_at", "completed_at", "settled_at", "refunded_at",
             "dispute_opened_at", "dispute_decided_at")  # fmt: skip


def _with_iso_times(row: Any) -> dict[str, Any]:
    """A SQL row's fields, with the product's name as `product_name`, times ISO-8601 and
    days YYYY-MM-DD."""
    fields = {**row._mapping, "product_name": row.name}
    for name in _INSTANTS:
        if name in fields:
            fields[name] = iso(fields[name])
    if fields.get("expires_on") is not None:
        fields["expires_on"] = day(fields["expires_on"])
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
    # The generated column holding the order's history state for this party
    # (domain.orders.PURCHASE_STATE, SALE_STATE), indexed after the party's id.
    order_state: ColumnElement[str]
    with_payment: bool  # a purchase shows what was paid, a sale does not


BUYER = Side(
    "buy", "bid", "buy_bid_id", buy_bids, buy_bids.c.buyer_id, orders.c.buyer_id,
    orders.c.purchase_state, with_payment=True,
)  # fmt: skip
SELLER = Side(
    "sell", "ask", "sell_bid_id", sell_bids, sell_bids.c.seller_id, orders.c.seller_id,
    orders.c.sale_state, with_payment=False,
)  # fmt: skip


def _history_item(side: Side, fields: Mapping[str, Any]) -> Answer:
    if fields.get("kind", "order") == "order":
        return order_item(fields, with_payment=side.with_payment)
    return bid_item(side.bid_id, fields, voucher=side is SELLER)


def history_from_read_model(
    rm: ReadModelReader, user_id: str, state: HistoryState, *, side: Side, limit: int
) -> Answer | None:
    if state == "bidding":
        lists = [(f"hist:{side.name}:bidding", side.book)]
    else:
        lists = [(f"hist:{side.name}:{state}", "order")]
        if state == "done" and side is SELLER:
            lists.append(("hist:sell:expired", "ask"))
    docs = rm.documents(user_id, lists, limit)
    return _items(docs, lambda d: _history_item(side, d))


def history_from_sql(
    session: Connection, user_id: str, state: HistoryState, *, side: Side, limit: int = 50
) -> Answer:
    """Open bids (or asks), or purchases (or sales; with the expired asks when done),
    newest first."""
    if state == "bidding":
        rows = _bids_of(session, side, user_id, OPEN, limit)
        return {"items": [_history_item(side, _bid_fields(r, side)) for r in rows]}
    found = [
        (r.created_at, r.id, _with_iso_times(r))
        for r in _orders_of(session, side, user_id, state, limit)
    ]
    if state == "done" and side is SELLER:
        found += [
            (r.created_at, r.id, _bid_fields(r, side))
            for r in _bids_of(session, side, user_id, EXPIRED, limit)
        ]
        # Both lists newest first, as the read model merges them: creation time, then id.
        found.sort(key=lambda f: (f[0], f[1]), reverse=True)
    return {"items": [_history_item(side, fields) for _, _, fields in found[:limit]]}


def _bid_fields(row: Any, side: Side) -> dict[str, Any]:
    return {**_with_iso_times(row), "kind": side.book}


def _order_columns(*parties: ColumnElement[str]) -> tuple[ColumnElement[Any], ...]:
    """An order's columns as its answers show them (with the product's name)."""
    o = orders
    return (
        o.c.id, o.c.product_id, _p.c.name, *parties, o.c.price, o.c.discount, o.c.paid,
        o.c.status, o.c.via, o.c.created_at, o.c.delivered_at, o.c.completed_at,
        o.c.settled_at, o.c.barcode_last4, o.c.expires_on,
    )  # fmt: skip


def _order_detail_columns() -> tuple[ColumnElement[Any], ...]:
    o = orders
    return (
        *_order_columns(o.c.buyer_id, o.c.seller_id), o.c.refunded_at, o.c.dispute_reason,
        o.c.dispute_opened_at, o.c.dispute_decision, o.c.dispute_decided_at,
    )  # fmt: skip


def _bids_of(session: Connection, side: Side, user_id: str, status: str, limit: int) -> list[Any]:
    """The caller's bids (or asks) in `status`, newest first."""
    bids = side.bids
    columns = [bids.c.id, bids.c.product_id, _p.c.name, bids.c.price, bids.c.status]
    if side is SELLER:
        columns += [bids.c.barcode_last4, bids.c.expires_on]
    return list(
        session.execute(
            select(*columns, bids.c.created_at)
            .join(_p, _p.c.id == bids.c.product_id)
            .where(side.bid_owner == user_id, bids.c.status == status)
            .order_by(bids.c.created_at.desc(), bids.c.id.desc())
            .limit(limit)
        )
    )


def _orders_of(session: Connection, side: Side, user_id: str, state: str, limit: int) -> list[Any]:
    o = orders
    return list(
        session.execute(
            select(*_order_columns())
            .join(_p, _p.c.id == o.c.product_id)
            .where(side.order_owner == user_id, side.order_state == state)
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


def order_detail_from_sql(session: Connection, order_id: str, viewer_id: str) -> Answer | None:
    """The order, for its buyer or seller only (None otherwise)."""
    if not is_entity_id(order_id):
        return None
    o = orders
    row = session.execute(
        select(*_order_detail_columns())
        .join(_p, _p.c.id == o.c.product_id)
        .where(o.c.id == order_id, or_(o.c.buyer_id == viewer_id, o.c.seller_id == viewer_id))
    ).one_or_none()
    return None if row is None else present_order(_with_iso_times(row), viewer_id)


# -- GET /api/orders/{id}/gifticon -----------------------------------------------------------


def downloadable_key(
    key: str, *, buyer_id: str, seller_id: str, delivered_at: object, viewer_id: str
) -> str | None:
    """The voucher image's key for a party to the order (None for anyone else: 404), by
    the domain's rule (`giftmarket.domain.orders.may_download`)."""
    allowed = may_download(
        buyer_id=buyer_id, seller_id=seller_id, delivered=bool(delivered_at), viewer_id=viewer_id
    )
    return key if allowed else None


def order_gifticon_key_from_read_model(
    rm: ReadModelReader, order_id: str, viewer_id: str
) -> str | None:
    """The S3 key of an order's voucher image, for its buyer (once delivered) or seller."""
    found = rm.gifticon(order_id)
    if found is None:
        return None
    buyer_id, seller_id, key, delivered_at = found
    return downloadable_key(
        key, buyer_id=buyer_id, seller_id=seller_id, delivered_at=delivered_at, viewer_id=viewer_id
    )


def order_gifticon_key_from_sql(session: Connection, order_id: str, viewer_id: str) -> str | None:
    """The S3 key of an order's voucher image, for its buyer (once delivered) or seller
    (None otherwise, and for an image that is gone)."""
    if not is_entity_id(order_id):
        return None
    o, i = orders, images
    row = session.execute(
        select(i.c.s3_key, o.c.buyer_id, o.c.seller_id, o.c.delivered_at)
        .join(i, i.c.id == o.c.image_id)
        .where(
            o.c.id == order_id,
            or_(o.c.buyer_id == viewer_id, o.c.seller_id == viewer_id),
            i.c.status != "DELETED",
        )
    ).one_or_none()
    if row is None:
        return None
    return downloadable_key(
        str(row.s3_key),
        buyer_id=row.buyer_id,
        seller_id=row.seller_id,
        delivered_at=row.delivered_at,
        viewer_id=viewer_id,
    )
