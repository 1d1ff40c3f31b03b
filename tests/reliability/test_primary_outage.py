"""The primary stopped for ten seconds under a command load, through the command Lambda
handler: clients get 503s with Retry-After and nothing else, no write is half made or made
twice, and commands succeed again once it is back, without restarting anything."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from tests.reliability.ledger import assert_ledger_agrees_with_balances
from tests.reliability.load import (
    Charges,
    Window,
    assert_only_503_then_success,
    first_success_after,
    load,
    soak,
    wait_for,
    wait_for_successes,
)
from tests.support.handler_client import MarketClient, handler_client

from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

CLIENTS = 4
OUTAGE_SECONDS = soak(10)


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[MarketClient]:
    with handler_client(MarketClient, make_settings(events_queue_url=None), stack) as client:
        yield client


def test_commands_during_a_primary_outage_get_only_503s_then_succeed(
    client: MarketClient, stack: Stack, figure: Callable[[str], None]
) -> None:
    charges = Charges(client, [client.sign_up() for _ in range(CLIENTS)])

    with load(charges, CLIENTS) as so_far:
        wait_for(lambda: len(so_far()) >= 20, 30, "the load to start")
        outage = Window(time.monotonic())
        assert stack.primary.process.stop()
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage.start)))
        stack.primary.process.start()
        outage.end = time.monotonic()
        wait_for_successes(so_far, 4 * CLIENTS, "charges to succeed again")
    outcomes = so_far()
    stack.wait_replica_caught_up()
    charges.finish()

    statuses = assert_only_503_then_success(outcomes, outage)
    # Every charge made counts exactly once: none lost, none twice.
    assert charges.counted() == [len(keys) for keys in charges.keys]
    assert_ledger_agrees_with_balances(client.container)
    figure(
        f"primary stopped {outage.end - outage.start:.1f} s under {CLIENTS} clients:"
        f" {len(outcomes)} charges answered ({statuses[200]} × 200, {statuses[503]} × 503 with"
        f" Retry-After, 0 other), first success {first_success_after(outcomes, outage):.2f} s"
        f" after the restart; {charges.made} charges each counted exactly once, ledger balanced"
    )
