"""A buy-now load with the daily purge running under it, the purge stopped and continued
in turns, the commands' latencies on either side: shared by the suite's correctness test
(tests/reliability/test_purge_under_load.py, 2x10^4 rows) and the benchmark of the goal of
issue 13 (tests/benchmarks/bench_purge.py, 10^5 rows: command p99 within 1.5x of the same
load without the purge).

The load is the command Lambda handler fed API Gateway events on a few client threads, each
sending buy-now at a steady pace (an open loop, as independent clients do), every request
with an Idempotency-Key, so the commands write the two tables the purge deletes from. The
purge is the real `giftmarket jobs purge` with its default settings, in its own process,
stopped and continued in turns (SIGSTOP, SIGCONT): the commands sent while it ran are
compared with those sent while it was stopped, in the same minute, so whatever else the
machine does meanwhile (other test runs) falls on both sides alike.

What the purge can take from the commands is the primary's time: its locks are rows no
command uses (tests/integration/test_purge_job.py; stopped in the middle of a batch here, it
holds them for a while too), so what remains is the CPU its deletes cost the primary. In
AWS the purge runs in a Lambda of its own and the replica on its own instance; here both
share two cores with the primary and the load. Their processes (the purge's, and every
thread of the replica while root may restore it) therefore run at the lowest CPU priority,
as if elsewhere, while the primary's work competes at full priority, as it would in AWS.

Measured on this machine, each side of an A/B: 1000-row batches back to back took 2.6 to
2.9x the p99 of the quiet periods; 200-row batches, resting three times as long as each took
(the defaults), 1.1 to 1.4x.
"""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select
from tests.reliability.ledger import assert_ledger_agrees_with_balances
from tests.support.handler_client import PASSWORD
from tests.support.purge_rows import insert_idempotency, insert_outbox, left
from tests.support.vouchers import write_random_asks

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container
from giftmarket.commands.ports import Publisher
from giftmarket.domain.ids import new_id
from giftmarket.messages import EventEnvelope
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.stack import Stack

CLIENTS = 4
PACE_SECONDS = 0.08  # each client's interval between sends: 50 buy-now/s in all
# The purge runs for ON_SECONDS, is stopped (SIGSTOP) for OFF_SECONDS, and so on until it
# is done: commands sent while it ran are compared with those sent while it was stopped,
# in the same minute, so what else the machine does meanwhile falls on both sides alike.
# Commands started within SETTLE_SECONDS of a switch count for neither side.
ON_SECONDS, OFF_SECONDS, SETTLE_SECONDS = 1.2, 0.6, 0.05
ASKS = 3000
LOWEST_PRIORITY = 19


@dataclass(frozen=True)
class Sent:
    started: float  # time.monotonic()
    seconds: float
    status: int


class Accepting(Publisher):
    """A queue that takes every event at once: the commands' fast path still locks and marks
    its outbox rows published (next to the purge's deletes), without LocalStack's pauses,
    which have nothing to do with the purge, in the latencies."""

    def send(self, envelopes: Sequence[EventEnvelope]) -> set[str]:
        return {envelope.outbox_id for envelope in envelopes}


