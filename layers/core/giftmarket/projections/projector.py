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
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from giftmarket.commands.accounts import IssueWelcomeCoupon
from giftmarket.domain.events import (
    BuyBidCancelled,
    BuyBidMatched,
    BuyBidPlaced,
    CouponIssued,
    CouponRestored,
    CouponUsed,
    DomainEvent,
    ImageDeleted,
    OrderCompleted,
    OrderDelivered,
    OrderDisputed,
    OrderDisputeResolved,
    OrderInspectionFailed,
    OrderPlaced,
    OrderRefunded,
    OrderSettled,
    OrdersSettled,
    ProductLiked,
    ProductRegistered,
    ProductUnliked,
    SellBidCancelled,
    SellBidExpired,
    SellBidMatched,
    SellBidPlaced,
    SettlementCompleted,
    UserBalancesChanged,
    UserSignedUp,
)
from giftmarket.domain.orders import DisputeDecision
from giftmarket.messages import EventEnvelope
from giftmarket.projections import ops
from giftmarket.read_ports import Op, ReadModelWriter

if TYPE_CHECKING:
    # Not at import: the projector function imports this module for `projection_lag_ms`,
    # and redis comes with the read models when its container builds them.
    from giftmarket.commands.executor import CommandExecutor

log = logging.getLogger(__name__)

E = TypeVar("E", bound=DomainEvent)
E1 = TypeVar("E1", bound=DomainEvent)
E2 = TypeVar("E2", bound=DomainEvent)
E3 = TypeVar("E3", bound=DomainEvent)
E4 = TypeVar("E4", bound=DomainEvent)
Projection = Callable[[E], list[Op]]
_PROJECTIONS: dict[type[DomainEvent], Projection[Any]] = {}


# Registered by class, so mypy holds each projection to the events it is given: one
# overload per number of classes a projection takes (their union).
@overload
def projects(e1: type[E1], /) -> Callable[[Projection[E1]], Projection[E1]]: ...
@overload
def projects(
    e1: type[E1], e2: type[E2], /
) -> Callable[[Projection[E1 | E2]], Projection[E1 | E2]]: ...
@overload
def projects(
    e1: type[E1], e2: type[E2], e3: type[E3], /
) -> Callable[[Projection[E1 | E2 | E3]], Projection[E1 | E2 | E3]]: ...
@overload
def projects(
    e1: type[E1], e2: type[E2], e3: type[E3], e4: type[E4], /
) -> Callable[[Projection[E1 | E2 | E3 | E4]], Projection[E1 | E2 | E3 | E4]]: ...
def projects(*event_classes: type[DomainEvent]) -> Callable[[Projection[Any]], Projection[Any]]:
    def register(projection: Projection[Any]) -> Projection[Any]:
        for event_class in event_classes:
            _PROJECTIONS[event_class] = projection
        return projection

    return register


def operations(event: DomainEvent) -> list[Op]:
    """What `event` means for the read models (nothing, for events no query shows)."""
    projection = _PROJECTIONS.get(type(event))
    return [] if projection is None else projection(event)


@dataclass
class Projector:
    read_models: ReadModelWriter
    commands: CommandExecutor

    def handle(self, envelope: EventEnvelope) -> None:
        event = envelope.event()
        # Marked seen even when no read model shows this event (or this code does not know
        # its type): a consistency token naming it must still be satisfied.
        changes = [] if event is None else operations(event)
        self.read_models.apply(changes, outbox_id=envelope.outbox_id)
        if isinstance(event, UserSignedUp):
            self._welcome(event.user_id)

    def _welcome(self, user_id: str) -> None:
        # Not part of signup itself, so signup can never fail because of it; issued here,
        # once (the coupon's issue key makes redeliveries no-ops), retried with the message
        # on error.
        coupon_id, _ = self.commands.execute(IssueWelcomeCoupon(user_id))
        if coupon_id:
            log.info("welcome coupon %s issued to %s", coupon_id, user_id)


def projection_lag_ms(envelope: EventEnvelope, now: datetime | None = None) -> float:
    """Milliseconds from the event's commit to `now` (default: this moment). The event's
    `occurred_at` is stamped inside the command's transaction, a few milliseconds before
    its commit; a clock running behind the database's gives 0, never a negative lag."""
    at = now or datetime.now(UTC)
    return max(0.0, (at - envelope.occurred_at) / timedelta(milliseconds=1))


