"""Retention (PRODUCT.md, "Command line"): the daily purge of rows past their retention, the
one code path behind the scheduled function and `giftmarket jobs purge [--dry-run]`.

What goes is listed in `RULES`, one `RetentionRule` per table: published outbox rows older
than OUTBOX_RETENTION_DAYS, and idempotency records past their `expires_at`. A table that
grows gets its retention by adding one line there.

Each rule is applied in batches of at most PURGE_BATCH_SIZE (≤ 1000, default 200) rows, one
short transaction each: the batch's primary keys are selected on the index the rule walks
(`published_at, id`; `expires_at`; EXPLAIN: a range read from the index alone) with
`FOR UPDATE SKIP LOCKED`, then exactly those rows are deleted by primary key and the
transaction commits. So the purge does not wait for rows other transactions hold (they are
skipped, and left for the next run), and what it locks are rows no command uses any more,
for the few milliseconds of one batch. Isolation is READ COMMITTED, as everywhere: no gap
locks, so the commands' inserts (at the other end of those indexes) never wait for it.
(In a table hardly larger than one batch the optimizer reads the whole table to delete
instead of the keys; that delete may then wait for a row a command holds, never the
other way round.)

What the purge does take from the commands is the primary's CPU: deleting a row with its
index entries costs about as much as a command's write. Back to back, 1000-row batches
took 2.6x the buy-now p99 on a two-core machine; so after each batch the purge rests
PURGE_REST_RATIO (default 3) times as long as the batch took, which also makes it back off
by itself when the primary is busy (tests/benchmarks/bench_purge.py: 1.1-1.4x).

Unpublished outbox rows are never deleted, however old: their `published_at` is NULL, which
no comparison matches. A rerun deletes what is left, so a run cut short anywhere loses
nothing; the dry run only counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, Table, delete, func, select, tuple_

from giftmarket.adapters import tables
from giftmarket.adapters.repositories import to_db_time
from giftmarket.commands.ports import utc_now
from giftmarket.domain.errors import InvalidField
from giftmarket.domain.validation import require_aware
from giftmarket.settings import Settings

MAX_ROWS_PER_TRANSACTION = 1000
DEFAULT_OUTBOX_RETENTION_DAYS = 7


@dataclass(frozen=True)
class Retention:
    """What the rules are applied with: the instant of the run and the retention periods."""

    now: datetime
    outbox_days: int = DEFAULT_OUTBOX_RETENTION_DAYS

    def __post_init__(self) -> None:
        require_aware(self.now, "now")
        if self.outbox_days < 1:
            raise ValueError("outbox_days must be at least 1")

    @property
    def now_db(self) -> datetime:
        """`now` as the database stores instants (naive UTC)."""
        return to_db_time(self.now)

    @property
    def outbox_published_before(self) -> datetime:
        return to_db_time(self.now - timedelta(days=self.outbox_days))


@dataclass(frozen=True)
class RetentionRule:
    """The rows of `table` past their retention: `expired(retention)`, a condition that an
    index of the table answers, walked in the order of `walk` (that index's columns)."""

    table: Table
    expired: Callable[[Retention], ColumnElement[bool]]
    walk: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.table.name


_outbox = tables.outbox
_idempotency = tables.idempotency_records
_logins = tables.login_failures  # sign-in abuse counters: gone once their window has passed

RULES: tuple[RetentionRule, ...] = (
    # published_at < cutoff is never true of NULL: unpublished rows stay, however old.
    RetentionRule(
        _outbox,
        lambda r: _outbox.c.published_at < r.outbox_published_before,
        ("published_at", "id"),
    ),
    RetentionRule(_idempotency, lambda r: _idempotency.c.expires_at < r.now_db, ("expires_at",)),
    RetentionRule(_logins, lambda r: _logins.c.expires_at < r.now_db, ("expires_at",)),
)


@dataclass
class TablePurge:
    table: str
    deleted: int = 0
    would_delete: int = 0
    transactions: int = 0  # the batches that deleted rows, each its own transaction
    largest_batch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "deleted": self.deleted,
            "would_delete": self.would_delete,
            "transactions": self.transactions,
            "largest_batch": self.largest_batch,
        }


@dataclass
class PurgeReport:
    as_of: datetime
    dry_run: bool
    outbox_retention_days: int
    batch_size: int
    tables: list[TablePurge] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = True  # False: stopped at its deadline, the next run goes on

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tables)

    @property
    def would_delete(self) -> int:
        return sum(t.would_delete for t in self.tables)

    def table(self, name: str) -> TablePurge:
        (found,) = (t for t in self.tables if t.table == name)
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "dry_run": self.dry_run,
            "complete": self.complete,
            "outbox_retention_days": self.outbox_retention_days,
            "batch_size": self.batch_size,
            "deleted": self.deleted,
            "would_delete": self.would_delete,
            "seconds": round(self.seconds, 3),
            "tables": {t.table: t.as_dict() for t in self.tables},
        }


