"""What command handlers are given besides the unit of work: time, ids, and two services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain.errors import DomainError, NotFound
from giftmarket.domain.ids import IdGenerator
from giftmarket.domain.users import User

T = TypeVar("T")


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...

    def dummy_hash(self) -> str:
        """A hash of no one's password, made with the current parameters."""


@dataclass(frozen=True)
class StoredObject:
    size: int
    content_type: str | None


class ImageStore(Protocol):
    def presign_upload(self, key: str, content_type: str) -> str: ...

    def describe(self, key: str) -> StoredObject | None:
        """Size and content type of the stored object (S3 HEAD), None if there is none."""

    def presign_download(self, key: str) -> str: ...

    def close(self) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CommandContext:
    ids: IdGenerator
    passwords: PasswordHasher
    images: ImageStore
    admin_emails: frozenset[str]
    welcome_coupon_amount: int
    clock: Callable[[], datetime] = utc_now


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
