"""SQL implementations of the command-side ports, on one session of the primary.

Rows map to the domain's dataclasses by field name and type (datetimes are stored as naive
UTC, enums by value), so no aggregate needs hand-written mapping code. Each unit of work has
an identity map: fetching a row twice gives the same object, so two changes to one aggregate
can never overwrite each other.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    Select,
    Table,
    Update,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from giftmarket.adapters import tables
from giftmarket.commands import ports
from giftmarket.domain.catalog import Product
from giftmarket.domain.coupons import Coupon
from giftmarket.domain.errors import EmailTaken, VoucherDuplicate
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.image_cleanup import (
    WITHDRAWN_ASK_STATUSES,
    CleanupCandidate,
    CleanupReason,
    CleanupRules,
    ImageUsage,
)
from giftmarket.domain.images import Image, ImageStatus
from giftmarket.domain.ledger import LedgerTransaction
from giftmarket.domain.orderbook import BidStatus, BuyBid, SellBid
from giftmarket.domain.orders import Order, OrderStatus
from giftmarket.domain.settlement import SettleableOrder, Settlement
from giftmarket.domain.users import (
    AdminAction,
    AdminRightsChange,
    SocialIdentity,
    User,
    normalize_email,
)
from giftmarket.domain.vouchers import Voucher

A = TypeVar("A")


class StaleAggregate(Exception):
    """A row changed under us although the command held no lock on it; retry the command."""


def to_db_time(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value.replace(tzinfo=None)
    return value.astimezone(UTC).replace(tzinfo=None)


def from_db_time(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _to_column(value: object) -> object:
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
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


def _from_column(kind: Any) -> Callable[[Any], object] | None:
    """How a field's column value becomes the field's value (None: as it is)."""
    if kind is datetime:
        return from_db_time
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind
    return None


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
        self._from_column: list[tuple[str, Callable[[Any], object] | None]] = [
            (name, _from_column(kind)) for name, kind in self._fields.items()
        ]
        self.insert = insert(table)
        self.by_id = select(table).where(table.c.id == bindparam("id"))
        self.by_id_locked = self.by_id.with_for_update()
        self.update = (
            update(table)
            .where(table.c.id == bindparam("k_id"), table.c.version == bindparam("k_version"))
            .values({name: bindparam(f"v_{name}") for name in self._fields if name != "id"})
        )
        self._updates_of_many: dict[tuple[str, ...], Update] = {}
        self._updates_of_each: dict[tuple[int, tuple[str, ...]], Update] = {}

    def update_many(self, columns: tuple[str, ...]) -> Update:
        """UPDATE of `columns` on the rows with the given ids still at the given version."""
        statement = self._updates_of_many.get(columns)
        if statement is None:
            statement = self._updates_of_many[columns] = (
                update(self.table)
                .where(
                    self.table.c.id.in_(bindparam("k_ids", expanding=True)),
                    self.table.c.version == bindparam("k_version"),
                )
                .values({name: bindparam(f"v_{name}") for name in columns})
            )
        return statement

    def update_each(self, rows: int, columns: tuple[str, ...]) -> Update:
        """One UPDATE of `rows` rows, each to values of its own: row i is `r{i}_id`, still
        at version `r{i}_loaded`, and gets `r{i}_{column}` for each of `columns`."""
        statement = self._updates_of_each.get((rows, columns))
        if statement is None:
            table = self.table
            ids = [bindparam(f"r{i}_id", type_=table.c.id.type) for i in range(rows)]

            def each(name: str, column: str) -> Any:
                kind = table.c[column].type
                return case(
                    *(
                        (table.c.id == ids[i], bindparam(f"r{i}_{name}", type_=kind))
                        for i in range(rows)
                    )
                )

            statement = self._updates_of_each[(rows, columns)] = (
                update(table)
                .where(table.c.id.in_(ids), table.c.version == each("loaded", "version"))
                .values({name: each(name, name) for name in columns})
            )
        return statement

    def to_row(self, aggregate: A) -> dict[str, object]:
        return {name: _to_column(getattr(aggregate, name)) for name in self._fields}

    def from_row(self, row: Row[Any]) -> A:
        mapping = row._mapping
        values: dict[str, object] = {}
        for name, convert in self._from_column:
            value = mapping[name]
            values[name] = value if value is None or convert is None else convert(value)
        return self.cls(**values)


# At most this many rows in one UPDATE by CASE: each row's values are chosen among the
# statement's, so its cost grows with the square of their number, and each size is a
# statement of its own (Mapper.update_each keeps them).
_SAVED_TOGETHER = 8


@dataclass
class _Seen:
    aggregate: Any
    mapper: Mapper[Any]
    loaded_version: int
    saved: Mapping[Any, Any]  # its row as loaded or last saved


class Tracker:
    """The unit of work's identity map and change tracking."""

    def __init__(self, session: Connection) -> None:
        self.session = session
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._written = ports.Committed((), {})

    def lookup(self, mapper: Mapper[A], aggregate_id: str) -> A | None:
        seen = self._seen.get((mapper.table.name, aggregate_id))
        return None if seen is None else seen.aggregate

    def track(self, mapper: Mapper[A], aggregate: A, row: Mapping[Any, Any] | None = None) -> A:
        """Remember an aggregate as loaded (from `row`, if given) or inserted, at its
        current version."""
        key = (mapper.table.name, getattr(aggregate, "id"))  # noqa: B009
        seen = self._seen.get(key)
        if seen is None:
            saved = mapper.to_row(aggregate) if row is None else row
            version = getattr(aggregate, "version")  # noqa: B009
            seen = self._seen[key] = _Seen(aggregate, mapper, version, saved)
        return seen.aggregate  # type: ignore[no-any-return]

    def check_fresh(self, mapper: Mapper[A], row: Row[Any]) -> None:
        """A locked re-read of an aggregate we already hold must show the version we hold."""
        seen = self._seen.get((mapper.table.name, row._mapping["id"]))
        if seen is not None and row._mapping["version"] != seen.loaded_version:
            raise StaleAggregate(f"{mapper.table.name} {row._mapping['id']} changed meanwhile")

    def save_changed(self) -> None:
        """UPDATE what changed, each row guarded by the version it was loaded at.

        Aggregates of one table that made the same change from the same version (the
        orders of a settlement) are saved by one UPDATE ... WHERE id IN (...): a round trip
        per row would cost more than everything else such a unit of work does. The others
        of one table are saved together too, each row's values chosen by its id
        (`_save_each`): every round trip is a fifth of a millisecond here."""
        alike: dict[tuple[Any, ...], list[tuple[_Seen, dict[str, object]]]] = {}
        for seen in self._seen.values():
            if getattr(seen.aggregate, "version") == seen.loaded_version:  # noqa: B009
                continue
            row = seen.mapper.to_row(seen.aggregate)
            change = tuple((k, v) for k, v in row.items() if v != seen.saved.get(k))
            key: tuple[Any, ...] = (seen.mapper.table.name, seen.loaded_version, change)
            try:
                hash(key)
            except TypeError:  # a value that cannot be compared this way: saved on its own
                key = (id(seen),)
            alike.setdefault(key, []).append((seen, row))
        # Rows of one table that each changed in its own way (a buy-now's buyer and seller)
        # are saved by one UPDATE, not one each, where the first of them was.
        alone: dict[str, list[tuple[_Seen, dict[str, object]]]] = {}
        for batch in alike.values():
            if len(batch) == 1:
                alone.setdefault(batch[0][0].mapper.table.name, []).append(batch[0])
        for key, batch in alike.items():
            first, row = batch[0]
            together = alone.get(first.mapper.table.name, []) if len(batch) == 1 else []
            if len(together) > 1:
                if first is together[0][0]:
                    for start in range(0, len(together), _SAVED_TOGETHER):
                        self._save_each(together[start : start + _SAVED_TOGETHER])
                continue
            if len(batch) == 1:
                statement = first.mapper.update
                params: dict[str, object] = {f"v_{k}": v for k, v in row.items()}
                params.update(k_id=row["id"], k_version=first.loaded_version)
            else:
                changed: dict[str, object] = dict(key[2])
                statement = first.mapper.update_many(tuple(changed))
                params = {f"v_{k}": v for k, v in changed.items()}
                params.update(k_ids=[r["id"] for _, r in batch], k_version=first.loaded_version)
            self._save(batch, statement, params)

    def _save_each(self, batch: list[tuple[_Seen, dict[str, object]]]) -> None:
        """Rows of one table, each changed its own way, saved by one UPDATE: each row's
        changed columns (those any of them changed) by CASE on its id, each guarded by the
        version it was loaded at."""
        mapper = batch[0][0].mapper
        columns = tuple(
            sorted({k for seen, row in batch for k, v in row.items() if v != seen.saved.get(k)})
        )
        params: dict[str, object] = {}
        for i, (seen, row) in enumerate(batch):
            params[f"r{i}_id"] = row["id"]
            params[f"r{i}_loaded"] = seen.loaded_version
            params.update({f"r{i}_{k}": row[k] for k in columns})
        self._save(batch, mapper.update_each(len(batch), columns), params)

    def _save(
        self,
        batch: list[tuple[_Seen, dict[str, object]]],
        statement: Update,
        params: dict[str, object],
    ) -> None:
        """Run the UPDATE of `batch`; every row must have matched its loaded version."""
        result = self.session.execute(statement, params)
        if result.rowcount != len(batch):
            ids = ", ".join(str(row["id"]) for _, row in batch)
            table = batch[0][0].mapper.table.name
            raise StaleAggregate(f"{table} {ids} changed meanwhile")
        for seen, saved in batch:
            seen.loaded_version = getattr(seen.aggregate, "version")  # noqa: B009
            seen.saved = saved

    def wrote_events(self, outbox_ids: Sequence[str], versions: Mapping[str, int]) -> None:
        """Outbox rows a repository wrote itself, set-based, for the commit to report."""
        self._written = ports.Committed(
            self._written.outbox_ids + tuple(outbox_ids), {**self._written.versions, **versions}
        )

    def take_written(self) -> ports.Committed:
        written, self._written = self._written, ports.Committed((), {})
        return written

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

    def _aggregate(self, row: Row[Any], *, lock: bool) -> A:
        """The aggregate of `row` (read with FOR UPDATE when `lock`), from the identity map
        when this unit of work has seen it."""
        if lock:
            self._tracker.check_fresh(self.mapper, row)
        known = self._tracker.lookup(self.mapper, row._mapping["id"])
        if known is not None:
            return known
        return self._tracker.track(self.mapper, self.mapper.from_row(row), row._mapping)

    def _one(
        self, query: Select[Any], params: dict[str, object], *, lock: bool = False
    ) -> A | None:
        """The aggregate of the first row of `query` (which already carries its FOR UPDATE
        when `lock`)."""
        row = self._session.execute(query, params).first()
        return None if row is None else self._aggregate(row, lock=lock)

    def get(self, aggregate_id: str, *, lock: bool = False) -> A | None:
        known = self._tracker.lookup(self.mapper, aggregate_id)
        if known is not None and not lock:
            return known
        query = self.mapper.by_id_locked if lock else self.mapper.by_id
        return self._one(query, {"id": aggregate_id}, lock=lock)

    def _all(self, query: Select[Any], params: dict[str, object], *, lock: bool = True) -> list[A]:
        """The aggregates of every row of `query` (a locking one unless `lock` is False)."""
        return [self._aggregate(row, lock=lock) for row in self._session.execute(query, params)]


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
        users = self._all(self._lock_many, {"ids": sorted(set(user_ids))})
        return {user.id: user for user in users}

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        self._session.execute(
            update(tables.users)
            .where(tables.users.c.id == user_id)
            .values(password_hash=password_hash)
        )

    _admins = select(tables.users).where(tables.users.c.is_admin).order_by(tables.users.c.email)

    def list_admins(self) -> list[User]:
        return self._all(self._admins, {}, lock=False)


