"""Worker processes killed between a command's commit and its publish lose no event: the relay
sends what the dead processes never did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable

from sqlalchemy import select
from tests.reliability.load import soak
from tests.support.outbox import mark_outbox_published
from tests.support.stack import sqs_of

from giftmarket.adapters import tables
from giftmarket.adapters.db import Database
from giftmarket.adapters.publisher import relay
from giftmarket.bootstrap import bootstrap
from giftmarket.messages import EventEnvelope
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

# Runs one signup whose after-commit hook (the fast path) kills the process with SIGKILL:
# the transaction is committed, nothing is published, and no cleanup code gets to run.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from dataclasses import replace
    from giftmarket.bootstrap import bootstrap
    from giftmarket.commands import accounts

    container = bootstrap()
    def die(outbox_ids):
        print("committed", *outbox_ids, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    executor = replace(container.command_executor, after_commit=die)
    command = accounts.SignUp(sys.argv[1], "password123", "doomed")
    executor.execute(command)
    print("survived", flush=True)
    """
)


WORKERS = soak(4, cap=32)


def test_events_committed_by_processes_killed_before_publishing_are_relayed(
    stack: Stack,
    database: Database,
    make_settings: Callable[..., Settings],
    figure: Callable[[str], None],
) -> None:
    sqs = sqs_of(stack)
    mark_outbox_published(database)  # only this test's rows for the relay to send
    queue_url = sqs.create_queue(
        QueueName=f"crash-{uuid.uuid4().hex[:10]}.fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    env = {**os.environ, **stack.config.app_env(), "EVENTS_QUEUE_URL": queue_url}
    emails = [f"{uuid.uuid4().hex}@crash.io" for _ in range(WORKERS)]

    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, email],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for email in emails
    ]
    committed_by: dict[str, list[str]] = {}
    for email, child in zip(emails, children, strict=True):
        out, err = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL, err
        assert "survived" not in out
        committed_by[email] = out.split()[1:]
        assert committed_by[email], out
    committed = [outbox_id for ids in committed_by.values() for outbox_id in ids]
    container = bootstrap(make_settings(events_queue_url=queue_url))
    try:
        o = tables.outbox
        with container.database.writer.connect() as conn:
            unpublished = conn.execute(
                select(o.c.id).where(o.c.id.in_(committed), o.c.published_at.is_(None))
            ).scalars()
            assert sorted(unpublished) == sorted(committed)

        report = relay(container.database.writer, container.publisher, container.settings)
        assert report.published >= len(committed)

        seen: dict[str, EventEnvelope] = {}
        deadline = time.monotonic() + 20
        while not set(committed) <= seen.keys() and time.monotonic() < deadline:
            for message in sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", []):
                envelope = EventEnvelope.from_json(message["Body"])
                seen[envelope.outbox_id] = envelope
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        assert set(committed) <= seen.keys()
        for email, ids in committed_by.items():
            assert seen[ids[0]].payload["email"] == email
        figure(
            f"{WORKERS} workers SIGKILLed between commit and publish: {len(committed)} events"
            f" committed unpublished, {len(set(committed) & seen.keys())} delivered after"
            f" the relay ran, {len(set(committed) - seen.keys())} lost"
        )
    finally:
        container.close()
