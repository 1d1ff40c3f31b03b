"""Signing up, signing in, charging points, and the welcome coupon."""

from __future__ import annotations

from dataclasses import dataclass

from giftmarket.commands.context import CommandContext, InvalidCredentials, acting_user
from giftmarket.commands.executor import Command
from giftmarket.commands.ports import (
    InvalidToken,
    TransientConflict,
    UnitOfWork,
    VerifiedIdentity,
)
from giftmarket.domain import marketplace
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.errors import EmailTaken
from giftmarket.domain.users import MAX_NICKNAME_LENGTH, SocialIdentity, User, is_email


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
    if user is None or user.password_hash is None:
        # No such user, or a social-only one (no password): verifying against a real hash
        # makes either take as long as a wrong password, so response times do not reveal
        # which emails are registered, nor how.
        ctx.passwords.verify(ctx.passwords.dummy_hash(), command.password)
        raise InvalidCredentials()
    if not ctx.passwords.verify(user.password_hash, command.password):
        raise InvalidCredentials()
    if ctx.passwords.needs_rehash(user.password_hash):
        uow.users.set_password_hash(user.id, ctx.passwords.hash(command.password))
    return Account(user.id, user.is_admin)


@dataclass(frozen=True)
class SocialAccount:
    user_id: str
    is_admin: bool
    created: bool  # False: signed in to an account that existed (or was linked now)


@dataclass(frozen=True)
class SocialSignIn(Command[SocialAccount]):
    identity: VerifiedIdentity  # from a verified ID token
    nickname: str | None  # the one asked for; else the token's name, else a default


def social_sign_in(uow: UnitOfWork, command: SocialSignIn, ctx: CommandContext) -> SocialAccount:
    """Sign in as the account of (provider, subject), creating it on the first sign-in.

    An email that belongs to another account links to it only when the provider verified
    the email and is trusted for email; otherwise it is a conflict, never a takeover."""
    identity = command.identity
    known = uow.identities.get(identity.provider, identity.subject)
    if known is not None:
        user = acting_user(uow, known.user_id)
        return SocialAccount(user.id, user.is_admin, created=False)
    now = ctx.clock()
    email = identity.email if identity.email is not None and is_email(identity.email) else None
    owner = None if email is None else uow.users.get_by_email(email)
    if owner is not None:
        if not (identity.email_verified and identity.trust_email):
            raise EmailTaken()
        uow.identities.add(SocialIdentity(identity.provider, identity.subject, owner.id, now))
        return SocialAccount(owner.id, owner.is_admin, created=False)
    user = User.sign_up_social(
        user_id=ctx.ids(),
        verified_email=email if identity.email_verified else None,
        nickname=_nickname(command),
        admin_emails=ctx.admin_emails,
        now=now,
    )
    try:
        uow.users.add(user)
    except EmailTaken as exc:
        # Someone signed up with this email since it was looked up: decide again.
        raise TransientConflict("the email was registered concurrently") from exc
    uow.identities.add(SocialIdentity(identity.provider, identity.subject, user.id, now))
    return SocialAccount(user.id, user.is_admin, created=True)


def _nickname(command: SocialSignIn) -> str:
    if command.nickname is not None:
        return command.nickname
    printable = "".join(c for c in command.identity.name or "" if c.isprintable())
    name = " ".join(printable.split())[:MAX_NICKNAME_LENGTH].strip()
    return name or f"{command.identity.provider} user"


@dataclass(frozen=True)
class FindSocialAccount(Command[Account]):
    """Who (provider, subject) signs in as: a replayed social sign-in checks it again."""

    provider: str
    subject: str


def find_social_account(
    uow: UnitOfWork, command: FindSocialAccount, ctx: CommandContext
) -> Account:
    known = uow.identities.get(command.provider, command.subject)
    user = None if known is None else uow.users.get(known.user_id)
    if user is None:
        raise InvalidToken()
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
