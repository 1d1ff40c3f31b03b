"""Publishing the outbox on the real primary and LocalStack SQS: relay, fast path, handler, CLI.

Each test gets a fresh FIFO queue (SQS drops a resent MessageDeduplicationId for 5 minutes,
so queues are never shared between tests) and starts with every older outbox row marked
published, so "what the relay sent" is exactly what the test wrote. The rows tests write
directly belong to the made-up aggregate type `relaytest` and are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select
from tests.support.outbox import drain_queue, outbox_of_its_own

from giftmarket.adapters.db import Database
from giftmarket.adapters.publisher import (
    RelayReport,
    SqsPublisher,
    build_sqs_client,
    publish_committed,
    relay_outbox,
)
from giftmarket.adapters.repositories import to_db_time
from giftmarket.adapters.tables import outbox
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import accounts
from giftmarket.commands.ports import Publisher
from giftmarket.domain.ids import new_id
from giftmarket.messages import EventEnvelope
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.runner import LambdaContext, load_handler
from giftmarket_local.stack import Stack
from giftmarket_local.template import read_application

TEST_AGGREGATE = "relaytest"
SAMPLE_EVENT = Path(__file__).parents[2] / "functions/outbox_relay/events/scheduled.json"

# ---------------------------------------------------------------------------------------
# Queues, rows and what arrived


@pytest.fixture
def make_queue(sqs: Any) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(**attributes: str) -> str:
        url: str = sqs.create_queue(
            QueueName=f"relay-{uuid.uuid4().hex[:16]}.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false", **attributes},
        )["QueueUrl"]
        created.append(url)
        return url

    yield make
    for url in created:
        sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def queue_url(make_queue: Callable[..., str]) -> str:
    return make_queue()


@pytest.fixture
def engine(database: Database) -> Iterator[Engine]:
    with outbox_of_its_own(database, TEST_AGGREGATE) as writer:
        yield writer


@pytest.fixture
def publisher(stack: Stack, queue_url: str) -> SqsPublisher:
    return SqsPublisher(
        build_sqs_client(stack.config.region, stack.config.localstack_url), queue_url
    )


def outbox_rows(count: int, *, groups: int = 3, payload_bytes: int = 0) -> list[dict[str, Any]]:
    rows = []
    for n in range(count):
        aggregate = f"A{n % groups}"
        rows.append(
            {
                "id": new_id(),
                "aggregate_type": TEST_AGGREGATE,
                "aggregate_id": aggregate,
                "aggregate_version": n + 1,
                "event_type": "Happened",
                "message_group": f"{TEST_AGGREGATE}:{aggregate}",
                "payload": {"n": n, "padding": "x" * payload_bytes},
                "occurred_at": to_db_time(datetime.now(UTC)),
            }
        )
    return rows


def write(engine: Engine, rows: Sequence[dict[str, Any]]) -> list[str]:
    with engine.begin() as conn:
        conn.execute(insert(outbox), list(rows))
    return [row["id"] for row in rows]


def state(engine: Engine, ids: Sequence[str]) -> dict[str, tuple[bool, int]]:
    """id → (published, publish_attempts)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.id, outbox.c.published_at, outbox.c.publish_attempts).where(
                outbox.c.id.in_(ids)
            )
        ).all()
    return {row.id: (row.published_at is not None, row.publish_attempts) for row in rows}


