"""`giftmarket dlq redrive` on LocalStack: poison events really dead-lettered by the queue's
redrive policy go back to the events queue, keeping their message group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from tests.support.stack import sqs_of

from giftmarket_local.stack import Stack


def queues(stack: Stack) -> tuple[Any, str, str]:
    sqs: Any = sqs_of(stack)
    name = uuid.uuid4().hex[:10]
    fifo = {"FifoQueue": "true"}
    dlq = sqs.create_queue(QueueName=f"dlq-{name}.fifo", Attributes=fifo)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue = sqs.create_queue(
        QueueName=f"events-{name}.fifo",
        Attributes={
            **fifo,
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"}),
        },
    )["QueueUrl"]
    return sqs, queue, dlq


def dead_lettered(sqs: Any, dlq: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=dlq,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def receive_all(sqs: Any, url: str, expected: int, *, delete: bool) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while len(seen) < expected and time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["MessageGroupId"],
        ).get("Messages", []):
            seen.append(message)
            if delete:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return seen


def test_redrive_moves_dead_lettered_events_back_with_their_groups(stack: Stack) -> None:
    sqs, queue, dlq = queues(stack)
    for i in range(13):  # more than one batch of ten
        sqs.send_message(
            QueueUrl=queue,
            MessageBody=f"poison-{i}",
            MessageGroupId=f"g{i % 3}",
            MessageDeduplicationId=str(i),
        )
    # A consumer that always fails: received once, never deleted, so the queue dead-letters
    # each message once it is received again (maxReceiveCount 1).
    receive_all(sqs, queue, 13, delete=False)
    deadline = time.monotonic() + 20
    while dead_lettered(sqs, dlq) < 13 and time.monotonic() < deadline:
        time.sleep(1.1)  # the visibility timeout; the next receive moves them to the DLQ
        sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert dead_lettered(sqs, dlq) == 13

    env = {**os.environ, **stack.config.app_env(), "EVENTS_QUEUE_URL": queue, "EVENTS_DLQ_URL": dlq}
    result = subprocess.run(
        [sys.executable, "-m", "giftmarket.cli", "dlq", "redrive"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"moved": 13, "failed": 0}

    back = receive_all(sqs, queue, 13, delete=True)
    assert sorted(m["Body"] for m in back) == sorted(f"poison-{i}" for i in range(13))
    assert {m["Body"]: m["Attributes"]["MessageGroupId"] for m in back} == {
        f"poison-{i}": f"g{i % 3}" for i in range(13)
    }
    assert sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages") is None
