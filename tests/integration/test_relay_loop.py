"""The relay's polling loop on the real primary and LocalStack SQS: commands answer without
sending, the loop publishes their events within a poll, one loop at a time, handing over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, text
from tests.integration.test_outbox_relay import (  # noqa: F401 - fixtures used by name
    dedup_ids,
    engine,
    make_queue,
    outbox_rows,
    publisher,
    queue_url,
    state,
    write,
)
from tests.support.outbox import drain_queue

from giftmarket.adapters.publisher import (
    RELAY_LOCK,
    RelayLoopReport,
    SqsPublisher,
    relay_loop,
)
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import accounts
from giftmarket.commands.ports import Publisher
from giftmarket.messages import EventEnvelope
from giftmarket.settings import Settings
from giftmarket_local.runner import LambdaContext, load_handler
from giftmarket_local.stack import Stack
from giftmarket_local.template import read_application

POLL = 0.01
SAMPLE_EVENT = (
    __import__("pathlib").Path(__file__).parents[2] / "functions/outbox_relay/events/scheduled.json"
)


class Loop:
    """relay_loop in a thread, as one relay invocation."""

    def __init__(self, db: Engine, sender: Publisher, run_seconds: float) -> None:
        self.report: RelayLoopReport | None = None
        self._thread = threading.Thread(target=self._run, args=(db, sender, run_seconds))
        self._thread.daemon = True

    def _run(self, db: Engine, sender: Publisher, run_seconds: float) -> None:
        self.report = relay_loop(
            db,
            sender,
            run_seconds=run_seconds,
            poll_seconds=POLL,
            remaining_seconds=lambda: 300.0,
        )

    def start(self) -> Loop:
        self._thread.start()
        return self

    def join(self, timeout: float = 30) -> RelayLoopReport:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the loop did not end"
        assert self.report is not None
        return self.report


def wait_published(db: Engine, ids: Sequence[str], timeout: float = 5.0) -> float:
    """Seconds until every row in `ids` is marked published."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all(published for published, _ in state(db, ids).values()):
            return time.monotonic() - started
        time.sleep(0.002)
    raise AssertionError(f"not published within {timeout}s: {state(db, ids)}")


def lock_holder(db: Engine) -> int | None:
    with db.connect() as conn:
        holder = conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": RELAY_LOCK}).scalar()
    return None if holder is None else int(holder)


@pytest.fixture
def container(
    make_settings: Callable[..., Settings],
    stack: Stack,
    queue_url: str,  # noqa: F811
) -> Iterator[Container]:
    # The deployed way (tests' containers default to in_request: tests/support/stack.py).
    built = bootstrap(
        make_settings(
            events_publish="relay",
            events_queue_url=queue_url,
            aws_endpoint_url=stack.config.localstack_url,
            aws_region=stack.config.region,
        )
    )
    yield built
    built.close()


