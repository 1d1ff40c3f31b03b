"""The session's schema reset really empties the database (it once silently did not), and
goes down through every migration whatever the data (it once failed on a coupon that paid
for a refunded order and then for another)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, insert, select

from giftmarket.adapters import tables
from giftmarket.adapters.db import Database
from giftmarket.domain.ids import new_id
from giftmarket_local.migrations import reset
from giftmarket_local.stack import Stack


def test_reset_leaves_every_table_empty(stack: Stack, database: Database) -> None:
    stack.primary.sql(
        "INSERT INTO giftmarket.products (id, name, brand, category, face_value, created_at)"
        " VALUES ('01RESETPROBE0000000000000A', 'probe', 'b', 'c', 1, NOW(6))"
    )
    reset(stack.config)
    with database.writer.connect() as conn:
        for table in tables.metadata.sorted_tables:
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0, table


def test_reset_goes_down_past_a_coupon_used_again_after_a_refund(
    stack: Stack, database: Database
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    buyer, seller, product, image, coupon = (new_id() for _ in range(5))

    def user(user_id: str) -> dict[str, Any]:
        return {
            "id": user_id,
            "email": f"{user_id.lower()}@reset.test",
            "nickname": "n",
            "password_hash": "x",
            "created_at": now,
            "updated_at": now,
        }

    def order(refunded_at: datetime | None) -> dict[str, Any]:
        return {
            "id": new_id(),
            "product_id": product,
            "buyer_id": buyer,
            "seller_id": seller,
            "coupon_id": coupon,
            "image_id": image,
            "price": 3000,
            "discount": 1000,
            "paid": 2000,
            "status": "PAID" if refunded_at is None else "REFUNDED",
            "via": "buy_now",
            "barcode_last4": "7890",
            "expires_on": date(2099, 12, 31),
            "created_at": now,
            "delivered_at": now,
            "refunded_at": refunded_at,
        }

    with database.writer.begin() as conn:
        conn.execute(insert(tables.users), [user(buyer), user(seller)])
        conn.execute(
            insert(tables.products),
            {"id": product, "name": "p", "brand": "b", "category": "c", "face_value": 1}
            | {"created_at": now},
        )
        conn.execute(
            insert(tables.images),
            {"id": image, "owner_id": seller, "s3_key": f"images/{seller}/{image}"}
            | {"content_type": "image/png", "status": "ATTACHED", "created_at": now},
        )
        conn.execute(
            insert(tables.coupons),
            {"id": coupon, "user_id": buyer, "name": "c", "discount_amount": 1000}
            | {"kind": "admin", "status": "USED", "expires_at": now, "created_at": now},
        )
        # Refunded, then the coupon it gave back paid for another order.
        conn.execute(insert(tables.orders), [order(now), order(None)])

    reset(stack.config)

    with database.writer.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.orders)).scalar_one() == 0
