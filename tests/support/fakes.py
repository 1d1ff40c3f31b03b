"""In-memory implementations of the command ports, for tests without servers.

`FakeUnitOfWork` behaves like `SqlAlchemyUnitOfWork` wherever a command can tell the
difference (tests/integration/test_repository_contract.py runs one suite against both):

- What is committed lives in a `FakeStore` as private snapshots. A unit of work reads
  copies of them, so an object it changes is invisible elsewhere until it commits; leaving
  the `with` block without committing discards everything it wrote.
- Each `with` block has an identity map: fetching an aggregate twice gives the same object.
- Rows written in a transaction (inserted by `add`, saved by `flush`) are what its queries
  see, as in SQL: an in-memory change that was not flushed does not move the order book.
- Saves are guarded by the version an aggregate was loaded at, locked reads check it too;
  losing either way ends the block with TransientConflict, as in SQL.
- Unique and foreign keys of the schema are enforced, so a handler that writes a row SQL
  would refuse fails here too.

Locks are no-ops: one thread cannot race itself (test_command_concurrency.py covers races).
"""

from __future__ import annotations

import copy
import dataclasses
import hmac
import itertools
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

from giftmarket.adapters.repositories import StaleAggregate
from giftmarket.commands import ports
from giftmarket.commands.context import CommandContext
from giftmarket.commands.executor import Command, CommandExecutor, CommandHandlers, handles
from giftmarket.commands.ports import (
    Clock,
    Committed,
    IdempotencyKeyReused,
    ImageStore,
    PasswordHasher,
    StoredObject,
    StoredResponse,
    TransientConflict,
    UnitOfWork,
)
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.errors import EmailTaken, VoucherDuplicate
from giftmarket.domain.events import DomainEvent, OrderSettled
from giftmarket.domain.ids import IdGenerator, encode_ulid
from giftmarket.domain.image_cleanup import (
    WITHDRAWN_ASK_STATUSES,
    CleanupCandidate,
    CleanupReason,
    CleanupRules,
    ImageUsage,
)
from giftmarket.domain.images import Image, ImageStatus
from giftmarket.domain.ledger import LedgerTransaction
from giftmarket.domain.orderbook import BidStatus, BuyBid, SellBid, best_ask, best_bid
from giftmarket.domain.orders import Order, OrderStatus
from giftmarket.domain.settlement import SettleableOrder, Settlement, business_date_of
from giftmarket.domain.sign_in import FailureWindow, SignInLimits, TooManyAttempts, lockout
from giftmarket.domain.users import AdminRightsChange, SocialIdentity, User, normalize_email
from giftmarket.domain.vouchers import Fingerprint, Voucher, VoucherRules

A = TypeVar("A")

ADMIN_EMAIL = "admin@giftmarket.local"
DEFAULT_NOW = datetime(2025, 3, 14, 3, 0, 0, 250_000, tzinfo=UTC)


class FakeIntegrityError(Exception):
    """A write that the database's unique or foreign keys would refuse."""


@dataclass(frozen=True)
class _TableSpec:
    name: str
    unique: tuple[tuple[str, ...], ...] = ()
    foreign_keys: tuple[tuple[str, str], ...] = ()  # (column, referenced table)


# The constraints of giftmarket.adapters.tables that a command could trip over.
_TABLES = {
    spec.name: spec
    for spec in (
        _TableSpec("users", unique=(("email",),)),
        _TableSpec("products"),
        _TableSpec("images", unique=(("s3_key",),), foreign_keys=(("owner_id", "users"),)),
        _TableSpec(
            "sell_bids",
            unique=(("image_id",),),
            foreign_keys=(
                ("product_id", "products"),
                ("seller_id", "users"),
                ("image_id", "images"),
            ),
        ),
        _TableSpec("buy_bids", foreign_keys=(("product_id", "products"), ("buyer_id", "users"))),
        _TableSpec("coupons", unique=(("issue_key",),), foreign_keys=(("user_id", "users"),)),
        _TableSpec(
            "settlements",
            unique=(("seller_id", "business_date"),),
            foreign_keys=(("seller_id", "users"),),
        ),
        _TableSpec(
            "orders",
            unique=(("sell_bid_id",), ("buy_bid_id",), ("coupon_id", "coupon_in_force")),
            foreign_keys=(
                ("product_id", "products"),
                ("buyer_id", "users"),
                ("seller_id", "users"),
                ("sell_bid_id", "sell_bids"),
                ("buy_bid_id", "buy_bids"),
                ("coupon_id", "coupons"),
                ("image_id", "images"),
                ("settlement_id", "settlements"),
            ),
        ),
    )
}


