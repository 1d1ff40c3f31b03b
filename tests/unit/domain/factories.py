"""Domain objects the unit tests need in many places, in a valid state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from giftmarket.domain.orders import Order, OrderVia


def placed_order(price: int, paid_at: datetime, n: int = 0, **terms: Any) -> Order:
    """Order `n` of sally's to bob, paid at `paid_at` (by buy-now unless `terms` say else)."""
    fields: dict[str, Any] = {
        "order_id": f"order-{n}",
        "product_id": "product-1",
        "buyer_id": "bob",
        "seller_id": "sally",
        "price": price,
        "discount": 0,
        "via": OrderVia.BUY_NOW,
        "image_id": "image-1",
    }
    return Order.place(**(fields | terms), now=paid_at)
