"""Rebuild every read model from the database into a new generation, then switch to it.

1. A new generation is opened (`rm:building`): from this moment every event the projector
   applies goes to it as well as to the current one.
2. The replica is waited on until it has applied everything the primary had committed at
   that moment, so each event projected before step 1 is in the snapshot and each one after
   reaches the new generation through the projector: none is lost.
3. One consistent snapshot (REPEATABLE READ) is streamed table by table, each row turned
   into the same operations the projector makes from events (`projections/ops.py`) and
   applied by the same script, pipelined in batches from a second thread while the next
   rows are read. Those writes are version-guarded like
   any other, so a snapshot row never overwrites a newer event that arrived meanwhile.
4. Queries switch to the new generation in one atomic step; the old one is deleted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    CHAR,
    ColumnElement,
    Connection,
    Select,
    Table,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)

from giftmarket.adapters.db import Database
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
from giftmarket.lazy import lazy
from giftmarket.projections import ops
from giftmarket.read_ports import ReadModelGenerations, RebuildRunning
from giftmarket.settings import Settings

if TYPE_CHECKING:
    from giftmarket.adapters import cache
    from giftmarket.adapters import read_models as redis_read_models
else:
    cache = lazy("giftmarket.adapters.cache")
    redis_read_models = lazy("giftmarket.adapters.read_models")

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
    """One table's rows as read-model operations, each row's built by the database as the
    JSON the apply script takes (the same fields and values `projections/ops.py` gives the
    projector for the entity; tests hold the two to equal read models, key by key)."""

    name: str
    query: Select[tuple[str]]


def _text(value: ColumnElement[Any]) -> ColumnElement[str]:
    """`ops.text` in SQL: the value as a string, '' for null."""
    return func.coalesce(cast(value, CHAR), "")


def _instant(value: ColumnElement[Any]) -> ColumnElement[str]:
    """`ops.text` of a UTC timestamp: datetime.isoformat, which leaves out zero micros."""
    with_micros = func.microsecond(value) != 0
    layout = case((with_micros, "%Y-%m-%dT%H:%i:%s.%f"), else_="%Y-%m-%dT%H:%i:%s")
    return func.coalesce(func.concat(func.date_format(value, layout), "+00:00"), "")


def _micros(value: ColumnElement[Any]) -> ColumnElement[str]:
    """`ops.micros`: microseconds since the epoch (timestamps are stored as UTC)."""
    return _text(func.timestampdiff(literal_column("MICROSECOND"), "1970-01-01", value))


def _fields(fields: dict[str, ColumnElement[Any]]) -> ColumnElement[Any]:
    return func.json_object(*(part for name, value in fields.items() for part in (name, value)))


def _source(
    name: str,
    kind: str,
    table: Table,
    *,
    once: dict[str, ColumnElement[Any]],
    set: dict[str, ColumnElement[Any]] | None = None,  # noqa: A002 - the operation's word
    versioned: bool = True,
) -> Source:
    version = _text(table.c.version) if versioned else literal("1")
    op = func.json_object(
        "k", kind, "id", table.c.id, "v", version, "once", _fields(once), "set", _fields(set or {})
    )
    return Source(name, select(op.label("op")))


def _texts(table: Table, *names: str) -> dict[str, ColumnElement[str]]:
    return {name: _text(table.c[name]) for name in names}


def _created(table: Table) -> dict[str, ColumnElement[str]]:
    return {"created_at": _instant(table.c.created_at), "created_us": _micros(table.c.created_at)}


def _day(value: ColumnElement[Any]) -> ColumnElement[str]:
    """`ops.text` of a date: YYYY-MM-DD, '' for null."""
    return func.coalesce(func.date_format(value, "%Y-%m-%d"), "")


def _bids(
    name: str,
    kind: str,
    table: Table,
    owner: ColumnElement[Any],
    *,
    statuses: tuple[str, ...] = ("OPEN",),
    once: dict[str, ColumnElement[Any]] | None = None,
) -> Source:
    """The bids a read model keeps: the open ones (and an ask's seller's EXPIRED ones);
    closed bids are only tombstones there, which expire."""
    source = _source(
        name,
        kind,
        table,
        once={
            "product_id": _text(table.c.product_id),
            "owner_id": _text(owner),
            **_created(table),
            **(once or {}),
        },
        set=_texts(table, "price", "status"),
    )
    return Source(source.name, source.query.where(table.c.status.in_(statuses)))


def _order_facts(table: Table) -> dict[str, ColumnElement[str]]:
    """`ops.order_facts` in SQL."""
    facts: dict[str, ColumnElement[str]] = {}
    for name in ops.ORDER_FACTS:
        column = table.c[name]
        if name in ops.ORDER_INSTANTS:
            facts[name] = _instant(column)
        elif name == "expires_on":
            facts[name] = _day(column)
        else:
            facts[name] = _text(column)
    facts["dispute_opened_us"] = _micros(table.c.dispute_opened_at)
    return facts


_u, _p, _i, _o, _c, _s = users, products, images, orders, coupons, settlements

SOURCES = (
    _source(
        "users",
        "user",
        _u,
        once=_texts(_u, "email", "nickname"),
        set=_texts(_u, "available_points", "escrowed_points", "pending_points"),
    ),
    # Only the images that are gone: an order's image key is derived from the order.
    Source(
        "images",
        _source("images", "image", _i, once={}, set={"status": _text(_i.c.status)}).query.where(
            _i.c.status == "DELETED"
        ),
    ),
    _bids(
        "asks",
        "ask",
        sell_bids,
        sell_bids.c.seller_id,
        statuses=("OPEN", "EXPIRED"),
        once={
            "barcode_last4": _text(sell_bids.c.barcode_last4),
            "expires_on": _day(sell_bids.c.expires_on),
        },
    ),
    _bids("bids", "bid", buy_bids, buy_bids.c.buyer_id),
    _source(
        "orders",
        "order",
        _o,
        once={
            **_texts(_o, *ops.ORDER_IDENTITY, *ops.ORDER_TERMS),
            **_created(_o),
            **_order_facts(_o),
        },
        set={
            "status": _text(_o.c.status),
            "completed_at": _instant(_o.c.completed_at),
            "settled_at": _instant(_o.c.settled_at),
        },
    ),
    _source(
        "coupons",
        "coupon",
        _c,
        once={
            **_texts(_c, "user_id", "name", "discount_amount"),
            "expires_at": _instant(_c.c.expires_at),
            "created_us": _micros(_c.c.created_at),
        },
        set=_texts(_c, "status"),
    ),
    _source(
        "settlements",
        "settlement",
        _s,
        once=_texts(_s, "seller_id", "business_date", "order_count", "gross", "fee", "net"),
        versioned=False,
    ),
    # Last: a product's place in the lists and rankings depends on its asks and orders, its
    # detail on its bids too (the apply script's bulk mode indexes and renders it once,
    # here, instead of once per row).
    _source(
        "products",
        "product",
        _p,
        once={
            **_texts(_p, "name", "brand", "category", "face_value"),
            "created_us": _micros(_p.c.created_at),
        },
        set=_texts(_p, "like_count"),
    ),
)


def rebuild(
    read_models: ReadModelGenerations,
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
        with engine.connect() as conn, _Sender(read_models, generation, progress) as sender:
            conn = start_snapshot(conn)
            totals = {s.name: _count(conn, s.query) for s in SOURCES}
            for source in SOURCES:
                sender.begin(source.name, totals[source.name])
                result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(
                    source.query
                )
                rows = 0
                for group in _chunks(_encoded(result.partitions()), pipeline_batches):
                    sender.send(source.name, group)
                    rows += sum(n for n, _ in group)
                report.rows[source.name] = rows
            sender.finish()
            conn.rollback()
        report.previous = read_models.switch_to(generation)
    except BaseException:
        read_models.abandon(generation)
        raise
    report.seconds = time.perf_counter() - started
    if report.previous is not None:
        report.dropped_keys = read_models.drop(report.previous)
    # The first rebuild in a new layout: what the older layout's code read goes too.
    report.dropped_keys += read_models.drop_older_layouts()
    log.info("read models rebuilt: %s", report.as_dict())
    return report


class SnapshotRefused(RuntimeError):
    """The snapshot transaction did not run REPEATABLE READ: nothing is read from it."""


def start_snapshot(conn: Connection) -> Connection:
    """`conn` in one read-only transaction that sees the database as of its start.

    The snapshot needs REPEATABLE READ, a session setting, while every other transaction runs
    READ COMMITTED. Behind RDS Proxy the SET and the transaction may land on different backend
    connections, so the transaction is started and its characteristics declared in one
    statement, and its isolation checked from inside it (on the backend it holds): a rebuild
    from a torn snapshot would be silently wrong; a refused one is simply run again.
    """
    conn = conn.execution_options(isolation_level="REPEATABLE READ")
    conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    level = conn.get_isolation_level()
    if level != "REPEATABLE READ":
        conn.rollback()
        raise SnapshotRefused(f"the snapshot transaction runs {level}, not REPEATABLE READ")
    return conn


def _count(conn: Connection, query: Select[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


Encoded = tuple[int, str]  # (rows, their operations as the apply script takes them)


def batch_of(rows: Sequence[Any]) -> str:
    """Rows of a source (one operation's JSON each) as one batch for the apply script."""
    return "[" + ",".join(row[0] for row in rows) + "]"


def _encoded(partitions: Iterable[Sequence[Any]]) -> Iterator[Encoded]:
    for rows in partitions:
        yield len(rows), batch_of(rows)


def _chunks(items: Iterable[Encoded], size: int) -> Iterator[list[Encoded]]:
    group: list[Encoded] = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


class _Sender:
    """Applies encoded batches in Redis on a thread of its own while the caller streams and
    encodes the next ones: the script's time in Redis overlaps the Python work instead of
    adding to it. The first failure is raised to the caller at its next `send` or at
    `finish`; the thread keeps draining the queue, so the caller never blocks on it."""

    def __init__(
        self, read_models: ReadModelGenerations, generation: int, progress: Progress | None
    ):
        self._read_models = read_models
        self._generation = generation
        self._progress = progress
        self._queue: queue.Queue[tuple[str, list[Encoded]] | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="rebuild-sender", daemon=True)

    def __enter__(self) -> _Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def begin(self, name: str, total: int) -> None:
        self._totals[name] = total
        self._done[name] = 0
        if self._progress:
            self._progress(name, 0, total)

    def send(self, name: str, group: list[Encoded]) -> None:
        self._raise_failure()
        self._queue.put((name, group))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue
            name, group = item
            try:
                self._read_models.apply_bulk(self._generation, [batch for _, batch in group])
                self._done[name] += sum(n for n, _ in group)
                if self._progress:
                    self._progress(name, self._done[name], self._totals[name])
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc


def rebuild_read_models(
    settings: Settings, database: Database, progress: Progress | None = None
) -> RebuildReport:
    """Every read model rebuilt from the database into a new generation, switched in, over
    a Redis connection of its own with the bulk timeout (`giftmarket read-models rebuild`)."""
    client = cache.build_redis(settings, timeout=cache.BULK_TIMEOUT_SECONDS)
    try:
        return rebuild(redis_read_models.ReadModels(client), database, progress=progress)
    finally:
        client.close()


def ensure_read_models(
    read_models: ReadModelGenerations, settings: Settings, database: Database
) -> RebuildReport | None:
    """Rebuild the read models if Redis has none (a new deployment, or a cache that lost
    its data); until then every query is answered by SQL. None when there was nothing to
    do or another rebuild is running (the outbox relay calls it on every run)."""
    if read_models.generation() is not None:
        return None
    try:
        return rebuild_read_models(settings, database)
    except RebuildRunning:
        return None
