"""The Redis side of every query: the same answers as `queries.views`, from the read models.

Each function returns the response's JSON, or None when the read model cannot answer (not
projected, no generation), and the caller asks SQL instead (`Reads.answer`). Shaping is
shared with the views (`bid_item`, `order_item`, `present_order`, `coupon_status`, the
cursors), so both stores give byte-for-byte the same bodies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from giftmarket.adapters.read_models import ReadModels
from giftmarket.queries import views
from giftmarket.queries.views import Answer, HistoryState, ProductCursor, ProductSort, RankingBy


def product_list(
    rm: ReadModels,
    *,
    sort: ProductSort,
    category: str | None,
    after: ProductCursor | None,
    limit: int,
) -> Answer | None:
    member = None if after is None else views.list_member(after)
    rows = rm.products(sort=sort, category=category, after=member, limit=limit + 1)
    return None if rows is None else views.product_page(sort, rows, limit)


def product_detail(rm: ReadModels, product_id: str) -> Answer | None:
    return rm.product(product_id, recent_trades=views.RECENT_TRADES)


def rankings(rm: ReadModels, *, by: RankingBy, limit: int) -> Answer | None:
    items = rm.rankings(by=by, limit=limit)
    return None if items is None else {"items": items}


def buy_history(rm: ReadModels, user_id: str, state: HistoryState, *, limit: int) -> Answer | None:
    if state == "bidding":
        return _items(rm.documents(user_id, "hist:buy:bidding", "bid", limit), _bid("buy_bid_id"))
    docs = rm.documents(user_id, f"hist:buy:{state}", "order", limit)
    return _items(docs, lambda d: views.order_item(d, with_payment=True))


def sell_history(rm: ReadModels, user_id: str, state: HistoryState, *, limit: int) -> Answer | None:
    if state == "bidding":
        return _items(rm.documents(user_id, "hist:sell:bidding", "ask", limit), _bid("sell_bid_id"))
    docs = rm.documents(user_id, f"hist:sell:{state}", "order", limit)
    return _items(docs, lambda d: views.order_item(d, with_payment=False))


def order_detail(rm: ReadModels, order_id: str, viewer_id: str) -> Answer | None:
    doc = rm.order(order_id)
    if doc is None:
        return None
    return views.present_order(
        {
            "order_id": order_id,
            "product_id": doc["product_id"],
            "product_name": doc["product_name"],
            "buyer_id": doc["buyer_id"],
            "seller_id": doc["seller_id"],
            "price": int(doc["price"]),
            "discount": int(doc["discount"]),
            "paid": int(doc["paid"]),
            "status": doc["status"],
            "via": doc["via"],
            "created_at": doc["created_at"],
            "completed_at": doc["completed_at"] or None,
            "settled_at": doc["settled_at"] or None,
        },
        viewer_id,
    )


def order_gifticon_key(rm: ReadModels, order_id: str, viewer_id: str) -> str | None:
    found = rm.gifticon(order_id)
    if found is None:
        return None
    buyer_id, seller_id, key = found
    return key if viewer_id in (buyer_id, seller_id) else None


def my_coupons(
    rm: ReadModels, user_id: str, *, now: datetime | None = None, limit: int
) -> Answer | None:
    at = (now or datetime.now(UTC)).astimezone(UTC)

    def coupon(doc: Answer) -> Answer:
        expires_at = datetime.fromisoformat(doc["expires_at"])
        return {
            "coupon_id": doc["id"],
            "name": doc["name"],
            "discount_amount": int(doc["discount_amount"]),
            "status": views.coupon_status(doc["status"], expires_at, at),
            "expires_at": doc["expires_at"],
        }

    return _items(rm.documents(user_id, "coupons", "coupon", limit), coupon)


def my_settlements(rm: ReadModels, user_id: str, *, limit: int) -> Answer | None:
    def settlement(doc: Answer) -> Answer:
        return {
            "business_date": doc["business_date"],
            "order_count": int(doc["order_count"]),
            "gross": int(doc["gross"]),
            "fee": int(doc["fee"]),
            "net": int(doc["net"]),
        }

    return _items(rm.documents(user_id, "settlements", "settlement", limit), settlement)


def _bid(id_field: str) -> Any:
    return lambda doc: views.bid_item(id_field, doc)


def _items(docs: list[Answer] | None, shape: Any) -> Answer | None:
    return None if docs is None else {"items": [shape(d) for d in docs]}
