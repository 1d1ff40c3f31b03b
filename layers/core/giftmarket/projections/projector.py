"""Event → read-model operations. Every projection is idempotent and order-tolerant (the
operations are version-guarded and the indexes recomputed from state, see
`adapters/lua/apply.lua`), and errors propagate: the batch processor reports the record as
failed, SQS redelivers it, and after the queue's maxReceiveCount it lands in the DLQ.

One event is one round trip to Redis: its operations and its "seen" mark in one script.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from giftmarket.messages import EventEnvelope
from giftmarket.projections import ops
from giftmarket.projections.ops import Op

if TYPE_CHECKING:
    # Not at import: the projector function imports this module for `projection_lag_ms`,
    # and redis comes with the read models when its container builds them.
    from giftmarket.adapters.read_models import ReadModels
    from giftmarket.commands.executor import CommandExecutor

log = logging.getLogger(__name__)

Projection = Callable[[EventEnvelope], list[Op]]
_PROJECTIONS: dict[str, Projection] = {}


def projects(*event_types: str) -> Callable[[Projection], Projection]:
    def register(projection: Projection) -> Projection:
        for event_type in event_types:
            _PROJECTIONS[event_type] = projection
        return projection

    return register


def operations(envelope: EventEnvelope) -> list[Op]:
    """What `envelope` means for the read models (nothing, for events no query shows)."""
    projection = _PROJECTIONS.get(envelope.event_type)
    return [] if projection is None else projection(envelope)


@dataclass
class Projector:
    read_models: ReadModels
    commands: CommandExecutor

    def handle(self, envelope: EventEnvelope) -> None:
        # Marked seen even when no read model shows this event: a consistency token naming
        # it must still be satisfied.
        self.read_models.apply(operations(envelope), outbox_id=envelope.outbox_id)
        if envelope.event_type == "UserSignedUp":
            self._welcome(envelope.aggregate_id)

    def _welcome(self, user_id: str) -> None:
        # Not part of signup itself, so signup can never fail because of it; issued here,
        # once (the coupon's issue key makes redeliveries no-ops), retried with the message
        # on error.
        from giftmarket.commands import accounts

        command = accounts.IssueWelcomeCoupon(user_id)
        coupon_id, _ = self.commands.execute(
            lambda uow, ctx: accounts.issue_welcome_coupon(uow, command, ctx)
        )
        if coupon_id:
            log.info("welcome coupon %s issued to %s", coupon_id, user_id)


def projection_lag_ms(envelope: EventEnvelope, now: datetime | None = None) -> float:
    """Milliseconds from the event's commit to `now` (default: this moment). The event's
    `occurred_at` is stamped inside the command's transaction, a few milliseconds before
    its commit; a clock running behind the database's gives 0, never a negative lag."""
    at = now or datetime.now(UTC)
    return max(0.0, (at - envelope.occurred_at) / timedelta(milliseconds=1))


def _balances(p: dict[str, Any]) -> tuple[int, int, int]:
    return (p["available_points"], p["escrowed_points"], p["pending_points"])


@projects("UserSignedUp")
def _user_signed_up(e: EventEnvelope) -> list[Op]:
    p = e.payload
    return [
        ops.user(
            e.aggregate_id, e.version, email=p["email"], nickname=p["nickname"], balances=(0, 0, 0)
        )
    ]


@projects("UserBalancesChanged")
def _user_balances_changed(e: EventEnvelope) -> list[Op]:
    return [ops.user(e.aggregate_id, e.version, balances=_balances(e.payload))]


@projects("ProductRegistered")
def _product_registered(e: EventEnvelope) -> list[Op]:
    p = e.payload
    return [
        ops.product(
            e.aggregate_id,
            e.version,
            like_count=0,
            name=p["name"],
            brand=p["brand"],
            category=p["category"],
            face_value=p["face_value"],
            created_at=e.occurred_at,
        )
    ]


@projects("ProductLiked", "ProductUnliked")
def _product_likes(e: EventEnvelope) -> list[Op]:
    return [ops.product(e.aggregate_id, e.version, like_count=e.payload["like_count"])]


@projects("ImageRequested")
def _image_requested(e: EventEnvelope) -> list[Op]:
    return [ops.image(e.aggregate_id, s3_key=e.payload["s3_key"])]


@projects("ImageDeleted")
def _image_deleted(e: EventEnvelope) -> list[Op]:
    return [ops.image(e.aggregate_id, s3_key=e.payload["s3_key"], deleted_version=e.version)]


_BID_STATUS = {"Placed": "OPEN", "Cancelled": "CANCELLED", "Matched": "MATCHED"}


@projects("SellBidPlaced", "SellBidCancelled", "SellBidMatched")
def _ask(e: EventEnvelope) -> list[Op]:
    return [_bid_op("ask", e, owner=e.payload["seller_id"], change=e.event_type[len("SellBid") :])]


@projects("BuyBidPlaced", "BuyBidCancelled", "BuyBidMatched")
def _bid(e: EventEnvelope) -> list[Op]:
    return [_bid_op("bid", e, owner=e.payload["buyer_id"], change=e.event_type[len("BuyBid") :])]


def _bid_op(kind: str, e: EventEnvelope, *, owner: str, change: str) -> Op:
    return ops.bid(
        kind,
        e.aggregate_id,
        e.version,
        product_id=e.payload["product_id"],
        owner_id=owner,
        price=e.payload["price"],
        status=_BID_STATUS[change],
        created_at=e.occurred_at if change == "Placed" else None,
    )


@projects("OrderPlaced")
def _order_placed(e: EventEnvelope) -> list[Op]:
    return [
        ops.order(
            e.aggregate_id,
            e.version,
            parties=e.payload,
            terms=e.payload,
            status="PAID",
            completed_at=None,
            settled_at=None,
            created_at=e.occurred_at,
        )
    ]


@projects("OrderCompleted")
def _order_completed(e: EventEnvelope) -> list[Op]:
    return [
        ops.order(
            e.aggregate_id,
            e.version,
            parties=e.payload,
            status="COMPLETED",
            completed_at=e.payload["completed_at"],
            settled_at=None,
        )
    ]


@projects("OrderSettled")
def _order_settled(e: EventEnvelope) -> list[Op]:
    p = e.payload
    return [
        ops.order(
            e.aggregate_id,
            e.version,
            parties=p,
            status="SETTLED",
            completed_at=p.get("completed_at"),
            settled_at=p.get("settled_at") or e.occurred_at,
        )
    ]


@projects("CouponIssued")
def _coupon_issued(e: EventEnvelope) -> list[Op]:
    p = e.payload
    return [
        ops.coupon(
            e.aggregate_id,
            e.version,
            user_id=p["user_id"],
            status="AVAILABLE",
            name=p["name"],
            discount_amount=p["discount_amount"],
            expires_at=p["expires_at"],
            created_at=e.occurred_at,
        )
    ]


@projects("CouponUsed")
def _coupon_used(e: EventEnvelope) -> list[Op]:
    return [ops.coupon(e.aggregate_id, e.version, user_id=e.payload["user_id"], status="USED")]


@projects("SettlementCompleted")
def _settlement_completed(e: EventEnvelope) -> list[Op]:
    p = e.payload
    return [
        ops.settlement(
            e.aggregate_id,
            seller_id=p["seller_id"],
            business_date=p["business_date"],
            order_count=p["order_count"],
            gross=p["gross"],
            fee=p["fee"],
            net=p["net"],
        )
    ]
