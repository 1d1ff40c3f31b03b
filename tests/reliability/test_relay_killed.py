"""A relay process SIGKILLed in the middle of a batch, then run again: every event is
delivered, and the ones sent twice reach consumers once.

The relay claims a batch of outbox rows, sends it to SQS ten messages at a time, and marks
the rows published when the batch commits. Killed after some of a batch's sends, SQS holds
messages whose rows still read unpublished: the next run sends them again, with the same
deduplication ids (the outbox ids), and the FIFO queue drops the copies. (Were a copy ever
delivered, the projector skips events it has applied: test_read_models.py delivers every
event twice.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select
from tests.reliability.load import soak
from tests.support.outbox import drain_queue, outbox_of_its_own

from giftmarket.adapters.db import Database
from giftmarket.adapters.publisher import relay
from giftmarket.adapters.repositories import to_db_time
from giftmarket.adapters.tables import outbox
from giftmarket.bootstrap import bootstrap
from giftmarket.domain.ids import new_id
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

AGGREGATE = "relaykill"
EVENTS = soak(1500)
GROUPS = 40
BATCH = 200  # rows per relay batch, sent on the configured lanes side by side
KILL_AFTER_SENDS = 60  # SendMessageBatch calls answered before the kill: a few batches in

# The relay, in a process of its own, SIGKILLs itself right after its N-th SendMessageBatch
# call returns (on whichever lane): SQS has those messages, and their batch has not
# committed. It prints how many events SQS had accepted by then.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading
    import boto3
    from giftmarket.adapters.publisher import relay
    from giftmarket.bootstrap import bootstrap

    sends = accepted = 0
    lock = threading.Lock()
    def after_send(parsed, **_):
        global sends, accepted
        with lock:
            sends += 1
            accepted += len(parsed.get("Successful", []))
            if sends == int(sys.argv[1]):
                print("killed after", sends, accepted, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("after-call.sqs.SendMessageBatch", after_send)
    container = bootstrap()
    report = relay(container.database.writer, container.publisher, container.settings)
    print("survived", report, flush=True)
    """
)


@pytest.fixture
def queue_url(sqs: Any) -> Iterator[str]:
    url: str = sqs.create_queue(
        QueueName=f"relaykill-{uuid.uuid4().hex[:12]}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
    )["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def engine(database: Database) -> Iterator[Engine]:
    with outbox_of_its_own(database, AGGREGATE) as writer:
        yield writer


def write_events(engine: Engine) -> list[str]:
    rows = [
        {
            "id": new_id(),
            "aggregate_type": AGGREGATE,
            "aggregate_id": f"A{n % GROUPS}",
            "aggregate_version": n // GROUPS + 1,
            "event_type": "Happened",
            "message_group": f"{AGGREGATE}:A{n % GROUPS}",
            "payload": {"n": n},
            "occurred_at": to_db_time(datetime.now(UTC)),
        }
        for n in range(EVENTS)
    ]
    with engine.begin() as conn:
        conn.execute(insert(outbox), rows)
    return [str(row["id"]) for row in rows]


def published(engine: Engine, ids: list[str]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(outbox.c.id.in_(ids), outbox.c.published_at.isnot(None))
            ).scalar_one()
        )


def test_a_relay_killed_mid_batch_then_run_again_delivers_every_event_once(
    stack: Stack,
    engine: Engine,
    sqs: Any,
    queue_url: str,
    make_settings: Callable[..., Settings],
    figure: Callable[[str], None],
) -> None:
    ids = write_events(engine)
    env = {
        **os.environ,
        **stack.config.app_env(),
        "EVENTS_QUEUE_URL": queue_url,
        "OUTBOX_RELAY_BATCH_SIZE": str(BATCH),
    }

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(KILL_AFTER_SENDS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert "survived" not in child.stdout
    sent_before_kill = int(child.stdout.split()[-1])
    marked = published(engine, ids)
    assert marked % BATCH == 0  # whole batches, the committed ones only
    assert sent_before_kill > marked  # sent, not marked: the next run sends them again

    container = bootstrap(make_settings(events_queue_url=queue_url, outbox_relay_batch_size=BATCH))
    try:
        report = relay(container.database.writer, container.publisher, container.settings)
    finally:
        container.close()

    assert report.published == EVENTS - marked
    assert published(engine, ids) == EVENTS
    messages = drain_queue(sqs, queue_url, EVENTS, timeout=60)
    delivered = Counter(m["Attributes"]["MessageDeduplicationId"] for m in messages)
    assert set(delivered) == set(ids)
    copies = sum(n - 1 for n in delivered.values())
    # In each message group, the events arrive in outbox order.
    by_group: dict[str, list[str]] = {}
    for m in messages:
        by_group.setdefault(m["Attributes"]["MessageGroupId"], []).append(
            m["Attributes"]["MessageDeduplicationId"]
        )
    assert all(group == sorted(group) for group in by_group.values())
    assert copies == 0
    figure(
        f"relay SIGKILLed after {KILL_AFTER_SENDS} SendMessageBatch calls ({sent_before_kill}"
        f" of {EVENTS} events sent, {marked} marked published): the rerun sent"
        f" {report.published}, {sent_before_kill - marked} of them a second time; {len(delivered)}"
        f" of {EVENTS} delivered, {copies} delivered twice (FIFO deduplication), group order kept"
    )