def dedup_ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["Attributes"]["MessageDeduplicationId"] for m in messages]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Recording(Publisher):
    """Sends through another publisher and records what it was asked to send."""

    def __init__(self, inner: Publisher, *, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.sent: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        with self._lock:
            self.sent += [e.outbox_id for e in envelopes]
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            return self.inner.send(envelopes)
        finally:
            with self._lock:
                self.in_flight -= 1


# ---------------------------------------------------------------------------------------
# The relay


def test_relay_publishes_exactly_the_unpublished_rows_and_marks_them(
    engine: Engine, publisher: SqsPublisher, sqs: Any, queue_url: str
) -> None:
    rows = outbox_rows(25)
    ids = write(engine, rows)
    already = write(
        engine, [{**row, "published_at": datetime(2026, 1, 1)} for row in outbox_rows(3)]
    )

    report = relay_outbox(engine, publisher, batch_size=10)

    assert report == RelayReport(published=25, failed=0, batches=3)
    assert state(engine, ids) == dict.fromkeys(ids, (True, 0))
    with engine.connect() as conn:
        untouched = conn.execute(
            select(outbox.c.published_at).where(outbox.c.id.in_(already))
        ).scalars()
        assert set(untouched) == {datetime(2026, 1, 1)}

    messages = drain_queue(sqs, queue_url, len(ids))
    assert sorted(dedup_ids(messages)) == sorted(ids)
    expected = {row["id"]: EventEnvelope.from_outbox_row(row) for row in rows}
    for message in messages:
        outbox_id = message["Attributes"]["MessageDeduplicationId"]
        assert EventEnvelope.from_json(message["Body"]) == expected[outbox_id]
        assert message["Attributes"]["MessageGroupId"] == expected[outbox_id].message_group
    # One aggregate's events arrive in the order they were written.
    for group in {row["message_group"] for row in rows}:
        versions = [
            EventEnvelope.from_json(m["Body"]).version
            for m in messages
            if m["Attributes"]["MessageGroupId"] == group
        ]
        assert versions == sorted(versions)


def test_a_second_relay_run_finds_nothing_to_send(engine: Engine, publisher: SqsPublisher) -> None:
    write(engine, outbox_rows(5))
    relay_outbox(engine, publisher)

    assert relay_outbox(engine, publisher) == RelayReport(published=0, failed=0, batches=0)


def test_rows_of_an_uncommitted_transaction_are_published_once_it_commits(
    engine: Engine, publisher: SqsPublisher, sqs: Any, queue_url: str
) -> None:
    rows = outbox_rows(3)
    with engine.connect() as writer, ThreadPoolExecutor(1) as pool:
        transaction = writer.begin()
        writer.execute(insert(outbox), rows)
        try:
            # SKIP LOCKED: the relay neither waits for the open transaction nor sees its rows.
            before = pool.submit(relay_outbox, engine, publisher).result(timeout=10)
        finally:
            transaction.commit()
    after = relay_outbox(engine, publisher)

    assert before.published == 0
    assert after.published == 3
    ids = [row["id"] for row in rows]
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 3))) == sorted(ids)
    assert state(engine, ids) == dict.fromkeys(ids, (True, 0))


def test_two_relays_at_once_publish_every_row_exactly_once_between_them(
    engine: Engine, publisher: SqsPublisher, sqs: Any, queue_url: str
) -> None:
    ids = write(engine, outbox_rows(300, groups=20))
    # A pause in every send keeps both relays inside their transactions at the same time.
    recording = Recording(publisher, delay=0.02)
    start = threading.Barrier(2)

    def relay() -> RelayReport:
        start.wait(timeout=10)
        return relay_outbox(engine, recording, batch_size=20)

    with ThreadPoolExecutor(2) as pool:
        reports = [f.result(timeout=60) for f in [pool.submit(relay), pool.submit(relay)]]

    # Side by side, not one waiting for the other's locks.
    assert recording.most_in_flight == 2
    assert all(report.published > 0 for report in reports), reports
    assert sum(report.published for report in reports) == 300
    assert Counter(recording.sent) == Counter(ids)  # nobody sent a row the other held
    assert state(engine, ids) == dict.fromkeys(ids, (True, 0))
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 300))) == sorted(ids)


# One relay invocation in a process of its own, as a Lambda execution environment runs it:
# initialised (handler imported, container built), then invoked when told to, reporting
# what it published and when it ran.
RELAY_PROCESS = """
import json, sys, time
from giftmarket.bootstrap import get_container
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.runner import load_handler

invoker = LocalInvoker()
load_handler(invoker.application.functions["OutboxRelayFunction"])
get_container()
print("ready", flush=True)
sys.stdin.readline()
started = time.time()
report = invoker.invoke_event_raw("OutboxRelayFunction", json.loads(sys.argv[1]))
print("relayed " + json.dumps({"report": report, "started": started, "ended": time.time()}))
"""


