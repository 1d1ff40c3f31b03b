"""The transactional outbox: events become rows in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import CursorResult, insert
from sqlalchemy.orm import Session

from giftmarket.adapters.repositories import to_db_time
from giftmarket.adapters.tables import outbox
from giftmarket.commands.ports import Committed
from giftmarket.domain.events import DomainEvent


def message_group(event: DomainEvent) -> str:
    """The SQS FIFO message group: one aggregate's events are delivered in order, different
    aggregates in parallel (read models guard on the aggregate version anyway)."""
    return f"{event.aggregate_type}:{event.aggregate_id}"


def write_events(session: Session, events: Iterable[DomainEvent]) -> Committed:
    ids: list[int] = []
    versions: dict[str, int] = {}
    for event in events:
        # One insert per event: its id is the read side's position marker, and a multi-row
        # insert's ids are not guaranteed consecutive under interleaved auto-increment locking.
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            insert(outbox).values(
                aggregate_type=event.aggregate_type,
                aggregate_id=event.aggregate_id,
                aggregate_version=event.version,
                event_type=event.event_type,
                message_group=message_group(event),
                payload=event.to_payload(),
                occurred_at=to_db_time(event.occurred_at),
            )
        )
        (outbox_id,) = result.inserted_primary_key or (0,)
        ids.append(int(outbox_id))
        key = f"{event.aggregate_type}:{event.aggregate_id}"
        versions[key] = max(versions.get(key, 0), event.version)
    return Committed(outbox_ids=tuple(ids), versions=versions)