@projects(UserSignedUp)
def _user_signed_up(e: UserSignedUp) -> list[Op]:
    return [ops.user(e.user_id, e.version, email=e.email, nickname=e.nickname, balances=(0, 0, 0))]


@projects(UserBalancesChanged)
def _user_balances_changed(e: UserBalancesChanged) -> list[Op]:
    balances = (e.available_points, e.escrowed_points, e.pending_points)
    return [ops.user(e.user_id, e.version, balances=balances)]


@projects(ProductRegistered)
def _product_registered(e: ProductRegistered) -> list[Op]:
    return [
        ops.product(
            e.product_id,
            e.version,
            like_count=0,
            name=e.name,
            brand=e.brand,
            category=e.category,
            face_value=e.face_value,
            created_at=e.occurred_at,
        )
    ]


@projects(ProductLiked, ProductUnliked)
def _product_likes(e: ProductLiked | ProductUnliked) -> list[Op]:
    return [ops.product(e.product_id, e.version, like_count=e.like_count)]


# An image's key is derived from its order (ImageRequested shows in no read model).
@projects(ImageDeleted)
def _image_deleted(e: ImageDeleted) -> list[Op]:
    return [ops.image_deleted(e.image_id, e.version)]


AskEvent = SellBidPlaced | SellBidCancelled | SellBidMatched | SellBidExpired
BidEvent = BuyBidPlaced | BuyBidCancelled | BuyBidMatched
_BID_STATUS: dict[type[DomainEvent], str] = {
    SellBidPlaced: "OPEN",
    SellBidCancelled: "CANCELLED",
    SellBidMatched: "MATCHED",
    SellBidExpired: "EXPIRED",
    BuyBidPlaced: "OPEN",
    BuyBidCancelled: "CANCELLED",
    BuyBidMatched: "MATCHED",
}


@projects(SellBidPlaced, SellBidCancelled, SellBidMatched, SellBidExpired)
def _ask(e: AskEvent) -> list[Op]:
    voucher: tuple[str | None, date | None] = (None, None)
    if isinstance(e, SellBidPlaced):
        voucher = (e.barcode_last4, e.expires_on)
    elif isinstance(e, SellBidExpired):
        voucher = (None, e.expires_on)
    return [_bid_op("ask", e, e.sell_bid_id, owner=e.seller_id, voucher=voucher)]


@projects(BuyBidPlaced, BuyBidCancelled, BuyBidMatched)
def _bid(e: BidEvent) -> list[Op]:
    return [_bid_op("bid", e, e.buy_bid_id, owner=e.buyer_id)]


def _bid_op(
    kind: str,
    e: AskEvent | BidEvent,
    bid_id: str,
    *,
    owner: str,
    voucher: tuple[str | None, date | None] = (None, None),
) -> Op:
    placed = isinstance(e, SellBidPlaced | BuyBidPlaced)
    return ops.bid(
        kind,
        bid_id,
        e.version,
        product_id=e.product_id,
        owner_id=owner,
        price=e.price,
        status=_BID_STATUS[type(e)],
        created_at=e.occurred_at if placed else None,
        voucher=voucher,
    )


OrderEvent = (
    OrderPlaced | OrderCompleted | OrderSettled | OrderDelivered | OrderInspectionFailed
    | OrderDisputed | OrderDisputeResolved | OrderRefunded
)  # fmt: skip


def _parties(e: OrderEvent) -> ops.OrderParties:
    return {"product_id": e.product_id, "buyer_id": e.buyer_id, "seller_id": e.seller_id}


def _order_now(
    e: OrderEvent,
    status: str,
    *,
    completed_at: datetime | None = None,
    settled_at: datetime | None = None,
    facts: ops.OrderFacts | None = None,
) -> Op:
    """The order as an event after its placement leaves it: the status and times it sets,
    and the facts it knows."""
    return ops.order(
        e.order_id,
        e.version,
        parties=_parties(e),
        status=status,
        completed_at=completed_at,
        settled_at=settled_at,
        facts=facts,
    )


