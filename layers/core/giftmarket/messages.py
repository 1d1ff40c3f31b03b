"""The message an outbox row becomes on SQS: what the relay sends and the projector reads.

The body is JSON with the outbox row's identity (id, aggregate, version, event type), when
it happened, and the event's payload (`DomainEvent.to_payload()`). FIFO attributes: the
MessageGroupId is the row's `message_group` (one aggregate's events stay in order) and the
MessageDeduplicationId is the outbox id (SQS drops a resend within 5 minutes; the
projector's version guards make any later duplicate harmless).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from giftmarket.domain.events import DomainEvent, event_class

SCHEMA_VERSION = 1


class MalformedMessage(ValueError):
    """A message body that is not an event envelope; it can never succeed (→ DLQ)."""


@dataclass(frozen=True)
class EventEnvelope:
    outbox_id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    event_type: str
    message_group: str
    occurred_at: datetime
    payload: dict[str, Any]

    def event(self) -> DomainEvent | None:
        """The domain event this message carries, typed; None for an event type this code
        does not know (a newer writer's). A payload that is not the event its type names
        can never succeed (MalformedMessage)."""
        kind = event_class(self.event_type)
        if kind is None:
            return None
        try:
            return kind.from_payload(self.payload)
        except (ValueError, TypeError) as exc:
            raise MalformedMessage(f"unreadable {self.event_type} payload: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA_VERSION,
                "outbox_id": self.outbox_id,
                "aggregate_type": self.aggregate_type,
                "aggregate_id": self.aggregate_id,
                "version": self.version,
                "event_type": self.event_type,
                "message_group": self.message_group,
                "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
                "payload": self.payload,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, body: str) -> EventEnvelope:
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
                raise MalformedMessage(f"not an event envelope (schema {SCHEMA_VERSION})")
            payload = data["payload"]
            if not isinstance(payload, dict):
                raise MalformedMessage("payload must be an object")
            return cls(
                outbox_id=str(data["outbox_id"]),
                aggregate_type=str(data["aggregate_type"]),
                aggregate_id=str(data["aggregate_id"]),
                version=int(data["version"]),
                event_type=str(data["event_type"]),
                message_group=str(data["message_group"]),
                occurred_at=datetime.fromisoformat(data["occurred_at"]).astimezone(UTC),
                payload=payload,
            )
        except MalformedMessage:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedMessage(f"unreadable event envelope: {exc}") from exc

    @classmethod
    def from_outbox_row(cls, row: Any) -> EventEnvelope:
        """From an `outbox` table row (a SQLAlchemy Row or a dict with its columns)."""
        m = row._mapping if hasattr(row, "_mapping") else row
        occurred: datetime = m["occurred_at"]
        return cls(
            outbox_id=str(m["id"]),
            aggregate_type=str(m["aggregate_type"]),
            aggregate_id=str(m["aggregate_id"]),
            version=int(m["aggregate_version"]),
            event_type=str(m["event_type"]),
            message_group=str(m["message_group"]),
            occurred_at=occurred if occurred.tzinfo else occurred.replace(tzinfo=UTC),
            payload=dict(m["payload"]),
        )
