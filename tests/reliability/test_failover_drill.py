"""The promoted-replica failover drill (infra/local/giftmarket_local/failover.py) run under
a command load through the command Lambda handler: the primary crashes, the replica is
promoted and takes over the endpoint, a new replica is made. Clients see only 503s with
Retry-After until the endpoint is back, then success, with nothing restarted on the
application's side; no charge is counted twice, and a charge acknowledged but lost can only
be one of the transactions the drill reports lost (asynchronous replication)."""

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
    wait_for_successes,
)
from tests.support.handler_client import MarketClient, handler_client

from giftmarket.settings import Settings
from giftmarket_local.failover import failover_drill
from giftmarket_local.stack import Stack

CLIENTS = 4
DRILLS = soak(1)


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[MarketClient]:
    settings = make_settings(events_queue_url=None, replica_check_interval_seconds=0)
    with handler_client(MarketClient, settings, stack) as client:
        yield client


def test_a_promoted_replica_takes_over_under_a_command_load(
    client: MarketClient, stack: Stack, figure: Callable[[str], None]
) -> None:
    charges = Charges(client, [client.sign_up() for _ in range(CLIENTS)])
    log: list[str] = []

    reports = []
    with load(charges, CLIENTS) as so_far:
        for _ in range(DRILLS):
            wait_for_successes(so_far, 4 * CLIENTS, "charges to succeed")
            outage = Window(time.monotonic())
            reports.append(failover_drill(stack, say=log.append))
            outage.end = outage.start + reports[-1].steps["endpoint serves the new primary"]
        wait_for_successes(so_far, 4 * CLIENTS, "charges to succeed again")
    outcomes = so_far()
    charges.finish()

    statuses = assert_only_503_then_success(outcomes, outage)
    counted = charges.counted()  # each charge held at most once
    acknowledged = [len(done) for done in charges.done]
    lost = sum(a - c for a, c in zip(acknowledged, counted, strict=True))
    assert all(c <= len(keys) for c, keys in zip(counted, charges.keys, strict=True))
    lost_in_crashes = sum(r.lost_transactions for r in reports)
    assert 0 <= lost <= lost_in_crashes, (lost, reports)
    assert_ledger_agrees_with_balances(client.container)
    # The new replica serves queries again.
    stack.wait_replica_caught_up()
    assert stack.replica_status()["Slave_SQL_Running"] == "Yes"
    me = client.call("GET", "/api/me", token=charges.users[0].token)
    assert me.status == 200 and me.body["available_points"] == counted[0] * charges.amount
    report = reports[-1]
    figure(
        f"failover drill ({DRILLS}×) under {CLIENTS} clients: endpoint back"
        f" {report.steps['endpoint serves the new primary']:.2f} s after the crash, new replica"
        f" caught up at {report.steps['new replica replicating, caught up']:.2f} s;"
        f" {statuses[200]} × 200, {statuses[503]} × 503 with Retry-After, 0 other; first success"
        f" {first_success_after(outcomes, outage):.2f} s after the endpoint was back;"
        f" {lost_in_crashes} transaction(s) lost in the crash, {lost} acknowledged"
        f" charge(s) among them; none counted twice"
    )