def _column(row: Any, column: str) -> object:
    if column == "coupon_in_force":  # the generated column of orders
        return 1 if row.refunded_at is None else None
    return getattr(row, column)


def _unique_value(columns: tuple[str, ...], row: Any) -> tuple[object, ...] | None:
    values = tuple(_column(row, column) for column in columns)
    if any(value is None for value in values):
        return None  # NULLs never collide, as in SQL
    if columns == ("email",):
        # The column's collation compares emails case-insensitively.
        return (normalize_email(str(values[0])),)
    return values


def _snapshot(aggregate: A) -> A:
    """What a row holds: a private copy without events, times in UTC (DATETIME(6))."""
    in_utc = {
        f.name: value.astimezone(UTC)
        for f in dataclasses.fields(aggregate)  # type: ignore[arg-type]
        if isinstance(value := getattr(aggregate, f.name), datetime)
    }
    return copy.deepcopy(dataclasses.replace(aggregate, events=[], **in_utc))  # type: ignore[type-var]


@dataclass(frozen=True)
class OutboxRecord:
    id: str
    event: DomainEvent


@dataclass(frozen=True)
class _IdempotencyRecord:
    method: str
    path: str
    request_hash: str
    response: StoredResponse
    expires_at: datetime


_Like = tuple[str, str]  # (product_id, user_id)