@projects(OrderPlaced)
def _order_placed(e: OrderPlaced) -> list[Op]:
    return [
        ops.order(
            e.order_id,
            e.version,
            parties=_parties(e),
            terms={
                "price": e.price,
                "discount": e.discount,
                "paid": e.paid,
                "via": e.via,
                "image_id": e.image_id,
            },
            status=e.status,
            completed_at=None,
            settled_at=None,
            created_at=e.occurred_at,
            facts={
                "barcode_last4": e.barcode_last4,
                "expires_on": e.expires_on,
                "delivered_at": e.delivered_at,
            },
        )
    ]


# Events one change records together share the order's version (an inspection failure and
# its refund; a dispute's resolution and its refund or completion): each of them sets the
# same status and times, so whichever is applied last leaves the same state.


@projects(OrderDelivered)
def _order_delivered(e: OrderDelivered) -> list[Op]:
    return [_order_now(e, "PAID", facts={"delivered_at": e.delivered_at})]


@projects(OrderInspectionFailed)
def _order_inspection_failed(e: OrderInspectionFailed) -> list[Op]:
    return [_refunded(e, refunded_at=e.decided_at)]


@projects(OrderRefunded)
def _order_refunded(e: OrderRefunded) -> list[Op]:
    return [_refunded(e, refunded_at=e.refunded_at)]


def _refunded(e: OrderInspectionFailed | OrderRefunded, *, refunded_at: datetime) -> Op:
    return _order_now(e, "REFUNDED", facts={"refunded_at": refunded_at})


@projects(OrderDisputed)
def _order_disputed(e: OrderDisputed) -> list[Op]:
    return [
        _order_now(
            e, "DISPUTED", facts={"dispute_reason": e.reason, "dispute_opened_at": e.opened_at}
        )
    ]


@projects(OrderDisputeResolved)
def _order_dispute_resolved(e: OrderDisputeResolved) -> list[Op]:
    facts: ops.OrderFacts = {"dispute_decision": e.decision, "dispute_decided_at": e.decided_at}
    if e.decision == DisputeDecision.REFUND:
        facts["refunded_at"] = e.decided_at
        status, completed_at = "REFUNDED", None
    else:
        # Rejected: completed at the decision (the OrderCompleted recorded with it says so).
        status, completed_at = "COMPLETED", e.decided_at
    return [_order_now(e, status, completed_at=completed_at, facts=facts)]


@projects(OrderCompleted)
def _order_completed(e: OrderCompleted) -> list[Op]:
    return [_order_now(e, "COMPLETED", completed_at=e.completed_at)]


@projects(OrderSettled)
def _order_settled(e: OrderSettled) -> list[Op]:
    return [_order_now(e, "SETTLED", completed_at=e.completed_at, settled_at=e.settled_at)]


@projects(OrdersSettled)
def _orders_settled(e: OrdersSettled) -> list[Op]:
    # What _order_settled makes of each order's own OrderSettled.
    return [
        ops.order(
            order_id,
            version,
            parties={"product_id": product_id, "buyer_id": buyer_id, "seller_id": e.seller_id},
            status="SETTLED",
            completed_at=completed_at,
            settled_at=e.settled_at,
        )
        for order_id, version, product_id, buyer_id, completed_at in e.each_order()
    ]


@projects(CouponIssued)
def _coupon_issued(e: CouponIssued) -> list[Op]:
    return [
        ops.coupon(
            e.coupon_id,
            e.version,
            user_id=e.user_id,
            status="AVAILABLE",
            name=e.name,
            discount_amount=e.discount_amount,
            expires_at=e.expires_at,
            created_at=e.occurred_at,
        )
    ]


@projects(CouponUsed)
def _coupon_used(e: CouponUsed) -> list[Op]:
    return [ops.coupon(e.coupon_id, e.version, user_id=e.user_id, status="USED")]


@projects(CouponRestored)
def _coupon_restored(e: CouponRestored) -> list[Op]:
    return [ops.coupon(e.coupon_id, e.version, user_id=e.user_id, status="AVAILABLE")]


@projects(SettlementCompleted)
def _settlement_completed(e: SettlementCompleted) -> list[Op]:
    return [
        ops.settlement(
            e.settlement_id,
            seller_id=e.seller_id,
            business_date=e.business_date,
            order_count=e.order_count,
            gross=e.gross,
            fee=e.fee,
            net=e.net,
        )
    ]
