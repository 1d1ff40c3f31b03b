"""The SchemaMigration custom resource always gets exactly one answer: the work's outcome, or
FAILED before the function's time runs out (else the deploy would wait for its timeout)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from giftmarket.adapters.cloudformation import answer_custom_resource, is_custom_resource_request

pytestmark = pytest.mark.unit


def request(kind: str) -> dict[str, Any]:
    return {
        "RequestType": kind,
        "ResponseURL": "https://cfn-response.example/put?sig=1",
        "StackId": "stack-1",
        "RequestId": "request-1",
        "LogicalResourceId": "SchemaMigration",
    }


class Sent:
    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []

    def __call__(self, url: str, body: bytes, timeout: float) -> None:
        assert url == "https://cfn-response.example/put?sig=1"
        self.answers.append(json.loads(body))


@pytest.mark.parametrize("kind", ["Create", "Update"])
def test_create_and_update_run_the_work_and_send_its_data(kind: str) -> None:
    sent = Sent()
    status = answer_custom_resource(
        request(kind),
        lambda: 900_000,
        lambda: {"revision": "0003"},
        physical_id="schema",
        send=sent,
    )
    assert status == "SUCCESS"
    (answer,) = sent.answers
    assert answer == {
        "Status": "SUCCESS",
        "Reason": "done",
        "PhysicalResourceId": "schema",
        "StackId": "stack-1",
        "RequestId": "request-1",
        "LogicalResourceId": "SchemaMigration",
        "Data": {"revision": "0003"},
    }


def test_delete_leaves_the_work_undone() -> None:
    sent, ran = Sent(), []

    def work() -> dict[str, str]:
        ran.append(1)
        return {}

    status = answer_custom_resource(
        request("Delete"), lambda: 900_000, work, physical_id="s", send=sent
    )
    assert status == "SUCCESS" and ran == [] and sent.answers[0]["Data"] == {}


def test_a_failing_work_is_answered_failed_with_its_reason() -> None:
    def work() -> dict[str, str]:
        raise RuntimeError("(1045, Access denied for user 'giftmarket_admin')")

    sent = Sent()
    assert (
        answer_custom_resource(request("Update"), lambda: 900_000, work, physical_id="s", send=sent)
        == "FAILED"
    )
    (answer,) = sent.answers
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("RuntimeError: (1045, Access denied")


def test_work_still_running_near_the_timeout_is_answered_failed_once() -> None:
    finished = threading.Event()

    def slow_work() -> dict[str, str]:
        finished.wait(timeout=5)
        return {"revision": "late"}

    sent = Sent()

    def watch() -> None:
        # The watchdog has answered before the work ends; the late success is not sent.
        for _ in range(100):
            if sent.answers:
                break
            threading.Event().wait(0.02)
        finished.set()

    threading.Thread(target=watch).start()
    status = answer_custom_resource(
        request("Update"), lambda: 1_100, slow_work, physical_id="s", margin_seconds=1.0, send=sent
    )
    assert status == "FAILED"
    (answer,) = sent.answers
    assert answer["Status"] == "FAILED" and "before the timeout" in answer["Reason"]


def test_only_cloudformation_requests_are_taken_for_one() -> None:
    assert is_custom_resource_request(request("Create"))
    assert not is_custom_resource_request({})
    assert not is_custom_resource_request({"admin": {"action": "list"}})
    assert not is_custom_resource_request("Create")
