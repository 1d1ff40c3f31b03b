"""Rebuild every read model from the database into a new generation, then switch to it.

1. A new generation is opened (`rm:building`): from this moment every event the projector
   applies goes to it as well as to the current one.
2. The replica is waited on until it has applied everything the primary had committed at
   that moment, so each event projected before step 1 is in the snapshot and each one after
   reaches the new generation through the projector: none is lost.
3. One consistent snapshot (REPEATABLE READ) is streamed table by table, each row turned
   into the same operations the projector makes from events (`projections/ops.py`) and
   applied by the same script, pipelined in batches. Those writes are version-guarded like
   any other, so a snapshot row never overwrites a newer event that arrived meanwhile.
4. Queries switch to the new generation in one atomic step; the old one is deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, Table, func, select

from giftmarket.adapters.db import Database
from giftmarket.adapters.read_models import ReadModels
from giftmarket.adapters.tables import (
    buy_bids,
    coupons,
    images,
    orders,
    products,
    sell_bids,
    settlements,
    users,
)
from giftmarket.projections import ops
from giftmarket.projections.ops import Op

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (what, rows done, rows in total)


@dataclass
class RebuildReport:
    generation: int
    previous: int | None
    source: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dropped_keys: int = 0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "previous": self.previous,
            "source": self.source,
            "rows": self.rows,
            "total_rows": self.total_rows,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second),
            "dropped_keys": self.dropped_keys,
        }


@dataclass(frozen=True)
class Source:
    """One table's rows and how each becomes read-model operations."""

    name: str
    query: Select[Any]
    to_op: Callable[[Any], Op]


def _user(r: Any) -> Op:
    return ops.user(
        r.id,
        r.version,
        email=r.email,
        nickname=r.nickname,
        balances=(r.available_points, r.escrowed_points, r.pending_points),
    )


def _product(r: Any) -> Op:
    return ops.product(
        r.id,
        r.version,
        like_count=r.like_count,
        name=r.name,
        brand=r.brand,
        category=r.category,
        face_value=r.face_value,
        created_at=r.created_at,
    )


def _image(r: Any) -> Op:
    return ops.image(r.id, s3_key=r.s3_key)


def _open_bid(kind: str) -> Callable[[Any], Op]:
    """An open ask ("ask") or buy bid ("bid"); the query labels its owner `owner_id`."""

    def to_op(r: Any) -> Op:
        return ops.bid(
            kind,
            r.id,
            r.version,
            product_id=r.product_id,
            owner_id=r.owner_id,
            price=r.price,
            status=r.status,
            created_at=r.created_at,
        )

    return to_op


def _order(r: Any) -> Op:
    row = r._mapping
    return ops.order(
        r.id,
        r.version,
        parties=row,
        terms=row,
        status=r.status,
        completed_at=r.completed_at,
        settled_at=r.settled_at,
        created_at=r.created_at,
    )


def _coupon(r: Any) -> Op:
    return ops.coupon(
        r.id,
        r.version,
        user_id=r.user_id,
        status=r.status,
        name=r.name,
        discount_amount=r.discount_amount,
        expires_at=r.expires_at,
        created_at=r.created_at,
    )


def _settlement(r: Any) -> Op:
    return ops.settlement(
        r.id,
        seller_id=r.seller_id,
        business_date=r.business_date,
        order_count=r.order_count,
        gross=r.gross,
        fee=r.fee,
        net=r.net,
    )


def _columns(table: Table, *names: str) -> Select[Any]:
    return select(*(table.c[name] for name in names))


_u, _p, _i, _a, _b, _o, _c, _s = (
    users, products, images, sell_bids, buy_bids, orders, coupons, settlements
)  # fmt: skip


def _open_bids(table: Table, owner: Any) -> Select[Any]:
    bid = _columns(table, "id", "version", "product_id", "price", "status", "created_at")
    return bid.add_columns(owner.label("owner_id")).where(table.c.status == "OPEN")


SOURCES = (
    Source(
        "users",
        _columns(_u, "id", "version", "email", "nickname", "available_points",
                 "escrowed_points", "pending_points"),
        _user,
    ),
    Source(
        "products",
        _columns(_p, "id", "version", "name", "brand", "category", "face_value", "created_at",
                 "like_count"),
        _product,
    ),
    Source("images", _columns(_i, "id", "s3_key").where(_i.c.status != "DELETED"), _image),
    Source("asks", _open_bids(_a, _a.c.seller_id), _open_bid("ask")),
    Source("bids", _open_bids(_b, _b.c.buyer_id), _open_bid("bid")),
    Source(
        "orders",
        _columns(_o, "id", "version", *ops.ORDER_IDENTITY, *ops.ORDER_TERMS, "status",
                 "created_at", "completed_at", "settled_at"),
        _order,
    ),
    Source(
        "coupons",
        _columns(_c, "id", "version", "user_id", "status", "name", "discount_amount",
                 "expires_at", "created_at"),
        _coupon,
    ),
    Source(
        "settlements",
        _columns(_s, "id", "seller_id", "business_date", "order_count", "gross", "fee", "net"),
        _settlement,
    ),
)  # fmt: skip


def rebuild(
    read_models: ReadModels,
    database: Database,
    *,
    batch_rows: int = 500,
    pipeline_batches: int = 16,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild all read models into a new generation and switch queries to it."""
    started = time.perf_counter()
    generation = read_models.begin_generation()
    try:
        engine, role = database.caught_up_reader()
        report = RebuildReport(generation, None, role)
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            totals = {s.name: _count(conn, s.query) for s in SOURCES}
            for source in SOURCES:
                report.rows[source.name] = _load(
                    read_models,
                    generation,
                    conn,
                    source,
                    total=totals[source.name],
                    batch_rows=batch_rows,
                    pipeline_batches=pipeline_batches,
                    progress=progress,
                )
            conn.rollback()
        report.previous = read_models.switch_to(generation)
    except BaseException:
        read_models.abandon(generation)
        raise
    report.seconds = time.perf_counter() - started
    if report.previous is not None:
        report.dropped_keys = read_models.drop(report.previous)
    log.info("read models rebuilt: %s", report.as_dict())
    return report


def _count(conn: Connection, query: Select[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def _load(
    read_models: ReadModels,
    generation: int,
    conn: Connection,
    source: Source,
    *,
    total: int,
    batch_rows: int,
    pipeline_batches: int,
    progress: Progress | None,
) -> int:
    done = 0
    if progress:
        progress(source.name, 0, total)
    result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(source.query)
    for group in _chunks(_batches(result.partitions(), source.to_op), pipeline_batches):
        read_models.apply_batches(generation, group)
        done += sum(len(batch) for batch in group)
        if progress:
            progress(source.name, done, total)
    return done


def _batches(partitions: Iterable[Any], to_op: Callable[[Any], Op]) -> Iterator[list[Op]]:
    for rows in partitions:
        yield [to_op(row) for row in rows]


def _chunks(items: Iterable[list[Op]], size: int) -> Iterator[list[list[Op]]]:
    group: list[list[Op]] = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group
