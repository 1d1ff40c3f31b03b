"""The local SQS event source on LocalStack: real receives, Lambda's event shape, and only
successfully handled records deleted."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.support.stack import sqs_of

from giftmarket_local.sqs_source import SqsEventSource
from giftmarket_local.stack import Stack


def fifo_queue(stack: Stack) -> tuple[Any, str]:
    sqs = sqs_of(stack)
    url = sqs.create_queue(
        QueueName=f"source-{uuid.uuid4().hex[:12]}.fifo",
        Attributes={"FifoQueue": "true", "VisibilityTimeout": "1"},
    )["QueueUrl"]
    return sqs, url


def test_handled_records_are_deleted_and_reported_failures_come_back(stack: Stack) -> None:
    sqs, url = fifo_queue(stack)
    for i, group in enumerate(["a", "b", "c"]):
        sqs.send_message(
            QueueUrl=url,
            MessageBody=f"body-{i}",
            MessageGroupId=group,
            MessageDeduplicationId=str(i),
        )
    events: list[dict[str, Any]] = []

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        events.append(event)
        bad = [r["messageId"] for r in event["Records"] if r["body"] == "body-1"]
        return {"batchItemFailures": [{"itemIdentifier": m} for m in bad]}

    source = SqsEventSource(sqs, url, handler)
    delivered = 0
    deadline = time.monotonic() + 10
    while delivered < 3 and time.monotonic() < deadline:
        delivered += source.poll_once()[0]
    record = events[0]["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].endswith(".fifo")
    assert record["attributes"]["MessageGroupId"] in {"a", "b", "c"}
    assert {"receiptHandle", "md5OfBody", "awsRegion", "messageAttributes"} <= record.keys()

    time.sleep(1.2)  # the failed record's visibility timeout
    redelivered: list[str] = []
    deadline = time.monotonic() + 10
    while not redelivered and time.monotonic() < deadline:
        before = len(events)
        source.poll_once()
        redelivered = [r["body"] for e in events[before:] for r in e["Records"]]
    assert redelivered == ["body-1"]
    attempts = events[-1]["Records"][0]["attributes"]["ApproximateReceiveCount"]
    assert int(attempts) >= 2