class SqlIdentityRepository(ports.IdentityRepository):
    t = tables.user_identities

    def __init__(self, session: Connection) -> None:
        self._session = session

    def get(self, provider: str, subject: str) -> SocialIdentity | None:
        row = self._session.execute(
            select(self.t).where(self.t.c.provider == provider, self.t.c.subject == subject)
        ).first()
        if row is None:
            return None
        return SocialIdentity(row.provider, row.subject, row.user_id, from_db_time(row.created_at))

    def add(self, identity: SocialIdentity) -> None:
        values = {
            "provider": identity.provider,
            "subject": identity.subject,
            "user_id": identity.user_id,
            "created_at": to_db_time(identity.created_at),
        }
        try:
            self._session.execute(insert(self.t).values(values))
        except IntegrityError as exc:
            if _DUPLICATE_KEY in str(exc.orig):
                raise ports.TransientConflict("the identity signed in concurrently") from exc
            raise


class SqlAdminRightsLog(ports.AdminRightsLog):
    t = tables.admin_rights_changes

    def __init__(self, session: Connection) -> None:
        self._session = session

    def record(self, change: AdminRightsChange) -> None:
        self._session.execute(
            insert(self.t).values(
                user_id=change.user_id,
                email=change.email,
                action=change.action.value,
                actor=change.actor,
                recorded_at=to_db_time(change.recorded_at),
            )
        )

    def history(self, limit: int) -> list[AdminRightsChange]:
        rows = self._session.execute(select(self.t).order_by(self.t.c.id.desc()).limit(limit)).all()
        return [
            AdminRightsChange(
                row.user_id,
                row.email,
                AdminAction(row.action),
                row.actor,
                from_db_time(row.recorded_at),
            )
            for row in rows
        ]


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

    _i, _s, _o = tables.images, tables.sell_bids, tables.orders
    _many = select(_i).where(_i.c.id.in_(bindparam("ids", expanding=True))).order_by(_i.c.id)
    _many_locked = _many.with_for_update()
    _asks_of = select(_s.c.image_id, _s.c.status, _s.c.updated_at).where(
        _s.c.image_id.in_(bindparam("ids", expanding=True))
    )
    _ordered = (
        select(_o.c.image_id).where(_o.c.image_id.in_(bindparam("ids", expanding=True))).distinct()
    )
    _keys = select(_i.c.s3_key).where(_i.c.s3_key.in_(bindparam("keys", expanding=True)))
    _candidate_columns = (_i.c.id, _i.c.s3_key)
    # One query per rule, each on an index: images (status, created_at) for the first two,
    # the cancelled asks joined to their image by the unique sell_bids.image_id.
    _abandoned = (
        select(*_candidate_columns)
        .where(
            _i.c.status == ImageStatus.PENDING.value,
            _i.c.created_at < bindparam("pending_before"),
            _i.c.id > bindparam("after"),
        )
        .order_by(_i.c.id)
        .limit(bindparam("limit"))
    )
    _unfinished = (
        select(*_candidate_columns)
        .where(_i.c.status == ImageStatus.DELETING.value, _i.c.id > bindparam("after"))
        .order_by(_i.c.id)
        .limit(bindparam("limit"))
    )
    # Cancelled and expired asks alike (the guard, `reason_to_delete`, names which).
    _of_cancelled_asks = (
        select(*_candidate_columns)
        .select_from(_s.join(_i, _i.c.id == _s.c.image_id))
        .where(
            _s.c.status.in_(sorted(status.value for status in WITHDRAWN_ASK_STATUSES)),
            _s.c.updated_at < bindparam("cancelled_before"),
            _i.c.status == ImageStatus.ATTACHED.value,
            _i.c.id > bindparam("after"),
        )
        .order_by(_i.c.id)
        .limit(bindparam("limit"))
    )

    def get_many(self, image_ids: Sequence[str], *, lock: bool = False) -> dict[str, Image]:
        if not image_ids:
            return {}
        query = self._many_locked if lock else self._many
        images = self._all(query, {"ids": sorted(set(image_ids))}, lock=lock)
        return {image.id: image for image in images}

    def usage(self, image_ids: Sequence[str]) -> dict[str, ImageUsage]:
        if not image_ids:
            return {}
        ids = {"ids": sorted(set(image_ids))}
        in_order = set(self._session.execute(self._ordered, ids).scalars())
        found: dict[str, ImageUsage] = {}
        for image_id, status, updated_at in self._session.execute(self._asks_of, ids):
            found[image_id] = ImageUsage(
                ask_status=BidStatus(status),
                ask_changed_at=from_db_time(updated_at),
                in_order=image_id in in_order,
            )
        for image_id in in_order - found.keys():
            found[image_id] = ImageUsage(in_order=True)
        return found

    def cleanup_candidates(
        self, rules: CleanupRules, *, after: str, limit: int
    ) -> list[CleanupCandidate]:
        params = {
            "after": after,
            "limit": limit,
            "pending_before": to_db_time(rules.pending_before),
            "cancelled_before": to_db_time(rules.cancelled_before),
        }
        found = [
            CleanupCandidate(image_id, s3_key, reason)
            for query, reason in (
                (self._abandoned, CleanupReason.ABANDONED_UPLOAD),
                (self._unfinished, CleanupReason.UNFINISHED_DELETION),
                (self._of_cancelled_asks, CleanupReason.CANCELLED_ASK),
            )
            for image_id, s3_key in self._session.execute(query, params)
        ]
        return sorted(found, key=lambda candidate: candidate.image_id)[:limit]

    def existing_keys(self, s3_keys: Sequence[str]) -> set[str]:
        if not s3_keys:
            return set()
        return set(self._session.execute(self._keys, {"keys": list(set(s3_keys))}).scalars())


