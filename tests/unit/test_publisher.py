"""SqsPublisher on a real botocore SQS client whose calls are stubbed: no network.

The Stubber checks every request against the SQS API model, so what is asserted here is
what SQS would receive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from sqlalchemy import Engine

from giftmarket.adapters.db import Database
from giftmarket.adapters.publisher import (
    SqsPublisher,
    build_sqs_client,
    by_lane,
    publish_after_commit,
    retry_refused_after,
)
from giftmarket.bootstrap import Container
from giftmarket.commands.context import CommandContext
from giftmarket.commands.ports import Publisher
from giftmarket.messages import EventEnvelope
from giftmarket.settings import Settings

QUEUE_URL = "http://sqs.local/000000000000/events.fifo"


def envelope(n: int, *, group: str = "product:P1", payload_bytes: int = 0) -> EventEnvelope:
    return EventEnvelope(
        outbox_id=f"01J0000000000000000000{n:04d}",
        aggregate_type="product",
        aggregate_id=group.split(":")[1],
        version=n,
        event_type="ProductLiked",
        message_group=group,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        payload={"user_id": "U1", "padding": "x" * payload_bytes},
    )


def entries(envelopes: list[EventEnvelope]) -> list[dict[str, str]]:
    return [
        {
            "Id": e.outbox_id,
            "MessageBody": e.to_json(),
            "MessageGroupId": e.message_group,
            "MessageDeduplicationId": e.outbox_id,
        }
        for e in envelopes
    ]


def accepted(*ids: str) -> list[dict[str, str]]:
    return [{"Id": i, "MessageId": f"m-{i}", "MD5OfMessageBody": "0" * 32} for i in ids]


def refused(*ids: str) -> list[dict[str, Any]]:
    return [{"Id": i, "SenderFault": True, "Code": "InvalidParameterValue"} for i in ids]


@pytest.fixture
def client() -> Any:
    return build_sqs_client("us-east-1", "http://127.0.0.1:9")


@pytest.fixture
def stubbed(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def expect(stubbed: Stubber, sent: list[EventEnvelope], response: dict[str, Any]) -> None:
    stubbed.add_response(
        "send_message_batch",
        {"Failed": [], **response},
        {"QueueUrl": QUEUE_URL, "Entries": entries(sent)},
    )


def test_events_go_in_batches_of_ten_with_group_and_dedup_ids(
    client: Any, stubbed: Stubber
) -> None:
    events = [envelope(n, group=f"product:P{n % 3}") for n in range(23)]
    for chunk in (events[:10], events[10:20], events[20:]):
        expect(stubbed, chunk, {"Successful": accepted(*(e.outbox_id for e in chunk))})

    assert SqsPublisher(client, QUEUE_URL).send(events) == {e.outbox_id for e in events}


def test_entries_sqs_lists_as_failed_are_not_accepted(client: Any, stubbed: Stubber) -> None:
    events = [envelope(n) for n in range(4)]
    ids = [e.outbox_id for e in events]
    expect(stubbed, events, {"Successful": accepted(ids[0], ids[2]), "Failed": refused(ids[1])})

    # ids[3] is in neither list: only what SQS names as successful counts as sent.
    assert SqsPublisher(client, QUEUE_URL).send(events) == {ids[0], ids[2]}


def test_a_batch_refused_as_a_whole_loses_only_its_own_events(
    client: Any, stubbed: Stubber
) -> None:
    events = [envelope(n) for n in range(15)]
    stubbed.add_client_error(
        "send_message_batch",
        service_error_code="AWS.SimpleQueueService.BatchRequestTooLong",
        http_status_code=400,
    )
    expect(stubbed, events[10:], {"Successful": accepted(*(e.outbox_id for e in events[10:]))})

    assert SqsPublisher(client, QUEUE_URL).send(events) == {e.outbox_id for e in events[10:]}


def test_a_message_too_large_to_share_a_batch_travels_alone(client: Any, stubbed: Stubber) -> None:
    small, large, after = envelope(1), envelope(2, payload_bytes=300 * 1024), envelope(3)
    for chunk in ([small], [large], [after]):
        expect(stubbed, chunk, {"Successful": accepted(chunk[0].outbox_id)})

    sent = SqsPublisher(client, QUEUE_URL).send([small, large, after])
    assert sent == {small.outbox_id, large.outbox_id, after.outbox_id}


def test_batches_fill_up_to_the_size_limit(client: Any, stubbed: Stubber) -> None:
    events = [envelope(n, payload_bytes=100 * 1024) for n in range(5)]
    for chunk in (events[:2], events[2:4], events[4:]):
        expect(stubbed, chunk, {"Successful": accepted(*(e.outbox_id for e in chunk))})

    assert len(SqsPublisher(client, QUEUE_URL).send(events)) == 5


def test_unreachable_sqs_means_nothing_accepted_and_no_further_batches(client: Any) -> None:
    attempted: list[str] = []

    def unreachable(request: Any, **_: Any) -> None:
        attempted.append(request.body.decode() if isinstance(request.body, bytes) else "")
        raise EndpointConnectionError(endpoint_url=QUEUE_URL)

    client.meta.events.register("before-send.sqs.SendMessageBatch", unreachable)
    events = [envelope(n) for n in range(25)]

    assert SqsPublisher(client, QUEUE_URL).send(events) == set()
    # Only the first batch was tried (with the client's own retry): the others would wait
    # for the same unreachable endpoint.
    assert attempted and all(events[0].outbox_id in body for body in attempted)
    assert not any(events[10].outbox_id in body for body in attempted)


def test_the_fast_path_does_nothing_without_a_queue() -> None:
    class NoDatabase:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the database was used ({name})")

    container = Container(
        Settings(events_queue_url=None),
        database=cast(Database, NoDatabase()),
        command_context=cast(CommandContext, object()),
    )
    assert container.command_executor.after_commit is None


def test_the_fast_path_publishes_only_after_a_commit_that_wrote_events() -> None:
    calls: list[str] = []

    class Refusing(Publisher):
        def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
            calls.append("send")
            return set()

    class Unreachable:
        def begin(self) -> Any:
            calls.append("begin")
            raise ConnectionError("no database here")

    def engine() -> Engine:
        calls.append("engine")
        return cast(Engine, Unreachable())

    publish = publish_after_commit(engine, Refusing)
    publish(())
    assert calls == []
    publish(("01J00000000000000000000001",))  # the failure is logged, not raised
    assert calls == ["engine", "begin"]

    def executor(**settings: Any) -> Any:
        container = Container(
            Settings(events_queue_url="https://sqs.example/q.fifo", **settings),
            command_context=cast(CommandContext, object()),
        )
        return container.command_executor

    # Commands answer without sending (the relay's loop does) unless asked to send in-request.
    assert executor().after_commit is None
    assert executor(events_publish="in_request").after_commit is not None


def test_lanes_keep_each_group_in_one_lane_in_its_order() -> None:
    entries: list[Any] = [
        {"Id": f"E{n:03}", "MessageGroupId": f"product:P{n % 7}"} for n in range(100)
    ]

    lanes = by_lane(entries, 4)

    assert len(lanes) <= 4
    assert sorted(e["Id"] for lane in lanes for e in lane) == [e["Id"] for e in entries]
    for lane in lanes:
        assert [e["Id"] for e in lane] == sorted(e["Id"] for e in lane)  # the given order
    groups = [{e["MessageGroupId"] for e in lane} for lane in lanes]
    assert all(a.isdisjoint(b) for n, a in enumerate(groups) for b in groups[n + 1 :])


def test_lanes_send_side_by_side_and_every_event_is_accepted(client: Any) -> None:
    in_flight = most = 0
    lock = threading.Lock()
    current = threading.local()

    def record(params: dict[str, Any], **_: Any) -> None:
        current.entries = params["Entries"]

    def answer(**_: Any) -> tuple[Any, dict[str, Any]]:
        # Answers the call in place of SQS (a before-call handler's return is the response),
        # after a round trip's pause, counting the calls in flight meanwhile.
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        ok = [{"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "x"} for e in current.entries]
        return SimpleNamespace(status_code=200), {"Successful": ok, "Failed": []}

    client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", record)
    client.meta.events.register("before-call.sqs.SendMessageBatch", answer)
    events = [envelope(n, group=f"product:P{n % 16}") for n in range(200)]
    publisher = SqsPublisher(client, QUEUE_URL, lanes=4)
    try:
        assert publisher.send(events) == {e.outbox_id for e in events}
    finally:
        publisher.close()
    assert 1 < most <= 4


def test_what_is_submitted_later_goes_after_what_was_submitted_before_in_each_group(
    client: Any,
) -> None:
    answered: list[tuple[str, str]] = []
    lock = threading.Lock()
    current = threading.local()
    pauses = iter([0.02, 0.0] * 200)  # the first call of each pair is the slow one

    def record(params: dict[str, Any], **_: Any) -> None:
        current.entries = params["Entries"]

    def answer(**_: Any) -> tuple[Any, dict[str, Any]]:
        with lock:
            pause = next(pauses)
        time.sleep(pause)
        with lock:
            answered.extend((e["MessageGroupId"], e["Id"]) for e in current.entries)
        ok = [{"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "x"} for e in current.entries]
        return SimpleNamespace(status_code=200), {"Successful": ok, "Failed": []}

    client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", record)
    client.meta.events.register("before-call.sqs.SendMessageBatch", answer)
    events = [envelope(n, group=f"product:P{n % 6}") for n in range(120)]
    publisher = SqsPublisher(client, QUEUE_URL, lanes=3)
    try:
        # Four batches handed over without waiting, as the relay does while it claims.
        sending = [
            lane
            for start in range(0, 120, 30)
            for lane in publisher.submit(events[start : start + 30], threading.Event())
        ]
        accepted = set().union(*(lane.result().accepted for lane in sending))
    finally:
        publisher.close()

    assert accepted == {e.outbox_id for e in events}
    for group in {e.message_group for e in events}:
        order = [outbox_id for g, outbox_id in answered if g == group]
        assert order == sorted(order), group


def test_once_sqs_is_unreachable_nothing_queued_behind_is_sent(client: Any) -> None:
    attempted: list[str] = []

    def unreachable(request: Any, **_: Any) -> None:
        attempted.append(request.body.decode() if isinstance(request.body, bytes) else "")
        raise EndpointConnectionError(endpoint_url=QUEUE_URL)

    client.meta.events.register("before-send.sqs.SendMessageBatch", unreachable)
    events = [envelope(n) for n in range(30)]
    halt = threading.Event()
    publisher = SqsPublisher(client, QUEUE_URL, lanes=2)
    try:
        first = publisher.submit(events[:10], halt)
        later = publisher.submit(events[10:], halt)
        sent = [lane.result() for lane in first + later]
    finally:
        publisher.close()

    assert halt.is_set()
    assert [(s.accepted, s.tried) for s in sent] == [
        (set(), {e.outbox_id for e in events[:10]}),
        (set(), set()),
    ]
    assert attempted and not any(events[10].outbox_id in body for body in attempted)


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (10**6, 60.0)],
)
def test_a_refused_row_waits_longer_the_more_it_was_refused(attempts: int, seconds: float) -> None:
    assert retry_refused_after(attempts) == seconds
