"""The outbox and the events queue as tests read them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, select, text

from giftmarket.adapters import tables
from giftmarket.adapters.db import Database
from giftmarket.messages import EventEnvelope


def outbox_envelopes(database: Database, *where: ColumnElement[bool]) -> list[EventEnvelope]:
    """The outbox rows matching `where` as the messages the relay would send, in id order."""
    o = tables.outbox
    with database.writer.connect() as conn:
        rows = conn.execute(select(o).where(*where).order_by(o.c.id)).all()
    return [EventEnvelope.from_outbox_row(row) for row in rows]


def mark_outbox_published(database: Database) -> None:
    """Every row earlier tests left unpublished marked published: a relay run then sends
    only the rows written after this."""
    with database.writer.begin() as conn:
        conn.execute(
            text("UPDATE outbox SET published_at = UTC_TIMESTAMP(6) WHERE published_at IS NULL")
        )


@contextmanager
def outbox_of_its_own(database: Database, aggregate_type: str) -> Iterator[Engine]:
    """The writer, with every row earlier tests left unpublished marked published (so a
    relay sends only the caller's rows), and the rows of `aggregate_type` the caller wrote
    deleted afterwards."""
    mark_outbox_published(database)
    yield database.writer
    with database.writer.begin() as conn:
        conn.execute(delete(tables.outbox).where(tables.outbox.c.aggregate_type == aggregate_type))


def drain_queue(sqs: Any, url: str, expected: int, *, timeout: float = 15) -> list[dict[str, Any]]:
    """Every message on the queue, each deleted as read (with its system attributes): until
    `expected` arrived (bounded by `timeout`), then one more empty poll to be sure nothing
    else is there."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if batch:
            entries = [
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)
            ]
            sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        messages += batch
        if not batch and len(messages) >= expected:
            break
    return messages
