"""What command handlers are given besides the unit of work: time, ids, the services (their
ports are in `commands/ports.py`), the voucher rules, and the helpers every handler shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from giftmarket.commands.ports import (
    BarcodeFingerprinter,
    Clock,
    ImageStore,
    PasswordHasher,
    UnitOfWork,
    utc_now,
)
from giftmarket.domain.errors import DomainError, NotFound
from giftmarket.domain.ids import IdGenerator
from giftmarket.domain.users import User
from giftmarket.domain.vouchers import VoucherRules

T = TypeVar("T")


@dataclass(frozen=True)
class CommandContext:
    ids: IdGenerator
    passwords: PasswordHasher
    images: ImageStore
    admin_emails: frozenset[str]
    welcome_coupon_amount: int
    barcodes: BarcodeFingerprinter
    vouchers: VoucherRules
    clock: Clock = utc_now


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    default_detail = "The email or password is not correct."


class Unauthenticated(DomainError):
    code = "unauthenticated"
    default_detail = "Sign in again: the account behind this token does not exist."


def acting_user(uow: UnitOfWork, user_id: str, *, lock: bool = False) -> User:
    """The user a request acts for; a valid token for a vanished account is a 401."""
    user = uow.users.get(user_id, lock=lock)
    if user is None:
        raise Unauthenticated()
    return user


def found(value: T | None, resource: str) -> T:
    """The value, or NotFound: missing and not-yours look the same from outside."""
    if value is None:
        raise NotFound(resource)
    return value
