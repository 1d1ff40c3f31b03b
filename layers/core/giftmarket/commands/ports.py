"""The write side's ports: everything commands and jobs need from the outside world, as
abstract classes (the read side's are in `giftmarket/read_ports.py`).

Adapters (`giftmarket/adapters/`) implement them, and of the commands package they import
these alone (tests/unit/test_import_graph.py); test fakes (`tests/functional/fakes.py`)
subclass them too, so a port that gains a method fails every implementation lacking it.

- the unit of work and its repositories, ledger and idempotency store;
- what a handler's `CommandContext` carries: the clock, the password hasher, the image store;
- the images bucket as the cleanup job sees it, the event publisher, the sign-in guard;
- the errors these promise: `TransientConflict`, `CommandContention`, `IdempotencyKeyReused`.

The SQL adapters implement the repositories for MariaDB/MySQL; tests implement them in
memory. Every `get(..., lock=True)` takes a row lock for the rest of the unit of work
(SELECT ... FOR UPDATE on the primary), which is how concurrent commands on one row are
serialised. Aggregates that are added or fetched are tracked by the unit of work: at commit
it saves those that changed (guarded by the version they were loaded at) and writes their
events to the outbox in the same transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Protocol, Self

from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.errors import DomainError
from giftmarket.domain.image_cleanup import CleanupCandidate, CleanupRules, ImageUsage
from giftmarket.domain.images import Image
from giftmarket.domain.ledger import LedgerTransaction
from giftmarket.domain.orderbook import BuyBid, SellBid
from giftmarket.domain.orders import Order
from giftmarket.domain.settlement import SettleableOrder, Settlement
from giftmarket.domain.users import AdminRightsChange, SocialIdentity, User
from giftmarket.domain.vouchers import Fingerprint, Voucher
from giftmarket.messages import EventEnvelope


class UserRepository(ABC):
    @abstractmethod
    def add(self, user: User) -> None:
        """Insert a new user; raises EmailTaken when the email is already registered."""

    @abstractmethod
    def get(self, user_id: str, *, lock: bool = False) -> User | None: ...

    @abstractmethod
    def get_by_email(self, email: str) -> User | None: ...

    @abstractmethod
    def lock_many(self, user_ids: Sequence[str]) -> dict[str, User]:
        """Lock several users at once, always in id order, so two trades never deadlock."""

    @abstractmethod
    def set_password_hash(self, user_id: str, password_hash: str) -> None: ...

    @abstractmethod
    def list_admins(self) -> list[User]:
        """Every user with admin rights, by email."""


class IdentityRepository(ABC):
    """Which user each (provider, subject) of social sign-in signs in as."""

    @abstractmethod
    def get(self, provider: str, subject: str) -> SocialIdentity | None: ...

    @abstractmethod
    def add(self, identity: SocialIdentity) -> None:
        """Insert; raises TransientConflict when a concurrent sign-in of the same identity
        inserted it first (the retry then finds it)."""


class AdminRightsLog(ABC):
    """The record of every grant and revoke of admin rights; it only grows."""

    @abstractmethod
    def record(self, change: AdminRightsChange) -> None: ...

    @abstractmethod
    def history(self, limit: int) -> list[AdminRightsChange]:
        """The latest `limit` changes, newest first."""


class ProductRepository(ABC):
    @abstractmethod
    def add(self, product: Product) -> None: ...

    @abstractmethod
    def get(self, product_id: str, *, lock: bool = False) -> Product | None: ...

    @abstractmethod
    def is_liked(self, product_id: str, user_id: str) -> bool: ...

    @abstractmethod
    def add_like(self, product_id: str, user_id: str, now: datetime) -> None: ...

    @abstractmethod
    def remove_like(self, product_id: str, user_id: str) -> None: ...


class ImageRepository(ABC):
    @abstractmethod
    def add(self, image: Image) -> None: ...

    @abstractmethod
    def get(self, image_id: str, *, lock: bool = False) -> Image | None: ...

    # -- for the image cleanup ---------------------------------------------------------

    @abstractmethod
    def get_many(self, image_ids: Sequence[str], *, lock: bool = False) -> dict[str, Image]:
        """The images of those ids that exist; with `lock`, locked in id order."""

    @abstractmethod
    def usage(self, image_ids: Sequence[str]) -> dict[str, ImageUsage]:
        """What refers to each image (its ask, orders); images nothing refers to are absent."""

    @abstractmethod
    def cleanup_candidates(
        self, rules: CleanupRules, *, after: str, limit: int
    ) -> list[CleanupCandidate]:
        """Up to `limit` images the rules may delete, with ids greater than `after`, in id
        order. A superset is fine: each is decided again under its row lock."""

    @abstractmethod
    def existing_keys(self, s3_keys: Sequence[str]) -> set[str]:
        """Those of the keys that some image row (of any status) names."""


class SellBidRepository(ABC):
    @abstractmethod
    def add(self, ask: SellBid) -> None: ...

    @abstractmethod
    def get(self, sell_bid_id: str, *, lock: bool = False) -> SellBid | None: ...

    @abstractmethod
    def lowest_open_price(self, product_id: str) -> int | None: ...

    @abstractmethod
    def take_best(
        self, product_id: str, max_price: int, buyer_id: str, takeable_from: date
    ) -> SellBid | None:
        """Lock the lowest open ask priced at most `max_price`, oldest first among equals,
        not the buyer's own, its voucher valid on `takeable_from` or later; asks another
        transaction holds are skipped (SKIP LOCKED)."""

    @abstractmethod
    def lock_expiring(self, takeable_from: date, limit: int) -> list[SellBid]:
        """Lock up to `limit` open asks whose voucher is not valid on `takeable_from`
        (or has no known expiry), in id order; asks another transaction holds are skipped."""


class VoucherRegistry(ABC):
    """Every voucher barcode listed and not released, by fingerprint: the table's unique
    key on (kid, digest) makes a second listing of one barcode fail in the database."""

    @abstractmethod
    def register(
        self,
        voucher: Voucher,
        *,
        now: datetime,
        sell_bid_id: str | None = None,
        order_id: str | None = None,
    ) -> None:
        """Record every fingerprint of the voucher for its ask or its order; raises
        VoucherDuplicate when any of them is registered already (a concurrent
        registration of the same fingerprint waits for the first to commit or roll back)."""

    @abstractmethod
    def release(self, sell_bid_id: str) -> None:
        """Forget the voucher of an ask that was cancelled or expired: it may be listed
        again. A matched ask's voucher is never released; nor is a refunded one."""


