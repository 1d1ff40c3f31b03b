"""Answering a CloudFormation custom resource (the SchemaMigration of template.yaml).

CloudFormation invokes the function with the request and waits for the answer at the request's
presigned S3 URL: until it arrives, the stack operation waits (at most the resource's
ServiceTimeout). So exactly one answer is sent whatever happens: the work's outcome, or FAILED
shortly before the function itself would time out.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["SUCCESS", "FAILED"]
# CloudFormation shows the reason in the stack's events; it refuses an answer over 4 KiB.
MAX_REASON = 1000


def is_custom_resource_request(event: object) -> bool:
    return isinstance(event, dict) and "RequestType" in event and "ResponseURL" in event


def put_answer(url: str, body: bytes, timeout: float) -> None:
    """PUT the answer to the presigned URL (Content-Type empty, as the URL was signed)."""
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https URL given by CloudFormation)
        response.read()


@dataclass
class CustomResourceAnswer:
    """Sends the one answer to one request; later calls are ignored."""

    event: Mapping[str, Any]
    physical_id: str
    send: Callable[[str, bytes, float], None] = put_answer
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: Status | None = None

    def __call__(
        self, status: Status, reason: str = "", data: Mapping[str, str] | None = None
    ) -> bool:
        with self._lock:
            if self.sent is not None:
                return False
            self.sent = status
        body = {
            "Status": status,
            "Reason": reason[:MAX_REASON] or status,
            "PhysicalResourceId": self.physical_id,
            "StackId": self.event["StackId"],
            "RequestId": self.event["RequestId"],
            "LogicalResourceId": self.event["LogicalResourceId"],
            "Data": dict(data or {}),
        }
        self.send(str(self.event["ResponseURL"]), json.dumps(body).encode(), self.timeout_seconds)
        return True


def answer_custom_resource(
    event: Mapping[str, Any],
    remaining_ms: Callable[[], int],
    work: Callable[[], Mapping[str, str]],
    *,
    physical_id: str,
    on_delete: Callable[[], None] | None = None,
    margin_seconds: float = 20.0,
    send: Callable[[str, bytes, float], None] = put_answer,
) -> Status:
    """Run `work` for a Create or Update (nothing, or `on_delete`, for a Delete) and answer
    CloudFormation with its outcome; answer FAILED `margin_seconds` before the invocation's
    time runs out if the work is still going. Returns the status sent."""
    answer = CustomResourceAnswer(event, physical_id, send)
    deadline = max(remaining_ms() / 1000 - margin_seconds, 0.0)
    watchdog = threading.Timer(
        deadline, answer, ("FAILED", f"still running {margin_seconds:.0f} s before the timeout")
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        if event["RequestType"] == "Delete":
            if on_delete is not None:
                on_delete()
            answer("SUCCESS", "nothing to undo")
        else:
            answer("SUCCESS", "done", work())
    except Exception as exc:  # every failure must reach CloudFormation, not only be logged
        answer("FAILED", f"{type(exc).__name__}: {exc}")
    finally:
        watchdog.cancel()
    assert answer.sent is not None
    return answer.sent
