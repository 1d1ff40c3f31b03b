"""The user aggregate and its three balances.

Balances change only by applying ledger transactions (`User.apply`), so a user's balances
are by construction the sums of that user's postings.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Self

from giftmarket.domain import events
from giftmarket.domain.errors import Forbidden, InsufficientPoints, InvalidField
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.ledger import Bucket, LedgerReason, LedgerTransaction
from giftmarket.domain.validation import require_text

MAX_EMAIL_LENGTH = 254
MAX_NICKNAME_LENGTH = 30


MAX_ACTOR_LENGTH = 200
# OpenID Connect: `sub` is at most 255 ASCII characters, case-sensitive (Core 1.0, 2).
MAX_SUBJECT_LENGTH = 255


@dataclass(frozen=True)
class SocialIdentity:
    """An account at an OpenID provider, (provider, subject), and the user it signs in as."""

    provider: str
    subject: str
    user_id: str
    created_at: datetime

    def __post_init__(self) -> None:
        if not (0 < len(self.subject) <= MAX_SUBJECT_LENGTH) or not self.subject.isascii():
            raise InvalidField("sub", "the provider's subject is not an OpenID subject")


class AdminAction(StrEnum):
    GRANT = "grant"
    REVOKE = "revoke"


@dataclass(frozen=True)
class AdminRightsChange:
    """One grant or revoke of admin rights: who had them changed, by whom, when."""

    user_id: str
    email: str
    action: AdminAction
    actor: str
    recorded_at: datetime


class Balances(NamedTuple):
    available: int
    escrowed: int
    pending: int


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _email(email: str) -> str:
    email = require_text(normalize_email(email), "email", MAX_EMAIL_LENGTH)
    if "@" not in email:
        raise InvalidField("email", "email must be an email address.")
    return email


def is_email(value: str) -> bool:
    """Whether `value` would be taken as an account's email."""
    try:
        _email(value)
    except InvalidField:
        return False
    return True


def is_admin_email(email: str, admin_emails: Iterable[str]) -> bool:
    admins = {normalize_email(admin) for admin in admin_emails} - {""}
    return normalize_email(email) in admins


@dataclass(eq=False, kw_only=True)
class User:
    id: str
    # None for a social account whose provider gave no verified email.
    email: str | None
    nickname: str
    # None for a social-only account: it cannot sign in with a password.
    password_hash: str | None
    is_admin: bool
    available_points: int
    escrowed_points: int
    pending_points: int
    created_at: datetime
    updated_at: datetime
    version: int
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    @classmethod
    def sign_up(
        cls,
        *,
        user_id: str,
        email: str,
        nickname: str,
        password_hash: str,
        admin_emails: Iterable[str],
        now: datetime,
    ) -> Self:
        if not password_hash:
            raise ValueError("a user needs a password hash")
        return cls._new(user_id, _email(email), nickname, password_hash, admin_emails, now)

    @classmethod
    def sign_up_social(
        cls,
        *,
        user_id: str,
        verified_email: str | None,
        nickname: str,
        admin_emails: Iterable[str],
        now: datetime,
    ) -> Self:
        """A social-only account, with no password. Its email is kept only when the provider
        verified it, so nobody can claim an address they do not hold before its owner signs
        up with it."""
        email = None if verified_email is None else _email(verified_email)
        return cls._new(user_id, email, nickname, None, admin_emails, now)

    @classmethod
    def _new(
        cls,
        user_id: str,
        email: str | None,
        nickname: str,
        password_hash: str | None,
        admin_emails: Iterable[str],
        now: datetime,
    ) -> Self:
        user = cls(
            id=user_id,
            email=email,
            nickname=require_text(nickname, "nickname", MAX_NICKNAME_LENGTH),
            password_hash=password_hash,
            is_admin=email is not None and is_admin_email(email, admin_emails),
            available_points=0,
            escrowed_points=0,
            pending_points=0,
            created_at=now,
            updated_at=now,
            version=1,
        )
        # One event for both kinds of signup: the welcome coupon is issued from it.
        user.events.append(
            events.UserSignedUp(
                aggregate_id=user.id,
                version=user.version,
                occurred_at=now,
                user_id=user.id,
                email=user.email,
                nickname=user.nickname,
                is_admin=user.is_admin,
            )
        )
        return user

    def ensure_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden()

    def set_admin(self, is_admin: bool, *, actor: str, now: datetime) -> AdminRightsChange | None:
        """Grant (True) or revoke (False) admin rights, as an operator does; the record of
        the change, or None when the user already had (or lacked) them."""
        actor = require_text(actor, "actor", MAX_ACTOR_LENGTH)
        if self.email is None:  # operators name admins by email: one without cannot be one
            raise InvalidField("email", "an account without an email cannot be an admin")
        if self.is_admin == is_admin:
            return None
        self.is_admin = is_admin
        self.version += 1
        self.updated_at = now
        action = AdminAction.GRANT if is_admin else AdminAction.REVOKE
        return AdminRightsChange(self.id, self.email, action, actor, now)

    @property
    def balances(self) -> Balances:
        return Balances(self.available_points, self.escrowed_points, self.pending_points)

    def ensure_can_apply(self, transaction: LedgerTransaction) -> None:
        self._balances_after(transaction)

    def apply(self, transaction: LedgerTransaction) -> None:
        """Moves this user's share of the transaction into the balances; the caller
        persists the transaction's postings in the same database transaction."""
        after = self._balances_after(transaction)
        if after == self.balances:
            return
        self.available_points, self.escrowed_points, self.pending_points = after
        self.version += 1
        self.updated_at = transaction.occurred_at
        if transaction.reason is LedgerReason.CHARGE:
            self.events.append(
                events.PointsCharged(
                    aggregate_id=self.id,
                    version=self.version,
                    occurred_at=transaction.occurred_at,
                    user_id=self.id,
                    amount=transaction.changes_for(self.id)[Bucket.AVAILABLE],
                    available_points=self.available_points,
                    transaction_id=transaction.id,
                )
            )
        self.events.append(
            events.UserBalancesChanged(
                aggregate_id=self.id,
                version=self.version,
                occurred_at=transaction.occurred_at,
                user_id=self.id,
                available_points=self.available_points,
                escrowed_points=self.escrowed_points,
                pending_points=self.pending_points,
                reason=transaction.reason,
                transaction_id=transaction.id,
            )
        )

    def _balances_after(self, transaction: LedgerTransaction) -> Balances:
        changes = transaction.changes_for(self.id)
        after = Balances(
            available=self.available_points + changes.get(Bucket.AVAILABLE, 0),
            escrowed=self.escrowed_points + changes.get(Bucket.ESCROWED, 0),
            pending=self.pending_points + changes.get(Bucket.PENDING, 0),
        )
        for name, balance in after._asdict().items():
            if balance < 0:
                held = getattr(self.balances, name)
                raise InsufficientPoints(f"{name} points are {held}, needed {held - balance}.")
        return after