class BuyBidRepository(ABC):
    @abstractmethod
    def add(self, bid: BuyBid) -> None: ...

    @abstractmethod
    def get(self, buy_bid_id: str, *, lock: bool = False) -> BuyBid | None: ...

    @abstractmethod
    def highest_open_price(self, product_id: str) -> int | None: ...

    @abstractmethod
    def take_best(self, product_id: str, min_price: int, seller_id: str) -> BuyBid | None:
        """Lock the highest open bid priced at least `min_price`, oldest first among equals,
        not the seller's own; bids another transaction holds are skipped (SKIP LOCKED)."""


class OrderRepository(ABC):
    @abstractmethod
    def add(self, order: Order) -> None: ...

    @abstractmethod
    def get(self, order_id: str, *, lock: bool = False) -> Order | None: ...

    @abstractmethod
    def lock_due_for_completion(self, delivered_before: datetime, limit: int) -> list[Order]:
        """Lock up to `limit` orders that were PAID and delivered at or before
        `delivered_before` when looked for, oldest delivery first. One may have changed
        before it was locked: callers check each again under its lock."""

    @abstractmethod
    def sellers_with_settleable(self, completed_before: datetime) -> list[str]:
        """The sellers with COMPLETED orders completed before the instant, in id order:
        one set-based read, no locks."""

    @abstractmethod
    def lock_settleable(self, seller_id: str, completed_before: datetime) -> list[Order]:
        """Lock the seller's COMPLETED orders completed before the instant, in id order."""

    @abstractmethod
    def lock_for_settlement(
        self, seller_id: str, completed_before: datetime
    ) -> list[SettleableOrder]:
        """`lock_settleable`, reading only what a settlement takes of each order."""

    @abstractmethod
    def mark_settled(
        self, orders: Sequence[SettleableOrder], settlement_id: str, now: datetime
    ) -> None:
        """Settle orders this unit of work locked with `lock_for_settlement`, as
        `Order.settle` does each (SETTLED by the settlement at `now`, one version up), in
        set-based statements. Their events are the settlement's, not written here: the
        caller has it announce them (`Settlement.announce_settled`)."""