def test_commands_answer_without_sending_and_the_loop_publishes_them_within_polls(
    container: Container,
    engine: Engine,  # noqa: F811
    publisher: SqsPublisher,  # noqa: F811
    sqs: Any,  # noqa: F811
    queue_url: str,  # noqa: F811
) -> None:
    assert container.settings.events_publish == "relay"
    executor = container.command_executor
    signup = accounts.SignUp(f"{uuid.uuid4().hex}@example.com", "password123", "loop")
    account, signed_up = executor.execute(signup)
    # Answered with nothing sent: the rows wait for the relay.
    assert state(engine, signed_up.outbox_ids) == dict.fromkeys(signed_up.outbox_ids, (False, 0))

    loop = Loop(engine, publisher, run_seconds=4).start()
    wait_published(engine, signed_up.outbox_ids)
    ids = list(signed_up.outbox_ids)
    lags = []
    for amount in range(1, 11):
        _, charged = executor.execute(accounts.ChargePoints(account.user_id, amount))
        lags.append(wait_published(engine, charged.outbox_ids))
        ids += charged.outbox_ids
    report = loop.join()

    assert report.held_lock and report.published == len(ids)
    assert report.polls > report.passes > 0
    # A poll every 10 ms and a LocalStack round trip: far below a second, on a busy machine.
    assert sorted(lags)[len(lags) // 2] < 0.5, lags
    messages = drain_queue(sqs, queue_url, len(ids))
    assert sorted(dedup_ids(messages)) == sorted(ids)
    # One message group, one user: SQS hands them over in commit order.
    versions = [EventEnvelope.from_json(m["Body"]).version for m in messages]
    assert versions == sorted(versions)


def test_one_loop_at_a_time_the_next_run_takes_over_when_it_ends(
    engine: Engine,  # noqa: F811
    publisher: SqsPublisher,  # noqa: F811
) -> None:
    first = Loop(engine, publisher, run_seconds=1.5).start()
    time.sleep(0.3)
    assert lock_holder(engine) is not None
    second = Loop(engine, publisher, run_seconds=4).start()
    during = write(engine, outbox_rows(5))
    wait_published(engine, during)
    first_report = first.join()
    after = write(engine, outbox_rows(5))
    wait_published(engine, after)
    second_report = second.join()

    assert first_report.held_lock and second_report.held_lock
    # The second waited for the first's end, then published what came after it.
    assert 0.8 < second_report.lock_wait_seconds < 2.5, second_report
    assert first_report.published == 5 and second_report.published == 5
    assert lock_holder(engine) is None


def test_a_run_whose_time_ends_while_another_loops_does_nothing(
    engine: Engine,  # noqa: F811
    publisher: SqsPublisher,  # noqa: F811
) -> None:
    first = Loop(engine, publisher, run_seconds=3).start()
    time.sleep(0.3)
    late = Loop(engine, publisher, run_seconds=1).start().join()
    first.join()
    assert not late.held_lock
    assert (late.published, late.polls) == (0, 0)


KILLED_LOOP = textwrap.dedent(
    """
    import sys
    from giftmarket.adapters.publisher import relay_loop
    from giftmarket.bootstrap import bootstrap

    container = bootstrap()
    print("looping", flush=True)
    relay_loop(
        container.database.writer, container.publisher,
        run_seconds=120, poll_seconds=0.01, remaining_seconds=lambda: 300.0,
    )
    """
)


def test_a_loop_killed_mid_run_frees_the_lock_for_the_next_run_at_once(
    stack: Stack,
    engine: Engine,  # noqa: F811
    publisher: SqsPublisher,  # noqa: F811
    queue_url: str,  # noqa: F811
) -> None:
    env = {**os.environ, **stack.config.app_env(), "EVENTS_QUEUE_URL": queue_url}
    child = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", KILLED_LOOP], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "looping"
        deadline = time.monotonic() + 10
        while lock_holder(engine) is None:
            assert time.monotonic() < deadline, "the child never took the lock"
            time.sleep(0.02)
        published_by_child = write(engine, outbox_rows(3))
        wait_published(engine, published_by_child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    left = write(engine, outbox_rows(4))
    report = Loop(engine, publisher, run_seconds=1).start().join()
    # The dead process's connection closed with it, and the server released its lock.
    assert report.held_lock and report.lock_wait_seconds < 0.5, report
    assert report.published == 4
    assert state(engine, left) == dict.fromkeys(left, (True, 0))


class Refusing(Publisher):
    """Refuses one row the first `times` times it is sent (forever by default), and counts
    the calls."""

    def __init__(self, inner: Publisher, refused: str, times: int = 1 << 30) -> None:
        self._inner, self._refused, self._times, self.calls = inner, refused, times, 0

    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        self.calls += 1
        if any(e.outbox_id == self._refused for e in envelopes) and self._times > 0:
            self._times -= 1
            envelopes = [e for e in envelopes if e.outbox_id != self._refused]
        return self._inner.send(envelopes)


def loop_for(engine: Engine, sender: Publisher, seconds: float) -> RelayLoopReport:  # noqa: F811
    return relay_loop(
        engine, sender, run_seconds=seconds, poll_seconds=POLL, remaining_seconds=lambda: 300.0
    )


def test_a_row_sqs_refuses_is_not_tried_again_on_every_poll(
    engine: Engine,  # noqa: F811
    publisher: SqsPublisher,  # noqa: F811
) -> None:
    ids = write(engine, outbox_rows(6))
    refusing = Refusing(publisher, ids[2])
    report = loop_for(engine, refusing, 2.5)
    assert report.published == 5 and report.failed == 2
    assert report.polls > 20  # it kept polling, without the refused row
    # Tried at once, again 1 s later, then held 2 s: past the end of the run.
    assert refusing.calls == 2
    assert state(engine, ids)[ids[2]] == (False, 2)


def test_a_row_sqs_refused_once_is_published_a_second_later_not_a_minute(
    engine: Engine,  # noqa: F811
    publisher: SqsPublisher,  # noqa: F811
    sqs: Any,  # noqa: F811
    queue_url: str,  # noqa: F811
) -> None:
    ids = write(engine, outbox_rows(6))
    report = loop_for(engine, Refusing(publisher, ids[2], times=1), 2.5)
    assert report.published == 6 and report.failed == 1
    assert state(engine, ids) == {i: (True, 1 if i == ids[2] else 0) for i in ids}
    # Later events of its group went first; the refused one follows them.
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 6))) == sorted(ids)


