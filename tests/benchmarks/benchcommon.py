"""Shared by the benchmark programs: the stack they run on, percentiles, results, plots."""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy import event as sa_event

from giftmarket.settings import Settings
from giftmarket_local.migrations import reset, upgrade
from giftmarket_local.stack import REPO_ROOT, Stack, StackConfig

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

OUT = REPO_ROOT / "bench-results"

# The rows a benchmark seeds are the tests' own (tests/support): one definition of them.
sys.path.insert(0, str(REPO_ROOT))
from tests.support.vouchers import SEEDED_KID as SEEDED_KID  # noqa: E402
from tests.support.vouchers import seeded_ask as seeded_ask  # noqa: E402
from tests.support.vouchers import write_asks as write_asks  # noqa: E402
from tests.support.vouchers import write_random_asks as write_random_asks  # noqa: E402


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU a live process has used so far (Linux /proc); None if it is gone."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(own: str, pids: dict[str, int | None]) -> dict[str, float]:
    """CPU used so far: this process's as `own`, and each live process of `pids`."""
    used = {own: time.process_time()}
    for name, pid in pids.items():
        seconds = process_cpu_seconds(pid)
        if seconds is not None:
            used[name] = seconds
    return used


@contextmanager
def bench_stack(*, fresh_schema: bool = True) -> Iterator[Stack]:
    """The test profile's stack, started if needed and stopped again if we started it."""
    stack = Stack(StackConfig.for_profile("test"))
    started = stack.up()
    try:
        if fresh_schema:
            reset(stack.config)
        else:
            upgrade(stack.config, "head")
        yield stack
    finally:
        if stack.primary.process.is_running() and stack.replica.process.is_running():
            stack.purge_binlogs()
        stack.stop(started)


def bench_settings(stack: Stack, **overrides: Any) -> Settings:
    os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    return stack.config.app_settings(**overrides)


def bench_sqs(stack: Stack) -> SQSClient:
    """An SQS client on the stack's LocalStack, configured as the application's own."""
    from giftmarket.adapters.publisher import build_sqs_client

    os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    return build_sqs_client(stack.config.region, stack.config.localstack_url)


@contextmanager
def events_queue(stack: Stack, name: str) -> Iterator[str]:
    """A new FIFO events queue with its dead-letter queue, shaped like the deployed pair
    (no content-based deduplication, redrive after 5 receives), deleted afterwards.

    New for each use, like the integration tests' queues: SQS drops a MessageDeduplicationId
    it has seen in the last 5 minutes, and nothing else is in it to count or deliver."""
    sqs = bench_sqs(stack)
    suffix = uuid.uuid4().hex[:12]
    fifo: dict[QueueAttributeNameType, str] = {
        "FifoQueue": "true",
        "ContentBasedDeduplication": "false",
    }
    dlq = sqs.create_queue(QueueName=f"{name}-dlq-{suffix}.fifo", Attributes=fifo)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    url = sqs.create_queue(
        QueueName=f"{name}-{suffix}.fifo",
        Attributes={**fifo, "RedrivePolicy": redrive, "VisibilityTimeout": "60"},
    )["QueueUrl"]
    try:
        yield url
    finally:
        for queue in (url, dlq):
            sqs.delete_queue(QueueUrl=queue)
        sqs.close()  # an open keep-alive connection holds LocalStack's shutdown up