def relay_processes(count: int, env: dict[str, str]) -> list[dict[str, Any]]:
    """`count` relay invocations at once, each in its own process; what each printed."""
    relays = [
        subprocess.Popen(
            [sys.executable, "-c", RELAY_PROCESS, SAMPLE_EVENT.read_text()],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for relay in relays:
            assert relay.stdout is not None
            line = relay.stdout.readline()
            assert line == "ready\n", f"{line!r} {relay.stderr.read() if relay.stderr else ''}"
        for relay in relays:  # both told at once, once both are initialised
            assert relay.stdin is not None
            relay.stdin.write("go\n")
            relay.stdin.flush()
        outputs = [relay.communicate(timeout=60) for relay in relays]
    finally:
        for relay in relays:
            if relay.poll() is None:
                relay.kill()
                relay.wait()
    results = []
    for relay, (out, err) in zip(relays, outputs, strict=True):
        assert relay.returncode == 0, err
        (line,) = [line for line in out.splitlines() if line.startswith("relayed ")]
        results.append(json.loads(line.removeprefix("relayed ")))
    return results


ROWS_FOR_TWO = 1000


def test_two_relay_invocations_in_two_processes_publish_every_row_exactly_once(
    engine: Engine, stack: Stack, sqs: Any, queue_url: str
) -> None:
    # Enough rows that neither invocation, claiming two batches at a time, can finish them
    # all before the other starts.
    ids = write(engine, outbox_rows(ROWS_FOR_TWO, groups=20))
    env = {
        **os.environ,
        **stack.config.app_env(),
        "EVENTS_QUEUE_URL": queue_url,
        # Small claims: each invocation takes many turns, side by side with the other's.
        "OUTBOX_RELAY_BATCH_SIZE": "10",
    }

    results = relay_processes(2, env)

    reports = [result["report"] for result in results]
    assert max(r["started"] for r in results) < min(r["ended"] for r in results), results
    assert all(report["published"] > 0 for report in reports), reports
    # A row both had claimed would be counted (and marked) by both.
    assert sum(report["published"] for report in reports) == ROWS_FOR_TWO, reports
    assert sum(report["failed"] for report in reports) == 0, reports
    assert state(engine, ids) == dict.fromkeys(ids, (True, 0))
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, ROWS_FOR_TWO))) == sorted(ids)


def test_rows_sqs_refuses_stay_unpublished_with_their_attempts_counted(
    engine: Engine, stack: Stack, make_queue: Callable[..., str], sqs: Any
) -> None:
    # A queue that takes messages up to 1 KiB: SQS refuses the big ones entry by entry.
    url = make_queue(MaximumMessageSize="1024")
    publisher = SqsPublisher(
        build_sqs_client(stack.config.region, stack.config.localstack_url), url
    )
    small, big = outbox_rows(12), outbox_rows(3, payload_bytes=2048)
    rows = small[:4] + big[:1] + small[4:8] + big[1:] + small[8:]
    write(engine, rows)
    small_ids, big_ids = [r["id"] for r in small], [r["id"] for r in big]

    first = relay_outbox(engine, publisher, batch_size=5)
    again = relay_outbox(engine, publisher, batch_size=5)

    assert (first.published, first.failed) == (12, 3)
    # Only the refused rows are left; SQS refuses them again and the run stops there.
    assert again == RelayReport(published=0, failed=3, batches=1)
    assert state(engine, big_ids) == dict.fromkeys(big_ids, (False, 2))
    assert state(engine, small_ids) == dict.fromkeys(small_ids, (True, 0))
    assert sorted(dedup_ids(drain_queue(sqs, url, 12))) == sorted(small_ids)


def test_an_event_too_large_for_sqs_fails_alone(
    engine: Engine, publisher: SqsPublisher, sqs: Any, queue_url: str
) -> None:
    # Over SQS's 1 MiB limit: the batch carrying it is refused as a whole, so it goes alone.
    rows = outbox_rows(4) + outbox_rows(1, payload_bytes=1100 * 1024) + outbox_rows(4)
    ids = write(engine, rows)
    too_large = rows[4]["id"]

    report = relay_outbox(engine, publisher)

    assert (report.published, report.failed) == (8, 1)
    assert state(engine, [too_large]) == {too_large: (False, 1)}
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 8))) == sorted(set(ids) - {too_large})


class Refusing(Publisher):
    def __init__(self, inner: Publisher, refuse: set[str]) -> None:
        self.inner, self.refuse = inner, refuse

    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        return self.inner.send([e for e in envelopes if e.outbox_id not in self.refuse])