_OPEN = BidStatus.OPEN.value
_asks, _bids = tables.sell_bids, tables.buy_bids

B = TypeVar("B", SellBid, BuyBid)


class _BookRepository(_SqlRepository[B]):
    """How a trade takes a bid of the book without waiting and without locking others'.

    One statement first: the best bid found by a subquery (a plain read: no locks), locked
    by primary key with SKIP LOCKED if it is still open. A bid is locked alone that way. A
    plain `... ORDER BY ... LIMIT 1 FOR UPDATE SKIP LOCKED` on the book's index is not: on
    MariaDB it kept a lock on the first index record past the range it read, the best bid
    of the next product, which a trade there then skipped, answering no_matching_bid with a
    matching bid open (tests/reliability/test_book_locks.py).

    When that finds nothing (the best bid was just taken, or is held, or there is none),
    the best candidates are read and locked one at a time, in the book's order, until one
    is still open and free.
    """

    _CANDIDATES = 4  # bids looked at first; then 4 times as many, and so on
    _best: Select[Any]  # the ids of the best bids first, `limit` of them
    _take_best: Select[Any]
    _lock_open_by_id: Select[Any]
    _lock_open_by_ids: Select[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = cls.mapper.table
        cls._take_best = (
            select(table)
            .where(table.c.id == cls._best.limit(1).scalar_subquery(), table.c.status == _OPEN)
            .with_for_update(skip_locked=True)
        )
        cls._lock_open_by_id = (
            select(table)
            .where(table.c.id == bindparam("id"), table.c.status == _OPEN)
            .with_for_update(skip_locked=True)
        )
        cls._lock_open_by_ids = (
            select(table)
            .where(table.c.id.in_(bindparam("ids", expanding=True)), table.c.status == _OPEN)
            .order_by(table.c.id)
            .with_for_update(skip_locked=True)
        )

    def _take_first(self, params: dict[str, object]) -> B | None:
        taken = self._one(self._take_best, params, lock=True)
        if taken is not None:
            return taken
        tried: set[str] = set()
        limit = self._CANDIDATES
        while True:
            ids = list(self._session.execute(self._best, {**params, "limit": limit}).scalars())
            for bid_id in ids:
                if bid_id in tried:
                    continue
                tried.add(bid_id)
                taken = self._one(self._lock_open_by_id, {"id": bid_id}, lock=True)
                if taken is not None:
                    return taken
            if len(ids) < limit:
                return None  # every open bid in range was taken or is held by another
            limit *= 4

    def _lock_open(self, ids: Sequence[str]) -> list[B]:
        """Those of the rows that are still open, locked by primary key; rows another
        transaction holds are skipped."""
        if not ids:
            return []
        return self._all(self._lock_open_by_ids, {"ids": sorted(set(ids))})


class SqlSellBidRepository(_BookRepository[SellBid], ports.SellBidRepository):
    mapper = _mapper(SellBid, tables.sell_bids)
    _lowest = (
        select(_asks.c.price)
        .where(_asks.c.product_id == bindparam("product_id"), _asks.c.status == _OPEN)
        .order_by(_asks.c.price)
        .limit(1)
    )
    _best = (
        select(_asks.c.id)
        .where(
            _asks.c.product_id == bindparam("product_id"),
            _asks.c.status == _OPEN,
            _asks.c.price <= bindparam("max_price"),
            _asks.c.seller_id != bindparam("buyer_id"),
            _asks.c.expires_on >= bindparam("takeable_from"),
        )
        .order_by(_asks.c.price, _asks.c.created_at, _asks.c.id)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
    )
    # On (status, expires_on): NULL (an ask from before vouchers) sorts first.
    _expiring = (
        select(_asks.c.id)
        .where(
            _asks.c.status == _OPEN,
            or_(_asks.c.expires_on.is_(None), _asks.c.expires_on < bindparam("takeable_from")),
        )
        .order_by(_asks.c.id)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
        .with_hint(_asks, "FORCE INDEX (ix_sell_bids_status_expires_on)", "mysql")
    )

    def lowest_open_price(self, product_id: str) -> int | None:
        price = self._session.execute(self._lowest, {"product_id": product_id}).scalar()
        return None if price is None else int(price)

    def take_best(
        self, product_id: str, max_price: int, buyer_id: str, takeable_from: date
    ) -> SellBid | None:
        params = {
            "product_id": product_id,
            "max_price": max_price,
            "buyer_id": buyer_id,
            "takeable_from": takeable_from,
        }
        return self._take_first(params)

    def lock_expiring(self, takeable_from: date, limit: int) -> list[SellBid]:
        params = {"takeable_from": takeable_from, "limit": limit}
        ids = list(self._session.execute(self._expiring, params).scalars())
        return self._lock_open(ids)


class SqlVoucherRegistry(ports.VoucherRegistry):
    _vouchers = tables.voucher_registry
    _insert = insert(_vouchers)
    _release = delete(_vouchers).where(_vouchers.c.sell_bid_id == bindparam("sell_bid_id"))

    def __init__(self, session: Connection) -> None:
        self._session = session

    def register(
        self,
        voucher: Voucher,
        *,
        now: datetime,
        sell_bid_id: str | None = None,
        order_id: str | None = None,
    ) -> None:
        rows = [
            {
                "kid": fingerprint.kid,
                "digest": fingerprint.digest,
                "sell_bid_id": sell_bid_id,
                "order_id": order_id,
                "expires_on": voucher.expires_on,
                "registered_at": to_db_time(now),
            }
            # Always in one order: two listings of one voucher lock its rows alike.
            for fingerprint in sorted(voucher.fingerprints, key=lambda f: (f.kid, f.digest))
        ]
        try:
            # No savepoint: a duplicate ends the command, and with it the transaction.
            self._session.execute(self._insert, rows)
        except IntegrityError as exc:
            if _DUPLICATE_KEY in str(exc.orig):
                raise VoucherDuplicate() from exc
            raise

    def release(self, sell_bid_id: str) -> None:
        self._session.execute(self._release, {"sell_bid_id": sell_bid_id})


_DUPLICATE_KEY = "1062"  # ER_DUP_ENTRY


class SqlBuyBidRepository(_BookRepository[BuyBid], ports.BuyBidRepository):
    mapper = _mapper(BuyBid, tables.buy_bids)
    _highest = (
        select(_bids.c.price)
        .where(_bids.c.product_id == bindparam("product_id"), _bids.c.status == _OPEN)
        .order_by(_bids.c.price.desc())
        .limit(1)
    )
    _best = (
        select(_bids.c.id)
        .where(
            _bids.c.product_id == bindparam("product_id"),
            _bids.c.status == _OPEN,
            _bids.c.price >= bindparam("min_price"),
            _bids.c.buyer_id != bindparam("seller_id"),
        )
        .order_by(_bids.c.price.desc(), _bids.c.created_at, _bids.c.id)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
    )

    def highest_open_price(self, product_id: str) -> int | None:
        price = self._session.execute(self._highest, {"product_id": product_id}).scalar()
        return None if price is None else int(price)

    def take_best(self, product_id: str, min_price: int, seller_id: str) -> BuyBid | None:
        params = {"product_id": product_id, "min_price": min_price, "seller_id": seller_id}
        return self._take_first(params)


_orders = tables.orders


def _seller_settleable(*columns: Any) -> Select[Any]:
    """A seller's orders a settlement takes, locked, in id order: `columns` of them."""
    return (
        select(*columns)
        .where(
            _orders.c.seller_id == bindparam("seller_id"),
            # NULL unless COMPLETED: the seller's COMPLETED orders completed before then.
            _orders.c.settleable_at < bindparam("completed_before"),
        )
        .order_by(_orders.c.id)
        .with_hint(_orders, "FORCE INDEX (ix_orders_seller_id_settleable_at)", "mysql")
        .with_for_update()
    )


class SqlOrderRepository(_SqlRepository[Order], ports.OrderRepository):
    mapper = _mapper(Order, tables.orders)
    # Each names its index: a locking read that the optimizer let walk a wider index (all
    # COMPLETED orders, say, on statistics from before a bulk load) would lock every row it
    # passed, other sellers' included. Under READ COMMITTED a locking read on the right
    # range locks only the rows it returns, so buyers placing orders never wait on it.
    # Due orders are found without locks, then locked by primary key: a locking read on
    # the (awaiting, awaiting_since) index would hold index records that a confirm or a dispute
    # of the same order updates after locking its row, the other way round (a deadlock
    # that made the completion phase give up under load). Under the row lock the domain
    # checks again that each is still PAID and due.
    _due = (
        select(_orders.c.id)
        .where(
            _orders.c.awaiting == OrderStatus.PAID.value,  # awaiting_since: delivered_at
            _orders.c.awaiting_since <= bindparam("delivered_before"),
        )
        .order_by(_orders.c.awaiting_since, _orders.c.id)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
        .with_hint(_orders, "FORCE INDEX (ix_orders_awaiting_awaiting_since)", "mysql")
    )
    _by_ids_locked = (
        select(_orders)
        .where(_orders.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(_orders.c.id)
        .with_for_update()
    )
    # Grouped with MIN over the range, so that the server skips from seller to seller in
    # the (seller_id, settleable_at) index (a loose index scan, "Using index for
    # group-by"): one dive per seller, not a read of every order ever sold.
    _sellers = (
        select(_orders.c.seller_id, func.min(_orders.c.settleable_at))
        .where(_orders.c.settleable_at < bindparam("completed_before"))
        .group_by(_orders.c.seller_id)
        .order_by(_orders.c.seller_id)
        .with_hint(_orders, "FORCE INDEX (ix_orders_seller_id_settleable_at)", "mysql")
    )
    _settleable = _seller_settleable(_orders)

    def lock_due_for_completion(self, delivered_before: datetime, limit: int) -> list[Order]:
        params = {"delivered_before": to_db_time(delivered_before), "limit": limit}
        ids = list(self._session.execute(self._due, params).scalars())
        if not ids:
            return []
        locked = self._all(self._by_ids_locked, {"ids": ids})
        return sorted(locked, key=lambda order: (order.delivered_at or order.created_at, order.id))

    def sellers_with_settleable(self, completed_before: datetime) -> list[str]:
        params = {"completed_before": to_db_time(completed_before)}
        return list(self._session.execute(self._sellers, params).scalars())

    def lock_settleable(self, seller_id: str, completed_before: datetime) -> list[Order]:
        params = {"seller_id": seller_id, "completed_before": to_db_time(completed_before)}
        return self._all(self._settleable, params)

    # The same rows and locks as `_settleable`, only what a settlement takes of each, all
    # in one JSON array: read as columns, each value converted by the driver and by
    # SQLAlchemy, the 10^5 rows of a nightly run were half of its Python time (issue 18).
    # A locking read that aggregates still locks every row it reads (InnoDB, MySQL and
    # MariaDB alike); the array is in no order, so the orders are sorted by id here.
    _for_settlement = _seller_settleable(
        func.json_arrayagg(
            func.json_array(
                _orders.c.id,
                _orders.c.buyer_id,
                _orders.c.product_id,
                _orders.c.price,
                func.date_format(_orders.c.completed_at, "%Y-%m-%d %H:%i:%s.%f"),
                _orders.c.version,
            )
        )
    ).order_by(None)

    def lock_for_settlement(
        self, seller_id: str, completed_before: datetime
    ) -> list[SettleableOrder]:
        params = {"seller_id": seller_id, "completed_before": to_db_time(completed_before)}
        found = self._session.execute(self._for_settlement, params).scalar()
        if found is None:  # no row to aggregate
            return []
        instant = datetime.fromisoformat
        orders = [
            SettleableOrder(
                id=order_id,
                seller_id=seller_id,
                buyer_id=buyer_id,
                product_id=product_id,
                price=price,
                completed_at=from_db_time(instant(completed_at)),
                version=version,
            )
            for order_id, buyer_id, product_id, price, completed_at, version in json.loads(found)
        ]
        orders.sort(key=attrgetter("id"))
        return orders

    def mark_settled(
        self, orders: Sequence[SettleableOrder], settlement_id: str, now: datetime
    ) -> None:
        if not orders:
            return
        for order in orders:
            # Saved behind the identity map's back: an aggregate of it here would go stale.
            if self._tracker.lookup(self.mapper, order.id) is not None:
                raise RuntimeError(f"order {order.id} is loaded in this unit of work")
        params = {
            "ids": [order.id for order in orders],
            "settlement_id": settlement_id,
            "now": to_db_time(now),
        }
        updated = self._session.execute(_SETTLE_ORDERS, params).rowcount
        # Locked since they were read, so none can have moved on; checked all the same.
        if updated != len(orders):
            raise StaleAggregate(f"orders of settlement {settlement_id} changed meanwhile")
        # Their events are the settlement's (Settlement.announce_settled): its commit
        # reports the orders' new versions for read-your-writes all the same.
        self._tracker.wrote_events((), {f"order:{order.id}": order.version + 1 for order in orders})


# The set-based settlement of a seller's orders (`mark_settled`). What `Order.settle` does
# to each, by primary key (MySQL 8.4 and MariaDB alike):
_SETTLE_ORDERS = text(
    "UPDATE orders SET status = 'SETTLED', settlement_id = :settlement_id, settled_at = :now,"
    " version = version + 1 WHERE id IN :ids AND status = 'COMPLETED'"
).bindparams(bindparam("ids", expanding=True))


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
    _of_seller_and_date = select(tables.settlements).where(
        tables.settlements.c.seller_id == bindparam("seller_id"),
        tables.settlements.c.business_date == bindparam("business_date"),
    )

    def find(self, seller_id: str, business_date: date) -> Settlement | None:
        params = {"seller_id": seller_id, "business_date": business_date}
        return self._one(self._of_seller_and_date, params)


class SqlLedger(ports.Ledger):
    def __init__(self, session: Connection) -> None:
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

    def __init__(self, session: Connection, ttl: timedelta) -> None:
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