def seed_market(engine: Engine, invoker: LocalInvoker) -> tuple[list[str], list[str]]:
    """Products with ASKS open asks (their sellers and images written directly: what is
    measured is buying), and CLIENTS buyers signed up and charged through the API.
    Returns (product ids, buyer tokens)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    rng = random.Random(13)
    products = [new_id() for _ in range(10)]
    sellers = [new_id() for _ in range(50)]
    with engine.begin() as conn:
        conn.execute(
            insert(tables.users),
            [
                {
                    "id": s,
                    "email": f"{s.lower()}@purge-load.test",
                    "nickname": "seller",
                    "password_hash": "x",
                    "created_at": now,
                    "updated_at": now,
                }
                for s in sellers
            ],
        )
        conn.execute(
            insert(tables.products),
            [
                {
                    "id": p,
                    "name": f"purge load {i}",
                    "brand": "load",
                    "category": f"purge-load-{uuid.uuid4().hex[:6]}",
                    "face_value": 5000,
                    "created_at": now,
                }
                for i, p in enumerate(products)
            ],
        )
        write_random_asks(conn, rng, sellers=sellers, products=products, count=ASKS, now=now)
    tokens = []
    for _ in range(CLIENTS):
        body = {
            "email": f"{uuid.uuid4().hex}@purge-load.test",
            "password": PASSWORD,
            "nickname": "b",
        }
        signed_up = call(invoker, "POST", "/api/auth/signup", body)
        assert signed_up.status == 201, signed_up
        token = signed_up.body["token"]
        charged = call(invoker, "POST", "/api/points/charge", {"amount": 10**9}, token)
        assert charged.status == 200, charged
        tokens.append(token)
    return products, tokens


def call(invoker: LocalInvoker, method: str, path: str, body: Any, token: str | None = None) -> Any:
    headers = {"content-type": "application/json", "idempotency-key": uuid.uuid4().hex}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return invoker.http(method, path, body=json.dumps(body).encode(), headers=headers)


def paced_load(send: Callable[[int], int], stop: threading.Event) -> list[Sent]:
    """CLIENTS threads, each calling `send(client)` every PACE_SECONDS (staggered; a late
    send goes at once, without a burst to catch up) until `stop`."""
    sent: list[Sent] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        due = time.monotonic() + PACE_SECONDS * index / CLIENTS
        while not stop.is_set():
            pause = due - time.monotonic()
            if pause > 0:
                stop.wait(pause)
                continue
            began = time.monotonic()
            status = send(index)
            with lock:
                sent.append(Sent(began, time.monotonic() - began, status))
            due = max(due + PACE_SECONDS, time.monotonic())

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(30)
    return sent


def p99_ms(sent: list[Sent]) -> float:
    seconds = sorted(s.seconds for s in sent)
    return 1000 * seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))]


def run_purge(stack: Stack) -> subprocess.Popen[str]:
    """`giftmarket jobs purge` in a process of its own, with the stack's settings, at the
    lowest CPU priority (in AWS it has a Lambda's CPU to itself)."""
    purge = subprocess.Popen(
        [sys.executable, "-m", "giftmarket.cli", "jobs", "purge"],
        env={**os.environ, **stack.config.app_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.setpriority(os.PRIO_PROCESS, purge.pid, LOWEST_PRIORITY)
    return purge


def alternate(purge: subprocess.Popen[str]) -> list[tuple[float, float, bool]]:
    """Let the purge run ON_SECONDS, stop it OFF_SECONDS, ... until it exits; returns the
    windows as (start, end, running), in time.monotonic()."""
    windows: list[tuple[float, float, bool]] = []
    running, since = True, time.monotonic()
    try:
        while purge.poll() is None and time.monotonic() - since < 120:
            time.sleep(ON_SECONDS if running else OFF_SECONDS)
            if purge.poll() is not None:
                break
            purge.send_signal(signal.SIGSTOP if running else signal.SIGCONT)
            now = time.monotonic()
            windows.append((since, now, running))
            running, since = not running, now
    finally:
        purge.send_signal(signal.SIGCONT)
    if running:  # the last window, up to its exit
        windows.append((since, time.monotonic(), True))
    return windows


@contextmanager
def in_the_background(pid: int | None) -> Iterator[None]:
    """Every thread of process `pid` at the lowest CPU priority for the block, then back
    where it was. Only as root, who may raise a priority again; otherwise nothing."""
    if pid is None or os.geteuid() != 0:
        yield
        return

    def threads() -> list[int]:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]

    before = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in threads()}
    for tid in before:
        with suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, tid, LOWEST_PRIORITY)
    try:
        yield
    finally:
        usual = before.get(pid, 0)
        for tid in threads():  # threads started meanwhile inherited the lowest priority
            with suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, tid, before.get(tid, usual))


@dataclass(frozen=True)
class Round:
    """One round's figures: buy-now latencies without and with the purge running."""

    rows: int
    p50_quiet_ms: float
    p99_quiet_ms: float
    p99_during_ms: float
    quiet: int  # commands measured while the purge was stopped
    during: int  # and while it ran
    purge_seconds: float
    orders: int

    @property
    def ratio(self) -> float:
        return self.p99_during_ms / self.p99_quiet_ms


