"""SQL implementations of the command-side ports, on one session of the primary.

Rows map to the domain's dataclasses by field name and type (datetimes are stored as naive
UTC, enums by value), so no aggregate needs hand-written mapping code. Each unit of work has
an identity map: fetching a row twice gives the same object, so two changes to one aggregate
can never overwrite each other.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Row, Select, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from giftmarket.adapters import tables
from giftmarket.commands import ports
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.errors import EmailTaken
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.images import Image
from giftmarket.domain.ledger import LedgerTransaction
from giftmarket.domain.orderbook import BidStatus, BuyBid, SellBid
from giftmarket.domain.orders import Order
from giftmarket.domain.settlement import Settlement
from giftmarket.domain.users import User, normalize_email

A = TypeVar("A")


class StaleAggregate(Exception):
    """A row changed under us although the command held no lock on it; retry the command."""


def to_db_time(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def from_db_time(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _to_column(value: object) -> object:
    if isinstance(value, datetime):
        return to_db_time(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _base_type(hint: Any) -> Any:
    """`X | None` → X."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return options[0] if len(options) == 1 else hint
    return hint


class Mapper(Generic[A]):
    """Row ↔ aggregate by field name; `events` and other non-column fields are skipped.

    Its statements are built once, with bound parameters: building a SQLAlchemy statement
    costs more CPU than executing it, and a command runs a dozen of them.
    """

    def __init__(self, cls: type[A], table: Table) -> None:
        self.cls = cls
        self.table = table
        hints = typing.get_type_hints(cls)
        columns = set(table.columns.keys())
        self._fields = {
            f.name: _base_type(hints[f.name])
            for f in fields(cls)  # type: ignore[arg-type]
            if f.name in columns
        }
        self.insert = insert(table)
        self.by_id = select(table).where(table.c.id == bindparam("id"))
        self.by_id_locked = self.by_id.with_for_update()
        self.update = (
            update(table)
            .where(table.c.id == bindparam("k_id"), table.c.version == bindparam("k_version"))
            .values({name: bindparam(f"v_{name}") for name in self._fields if name != "id"})
        )

    def update_params(self, aggregate: A, loaded_version: int) -> dict[str, object]:
        row = self.to_row(aggregate)
        params: dict[str, object] = {f"v_{name}": value for name, value in row.items()}
        params.update(k_id=row["id"], k_version=loaded_version)
        return params

    def to_row(self, aggregate: A) -> dict[str, object]:
        return {name: _to_column(getattr(aggregate, name)) for name in self._fields}

    def from_row(self, row: Row[Any]) -> A:
        values: dict[str, object] = {}
        for name, kind in self._fields.items():
            value = row._mapping[name]
            if value is not None and kind is datetime:
                value = from_db_time(value)
            elif value is not None and isinstance(kind, type) and issubclass(kind, enum.Enum):
                value = kind(value)
            values[name] = value
        return self.cls(**values)


@dataclass
class _Seen:
    aggregate: Any
    mapper: Mapper[Any]
    loaded_version: int


