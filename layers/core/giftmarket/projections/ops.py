"""Read-model operations: what one entity's state means for the Redis read models.

An operation names an entity (`k` its kind, `id`), the version it reflects (`v`), the fields
that never change once known (`once`) and the fields that do (`set`, written only when `v`
is not older than what the read model has). The projector makes them from events, the
rebuild from rows; both hand them to the same Lua script (`adapters/lua/apply.lua`), so the
two paths cannot drift apart. Pure: no I/O here.

Every value is sent as a string (`""` for null): Lua's JSON decoder would otherwise turn
large integers into floats. A `once` field sent as `""` is not known yet, so it is not
written: a later operation that knows it (a delivery, a dispute) still can.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TypedDict

from giftmarket.read_ports import Op

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def utc(value: datetime) -> datetime:
    """Aware UTC; a naive value (as the database returns them) is taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def instant(value: datetime | str) -> datetime:
    return utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def micros(value: datetime | str) -> str:
    """Microseconds since the epoch: the sort key of everything listed newest first."""
    return str((instant(value) - _EPOCH) // _MICROSECOND)


def op(
    kind: str,
    entity_id: str,
    version: int,
    *,
    once: Mapping[str, object] | None = None,
    set: Mapping[str, object] | None = None,  # noqa: A002 - the operation's own word
) -> Op:
    return {
        "k": kind,
        "id": entity_id,
        "v": str(version),
        "once": {name: text(value) for name, value in (once or {}).items()},
        "set": {name: text(value) for name, value in (set or {}).items()},
    }


# -- one function per entity: the rebuild passes every field, events pass what they know --


def user(
    user_id: str,
    version: int,
    *,
    email: str | None = None,
    nickname: str | None = None,
    balances: tuple[int, int, int],
) -> Op:
    available, escrowed, pending = balances
    # Set once, by the signup (the only op that knows the nickname); email may be None.
    identity = {} if nickname is None else {"email": email, "nickname": nickname}
    return op(
        "user",
        user_id,
        version,
        once=identity,
        set={
            "available_points": available,
            "escrowed_points": escrowed,
            "pending_points": pending,
        },
    )


def product(
    product_id: str,
    version: int,
    *,
    like_count: int,
    name: str | None = None,
    brand: str | None = None,
    category: str | None = None,
    face_value: int | None = None,
    created_at: datetime | None = None,
) -> Op:
    identity: dict[str, object] = {}
    if created_at is not None:
        identity = {
            "name": name,
            "brand": brand,
            "category": category,
            "face_value": face_value,
            "created_us": micros(created_at),
        }
    return op("product", product_id, version, once=identity, set={"like_count": like_count})


def bid(
    kind: str,
    bid_id: str,
    version: int,
    *,
    product_id: str,
    owner_id: str,
    price: int,
    status: str,
    created_at: datetime | None = None,
    voucher: tuple[str | None, date | None] = (None, None),
) -> Op:
    """An ask (`kind` "ask") or a buy bid ("bid"); an ask's `voucher` is its
    (barcode_last4, expires_on), from its placement on."""
    barcode_last4, expires_on = voucher
    identity: dict[str, object] = {"product_id": product_id, "owner_id": owner_id}
    if created_at is not None:
        identity |= {"created_at": instant(created_at), "created_us": micros(created_at)}
    if kind == "ask":
        identity |= {"barcode_last4": barcode_last4, "expires_on": expires_on}
    return op(kind, bid_id, version, once=identity, set={"price": price, "status": status})


class OrderParties(TypedDict):
    product_id: str
    buyer_id: str
    seller_id: str


class OrderTerms(TypedDict):
    price: int
    discount: int
    paid: int
    via: str
    image_id: str


class OrderFacts(TypedDict, total=False):
    """What an order learns once and keeps: its voucher (from placement), its delivery, its
    dispute and its refund. Each is written by whichever event (or row) knows it first, so
    an event delivered late or out of order still adds what it alone carries."""

    barcode_last4: str | None
    expires_on: date | None
    delivered_at: datetime | None
    dispute_reason: str | None
    dispute_opened_at: datetime | None
    dispute_decision: str | None
    dispute_decided_at: datetime | None
    refunded_at: datetime | None


# The names, for the rebuild's SQL.
ORDER_IDENTITY: tuple[str, ...] = tuple(OrderParties.__annotations__)
ORDER_TERMS: tuple[str, ...] = tuple(OrderTerms.__annotations__)
ORDER_FACTS: tuple[str, ...] = tuple(OrderFacts.__annotations__)
ORDER_INSTANTS = frozenset({"delivered_at", "dispute_opened_at", "dispute_decided_at",
                            "refunded_at"})  # fmt: skip


def order(
    order_id: str,
    version: int,
    *,
    parties: OrderParties,
    status: str,
    completed_at: datetime | None,
    settled_at: datetime | None,
    terms: OrderTerms | None = None,
    created_at: datetime | None = None,
    facts: OrderFacts | None = None,
) -> Op:
    """`terms` and `created_at` are known from the order's placement on (events after it
    do not repeat them); `facts` as the event knows them."""
    identity: dict[str, object] = {**parties}
    if terms is not None:
        identity |= terms
    if created_at is not None:
        identity |= {"created_at": instant(created_at), "created_us": micros(created_at)}
    identity |= order_facts(facts or {})
    return op(
        "order",
        order_id,
        version,
        once=identity,
        set={
            "status": status,
            "completed_at": None if completed_at is None else instant(completed_at),
            "settled_at": None if settled_at is None else instant(settled_at),
        },
    )


def order_facts(facts: OrderFacts) -> dict[str, object]:
    """`facts` as the read model keeps them: instants in UTC, and the dispute's opening
    also in microseconds (the admins' dispute queue is ordered by it)."""
    out: dict[str, object] = {}
    for name, value in facts.items():
        if isinstance(value, datetime) and name in ORDER_INSTANTS:
            value = instant(value)
        out[name] = value
    opened = facts.get("dispute_opened_at")
    if opened is not None:
        out["dispute_opened_us"] = micros(opened)
    return out


def coupon(
    coupon_id: str,
    version: int,
    *,
    user_id: str,
    status: str,
    name: str | None = None,
    discount_amount: int | None = None,
    expires_at: datetime | None = None,
    created_at: datetime | None = None,
) -> Op:
    identity: dict[str, object] = {"user_id": user_id}
    if created_at is not None and expires_at is not None:
        identity |= {
            "name": name,
            "discount_amount": discount_amount,
            "expires_at": instant(expires_at),
            "created_us": micros(created_at),
        }
    return op("coupon", coupon_id, version, once=identity, set={"status": status})


def settlement(
    settlement_id: str,
    *,
    seller_id: str,
    business_date: date,
    order_count: int,
    gross: int,
    fee: int,
    net: int,
) -> Op:
    """A settlement never changes once written."""
    return op(
        "settlement",
        settlement_id,
        1,
        once={
            "seller_id": seller_id,
            "business_date": business_date,
            "order_count": order_count,
            "gross": gross,
            "fee": fee,
            "net": net,
        },
    )


def image_deleted(image_id: str, version: int) -> Op:
    """A voucher image that is gone, for good: the read models derive an image's key from
    its order, and list the deleted ones so as not to hand out a key that no longer is."""
    return op("image", image_id, version, set={"status": "DELETED"})