def purge_under_load(
    container: Container, stack: Stack, tag: str, figure: Callable[[str], None], rows: int
) -> Round:
    """One round: `rows` rows seeded (half outbox, half idempotency records, all past their
    retention), purged under the load; every correctness check holds; the figures are
    returned and recorded."""
    engine = container.database.writer
    now = datetime.now(UTC)
    began = time.monotonic()
    with engine.begin() as conn:
        insert_outbox(
            conn,
            tag,
            rows // 2,
            occurred_at=now - timedelta(days=8, hours=1),
            published_at=now - timedelta(days=8),
        )
        insert_idempotency(conn, tag, rows // 2, expires_at=now - timedelta(hours=1))
    seeded = time.monotonic() - began
    assert left(engine, tag) == (rows // 2, rows // 2)

    invoker = LocalInvoker()
    products, tokens = seed_market(engine, invoker)
    rng = random.Random(31)

    def buy_now(client: int) -> int:
        reply = call(
            invoker,
            "POST",
            f"/api/products/{rng.choice(products)}/buy-now",
            {"price": 10**6},
            tokens[client],
        )
        return int(reply.status)

    # Warm: imports, pools, the first token check.
    warm_orders = sum(buy_now(client) == 201 for client in range(CLIENTS))
    # The load generator's own full collections (200 ms, every client thread stopped at
    # once) would land in one window or the other by chance: what is set up stays out of
    # them from here on.
    gc.collect()
    gc.freeze()

    stop = threading.Event()
    result: list[list[Sent]] = []
    loader = threading.Thread(target=lambda: result.append(paced_load(buy_now, stop)))
    loader.start()
    try:
        time.sleep(1.0)
        with in_the_background(stack.replica.process.pid()):
            purge_began = time.monotonic()
            purge = run_purge(stack)
            windows = alternate(purge)
            out, err = purge.communicate(timeout=60)
            purge_ended = time.monotonic()
    finally:
        stop.set()
        loader.join(60)
        gc.unfreeze()
    assert purge.returncode == 0, err
    sent = result[0]

    assert {s.status for s in sent} <= {201, 409}, sorted({s.status for s in sent})
    during: list[Sent] = []
    quiet: list[Sent] = []
    for begin, end, running in windows:
        side = during if running else quiet
        side += [s for s in sent if begin + SETTLE_SECONDS <= s.started < end]
    assert left(engine, tag) == (0, 0)
    purged = int(out.splitlines()[-1].split(": deleted ")[1].split(" ")[0])
    assert purged >= rows
    assert during and quiet, (len(during), len(quiet))
    without, with_purge = p99_ms(quiet), p99_ms(during)
    ratio = with_purge / without
    orders = sum(s.status == 201 for s in sent)
    p50 = sorted(s.seconds for s in quiet)[len(quiet) // 2] * 1000
    figure(
        f"buy-now p99 {without:.1f} ms (p50 {p50:.1f}) without the purge "
        f"({len(quiet)} commands), "
        f"{with_purge:.1f} ms while it ran ({len(during)} commands): ratio {ratio:.2f}; "
        f"purged {purged} rows in {purge_ended - purge_began:.1f} s, "
        f"stopped {sum(e - b for b, e, on in windows if not on):.1f} s of them "
        f"(seeded {rows} in {seeded:.1f} s); {orders} orders"
    )
    with engine.connect() as conn:
        orders_written = conn.execute(
            select(func.count()).where(tables.orders.c.product_id.in_(products))
        ).scalar_one()
    assert orders_written == orders + warm_orders
    assert_ledger_agrees_with_balances(container)
    return Round(
        rows=rows,
        p50_quiet_ms=round(p50, 2),
        p99_quiet_ms=round(without, 2),
        p99_during_ms=round(with_purge, 2),
        quiet=len(quiet),
        during=len(during),
        purge_seconds=round(purge_ended - purge_began, 2),
        orders=orders,
    )
