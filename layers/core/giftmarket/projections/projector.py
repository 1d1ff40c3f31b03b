"""Event → read-model updates. Every handler is idempotent and order-tolerant (the read-model
writes are version-guarded), and errors propagate: the batch processor reports the record
as failed, SQS redelivers it, and after the queue's maxReceiveCount it lands in the DLQ."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from giftmarket.adapters.read_models import ReadModels, user_key
from giftmarket.commands import accounts
from giftmarket.commands.executor import CommandExecutor
from giftmarket.messages import EventEnvelope

log = logging.getLogger(__name__)

Projection = Callable[["Projector", EventEnvelope], None]
_PROJECTIONS: dict[str, Projection] = {}


def projects(event_type: str) -> Callable[[Projection], Projection]:
    def register(projection: Projection) -> Projection:
        _PROJECTIONS[event_type] = projection
        return projection

    return register


@dataclass
class Projector:
    read_models: ReadModels
    commands: CommandExecutor

    def handle(self, envelope: EventEnvelope) -> None:
        projection = _PROJECTIONS.get(envelope.event_type)
        if projection is not None:
            projection(self, envelope)
        # Marked even when no read model shows this event: a consistency token naming it
        # must still be satisfied.
        self.read_models.mark_seen(envelope.outbox_id)


@projects("UserSignedUp")
def _user_signed_up(projector: Projector, event: EventEnvelope) -> None:
    p = event.payload
    projector.read_models.apply(
        user_key(event.aggregate_id),
        version_field="_v:balances",
        version=event.version,
        once={"email": p["email"], "nickname": p["nickname"]},
        fields={"available_points": 0, "escrowed_points": 0, "pending_points": 0},
    )
    # Not part of signup itself, so signup can never fail because of it; issued here, once
    # (the coupon's issue key makes redeliveries no-ops), retried with the message on error.
    command = accounts.IssueWelcomeCoupon(event.aggregate_id)
    coupon_id, _ = projector.commands.execute(
        lambda uow, ctx: accounts.issue_welcome_coupon(uow, command, ctx)
    )
    if coupon_id:
        log.info("welcome coupon %s issued to %s", coupon_id, event.aggregate_id)


@projects("UserBalancesChanged")
def _user_balances_changed(projector: Projector, event: EventEnvelope) -> None:
    p = event.payload
    projector.read_models.apply(
        user_key(event.aggregate_id),
        version_field="_v:balances",
        version=event.version,
        fields={
            "available_points": p["available_points"],
            "escrowed_points": p["escrowed_points"],
            "pending_points": p["pending_points"],
        },
    )
