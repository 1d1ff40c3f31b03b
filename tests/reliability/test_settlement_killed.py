"""Daily settlement killed half way (SIGKILL, as when a Lambda is killed at its timeout),
between two sellers or inside one's transaction, with one and with four workers: the rerun
ends exactly as one clean run does, and money is conserved at every point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.support.fakes import FakeClock, FakeImageStore
from tests.support.settlement_market import (
    SHAPE,
    Market,
    assert_money_is_conserved,
    new_market,
    outcome,
    run_at,
    settle,
    settlement_container,
    settlement_of,
    start_from_empty_schema,
)

from giftmarket.bootstrap import Container
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack


@pytest.fixture(scope="module", autouse=True)
def empty_schema(stack: Stack) -> None:
    start_from_empty_schema(stack)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def images() -> FakeImageStore:
    return FakeImageStore()


@pytest.fixture(scope="module")
def container(
    make_settings: Callable[..., Settings], clock: FakeClock, images: FakeImageStore
) -> Iterator[Container]:
    yield from settlement_container(make_settings, clock, images)


# -- a run killed half way ------------------------------------------------------------------

# Settles a date with a hook that SIGKILLs the process: after the commit of the N-th seller
# ("between"), or inside the next seller's transaction, with its locks held and its ledger
# half written ("inside"). No cleanup code runs, as when a Lambda is killed at its timeout.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading
    from datetime import date, datetime
    from giftmarket.adapters import repositories
    from giftmarket.bootstrap import bootstrap
    from giftmarket.jobs.settlement import settle_business_date

    day, now, after, where, workers = sys.argv[1:6]
    container = bootstrap()
    settled = recorded = 0
    counting = threading.Lock()
    record = repositories.SqlLedger.record

    def die():
        print("killed after", settled, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def hook(result):
        global settled
        settled += 1
        if where == "between" and settled == int(after):
            die()

    def record_then_maybe_die(self, transaction):
        # Counted by ledger writes, not commits: with workers, the sellers after the N-th
        # may all have written theirs before its commit, and then none would be killed.
        global recorded
        record(self, transaction)
        with counting:
            recorded += 1
            last = recorded == int(after) + 1
        if where == "inside" and last:
            die()

    repositories.SqlLedger.record = record_then_maybe_die
    settle_business_date(
        container.command_executor,
        business_date=date.fromisoformat(day),
        now=datetime.fromisoformat(now),
        fee_bps=container.settings.seller_fee_bps,
        workers=int(workers),
        after_seller=hook,
    )
    print("survived", flush=True)
    """
)


@pytest.fixture(scope="module")
def clean_run(
    container: Container, clock: FakeClock, images: FakeImageStore
) -> tuple[Market, list[Any]]:
    market = new_market(container, clock, images).with_sales(SHAPE)
    report = settle(container, market.day)
    assert report.sellers_settled == len(SHAPE)
    return market, outcome(container, market)


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("where", ["between", "inside"])
def test_a_run_killed_half_way_then_run_again_ends_as_one_clean_run(
    stack: Stack,
    container: Container,
    clock: FakeClock,
    images: FakeImageStore,
    clean_run: tuple[Market, list[Any]],
    where: str,
    workers: int,
    figure: Callable[[str], None],
) -> None:
    _, clean = clean_run
    market = new_market(container, clock, images).with_sales(SHAPE)
    env = {**os.environ, **stack.config.app_env(), "EVENTS_QUEUE_URL": ""}
    args = [market.day.isoformat(), run_at(market.day).isoformat(), "3", where, str(workers)]

    child = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=60
    )

    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "killed after" in child.stdout and "survived" not in child.stdout
    settled = [s for s in market.sellers if settlement_of(container, s, market.day) is not None]
    if workers == 1:
        assert len(settled) == 3
    elif where == "between":
        # Three were reported; others may have committed and not been reported.
        assert 3 <= len(settled) < len(SHAPE)
    else:
        # Killed inside the fourth seller's transaction: at most the three before committed.
        assert len(settled) <= 3
    assert_money_is_conserved(container)

    resumed = settle(container, market.day)

    assert resumed.sellers_settled == len(SHAPE) - len(settled)
    assert outcome(container, market) == clean
    assert_money_is_conserved(container)
    orders = sum(map(len, SHAPE))
    figure(
        f"settlement ({workers} worker(s)) SIGKILLed {where} sellers with {len(settled)} of"
        f" {len(SHAPE)} settled: the rerun settled {resumed.sellers_settled}, and the {orders}"
        " orders' settlements, balances, ledger, fees and events equal a clean run's"
    )