def test_a_row_refused_many_times_before_waits_a_minute_in_a_new_loop(
    engine: Engine,  # noqa: F811
    publisher: SqsPublisher,  # noqa: F811
) -> None:
    """The pause grows with the attempts the outbox counted, not with this loop's alone."""
    ids = write(engine, outbox_rows(2))
    with engine.begin() as conn:
        conn.execute(text("UPDATE outbox SET publish_attempts = 6 WHERE id = :id"), {"id": ids[0]})
    refusing = Refusing(publisher, ids[0])
    report = loop_for(engine, refusing, 2.5)
    assert report.published == 1 and report.failed == 1
    assert refusing.calls == 1
    assert state(engine, ids) == {ids[0]: (False, 7), ids[1]: (True, 0)}


def run_handler(
    make_settings: Callable[..., Settings],
    stack: Stack,
    queue_url: str,  # noqa: F811
    meanwhile: Callable[[], None],
) -> tuple[dict[str, Any], float]:
    """The relay function's handler as Lambda runs it, looping, with 12 s left (it keeps 10 s
    for itself, so it loops for about two); `meanwhile` runs while it does. Its answer, and
    how long it took."""
    looping = bootstrap(
        make_settings(
            events_publish="relay",
            events_queue_url=queue_url,
            aws_endpoint_url=stack.config.localstack_url,
            aws_region=stack.config.region,
            outbox_relay_run_seconds=60,
            outbox_relay_poll_ms=10,
        )
    )
    spec = read_application().functions["OutboxRelayFunction"]
    _, handler = load_handler(spec)
    context = LambdaContext(spec.logical_id, spec.memory_mb, 12)
    answer: list[dict[str, Any]] = []
    set_container(looping)
    try:
        started = time.monotonic()
        thread = threading.Thread(
            target=lambda: answer.append(handler(json.loads(SAMPLE_EVENT.read_text()), context))
        )
        thread.start()
        meanwhile()
        thread.join(timeout=15)
        took = time.monotonic() - started
    finally:
        set_container(None)
        looping.close()
    assert answer, "the handler did not answer"
    return answer[0], took