def test_refused_rows_do_not_hold_back_the_rows_behind_them(
    engine: Engine, publisher: SqsPublisher, sqs: Any, queue_url: str
) -> None:
    ids = write(engine, outbox_rows(30))
    refusing = Refusing(publisher, set(ids[:3]))  # at the head of the outbox

    first = relay_outbox(engine, refusing, batch_size=10)
    again = relay_outbox(engine, refusing, batch_size=10)

    # Each run tries the refused rows once, then claims past them.
    assert first == RelayReport(published=27, failed=3, batches=3)
    assert again == RelayReport(published=0, failed=3, batches=1)
    assert state(engine, ids[:3]) == dict.fromkeys(ids[:3], (False, 2))
    assert state(engine, ids[3:]) == dict.fromkeys(ids[3:], (True, 0))
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 27))) == sorted(ids[3:])


def test_a_relay_stops_after_one_batch_when_sqs_is_unreachable(
    engine: Engine, stack: Stack, queue_url: str
) -> None:
    ids = write(engine, outbox_rows(30))
    client = build_sqs_client(stack.config.region, f"http://127.0.0.1:{closed_port()}")

    report = relay_outbox(engine, SqsPublisher(client, queue_url), batch_size=10)

    assert report == RelayReport(published=0, failed=10, batches=1)
    assert state(engine, ids) == {i: (False, 1 if i in ids[:10] else 0) for i in ids}