@dataclass(frozen=True)
class PurgeRequest:
    dry_run: bool = False

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> PurgeRequest:
        """From an EventBridge Scheduler event: `dry_run` may be given at the top level (the
        schedule's input, or a manual invoke) or under `detail`; by default the run deletes."""
        if not isinstance(event, Mapping):
            raise InvalidField("event", "the event must be a JSON object.")
        detail = event.get("detail")
        dry_run = event.get(
            "dry_run", detail.get("dry_run", False) if isinstance(detail, Mapping) else False
        )
        if not isinstance(dry_run, bool):
            raise InvalidField("dry_run", "dry_run must be true or false.")
        return cls(dry_run=dry_run)


@dataclass
class Purger:
    """Applies the rules batch by batch. After each full batch it rests `rest_ratio` times
    as long as the batch took, so it takes at most 1 / (1 + rest_ratio) of a database
    connection's time and backs off by itself when the database is busy (batches take
    longer). It stops between batches once `deadline` (time.monotonic()) has passed: the
    rest waits for the next run, and the report says the run is incomplete."""

    engine: Engine
    rules: Sequence[RetentionRule] = RULES
    batch_size: int = MAX_ROWS_PER_TRANSACTION
    rest_ratio: float = 0.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_ROWS_PER_TRANSACTION:
            raise ValueError(f"batch_size must be between 1 and {MAX_ROWS_PER_TRANSACTION}")
        if self.rest_ratio < 0:
            raise ValueError("rest_ratio must not be negative")

    def run(
        self, retention: Retention, *, dry_run: bool = False, deadline: float | None = None
    ) -> PurgeReport:
        began = self.clock()
        report = PurgeReport(retention.now, dry_run, retention.outbox_days, self.batch_size)
        for rule in self.rules:
            outcome = TablePurge(rule.name)
            report.tables.append(outcome)
            if dry_run:
                outcome.would_delete = self.count(rule, retention)
            elif not self.purge(rule, retention, outcome, deadline):
                report.complete = False
                break
        report.seconds = self.clock() - began
        return report

    def count(self, rule: RetentionRule, retention: Retention) -> int:
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(rule.table).where(rule.expired(retention))
            return int(conn.execute(query).scalar_one())

    def purge(
        self,
        rule: RetentionRule,
        retention: Retention,
        outcome: TablePurge,
        deadline: float | None = None,
    ) -> bool:
        """Batch after batch until one comes back short (what it did not find is gone, or
        held by another transaction and left for the next run): True. False if the deadline
        came first."""
        while True:
            if deadline is not None and self.clock() >= deadline:
                return False
            began = self.clock()
            found, deleted = self.delete_batch(rule, retention)
            if deleted:
                outcome.deleted += deleted
                outcome.transactions += 1
                outcome.largest_batch = max(outcome.largest_batch, deleted)
            if found < self.batch_size:
                return True
            if self.rest_ratio:
                self.sleep(self.rest_ratio * (self.clock() - began))

    def claim(self, rule: RetentionRule, retention: Retention) -> Select[Any]:
        """A batch of the rule's expired rows, by primary key, locked; rows another
        transaction holds are skipped, never waited for."""
        return (
            select(*rule.table.primary_key.columns)
            .where(rule.expired(retention))
            .order_by(*(rule.table.c[name] for name in rule.walk))
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)
        )

    def delete_batch(self, rule: RetentionRule, retention: Retention) -> tuple[int, int]:
        """One transaction: claim a batch, delete exactly those rows by primary key.
        Returns (rows claimed, rows deleted)."""
        key = list(rule.table.primary_key.columns)
        with self.engine.begin() as conn:
            rows = conn.execute(self.claim(rule, retention)).all()
            if not rows:
                return 0, 0
            if len(key) == 1:
                chosen = key[0].in_([row[0] for row in rows])
            else:
                chosen = tuple_(*key).in_([tuple(row) for row in rows])
            deleted = conn.execute(delete(rule.table).where(chosen)).rowcount
        return len(rows), int(deleted)


def purge(
    engine: Engine,
    settings: Settings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    seconds_left: float | None = None,
) -> PurgeReport:
    """Delete (or, dry, count) the rows past their retention as of `now` (default now),
    stopping between batches after `seconds_left` (the next run goes on): the scheduled
    function and `giftmarket jobs purge` both come here, with the container's parts."""
    retention = Retention(now or utc_now(), settings.outbox_retention_days)
    purger = Purger(
        engine, batch_size=settings.purge_batch_size, rest_ratio=settings.purge_rest_ratio
    )
    deadline = None if seconds_left is None else time.monotonic() + seconds_left
    return purger.run(retention, dry_run=dry_run, deadline=deadline)
