"""The projector's ProjectionLag metric: milliseconds from an event's commit to its
read-model write, one EMF value per projected event, none for an event that failed; and
EventsRetried, the records handed back to the queue. The dashboard and the projection-lag
alarm read them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.fakes import RecordedCommands

from giftmarket.bootstrap import Container, set_container
from giftmarket.domain.events import ProductLiked
from giftmarket.messages import EventEnvelope
from giftmarket.projections.projector import Projector, projection_lag_ms
from giftmarket.read_ports import Op, ReadModelWriter
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker


class FakeReadModels(ReadModelWriter):
    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on

    def apply(self, ops: Sequence[Op], *, outbox_id: str | None = None) -> int:
        if outbox_id == self.fail_on:
            raise ConnectionError("redis went away")
        return 1


def envelope(outbox_id: str, product_id: str, occurred_at: datetime) -> EventEnvelope:
    liked = ProductLiked(
        aggregate_id=product_id,
        version=2,
        occurred_at=occurred_at,
        product_id=product_id,
        user_id="U1",
        like_count=1,
    )
    return EventEnvelope(
        outbox_id=outbox_id,
        aggregate_type="product",
        aggregate_id=product_id,
        version=2,
        event_type="ProductLiked",
        message_group=f"product:{product_id}",
        occurred_at=occurred_at,
        payload=liked.to_payload(),
    )


def sqs_record(e: EventEnvelope, n: int) -> dict[str, Any]:
    return {
        "messageId": f"message-{n}",
        "receiptHandle": f"handle-{n}",
        "body": e.to_json(),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795325401200",
            "SequenceNumber": f"1889234567890123456{n}",
            "MessageGroupId": e.message_group,
            "SenderId": "AROAEXAMPLE:giftmarket-command-api",
            "MessageDeduplicationId": e.outbox_id,
            "ApproximateFirstReceiveTimestamp": "1795325401210",
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:ap-northeast-2:123456789012:giftmarket-events-prod.fifo",
        "awsRegion": "ap-northeast-2",
    }


def emitted_metrics(out: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for line in out.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "giftmarket"
        for definition in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = blob[definition["Name"]]
            values.setdefault(definition["Name"], []).extend(
                value if isinstance(value, list) else [value]
            )
    return values


def test_lag_is_the_time_from_the_commit_to_now_in_milliseconds() -> None:
    committed = datetime(2026, 12, 1, 15, 10, tzinfo=UTC)
    e = envelope("O1", "P1", committed)
    assert projection_lag_ms(e, committed + timedelta(seconds=2, microseconds=500)) == 2000.5


def test_a_clock_behind_the_database_gives_zero_lag_not_a_negative_one() -> None:
    committed = datetime(2026, 12, 1, 15, 10, tzinfo=UTC)
    assert projection_lag_ms(envelope("O1", "P1", committed), committed - timedelta(1)) == 0.0


def test_the_handler_emits_one_lag_value_per_projected_event_and_counts_retries(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    now = datetime.now(UTC)
    events = [
        envelope("01KAQ3Y4MJ0A1B2C3D4E5F6G71", "P1", now - timedelta(seconds=3)),
        envelope("01KAQ3Y4MJ0A1B2C3D4E5F6G72", "P2", now - timedelta(seconds=60)),
        envelope("01KAQ3Y4MJ0A1B2C3D4E5F6G73", "P3", now - timedelta(seconds=1)),
    ]
    batch = {"Records": [sqs_record(e, n) for n, e in enumerate(events)]}
    # No command may run for these events: the executor has no handler for any.
    no_commands = RecordedCommands(()).executor
    projector = Projector(FakeReadModels(fail_on=events[2].outbox_id), no_commands)
    set_container(Container(Settings(environment="test"), projector=projector))
    capsys.readouterr()
    try:
        reply = LocalInvoker().invoke_event_raw("ProjectorFunction", batch)
    finally:
        set_container(None)

    assert reply == {"batchItemFailures": [{"itemIdentifier": "message-2"}]}
    metrics = emitted_metrics(capsys.readouterr().out)
    first, second = metrics["ProjectionLag"]
    assert 3000 <= first < 3000 + 5000
    assert 60000 <= second < 60000 + 5000
    assert metrics["EventsRetried"] == [1.0]