class CouponRepository(ABC):
    @abstractmethod
    def add(self, coupon: Coupon) -> bool:
        """Insert; False (and nothing written) when its issue_key was already used."""

    @abstractmethod
    def get(self, coupon_id: str, *, lock: bool = False) -> Coupon | None: ...


class SettlementRepository(ABC):
    @abstractmethod
    def add(self, settlement: Settlement) -> None: ...

    @abstractmethod
    def find(self, seller_id: str, business_date: date) -> Settlement | None:
        """The seller's settlement of that business date, if there is one."""


class Ledger(ABC):
    @abstractmethod
    def record(self, transaction: LedgerTransaction) -> None:
        """Append the transaction's postings."""


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    headers: dict[str, str]


class TransientConflict(Exception):
    """The transaction lost a race it can simply run again (deadlock, lock wait timeout,
    a row changed under an unlocked read)."""


class CommandContention(Exception):
    """Still losing races after every retry; the caller should try again later."""


class IdempotencyKeyReused(Exception):
    """The key was used before with a different request."""


class IdempotencyStore(ABC):
    @abstractmethod
    def claim(
        self, scope: str, key: str, method: str, path: str, request_hash: str, now: datetime
    ) -> StoredResponse | None:
        """Reserve the key in this transaction, or return the response stored for it.

        A concurrent request with the same key waits until the first commits (then gets its
        response) or rolls back (then takes the key itself)."""

    @abstractmethod
    def complete(self, scope: str, key: str, response: StoredResponse) -> None: ...


@dataclass(frozen=True)
class Committed:
    """What a commit wrote to the outbox: the read side's read-your-writes target."""

    outbox_ids: tuple[str, ...]
    versions: dict[str, int]  # "aggregate_type:aggregate_id" -> version written


