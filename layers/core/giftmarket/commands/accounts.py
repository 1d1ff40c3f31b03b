"""Signing up, signing in, charging points, and the welcome coupon."""

from __future__ import annotations

from dataclasses import dataclass

from giftmarket.commands.context import CommandContext, InvalidCredentials, acting_user
from giftmarket.commands.executor import Command
from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain import marketplace
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.users import User


@dataclass(frozen=True)
class Account:
    user_id: str
    is_admin: bool


@dataclass(frozen=True)
class SignUp(Command[Account]):
    email: str
    password: str
    nickname: str


@dataclass(frozen=True)
class SignIn(Command[Account]):
    email: str
    password: str


def sign_up(uow: UnitOfWork, command: SignUp, ctx: CommandContext) -> Account:
    # The welcome coupon is not issued here: signup must not fail because of it. The read
    # side issues it from the UserSignedUp event (issue_welcome_coupon), with retries.
    user = User.sign_up(
        user_id=ctx.ids(),
        email=command.email,
        nickname=command.nickname,
        password_hash=ctx.passwords.hash(command.password),
        admin_emails=ctx.admin_emails,
        now=ctx.clock(),
    )
    uow.users.add(user)
    return Account(user.id, user.is_admin)


def sign_in(uow: UnitOfWork, command: SignIn, ctx: CommandContext) -> Account:
    user = uow.users.get_by_email(command.email)
    if user is None:
        # Verifying against a real hash makes "no such user" take as long as "wrong
        # password", so response times do not reveal which emails are registered.
        ctx.passwords.verify(ctx.passwords.dummy_hash(), command.password)
        raise InvalidCredentials()
    if not ctx.passwords.verify(user.password_hash, command.password):
        raise InvalidCredentials()
    if ctx.passwords.needs_rehash(user.password_hash):
        uow.users.set_password_hash(user.id, ctx.passwords.hash(command.password))
    return Account(user.id, user.is_admin)


@dataclass(frozen=True)
class Balance:
    available_points: int


@dataclass(frozen=True)
class ChargePoints(Command[Balance]):
    user_id: str
    amount: int


def charge_points(uow: UnitOfWork, command: ChargePoints, ctx: CommandContext) -> Balance:
    user = acting_user(uow, command.user_id, lock=True)
    transaction = marketplace.charge(user, command.amount, ctx.ids, ctx.clock())
    uow.ledger.record(transaction)
    return Balance(user.available_points)


@dataclass(frozen=True)
class IssueWelcomeCoupon(Command[str | None]):
    user_id: str


def issue_welcome_coupon(
    uow: UnitOfWork, command: IssueWelcomeCoupon, ctx: CommandContext
) -> str | None:
    """Issue the user's welcome coupon once; later calls (redeliveries) change nothing.
    Returns the new coupon's id, or None if it had been issued already (or is disabled)."""
    if ctx.welcome_coupon_amount <= 0 or uow.users.get(command.user_id) is None:
        return None
    coupon = Coupon.issue_welcome(
        coupon_id=ctx.ids(),
        user_id=command.user_id,
        discount_amount=ctx.welcome_coupon_amount,
        now=ctx.clock(),
    )
    return coupon.id if uow.coupons.add(coupon) else None
