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
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Connection, Engine, Select, select, update

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
    order within a group is kept, while different groups travel side by side."""

    def __init__(self, client: SQSClient, queue_url: str, *, lanes: int = 1) -> None:
        self._sqs = client
        self._queue_url = queue_url
        self._lanes = max(1, lanes)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        entries = [_entry(envelope) for envelope in envelopes]
        if self._lanes == 1 or len(entries) <= MAX_BATCH_ENTRIES:
            return self._send_in_order(entries)
        accepted: set[str] = set()
        lanes = by_lane(entries, self._lanes)
        for lane_accepted in self._executor().map(self._send_in_order, lanes):
            accepted |= lane_accepted
        return accepted

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._lanes, thread_name_prefix="sqs-lane")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _send_in_order(self, entries: list[SendMessageBatchRequestEntryTypeDef]) -> set[str]:
        accepted: set[str] = set()
        for chunk in _chunks(entries):
            try:
                response = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=chunk)
            except ClientError as exc:
                # Refused as a whole (too long, throttled past the retries, access denied):
                # none of this chunk was accepted; the next chunk may fare better.
                log.warning("SQS refused a batch of %d events: %s", len(chunk), exc)
                continue
            except BotoCoreError as exc:
                # SQS unreachable or timed out: the other chunks would wait for the same.
                log.warning("SQS unreachable; %d events left for the relay: %s", len(chunk), exc)
                break
            # Only what SQS lists as successful is accepted; a 200 can still refuse entries.
            accepted.update(entry["Id"] for entry in response.get("Successful", []))
            for failure in response.get("Failed", []):
                log.warning(
                    "SQS refused event %s: %s %s (sender fault: %s)",
                    failure["Id"],
                    failure["Code"],
                    failure.get("Message", ""),
                    failure["SenderFault"],
                )
        return accepted


def by_lane(
    entries: Sequence[SendMessageBatchRequestEntryTypeDef], lanes: int
) -> list[list[SendMessageBatchRequestEntryTypeDef]]:
    """The entries split over at most `lanes` lanes by message group (crc32 of its id), each
    lane keeping the entries' order: a group's events all in one lane, in their order."""
    split: dict[int, list[SendMessageBatchRequestEntryTypeDef]] = {}
    for entry in entries:
        split.setdefault(zlib.crc32(entry["MessageGroupId"].encode()) % lanes, []).append(entry)
    return list(split.values())


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

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def relay_outbox(
    engine: Engine,
    publisher: Publisher,
    *,
    batch_size: int = 100,
    max_batches: int | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> RelayReport:
    """Publish what is still unpublished, oldest first, one short transaction per batch.

    Rows another publisher holds are skipped, not waited for. Rows SQS refused in this run
    are not claimed again by it, so a few poison rows cannot hold back the ones behind them.
    The run stops when a batch finds nothing, when SQS accepted nothing of a batch (an
    unreachable queue must not make it spin), or after `max_batches`.
    """
    published = failed = batches = 0
    refused: set[str] = set()
    while max_batches is None or batches < max_batches:
        query = _claim_unpublished(batch_size, exclude=refused)
        with engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                break
            batches += 1
            accepted, rejected = _publish(conn, publisher, rows, clock)
        published += len(accepted)
        failed += len(rejected)
        refused |= rejected
        if not accepted:
            break
    return RelayReport(published=published, failed=failed, batches=batches)


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
    return accepted, rejected


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