class Tracker:
    """The unit of work's identity map and change tracking."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._seen: dict[tuple[str, str], _Seen] = {}

    def lookup(self, mapper: Mapper[A], aggregate_id: str) -> A | None:
        seen = self._seen.get((mapper.table.name, aggregate_id))
        return None if seen is None else seen.aggregate

    def track(self, mapper: Mapper[A], aggregate: A) -> A:
        """Remember an aggregate as loaded (or inserted) at its current version."""
        key = (mapper.table.name, getattr(aggregate, "id"))  # noqa: B009
        seen = self._seen.setdefault(key, _Seen(aggregate, mapper, getattr(aggregate, "version")))  # noqa: B009
        return seen.aggregate  # type: ignore[no-any-return]

    def check_fresh(self, mapper: Mapper[A], row: Row[Any]) -> None:
        """A locked re-read of an aggregate we already hold must show the version we hold."""
        seen = self._seen.get((mapper.table.name, row._mapping["id"]))
        if seen is not None and row._mapping["version"] != seen.loaded_version:
            raise StaleAggregate(f"{mapper.table.name} {row._mapping['id']} changed meanwhile")

    def save_changed(self) -> None:
        for seen in self._seen.values():
            version = getattr(seen.aggregate, "version")  # noqa: B009
            if version == seen.loaded_version:
                continue
            params = seen.mapper.update_params(seen.aggregate, seen.loaded_version)
            result = self.session.execute(seen.mapper.update, params)
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise StaleAggregate(f"{seen.mapper.table.name} {params['k_id']} changed meanwhile")
            seen.loaded_version = version

    def new_events(self) -> Iterator[DomainEvent]:
        for seen in self._seen.values():
            events: list[DomainEvent] = seen.aggregate.events
            yield from events
            events.clear()


class _SqlRepository(Generic[A]):
    mapper: Mapper[A]

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker
        self._session = tracker.session

    def add(self, aggregate: A) -> None:
        self._session.execute(self.mapper.insert, self.mapper.to_row(aggregate))
        self._tracker.track(self.mapper, aggregate)

    def _one(
        self, query: Select[Any], params: dict[str, object], *, lock: bool = False
    ) -> A | None:
        """The aggregate of the first row of `query` (which already carries its FOR UPDATE
        when `lock`), from the identity map when this unit of work has seen it."""
        row = self._session.execute(query, params).first()
        if row is None:
            return None
        if lock:
            self._tracker.check_fresh(self.mapper, row)
        known = self._tracker.lookup(self.mapper, row._mapping["id"])
        if known is not None:
            return known
        return self._tracker.track(self.mapper, self.mapper.from_row(row))

    def get(self, aggregate_id: str, *, lock: bool = False) -> A | None:
        known = self._tracker.lookup(self.mapper, aggregate_id)
        if known is not None and not lock:
            return known
        query = self.mapper.by_id_locked if lock else self.mapper.by_id
        return self._one(query, {"id": aggregate_id}, lock=lock)


def _mapper(cls: type[A], table: Table) -> Mapper[A]:
    return Mapper(cls, table)


class SqlUserRepository(_SqlRepository[User], ports.UserRepository):
    mapper = _mapper(User, tables.users)

    def add(self, aggregate: User) -> None:
        try:
            # A savepoint: the duplicate-email error must not spoil the outer transaction.
            with self._session.begin_nested():
                super().add(aggregate)
        except IntegrityError as exc:
            if "email" in str(exc.orig):
                raise EmailTaken() from exc
            raise

    _by_email = select(tables.users).where(tables.users.c.email == bindparam("email"))
    _lock_many = (
        select(tables.users)
        .where(tables.users.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(tables.users.c.id)
        .with_for_update()
    )

    def get_by_email(self, email: str) -> User | None:
        return self._one(self._by_email, {"email": normalize_email(email)})

    def lock_many(self, user_ids: Sequence[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for row in self._session.execute(self._lock_many, {"ids": sorted(set(user_ids))}):
            self._tracker.check_fresh(self.mapper, row)
            user = self._tracker.lookup(self.mapper, row.id) or self._tracker.track(
                self.mapper, self.mapper.from_row(row)
            )
            found[user.id] = user
        return found

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        self._session.execute(
            update(tables.users)
            .where(tables.users.c.id == user_id)
            .values(password_hash=password_hash)
        )


class SqlProductRepository(_SqlRepository[Product], ports.ProductRepository):
    mapper = _mapper(Product, tables.products)
    likes = tables.product_likes

    def is_liked(self, product_id: str, user_id: str) -> bool:
        query = select(self.likes.c.user_id).where(
            self.likes.c.product_id == product_id, self.likes.c.user_id == user_id
        )
        return self._session.execute(query).first() is not None

    def add_like(self, product_id: str, user_id: str, now: datetime) -> None:
        self._session.execute(
            insert(self.likes).values(
                product_id=product_id, user_id=user_id, created_at=to_db_time(now)
            )
        )

    def remove_like(self, product_id: str, user_id: str) -> None:
        self._session.execute(
            delete(self.likes).where(
                self.likes.c.product_id == product_id, self.likes.c.user_id == user_id
            )
        )


class SqlImageRepository(_SqlRepository[Image], ports.ImageRepository):
    mapper = _mapper(Image, tables.images)


_OPEN = BidStatus.OPEN.value
_asks, _bids = tables.sell_bids, tables.buy_bids


class SqlSellBidRepository(_SqlRepository[SellBid], ports.SellBidRepository):
    mapper = _mapper(SellBid, tables.sell_bids)
    _lowest = (
        select(_asks.c.price)
        .where(_asks.c.product_id == bindparam("product_id"), _asks.c.status == _OPEN)
        .order_by(_asks.c.price)
        .limit(1)
    )
    _best = (
        select(_asks)
        .where(
            _asks.c.product_id == bindparam("product_id"),
            _asks.c.status == _OPEN,
            _asks.c.price <= bindparam("max_price"),
            _asks.c.seller_id != bindparam("buyer_id"),
        )
        .order_by(_asks.c.price, _asks.c.created_at, _asks.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )

    def lowest_open_price(self, product_id: str) -> int | None:
        price = self._session.execute(self._lowest, {"product_id": product_id}).scalar()
        return None if price is None else int(price)

    def take_best(self, product_id: str, max_price: int, buyer_id: str) -> SellBid | None:
        params = {"product_id": product_id, "max_price": max_price, "buyer_id": buyer_id}
        return self._one(self._best, params, lock=True)


class SqlBuyBidRepository(_SqlRepository[BuyBid], ports.BuyBidRepository):
    mapper = _mapper(BuyBid, tables.buy_bids)
    _highest = (
        select(_bids.c.price)
        .where(_bids.c.product_id == bindparam("product_id"), _bids.c.status == _OPEN)
        .order_by(_bids.c.price.desc())
        .limit(1)
    )
    _best = (
        select(_bids)
        .where(
            _bids.c.product_id == bindparam("product_id"),
            _bids.c.status == _OPEN,
            _bids.c.price >= bindparam("min_price"),
            _bids.c.buyer_id != bindparam("seller_id"),
        )
        .order_by(_bids.c.price.desc(), _bids.c.created_at, _bids.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )

    def highest_open_price(self, product_id: str) -> int | None:
        price = self._session.execute(self._highest, {"product_id": product_id}).scalar()
        return None if price is None else int(price)

    def take_best(self, product_id: str, min_price: int, seller_id: str) -> BuyBid | None:
        params = {"product_id": product_id, "min_price": min_price, "seller_id": seller_id}
        return self._one(self._best, params, lock=True)


class SqlOrderRepository(_SqlRepository[Order], ports.OrderRepository):
    mapper = _mapper(Order, tables.orders)


class SqlCouponRepository(_SqlRepository[Coupon], ports.CouponRepository):
    mapper = _mapper(Coupon, tables.coupons)

    def add(self, aggregate: Coupon) -> bool:  # type: ignore[override]
        try:
            with self._session.begin_nested():
                super().add(aggregate)
        except IntegrityError as exc:
            if aggregate.issue_key is not None and "issue_key" in str(exc.orig):
                aggregate.events.clear()
                return False
            raise
        return True


class SqlSettlementRepository(_SqlRepository[Settlement], ports.SettlementRepository):
    mapper = _mapper(Settlement, tables.settlements)


class SqlLedger(ports.Ledger):
    def __init__(self, session: Session) -> None:
        self._session = session

    def record(self, transaction: LedgerTransaction) -> None:
        created_at = to_db_time(transaction.occurred_at)
        self._session.execute(
            insert(tables.ledger_entries),
            [
                {
                    "txn_id": transaction.id,
                    "account_owner": posting.account.owner,
                    "bucket": posting.account.bucket.value,
                    "amount": posting.amount,
                    "reason": transaction.reason.value,
                    "ref_type": transaction.ref_type.value,
                    "ref_id": transaction.ref_id,
                    "created_at": created_at,
                }
                for posting in transaction.postings
            ],
        )


class SqlIdempotencyStore(ports.IdempotencyStore):
    t = tables.idempotency_records

    def __init__(self, session: Session, ttl: timedelta) -> None:
        self._session = session
        self._ttl = ttl

    def claim(
        self, scope: str, key: str, method: str, path: str, request_hash: str, now: datetime
    ) -> ports.StoredResponse | None:
        placeholder = {
            "scope": scope,
            "idempotency_key": key,
            "request_method": method,
            "request_path": path[:255],
            "request_hash": request_hash,
            "response_status": 0,
            "response_headers": {},
            "response_body": "",
            "created_at": to_db_time(now),
            "expires_at": to_db_time(now + self._ttl),
        }
        for _ in range(2):
            try:
                # Blocks while another transaction holds the same key, until it ends.
                with self._session.begin_nested():
                    self._session.execute(insert(self.t).values(**placeholder))
                return None
            except IntegrityError:
                pass
            row = self._session.execute(
                select(self.t).where(self.t.c.scope == scope, self.t.c.idempotency_key == key)
            ).first()
            if row is None:
                continue  # the holder rolled back between our insert and our read
            if row.expires_at < to_db_time(now):
                self._session.execute(
                    delete(self.t).where(self.t.c.scope == scope, self.t.c.idempotency_key == key)
                )
                continue
            if (row.request_hash, row.request_method, row.request_path) != (
                request_hash,
                method,
                path[:255],
            ):
                raise ports.IdempotencyKeyReused()
            return ports.StoredResponse(
                row.response_status, row.response_body, dict(row.response_headers)
            )
        raise ports.IdempotencyKeyReused()

    def complete(self, scope: str, key: str, response: ports.StoredResponse) -> None:
        self._session.execute(
            update(self.t)
            .where(self.t.c.scope == scope, self.t.c.idempotency_key == key)
            .values(
                response_status=response.status,
                response_body=response.body,
                response_headers=response.headers,
            )
        )
