"""Dead-lettered events back onto the events queue, for another try after a fix."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class RedriveReport:
    moved: int
    failed: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def redrive(
    sqs: SQSClient, dlq_url: str, queue_url: str, *, max_messages: int | None = None
) -> RedriveReport:
    """Move messages from the DLQ to the queue, ten at a time, until the DLQ looks empty.

    Each keeps its message group (its aggregate's order) and gets a fresh deduplication id:
    resent under the old one within five minutes, SQS would silently drop it. A message is
    deleted from the DLQ only once the queue has accepted it; the projector's version guards
    make any double delivery harmless.
    """
    moved = failed = 0
    while max_messages is None or moved + failed < max_messages:
        batch = max(1, min(10, (max_messages or 10) - moved - failed))
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=batch,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
        ).get("Messages", [])
        if not messages:
            break
        entries = {str(i): message for i, message in enumerate(messages)}
        result = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": entry_id,
                    "MessageBody": message["Body"],
                    "MessageGroupId": message["Attributes"]["MessageGroupId"],
                    "MessageDeduplicationId": (
                        f"{message['Attributes'].get('MessageDeduplicationId', '')[:80]}"
                        f":redrive:{uuid.uuid4().hex[:12]}"
                    ),
                }
                for entry_id, message in entries.items()
            ],
        )
        accepted = [entries[s["Id"]] for s in result.get("Successful", [])]
        if accepted:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(accepted)
                ],
            )
        moved += len(accepted)
        failed += len(result.get("Failed", []))
        if not accepted:
            break  # the queue refuses everything: stop rather than spin
    return RedriveReport(moved=moved, failed=failed)
