"""Projection lag on the local stack: a command's commit → its effect visible in Redis.

The read side as it runs: a command commits through the command executor, whose fast path
sends the command's outbox rows to the FIFO events queue (LocalStack SQS) right after the
commit; an SQS event source (Lambda's mapping, locally: long polling, batches of ten)
feeds them to the projector's real Lambda handler, which writes the Redis read model. Each
sample charges a user's points and polls that user's read model (the /api/me answer) every
half millisecond until it shows the new balance. The lag is commit → visible, split into
commit → received (the handler was handed the command's events: the fast path's send and
SQS's delivery) and received → visible (the handler, Redis, the poll). Apart: commit → sent,
how long the fast path takes (what it adds to a command's response) and where that goes;
a long poll often returns a message before SendMessageBatch's own response is back, so
"sent" is not a point on the way to "visible". Writes bench-results/projection_lag.{json,png}.

Run: make bench   (or .venv/bin/python tests/benchmarks/bench_projection_lag.py [samples])
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchcommon import (
    OUT,
    PublishPhases,
    RelayLoopProcess,
    bench_settings,
    bench_sqs,
    bench_stack,
    events_queue,
    percentile,
    pyplot,
    write_result,
)

from giftmarket.adapters.publisher import publish_committed
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import accounts
from giftmarket.commands.executor import CommandExecutor
from giftmarket.projections.rebuild import ensure_read_models
from giftmarket.queries import account
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.sqs_source import SqsEventSource

WARMUP = 30
USERS = 10  # charged in turn, so a sample never waits on the previous one's message group
POLL_SECONDS = 0.0005
VISIBLE_TIMEOUT = 10.0
GOAL_P50_MS, GOAL_P99_MS = 50.0, 150.0
# Long polling: a receive returns as soon as a message arrives, so delivery is not bounded
# by a poll interval. One second keeps the source's shutdown (and LocalStack's) quick.
WAIT_SECONDS = 1


@dataclass(frozen=True)
class Sample:
    committed: float  # perf_counter() seconds
    sent: float  # the fast path's publish returned
    received: float  # the event source handed the last of the command's events to the handler
    visible: float  # the read model first showed the new balance
    fast_path: dict[str, float]  # seconds of the fast path in each of PublishPhases' phases

    @property
    def lag(self) -> float:
        return ms(self.committed, self.visible)


def ms(start: float, end: float) -> float:
    return (end - start) * 1000


class Projecting:
    """The projector Lambda fed by an SQS event source in a background thread, noting when
    each event (by outbox id) reached the handler."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.received: dict[str, float] = {}
        self._invoker = LocalInvoker()
        self._source = SqsEventSource(
            sqs, queue_url, self._invoke, wait_seconds=WAIT_SECONDS, idle_seconds=0
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._source.run, args=(self._stop,), name="sqs-projector", daemon=True
        )

    def _invoke(self, event: dict[str, Any]) -> Any:
        now = time.perf_counter()
        for record in event["Records"]:
            self.received.setdefault(json.loads(record["body"])["outbox_id"], now)
        return self._invoker.invoke_event_raw("ProjectorFunction", event)

    def __enter__(self) -> Projecting:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_SECONDS + 10)
        if self._thread.is_alive():
            raise RuntimeError("the SQS event source did not stop")


@dataclass
class AfterCommit:
    """The container's command executor with its after-commit hook timed: called right
    after the commit. With `publish` (EVENTS_PUBLISH=in_request) it is the fast path that
    claims the command's outbox rows, sends them to SQS, marks them published and commits,
    and `phases` says where that time went; without, the relay's loop sends them."""

    container: Container
    hooks: PublishPhases
    publish: bool
    committed: float = 0.0
    sent: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def executor(self) -> CommandExecutor:
        return replace(self.container.command_executor, after_commit=self._after_commit)

    def _after_commit(self, outbox_ids: tuple[str, ...]) -> None:
        before = self.hooks.snapshot()
        self.committed = time.perf_counter()
        if self.publish:
            publish_committed(self.container.database.writer, self.container.publisher, outbox_ids)
        self.sent = time.perf_counter()
        after = self.hooks.snapshot()
        self.phases = {k: after[k] - before.get(k, 0.0) for k in after}


