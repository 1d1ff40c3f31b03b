"""The projector Lambda handler with a recorded SQS FIFO batch, a fake Lambda context and a
container whose read models and commands are fakes: what reaches Redis, and what SQS is
told to retry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.support.fakes import RecordedCommands

from giftmarket.bootstrap import Container, set_container
from giftmarket.commands.accounts import IssueWelcomeCoupon
from giftmarket.projections.projector import Projector
from giftmarket.read_ports import Op, ReadModelWriter
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker

EVENT = Path(__file__).resolve().parents[2] / "functions" / "projector" / "events"


class FakeReadModels(ReadModelWriter):
    def __init__(self, fail_on: str | None = None) -> None:
        self.applied: list[tuple[str | None, list[Op]]] = []
        self.fail_on = fail_on

    def apply(self, ops: Sequence[Op], *, outbox_id: str | None = None) -> int:
        if outbox_id == self.fail_on:
            raise ConnectionError("redis went away")
        self.applied.append((outbox_id, list(ops)))
        return 1


def welcome_coupons() -> RecordedCommands:
    return RecordedCommands((IssueWelcomeCoupon,))


@pytest.fixture
def recorded() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENT / "sqs_fifo_batch.json").read_text())
    return event


def run(event: dict[str, Any], read_models: FakeReadModels, commands: RecordedCommands) -> Any:
    projector = Projector(read_models, commands.executor)
    container = Container(Settings(environment="test"), projector=projector)
    set_container(container)
    try:
        return LocalInvoker().invoke_event_raw("ProjectorFunction", event)
    finally:
        set_container(None)


def test_a_recorded_batch_is_projected_and_only_the_poison_record_is_retried(
    recorded: dict[str, Any],
) -> None:
    read_models, commands = FakeReadModels(), welcome_coupons()
    reply = run(recorded, read_models, commands)

    poison = recorded["Records"][2]["messageId"]
    assert reply == {"batchItemFailures": [{"itemIdentifier": poison}]}
    assert [outbox_id for outbox_id, _ in read_models.applied] == [
        "01KAQ3Y4MJ0A1B2C3D4E5F6G7H",
        "01KAQ3Y4MK0A1B2C3D4E5F6G7H",
    ]
    (_, user_ops), (_, order_ops) = read_models.applied
    assert user_ops[0]["k"] == "user" and user_ops[0]["once"]["email"] == "buyer@example.com"
    order = order_ops[0]
    assert (order["k"], order["v"], order["set"]["status"]) == ("order", "1", "PAID")
    assert order["once"]["paid"] == "4000" and order["once"]["created_us"] == "1795325401123456"
    signed_up = json.loads(recorded["Records"][0]["body"])
    assert signed_up["event_type"] == "UserSignedUp"
    # the welcome coupon, for UserSignedUp
    assert commands.executed == [IssueWelcomeCoupon(signed_up["aggregate_id"])]


def test_a_redis_failure_fails_that_record_and_holds_back_its_group_only(
    recorded: dict[str, Any],
) -> None:
    # The user's record fails: SQS retries it; the order (another group) is projected.
    read_models = FakeReadModels(fail_on="01KAQ3Y4MJ0A1B2C3D4E5F6G7H")
    reply = run(recorded, read_models, welcome_coupons())
    failed = {f["itemIdentifier"] for f in reply["batchItemFailures"]}
    records = recorded["Records"]
    assert failed == {records[0]["messageId"], records[2]["messageId"]}
    assert [outbox_id for outbox_id, _ in read_models.applied] == ["01KAQ3Y4MK0A1B2C3D4E5F6G7H"]
