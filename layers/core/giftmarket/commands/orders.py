"""After the match: a buyer's dispute, and the admins' inspection and dispute decisions.

An admin decision locks the order first, then both parties in id order, then the coupon the
order used: the order of locks a trade takes (its bid, the users, the coupon), so a refund
and a trade can wait for each other but never deadlock. Two admins deciding one order
queue on its row lock; the second finds it decided and is refused (409 order_not_pending).
"""

from __future__ import annotations

from dataclasses import dataclass

from giftmarket.commands.context import CommandContext, acting_user, found
from giftmarket.commands.executor import Command
from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain import marketplace
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.orders import DisputeDecision, InspectionResult, Order
from giftmarket.domain.users import User


@dataclass(frozen=True)
class OrderState:
    order_id: str
    status: str


@dataclass(frozen=True)
class OpenDispute(Command[OrderState]):
    buyer_id: str
    order_id: str
    reason: str


def open_dispute(uow: UnitOfWork, command: OpenDispute, ctx: CommandContext) -> OrderState:
    order = found(uow.orders.get(command.order_id, lock=True), "order")
    order.open_dispute(command.buyer_id, command.reason, ctx.clock())
    return OrderState(order.id, order.status)


@dataclass(frozen=True)
class DecideInspection(Command[OrderState]):
    admin_id: str
    order_id: str
    result: InspectionResult
    reason: str | None = None


def decide_inspection(
    uow: UnitOfWork, command: DecideInspection, ctx: CommandContext
) -> OrderState:
    acting_user(uow, command.admin_id).ensure_admin()
    order = found(uow.orders.get(command.order_id, lock=True), "order")
    parties = _lock_parties(uow, order)
    refund = marketplace.decide_inspection(
        order,
        *parties,
        by_admin=command.admin_id,
        passed=command.result is InspectionResult.PASS,
        reason=command.reason,
        ids=ctx.ids,
        now=ctx.clock(),
    )
    if refund is not None:
        uow.ledger.record(refund)
    return OrderState(order.id, order.status)


@dataclass(frozen=True)
class ResolveDispute(Command[OrderState]):
    admin_id: str
    order_id: str
    decision: DisputeDecision
    note: str | None = None


def resolve_dispute(uow: UnitOfWork, command: ResolveDispute, ctx: CommandContext) -> OrderState:
    acting_user(uow, command.admin_id).ensure_admin()
    order = found(uow.orders.get(command.order_id, lock=True), "order")
    parties = _lock_parties(uow, order)
    refund = marketplace.resolve_dispute(
        order,
        *parties,
        by_admin=command.admin_id,
        decision=command.decision,
        note=command.note,
        ids=ctx.ids,
        now=ctx.clock(),
    )
    if refund is not None:
        uow.ledger.record(refund)
    return OrderState(order.id, order.status)


def _lock_parties(uow: UnitOfWork, order: Order) -> tuple[User, User, Coupon | None]:
    users = uow.users.lock_many([order.buyer_id, order.seller_id])
    coupon = None
    if order.coupon_id is not None:
        coupon = found(uow.coupons.get(order.coupon_id, lock=True), "coupon")
    return users[order.buyer_id], users[order.seller_id], coupon