class KilledAfterSend(Publisher):
    """Sends, then dies before the relay can record it: a Lambda timing out or crashing."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner

    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        self.inner.send(envelopes)
        raise RuntimeError("killed between send and commit")


def test_a_relay_killed_after_sending_leaves_the_rows_for_the_next_run(
    engine: Engine, publisher: SqsPublisher, sqs: Any, queue_url: str
) -> None:
    ids = write(engine, outbox_rows(12))

    with pytest.raises(RuntimeError, match="killed"):
        relay_outbox(engine, KilledAfterSend(publisher))
    assert state(engine, ids) == dict.fromkeys(ids, (False, 0))

    report = relay_outbox(engine, publisher)

    assert report.published == 12
    assert state(engine, ids) == dict.fromkeys(ids, (True, 0))
    # The resend carried the same deduplication ids: SQS kept one copy of each.
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 12))) == sorted(ids)


# ---------------------------------------------------------------------------------------
# Overlapping batches: the next claim while the current one is being sent


class StandInQueue:
    """Answers a client's SendMessageBatch calls in place of SQS, each after a random pause
    (0 to 15 ms), accepting every entry; records the order in which it accepted them, and
    how many claims the relay made while calls were in flight."""

    def __init__(self, client: Any, seed: int) -> None:
        self.accepted: list[tuple[str, str]] = []  # (message group, outbox id)
        self.claims_during_sends = 0
        self._in_flight = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._entries = threading.local()
        client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", self._keep)
        client.meta.events.register("before-call.sqs.SendMessageBatch", self._answer)

    def _keep(self, params: dict[str, Any], **_: Any) -> None:
        self._entries.value = params["Entries"]

    def _answer(self, **_: Any) -> tuple[Any, dict[str, Any]]:
        entries = self._entries.value
        with self._lock:
            self._in_flight += 1
            pause = self._random.uniform(0, 0.015)
        time.sleep(pause)
        with self._lock:
            self._in_flight -= 1
            self.accepted += [(e["MessageGroupId"], e["Id"]) for e in entries]
        ok = [{"Id": e["Id"], "MessageId": e["Id"], "MD5OfMessageBody": "-"} for e in entries]
        return SimpleNamespace(status_code=200), {"Successful": ok, "Failed": []}

    def statement(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "SKIP LOCKED" in statement:
            with self._lock:
                self.claims_during_sends += self._in_flight > 0


def test_overlapping_batches_keep_each_groups_order_whatever_the_answer_times(
    engine: Engine, stack: Stack, queue_url: str
) -> None:
    rows = outbox_rows(800, groups=40)  # ids made in order: the outbox's order
    ids = write(engine, rows)
    client = build_sqs_client(stack.config.region, stack.config.localstack_url)
    stand_in = StandInQueue(client, seed=18)
    publisher = SqsPublisher(client, queue_url, lanes=8)
    event.listen(engine, "before_cursor_execute", stand_in.statement)
    try:
        report = relay_outbox(engine, publisher, batch_size=50)
    finally:
        event.remove(engine, "before_cursor_execute", stand_in.statement)
        publisher.close()

    assert report == RelayReport(published=800, failed=0, batches=16)
    assert stand_in.claims_during_sends > 0  # batches did overlap
    assert sorted(outbox_id for _, outbox_id in stand_in.accepted) == sorted(ids)
    by_group: dict[str, list[str]] = {}
    for group, outbox_id in stand_in.accepted:
        by_group.setdefault(group, []).append(outbox_id)
    assert len(by_group) == 40
    for group, accepted in by_group.items():
        assert accepted == sorted(accepted), f"{group} accepted out of order"
    assert state(engine, ids) == dict.fromkeys(ids, (True, 0))


# ---------------------------------------------------------------------------------------
# The fast path


@pytest.fixture
def queue_settings(
    make_settings: Callable[..., Settings], stack: Stack, queue_url: str
) -> Settings:
    # The fast path is the old way, kept as a setting: commands send their own events.
    return make_settings(
        events_queue_url=queue_url,
        events_publish="in_request",
        aws_endpoint_url=stack.config.localstack_url,
        aws_region=stack.config.region,
    )


@pytest.fixture
def container(queue_settings: Settings, engine: Engine) -> Iterator[Container]:
    built = bootstrap(queue_settings)
    yield built
    built.close()


def sign_up(container: Container) -> tuple[str, tuple[str, ...]]:
    command = accounts.SignUp(f"{uuid.uuid4().hex}@example.com", "password123", "relay")
    account, committed = container.command_executor.execute(command)
    charge = accounts.ChargePoints(account.user_id, 5000)
    _, charged = container.command_executor.execute(charge)
    return account.user_id, committed.outbox_ids + charged.outbox_ids


def test_a_command_publishes_its_events_as_soon_as_it_commits(
    container: Container, sqs: Any, queue_url: str
) -> None:
    command = accounts.SignUp(f"{uuid.uuid4().hex}@example.com", "password123", "relay")
    # The executor's after-commit hook is the fast path: no call from the caller needed.
    account, committed = container.command_executor.execute(command)

    engine = container.database.writer
    assert committed.outbox_ids
    assert state(engine, committed.outbox_ids) == dict.fromkeys(committed.outbox_ids, (True, 0))
    messages = drain_queue(sqs, queue_url, len(committed.outbox_ids))
    assert sorted(dedup_ids(messages)) == sorted(committed.outbox_ids)
    body = EventEnvelope.from_json(messages[0]["Body"])
    assert (body.event_type, body.aggregate_id) == ("UserSignedUp", account.user_id)
    assert messages[0]["Attributes"]["MessageGroupId"] == f"user:{account.user_id}"


def test_the_fast_path_skips_rows_already_published_or_held_by_a_relay(
    engine: Engine, publisher: SqsPublisher, sqs: Any, queue_url: str
) -> None:
    published = write(engine, outbox_rows(1))
    relay_outbox(engine, publisher)
    drain_queue(sqs, queue_url, 1)
    held, free = write(engine, outbox_rows(1)), write(engine, outbox_rows(1))
    with engine.connect() as relay, ThreadPoolExecutor(1) as pool:
        transaction = relay.begin()
        relay.execute(select(outbox).where(outbox.c.id.in_(held)).with_for_update())
        try:
            count = pool.submit(
                publish_committed, engine, publisher, published + held + free
            ).result(timeout=10)
        finally:
            transaction.rollback()

    assert count == 1
    assert dedup_ids(drain_queue(sqs, queue_url, 1)) == free
    assert state(engine, held) == {held[0]: (False, 0)}


def test_commands_through_the_api_are_published_before_they_answer(
    queue_settings: Settings, publisher: SqsPublisher, sqs: Any, queue_url: str
) -> None:
    recording = Recording(publisher)
    container = bootstrap(queue_settings, publisher=recording)
    invoker = LocalInvoker()
    signup = json.dumps(
        {"email": f"{uuid.uuid4().hex}@example.com", "password": "password123", "nickname": "n"}
    ).encode()
    headers = {"content-type": "application/json", "idempotency-key": uuid.uuid4().hex}
    set_container(container)
    try:
        first = invoker.http("POST", "/api/auth/signup", body=signup, headers=headers)
        sent_by_signup = list(recording.sent)
        replay = invoker.http("POST", "/api/auth/signup", body=signup, headers=headers)
        sent_by_replay = recording.sent[len(sent_by_signup) :]
        charge = invoker.http(
            "POST",
            "/api/points/charge",
            body=b'{"amount": 5000}',
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {first.body['token']}",
            },
        )
        sent_by_charge = recording.sent[len(sent_by_signup) :]
    finally:
        set_container(None)
        container.close()

    assert (first.status, charge.status) == (201, 200), (str(first), str(charge))
    assert replay.headers.get("idempotent-replayed") == "true"
    assert sent_by_signup and sent_by_charge and not sent_by_replay
    sent = sent_by_signup + sent_by_charge
    assert state(container.database.writer, sent) == dict.fromkeys(sent, (True, 0))
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, len(sent)))) == sorted(sent)


def test_the_fast_path_with_sqs_unreachable_answers_and_leaves_rows_for_the_relay(
    make_settings: Callable[..., Settings],
    stack: Stack,
    queue_url: str,
    engine: Engine,
    publisher: SqsPublisher,
    sqs: Any,
) -> None:
    unreachable = bootstrap(
        make_settings(
            events_queue_url=queue_url,
            events_publish="in_request",
            aws_endpoint_url=f"http://127.0.0.1:{closed_port()}",
            aws_region=stack.config.region,
        )
    )
    try:
        started = time.monotonic()
        _, ids = sign_up(unreachable)  # two commands, each trying the fast path; must not raise
        elapsed = time.monotonic() - started
    finally:
        unreachable.close()

    assert elapsed < 10
    assert state(engine, ids) == dict.fromkeys(ids, (False, 1))
    assert relay_outbox(engine, publisher).published == len(ids)
    assert state(engine, ids) == dict.fromkeys(ids, (True, 1))
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, len(ids)))) == sorted(ids)


def test_the_fast_path_swallows_any_error_and_leaves_the_rows_for_the_relay(
    make_settings: Callable[..., Settings], engine: Engine
) -> None:
    class Broken(Publisher):
        def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
            raise RuntimeError("anything at all")

    without_queue = bootstrap(make_settings(events_queue_url=None))
    try:
        _, ids = sign_up(without_queue)  # no queue configured: nothing published yet
    finally:
        without_queue.close()
    assert publish_committed(engine, Broken(), ids) == 0
    assert state(engine, ids) == dict.fromkeys(ids, (False, 0))


# ---------------------------------------------------------------------------------------
# The Lambda handler and the CLI


def test_the_relay_handler_publishes_and_reports_metrics(
    container: Container, sqs: Any, queue_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = write(container.database.writer, outbox_rows(7))
    spec = read_application().functions["OutboxRelayFunction"]
    _, handler = load_handler(spec)
    event = json.loads(SAMPLE_EVENT.read_text())
    set_container(container)
    try:
        result = handler(
            event, LambdaContext(spec.logical_id, spec.memory_mb, spec.timeout_seconds)
        )
    finally:
        set_container(None)

    assert result == {"published": 7, "failed": 0, "batches": 1}
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 7))) == sorted(ids)
    emitted = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    if not os.environ.get("POWERTOOLS_METRICS_DISABLED"):
        values = {k: v if isinstance(v, list) else [v] for blob in emitted for k, v in blob.items()}
        assert (values["OutboxPublished"], values["OutboxPublishFailed"]) == ([7.0], [0.0])
        assert emitted[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "giftmarket"


def test_the_schedule_runs_the_relay_every_minute() -> None:
    spec = read_application().functions["OutboxRelayFunction"]
    assert spec.schedules == ("rate(1 minute)",)


def test_giftmarket_outbox_relay_publishes_and_prints_the_report(
    engine: Engine, stack: Stack, sqs: Any, queue_url: str
) -> None:
    ids = write(engine, outbox_rows(4))
    result = subprocess.run(
        [sys.executable, "-m", "giftmarket.cli", "outbox", "relay"],
        env={**os.environ, **stack.config.app_env(), "EVENTS_QUEUE_URL": queue_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"published": 4, "failed": 0, "batches": 1}
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 4))) == sorted(ids)
