"""Publishing the outbox to SQS: the fast path after each commit, and the relay behind it.

A row is marked published only once SQS has accepted it, in the same short transaction that
claimed it with `FOR UPDATE SKIP LOCKED`, so two publishers never send the same rows at once
and a crash anywhere leaves the row unpublished for the next run. Delivery is therefore at
least once: a resend carries the same MessageDeduplicationId (the outbox id), which SQS
drops within 5 minutes, and the projector's version guards make any later duplicate harmless.

Rows are claimed among the unpublished ones in id order, never by "greater than the last id
seen": ids are made before the transaction commits, so a smaller id can commit later.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Connection, Engine, Select, select, text, update

from giftmarket.adapters.repositories import to_db_time
from giftmarket.adapters.tables import outbox
from giftmarket.commands.ports import Publisher, utc_now
from giftmarket.lazy import lazy
from giftmarket.messages import EventEnvelope

if TYPE_CHECKING:
    import boto3
    from botocore import config as botocore_config
else:
    boto3 = lazy("boto3")
    botocore_config = lazy("botocore.config")

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    from giftmarket.settings import Settings

log = logging.getLogger(__name__)

# SendMessageBatch takes at most 10 entries. Their total size is capped too (256 KiB for
# years, 1 MiB on queues that allow 1 MiB messages): chunks stay under the smaller figure,
# and a larger message travels alone, so if it is refused it fails alone.
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024


def build_sqs_client(
    region: str | None, endpoint_url: str | None, *, connections: int = 10
) -> SQSClient:
    # Short timeouts and one retry: the fast path runs inside a command's response time,
    # and whatever fails here is sent again by the relay a minute later.
    config = botocore_config.Config(
        connect_timeout=1,
        read_timeout=5,
        retries={"max_attempts": 2, "mode": "standard"},
        # One connection per lane of the publisher's senders (the default pool holds 10).
        max_pool_connections=max(10, connections),
    )
    return boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, config=config)


class SqsPublisher(Publisher):
    """Sends in SendMessageBatch calls of up to ten, on `lanes` threads at once.

    One call takes a round trip (tens of milliseconds to SQS), so one sender tops out at a
    few hundred events a second. Events are spread over the lanes by message group (crc32
    of the group id): a group's events all go through one lane, in their order, so FIFO
    order within a group is kept, while different groups travel side by side. Each lane is
    one thread working through its calls in the order they were handed in, whoever handed
    them in: what `submit` queues for a group goes after everything queued for it before."""

    def __init__(self, client: SQSClient, queue_url: str, *, lanes: int = 1) -> None:
        self._sqs = client
        self._queue_url = queue_url
        self._lanes = max(1, lanes)
        self._lane_threads: list[ThreadPoolExecutor] = []
        self._pool_lock = threading.Lock()

    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        entries = [_entry(envelope) for envelope in envelopes]
        if self._lanes == 1 or len(entries) <= MAX_BATCH_ENTRIES:
            return self._send_in_order(entries, None).accepted
        accepted: set[str] = set()
        for lane in self._to_lanes(entries, None):
            accepted |= lane.result().accepted
        return accepted

    def narrowed(self, lanes: int) -> SqsPublisher:
        """The same client and queue on fewer lanes (threads of its own; close it)."""
        return SqsPublisher(self._sqs, self._queue_url, lanes=lanes)

    def submit(self, envelopes: Sequence[EventEnvelope], halt: threading.Event) -> list[Sending]:
        """Queue the envelopes on their lanes, behind what was queued there before, and
        return at once: the relay claims its next batch while these are on their way. Once
        `halt` is set, the lanes send nothing more of what was queued with it."""
        return self._to_lanes([_entry(envelope) for envelope in envelopes], halt)

    def _to_lanes(
        self, entries: list[SendMessageBatchRequestEntryTypeDef], halt: threading.Event | None
    ) -> list[Sending]:
        threads = self._threads()
        return [
            threads[lane].submit(self._send_in_order, part, halt)
            for lane, part in _split_by_lane(entries, self._lanes).items()
        ]

    def _threads(self) -> list[ThreadPoolExecutor]:
        with self._pool_lock:
            if not self._lane_threads:
                self._lane_threads = [
                    ThreadPoolExecutor(1, thread_name_prefix=f"sqs-lane-{n}")
                    for n in range(self._lanes)
                ]
            return self._lane_threads

    def close(self) -> None:
        with self._pool_lock:
            threads, self._lane_threads = self._lane_threads, []
        for thread in threads:
            thread.shutdown(wait=True)

    def _send_in_order(
        self, entries: list[SendMessageBatchRequestEntryTypeDef], halt: threading.Event | None
    ) -> Sent:
        sent = Sent()
        for chunk in _chunks(entries):
            if halt is not None and halt.is_set():
                break  # the rest is left untried, for the next run
            sent.tried.update(entry["Id"] for entry in chunk)
            try:
                response = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=chunk)
            except ClientError as exc:
                # Refused as a whole (too long, throttled past the retries, access denied):
                # none of this chunk was accepted; the next chunk may fare better.
                log.warning("SQS refused a batch of %d events: %s", len(chunk), exc)
                continue
            except BotoCoreError as exc:
                # SQS unreachable or timed out: the other chunks would wait for the same, and
                # so would the relay's later batches (which must not overtake this one).
                log.warning("SQS unreachable; %d events left for the relay: %s", len(chunk), exc)
                if halt is not None:
                    halt.set()
                break
            except BaseException:
                if halt is not None:
                    halt.set()  # the run fails: nothing queued behind goes first
                raise
            # Only what SQS lists as successful is accepted; a 200 can still refuse entries.
            sent.accepted.update(entry["Id"] for entry in response.get("Successful", []))
            for failure in response.get("Failed", []):
                log.warning(
                    "SQS refused event %s: %s %s (sender fault: %s)",
                    failure["Id"],
                    failure["Code"],
                    failure.get("Message", ""),
                    failure["SenderFault"],
                )
        return sent


@dataclass
class Sent:
    """What one lane's call made of its events: those SQS accepted, and those it was asked
    to take (the rest were not sent: the run was halted first)."""

    accepted: set[str] = field(default_factory=set)
    tried: set[str] = field(default_factory=set)


Sending = Future[Sent]


def by_lane(
    entries: Sequence[SendMessageBatchRequestEntryTypeDef], lanes: int
) -> list[list[SendMessageBatchRequestEntryTypeDef]]:
    """The entries split over at most `lanes` lanes by message group (crc32 of its id), each
    lane keeping the entries' order: a group's events all in one lane, in their order."""
    return list(_split_by_lane(entries, lanes).values())


def _split_by_lane(
    entries: Sequence[SendMessageBatchRequestEntryTypeDef], lanes: int
) -> dict[int, list[SendMessageBatchRequestEntryTypeDef]]:
    split: dict[int, list[SendMessageBatchRequestEntryTypeDef]] = {}
    for entry in entries:
        split.setdefault(zlib.crc32(entry["MessageGroupId"].encode()) % lanes, []).append(entry)
    return split


def _entry(envelope: EventEnvelope) -> SendMessageBatchRequestEntryTypeDef:
    # The outbox id (a ULID: 26 alphanumerics) is unique in the batch, as entry ids must be.
    return {
        "Id": envelope.outbox_id,
        "MessageBody": envelope.to_json(),
        "MessageGroupId": envelope.message_group,
        "MessageDeduplicationId": envelope.outbox_id,
    }


def _size(entry: SendMessageBatchRequestEntryTypeDef) -> int:
    return sum(len(str(value).encode()) for value in entry.values())


def _chunks(
    entries: list[SendMessageBatchRequestEntryTypeDef],
) -> Iterator[list[SendMessageBatchRequestEntryTypeDef]]:
    chunk: list[SendMessageBatchRequestEntryTypeDef] = []
    size = 0
    for entry in entries:
        entry_size = _size(entry)
        if chunk and (len(chunk) == MAX_BATCH_ENTRIES or size + entry_size > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        yield chunk


@dataclass(frozen=True)
class RelayReport:
    published: int
    failed: int
    batches: int
    # The ids SQS refused in the run (sent, not accepted), each with the attempts made on it
    # so far (this one included), for a caller that tries them again later rather than at
    # once. Not one of the report's figures.
    refused: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {"published": self.published, "failed": self.failed, "batches": self.batches}


# Batches a relay run holds at once, each in its own transaction on its own pooled
# connection: while one is sent and marked, the next is claimed and queued behind it on the
# lanes. bench_relay.py, 20 ms stand-in, 32 lanes, one sitting on a busy 2-core machine:
# 2 in flight 5.0k-5.5k events/s, 3 in flight 5.1k-6.1k (within the noise), one at a time
# 3.4k-3.5k. 2, with relay_loop's lock connection, fit the relay function's pool of 3
# (template.yaml; tests/unit/test_connection_budget.py checks it).
RELAY_IN_FLIGHT = 2


def relay_outbox(
    engine: Engine,
    publisher: Publisher,
    *,
    batch_size: int = 100,
    max_batches: int | None = None,
    clock: Callable[[], datetime] = utc_now,
    exclude: Collection[str] = (),
    in_flight: int = RELAY_IN_FLIGHT,
) -> RelayReport:
    """Publish what is still unpublished, oldest first, one short transaction per batch;
    rows in `exclude` (refused by SQS a moment ago: relay_loop's) are left alone.

    Up to `in_flight` batches at once: the next claim overlaps the current sends, and each
    batch is marked and committed, in claim order, once its sends are answered. On an
    SqsPublisher a batch's events are queued on the lanes behind the earlier batches' (a
    group's events in batch N+1 go after its events in batch N were answered); any other
    publisher sends one batch at a time, in order.

    Rows another publisher holds are skipped, not waited for. Rows SQS refused in this run
    are not claimed again by it, so a few poison rows cannot hold back the ones behind them
    (a later event of their group does overtake them). The run stops when a claim finds
    nothing, when SQS accepted nothing of a batch, when SQS could not be reached (a lane's
    connection or timeout error: what is queued behind it is not sent, so nothing overtakes
    it and an unreachable queue does not make the run spin), or after `max_batches`.
    Batches claimed but not sent are rolled back and not counted.
    """
    published = failed = batches = claimed = 0
    refused = _Refused(exclude)
    refused_here: dict[str, int] = {}
    halt = threading.Event()
    submit, done = _sender(publisher)
    # Marks and commits each batch once its sends are answered, on the batch's connection,
    # while this thread claims the next one on another. Not one after another: recorded in
    # claim order, a batch's UPDATE was once seen waiting on the server for 10 s (read
    # timeout) with later batches' claims open; each later batch must be free to commit.
    recorder = ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="relay-record")
    window: deque[_Claim] = deque()
    found_all = False
    try:
        while True:
            while (
                not found_all
                and not halt.is_set()
                and len(window) < max(1, in_flight)
                and (max_batches is None or claimed < max_batches)
            ):
                claim = _Claim.take(engine, batch_size, refused)
                if claim is None:
                    found_all = True
                    break
                if not claim.envelopes:
                    continue  # all refused a moment ago; claimed again without them
                claimed += 1
                window.append(claim)
                claim.sending = submit(claim.envelopes, halt)
                claim.recording = recorder.submit(claim.record, clock, refused)
            if not window:
                break
            recording = window[0].recording
            assert recording is not None
            accepted, rejected = recording.result()
            attempts = window.popleft().attempts
            batches += bool(accepted or rejected)
            published += len(accepted)
            failed += len(rejected)
            refused_here.update({i: attempts[i] + 1 for i in rejected})
            if not accepted:
                halt.set()
    except BaseException:
        halt.set()
        raise
    finally:
        for claim in window:
            claim.abandon()
        recorder.shutdown(wait=True)
        done()
    return RelayReport(published=published, failed=failed, batches=batches, refused=refused_here)


@dataclass
class _Claim:
    """Claimed rows on their way: the transaction that claimed them holds their locks
    until they are recorded."""

    conn: Connection
    envelopes: list[EventEnvelope]
    attempts: dict[str, int]  # outbox id -> publish attempts before this one
    sending: list[Sending] = field(default_factory=list)
    recording: Future[tuple[set[str], set[str]]] | None = None

    @classmethod
    def take(cls, engine: Engine, batch_size: int, refused: _Refused) -> _Claim | None:
        """The next batch, or None when there is nothing to claim. Rows refused in this
        run are left out, those a batch committing meanwhile refused too (see _Refused)."""
        conn = engine.connect()
        try:
            conn.begin()
            rows = conn.execute(_claim_unpublished(batch_size, exclude=refused.all())).all()
        except BaseException:
            conn.close()
            raise
        if not rows:
            conn.close()
            return None
        envelopes = [EventEnvelope.from_outbox_row(row) for row in rows]
        refused_meanwhile = refused.among({envelope.outbox_id for envelope in envelopes})
        if refused_meanwhile:
            envelopes = [e for e in envelopes if e.outbox_id not in refused_meanwhile]
        if not envelopes:
            conn.close()
        return cls(conn, envelopes, {row.id: row.publish_attempts for row in rows})

    def record(self, clock: Callable[[], datetime], refused: _Refused) -> tuple[set[str], set[str]]:
        """Wait for the sends, then mark what SQS accepted and count an attempt on what it
        refused, and commit; rows not sent are left as they were."""
        claimed = {envelope.outbox_id for envelope in self.envelopes}
        accepted: set[str] = set()
        tried: set[str] = set()
        for sending in self.sending:
            sent = sending.result()
            accepted |= sent.accepted
            tried |= sent.tried
        accepted &= claimed
        rejected = (tried & claimed) - accepted
        refused.add(rejected)  # before the commit unlocks them
        try:
            _mark(self.conn, accepted, rejected, clock)
            self.conn.commit()
        finally:
            self.conn.close()
        return accepted, rejected

    def abandon(self) -> None:
        """Roll back, once the sends and the recording already under way are over (the
        rest are dropped). What they raise is left: the run is failing already."""
        for sending in self.sending:
            sending.cancel()
        if self.recording is not None:
            self.recording.cancel()
            wait([self.recording])  # closes the connection if it ran
        wait(self.sending)
        self.conn.close()


class _Refused:
    """The ids SQS refused in a run, which the run does not claim again. A batch adds its
    refused rows before its commit unlocks them, so a claim running meanwhile (on another
    thread) that got them finds them here once it has them, and drops them."""

    def __init__(self, ids: Collection[str]) -> None:
        self._ids = set(ids)
        self._lock = threading.Lock()

    def add(self, ids: set[str]) -> None:
        with self._lock:
            self._ids |= ids

    def all(self) -> set[str]:
        with self._lock:
            return set(self._ids)

    def among(self, ids: set[str]) -> set[str]:
        with self._lock:
            return ids & self._ids


Submit = Callable[[Sequence[EventEnvelope], threading.Event], list[Sending]]


def _sender(publisher: Publisher) -> tuple[Submit, Callable[[], None]]:
    """How the relay hands a batch over, and what to release at the end of the run. An
    SqsPublisher queues it on its lanes; any other publisher (one the relay cannot know to
    keep a group's order across concurrent calls) gets one call at a time, in order."""
    if isinstance(publisher, SqsPublisher):
        return publisher.submit, lambda: None
    thread = ThreadPoolExecutor(1, thread_name_prefix="relay-send")

    def send(envelopes: Sequence[EventEnvelope], halt: threading.Event) -> Sent:
        if halt.is_set():
            return Sent()
        ids = {envelope.outbox_id for envelope in envelopes}
        try:
            sent = Sent(publisher.send(envelopes) & ids, ids)
        except BaseException:
            halt.set()  # the run fails: nothing queued behind goes first
            raise
        if not sent.accepted:
            halt.set()  # what is queued behind must not go first, nor spin
        return sent

    def submit(envelopes: Sequence[EventEnvelope], halt: threading.Event) -> list[Sending]:
        return [thread.submit(send, envelopes, halt)]

    return submit, lambda: thread.shutdown(wait=True)


def publish_committed(
    engine: Engine,
    publisher: Publisher,
    outbox_ids: Collection[str],
    *,
    clock: Callable[[], datetime] = utc_now,
) -> int:
    """The fast path: publish the rows a command has just committed; returns how many.

    Rows a relay already holds are skipped (it is publishing them), as are rows already
    published. Never raises: see below.
    """
    if not outbox_ids:
        return 0
    query = (
        select(outbox)
        .where(outbox.c.id.in_(outbox_ids), outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .with_for_update(skip_locked=True)
    )
    try:
        with engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return 0
            accepted, _ = _publish(conn, publisher, rows, clock)
        return len(accepted)
    except Exception:
        # The one place an error is logged and swallowed, on purpose: the command has
        # committed, its events are safe in the outbox, and the relay publishes whatever
        # this missed within a minute. Failing here would turn a done command into an error.
        log.warning(
            "fast-path publish failed; the relay will publish %s", outbox_ids, exc_info=True
        )
        return 0


def _claim_unpublished(batch_size: int, *, exclude: Collection[str]) -> Select[Any]:
    query = select(outbox).where(outbox.c.published_at.is_(None))
    if exclude:
        query = query.where(outbox.c.id.not_in(exclude))
    # Walks the (published_at, id) index in id order and locks only the rows it returns.
    return query.order_by(outbox.c.id).limit(batch_size).with_for_update(skip_locked=True)


def _publish(
    conn: Connection, publisher: Publisher, rows: Sequence[Any], clock: Callable[[], datetime]
) -> tuple[set[str], set[str]]:
    """Send the claimed rows and record the outcome in the claiming transaction."""
    envelopes = [EventEnvelope.from_outbox_row(row) for row in rows]
    claimed = {envelope.outbox_id for envelope in envelopes}
    accepted = publisher.send(envelopes) & claimed
    rejected = claimed - accepted
    _mark(conn, accepted, rejected, clock)
    return accepted, rejected


def _mark(
    conn: Connection, accepted: set[str], rejected: set[str], clock: Callable[[], datetime]
) -> None:
    if accepted:
        conn.execute(
            update(outbox).where(outbox.c.id.in_(accepted)).values(published_at=to_db_time(clock()))
        )
    if rejected:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(rejected))
            .values(publish_attempts=outbox.c.publish_attempts + 1)
        )


def relay(engine: Engine, publisher: Publisher, settings: Settings) -> RelayReport:
    """Publish whatever is still unpublished, in the settings' batches: the scheduled relay
    and `giftmarket outbox relay`."""
    return relay_outbox(
        engine,
        publisher,
        batch_size=settings.outbox_relay_batch_size,
        max_batches=settings.outbox_relay_max_batches,
    )


def publish_after_commit(
    engine: Callable[[], Engine], publisher: Callable[[], Publisher]
) -> Callable[[Sequence[str]], None]:
    """The command executor's `after_commit`: the fast path, publishing a command's events
    right after its commit. The engine and the publisher are asked for only when a commit
    wrote events; failures are logged, not raised (the relay sends what this misses)."""

    def publish(outbox_ids: Sequence[str]) -> None:
        if outbox_ids:
            publish_committed(engine(), publisher(), outbox_ids)

    return publish


# The named lock (MariaDB GET_LOCK) that keeps one relay loop running at a time. A lock held
# by a connection dies with it: a relay killed or timed out frees it for the next.
RELAY_LOCK = "giftmarket.outbox_relay"
# How long one GET_LOCK call waits before the loop looks at its time again.
_LOCK_WAIT_SECONDS = 1
_GET_LOCK = text("SELECT GET_LOCK(:name, :wait)")
_LOCK_HOLDER = text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()")
# A row SQS refused is tried again after a pause that doubles with its attempts, from
# _FIRST_RETRY_SECONDS up to _RETRY_REFUSED_SECONDS, not on every poll (retry_refused_after).
_FIRST_RETRY_SECONDS = 1.0
_RETRY_REFUSED_SECONDS = 60.0
# What one poll finds (tens of events under load) goes on this many lanes, one batch a pass:
# spread over all the lanes by group it would go as calls of one or two entries, each an
# SQS request (billed) and, locally, LocalStack's CPU. A poll that finds half a batch or
# more is a backlog: the next pass drains it on every lane, batches overlapping.
_NARROW_LANES = 2
# After a pass in which SQS accepted nothing it had (unreachable, throttled), the loop waits
# this long, doubling up to _MAX_BACKOFF_SECONDS, rather than polling at full speed.
_BACKOFF_SECONDS = 0.5
_MAX_BACKOFF_SECONDS = 8.0


@dataclass(frozen=True)
class RelayLoopReport:
    published: int
    failed: int
    batches: int
    passes: int  # relay_outbox runs: one per poll that found rows
    polls: int
    lock_wait_seconds: float  # waiting for the previous run's loop to end
    held_lock: bool  # False: the previous loop outlived this run's time; nothing was done

    def as_dict(self) -> dict[str, int | float | bool]:
        return asdict(self)


def relay_loop(
    engine: Engine,
    publisher: Publisher,
    *,
    run_seconds: float,
    poll_seconds: float,
    remaining_seconds: Callable[[], float],
    batch_size: int = 100,
    max_batches: int | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> RelayLoopReport:
    """Poll the outbox and publish what commits, for `run_seconds` or until
    `remaining_seconds()` (the invocation's time left, less a margin) runs out.

    Only one loop runs at a time: it first takes the relay lock, waiting for the previous
    run's loop to end (a schedule tick overlaps the run before it on purpose). Two loops at
    once would each send what the other skipped, and a group's later event could overtake
    an earlier one that the other loop holds."""
    started = time.monotonic()

    def left() -> float:
        return min(run_seconds - (time.monotonic() - started), remaining_seconds())

    published = failed = batches = passes = polls = 0
    narrow = publisher.narrowed(_NARROW_LANES) if isinstance(publisher, SqsPublisher) else None
    with engine.connect() as lock_conn:
        held = _take_relay_lock(lock_conn, left)
        lock_wait = time.monotonic() - started
        if not held:
            return RelayLoopReport(0, 0, 0, 0, 0, round(lock_wait, 3), held_lock=False)
        try:
            refused: dict[str, float] = {}  # outbox id -> when it may be tried again (monotonic)
            backoff = 0.0
            backlog = False
            while left() > 0:
                now = time.monotonic()
                refused = {i: until for i, until in refused.items() if until > now}
                polls += 1
                if backlog or narrow is None:
                    sender, most = publisher, max_batches
                else:
                    sender, most = narrow, 1
                try:
                    report = relay_outbox(
                        engine,
                        sender,
                        batch_size=batch_size,
                        max_batches=most,
                        clock=clock,
                        exclude=set(refused),
                    )
                except Exception:
                    # A pass that fails (a lock wait or a connection lost mid-batch) leaves
                    # its rows unpublished; the loop goes on, after a pause, for as long as
                    # it still holds the lock: ending the run would stop publishing until
                    # the next tick's run took over.
                    log.warning("a relay pass failed; polling on", exc_info=True)
                    if not _holds_relay_lock(lock_conn):
                        break
                    backoff = _longer(backoff)
                    time.sleep(max(0.0, min(backoff, left())))
                    continue
                backlog = sender is narrow and report.published >= batch_size // 2
                refused.update({i: now + retry_refused_after(n) for i, n in report.refused.items()})
                published += report.published
                failed += report.failed
                batches += report.batches
                passes += report.batches > 0
                backoff = _longer(backoff) if report.failed and not report.published else 0.0
                # A pass ends when a claim finds nothing (or SQS accepted nothing): wait a
                # poll interval for new commits; a backlog is taken on at once.
                if not backlog:
                    time.sleep(max(0.0, min(max(poll_seconds, backoff), left())))
        finally:
            _release_relay_lock(lock_conn)
            if narrow is not None:
                narrow.close()
    return RelayLoopReport(
        published, failed, batches, passes, polls, round(lock_wait, 3), held_lock=True
    )


def retry_refused_after(attempts: int) -> float:
    """How long the loop leaves a row SQS refused before trying it again, given the attempts
    made on it so far (the outbox's publish_attempts, this one included): 1 s, then doubling
    up to a minute.

    Most refusals pass: an entry failed on SQS's side (SenderFault false), a batch throttled
    past boto3's retries, SQS out of reach for a moment. Held a minute each, as they once
    were, each would be a minute of projection lag. A row refused for good (a sender fault)
    is tried once a minute once it has failed 7 times, and once more at the start of each
    loop: its count is kept in the outbox (relay_outbox's report), so a new loop does not
    start it again from 1 s."""
    doublings = min(max(attempts - 1, 0), 16)
    return min(_FIRST_RETRY_SECONDS * (1 << doublings), _RETRY_REFUSED_SECONDS)


def _longer(backoff: float) -> float:
    """The next pause after a pass that published nothing: doubling, within bounds."""
    return min(max(backoff * 2, _BACKOFF_SECONDS), _MAX_BACKOFF_SECONDS)


def _take_relay_lock(conn: Connection, left: Callable[[], float]) -> bool:
    while True:
        wait = max(0, min(_LOCK_WAIT_SECONDS, int(left())))
        got = conn.execute(_GET_LOCK, {"name": RELAY_LOCK, "wait": wait})
        # A named lock is not transactional: ending the implicit transaction keeps the lock
        # and keeps this connection from holding a read view open for the whole loop.
        conn.commit()
        if got.scalar() == 1:
            return True
        if left() <= 0:
            return False


def _holds_relay_lock(conn: Connection) -> bool:
    """Whether this connection still holds the relay lock (a lost connection lost it, and
    another run may hold it now)."""
    try:
        holder = conn.execute(_LOCK_HOLDER, {"name": RELAY_LOCK}).scalar()
        conn.commit()
    except Exception:
        log.warning("the relay lock's connection is gone", exc_info=True)
        return False
    return bool(holder)


def _release_relay_lock(conn: Connection) -> None:
    try:
        conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": RELAY_LOCK})
        conn.commit()
    except Exception:
        # A pooled connection must not go back to the pool holding the lock: closing it
        # makes the server release it.
        log.warning("releasing the relay lock failed; closing its connection", exc_info=True)
        conn.invalidate()


def relay_for(
    engine: Engine,
    publisher: Publisher,
    settings: Settings,
    remaining_seconds: Callable[[], float],
) -> RelayReport | RelayLoopReport:
    """The scheduled relay: one pass, or the polling loop when the settings give it time."""
    if settings.outbox_relay_run_seconds <= 0:
        return relay(engine, publisher, settings)
    return relay_loop(
        engine,
        publisher,
        run_seconds=settings.outbox_relay_run_seconds,
        poll_seconds=settings.outbox_relay_poll_ms / 1000,
        remaining_seconds=remaining_seconds,
        batch_size=settings.outbox_relay_batch_size,
        max_batches=settings.outbox_relay_max_batches,
    )