def wait_until_shown(container: Container, user_id: str, points: int) -> float:
    """Poll the user's read model (the /api/me answer) until it shows `points` available;
    returns when it first did. None (not projected yet) is polled past like a stale answer."""
    deadline = time.perf_counter() + VISIBLE_TIMEOUT
    while True:
        me = account.me_from_read_model(container.read_models, user_id)
        now = time.perf_counter()
        if me is not None and me["available_points"] == points:
            return now
        if now > deadline:
            raise TimeoutError(f"{user_id}: read model shows {me} after {VISIBLE_TIMEOUT}s")
        time.sleep(POLL_SECONDS)


def sign_up(container: Container, executor: CommandExecutor) -> str:
    command = accounts.SignUp(f"{uuid.uuid4().hex}@bench.local", "password123", "bench")
    account, _ = executor.execute(command)
    user_id: str = account.user_id
    wait_until_shown(container, user_id, 0)  # projected through the queue like the rest
    return user_id


def charge(executor: CommandExecutor, user_id: str, amount: int) -> tuple[int, tuple[str, ...]]:
    """Charge through the executor as the command API does; the new balance and the
    command's outbox ids."""
    command = accounts.ChargePoints(user_id, amount)
    balance, committed = executor.execute(command)
    return balance.available_points, committed.outbox_ids


def measure(
    container: Container, projector_sqs: Any, queue_url: str, samples: int, *, publish: bool
) -> list[Sample]:
    hooks = PublishPhases(container.database.writer, container.sqs).attach()
    fast_path = AfterCommit(container, hooks, publish)
    executor = fast_path.executor()
    # Read models live in generations and answer None for every user until one has been
    # built and switched in: build one if Redis has none (on the fresh schema, at no cost).
    ensure_read_models(container.read_models, container.settings, container.database)
    try:
        with Projecting(projector_sqs, queue_url) as projecting:
            users = [sign_up(container, executor) for _ in range(USERS)]
            taken: list[Sample] = []
            for n in range(WARMUP + samples):
                user_id = users[n % USERS]
                balance, outbox_ids = charge(executor, user_id, 1 + n % 97)
                visible = wait_until_shown(container, user_id, balance)
                received = max(projecting.received.get(i, visible) for i in outbox_ids)
                if n >= WARMUP:
                    taken.append(
                        Sample(
                            fast_path.committed, fast_path.sent, received, visible, fast_path.phases
                        )
                    )
    finally:
        hooks.detach()
    return taken


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min_ms": round(min(values), 2),
        "p50_ms": round(statistics.median(values), 2),
        "p90_ms": round(percentile(values, 90), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
        "mean_ms": round(statistics.fmean(values), 2),
    }


def fast_path_phases(taken: list[Sample]) -> dict[str, float]:
    """The mean fast path, phase by phase; `unhooked` is the rest of commit → sent (building
    envelopes and requests, checking a connection out, Python)."""
    phases = sorted({phase for s in taken for phase in s.fast_path})
    means = {p: statistics.fmean(s.fast_path.get(p, 0.0) for s in taken) * 1000 for p in phases}
    total = statistics.fmean(ms(s.committed, s.sent) for s in taken)
    means["unhooked"] = total - sum(means.values())
    return {phase: round(value, 2) for phase, value in means.items()}


