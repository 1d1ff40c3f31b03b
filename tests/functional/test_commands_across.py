"""Across commands: money conserved, failures atomic, idempotency through the executor. Every
command handler runs the way the command API runs it, on the in-memory fakes
(tests/support/market.py).
"""

from __future__ import annotations

import pytest
from tests.support.fakes import (
    FakeUnitOfWork,
)
from tests.support.market import (
    Market,
    ledger_balances_agree_with_users,
)

from giftmarket.commands import accounts, trading
from giftmarket.commands.context import CommandContext
from giftmarket.commands.executor import CommandExecutor, IdempotencyClaim
from giftmarket.commands.handlers import COMMAND_HANDLERS
from giftmarket.commands.ports import Committed, IdempotencyKeyReused, StoredResponse, UnitOfWork
from giftmarket.domain import ledger
from giftmarket.domain.errors import (
    InvalidAmount,
)
from giftmarket.domain.orderbook import BidStatus

# --- across commands -----------------------------------------------------------------------


def test_after_any_trades_balances_equal_ledger_sums_and_money_is_conserved(
    market: Market,
) -> None:
    product_id = market.new_product()
    alice, bob, carol = (market.signed_up(points=20_000) for _ in range(3))
    market.open_ask(product_id, 4000, alice)
    market.open_ask(product_id, 4200, carol)
    market.run(trading.buy_now, trading.BuyNow(bob, product_id, 4000, market.coupon_for(bob, 700)))
    bid_id = market.open_bid(product_id, 4100, alice)
    market.run(trading.cancel_buy_bid, trading.CancelBuyBid(alice, bid_id))
    market.open_bid(product_id, 4100, bob)
    image_id = market.uploaded_image(carol)
    market.run(
        trading.sell_now, trading.SellNow(carol, product_id, 4100, image_id, *market.voucher())
    )
    ledger_balances_agree_with_users(market, alice, bob, carol)
    sums = ledger.balances(market.store.ledger)
    users_total = sum(sum(market.balances(user_id)) for user_id in (alice, bob, carol))
    assert -sums[ledger.CHARGES] == 60_000
    assert users_total + sums.get(ledger.FEES, 0) + sums[ledger.COUPON_SUBSIDY] == 60_000
    assert sums[ledger.COUPON_SUBSIDY] == -700


def test_a_trade_that_fails_after_flushing_leaves_nothing_behind(market: Market) -> None:
    product_id, seller_id = market.new_product(), market.signed_up()
    buyer_id = market.signed_up(points=5000)
    ask_id = market.open_ask(product_id, 4000, seller_id)

    def buy_then_fail(uow: UnitOfWork, command: trading.BuyNow, ctx: CommandContext) -> None:
        trading.buy_now(uow, command, ctx)
        uow.flush()
        raise RuntimeError("storing the response failed")

    market.refused(buy_then_fail, trading.BuyNow(buyer_id, product_id, 4000), RuntimeError)
    assert market.ask(ask_id).status is BidStatus.OPEN
    assert (market.balances(buyer_id), market.balances(seller_id)) == ((5000, 0, 0), (0, 0, 0))
    assert market.store.rows["orders"] == {}


# --- idempotency, through the executor the API uses ----------------------------------------


def test_an_idempotent_retry_gets_the_first_response_and_charges_once(market: Market) -> None:
    user_id = market.signed_up()
    executor = CommandExecutor(lambda: FakeUnitOfWork(market.store), market.ctx, COMMAND_HANDLERS)
    claim = IdempotencyClaim(user_id, "key-1", "POST", "/api/points/charge", "a" * 64)
    charge = accounts.ChargePoints(user_id, 1000)

    def respond(balance: accounts.Balance, written: Committed) -> StoredResponse:
        return StoredResponse(
            200, str(balance.available_points), {"X-Ids": ",".join(written.outbox_ids)}
        )

    first = executor.execute_idempotent(charge, claim, respond)
    second = executor.execute_idempotent(charge, claim, respond)
    assert (first.replayed, second.replayed) == (False, True)
    assert second.response == first.response
    assert first.response.body == "1000"
    assert market.balances(user_id) == (1000, 0, 0)
    with pytest.raises(IdempotencyKeyReused):
        executor.execute_idempotent(
            charge,
            IdempotencyClaim(user_id, "key-1", "POST", "/api/points/charge", "b" * 64),
            respond,
        )
    assert market.balances(user_id) == (1000, 0, 0)


def test_an_idempotent_command_that_fails_leaves_the_key_free(market: Market) -> None:
    user_id = market.signed_up()
    executor = CommandExecutor(lambda: FakeUnitOfWork(market.store), market.ctx, COMMAND_HANDLERS)
    claim = IdempotencyClaim(user_id, "key-2", "POST", "/api/points/charge", "c" * 64)

    def respond(balance: accounts.Balance, written: Committed) -> StoredResponse:
        return StoredResponse(200, str(balance.available_points), {})

    with pytest.raises(InvalidAmount):
        executor.execute_idempotent(accounts.ChargePoints(user_id, 0), claim, respond)
    outcome = executor.execute_idempotent(accounts.ChargePoints(user_id, 500), claim, respond)
    assert (outcome.replayed, outcome.response.body) == (False, "500")
