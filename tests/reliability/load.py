"""A steady load of requests on a few threads, recorded request by request, so a test can
break a server in the middle of it and then say what every client saw.

`make soak` runs the same tests longer and bigger: GM_SOAK_SCALE (1 in `make test`)
multiplies their outages, event counts and contenders (`soak`).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, select
from tests.support.handler_client import HandlerClient, User

from giftmarket.adapters import tables
from giftmarket_local.invoke import Reply

SOAK_SCALE = float(os.environ.get("GM_SOAK_SCALE", "1"))


def soak(value: int, *, cap: int | None = None) -> int:
    """`value` for `make test`, scaled up (and capped) for `make soak`."""
    scaled = round(value * SOAK_SCALE)
    return min(scaled, cap) if cap is not None else scaled


@dataclass(frozen=True)
class Outcome:
    client: int
    n: int  # the client's n-th request
    started: float  # time.monotonic()
    seconds: float
    reply: Reply | None
    error: str | None  # an exception the handler let out (never expected)

    @property
    def status(self) -> int:
        return self.reply.status if self.reply is not None else 0


@dataclass
class Window:
    """[start, end) in time.monotonic(): when a server was down."""

    start: float
    end: float = float("inf")

    def holds(self, outcome: Outcome) -> bool:
        return self.start <= outcome.started < self.end


@contextmanager
def load(
    request: Callable[[int, int], Reply], clients: int
) -> Iterator[Callable[[], list[Outcome]]]:
    """`clients` threads each calling `request(client, n)` back to back (n counts that
    client's requests) until the block ends; yields a function returning the outcomes so
    far. The threads are stopped and joined when the block exits."""
    stop = threading.Event()
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply: Reply | None = request(index, n)
                error = None
            except Exception as exc:  # noqa: BLE001 - what a client saw is the measurement
                reply, error = None, f"{type(exc).__name__}: {exc}"
            with lock:
                outcomes.append(
                    Outcome(index, n, started, time.monotonic() - started, reply, error)
                )
            n += 1

    threads = [
        threading.Thread(target=client, args=(i,), name=f"load-{i}", daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()

    def so_far() -> list[Outcome]:
        with lock:
            return list(outcomes)

    try:
        yield so_far
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def p99_ms(outcomes: Sequence[Outcome]) -> float:
    seconds = sorted(o.seconds for o in outcomes)
    return 1000 * seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))] if seconds else 0.0


def wait_for_successes(
    so_far: Callable[[], list[Outcome]], count: int, what: str, timeout: float = 60
) -> None:
    """Wait until `count` more requests than so far have succeeded."""
    since = len(so_far())
    wait_for(lambda: sum(o.status == 200 for o in so_far()[since:]) >= count, timeout, what)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Charges:
    """The command load: client i charges users[i] `amount` at a time, with a new
    Idempotency-Key per charge. A 503 is retried with the same key after a pause (the
    Retry-After, capped for the tests), as PRODUCT.md asks clients to: a 503 does not say
    whether the commit happened (the server may die between the two), and the key is what
    makes the retry safe."""

    def __init__(self, client: HandlerClient, users: Sequence[User], amount: int = 100) -> None:
        self.client, self.users, self.amount = client, users, amount
        self.keys: list[list[str]] = [[] for _ in users]  # each client's charges, in order
        self.done: list[set[str]] = [set() for _ in users]  # those answered 200
        self.pause_cap = 0.2  # seconds

    def __call__(self, i: int, n: int) -> Reply:
        if not self.keys[i] or self.keys[i][-1] in self.done[i]:
            self.keys[i].append(f"charge-{uuid.uuid4().hex}")
        key = self.keys[i][-1]
        reply = self.client.invoker.http(
            "POST",
            "/api/points/charge",
            body=f'{{"amount": {self.amount}}}'.encode(),
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {self.users[i].token}",
                "idempotency-key": key,
            },
        )
        if reply.status == 200:
            self.done[i].add(key)
        elif reply.status == 503:
            time.sleep(min(float(reply.headers.get("retry-after", "1")), self.pause_cap))
        return reply

    def finish(self) -> None:
        """Retry each client's outstanding charge (stopped just after a 503) until it lands."""
        for i in range(len(self.users)):
            while self.keys[i][-1] not in self.done[i]:
                self(i, -1)

    @property
    def made(self) -> int:
        return sum(map(len, self.keys))

    def counted(self) -> list[int]:
        """Per client, how many charges the database holds, checking each is there once:
        the balance is the postings' sum, one posting per charge."""
        out = []
        u, e = tables.users, tables.ledger_entries
        with self.client.container.database.writer.connect() as conn:
            for user in self.users:
                available = conn.execute(
                    select(u.c.available_points).where(u.c.id == user.user_id)
                ).scalar_one()
                postings = conn.execute(
                    select(func.count()).where(
                        e.c.account_owner == user.user_id, e.c.bucket == "available"
                    )
                ).scalar_one()
                assert available == self.amount * postings, (user, available, postings)
                out.append(int(postings))
        return out


def assert_only_503_then_success(outcomes: Sequence[Outcome], outage: Window) -> Counter[int]:
    """Every answer a 200 or a 503 problem with Retry-After, some 503s, and 200s after the
    outage; returns the statuses counted."""
    statuses = Counter(o.status for o in outcomes)
    others = [o.error or str(o.reply) for o in outcomes if o.status not in (200, 503)]
    assert not others, others[:5]
    refused = [o for o in outcomes if o.status == 503]
    assert refused, "the outage must have been seen"
    for o in refused:
        assert o.reply is not None
        assert o.reply.headers["content-type"] == "application/problem+json"
        assert int(o.reply.headers["retry-after"]) > 0
        assert o.reply.body["code"] == "database_unavailable"
    assert any(o.status == 200 for o in outcomes if o.started >= outage.end)
    return statuses


def first_success_after(outcomes: Sequence[Outcome], outage: Window) -> float:
    """Seconds from the end of the outage to the first request that then succeeded."""
    return (
        min(
            (
                o.started + o.seconds
                for o in outcomes
                if o.started >= outage.end and o.status == 200
            ),
            default=outage.end,
        )
        - outage.end
    )