class FakeStore:
    """The fake database: only what has been committed."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {name: {} for name in _TABLES}
        self.likes: dict[_Like, datetime] = {}
        self.ledger: list[LedgerTransaction] = []
        self.outbox: list[OutboxRecord] = []
        self.idempotency: dict[tuple[str, str], _IdempotencyRecord] = {}
        self.admin_rights: list[AdminRightsChange] = []
        self.vouchers: dict[tuple[str, str], _VoucherEntry] = {}
        self.identities: dict[tuple[str, str], SocialIdentity] = {}
        self.commits = 0
        self._outbox_sequence = itertools.count(1)

    def next_outbox_id(self) -> str:
        # Same length and order as the SQL outbox's ULIDs, but predictable.
        return f"{next(self._outbox_sequence):026d}"

    @property
    def events(self) -> list[DomainEvent]:
        return [record.event for record in self.outbox]

    def events_of(self, committed: Committed) -> list[DomainEvent]:
        ids = set(committed.outbox_ids)
        return [record.event for record in self.outbox if record.id in ids]

    def state(self) -> dict[str, object]:
        """Everything committed, as plain values: equal states mean nothing was written."""
        return {
            "rows": {
                table: {
                    row_id: {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
                    for row_id, row in rows.items()
                }
                for table, rows in self.rows.items()
            },
            "likes": dict(self.likes),
            "ledger": list(self.ledger),
            "outbox": list(self.outbox),
            "idempotency": dict(self.idempotency),
            "admin_rights": list(self.admin_rights),
            "vouchers": dict(self.vouchers),
            "identities": dict(self.identities),
        }


@dataclass(frozen=True)
class _VoucherEntry:
    sell_bid_id: str | None
    order_id: str | None
    expires_on: date


@dataclass
class _Seen:
    table: str
    aggregate: Any
    loaded_version: int


_MISSING = object()


@dataclass
class _Transaction:
    """One `with` block: its own writes over the committed store, and its identity map."""

    store: FakeStore
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    likes: dict[_Like, datetime | None] = field(default_factory=dict)  # None: removed
    idempotency: dict[tuple[str, str], _IdempotencyRecord | None] = field(default_factory=dict)
    ledger: list[LedgerTransaction] = field(default_factory=list)
    outbox: list[OutboxRecord] = field(default_factory=list)
    admin_rights: list[AdminRightsChange] = field(default_factory=list)
    vouchers: dict[tuple[str, str], _VoucherEntry | None] = field(default_factory=dict)
    identities: dict[tuple[str, str], SocialIdentity] = field(default_factory=dict)
    seen: dict[tuple[str, str], _Seen] = field(default_factory=dict)

    # --- rows ----------------------------------------------------------------------------

    def row(self, table: str, row_id: str) -> Any | None:
        written = self.rows.get(table, {}).get(row_id, _MISSING)
        if written is not _MISSING:
            return written
        return self.store.rows[table].get(row_id)

    def all_rows(self, table: str) -> Iterator[Any]:
        written = self.rows.get(table, {})
        yield from written.values()
        # A copy: another thread's commit may add rows meanwhile (the settlement's workers
        # share one store; iterating the dict itself failed with "changed size").
        for row_id, row in list(self.store.rows[table].items()):
            if row_id not in written:
                yield row

    def write(self, table: str, row: Any, *, insert: bool) -> None:
        if insert and self.row(table, row.id) is not None:
            raise FakeIntegrityError(f"duplicate primary key {row.id} in {table}")
        self._check_constraints(table, row)
        self.rows.setdefault(table, {})[row.id] = row

    def _check_constraints(self, table: str, row: Any) -> None:
        spec = _TABLES[table]
        for column, referenced in spec.foreign_keys:
            value = getattr(row, column)
            if value is not None and self.row(referenced, value) is None:
                raise FakeIntegrityError(f"{table}.{column} = {value} is not in {referenced}")
        for columns in spec.unique:
            value = _unique_value(columns, row)
            if value is None:
                continue
            for other in self.all_rows(table):
                if other.id != row.id and _unique_value(columns, other) == value:
                    raise FakeIntegrityError(f"duplicate {table}.{'+'.join(columns)}: {value}")

    # --- identity map --------------------------------------------------------------------

    def lookup(self, table: str, row_id: str) -> Any | None:
        seen = self.seen.get((table, row_id))
        return None if seen is None else seen.aggregate

    def track(self, table: str, aggregate: A) -> A:
        seen = self.seen.setdefault(
            (table, getattr(aggregate, "id")),  # noqa: B009
            _Seen(table, aggregate, getattr(aggregate, "version")),  # noqa: B009
        )
        return seen.aggregate  # type: ignore[no-any-return]

    def load(self, table: str, row: Any, *, lock: bool) -> Any:
        """The aggregate of a row read in this transaction, from the identity map if seen."""
        seen = self.seen.get((table, row.id))
        if lock and seen is not None and row.version != seen.loaded_version:
            raise StaleAggregate(f"{table} {row.id} changed meanwhile")
        if seen is not None:
            return seen.aggregate
        return self.track(table, copy.deepcopy(row))

    # --- likes ---------------------------------------------------------------------------

    def is_liked(self, like: _Like) -> bool:
        if like in self.likes:
            return self.likes[like] is not None
        return like in self.store.likes

    # --- idempotency ---------------------------------------------------------------------

    def idempotency_record(self, key: tuple[str, str]) -> _IdempotencyRecord | None:
        if key in self.idempotency:
            return self.idempotency[key]
        return self.store.idempotency.get(key)

    # --- the voucher registry ------------------------------------------------------------

    def voucher_entries(self) -> Iterator[tuple[tuple[str, str], _VoucherEntry]]:
        for key, entry in self.vouchers.items():
            if entry is not None:
                yield key, entry
        for key, entry in list(self.store.vouchers.items()):
            if key not in self.vouchers:
                yield key, entry

    # --- commit --------------------------------------------------------------------------

    def apply_to_store(self) -> None:
        store = self.store
        for table, rows in self.rows.items():
            store.rows[table].update(rows)
        for like, liked_at in self.likes.items():
            if liked_at is None:
                store.likes.pop(like, None)
            else:
                store.likes[like] = liked_at
        for key, record in self.idempotency.items():
            if record is None:
                store.idempotency.pop(key, None)
            else:
                store.idempotency[key] = record
        store.ledger.extend(self.ledger)
        store.outbox.extend(self.outbox)
        store.admin_rights.extend(self.admin_rights)
        store.identities.update(self.identities)
        for key, entry in self.vouchers.items():
            if entry is None:
                store.vouchers.pop(key, None)
            else:
                store.vouchers[key] = entry
        store.commits += 1
        # Like a SQL session after COMMIT: a new transaction, the same identity map.
        self.rows, self.likes, self.idempotency, self.vouchers = {}, {}, {}, {}
        self.ledger, self.outbox, self.admin_rights, self.identities = [], [], [], {}


class _FakeTable(Generic[A]):
    """One table of the store, as a repository reaches it."""

    table: ClassVar[str]

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _tx(self) -> _Transaction:
        return self._uow.transaction

    def _insert(self, aggregate: A) -> None:
        self._tx.write(self.table, _snapshot(aggregate), insert=True)
        self._tx.track(self.table, aggregate)

    def get(self, aggregate_id: str, *, lock: bool = False) -> A | None:
        tx = self._tx
        known = tx.lookup(self.table, aggregate_id)
        if known is not None and not lock:
            return known  # type: ignore[no-any-return]
        row = tx.row(self.table, aggregate_id)
        if row is None:
            return None
        aggregate: A = tx.load(self.table, row, lock=lock)
        return aggregate

    def _take(self, row: A | None) -> A | None:
        """`row` (a stored snapshot) loaded and locked, as the SQL `take_best` does."""
        if row is None:
            return None
        return self._tx.load(self.table, row, lock=True)  # type: ignore[no-any-return]


class _FakeRepository(_FakeTable[A]):
    def add(self, aggregate: A) -> None:
        self._insert(aggregate)


class FakeUserRepository(_FakeRepository[User], ports.UserRepository):
    table = "users"

    def add(self, user: User) -> None:
        if user.email is not None and self._with_email(user.email) is not None:
            raise EmailTaken()
        super().add(user)

    def _with_email(self, email: str) -> User | None:
        wanted = normalize_email(email)
        return next(
            (
                row
                for row in self._tx.all_rows(self.table)
                if row.email is not None and normalize_email(row.email) == wanted
            ),
            None,
        )

    def get_by_email(self, email: str) -> User | None:
        row = self._with_email(email)
        return None if row is None else self._tx.load(self.table, row, lock=False)

    def lock_many(self, user_ids: Sequence[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for user_id in sorted(set(user_ids)):
            row = self._tx.row(self.table, user_id)
            if row is not None:
                found[user_id] = self._tx.load(self.table, row, lock=True)
        return found

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        # A direct UPDATE of the column, like the SQL one: the version stays, and an
        # aggregate already loaded in this unit of work keeps the hash it was loaded with.
        row = self._tx.row(self.table, user_id)
        if row is not None:
            updated = dataclasses.replace(row, password_hash=password_hash)
            self._tx.write(self.table, updated, insert=False)

    def list_admins(self) -> list[User]:
        admins = sorted(
            (row for row in self._tx.all_rows(self.table) if row.is_admin), key=lambda u: u.email
        )
        return [self._tx.load(self.table, row, lock=False) for row in admins]


class FakeProductRepository(_FakeRepository[Product], ports.ProductRepository):
    table = "products"

    def is_liked(self, product_id: str, user_id: str) -> bool:
        return self._tx.is_liked((product_id, user_id))

    def add_like(self, product_id: str, user_id: str, now: datetime) -> None:
        tx = self._tx
        if tx.row("products", product_id) is None or tx.row("users", user_id) is None:
            raise FakeIntegrityError(f"like of unknown product {product_id} or user {user_id}")
        if tx.is_liked((product_id, user_id)):
            raise FakeIntegrityError(f"{user_id} already likes {product_id}")
        tx.likes[(product_id, user_id)] = now.astimezone(UTC)

    def remove_like(self, product_id: str, user_id: str) -> None:
        tx = self._tx
        if tx.is_liked((product_id, user_id)):
            tx.likes[(product_id, user_id)] = None


class FakeImageRepository(_FakeRepository[Image], ports.ImageRepository):
    table = "images"

    def get_many(self, image_ids: Sequence[str], *, lock: bool = False) -> dict[str, Image]:
        found: dict[str, Image] = {}
        for image_id in sorted(set(image_ids)):
            image = self.get(image_id, lock=lock)
            if image is not None:
                found[image_id] = image
        return found

    def usage(self, image_ids: Sequence[str]) -> dict[str, ImageUsage]:
        wanted = set(image_ids)
        in_order = {o.image_id for o in self._tx.all_rows("orders") if o.image_id in wanted}
        found = {
            ask.image_id: ImageUsage(ask.status, ask.updated_at, ask.image_id in in_order)
            for ask in self._tx.all_rows("sell_bids")
            if ask.image_id in wanted
        }
        return {image_id: ImageUsage(in_order=True) for image_id in in_order} | found

    def cleanup_candidates(
        self, rules: CleanupRules, *, after: str, limit: int
    ) -> list[CleanupCandidate]:
        cancelled = {
            ask.image_id
            for ask in self._tx.all_rows("sell_bids")
            if ask.status in WITHDRAWN_ASK_STATUSES and ask.updated_at < rules.cancelled_before
        }
        found = []
        for image in self._tx.all_rows(self.table):
            reason = None
            if image.status is ImageStatus.PENDING and image.created_at < rules.pending_before:
                reason = CleanupReason.ABANDONED_UPLOAD
            elif image.status is ImageStatus.DELETING:
                reason = CleanupReason.UNFINISHED_DELETION
            elif image.status is ImageStatus.ATTACHED and image.id in cancelled:
                reason = CleanupReason.CANCELLED_ASK
            if reason is not None and image.id > after:
                found.append(CleanupCandidate(image.id, image.s3_key, reason))
        return sorted(found, key=lambda candidate: candidate.image_id)[:limit]

    def existing_keys(self, s3_keys: Sequence[str]) -> set[str]:
        wanted = set(s3_keys)
        return {image.s3_key for image in self._tx.all_rows(self.table) if image.s3_key in wanted}


class FakeSellBidRepository(_FakeRepository[SellBid], ports.SellBidRepository):
    table = "sell_bids"

    def _open(self, product_id: str) -> Iterator[SellBid]:
        for ask in self._tx.all_rows(self.table):
            if ask.product_id == product_id and ask.status is BidStatus.OPEN:
                yield ask

    def lowest_open_price(self, product_id: str) -> int | None:
        return min((ask.price for ask in self._open(product_id)), default=None)

    def take_best(
        self, product_id: str, max_price: int, buyer_id: str, takeable_from: date
    ) -> SellBid | None:
        return self._take(best_ask(self._open(product_id), buyer_id, max_price, takeable_from))

    def lock_expiring(self, takeable_from: date, limit: int) -> list[SellBid]:
        expiring = [
            ask
            for ask in self._tx.all_rows(self.table)
            if ask.status is BidStatus.OPEN
            and (ask.expires_on is None or ask.expires_on < takeable_from)
        ]
        return [
            self._tx.load(self.table, ask, lock=True)
            for ask in sorted(expiring, key=lambda a: a.id)[:limit]
        ]


class FakeVoucherRegistry(ports.VoucherRegistry):
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def register(
        self,
        voucher: Voucher,
        *,
        now: datetime,
        sell_bid_id: str | None = None,
        order_id: str | None = None,
    ) -> None:
        tx = self._uow.transaction
        known = dict(tx.voucher_entries())
        if (sell_bid_id is None) == (order_id is None):
            raise FakeIntegrityError("a voucher is registered for an ask or an order")
        if sell_bid_id is not None and tx.row("sell_bids", sell_bid_id) is None:
            raise FakeIntegrityError(f"sell bid {sell_bid_id} is not in sell_bids")
        if order_id is not None and tx.row("orders", order_id) is None:
            raise FakeIntegrityError(f"order {order_id} is not in orders")
        keys = [(f.kid, f.digest) for f in voucher.fingerprints]
        if any(key in known for key in keys):
            raise VoucherDuplicate()
        for key in keys:
            tx.vouchers[key] = _VoucherEntry(sell_bid_id, order_id, voucher.expires_on)

    def release(self, sell_bid_id: str) -> None:
        tx = self._uow.transaction
        for key, entry in list(tx.voucher_entries()):
            if entry.sell_bid_id == sell_bid_id:
                tx.vouchers[key] = None

    def registered(self) -> dict[tuple[str, str], _VoucherEntry]:
        """What is committed, for tests."""
        return dict(self._uow.store.vouchers)


class FakeBuyBidRepository(_FakeRepository[BuyBid], ports.BuyBidRepository):
    table = "buy_bids"

    def _open(self, product_id: str) -> Iterator[BuyBid]:
        for bid in self._tx.all_rows(self.table):
            if bid.product_id == product_id and bid.status is BidStatus.OPEN:
                yield bid

    def highest_open_price(self, product_id: str) -> int | None:
        return max((bid.price for bid in self._open(product_id)), default=None)

    def take_best(self, product_id: str, min_price: int, seller_id: str) -> BuyBid | None:
        return self._take(best_bid(self._open(product_id), seller_id, min_price))


class FakeOrderRepository(_FakeRepository[Order], ports.OrderRepository):
    table = "orders"

    def _locked(self, rows: list[Order]) -> list[Order]:
        return [self._tx.load(self.table, row, lock=True) for row in rows]

    def lock_due_for_completion(self, delivered_before: datetime, limit: int) -> list[Order]:
        due = [
            order
            for order in self._tx.all_rows(self.table)
            if order.status is OrderStatus.PAID
            and order.delivered_at is not None
            and order.delivered_at <= delivered_before
        ]
        return self._locked(sorted(due, key=lambda o: (o.delivered_at, o.id))[:limit])

    def _settleable(self, completed_before: datetime) -> Iterator[Order]:
        for order in self._tx.all_rows(self.table):
            if (
                order.status is OrderStatus.COMPLETED
                and order.completed_at is not None
                and order.completed_at < completed_before
            ):
                yield order

    def sellers_with_settleable(self, completed_before: datetime) -> list[str]:
        return sorted({order.seller_id for order in self._settleable(completed_before)})

    def lock_settleable(self, seller_id: str, completed_before: datetime) -> list[Order]:
        mine = [o for o in self._settleable(completed_before) if o.seller_id == seller_id]
        return self._locked(sorted(mine, key=lambda o: o.id))

    def lock_for_settlement(
        self, seller_id: str, completed_before: datetime
    ) -> list[SettleableOrder]:
        return [
            SettleableOrder(
                id=order.id,
                seller_id=order.seller_id,
                buyer_id=order.buyer_id,
                product_id=order.product_id,
                price=order.price,
                completed_at=order.completed_at,
                version=order.version,
            )
            for order in self.lock_settleable(seller_id, completed_before)
            if order.completed_at is not None
        ]

    def mark_settled(
        self, orders: Sequence[SettleableOrder], settlement_id: str, now: datetime
    ) -> None:
        # The domain's own rule, which the SQL repository's statements reproduce
        # (tests/integration/test_settlement_job.py compares the two).
        for sale in orders:
            order = self.get(sale.id, lock=True)
            if order is None or order.version != sale.version:
                raise StaleAggregate(f"order {sale.id} changed meanwhile")
            order.settle(settlement_id, now)
            # Announced by the settlement instead (Settlement.announce_settled), as the
            # SQL repository writes no OrderSettled either.
            settled = order.events.pop()
            assert isinstance(settled, OrderSettled), settled
        # Reported by the commit all the same, as SqlOrderRepository.mark_settled does.
        self._uow.wrote_versions({f"order:{sale.id}": sale.version + 1 for sale in orders})


class FakeCouponRepository(_FakeTable[Coupon], ports.CouponRepository):
    table = "coupons"

    def add(self, coupon: Coupon) -> bool:
        if coupon.issue_key is not None and any(
            row.issue_key == coupon.issue_key for row in self._tx.all_rows(self.table)
        ):
            coupon.events.clear()
            return False
        self._insert(coupon)
        return True


class FakeSettlementRepository(_FakeRepository[Settlement], ports.SettlementRepository):
    table = "settlements"

    def find(self, seller_id: str, business_date: date) -> Settlement | None:
        for row in self._tx.all_rows(self.table):
            if row.seller_id == seller_id and row.business_date == business_date:
                return self._tx.load(self.table, row, lock=False)  # type: ignore[no-any-return]
        return None


class FakeLedger(ports.Ledger):
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def record(self, transaction: LedgerTransaction) -> None:
        self._uow.transaction.ledger.append(transaction)

    @property
    def committed(self) -> list[LedgerTransaction]:
        return self._uow.store.ledger


class FakeIdentityRepository(ports.IdentityRepository):
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def get(self, provider: str, subject: str) -> SocialIdentity | None:
        tx = self._uow.transaction
        key = (provider, subject)
        return tx.identities.get(key) or tx.store.identities.get(key)

    def add(self, identity: SocialIdentity) -> None:
        tx = self._uow.transaction
        if tx.row("users", identity.user_id) is None:
            raise FakeIntegrityError(
                f"user_identities.user_id = {identity.user_id} is not in users"
            )
        if self.get(identity.provider, identity.subject) is not None:
            raise TransientConflict("the identity signed in concurrently")
        tx.identities[(identity.provider, identity.subject)] = identity


class FakeAdminRightsLog(ports.AdminRightsLog):
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def record(self, change: AdminRightsChange) -> None:
        tx = self._uow.transaction
        if tx.row("users", change.user_id) is None:
            raise FakeIntegrityError(
                f"admin_rights_changes.user_id = {change.user_id} is not in users"
            )
        tx.admin_rights.append(change)

    def history(self, limit: int) -> list[AdminRightsChange]:
        tx = self._uow.transaction
        return [*reversed(tx.store.admin_rights + tx.admin_rights)][:limit]


class FakeIdempotencyStore(ports.IdempotencyStore):
    """Claims of other, uncommitted units of work are not seen: nothing here can wait."""

    def __init__(self, uow: FakeUnitOfWork, ttl: timedelta) -> None:
        self._uow = uow
        self._ttl = ttl

    def claim(
        self, scope: str, key: str, method: str, path: str, request_hash: str, now: datetime
    ) -> StoredResponse | None:
        tx = self._uow.transaction
        record = tx.idempotency_record((scope, key))
        if record is not None and record.expires_at < now:
            record = None
        if record is None:
            tx.idempotency[(scope, key)] = _IdempotencyRecord(
                method=method,
                path=path[:255],
                request_hash=request_hash,
                response=StoredResponse(0, "", {}),
                expires_at=now + self._ttl,
            )
            return None
        if (record.request_hash, record.method, record.path) != (request_hash, method, path[:255]):
            raise IdempotencyKeyReused()
        stored = record.response
        return StoredResponse(stored.status, stored.body, dict(stored.headers))

    def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        tx = self._uow.transaction
        record = tx.idempotency_record((scope, key))
        if record is not None:
            stored = StoredResponse(response.status, response.body, dict(response.headers))
            tx.idempotency[(scope, key)] = dataclasses.replace(record, response=stored)


class FakeUnitOfWork(UnitOfWork):
    """Give several units of work one `store` to let them see each other's commits; one
    instance may also be used for many `with` blocks, each its own transaction."""

    def __init__(
        self, store: FakeStore | None = None, idempotency_ttl: timedelta = timedelta(hours=24)
    ) -> None:
        self.store = store if store is not None else FakeStore()
        self._transaction: _Transaction | None = None
        self._written = Committed((), {})
        self.users = FakeUserRepository(self)
        self.identities = FakeIdentityRepository(self)
        self.products = FakeProductRepository(self)
        self.images = FakeImageRepository(self)
        self.sell_bids = FakeSellBidRepository(self)
        self.buy_bids = FakeBuyBidRepository(self)
        self.orders = FakeOrderRepository(self)
        self.coupons = FakeCouponRepository(self)
        self.settlements = FakeSettlementRepository(self)
        self.vouchers = FakeVoucherRegistry(self)
        self.ledger = FakeLedger(self)
        self.idempotency = FakeIdempotencyStore(self, idempotency_ttl)
        self.admin_rights = FakeAdminRightsLog(self)

    @property
    def transaction(self) -> _Transaction:
        if self._transaction is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._transaction

    @property
    def committed_events(self) -> list[DomainEvent]:
        return self.store.events

    def __enter__(self) -> Self:
        if self._transaction is not None:
            raise RuntimeError("the unit of work is already in a `with` block")
        self._transaction = _Transaction(self.store)
        self._written = Committed((), {})
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._transaction = None  # whatever was not committed is gone
        if isinstance(exc, StaleAggregate):
            raise TransientConflict(str(exc)[:200]) from exc

    def wrote_versions(self, versions: dict[str, int]) -> None:
        """Aggregates a repository saved without events of their own, for the commit."""
        self._written = Committed(self._written.outbox_ids, {**self._written.versions, **versions})

    def flush(self) -> Committed:
        tx = self.transaction
        for seen in tx.seen.values():
            version = seen.aggregate.version
            if version == seen.loaded_version:
                continue
            current = tx.row(seen.table, seen.aggregate.id)
            if current is None or current.version != seen.loaded_version:
                raise StaleAggregate(f"{seen.table} {seen.aggregate.id} changed meanwhile")
            tx.write(seen.table, _snapshot(seen.aggregate), insert=False)
            seen.loaded_version = version
        records: list[OutboxRecord] = []
        for seen in tx.seen.values():
            events: list[DomainEvent] = seen.aggregate.events
            records.extend(OutboxRecord(self.store.next_outbox_id(), event) for event in events)
            events.clear()
        tx.outbox.extend(records)
        versions = dict(self._written.versions)
        for record in records:
            key = f"{record.event.aggregate_type}:{record.event.aggregate_id}"
            versions[key] = max(versions.get(key, 0), record.event.version)
        self._written = Committed(
            self._written.outbox_ids + tuple(record.id for record in records), versions
        )
        return self._written

    def commit(self) -> Committed:
        committed = self.flush()
        self.transaction.apply_to_store()
        return committed


class FakeImageStore(ImageStore):
    """S3 as a dict of key → object; presigned URLs are predictable strings."""

    def __init__(self) -> None:
        self.objects: dict[str, StoredObject] = {}

    def put(self, key: str, *, size: int = 2048, content_type: str | None = "image/png") -> None:
        """What a client's upload through the presigned PUT URL leaves in the bucket."""
        self.objects[key] = StoredObject(size=size, content_type=content_type)

    def presign_upload(self, key: str, content_type: str) -> str:
        return f"https://fake-s3/put/{key}?ct={content_type}"

    def describe(self, key: str) -> StoredObject | None:
        return self.objects.get(key)

    def presign_download(self, key: str) -> str:
        return f"https://fake-s3/get/{key}"

    def close(self) -> None:
        pass


