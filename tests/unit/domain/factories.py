"""Domain objects the unit tests need in many places, in a valid state."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from giftmarket.domain.orders import Order, OrderVia
from giftmarket.domain.settlement import business_date_of
from giftmarket.domain.vouchers import Fingerprint, Voucher


def voucher(now: datetime, barcode: str = "8801234567890", days: int = 30) -> Voucher:
    """A voucher valid `days` after `now`'s date in Korea, its fingerprint made up from the
    barcode (the domain never hashes: the registry's key does)."""
    return Voucher(
        barcode_last4=barcode[-4:],
        expires_on=business_date_of(now) + timedelta(days=days),
        fingerprints=(Fingerprint("test-1", f"digest-of-{barcode}"),),
    )


def placed_order(price: int, paid_at: datetime, n: int = 0, **terms: Any) -> Order:
    """Order `n` of sally's to bob, paid (and, inspection being automatic, delivered) at
    `paid_at` (by buy-now unless `terms` say else)."""
    fields: dict[str, Any] = {
        "order_id": f"order-{n}",
        "product_id": "product-1",
        "buyer_id": "bob",
        "seller_id": "sally",
        "price": price,
        "discount": 0,
        "via": OrderVia.BUY_NOW,
        "image_id": "image-1",
        "barcode_last4": "7890",
        "expires_on": date(2099, 12, 31),
        "inspect": False,
    }
    return Order.place(**(fields | terms), now=paid_at)