class UnitOfWork(ABC):
    users: UserRepository
    identities: IdentityRepository
    products: ProductRepository
    images: ImageRepository
    sell_bids: SellBidRepository
    buy_bids: BuyBidRepository
    orders: OrderRepository
    coupons: CouponRepository
    settlements: SettlementRepository
    vouchers: VoucherRegistry
    ledger: Ledger
    idempotency: IdempotencyStore
    admin_rights: AdminRightsLog

    @abstractmethod
    def __enter__(self) -> Self: ...

    @abstractmethod
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back whatever was not committed."""

    @abstractmethod
    def flush(self) -> Committed:
        """Save changed aggregates and write their events to the outbox, not yet committed.
        What is written after it (e.g. the idempotency record) still commits with it."""

    @abstractmethod
    def commit(self) -> Committed:
        """Flush what is pending and commit: all of it lands, or none of it."""


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


class SignInGuard(ABC):
    """Failed sign-ins counted per email and per source address (PRODUCT.md, "Sign-in
    abuse"); raises `giftmarket.domain.sign_in.TooManyAttempts` for a locked-out subject.

    An attempt counts as a failure from the moment it is admitted, before its password is
    checked, and is withdrawn once it did not fail on its credentials: guesses sent in
    parallel cannot slip past the limit while the first ones are still being verified.
    """

    @abstractmethod
    def admit(self, email: str, address: str | None) -> SignInGuard:
        """Count this attempt against the email and the address, or raise TooManyAttempts
        (counting nothing) if either is locked out. Returns the guard that counted it, the
        one to `withdraw` it from."""

    @abstractmethod
    def withdraw(self, email: str, address: str | None) -> None:
        """Take back an admitted attempt that did not fail on its credentials. Best effort:
        if the store cannot be reached, the attempt stays counted until its window ends."""


# -- what a handler's context carries (commands/context.py) ----------------------------------


class Clock(Protocol):
    """What tells the time: `utc_now`, or a test's clock that it moves itself."""

    def __call__(self) -> datetime: ...


def utc_now() -> datetime:
    """The clock of every part that is not given one: aware UTC."""
    return datetime.now(UTC)


class PasswordHasher(ABC):
    @abstractmethod
    def hash(self, password: str) -> str: ...

    @abstractmethod
    def verify(self, password_hash: str, password: str) -> bool: ...

    @abstractmethod
    def needs_rehash(self, password_hash: str) -> bool: ...

    @abstractmethod
    def dummy_hash(self) -> str:
        """A hash of no one's password, made with the current parameters."""


@dataclass(frozen=True)
class VerifiedIdentity:
    """What a verified ID token says: who the user is at the provider, and their email as
    the provider states it."""

    provider: str
    subject: str
    issued_at: int  # `iat`: with `subject`, names this token without keeping any of it
    email: str | None
    email_verified: bool
    trust_email: bool  # the provider is configured to be trusted for email
    name: str | None  # a display name from the token, if it carries one


class InvalidToken(DomainError):
    """A social sign-in's ID token that does not verify: forged, expired, for another
    audience or issuer, or signed with an algorithm we do not accept (401)."""

    code = "invalid_token"
    default_detail = "The ID token is not valid."


class ProviderUnavailable(Exception):
    """A provider's discovery document or keys cannot be fetched now: retry later (503)."""

    def __init__(self, provider: str, reason: str, retry_after_seconds: int = 1) -> None:
        self.provider = provider
        self.retry_after_seconds = retry_after_seconds
        super().__init__(f"{provider}: {reason}")


class IdTokenVerifier(ABC):
    """Checks an OpenID Connect ID token against its provider's published keys and claims.
    Raises NotFound("provider") for a provider not configured, InvalidToken for a token
    that does not verify, ProviderUnavailable when the keys cannot be had."""

    @abstractmethod
    def verify(self, provider: str, id_token: str, nonce: str | None) -> VerifiedIdentity: ...


class BarcodeFingerprinter(ABC):
    """The keyed hashes of a barcode (HMAC-SHA256), one per key the deployment knows, the
    current key's first; the keys come from Secrets Manager and are never stored beside the
    data."""

    @abstractmethod
    def fingerprints(self, barcode: str) -> tuple[Fingerprint, ...]: ...


@dataclass(frozen=True)
class StoredObject:
    size: int
    content_type: str | None


class ImageStore(ABC):
    """The images bucket as commands use it: presigned URLs, and what an upload left."""

    @abstractmethod
    def presign_upload(self, key: str, content_type: str) -> str: ...

    @abstractmethod
    def describe(self, key: str) -> StoredObject | None:
        """Size and content type of the stored object (S3 HEAD), None if there is none."""

    @abstractmethod
    def presign_download(self, key: str) -> str: ...

    @abstractmethod
    def close(self) -> None: ...


# -- the images bucket as the cleanup job sees it (jobs/images.py) ---------------------------

MAX_KEYS_PER_DELETE = 1000  # S3 DeleteObjects' limit


@dataclass(frozen=True)
class ListedObject:
    key: str
    last_modified: datetime


class ImageObjects(ABC):
    """The images bucket as the cleanup needs it."""

    @abstractmethod
    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        """Every object under the prefix, page after page (ListObjectsV2)."""

    @abstractmethod
    def delete_objects(self, keys: Sequence[str]) -> dict[str, str]:
        """Delete up to MAX_KEYS_PER_DELETE keys in one request. Returns the keys that were
        not deleted, each with S3's error code; a key with no object counts as deleted."""


# -- the outbox's way out (adapters/publisher.py) --------------------------------------------


class Publisher(ABC):
    @abstractmethod
    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        """Send the envelopes; returns the outbox ids the queue accepted. A refusal is not
        an exception: what is not returned stays unpublished and is sent again later."""

    def close(self) -> None:  # noqa: B027 - most publishers hold nothing to release
        """Release what the publisher holds (threads, connections)."""
