"""The transactional outbox: events become rows in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, insert

from giftmarket.adapters.repositories import to_db_time
from giftmarket.adapters.tables import outbox
from giftmarket.commands.ports import Committed
from giftmarket.domain.events import DomainEvent
from giftmarket.domain.ids import new_id

_INSERT = insert(outbox)


def message_group(event: DomainEvent) -> str:
    """The SQS FIFO message group: one aggregate's events are delivered in order, different
    aggregates in parallel (read models guard on the aggregate version anyway)."""
    return f"{event.aggregate_type}:{event.aggregate_id}"


def outbox_row(event: DomainEvent, outbox_id: str) -> dict[str, Any]:
    return {
        "id": outbox_id,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "aggregate_version": event.version,
        "event_type": event.event_type,
        "message_group": message_group(event),
        "payload": event.to_payload(),
        "occurred_at": to_db_time(event.occurred_at),
    }


def write_events(session: Connection, events: Iterable[DomainEvent]) -> Committed:
    rows = [outbox_row(event, new_id()) for event in events]
    if rows:
        # One statement for all of a command's events (the driver sends one multi-row INSERT).
        session.execute(_INSERT, rows)
    versions: dict[str, int] = {}
    for row in rows:
        key = f"{row['aggregate_type']}:{row['aggregate_id']}"
        versions[key] = max(versions.get(key, 0), row["aggregate_version"])
    return Committed(outbox_ids=tuple(row["id"] for row in rows), versions=versions)
