"""Rebuild every read model from the database into a new generation, then switch to it.

1. A new generation is opened (`rm:building`): from this moment every event the projector
   applies goes to it as well as to the current one.
2. The replica is waited on until it has applied everything the primary had committed at
   that moment, so each event projected before step 1 is in the snapshot and each one after
   reaches the new generation through the projector: none is lost.
3. One consistent snapshot (REPEATABLE READ) is streamed table by table, each row turned
   into the same operations the projector makes from events (`projections/ops.py`), by
   position (the field names go once per batch), and applied by the same script,
   pipelined in batches from a second thread while the next rows are read. Those writes
   are version-guarded like any other, so a snapshot row never overwrites a newer event
   that arrived meanwhile.
4. Queries switch to the new generation in one atomic step; the old one is deleted.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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
    """One table's rows as read-model operations (the same fields and values
    `projections/ops.py` gives the projector for the entity; tests hold the two to equal
    read models, key by key). The database builds each row as a JSON array by position,
    [id, version, the `once` values, the `set` values]; `header` opens a batch of them as
    the apply script takes it, with the kind and the field names once."""

    name: str
    query: Select[tuple[str]]
    header: str
    # Applied once every row before it is (the rows of a source go in any order).
    after_the_rest: bool = False

    def where(self, condition: ColumnElement[bool]) -> Source:
        return Source(self.name, self.query.where(condition), self.header, self.after_the_rest)


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
    changing = set or {}
    row = func.json_array(table.c.id, version, *once.values(), *changing.values())
    shape = json.dumps({"k": kind, "once": [*once], "set": [*changing]}, separators=(",", ":"))
    return Source(name, select(row.label("op")), shape[:-1] + ',"rows":[')


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
    return source.where(table.c.status.in_(statuses))


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
    _source("images", "image", _i, once={}, set={"status": _text(_i.c.status)}).where(
        _i.c.status == "DELETED"
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
    replace(
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
        after_the_rest=True,
    ),
)


def rebuild(
    read_models: ReadModelGenerations,
    database: Database,
    *,
    batch_rows: int = 500,
    pipeline_batches: int = 16,
    lanes: int = 2,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild all read models into a new generation and switch queries to it: rows read
    `batch_rows` at a time, each such batch one script call, `pipeline_batches` calls per
    pipeline, `lanes` pipelines in flight."""
    started = time.perf_counter()
    generation = read_models.begin_generation()
    try:
        engine, role = database.caught_up_reader()
        report = RebuildReport(generation, None, role)
        with engine.connect() as conn, _Sender(read_models, generation, progress, lanes) as sender:
            conn = start_snapshot(conn)
            # Redis is the bottleneck: it starts on a first batch alone, and each table is
            # counted (for the progress) while Redis still applies the previous one's rows.
            first = 1
            for source in SOURCES:
                if source.after_the_rest:
                    sender.barrier()
                sender.begin(source.name, _count(conn, source.query))
                result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(
                    source.query
                )
                rows = 0
                encoded = _encoded(source, result.partitions())
                for group in _chunks(encoded, pipeline_batches, first):
                    sender.send(source.name, group)
                    rows += sum(n for n, _ in group)
                report.rows[source.name] = rows
                first = pipeline_batches
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


def batch_of(source: Source, rows: Sequence[Any]) -> str:
    """Rows of a source (one operation's JSON array each) as one batch for the apply
    script."""
    return source.header + ",".join(row[0] for row in rows) + "]}"


def _encoded(source: Source, partitions: Iterable[Sequence[Any]]) -> Iterator[Encoded]:
    for rows in partitions:
        yield len(rows), batch_of(source, rows)


def _chunks(items: Iterable[Encoded], size: int, first: int) -> Iterator[list[Encoded]]:
    """Groups of `size` items; the first ones smaller, from `first` doubling."""
    group: list[Encoded] = []
    for item in items:
        group.append(item)
        if len(group) >= first:
            yield group
            group = []
            first = min(size, first * 2)
    if group:
        yield group


class _Sender:
    """Applies encoded batches in Redis on threads of their own while the caller streams and
    encodes the next ones: the script's time in Redis overlaps the Python work instead of
    adding to it. Each of `lanes` threads keeps a pipeline in flight on a connection of its
    own, so that Redis has the next one queued when it ends one (with one, it waited for the
    answer to be read and the next pipeline packed and sent, under the GIL the streaming
    thread holds). The first failure is raised to the caller at its next `send`, `barrier`
    or at `finish`; the threads keep draining the queue, so the caller never blocks on it."""

    def __init__(
        self,
        read_models: ReadModelGenerations,
        generation: int,
        progress: Progress | None,
        lanes: int = 2,
    ):
        self._read_models = read_models
        self._generation = generation
        self._progress = progress
        self._queue: queue.Queue[tuple[str, list[Encoded]] | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._threads = [
            threading.Thread(target=self._run, name=f"rebuild-sender-{n}", daemon=True)
            for n in range(lanes)
        ]

    def __enter__(self) -> _Sender:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def begin(self, name: str, total: int) -> None:
        with self._lock:
            self._totals[name] = total
            self._done[name] = 0
        if self._progress:
            self._progress(name, 0, total)

    def send(self, name: str, group: list[Encoded]) -> None:
        self._raise_failure()
        self._queue.put((name, group))

    def barrier(self) -> None:
        """Wait until everything sent so far is applied."""
        self._queue.join()
        self._raise_failure()

    def finish(self) -> None:
        self._stop()
        self._raise_failure()

    def _stop(self) -> None:
        alive = [thread for thread in self._threads if thread.is_alive()]
        for _ in alive:
            self._queue.put(None)
        for thread in alive:
            thread.join()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self._apply(*item)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _apply(self, name: str, group: list[Encoded]) -> None:
        self._read_models.apply_bulk(self._generation, [batch for _, batch in group])
        with self._lock:
            self._done[name] += sum(n for n, _ in group)
            done, total = self._done[name], self._totals[name]
        if self._progress:
            self._progress(name, done, total)


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
