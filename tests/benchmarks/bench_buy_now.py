"""Buy-now throughput with 1, 8 and 32 concurrent clients, on the real primary.

Each client is a separate process with its own container (engines, pool), as each warm
Lambda execution environment is: threads in one Python process would measure the GIL, not
the system. Two paths: the command executor (domain + one transaction with its row locks,
ledger postings and outbox rows), and the whole command Lambda handler fed API Gateway
events (adding JWT, FastAPI and Mangum); and three ways of publishing the events, in one
run with the events flowing to LocalStack SQS and a projector draining it (MODES): the
before and after of taking SQS out of the command's answer. Afterwards it checks what matters
more than speed: no ask sold twice, orders == successful responses, every order carries
its voucher's facts and was delivered (inspection is automatic), the ledger sums to zero and
every balance equals its postings. The asks are seeded with vouchers valid 30 more days, so
buy-now's voucher check (the expiry margin) is part of what is timed.

Run: make bench   (or .venv/bin/python tests/benchmarks/bench_buy_now.py [seconds-per-level])
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench_projection_lag import Projecting
from benchcommon import (
    OUT,
    RelayLoopProcess,
    bench_settings,
    bench_sqs,
    bench_stack,
    cpu_seconds,
    events_queue,
    percentile,
    pyplot,
    write_random_asks,
    write_result,
)
from sqlalchemy import func, insert, select

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import trading
from giftmarket.domain.errors import NoMatchingBid, NotFound
from giftmarket.domain.ids import new_id
from giftmarket.http.auth import TokenService
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.stack import Stack

LEVELS = (1, 8, 32)
GOAL_P50_MS, GOAL_ORDERS_PER_S = 5.0, 300.0
PRODUCTS = 20
SELLERS = 200
BUYERS = 64
ASKS = 24_000


def seed(container: Container) -> tuple[list[str], list[str]]:
    now = datetime.now(UTC).replace(tzinfo=None)
    rng = random.Random(7)
    products = [new_id() for _ in range(PRODUCTS)]
    sellers = [new_id() for _ in range(SELLERS)]
    buyers = [new_id() for _ in range(BUYERS)]

    def user(user_id: str, available: int) -> dict[str, Any]:
        return {
            "id": user_id,
            "email": f"{user_id.lower()}@bench.local",
            "nickname": "bench",
            "password_hash": "x",
            "available_points": available,
            "created_at": now,
            "updated_at": now,
        }

    budget = 10**9
    with container.database.writer.begin() as conn:
        conn.execute(
            insert(tables.users), [user(s, 0) for s in sellers] + [user(b, budget) for b in buyers]
        )
        charges = []
        for b in buyers:
            txn = new_id()
            charges += [
                {
                    "txn_id": txn,
                    "account_owner": "external",
                    "bucket": "charges",
                    "amount": -budget,
                    "reason": "charge",
                    "ref_type": "user",
                    "ref_id": b,
                    "created_at": now,
                },
                {
                    "txn_id": txn,
                    "account_owner": b,
                    "bucket": "available",
                    "amount": budget,
                    "reason": "charge",
                    "ref_type": "user",
                    "ref_id": b,
                    "created_at": now,
                },
            ]
        conn.execute(insert(tables.ledger_entries), charges)
        conn.execute(
            insert(tables.products),
            [
                {
                    "id": p,
                    "name": f"product {i}",
                    "brand": "bench",
                    "category": "coffee",
                    "face_value": 5000,
                    "created_at": now,
                }
                for i, p in enumerate(products)
            ],
        )
        write_random_asks(conn, rng, sellers=sellers, products=products, count=ASKS, now=now)
    return products, buyers


@dataclass(frozen=True)
class Job:
    path: str  # "executor" or "lambda_handler"
    client: int
    seconds: float
    settings: dict[str, Any]
    products: list[str]
    buyers: list[str]


_start_line: Any = None


def _join(start_line: Any) -> None:
    global _start_line
    _start_line = start_line


def client_process(job: Job) -> tuple[int, int, list[float], float]:
    """One client: a fresh process with its own container, buying until time is up."""
    container = bootstrap(Settings.model_validate(job.settings))
    set_container(container)
    try:
        make = via_executor if job.path == "executor" else via_lambda_handler
        buy = make(container, job.buyers)
        buy(job.client, "0" * 26)  # warm up: imports, connections (no such product: refused)
        rng = random.Random(job.client)
        latencies: list[float] = []
        ok = refused = 0
        _start_line.wait()  # every client warm, then all start at once
        cpu_at_start = time.process_time()
        stop_at = time.perf_counter() + job.seconds
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            if buy(job.client, rng.choice(job.products)):
                ok += 1
            else:
                refused += 1
            latencies.append((time.perf_counter() - began) * 1000)
        return ok, refused, latencies, time.process_time() - cpu_at_start
    finally:
        set_container(None)
        container.close()


# Whose CPU a level's orders cost: the processes that share the machine's cores with the
# clients. Only live ones are read: the relay's loop exists in the relay_loop modes only.
CPU_PIDS: dict[str, int | None] = {}


def cpu_now() -> dict[str, float]:
    """CPU seconds so far: this process (the projector's thread, as the SQS-triggered Lambda
    would run) and each of CPU_PIDS. The clients count their own, once at the start line."""
    return cpu_seconds("projector", CPU_PIDS)


def drive(
    path: str,
    clients: int,
    seconds: float,
    settings: Settings,
    products: list[str],
    buyers: list[str],
) -> dict[str, Any]:
    jobs = [Job(path, i, seconds, settings.model_dump(), products, buyers) for i in range(clients)]
    spawn = multiprocessing.get_context("spawn")
    start_line = spawn.Barrier(clients)
    before = cpu_now()
    with spawn.Pool(clients, initializer=_join, initargs=(start_line,)) as pool:
        outcomes = pool.map(client_process, jobs, chunksize=1)
    after = cpu_now()
    ok = sum(o[0] for o in outcomes)
    latencies = [ms for o in outcomes for ms in o[2]]
    # The servers' and the projector's CPU over the whole level (the clients' start-up
    # included, when little else runs); the clients' own from the start line on.
    spent = {k: after[k] - before[k] for k in before if k in after}
    spent["clients"] = sum(o[3] for o in outcomes)
    cpu_ms = {k: round(v * 1000 / max(ok, 1), 3) for k, v in spent.items()}
    return {
        "clients": clients,
        "orders": ok,
        "refused": sum(o[1] for o in outcomes),
        "orders_per_s": round(ok / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "cpu_ms_per_order": cpu_ms,
    }


def via_executor(container: Container, buyers: list[str]) -> Callable[[int, str], bool]:
    executor = container.command_executor

    def buy(client: int, product_id: str) -> bool:
        command = trading.BuyNow(buyers[client % len(buyers)], product_id, 10**6)
        try:
            executor.execute(command)
        except (NoMatchingBid, NotFound):
            return False
        return True

    return buy


def via_lambda_handler(container: Container, buyers: list[str]) -> Callable[[int, str], bool]:
    invoker = LocalInvoker()
    tokens = TokenService(
        container.jwt_secret, timedelta(seconds=container.settings.jwt_ttl_seconds)
    )
    bearer = [tokens.issue(b) for b in buyers]
    body = json.dumps({"price": 10**6}).encode()

    def buy(client: int, product_id: str) -> bool:
        reply = invoker.http(
            "POST",
            f"/api/products/{product_id}/buy-now",
            body=body,
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {bearer[client % len(bearer)]}",
            },
        )
        if reply.status == 201:
            return True
        if reply.status in (404, 409):
            return False
        raise RuntimeError(f"unexpected {reply}")

    return buy


def verify(container: Container, orders: int) -> dict[str, Any]:
    o, e, u = tables.orders, tables.ledger_entries, tables.users
    with container.database.writer.connect() as conn:
        total_orders = conn.execute(select(func.count()).select_from(o)).scalar_one()
        double_sold = conn.execute(
            select(func.count()).select_from(
                select(o.c.sell_bid_id)
                .group_by(o.c.sell_bid_id)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
        ledger_sum = conn.execute(select(func.coalesce(func.sum(e.c.amount), 0))).scalar_one()
        sums = {
            (owner, bucket): int(total)
            for owner, bucket, total in conn.execute(
                select(e.c.account_owner, e.c.bucket, func.sum(e.c.amount)).group_by(
                    e.c.account_owner, e.c.bucket
                )
            )
        }
        mismatched = sum(
            1
            for uid, a, esc, p in conn.execute(
                select(u.c.id, u.c.available_points, u.c.escrowed_points, u.c.pending_points)
            )
            if (a, esc, p)
            != (
                sums.get((uid, "available"), 0),
                sums.get((uid, "escrowed"), 0),
                sums.get((uid, "pending"), 0),
            )
        )
        outbox_rows = conn.execute(select(func.count()).select_from(tables.outbox)).scalar_one()
        without_voucher = conn.execute(
            select(func.count()).where(
                (o.c.barcode_last4.is_(None))
                | (o.c.expires_on.is_(None))
                | (o.c.delivered_at.is_(None))
            )
        ).scalar_one()
    assert total_orders == orders, (total_orders, orders)
    assert double_sold == 0 and ledger_sum == 0 and mismatched == 0
    assert without_voucher == 0, without_voucher
    return {
        "orders": total_orders,
        "asks_sold_twice": double_sold,
        "ledger_sum": int(ledger_sum),
        "balances_not_matching_ledger": mismatched,
        "orders_without_voucher_facts": without_voucher,
        "outbox_rows": outbox_rows,
    }


# How a command's events reach SQS, side by side in one run with LocalStack running and
# events flowing (a projector drains the queue throughout):
#   in_request  the command sends its own events after its commit, before it answers (the
#               fast path of old, EVENTS_PUBLISH=in_request);
#   relay_loop  the command answers once committed and the relay's loop, in a process of
#               its own as the scheduled Lambda, sends them batched across commands
#               (EVENTS_PUBLISH=relay, the default);
#   no_queue    nothing is sent at all: the command's own floor.
MODES = ("in_request", "relay_loop", "no_queue")
# The stack's servers whose CPU each level reports per order (the oidc stand-in idles).
SERVERS_SHARING_CPU = ("primary", "replica", "redis", "localstack")


def unpublished(container: Container) -> int:
    o = tables.outbox
    with container.database.writer.connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(o).where(o.c.published_at.is_(None))
        ).scalar_one()
    return int(count)


def wait_drained(container: Container, timeout: float = 60) -> float:
    """Seconds until the relay loop has published every outbox row."""
    started = time.perf_counter()
    while unpublished(container):
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{unpublished(container)} rows still unpublished")
        time.sleep(0.05)
    return time.perf_counter() - started


def main(seconds: float = 4.0) -> None:
    # The projector's EMF record per batch would be printed here: noise, and CPU.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with bench_stack() as stack, events_queue(stack, "bench-buy-now") as queue_url:
        # Like a Lambda container: one connection each (the clients are processes).
        floor = bench_settings(stack, db_pool_size=1, db_max_overflow=1)
        relayed = floor.model_copy(update={"events_queue_url": queue_url})
        in_request = relayed.model_copy(update={"events_publish": "in_request"})
        container = bootstrap(relayed)
        CPU_PIDS.update(
            (name, pid) for name, pid in stack.status().items() if name in SERVERS_SHARING_CPU
        )
        set_container(container)
        try:
            products, buyers = seed(container)
            results: dict[str, list[dict[str, Any]]] = {}
            starts: dict[str, dict[str, float]] = {}

            def mode(name: str, path: str, settings: Settings) -> None:
                starts[name] = quiet_start(stack)
                results[name] = levels(path, seconds, settings, products, buyers)

            with Projecting(bench_sqs(stack), queue_url):
                mode("executor, in_request", "executor", in_request)
                with RelayLoopProcess(relayed) as relay:
                    CPU_PIDS["relay"] = relay.pid
                    mode("executor, relay_loop", "executor", relayed)
                    mode("lambda_handler, relay_loop", "lambda_handler", relayed)
                    drain_seconds = wait_drained(container)
                del CPU_PIDS["relay"]
            left_unpublished = unpublished(container)
            mode("executor, no_queue", "executor", floor)
            orders = sum(r["orders"] for rows in results.values() for r in rows)
            checks = verify(container, orders)
        finally:
            set_container(None)
            container.close()
    checks["unpublished_after_relay_loop"] = left_unpublished
    result = {
        "seconds_per_level": seconds,
        "levels": results,
        "mode_starts": starts,
        "cpu_cores": os.cpu_count(),
        "checks": checks,
        "relay_loop": {**relay.report, "drained_after_load_s": round(drain_seconds, 2)},
        "goal": {"p50_ms_at_1": GOAL_P50_MS, "orders_per_s_at_8": GOAL_ORDERS_PER_S},
        "durable": stack.config.durable,
    }
    write_result("buy_now", result)
    plot(results)


def levels(
    path: str, seconds: float, settings: Settings, products: list[str], buyers: list[str]
) -> list[dict[str, Any]]:
    return [drive(path, n, seconds, settings, products, buyers) for n in LEVELS]


def quiet_start(stack: Stack) -> dict[str, float]:
    """Each mode starts once the replica has applied what the modes before it wrote: its
    replay runs on the same 2 cores, and would otherwise be billed to whichever mode comes
    next (the floor measured last came out at half its own figure). What was waited for,
    and the machine's load then, go in the result."""
    waited = stack.wait_replica_caught_up(timeout=300)
    return {"replica_catch_up_s": round(waited, 2), "load_1m": round(os.getloadavg()[0], 2)}


def plot(results: dict[str, list[dict[str, Any]]]) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for color, (name, rows) in zip(("C0", "C1", "C2", "C3"), results.items(), strict=False):
        clients = [r["clients"] for r in rows]
        left.plot(clients, [r["orders_per_s"] for r in rows], marker="o", color=color, label=name)
        right.plot(
            clients, [r["p99_ms"] for r in rows], marker="o", color=color, label=f"{name} p99"
        )
        right.plot(
            clients, [r["p50_ms"] for r in rows], marker="x", linestyle="--", label=f"{name} p50"
        )
    left.axhline(GOAL_ORDERS_PER_S, color="grey", linestyle=":", label="goal 300/s")
    left.set(
        xlabel="concurrent clients", ylabel="buy-now orders/s", xscale="log", title="throughput"
    )
    right.set(xlabel="concurrent clients", ylabel="ms", xscale="log", title="latency")
    left.legend()
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "buy_now.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 4.0)
