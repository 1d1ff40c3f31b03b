"""The caller's own account: GET /api/me, /api/me/coupons, /api/me/settlements and
/api/me/search-history.

As in `queries.products`, each query's Redis reader (`*_from_read_model`, None when the read
model cannot answer) and SQL reader (`*_from_sql`) sit side by side and share the shaping.
The search history lives in Redis only: it is that store's own data, not a projection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from giftmarket.adapters.tables import coupons, settlements, users
from giftmarket.queries.params import Answer, day, iso
from giftmarket.read_ports import ReadModelReader

# -- GET /api/me -----------------------------------------------------------------------------


def _me(user_id: str, fields: Mapping[str, Any]) -> Answer:
    return {
        "user_id": user_id,
        "email": fields["email"] or None,  # '' in the read model: no email
        "nickname": fields["nickname"],
        "available_points": int(fields["available_points"]),
        "escrowed_points": int(fields["escrowed_points"]),
        "pending_points": int(fields["pending_points"]),
    }


def me_from_read_model(rm: ReadModelReader, user_id: str) -> Answer | None:
    doc = rm.user(user_id)
    return None if doc is None else _me(user_id, doc)


def me_from_sql(session: Connection, user_id: str) -> Answer | None:
    """The caller's profile and balances."""
    u = users
    row = session.execute(
        select(
            u.c.email,
            u.c.nickname,
            u.c.available_points,
            u.c.escrowed_points,
            u.c.pending_points,
        ).where(u.c.id == user_id)
    ).one_or_none()
    return None if row is None else _me(user_id, dict(row._mapping))


# -- GET /api/me/coupons ---------------------------------------------------------------------


def coupon_status(status: str, expires_at: datetime, now: datetime) -> str:
    """A coupon still AVAILABLE in the table but past its expiry is shown as EXPIRED
    (the same rule as using it: usable only while now < expires_at)."""
    if status == "AVAILABLE" and now >= expires_at:
        return "EXPIRED"
    return status


def _coupon(fields: Mapping[str, Any], expires_at: datetime, now: datetime) -> Answer:
    """`fields` hold `expires_at` as ISO-8601; `expires_at` is the same instant, comparable
    with `now`."""
    return {
        "coupon_id": fields["id"],
        "name": fields["name"],
        "discount_amount": int(fields["discount_amount"]),
        "status": coupon_status(fields["status"], expires_at, now),
        "expires_at": fields["expires_at"],
    }


def my_coupons_from_read_model(
    rm: ReadModelReader, user_id: str, *, now: datetime | None = None, limit: int
) -> Answer | None:
    at = (now or datetime.now(UTC)).astimezone(UTC)
    docs = rm.documents(user_id, [("coupons", "coupon")], limit)
    if docs is None:
        return None
    return _items(_coupon(d, datetime.fromisoformat(d["expires_at"]), at) for d in docs)


def my_coupons_from_sql(
    session: Connection, user_id: str, *, now: datetime | None = None, limit: int = 100
) -> Answer:
    """The caller's coupons, newest first."""
    c = coupons
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    rows = session.execute(
        select(c.c.id, c.c.name, c.c.discount_amount, c.c.status, c.c.expires_at)
        .where(c.c.user_id == user_id)
        .order_by(c.c.created_at.desc(), c.c.id.desc())
        .limit(limit)
    ).all()
    return _items(
        _coupon({**r._mapping, "expires_at": iso(r.expires_at)}, r.expires_at, at) for r in rows
    )


# -- GET /api/me/settlements -----------------------------------------------------------------


def _settlement(fields: Mapping[str, Any]) -> Answer:
    return {
        "business_date": fields["business_date"],
        "order_count": int(fields["order_count"]),
        "gross": int(fields["gross"]),
        "fee": int(fields["fee"]),
        "net": int(fields["net"]),
    }


def my_settlements_from_read_model(
    rm: ReadModelReader, user_id: str, *, limit: int
) -> Answer | None:
    docs = rm.documents(user_id, [("settlements", "settlement")], limit)
    return None if docs is None else _items(_settlement(d) for d in docs)


def my_settlements_from_sql(session: Connection, user_id: str, *, limit: int = 100) -> Answer:
    """The caller's settlements, newest business date first."""
    s = settlements
    rows = session.execute(
        select(s.c.business_date, s.c.order_count, s.c.gross, s.c.fee, s.c.net)
        .where(s.c.seller_id == user_id)
        .order_by(s.c.business_date.desc())
        .limit(limit)
    ).all()
    return _items(_settlement({**r._mapping, "business_date": day(r.business_date)}) for r in rows)


# -- GET /api/me/search-history (Redis only) -------------------------------------------------


def search_history(rm: ReadModelReader, user_id: str) -> Answer:
    """The caller's recent searches, newest first."""
    return _items(
        {"query": query, "searched_at": at.isoformat()} for query, at in rm.search_history(user_id)
    )


def _items(items: Iterable[Answer]) -> Answer:
    return {"items": list(items)}