class FakePasswords(PasswordHasher):
    """`hashed:<password>` for hashes it makes; any other `<scheme>:` prefix is an old
    scheme that still verifies but needs rehashing."""

    CURRENT = "hashed:"

    def __init__(self) -> None:
        self.verified: list[str] = []

    def hash(self, password: str) -> str:
        return f"{self.CURRENT}{password}"

    def verify(self, password_hash: str, password: str) -> bool:
        self.verified.append(password_hash)
        _, separator, hashed = password_hash.partition(":")
        return bool(separator) and hashed == password

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(self.CURRENT)

    def dummy_hash(self) -> str:
        # A NUL never reaches a password through JSON validation of 8–128 printable chars.
        return f"{self.CURRENT}\x00dummy\x00"


class FakeClock(Clock):
    def __init__(self, now: datetime = DEFAULT_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta = timedelta(seconds=1)) -> datetime:
        self.now += by
        return self.now


class SecondsClock:
    """A monotonic clock in seconds (time.monotonic's stand-in) that moves when told."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SequentialUlids(IdGenerator):
    """Valid ULIDs, increasing and the same on every run."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._counter = itertools.count(1)
        self._start_ms = start_ms

    def __call__(self) -> str:
        n = next(self._counter)
        return encode_ulid(self._start_ms + n, n)


