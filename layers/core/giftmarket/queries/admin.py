"""The admins' queues: GET /api/admin/inspections and /api/admin/disputes, oldest first.

As in `queries.trades`, each queue's Redis reader (`*_from_read_model`, None when the read
model cannot answer) and SQL reader (`*_from_sql`) share the shaping. An inspection item
carries its voucher image's S3 key as `image_key` (None when the image is gone); the route
turns it into a download URL, so no query signs anything.

Admin rights are read from the primary on every request (`is_admin_from_sql`), as admin
commands read them: a revoke takes effect on the next request, and the token never says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from giftmarket.adapters.tables import images, orders, products, users
from giftmarket.queries.params import Answer, day, iso
from giftmarket.read_ports import ReadModelReader

INSPECTING = "INSPECTING"
DISPUTED = "DISPUTED"


def is_admin_from_sql(session: Connection, user_id: str) -> bool:
    """Whether the user holds admin rights now (run it on the primary)."""
    found = session.execute(select(users.c.is_admin).where(users.c.id == user_id)).scalar()
    return bool(found)


# -- shaping (both readers) ------------------------------------------------------------------


def _voucher_order(fields: Mapping[str, Any]) -> Answer:
    return {
        "order_id": fields["id"],
        "product_id": fields["product_id"],
        "product_name": fields["product_name"],
        "price": int(fields["price"]),
        "barcode_last4": fields.get("barcode_last4") or None,
        "expires_on": fields.get("expires_on") or None,
    }


def inspection_item(fields: Mapping[str, Any]) -> Answer:
    """An order waiting for inspection, waiting since it was placed."""
    return {
        **_voucher_order(fields),
        "image_key": fields.get("image_key") or None,
        "waiting_since": fields["created_at"],
    }


def dispute_item(fields: Mapping[str, Any]) -> Answer:
    """An open dispute: the buyer's reason and when they opened it."""
    return {
        **_voucher_order(fields),
        "reason": fields["dispute_reason"],
        "opened_at": fields["dispute_opened_at"],
    }


# -- GET /api/admin/inspections, /api/admin/disputes -------------------------------------------


def inspections_from_read_model(rm: ReadModelReader, *, limit: int) -> Answer | None:
    docs = rm.queue("inspections", limit)
    return None if docs is None else {"items": [inspection_item(d) for d in docs]}


def disputes_from_read_model(rm: ReadModelReader, *, limit: int) -> Answer | None:
    docs = rm.queue("disputes", limit)
    return None if docs is None else {"items": [dispute_item(d) for d in docs]}


def inspections_from_sql(session: Connection, *, limit: int = 50) -> Answer:
    """INSPECTING orders, oldest first (the (awaiting, awaiting_since) index; since
    they were placed)."""
    o, i = orders, images
    rows = session.execute(
        select(*_columns(), i.c.s3_key.label("image_key"))
        .join(products, products.c.id == o.c.product_id)
        .outerjoin(i, (i.c.id == o.c.image_id) & (i.c.status != "DELETED"))
        .where(o.c.awaiting == INSPECTING)
        .order_by(o.c.awaiting_since, o.c.id)
        .limit(limit)
    ).all()
    return {"items": [inspection_item(_fields(r)) for r in rows]}


def disputes_from_sql(session: Connection, *, limit: int = 50) -> Answer:
    """DISPUTED orders, the oldest dispute first (the (awaiting, awaiting_since) index;
    since the dispute was opened)."""
    o = orders
    rows = session.execute(
        select(*_columns(), o.c.dispute_reason, o.c.dispute_opened_at)
        .join(products, products.c.id == o.c.product_id)
        .where(o.c.awaiting == DISPUTED)
        .order_by(o.c.awaiting_since, o.c.id)
        .limit(limit)
    ).all()
    return {"items": [dispute_item(_fields(r)) for r in rows]}


def _columns() -> tuple[Any, ...]:
    o = orders
    return (
        o.c.id, o.c.product_id, products.c.name.label("product_name"), o.c.price,
        o.c.barcode_last4, o.c.expires_on, o.c.created_at,
    )  # fmt: skip


def _fields(row: Any) -> dict[str, Any]:
    fields = dict(row._mapping)
    for name in ("created_at", "dispute_opened_at"):
        if name in fields:
            fields[name] = iso(fields[name])
    if fields["expires_on"] is not None:
        fields["expires_on"] = day(fields["expires_on"])
    return fields