def queue_depth(sqs: SQSClient, url: str) -> int:
    """Messages in the queue, visible or in flight (LocalStack's counts are exact)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def write_result(name: str, result: dict[str, Any]) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class PublishPhases:
    """Where publishing outbox rows spends its wall time, from hooks on the writer engine
    and the SQS client: the claim (SELECT ... FOR UPDATE on the outbox), SendMessageBatch
    calls, the UPDATE marking rows published, commits, and the pool's pre-ping and
    reset-on-return. Thread-safe sums of seconds and call counts; `detach` undoes it all."""

    def __init__(self, engine: Engine, sqs: SQSClient) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._engine, self._sqs = engine, sqs
        self._dialect_originals: dict[str, Any] = {}

    def attach(self) -> PublishPhases:
        sa_event.listen(self._engine, "before_cursor_execute", self._before_statement)
        sa_event.listen(self._engine, "after_cursor_execute", self._after_statement)
        dialect = self._engine.dialect
        for method, phase in (
            ("do_commit", "commit"),
            ("do_ping", "ping"),
            ("do_rollback", "rollback"),
        ):
            original = getattr(dialect, method)
            self._dialect_originals[method] = original
            setattr(dialect, method, self._timed(phase, original))
        events = self._sqs.meta.events
        events.register("before-call.sqs.SendMessageBatch", self._before_send)
        events.register("after-call.sqs.SendMessageBatch", self._after_send)
        return self

    def detach(self) -> None:
        sa_event.remove(self._engine, "before_cursor_execute", self._before_statement)
        sa_event.remove(self._engine, "after_cursor_execute", self._after_statement)
        for method in self._dialect_originals:
            delattr(self._engine.dialect, method)  # the class's method shows through again
        self._dialect_originals.clear()
        events = self._sqs.meta.events
        events.unregister("before-call.sqs.SendMessageBatch", self._before_send)
        events.unregister("after-call.sqs.SendMessageBatch", self._after_send)

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.seconds[phase] += seconds
            self.calls[phase] += 1

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.seconds)

    def _timed(self, phase: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.add(phase, time.perf_counter() - began)

        return timed

    @staticmethod
    def statement_phase(statement: str) -> str:
        words = " ".join(statement.split()).upper()
        if words.startswith("SELECT") and "FROM OUTBOX" in words and "FOR UPDATE" in words:
            return "claim_sql"
        if words.startswith("UPDATE OUTBOX SET PUBLISHED_AT"):
            return "mark_published_sql"
        if words.startswith("UPDATE OUTBOX"):
            return "mark_refused_sql"
        return "other_sql"

    def _before_statement(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self._local.statement = time.perf_counter()

    def _after_statement(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.add(self.statement_phase(statement), time.perf_counter() - self._local.statement)

    def _before_send(self, **kwargs: Any) -> None:
        self._local.send = time.perf_counter()

    def _after_send(self, **kwargs: Any) -> None:
        self.add("send_message_batch", time.perf_counter() - self._local.send)


def top_functions(profiler: cProfile.Profile, seconds: float, n: int = 12) -> list[dict[str, Any]]:
    """The profile's functions by their own time, each with its share of the run."""
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(path).name}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 3),
                "cumulative_s": round(cumulative, 3),
                "own_share": round(own / seconds, 3),
            }
        )
    return sorted(rows, key=lambda r: -r["own_s"])[:n]


def _relay_main(settings: dict[str, Any], stop: Any, ready: Any, reports: Any) -> None:
    from giftmarket.adapters.publisher import relay_loop
    from giftmarket.bootstrap import bootstrap

    container = bootstrap(Settings.model_validate(settings))
    try:
        ready.set()
        report = relay_loop(
            container.database.writer,
            container.publisher,
            run_seconds=3600,
            poll_seconds=container.settings.outbox_relay_poll_ms / 1000,
            # Stopping is the invocation's time running out, as the handler sees it.
            remaining_seconds=lambda: 0.0 if stop.is_set() else 300.0,
            batch_size=container.settings.outbox_relay_batch_size,
        )
        reports.put(report.as_dict())
    finally:
        container.close()


class RelayLoopProcess:
    """The outbox relay's polling loop in a process of its own, as the scheduled Lambda runs
    it (EVENTS_PUBLISH=relay: the commands leave their events to it). `report` is its
    RelayLoopReport once it stopped."""

    def __init__(self, settings: Settings) -> None:
        import multiprocessing

        spawn = multiprocessing.get_context("spawn")
        self._stop, self._ready = spawn.Event(), spawn.Event()
        self._reports: Any = spawn.Queue()
        self._process = spawn.Process(
            target=_relay_main,
            args=(settings.model_dump(), self._stop, self._ready, self._reports),
            name="relay-loop",
        )
        self.report: dict[str, Any] = {}

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def __enter__(self) -> RelayLoopProcess:
        self._process.start()
        if not self._ready.wait(60):
            self._process.kill()
            raise RuntimeError("the relay loop process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.report = self._reports.get(timeout=30)
        self._process.join(timeout=30)