@dataclass
class RecordedCommands:
    """A real command executor on a fresh in-memory store whose handlers only note the
    commands they are given: for a part that issues commands (the projector's welcome
    coupon) tested without what those commands do."""

    command_types: tuple[type[Command[Any]], ...]
    executed: list[Command[Any]] = field(default_factory=list)

    @property
    def executor(self) -> CommandExecutor:
        registrations = [handles(kind, self._record) for kind in self.command_types]
        return CommandExecutor(
            unit_of_work=FakeUnitOfWork,
            context=make_context(),
            handlers=CommandHandlers(*registrations),
        )

    def _record(self, uow: UnitOfWork, command: Command[Any], ctx: CommandContext) -> None:
        self.executed.append(command)


def make_context(
    *,
    clock: Callable[[], datetime] | None = None,
    ids: IdGenerator | None = None,
    passwords: FakePasswords | None = None,
    images: FakeImageStore | None = None,
    admin_emails: frozenset[str] = frozenset({ADMIN_EMAIL}),
    welcome_coupon_amount: int = 1000,
    barcodes: ports.BarcodeFingerprinter | None = None,
    vouchers: VoucherRules | None = None,
) -> CommandContext:
    return CommandContext(
        ids=ids or SequentialUlids(),
        passwords=passwords or FakePasswords(),
        images=images or FakeImageStore(),
        admin_emails=admin_emails,
        welcome_coupon_amount=welcome_coupon_amount,
        barcodes=barcodes or FakeBarcodes(),
        vouchers=vouchers or VoucherRules(),
        clock=clock or FakeClock(),
    )


