"""The daily purge on the real primary: what goes, what stays, in batches of what size, and
the same job through the Lambda handler and the CLI.

The database is shared by the session and other tests leave rows that may be past their
retention too (the settlement tests trade in 2019): each test looks at rows of its own tag,
and counts are compared between runs as of one instant.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.dialects import mysql
from tests.support.purge_rows import insert_idempotency, insert_outbox, left, outbox_prefix, remove
from tests.support.stack import SettingsFactory, giftmarket_cli

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.jobs.purge import RULES, Purger, PurgeReport, Retention
from giftmarket.jobs.purge import purge as run_purge
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.stack import Stack

EVENTS = Path(__file__).parents[2] / "functions/purge/events"
DAY = timedelta(days=1)


@pytest.fixture
def container(make_settings: SettingsFactory) -> Iterator[Container]:
    built = bootstrap(make_settings(events_queue_url=None))
    yield built
    built.close()


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def tag(container: Container) -> Iterator[str]:
    name = f"p{uuid.uuid4().hex[:8]}"
    yield name
    remove(container.database.writer, name)


def seed(engine: Engine, tag: str, now: datetime, *, expired: int, kept: int) -> None:
    """`expired` rows past retention in each table; `kept` rows of each kind that must stay:
    outbox rows unpublished (however old) and published 6 days ago, records expiring in an
    hour."""
    with engine.begin() as conn:
        insert_outbox(conn, tag, expired, occurred_at=now - 9 * DAY, published_at=now - 8 * DAY)
        insert_outbox(conn, tag, kept, occurred_at=now - 30 * DAY, published_at=None, first=expired)
        insert_outbox(
            conn,
            tag,
            kept,
            occurred_at=now - 6 * DAY,
            published_at=now - 6 * DAY,
            first=expired + kept,
        )
        insert_idempotency(conn, tag, expired, expires_at=now - timedelta(seconds=1))
        insert_idempotency(conn, tag, kept, expires_at=now + timedelta(hours=1), first=expired)


def purge(container: Container, now: datetime, *, dry_run: bool = False) -> PurgeReport:
    return Purger(container.database.writer).run(Retention(now, outbox_days=7), dry_run=dry_run)


class Transactions:
    """What each transaction on an engine deleted, row counts per DELETE, read off the
    driver (not the job's report): the proof of the batch size."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.deleted: list[int] = []  # rows deleted by each committed transaction
        self._current = 0

    def __enter__(self) -> Transactions:
        event.listen(self.engine, "after_cursor_execute", self._executed)
        event.listen(self.engine, "commit", self._committed)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "after_cursor_execute", self._executed)
        event.remove(self.engine, "commit", self._committed)

    def _executed(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            self._current += cursor.rowcount

    def _committed(self, conn: Any) -> None:
        if self._current:
            self.deleted.append(self._current)
        self._current = 0


def test_the_dry_run_counts_what_the_run_deletes_and_changes_nothing(
    container: Container, tag: str, now: datetime
) -> None:
    engine = container.database.writer
    seed(engine, tag, now, expired=30, kept=5)

    preview = purge(container, now, dry_run=True)

    assert left(engine, tag) == (40, 35)
    assert preview.dry_run and preview.deleted == 0
    outbox, records = preview.table("outbox"), preview.table("idempotency_records")
    assert outbox.would_delete >= 30 and records.would_delete >= 30
    run = purge(container, now)
    assert run.table("outbox").deleted == outbox.would_delete
    assert run.table("idempotency_records").deleted == records.would_delete
    assert run.would_delete == 0


def test_unpublished_outbox_rows_and_unexpired_records_stay(
    container: Container, tag: str, now: datetime
) -> None:
    engine = container.database.writer
    seed(engine, tag, now, expired=30, kept=5)

    purge(container, now)

    o, r = tables.outbox, tables.idempotency_records
    with engine.connect() as conn:
        outbox_left = conn.execute(
            select(o.c.published_at).where(o.c.id.startswith(outbox_prefix(tag)))
        ).all()
        expiries = conn.execute(select(r.c.expires_at).where(r.c.scope == tag)).scalars().all()
    published = sorted(row.published_at for row in outbox_left if row.published_at is not None)
    assert len(outbox_left) == 10 and len(published) == 5  # 5 unpublished, 5 six days old
    assert all(p.replace(tzinfo=UTC) > now - 7 * DAY for p in published)
    assert len(expiries) == 5 and all(e.replace(tzinfo=UTC) > now for e in expiries)


def test_the_edge_of_retention_is_exclusive(container: Container, tag: str, now: datetime) -> None:
    engine = container.database.writer
    with engine.begin() as conn:
        insert_outbox(conn, tag, 1, occurred_at=now - 8 * DAY, published_at=now - 7 * DAY)
        insert_idempotency(conn, tag, 1, expires_at=now)
    purge(container, now)
    assert left(engine, tag) == (1, 1)


def test_no_transaction_deletes_more_than_the_batch_size(
    make_settings: SettingsFactory, container: Container, tag: str, now: datetime
) -> None:
    engine = container.database.writer
    purge(container, now)  # whatever earlier tests left past retention as of now
    seed(engine, tag, now, expired=20, kept=2)

    small = bootstrap(make_settings(events_queue_url=None, purge_batch_size=7))
    try:
        with Transactions(small.database.writer) as transactions:
            report = run_purge(small.database.writer, small.settings, now=now)
    finally:
        small.close()

    # 20 rows a table: 7 + 7 + 6, each batch its own transaction.
    assert transactions.deleted == [7, 7, 6, 7, 7, 6]
    assert report.batch_size == 7
    for table in ("outbox", "idempotency_records"):
        outcome = report.table(table)
        assert (outcome.deleted, outcome.transactions, outcome.largest_batch) == (20, 3, 7)
    assert left(engine, tag) == (4, 2)


def test_by_default_batches_of_200_rows_with_rests_between_them(
    container: Container, tag: str, now: datetime
) -> None:
    engine = container.database.writer
    purge(container, now)
    seed(engine, tag, now, expired=450, kept=0)
    rests: list[float] = []
    purger = Purger(engine, batch_size=200, rest_ratio=3.0, sleep=rests.append)
    with Transactions(engine) as transactions:
        report = purger.run(Retention(now))
    assert (container.settings.purge_batch_size, container.settings.purge_rest_ratio) == (200, 3)
    assert transactions.deleted == [200, 200, 50, 200, 200, 50]
    assert report.deleted == 900
    # After each full batch, three times as long as it took; none after a table's last.
    assert len(rests) == 4 and all(0 < rest < 30 for rest in rests)


def test_a_run_stops_between_batches_at_its_deadline_and_the_next_goes_on(
    container: Container, tag: str, now: datetime
) -> None:
    engine = container.database.writer
    purge(container, now)
    seed(engine, tag, now, expired=30, kept=0)
    ticks = iter(range(10**6))
    purger = Purger(engine, batch_size=10, clock=lambda: float(next(ticks)))
    first = purger.run(Retention(now), deadline=4.0)  # time for two batches
    assert not first.complete and first.deleted == 20
    assert left(engine, tag) == (10, 30)
    second = purge(container, now)
    assert second.complete and second.deleted == 40
    assert left(engine, tag) == (0, 0)


def test_a_rerun_deletes_nothing_more(container: Container, tag: str, now: datetime) -> None:
    engine = container.database.writer
    seed(engine, tag, now, expired=30, kept=5)
    first = purge(container, now)
    second = purge(container, now)
    assert first.deleted >= 60
    assert second.deleted == 0 and not any(t.transactions for t in second.tables)
    assert purge(container, now, dry_run=True).would_delete == 0
    assert left(engine, tag) == (10, 5)


def test_rows_another_transaction_holds_are_skipped_not_waited_for(
    container: Container, tag: str, now: datetime
) -> None:
    """The claim skips the held row, and the delete, by primary key, never reads it. (The
    table has as many rows as a day of trading would: in a table hardly larger than one
    batch the optimizer scans the whole table instead, and that delete may wait for a row a
    command holds, for the rest of that command's transaction.)"""
    engine = container.database.writer
    seed(engine, tag, now, expired=10, kept=0)
    with engine.begin() as conn:
        insert_outbox(conn, tag, 3000, occurred_at=now - DAY, published_at=now - DAY, first=10)
    held = f"{outbox_prefix(tag)}{0:0{24 - len(tag)}d}"
    o = tables.outbox
    with engine.connect() as holder:
        holder.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 50")
        holder.commit()
        with holder.begin():
            assert holder.execute(select(o.c.id).where(o.c.id == held).with_for_update()).all()
            began = time.monotonic()
            report = purge(container, now)
            took = time.monotonic() - began
    assert took < 5  # a wait would last until the holder's transaction ends, here never
    assert report.table("outbox").deleted >= 9
    assert left(engine, tag) == (3001, 0)  # the held row stays, for the next run
    purge(container, now)
    assert left(engine, tag) == (3000, 0)


def test_a_command_inserting_meanwhile_never_waits_for_a_batch(
    container: Container, tag: str, now: datetime
) -> None:
    """While a batch holds its locks (paused between its claim and its commit), a new
    outbox row and a new idempotency record commit at once."""
    engine = container.database.writer
    seed(engine, tag, now, expired=50, kept=0)
    claimed, release = threading.Event(), threading.Event()

    def pause_after_claim(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FOR UPDATE SKIP LOCKED" in statement and not claimed.is_set():
            claimed.set()
            release.wait(10)

    event.listen(engine, "after_cursor_execute", pause_after_claim)
    runner = threading.Thread(target=purge, args=(container, now))
    try:
        runner.start()
        assert claimed.wait(10)
        began = time.monotonic()
        with engine.connect() as conn:
            conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 5")
            conn.commit()
            with conn.begin():
                insert_outbox(conn, tag, 1, occurred_at=now, published_at=None, first=50)
                insert_idempotency(conn, tag, 1, expires_at=now + DAY, first=50)
        took = time.monotonic() - began
    finally:
        release.set()
        runner.join(30)
        event.remove(engine, "after_cursor_execute", pause_after_claim)
    assert took < 2
    assert left(engine, tag) == (1, 1)


def emitted_metrics(out: str) -> dict[str, list[float]]:
    blobs = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    return {k: v if isinstance(v, list) else [v] for b in blobs for k, v in b.items()}


def test_the_handler_counts_with_the_dry_run_event_and_purges_with_the_scheduled_one(
    container: Container, tag: str, now: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = container.database.writer
    seed(engine, tag, now, expired=12, kept=3)
    invoker = LocalInvoker()
    set_container(container)
    try:
        preview = invoker.invoke_event_raw(
            "PurgeFunction", json.loads((EVENTS / "dry_run.json").read_text())
        )
        assert left(engine, tag) == (18, 15)
        capsys.readouterr()
        run = invoker.invoke_event_raw(
            "PurgeFunction", json.loads((EVENTS / "scheduled.json").read_text())
        )
    finally:
        set_container(None)

    assert preview["dry_run"] and preview["tables"]["outbox"]["would_delete"] >= 12
    assert not run["dry_run"] and run["tables"]["outbox"]["deleted"] >= 12
    assert run["tables"]["idempotency_records"]["deleted"] >= 12
    assert left(engine, tag) == (6, 3)
    if not os.environ.get("POWERTOOLS_METRICS_DISABLED"):
        values = emitted_metrics(capsys.readouterr().out)
        assert values["PurgedRows"] == [run["deleted"]]


def test_giftmarket_jobs_purge_prints_a_line_per_table_then_a_summary(
    container: Container, tag: str, now: datetime, stack: Stack
) -> None:
    engine = container.database.writer
    seed(engine, tag, now, expired=8, kept=2)

    preview = giftmarket_cli(stack, "jobs", "purge", "--dry-run")

    assert preview.returncode == 0, preview.stderr
    lines = preview.stdout.splitlines()
    counts = dict(line.split(": would delete ") for line in lines[:2])
    assert set(counts) == {"outbox", "idempotency_records"}
    assert all(int(n) >= 8 for n in counts.values())
    assert lines[-1].startswith("dry run as of ") and lines[-1].endswith("nothing was changed")
    assert left(engine, tag) == (12, 10)

    result = giftmarket_cli(stack, "jobs", "purge")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("outbox: deleted ") and "of at most 200 rows" in lines[0]
    assert lines[1].startswith("idempotency_records: deleted ")
    assert lines[-1].startswith("as of ") and ": deleted " in lines[-1]
    assert left(engine, tag) == (4, 2)


def test_each_batch_is_claimed_by_a_range_on_the_rules_index(
    container: Container, now: datetime
) -> None:
    """EXPLAIN of the claim: a range scan of the rule's index, answered from the index alone
    (no table rows read, no sort), so a batch costs the same however large the table."""
    purger = Purger(container.database.writer)
    with container.database.writer.connect() as conn:
        for rule in RULES:
            claim = purger.claim(rule, Retention(now))
            sql = str(
                claim.compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True})
            )
            plan = conn.exec_driver_sql(f"EXPLAIN {sql}").mappings().one()
            index = f"ix_{rule.name}_{'_'.join(rule.walk)}"
            assert (plan["type"], plan["key"]) == ("range", index), plan
            assert "Using index" in plan["Extra"] and "filesort" not in plan["Extra"], plan