def test_the_handler_loops_until_its_time_is_up_then_reports(
    make_settings: Callable[..., Settings],
    stack: Stack,
    engine: Engine,  # noqa: F811
    sqs: Any,  # noqa: F811
    queue_url: str,  # noqa: F811
) -> None:
    ids: list[str] = []

    def commit_some() -> None:
        time.sleep(0.5)
        ids.extend(write(engine, outbox_rows(7)))
        wait_published(engine, ids)

    answer, took = run_handler(make_settings, stack, queue_url, commit_some)
    assert answer["published"] == 7 and answer["held_lock"]
    assert 1.5 < took < 5, took
    assert sorted(dedup_ids(drain_queue(sqs, queue_url, 7))) == sorted(ids)


def test_the_handler_publishes_while_it_rebuilds_lost_read_models(
    make_settings: Callable[..., Settings],
    stack: Stack,
    engine: Engine,  # noqa: F811
    queue_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from giftmarket.projections import rebuild

    ids = write(engine, outbox_rows(3))
    published_during_rebuild: list[bool] = []

    def published() -> bool:
        return all(done for done, _ in state(engine, ids).values())

    def slow_rebuild(*_: Any) -> None:
        # A lost cache's rebuild takes minutes at PRODUCT.md's volumes: the loop goes on.
        deadline = time.monotonic() + 5
        while not published() and time.monotonic() < deadline:
            time.sleep(0.05)
        published_during_rebuild.append(published())

    monkeypatch.setattr(rebuild, "ensure_read_models", slow_rebuild)
    answer, _ = run_handler(make_settings, stack, queue_url, lambda: None)
    assert published_during_rebuild == [True]
    assert answer["published"] == 3 and "read_models_rebuilt" not in answer


def test_what_a_poll_finds_goes_in_full_batches_and_a_backlog_on_every_lane(
    stack: Stack,
    engine: Engine,  # noqa: F811
    queue_url: str,  # noqa: F811
    sqs: Any,  # noqa: F811
) -> None:
    from giftmarket.adapters.publisher import build_sqs_client

    client = build_sqs_client(stack.config.region, stack.config.localstack_url, connections=32)
    calls: list[int] = []
    client.meta.events.register(
        "before-parameter-build.sqs.SendMessageBatch",
        lambda params, **_: calls.append(len(params["Entries"])),
    )
    wide = SqsPublisher(client, queue_url, lanes=32)
    try:
        loop = Loop(engine, wide, run_seconds=3).start()
        time.sleep(0.3)
        few = write(engine, outbox_rows(16, groups=16))  # one poll's worth, 16 groups
        wait_published(engine, few)
        polled = list(calls)
        many = write(engine, outbox_rows(2000, groups=200))  # a backlog: half a batch or more
        wait_published(engine, many, timeout=20)
        report = loop.join()
    finally:
        wide.close()
    # 16 events of 16 groups on 32 lanes would be up to 16 one-entry calls; on two, two.
    assert sum(polled) == 16 and len(polled) <= 2, polled
    backlog = calls[len(polled) :]
    assert sum(backlog) == 2000 and max(backlog) == 10, backlog
    assert report.published == 2016
    assert len(drain_queue(sqs, queue_url, 2016, timeout=30)) == 2016


class FailingOnce(Publisher):
    """Raises on its first call, as a lost connection or a lock wait would mid-pass."""

    def __init__(self, inner: Publisher) -> None:
        self._inner, self.calls = inner, 0

    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("the first pass fails")
        return self._inner.send(envelopes)


def test_a_pass_that_fails_does_not_end_the_loop(
    engine: Engine,  # noqa: F811
    publisher: SqsPublisher,  # noqa: F811
) -> None:
    ids = write(engine, outbox_rows(5))
    failing = FailingOnce(publisher)
    report = relay_loop(
        engine, failing, run_seconds=2, poll_seconds=POLL, remaining_seconds=lambda: 300.0
    )
    # The failed pass left its rows; the loop went on and published them after its pause.
    assert failing.calls >= 2 and report.held_lock
    assert report.published == 5
    assert state(engine, ids) == dict.fromkeys(ids, (True, 0))
    assert lock_holder(engine) is None