class FakeBarcodes(ports.BarcodeFingerprinter):
    """Fingerprints under named keys, made with the real HMAC so digests look alike; pass
    several kids to stand for a rotation (the first is current)."""

    def __init__(self, *kids: str) -> None:
        self.kids = kids or ("test-1",)

    def fingerprints(self, barcode: str) -> tuple[Fingerprint, ...]:
        return tuple(
            Fingerprint(kid, hmac.new(kid.encode() * 8, barcode.encode(), "sha256").hexdigest())
            for kid in self.kids
        )


# From a random start: tests on a kept stack's database meet the barcodes of earlier runs
# (a sold voucher stays registered), which a fixed start would repeat.
_barcodes = itertools.count(10**12 + secrets.randbelow(8 * 10**12))


def fresh_barcode() -> str:
    """A barcode no other test in this process used, nor (but by a 1 in 10^9 chance) one of
    an earlier run (13 digits, like an EAN)."""
    return str(next(_barcodes))


def valid_until(now: datetime, days: int = 30) -> date:
    """A voucher expiry `days` after `now`'s date in Korea: listable and buyable."""
    return business_date_of(now) + timedelta(days=days)


class FakeSignInGuard(ports.SignInGuard):
    """The sign-in abuse counters in a dict on the given clock, by subject in clear
    (`email:<normalized email>`, `address:<address>`), with the domain's window rules."""

    def __init__(
        self,
        limits: SignInLimits | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.limits = limits or SignInLimits(per_email=5, per_address=50, window_seconds=900)
        self.clock = clock or FakeClock()
        self.windows: dict[str, FailureWindow] = {}

    def _subjects(self, email: str, address: str | None) -> list[tuple[str, int]]:
        subjects = [(f"email:{normalize_email(email)}", self.limits.per_email)]
        if address:
            subjects.append((f"address:{address}", self.limits.per_address))
        return subjects

    def admit(self, email: str, address: str | None) -> ports.SignInGuard:
        now, subjects = self.clock(), self._subjects(email, address)
        wait = lockout(((self.windows.get(s), limit) for s, limit in subjects), now)
        if wait is not None:
            raise TooManyAttempts(wait)
        for subject, _ in subjects:
            window = self.windows.get(subject)
            self.windows[subject] = (
                window.counted(now, self.limits.window)
                if window is not None
                else FailureWindow.opened(now, self.limits.window)
            )
        return self

    def withdraw(self, email: str, address: str | None) -> None:
        now = self.clock()
        for subject, _ in self._subjects(email, address):
            window = self.windows.get(subject)
            left = window.uncounted(now) if window is not None else None
            if left is None:
                self.windows.pop(subject, None)
            else:
                self.windows[subject] = left

    def failures(self, subject: str) -> int:
        """Failures counted for `email:...` or `address:...` in its open window."""
        window = self.windows.get(subject)
        return window.failures if window is not None and window.is_open(self.clock()) else 0