def main(samples: int = 300) -> None:
    # The local runner's default: one EMF metrics record per invocation is noise here.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    taken: dict[str, list[Sample]] = {}
    with bench_stack() as stack:
        settings = bench_settings(stack, password_hash_time_cost=1, password_hash_memory_kib=1024)
        # The before and after, in one run: the command sends its own events before it
        # answers (EVENTS_PUBLISH=in_request), or the relay's loop, in a process of its own
        # as the scheduled Lambda, sends them (relay, the default). A queue each.
        for mode in ("in_request", "relay_loop"):
            with events_queue(stack, f"bench-lag-{mode.replace('_', '-')}") as queue_url:
                queued = settings.model_copy(update={"events_queue_url": queue_url})
                taken[mode] = run_mode(stack, queued, queue_url, samples, mode)
    result: dict[str, Any] = {
        "samples": len(taken["relay_loop"]),
        "warmup": WARMUP,
        "users": USERS,
        "poll_interval_ms": POLL_SECONDS * 1000,
        "receive_wait_seconds": WAIT_SECONDS,
        "relay_poll_ms": settings.outbox_relay_poll_ms,
        "durable": stack.config.durable,
        "goal": {"p50_ms": GOAL_P50_MS, "p99_ms": GOAL_P99_MS},
        "modes": {mode: mode_result(samples_of) for mode, samples_of in taken.items()},
    }
    # The figures of the deployed way, relay_loop, at the top level.
    result.update(result["modes"]["relay_loop"])
    write_result("projection_lag", result)
    plot(taken, OUT / "projection_lag.png")


def run_mode(
    stack: Any, settings: Settings, queue_url: str, samples: int, mode: str
) -> list[Sample]:
    # Two containers, as two Lambdas: the command side (which also reads the read model,
    # as the query API would) and the projector's, the process-wide one its handler takes
    # with get_container(). The relay's loop, when it is the publisher, has a process.
    commands, projector = bootstrap(settings), bootstrap(settings)
    set_container(projector)
    try:
        if mode == "relay_loop":
            with RelayLoopProcess(settings):
                return measure(commands, bench_sqs(stack), queue_url, samples, publish=False)
        # The event source has its own client, and closes it when it stops.
        return measure(commands, bench_sqs(stack), queue_url, samples, publish=True)
    finally:
        set_container(None)
        commands.close()
        projector.close()


def mode_result(taken: list[Sample]) -> dict[str, Any]:
    lags = [s.lag for s in taken]
    return {
        "commit_to_visible": summary(lags),
        "meets_goal": statistics.median(lags) <= GOAL_P50_MS
        and percentile(lags, 99) <= GOAL_P99_MS,
        "split": {
            "commit_to_received": summary([ms(s.committed, s.received) for s in taken]),
            "received_to_visible": summary([ms(s.received, s.visible) for s in taken]),
        },
        # What publishing adds to the command's own time (0 when the relay publishes).
        "in_command_commit_to_sent": summary([ms(s.committed, s.sent) for s in taken]),
        "in_command_phases_mean_ms": fast_path_phases(taken),
    }


def plot(taken: dict[str, list[Sample]], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=(3, 2))
    top = max(s.lag for samples in taken.values() for s in samples)
    for (mode, samples), color in zip(taken.items(), ("#d88a3b", "#3b7dd8"), strict=False):
        lags = [s.lag for s in samples]
        left.hist(lags, bins=60, range=(0, top), color=color, alpha=0.6, label=mode)
        left.axvline(statistics.median(lags), color=color, linestyle="--", label=f"{mode} p50")
        left.axvline(percentile(lags, 99), color=color, linestyle=":", label=f"{mode} p99")
    for name, goal, style in (("p50", GOAL_P50_MS, ":"), ("p99", GOAL_P99_MS, "-.")):
        if goal <= 1.5 * top:  # far off to the right it would only squash the histogram
            left.axvline(goal, color="grey", linestyle=style, label=f"goal {name} ≤ {goal:g}")
    left.set_xlabel("commit → visible in the Redis read model (ms)")
    left.set_ylabel("commands")
    left.set_title(
        "Projection lag through LocalStack SQS, by who publishes\n"
        f"(goal: p50 ≤ {GOAL_P50_MS:g} ms, p99 ≤ {GOAL_P99_MS:g} ms)",
        fontsize=10,
    )
    left.legend(fontsize=7)
    parts: dict[str, list[float]] = {}
    for mode, samples in taken.items():
        parts[f"{mode}\ncommit→received"] = [ms(s.committed, s.received) for s in samples]
        parts[f"{mode}\nin the command"] = [ms(s.committed, s.sent) for s in samples]
    right.boxplot(list(parts.values()), showfliers=True)
    right.set_xticks(range(1, len(parts) + 1), list(parts), fontsize=7)
    right.set_ylabel("ms")
    right.set_title("where the lag goes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
