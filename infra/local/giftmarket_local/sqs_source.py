"""An SQS event source mapping, locally: LocalStack queue → the function's handler.

As Lambda's mapping does, it polls the queue (short polls 20 ms apart while it is idle, not
long polls: see SqsEventSource), hands the handler an SQS event of up to ten records, and,
with ReportBatchItemFailures, deletes only the records the handler did not list as failed;
the failed ones reappear after the visibility timeout and, past the queue's
maxReceiveCount, move to the dead-letter queue.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("giftmarket.sqs_source")

Invoke = Callable[[dict[str, Any]], Any]


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda builds from received messages (same field names and casing)."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes", {})),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": value.get("BinaryValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value.get("DataType", "String"),
                    }
                    for name, value in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),  # noqa: S324
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class SqsEventSource:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        invoke: Invoke,
        *,
        batch_size: int = 10,
        wait_seconds: int = 0,
        idle_seconds: float = 0.02,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._invoke = invoke
        self._batch_size = batch_size
        # Short polls and a short idle pause rather than long polling: LocalStack 4.13 can
        # hang in its shutdown after serving long polls (seen here: SIGTERM then nothing).
        self._wait_seconds = wait_seconds
        self._idle_seconds = idle_seconds
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        self._queue_arn: str = attributes["Attributes"]["QueueArn"]
        self._region: str = sqs.meta.region_name

    def poll_once(self) -> tuple[int, int]:
        """One receive → invoke → delete round. Returns (delivered, failed)."""
        received = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = received.get("Messages", [])
        if not messages:
            return 0, 0
        event = sqs_event(messages, self._queue_arn, self._region)
        try:
            response = self._invoke(event)
        except Exception:
            # A handler error fails the whole batch: nothing is deleted, all come back later.
            log.exception("handler failed on a batch of %d", len(messages))
            return len(messages), len(messages)
        failed = {
            item["itemIdentifier"]
            for item in (response or {}).get("batchItemFailures", [])
            if isinstance(item, dict) and "itemIdentifier" in item
        }
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        if failed:
            log.warning(
                "%d of %d records failed; they return after the visibility timeout",
                len(failed),
                len(messages),
            )
        return len(messages), len(failed)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    if self.poll_once() == (0, 0):
                        stop.wait(self._idle_seconds)
                except Exception:
                    log.exception("polling %s failed; retrying", self._queue_url)
                    stop.wait(1.0)
        finally:
            # An open keep-alive connection holds LocalStack's shutdown up: close it.
            self._sqs.close()
